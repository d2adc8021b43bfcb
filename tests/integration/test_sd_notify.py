"""mi-agent talks to its service manager the way systemd expects of a
Type=notify service with WatchdogSec=: the test plays systemd's part with a
NOTIFY_SOCKET datagram socket and WATCHDOG_USEC.

  READY=1     only once the token port accepts connections (and the prefetch
              round is done);
  STATUS=     a one-line summary;
  WATCHDOG=1  keeps coming, at about half of WATCHDOG_USEC;
  RELOADING=1 ... READY=1 around SIGHUP;
  STOPPING=1  on SIGTERM, then exit code 0.
"""

import signal
import socket
import time

import pytest

from conftest import Agent, port_accepts
import svc_helpers as h

WATCHDOG_USEC = 1_000_000  # 1 s: pings expected every ~0.5 s


class FakeSystemd:
    """The receiving end of NOTIFY_SOCKET; keeps every message with its arrival time."""

    def __init__(self, tmp_path):
        self.path = str(tmp_path / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages = []  # (monotonic time, {"READY": "1", ...}, raw text)

    def close(self):
        self.sock.close()

    def receive(self, timeout):
        """Waits up to `timeout` for one message; returns its fields or None."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return None
        text = data.decode("utf-8", "replace")
        fields = {}
        for line in text.split("\n"):
            if "=" in line:
                key, value = line.split("=", 1)
                fields[key] = value
        self.messages.append((time.monotonic(), fields, text))
        return fields

    def wait_for(self, key, value=None, timeout=h.START_TIMEOUT, on_message=None):
        """Receives until a message has `key` (= `value`); returns its fields."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            fields = self.receive(max(0.01, deadline - time.monotonic()))
            if fields is None:
                continue
            if on_message:
                on_message(fields)
            if key in fields and (value is None or fields[key] == value):
                return fields
        raise AssertionError(f"no {key}={value or '*'} within {timeout:.0f}s; got "
                             f"{[m[2] for m in self.messages]}")

    def keys_since(self, index):
        return [k for _, fields, _ in self.messages[index:] for k in fields]


@pytest.fixture(autouse=True)
def binaries(request):
    h.require_test_binaries(request)


def test_notify_protocol(tmp_path, emulator):
    manager = FakeSystemd(tmp_path)
    resource = "https://management.azure.com/"
    config = h.write_config(tmp_path / "config.json",
                            prefetch=[{"resource": resource}], log={"level": "info"})
    agent = Agent(emulator, flags=True, config_path=config, log_path=str(tmp_path / "agent.log"), wait_ready=False,
                  env={"NOTIFY_SOCKET": manager.path, "WATCHDOG_USEC": str(WATCHDOG_USEC)})
    try:
        # READY=1: at the moment it arrives the port must already accept, and the
        # prefetched token must already have been asked for upstream.
        ready = manager.wait_for("READY", "1")
        assert port_accepts(agent.port), "READY=1 arrived before the token port accepted"
        assert emulator.count(resource) >= 1, "READY=1 arrived before the first prefetch round"
        status, body = h.get_token(agent.port, resource)
        assert status == 200 and body["token_type"] == "Bearer", body
        assert "READY" in ready

        # STATUS=: at least one, one line, not empty.
        statuses = [f["STATUS"] for _, f, _ in manager.messages if "STATUS" in f]
        if not statuses:
            statuses = [manager.wait_for("STATUS", timeout=5)["STATUS"]]
        assert all(s and "\n" not in s for s in statuses), statuses

        # WATCHDOG=1: keeps arriving at about WATCHDOG_USEC / 2.
        start = len(manager.messages)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.6:
            manager.receive(0.2)
        pings = [t for t, f, _ in manager.messages[start:] if f.get("WATCHDOG") == "1"]
        assert len(pings) >= 3, f"only {len(pings)} WATCHDOG=1 in 2.6 s (interval should be 0.5 s)"
        gaps = [b - a for a, b in zip(pings, pings[1:])]
        assert max(gaps) < 1.0, f"watchdog gaps {gaps} exceed WATCHDOG_USEC"

        # SIGHUP: RELOADING=1, then READY=1.
        start = len(manager.messages)
        agent.send_signal(signal.SIGHUP)
        manager.wait_for("RELOADING", "1", timeout=10)
        manager.wait_for("READY", "1", timeout=10)
        keys = [k for k in manager.keys_since(start) if k in ("RELOADING", "READY")]
        assert keys[:2] == ["RELOADING", "READY"], keys
        assert agent.alive()

        # SIGTERM: STOPPING=1 and a clean exit.
        agent.send_signal(signal.SIGTERM)
        manager.wait_for("STOPPING", "1", timeout=10)
        assert agent.wait(timeout=20) == 0, agent.output()
    finally:
        agent.stop()
        manager.close()


def test_watchdog_off_without_watchdog_usec(tmp_path, emulator):
    """No WATCHDOG_USEC: READY=1 still comes, WATCHDOG=1 never does."""
    manager = FakeSystemd(tmp_path)
    agent = Agent(emulator, flags=True, log_path=str(tmp_path / "agent.log"), wait_ready=False,
                  env={"NOTIFY_SOCKET": manager.path})
    try:
        manager.wait_for("READY", "1")
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.5:
            manager.receive(0.2)
        assert not any("WATCHDOG" in f for _, f, _ in manager.messages), \
            [m[2] for m in manager.messages]
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=20) == 0, agent.output()
    finally:
        agent.stop()
        manager.close()


def test_no_ready_when_startup_fails(tmp_path, emulator):
    """A port that cannot be bound: non-zero exit, and never READY=1."""
    manager = FakeSystemd(tmp_path)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        agent = Agent(emulator, flags=True, port=port, log_path=str(tmp_path / "agent.log"), wait_ready=False,
                      env={"NOTIFY_SOCKET": manager.path})
        try:
            code = agent.wait(timeout=20)
            assert code != 0, agent.output()
            while manager.receive(0.2) is not None:
                pass
            assert not any(f.get("READY") == "1" for _, f, _ in manager.messages)
        finally:
            agent.stop()
            manager.close()
