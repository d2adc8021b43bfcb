"""Socket activation as mi-agent.socket does it, with systemd-socket-activate
holding the listening sockets: the first connection starts the agent, the
agent adopts the passed socket(s) instead of binding its configured address,
and that first request gets its token. A passed Unix stream socket is served
too (and left in place at stop: it is the service manager's). A passed socket
of the wrong kind is refused at start-up.
"""

import os
import shutil
import signal
import socket

import pytest

from conftest import Process, agent_command, agent_env, free_port, port_accepts, wait_for
import svc_helpers as h

ACTIVATE = shutil.which("systemd-socket-activate")


@pytest.fixture(autouse=True)
def binaries(request):
    h.require_test_binaries(request)
    if not ACTIVATE:
        pytest.skip("systemd-socket-activate not installed (package systemd)")


def activate(tmp_path, listen, agent_args, extra=(), **config_fields):
    """Runs mi-agent under systemd-socket-activate (which execs it in place, so
    the process id is the agent's), with a config file of its own (empty
    unless `config_fields` say otherwise)."""
    config = h.write_config(tmp_path / "config.json", **config_fields)
    agent_args = ["--config", config, *agent_args]
    argv = [ACTIVATE, *extra]
    for address in listen:
        argv += ["-l", address]
    # systemd-socket-activate passes only PATH, TERM and HOME on: sanitizer
    # settings have to be named.
    for name in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
        if name in os.environ:
            argv += ["-E", name]
    argv += ["--", *agent_command(*agent_args)]
    return Process(argv, "activated", env=agent_env(), log_path=str(tmp_path / "activated.log"))


def listening_sockets(pid):
    """(socket inodes `pid` holds, {(local address, inode)} of every listening
    TCP socket on the host from /proc/net/tcp{,6})."""
    owned = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            owned.add(target[len("socket:["):-1])
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] == "0A":  # TCP_LISTEN
                    listening.add((cols[1], cols[9]))
    return owned, listening


def test_first_request_served_from_the_passed_socket(tmp_path, emulator):
    port = free_port()
    unused = free_port()  # what the agent would bind if it ignored LISTEN_FDS
    proc = activate(tmp_path, [f"127.0.0.1:{port}"],
                    ["--port", str(unused), "--listen", "127.0.0.1", "--no-health",
                     "--imds-endpoint", emulator.endpoint, "--log-format", "text"])
    try:
        wait_for(lambda: port_accepts(port) or not proc.alive(), timeout=h.START_TIMEOUT,
                     what="systemd-socket-activate to listen")
        assert proc.alive(), proc.output()
        # The very first connection starts the agent and must be answered.
        status, body = h.get_token(port, "https://vault.azure.net")
        assert status == 200, (status, body, proc.output())
        assert body["token_type"] == "Bearer" and body["access_token"]

        log = proc.output()
        assert "Execing" in log and "adopted" in log, log
        # It did not bind the configured port...
        assert not port_accepts(unused), "the agent bound its own port despite LISTEN_FDS"
        # ...and the only listening TCP socket it holds is the one it was given.
        owned, listening = listening_sockets(proc.pid)
        mine = [addr for addr, inode in listening if inode in owned]
        assert len(mine) == 1 and mine[0].endswith(f":{port:04X}"), mine

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, proc.output()
    finally:
        proc.stop()


def test_ipv4_and_ipv6_sockets_both_served(tmp_path, emulator):
    if not h.ipv6_loopback_available():
        pytest.skip("no IPv6 loopback")
    port = free_port()
    proc = activate(tmp_path, [f"127.0.0.1:{port}", f"[::1]:{port}"],
                    ["--no-health", "--imds-endpoint", emulator.endpoint, "--log-format", "text"])
    try:
        wait_for(lambda: port_accepts(port), timeout=h.START_TIMEOUT,
                 what="systemd-socket-activate to listen")
        status, body = h.get_token(port, "https://storage.azure.com/")
        assert status == 200, (status, body, proc.output())
        status, body = h.get_token(port, "https://storage.azure.com/", host="::1")
        assert status == 200, (status, body, proc.output())
        assert "adopted 2 socket" in proc.output(), proc.output()
    finally:
        proc.stop()


def test_datagram_socket_refused(tmp_path, emulator):
    """mi-agent.socket must use ListenStream=: anything else stops the start."""
    port = free_port()
    proc = activate(tmp_path, [f"127.0.0.1:{port}"],
                    ["--no-health", "--imds-endpoint", emulator.endpoint, "--log-format", "text"],
                    extra=["--datagram"])
    try:
        wait_for(lambda: "Listening on" in proc.output() or not proc.alive(), timeout=h.START_TIMEOUT,
                     what="systemd-socket-activate to listen")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.sendto(b"wake up", ("127.0.0.1", port))
        code = proc.wait(timeout=20)
        assert code != 0, proc.output()
        assert "not a listening TCP or Unix stream socket" in proc.output(), proc.output()
    finally:
        proc.stop()


def unix_token(path, resource):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(path)
        s.sendall(f"GET /oauth2/token?resource={resource} HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\n"
                  "Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def test_unix_socket_passed_and_configured_is_served_once(tmp_path, emulator):
    """ListenStream=/run/mi-agent/token.sock with "unix_socket" naming the same
    path: the agent serves the passed socket and binds no second one."""
    path = str(tmp_path / "token.sock")
    port = free_port()
    proc = activate(tmp_path, [f"127.0.0.1:{port}", path],
                    ["--no-health", "--imds-endpoint", emulator.endpoint, "--log-format", "text"],
                    unix_socket=path)
    try:
        wait_for(lambda: os.path.exists(path) or not proc.alive(), timeout=h.START_TIMEOUT,
                 what="systemd-socket-activate to listen")
        assert proc.alive(), proc.output()
        answer = unix_token(path, "https://vault.azure.net")  # the first connection starts the agent
        assert answer.startswith(b"HTTP/1.1 200 "), (answer[:300], proc.output())
        assert b'"token_type":"Bearer"' in answer
        log = proc.output()
        assert "adopted 2 socket" in log, log
        assert f"serving tokens on 127.0.0.1:{port}, unix:{path}\n" in log, log
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, proc.output()
        assert os.path.exists(path), "the agent removed the service manager's socket file"
    finally:
        proc.stop()
