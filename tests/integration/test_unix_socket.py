"""The token API on a Unix domain socket ("unix_socket", issue #13): the real
agent with the socket in a temporary directory. `curl --unix-socket` gets a
token as root and as a user the test creates; `mi-agent token` uses the socket
(no TCP listener at all: "listen": []); the socket file is 0666 while the agent
runs and is removed when it stops; a stale socket left by a crash is replaced
and a path that is not a socket is refused.
"""

import json
import os
import pathlib
import shutil
import signal
import socket
import stat
import subprocess
import tempfile

import pytest

from conftest import ARM, Agent, agent_command, agent_env, wait_for
from local_users import LocalUsers

CURL = shutil.which("curl")


def unix_get(path, target, headers=None, host="localhost", timeout=30):
    """One HTTP/1.1 GET over the Unix socket at `path`; (status, body)."""
    head = f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
    for name, value in (headers or {}).items():
        head += f"{name}: {value}\r\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall((head + "\r\n").encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body.decode("utf-8", "replace")


@pytest.fixture
def run_dir():
    """A directory for the socket that every user may search (a created user
    must reach the socket; pytest's tmp_path is under a 0700 directory)."""
    d = tempfile.mkdtemp(prefix="mi-unix-")
    os.chmod(d, 0o755)
    yield pathlib.Path(d)
    shutil.rmtree(d, ignore_errors=True)


def unix_agent(agent_factory, emulator, path, **config):
    """An agent serving `path`; its readiness is asked on the health listener."""
    return agent_factory(emulator, config={"unix_socket": str(path), **config})


def token_connections(agent):
    """Connections the token listener has accepted (from /metrics)."""
    _, _, text = agent.health("/metrics")
    for line in text.splitlines():
        if line.startswith('mi_agent_connections_accepted_total{listener="token"}'):
            return int(float(line.split()[-1]))
    raise AssertionError("no token listener connection count in /metrics:\n" + text)


def serving_line(agent):
    return next(l for l in agent.output().splitlines() if "serving tokens on" in l)


def test_curl_gets_a_token_over_the_socket_which_is_0666_and_removed_at_stop(agent_factory, emulator, run_dir):
    if not CURL:
        pytest.skip("curl not installed")
    path = run_dir / "token.sock"
    agent = unix_agent(agent_factory, emulator, path)
    st = os.lstat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o666, oct(st.st_mode)
    # Logged with the other listeners, and listed by its path in /status.
    assert serving_line(agent).endswith(f":{agent.port}, unix:{path}"), agent.output()
    _, _, status = agent.health("/status")
    assert f"unix:{path}" in json.loads(status)["listeners"], status

    r = subprocess.run([CURL, "-sS", "--unix-socket", str(path), "-H", "Metadata: true",
                        "http://localhost/oauth2/token?resource=" + ARM],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    body = json.loads(r.stdout)
    assert body["token_type"] == "Bearer" and body["access_token"] and body["resource"] == ARM

    # The Host check holds here too: "localhost" is served, other names are not.
    code, body = unix_get(str(path), "/oauth2/token?resource=" + ARM, {"Metadata": "true"}, host="evil.example")
    assert code == 400 and "does not serve" in body, (code, body)

    assert agent.stop() == 0, agent.output()
    assert not os.path.lexists(path), "the socket file outlived the agent"


def test_a_created_user_gets_a_token_over_the_socket(agent_factory, emulator, run_dir):
    if not CURL:
        pytest.skip("curl not installed")
    if not LocalUsers.available():
        pytest.skip("needs root with useradd and setpriv")
    path = run_dir / "token.sock"
    unix_agent(agent_factory, emulator, path)
    with LocalUsers() as users:
        alice = users.user("alice")
        r = alice.run([CURL, "-sS", "--unix-socket", str(path), "-H", "Metadata: true",
                       "http://localhost/oauth2/token?resource=https://vault.azure.net"])
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["resource"] == "https://vault.azure.net"
        # `mi-agent token` as that user finds the socket in the config file.
        config = run_dir / "client.json"
        config.write_text(json.dumps({"unix_socket": str(path)}))
        os.chmod(config, 0o644)
        r = alice.run(agent_command("token", "--config", str(config), "--resource", "https://vault.azure.net"),
                      env=agent_env())
        assert r.returncode == 0, r.stdout + r.stderr
        assert json.loads(r.stdout)["resource"] == "https://vault.azure.net"


def test_mi_agent_token_uses_the_socket_without_any_tcp_listener(agent_factory, emulator, tmp_path, run_dir):
    path = run_dir / "token.sock"
    agent = unix_agent(agent_factory, emulator, path, listen=[])
    assert f"serving tokens on unix:{path}" in agent.output(), agent.output()

    def token(*args):
        r = subprocess.run(agent_command("token", "--resource", ARM, *args), capture_output=True, text=True,
                           timeout=120, env=agent_env())
        return r.returncode, r.stdout, r.stderr

    # From the config file's "unix_socket" (the agent's own file).
    code, out, err = token("--config", agent.config_path)
    assert code == 0, out + err
    doc = json.loads(out)
    assert doc["token_type"] == "Bearer" and "redacted" in doc["access_token"]
    # Named on the command line.
    code, out, err = token("--unix-socket", str(path))
    assert code == 0, out + err
    assert token_connections(agent) == 2
    # An explicit port wins over the socket: there is no TCP listener to answer.
    code, out, err = token("--config", agent.config_path, "--port", str(agent.port))
    assert code == 2 and "cannot reach the agent's token listener at 127.0.0.1:" in err, out + err
    code, out, err = token("--unix-socket", str(path), "--port", str(agent.port))
    assert code == 2 and "not both" in err, err
    code, out, err = token("--unix-socket", str(tmp_path / "none.sock"))
    assert code == 2 and f"cannot reach the agent's token listener at unix:{tmp_path / 'none.sock'}" in err, err
    assert token_connections(agent) == 2


def test_stale_socket_is_replaced_and_other_files_refused(agent_factory, emulator, run_dir):
    d = run_dir
    path = d / "token.sock"
    # What a crash leaves: a socket file nobody listens on.
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(path))
    agent = unix_agent(agent_factory, emulator, path)
    code, body = unix_get(str(path), "/oauth2/token?resource=" + ARM, {"Metadata": "true"})
    assert code == 200, body

    # A second agent on the same path refuses to start and leaves the socket be.
    second = Agent(emulator, config={"unix_socket": str(path)}, wait_ready=False)
    assert second.wait(timeout=30) == 1
    assert "address already in use" in second.output(), second.output()
    second.stop()
    assert unix_get(str(path), "/oauth2/token?resource=" + ARM, {"Metadata": "true"})[0] == 200
    agent.stop()

    # A regular file, and a symlink to a stale socket: refused, nothing removed.
    regular = d / "file"
    regular.write_text("keep me")
    target = d / "stale.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(str(target))
    link = d / "link.sock"
    link.symlink_to(target)
    for refused in (regular, link):
        a = Agent(emulator, config={"unix_socket": str(refused)}, wait_ready=False)
        assert a.wait(timeout=30) == 1, a.output()
        assert "the path exists and is not a socket" in a.output(), a.output()
        a.stop()
    assert regular.read_text() == "keep me"
    assert link.is_symlink() and stat.S_ISSOCK(os.lstat(target).st_mode)


def test_a_new_path_on_reload_is_a_warning_and_the_socket_stays(agent_factory, emulator, run_dir):
    path = run_dir / "token.sock"
    agent = unix_agent(agent_factory, emulator, path)
    agent.write_config({**agent.config, "unix_socket": str(run_dir / "other.sock")})
    agent.send_signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in agent.output(), what="the reload")
    assert "reload: listener addresses changed; restart the service to apply them" in agent.output()
    assert not os.path.lexists(run_dir / "other.sock")
    assert unix_get(str(path), "/oauth2/token?resource=" + ARM, {"Metadata": "true"})[0] == 200


def test_check_config_refuses_a_relative_unix_socket(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"unix_socket": "token.sock"}))
    r = subprocess.run(agent_command("--check-config", str(config)), capture_output=True, text=True, timeout=30)
    assert r.returncode == 78
    assert "unix_socket: expected an absolute path" in r.stdout + r.stderr
