"""Helpers for the service-integration tests (sd_notify, socket activation,
reload and drain, packages): start the IMDS emulator and mi-agent on loopback
ports, wait for them, ask for tokens.

Environment (set by tests/CMakeLists.txt): MI_AGENT_BIN, IMDS_EMULATOR_BIN,
MI_SOURCE_DIR, MI_BUILD_DIR.
"""

import http.client
import json
import os
import signal
import socket
import subprocess
import time
import urllib.parse

import pytest

AGENT_BIN = os.environ.get("MI_AGENT_BIN", "")
EMULATOR_BIN = os.environ.get("IMDS_EMULATOR_BIN", "")
SOURCE_DIR = os.environ.get(
    "MI_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
)
BUILD_DIR = os.environ.get("MI_BUILD_DIR", "")

# Sanitizer builds are slower to start and may print to stderr; allow for both.
START_TIMEOUT = 20.0


def require_binaries(*names):
    """Skips unless the binaries the test needs were given (ctest sets them)."""
    paths = {"agent": AGENT_BIN, "emulator": EMULATOR_BIN}
    for name in names:
        path = paths[name]
        if not path or not os.access(path, os.X_OK):
            pytest.skip(f"{name} binary not available (set MI_AGENT_BIN / IMDS_EMULATOR_BIN)")


def free_port(host="127.0.0.1"):
    """A port that was free a moment ago (the kernel's choice for port 0)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ipv6_loopback_available():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def port_accepts(port, host="127.0.0.1", timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(predicate, timeout=START_TIMEOUT, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def http_get(port, path, headers=None, host="127.0.0.1", timeout=30.0):
    """GET; returns (status, body as text)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def get_token(port, resource, client_id=None, host="127.0.0.1", timeout=30.0):
    """Asks the legacy endpoint for a token; returns (status, parsed JSON or None)."""
    query = {"resource": resource}
    if client_id:
        query["client_id"] = client_id
    status, body = http_get(
        port,
        "/oauth2/token?" + urllib.parse.urlencode(query),
        headers={"Metadata": "true"},
        host=host,
        timeout=timeout,
    )
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


class Process:
    """A child process whose stderr (and stdout) go to a file we can read at any time."""

    def __init__(self, argv, log_path, env=None, pass_fds=()):
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            pass_fds=pass_fds,
        )

    @property
    def pid(self):
        return self.proc.pid

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def running(self):
        return self.proc.poll() is None

    def signal(self, signum):
        self.proc.send_signal(signum)

    def wait(self, timeout=30.0):
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout=15.0):
        """SIGTERM, then SIGKILL; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class Emulator(Process):
    """The IMDS emulator on an ephemeral 127.0.0.1 port."""

    def __init__(self, tmp_path, extra_args=()):
        port_file = tmp_path / "emulator.port"
        super().__init__(
            [EMULATOR_BIN, "--port", "0", "--port-file", str(port_file), *extra_args],
            str(tmp_path / "emulator.log"),
        )

        def read_port():
            if not self.running():
                raise AssertionError("imds-emulator exited early:\n" + self.log())
            try:
                text = port_file.read_text().strip()
            except OSError:
                return None
            return int(text) if text.isdigit() else None

        self.port = wait_until(read_port, what="the emulator's port file")
        wait_until(lambda: port_accepts(self.port), what="the emulator to accept connections")

    @property
    def token_url(self):
        return f"http://127.0.0.1:{self.port}/metadata/identity/oauth2/token"

    def requests(self):
        """The emulator's request log: a list of {"resource", "selector", "status"}."""
        status, body = http_get(self.port, "/admin/requests")
        assert status == 200, body
        return json.loads(body)["log"]

    def count(self, resource=None):
        return sum(1 for r in self.requests() if resource is None or r.get("resource") == resource)


def agent_env(extra=None):
    """The environment for mi-agent: ours, minus anything systemd would pass."""
    env = dict(os.environ)
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID",
                 "LISTEN_FDNAMES", "JOURNAL_STREAM"):
        env.pop(name, None)
    env.update(extra or {})
    return env


def write_config(path, **fields):
    """Writes a config file; keys as in agent/config.h ("log" takes {"level": ...})."""
    path.write_text(json.dumps(fields, indent=2) + "\n")
    return str(path)


class Agent(Process):
    """mi-agent on 127.0.0.1:<port>, health off, pointed at `imds_url`."""

    def __init__(self, tmp_path, imds_url, config_path=None, port=None, env=None, extra_args=(),
                 wait=True, name="agent"):
        self.port = port or free_port()
        # Always a file of our own: never whatever /etc/mi-agent/config.json holds.
        if not config_path:
            config_path = write_config(tmp_path / f"{name}-config.json")
        argv = [AGENT_BIN, "--config", config_path,
                "--port", str(self.port), "--listen", "127.0.0.1", "--no-health",
                "--imds-endpoint", imds_url, "--log-format", "text", *extra_args]
        super().__init__(argv, str(tmp_path / f"{name}.log"), env=agent_env(env))
        if wait:
            self.wait_listening()

    def wait_listening(self):
        def up():
            if not self.running():
                raise AssertionError(f"mi-agent exited early ({self.proc.returncode}):\n{self.log()}")
            return port_accepts(self.port)

        wait_until(up, what=f"mi-agent to listen on 127.0.0.1:{self.port}")
