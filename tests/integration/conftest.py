"""Shared fixtures for the integration tests: the real mi-agent against the real
IMDS emulator on loopback ports. Each test starts its own processes and stops
them; nothing outlives a test.

  Agent       mi-agent set up by a config file (default) or by flags, ready to serve
  emulator    the IMDS emulator fixture; @pytest.mark.emulator_args(...) gives it flags
  agent_factory  agents that are stopped (and must exit 0) after the test

Environment (tests/CMakeLists.txt sets the first two):
  MI_AGENT_BIN, IMDS_EMULATOR_BIN  the binaries
  MI_AGENT_LAUNCHER   a command prefix for every start of mi-agent, e.g. "wine"
                      (split like a shell would; empty: none)
"""

import http.client
import json
import os
import shlex
import signal
import socket
import subprocess
import tempfile
import time

import pytest

AGENT_BIN = os.environ.get("MI_AGENT_BIN", "build/mi-agent")
EMULATOR_BIN = os.environ.get("IMDS_EMULATOR_BIN", "build/tests/imds-emulator")
AGENT_LAUNCHER = shlex.split(os.environ.get("MI_AGENT_LAUNCHER", ""))
ARM = "https://management.azure.com/"

# Sanitizer builds are slower to start and may print to stderr; allow for both.
START_TIMEOUT = 20.0


def agent_command(*args):
    """The command that runs mi-agent with `args` (under MI_AGENT_LAUNCHER)."""
    return [*AGENT_LAUNCHER, AGENT_BIN, *args]

# A user-assigned identity the emulator knows (ids compare case-insensitively).
UA_CLIENT_ID = "0d1e2f30-aaaa-4bbb-8ccc-123456789abc"
UA_OBJECT_ID = "9f8e7d6c-1111-4222-8333-abcdefabcdef"
UA_RES_ID = ("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg/providers/"
             "Microsoft.ManagedIdentity/userAssignedIdentities/app-identity")


def free_port():
    """A port free on both 127.0.0.1 and ::1 (the agent binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s4:
            s4.bind(("127.0.0.1", 0))
            port = s4.getsockname()[1]
            try:
                with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s6:
                    s6.bind(("::1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def port_accepts(port, host="127.0.0.1", timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for(predicate, timeout=15.0, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def rss_kb(pid):
    """Resident set size of a process, in kB (Linux)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def request(port, method, target, headers=None, body=None, host="127.0.0.1", timeout=30):
    """One HTTP request on a fresh connection; returns (status, headers, body str)."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read().decode("utf-8", "replace")
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def token_request(port, query="resource=" + "https%3A%2F%2Fmanagement.azure.com%2F", host="127.0.0.1",
                  path="/oauth2/token", timeout=30):
    return request(port, "GET", f"{path}?{query}", {"Metadata": "true"}, host=host, timeout=timeout)


def agent_env(extra=None):
    """The environment for mi-agent: ours, minus anything systemd would pass."""
    env = dict(os.environ)
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID",
                 "LISTEN_FDNAMES", "JOURNAL_STREAM"):
        env.pop(name, None)
    env.update(extra or {})
    return env


class Process:
    """A child whose stdout and stderr go to a file (a temporary one unless
    `log_path` is given) that can be read at any time."""

    def __init__(self, args, name, env=None, log_path=None):
        self.name = name
        self.argv = list(args)
        if log_path:
            self.log = open(log_path, "wb")
        else:
            self.log = tempfile.NamedTemporaryFile(prefix=name + "-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT, env=env,
                                     stdin=subprocess.DEVNULL)

    @property
    def pid(self):
        return self.proc.pid

    def send_signal(self, signum):
        self.proc.send_signal(signum)

    def wait(self, timeout=30):
        return self.proc.wait(timeout=timeout)

    def output(self):
        with open(self.log.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"{self.name} did not stop within {timeout}s")
            finally:
                self.log.close()
        return self.proc.returncode


class Emulator(Process):
    def __init__(self, *extra, port=0, log_path=None):
        self.port_file = tempfile.mktemp(prefix="emulator-port-")
        super().__init__([EMULATOR_BIN, "--port", str(port), "--port-file", self.port_file,
                          "--user-assigned", f"{UA_CLIENT_ID},{UA_OBJECT_ID},{UA_RES_ID}", *extra],
                         "emulator", log_path=log_path)
        self.port = int(wait_for(lambda: self._read_port(), what="emulator port"))

    def _read_port(self):
        if not self.alive():
            raise AssertionError("emulator exited:\n" + self.output())
        try:
            with open(self.port_file) as f:
                text = f.read().strip()
                return text or None
        except FileNotFoundError:
            return None

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}/metadata/identity/oauth2/token"

    def admin(self, method, path, body=None):
        status, _, text = request(self.port, method, "/admin/" + path,
                                  {"Content-Type": "application/json"} if body is not None else {},
                                  json.dumps(body) if body is not None else None)
        assert status == 200, (status, text)
        return json.loads(text)

    def requests(self):
        return self.admin("GET", "requests")

    def count(self, resource=None):
        """Token requests seen; with `resource`, those for that resource (from the request log)."""
        if resource is None:
            return self.requests()["count"]
        return sum(1 for r in self.requests()["log"] if r.get("resource") == resource)

    def faults(self, steps=None, mode=None):
        return self.admin("POST", "faults", {"steps": steps or [], "mode": mode})

    def reset(self):
        return self.admin("POST", "reset", {})


class Agent(Process):
    """mi-agent on ephemeral loopback ports, waited for until it serves.

    By default its listeners and IMDS endpoint are in a config file of its own,
    built from `config` (a dict merged over port, health listener and endpoint;
    `agent.config` is the result, `write_config` rewrites the file).

    With `flags=True` they are command-line flags instead (127.0.0.1:`port`, no
    health listener, --imds-endpoint), so the config file is the test's own to
    rewrite for SIGHUP: `config_path`, or one written from `config` (default
    empty). `port` may be one already taken.

    `imds_url` overrides the emulator's endpoint (or stands in for an emulator);
    `env` is added to agent_env(); `extra_args` go last; `prefix` runs the
    command under another one (setpriv, a shell); `log_path` keeps the output
    there. `wait_ready=False` returns at once (the test plays systemd, or expects
    a failed start); wait_ready() waits for /readyz, or without a health
    listener for the token port to accept."""

    def __init__(self, emulator=None, config=None, *, flags=False, imds_url=None, config_path=None,
                 port=None, env=None, extra_args=(), prefix=(), log_path=None, wait_ready=True):
        self.port = port or free_port()
        endpoint = imds_url or (emulator.endpoint if emulator is not None else None)
        if flags:
            self.health_port = None
            self.config = dict(config or {})
            args = ["--port", str(self.port), "--listen", "127.0.0.1", "--no-health"]
            if endpoint:
                args += ["--imds-endpoint", endpoint]
        else:
            self.health_port = free_port()
            cfg = {"port": self.port, "health": [f"127.0.0.1:{self.health_port}"]}
            if endpoint:
                cfg["imds"] = {"endpoint": endpoint}
            for key, value in (config or {}).items():
                if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                    cfg[key].update(value)
                else:
                    cfg[key] = value
            self.config = cfg
            args = []
        # Always a file of our own: never whatever /etc/mi-agent/config.json holds.
        self.config_path = config_path
        if not self.config_path:
            fd, self.config_path = tempfile.mkstemp(prefix="mi-agent-", suffix=".json")
            os.close(fd)
            self.write_config(self.config)
            os.chmod(self.config_path, 0o644)  # readable when `prefix` runs the agent as another user
        super().__init__([*prefix, *agent_command("--config", self.config_path, *args, "--log-format", "text",
                                                  *extra_args)],
                         "mi-agent", env=agent_env(env), log_path=log_path)
        if wait_ready:
            self.wait_ready()

    def write_config(self, cfg):
        with open(self.config_path, "w") as f:
            json.dump(cfg, f)

    def wait_ready(self, timeout=START_TIMEOUT):
        def ready():
            if not self.alive():
                raise AssertionError(f"mi-agent exited ({self.proc.returncode}):\n" + self.output())
            if self.health_port is None:
                return port_accepts(self.port)
            try:
                return request(self.health_port, "GET", "/readyz", timeout=2)[0] == 200
            except OSError:
                return False
        wait_for(ready, timeout, what="mi-agent ready")

    def token(self, query="resource=https%3A%2F%2Fmanagement.azure.com%2F", host="127.0.0.1", path="/oauth2/token"):
        return token_request(self.port, query, host=host, path=path)

    def health(self, path):
        return request(self.health_port, "GET", path)


def pytest_configure(config):
    config.addinivalue_line("markers", "emulator_args(*args): command-line flags for the emulator fixture")


@pytest.fixture
def emulator(request, tmp_path):
    """The IMDS emulator, with the flags of the closest emulator_args marker
    (test, then module); its output goes to <tmp_path>/emulator.log."""
    marker = request.node.get_closest_marker("emulator_args")
    e = Emulator(*(marker.args if marker else ()), log_path=str(tmp_path / "emulator.log"))
    yield e
    e.stop()


@pytest.fixture
def agent_factory():
    agents = []

    def make(*args, **kwargs):
        a = Agent(*args, **kwargs)
        agents.append(a)
        return a

    yield make
    for a in agents:
        code = a.stop()
        # Every run ends with a clean drain: exit 0 means the loop closed with no handle left.
        assert code == 0, f"mi-agent exited with {code}:\n{a.output()}"
