"""The unit files: `systemd-analyze verify` is clean, `systemd-analyze security`
rates the service's exposure at 2.0 or better, and the settings the agent
depends on (notify, watchdog, reload, sandbox, network allow list, the socket's
addresses) are there. Works without a running systemd (offline analysis).
"""

import os
import re
import shutil
import signal
import socket
import subprocess

import pytest

from conftest import AGENT_BIN, Emulator, Process, agent_command, agent_env, free_port, port_accepts, request, wait_for
import svc_helpers as h

UNIT_DIR = os.path.join(h.SOURCE_DIR, "systemd")
SERVICE = os.path.join(UNIT_DIR, "mi-agent.service")
SOCKET = os.path.join(UNIT_DIR, "mi-agent.socket")
MAN_PAGE = os.path.join(h.SOURCE_DIR, "packaging", "mi-agent.8")
ANALYZE = shutil.which("systemd-analyze")

MAX_EXPOSURE = 2.0


def settings(path):
    """{key: [values]} of a unit file (comments and section headers dropped)."""
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;[" or "=" not in line:
                continue
            key, value = line.split("=", 1)
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def require_analyze():
    if not ANALYZE:
        pytest.skip("systemd-analyze not installed (package systemd)")


def test_verify_is_clean(tmp_path):
    """verify resolves ExecStart= and Documentation=man: pages, so it runs on
    copies whose ExecStart points at the built binary, with our man page on
    MANPATH. Any diagnostic fails the test."""
    require_analyze()
    h.require_binaries("agent")
    units = tmp_path / "units"
    units.mkdir()
    for src in (SERVICE, SOCKET):
        text = open(src).read()
        assert "ExecStart=/usr/bin/mi-agent " in text or not src.endswith(".service")
        text = text.replace("ExecStart=/usr/bin/mi-agent ", f"ExecStart={AGENT_BIN} ")
        text = text.replace("ExecReload=/usr/bin/mi-agent ", f"ExecReload={AGENT_BIN} ")
        (units / os.path.basename(src)).write_text(text)
    man_dir = tmp_path / "man" / "man8"
    man_dir.mkdir(parents=True)
    shutil.copy(MAN_PAGE, man_dir / "mi-agent.8")
    env = dict(os.environ, MANPATH=str(tmp_path / "man"), SYSTEMD_LOG_LEVEL="notice")
    man = "--man=yes" if shutil.which("man") else "--man=no"
    result = subprocess.run(
        [ANALYZE, "verify", man, "--recursive-errors=no",
         str(units / "mi-agent.socket"), str(units / "mi-agent.service")],
        capture_output=True, text=True, env=env, timeout=120)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and output == "", output


def test_security_exposure_at_most_2(tmp_path):
    require_analyze()
    result = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", SERVICE],
        capture_output=True, text=True, timeout=120)
    output = result.stdout + result.stderr
    match = re.search(r"Overall exposure level for mi-agent\.service:\s*([0-9]+(?:\.[0-9]+)?)", output)
    assert match, output
    exposure = float(match.group(1))
    print(f"systemd-analyze security exposure: {exposure}")
    assert exposure <= MAX_EXPOSURE, output


def test_service_settings_the_agent_relies_on(tmp_path):
    s = settings(SERVICE)
    one = {k: v[-1] for k, v in s.items()}
    assert one["Type"] == "notify"
    assert one["NotifyAccess"] == "main"
    assert one["ExecStart"].startswith("/usr/bin/mi-agent ")
    # A reload checks the file (and its drop-ins) first: systemd stops at the
    # first failing command, so `systemctl reload` fails on an invalid file.
    config = one["ExecStart"].split("--config ", 1)[1].split()[0]
    assert s["ExecReload"] == [f"/usr/bin/mi-agent --check-config {config}", "/bin/kill -HUP $MAINPID"]
    assert one["Restart"] == "on-failure"
    # 78 (EX_CONFIG) is an invalid configuration: restarting cannot fix it.
    assert one["RestartPreventExitStatus"] == "78"
    assert int(one["WatchdogSec"].rstrip("s")) > 0
    assert one["LimitCORE"] == "0"  # tokens must never land in a core dump
    assert one["DynamicUser"] == "yes"
    for key in ("ProtectHome", "PrivateTmp", "PrivateDevices", "NoNewPrivileges",
                "MemoryDenyWriteExecute", "LockPersonality", "RestrictNamespaces",
                "ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs",
                "ProtectControlGroups"):
        assert one[key] == "yes", key
    assert one["ProtectSystem"] == "strict"
    assert one["CapabilityBoundingSet"] == ""
    assert one["RestrictAddressFamilies"].split() == ["AF_INET", "AF_INET6", "AF_UNIX", "AF_NETLINK"]
    assert "@system-service" in s["SystemCallFilter"]
    assert one["IPAddressDeny"] == "any"
    assert set(one["IPAddressAllow"].split()) == {"localhost", "169.254.169.254"}
    # "unix_socket": /run/mi-agent/token.sock needs a directory the service may
    # write (ProtectSystem=strict) and every caller may search.
    assert one["RuntimeDirectory"] == "mi-agent"
    assert one["RuntimeDirectoryMode"] == "0755"
    # The upstream the unit lets through is the one the agent talks to by default
    # (asked of the binary: `--check-config` on an empty file names it).
    h.require_binaries("agent")
    empty = tmp_path / "empty.json"
    empty.write_text("{}")
    checked = subprocess.run(agent_command("--check-config", str(empty)), capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    assert "IMDS http://169.254.169.254/" in checked.stdout, checked.stdout


def test_socket_listens_on_both_loopbacks():
    s = settings(SOCKET)
    assert sorted(s["ListenStream"]) == sorted(["127.0.0.1:50342", "[::1]:50342"])
    assert s["BindIPv6Only"] == ["ipv6-only"]
    assert s["WantedBy"] == ["sockets.target"]


def test_socket_documents_the_unix_socket(tmp_path):
    """The Unix socket is off by default and shown commented out; uncommented,
    the unit still verifies."""
    text = open(SOCKET).read()
    assert "\n#ListenStream=/run/mi-agent/token.sock\n" in text
    assert "\n#SocketMode=0666\n" in text
    assert '"unix_socket"' in text and "RuntimeDirectory=" in text
    require_analyze()
    h.require_binaries("agent")
    units = tmp_path / "units"
    units.mkdir()
    (units / "mi-agent.socket").write_text(
        text.replace("#ListenStream=/run/mi-agent/token.sock", "ListenStream=/run/mi-agent/token.sock")
            .replace("#SocketMode=0666", "SocketMode=0666"))
    service = (open(SERVICE).read().replace("ExecStart=/usr/bin/mi-agent ", f"ExecStart={AGENT_BIN} ")
               .replace("ExecReload=/usr/bin/mi-agent ", f"ExecReload={AGENT_BIN} "))
    (units / "mi-agent.service").write_text(service.replace("Documentation=man:mi-agent(8)\n", ""))
    (units / "mi-agent.socket").write_text((units / "mi-agent.socket").read_text()
                                           .replace("Documentation=man:mi-agent(8)\n", ""))
    env = dict(os.environ, SYSTEMD_LOG_LEVEL="notice")
    result = subprocess.run(
        [ANALYZE, "verify", "--man=no", "--recursive-errors=no",
         str(units / "mi-agent.socket"), str(units / "mi-agent.service")],
        capture_output=True, text=True, env=env, timeout=120)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and output == "", output


def test_packaged_default_config_is_valid():
    """The config the packages install parses, with the port the units use."""
    h.require_binaries("agent")
    config = os.path.join(h.SOURCE_DIR, "packaging", "config.json")
    result = subprocess.run(agent_command("--check-config", config),
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "port 50342" in result.stdout, result.stdout


def expand_syscall_group(group, cache={}):
    """The system calls in a systemd syscall-filter group, nested groups expanded."""
    if group not in cache:
        out = subprocess.run([ANALYZE, "syscall-filter", "--no-pager", group],
                             capture_output=True, text=True, timeout=60).stdout
        calls = set()
        for line in out.splitlines()[1:]:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            calls |= expand_syscall_group(line) if line.startswith("@") else {line}
        cache[group] = calls
    return cache[group]


def test_sandbox_allows_what_the_agent_does(tmp_path):
    """The agent under strace (start, prefetch, token, health, reload, drain):
    every system call it makes passes SystemCallFilter=, every socket it opens
    passes RestrictAddressFamilies=. A call the filter lacks would fail with
    EPERM only on a real system, where no test runs."""
    require_analyze()
    h.require_binaries("agent", "emulator")
    if not shutil.which("strace"):
        pytest.skip("strace not installed")
    if b"__asan_init" in open(AGENT_BIN, "rb").read():
        pytest.skip("sanitizer runtimes make system calls of their own")
    s = settings(SERVICE)
    families = set(s["RestrictAddressFamilies"][-1].split())
    allowed = set()
    denied = set()
    for value in s["SystemCallFilter"]:
        target = denied if value.startswith("~") else allowed
        for group in value.lstrip("~").split():
            target |= expand_syscall_group(group) if group.startswith("@") else {group}

    emulator = Emulator(log_path=str(tmp_path / "emulator.log"))
    trace = tmp_path / "strace.out"
    health = free_port()
    unix_socket = tmp_path / "token.sock"
    config = h.write_config(tmp_path / "config.json", prefetch=[{"resource": "https://vault.azure.net"}],
                            unix_socket=str(unix_socket))
    agent = None
    try:
        agent = Process(
            ["strace", "-f", "-qq", "-o", str(trace),
             *agent_command("--config", config, "--port", str(free_port()), "--listen", "127.0.0.1",
                            "--health", f"127.0.0.1:{health}", "--imds-endpoint", emulator.endpoint)],
            "mi-agent", env=agent_env(), log_path=str(tmp_path / "agent.log"))
        port = int(agent.argv[agent.argv.index("--port") + 1])
        wait_for(lambda: port_accepts(port), timeout=h.START_TIMEOUT, what="the traced agent")
        status, _ = h.get_token(port, "https://management.azure.com/")
        assert status == 200, agent.output()
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:  # SO_PEERCRED, the pipe's reads and writes
            s.settimeout(30)
            s.connect(str(unix_socket))
            s.sendall(b"GET /oauth2/token?resource=https://vault.azure.net HTTP/1.1\r\nHost: localhost\r\n"
                      b"Metadata: true\r\nConnection: close\r\n\r\n")
            assert s.recv(64).startswith(b"HTTP/1.1 200 "), agent.output()
        for path in ("/healthz", "/readyz", "/status", "/metrics"):
            request(health, "GET", path)
        # strace runs the agent as its child: signal the agent, not strace.
        pid = int(subprocess.run(["pgrep", "-P", str(agent.pid)], capture_output=True,
                                 text=True).stdout.split()[0])
        os.kill(pid, signal.SIGHUP)
        wait_for(lambda: "reloaded" in agent.output(), timeout=h.START_TIMEOUT, what="the reload")
        os.kill(pid, signal.SIGTERM)
        assert agent.wait(timeout=30) == 0, agent.output()
    finally:
        if agent:
            agent.stop()
        emulator.stop()

    used = set()
    opened = set()
    for line in trace.read_text().splitlines():
        m = re.match(r"\d+\s+([a-z0-9_]+)\(", line)
        if m:
            used.add(m.group(1))
        m = re.match(r"\d+\s+socket\((AF_[A-Z0-9]+)", line)
        if m:
            opened.add(m.group(1))
    assert used, trace.read_text()[:2000]
    assert not (used - allowed), f"not allowed by SystemCallFilter=: {sorted(used - allowed)}"
    assert not (used & denied), f"denied by SystemCallFilter=~: {sorted(used & denied)}"
    assert opened and opened <= families, f"socket families {sorted(opened)} vs {sorted(families)}"
