"""The .deb under a real systemd (issue #15 point 9): a Debian bookworm
container (debootstrap, cached in the build directory; every run boots a fresh
copy with systemd-nspawn, private network: loopback only), the package built by
CPack installed in it with dpkg, the IMDS emulator as a transient unit on
127.0.0.1, and the service's life cycle checked as systemd runs it:

  1. dpkg -i: mi-agent.service active with a status text, a legacy token 200;
  2. systemctl reload: a good changed file changes config_digest; a bad one
     fails the reload and the service keeps serving;
  3. watchdog: a stopped (SIGSTOP) agent is killed and restarted by systemd;
  4. socket activation: with the service stopped, a request starts it;
  5. upgrade to a higher version under a bounded request loop: every request 200;
  6. dpkg -r, then dpkg -i: enabled and running again;
  7. dpkg --purge: none of the package's files, units, links, config or the
     discovery file left, the unit not loaded.

The steps share one container and run in this order. Root only; skipped when
systemd-nspawn or debootstrap are missing (tests/install-deps.sh installs them).
"""

import glob
import hashlib
import json
import os
import re
import shutil
import subprocess
import time

import pytest

import conftest

import nspawn_helpers as ns
import svc_helpers as h

EMULATOR_PORT = 18080
TOKEN_URL = "http://127.0.0.1:50342/oauth2/token?resource=https://management.azure.com/"
STATUS_URL = "http://127.0.0.1:50343/status"
DISCOVERY = "/var/lib/waagent/ManagedIdentity-Settings"
UNIT_LINKS_GLOB = "/etc/systemd/system/**/*mi-agent*"
WATCHDOG_SEC = 5


def config_fields(**extra):
    fields = {
        "port": 50342,
        "listen": ["127.0.0.1", "::1"],
        "health": ["127.0.0.1:50343"],
        "prefetch": [],
        "log": {"level": "info"},
        "imds": {"endpoint": f"http://127.0.0.1:{EMULATOR_PORT}/metadata/identity/oauth2/token"},
    }
    fields.update(extra)
    return fields


def write_agent_config(c, text):
    """The agent's configuration in the container, as an operator writes it: a
    drop-in, so the packaged conffile stays untouched and no upgrade asks."""
    c.write("/etc/mi-agent/config.d/50-test.json", text)


def host_run(argv, timeout=600):
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(argv)}: {result.stdout}\n{result.stderr}"
    return result


def reversioned(deb, version, out_dir):
    """A copy of the .deb with another Version: (for the upgrade path)."""
    tree = os.path.join(out_dir, "tree")
    host_run(["dpkg-deb", "-R", deb, tree])
    control = os.path.join(tree, "DEBIAN", "control")
    text = open(control).read()
    open(control, "w").write(re.sub(r"(?m)^Version: .*$", f"Version: {version}", text))
    out = os.path.join(out_dir, f"mi-agent_{version}_upgrade.deb")
    host_run(["dpkg-deb", "--root-owner-group", "-b", tree, out])
    shutil.rmtree(tree)
    return out


def curl(c, url, *args, timeout=30):
    """(status, body) of a request made inside the container."""
    r = c.run(["curl", "-sS", "--max-time", str(timeout), "-o", "/dev/stdout",
               "-w", "\n%{http_code}", *args, url], check=False, timeout=timeout + 10)
    body, _, code = r.stdout.rpartition("\n")
    return int(code or 0), body


def token(c):
    return curl(c, TOKEN_URL, "-H", "Metadata: true")


def status(c):
    code, body = curl(c, STATUS_URL)
    assert code == 200, body
    return json.loads(body)


def show(c, unit, prop):
    return c.run(["systemctl", "show", "-p", prop, "--value", unit]).stdout.strip()


def wait_for(predicate, timeout, what, interval=0.5):
    return conftest.wait_for(predicate, timeout=timeout, interval=interval, what=what)


def wait_serving(c, timeout=60):
    wait_for(lambda: show(c, "mi-agent.service", "ActiveState") == "active", timeout,
             "mi-agent.service active")
    wait_for(lambda: token(c)[0] == 200, timeout, "a token (200)")


def dpkg(c, *args, timeout=300):
    # stdin closed: a conffile prompt would fail the step, as it fails an unattended upgrade.
    return c.run(["dpkg", *args], timeout=timeout)


@pytest.fixture(scope="module")
def debs(tmp_path_factory):
    if os.environ.get("MI_ASAN") == "1":
        pytest.skip("the container runs the release package: run this test from the plain build")
    reason = ns.missing_tools()
    if reason:
        pytest.skip(reason)
    if not h.BUILD_DIR or not os.path.exists(os.path.join(h.BUILD_DIR, "CPackConfig.cmake")):
        pytest.skip("MI_BUILD_DIR with CPackConfig.cmake not given")
    for tool in ("cpack", "dpkg-deb"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not installed")
    out = tmp_path_factory.mktemp("nspawn-deb")
    host_run(["cpack", "--config", os.path.join(h.BUILD_DIR, "CPackConfig.cmake"),
              "-G", "DEB", "-B", str(out)])
    shutil.rmtree(os.path.join(str(out), "_CPack_Packages"), ignore_errors=True)
    found = glob.glob(os.path.join(str(out), "*.deb"))
    assert len(found) == 1, found
    version = host_run(["dpkg-deb", "-f", found[0], "Version"]).stdout.strip()
    upgrade = reversioned(found[0], version + "+upgrade1", str(out))
    return {"deb": found[0], "version": version, "upgrade": upgrade,
            "upgrade_version": version + "+upgrade1"}


@pytest.fixture(scope="module")
def c(debs, tmp_path_factory):
    h.require_binaries("emulator")
    rootfs = ns.cached_rootfs(os.path.abspath(h.BUILD_DIR))
    started = time.monotonic()
    with ns.Container(rootfs, str(tmp_path_factory.mktemp("nspawn"))) as container:
        print(f"nspawn: copy and boot took {time.monotonic() - started:.1f} s")
        container.put(debs["deb"], "/root/mi-agent.deb")
        container.put(debs["upgrade"], "/root/mi-agent-upgrade.deb")
        container.put(h.EMULATOR_BIN, "/usr/local/bin/imds-emulator", 0o755)
        container.run(["systemd-run", "--unit=imds-emulator", "--property=Restart=on-failure",
                       "/usr/local/bin/imds-emulator", "--host", "127.0.0.1",
                       "--port", str(EMULATOR_PORT)])
        wait_for(lambda: curl(container, f"http://127.0.0.1:{EMULATOR_PORT}/admin/requests")[0]
                 == 200, 30, "the emulator")
        # Before the package: our drop-in (the package owns the directory),
        # and a short watchdog keeps step 3 short (this container only).
        write_agent_config(container, json.dumps(config_fields(), indent=2) + "\n")
        container.write("/etc/systemd/system/mi-agent.service.d/watchdog.conf",
                        f"[Service]\nWatchdogSec={WATCHDOG_SEC}s\n")
        try:
            yield container
        finally:
            print(container.run(["journalctl", "--no-pager", "-n", "60", "-u", "mi-agent*"],
                                check=False).stdout)


def test_1_install_starts_and_serves(c):
    dpkg(c, "-i", "/root/mi-agent.deb")
    wait_serving(c)
    status_text = show(c, "mi-agent.service", "StatusText")
    print(f"nspawn: StatusText={status_text!r}")
    assert status_text, "no STATUS= from sd_notify"
    assert show(c, "mi-agent.socket", "ActiveState") == "active"
    for unit in ("mi-agent.service", "mi-agent.socket"):
        assert c.run(["systemctl", "is-enabled", unit]).stdout.strip() == "enabled"
    code, body = token(c)
    assert code == 200, body
    assert json.loads(body)["access_token"]
    assert json.load(open(c.copy + DISCOVERY)) == {"url": "http://localhost:50342/oauth2/token"}


def test_2_reload_good_then_bad(c):
    before = status(c)["config_digest"]
    write_agent_config(c, json.dumps(config_fields(imds={**config_fields()["imds"], "timeout_seconds": 7}), indent=2) + "\n")
    r = c.run(["systemctl", "reload", "mi-agent.service"], check=False)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: status(c)["config_digest"] != before, 30, "config_digest to change")
    good = status(c)["config_digest"]

    write_agent_config(c, '{"port": 50342, "log": {"level": "nonsense"}\n')
    bad = c.run(["systemctl", "reload", "mi-agent.service"], check=False)
    assert bad.returncode != 0, "systemctl reload accepted an invalid file"
    assert show(c, "mi-agent.service", "ActiveState") == "active"
    assert token(c)[0] == 200
    assert status(c)["config_digest"] == good, "a bad file replaced the configuration"
    write_agent_config(c, json.dumps(config_fields(), indent=2) + "\n")
    c.run(["systemctl", "reload", "mi-agent.service"], check=False)
    wait_for(lambda: status(c)["config_digest"] == before, 30, "the first config back")
    assert status(c)["reload"]["result"] == "ok"


def test_2b_invalid_config_at_start_exits_78_and_is_not_restarted(c):
    write_agent_config(c, '{"port": "fifty"}\n')
    c.run(["systemctl", "restart", "mi-agent.service"], check=False)
    wait_for(lambda: show(c, "mi-agent.service", "ActiveState") == "failed", 60, "the start to fail")
    assert show(c, "mi-agent.service", "ExecMainStatus") == "78"
    restarts = show(c, "mi-agent.service", "NRestarts")
    time.sleep(3 * 2)  # three RestartSec=2s: a restart loop would have run again by now
    assert show(c, "mi-agent.service", "ActiveState") == "failed"
    assert show(c, "mi-agent.service", "NRestarts") == restarts, "restarted despite RestartPreventExitStatus=78"
    errors = c.run(["journalctl", "-u", "mi-agent.service", "-p", "err", "-o", "cat", "--no-pager"]).stdout
    assert "invalid configuration" in errors and "port" in errors, errors

    write_agent_config(c, json.dumps(config_fields(), indent=2) + "\n")
    c.run(["systemctl", "reset-failed", "mi-agent.service"])
    c.run(["systemctl", "start", "mi-agent.service"])
    wait_serving(c)


def test_2c_audit_records_reach_the_journal(c):
    write_agent_config(c, json.dumps(config_fields(audit={"enabled": True, "sink": "journal",
                                                          "summarize_seconds": 0}), indent=2) + "\n")
    assert c.run(["systemctl", "reload", "mi-agent.service"], check=False).returncode == 0
    wait_for(lambda: status(c)["reload"]["result"] == "ok", 30, "the reload")
    code, body = token(c)
    assert code == 200, body
    access_token = json.loads(body)["access_token"]

    def records():
        out = c.run(["journalctl", "-o", "json", "--no-pager", "MESSAGE_ID=601c857e51094af4b16923c03187d13f"],
                    check=False).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]
    found = wait_for(records, 30, "an audit record in the journal")
    r = found[-1]
    assert r["MI_DECISION"] == "allow" and r["MI_RESOURCE"] == "https://management.azure.com/", r
    assert r["MI_TOKEN_FINGERPRINT"] == hashlib.sha256(access_token.encode()).hexdigest()[:16], r
    assert r["PRIORITY"] == "6" and r["MI_CALLER_UID"] == "0", r
    journal = c.run(["journalctl", "-o", "export", "--no-pager"]).stdout
    assert access_token not in journal and access_token[:40] not in journal

    write_agent_config(c, json.dumps(config_fields(), indent=2) + "\n")
    assert c.run(["systemctl", "reload", "mi-agent.service"], check=False).returncode == 0


def test_3_watchdog_restarts_a_stopped_agent(c):
    pid = show(c, "mi-agent.service", "MainPID")
    restarts = int(show(c, "mi-agent.service", "NRestarts"))
    assert show(c, "mi-agent.service", "WatchdogUSec") == f"{WATCHDOG_SEC}s"
    c.run(["kill", "-STOP", pid])
    # WatchdogSec, then SIGABRT (pending while stopped) and SIGKILL after the
    # abort timeout (TimeoutStopSec), then RestartSec: well inside 90 s.
    wait_for(lambda: int(show(c, "mi-agent.service", "NRestarts")) > restarts, 90,
             "systemd to restart the stopped agent", interval=1)
    wait_serving(c)
    assert show(c, "mi-agent.service", "MainPID") not in ("0", pid)
    journal = c.run(["journalctl", "--no-pager", "-o", "cat", "-u", "mi-agent.service"]).stdout
    assert "Failed with result 'watchdog'" in journal, journal[-3000:]


def test_4_socket_activation(c):
    c.run(["systemctl", "stop", "mi-agent.service"])
    assert show(c, "mi-agent.service", "ActiveState") == "inactive"
    assert show(c, "mi-agent.socket", "ActiveState") == "active"
    code, body = token(c)
    assert code == 200, body
    assert show(c, "mi-agent.service", "ActiveState") == "active"


LOOP = r"""
n=0; ok=0
while [ $n -lt 300 ]; do
  code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 20 -H 'Metadata: true' "$1")
  echo "$code" >>/root/loop.out
  n=$((n+1)); sleep 0.02
done
echo done >>/root/loop.out
"""


def test_5_upgrade_under_load(c, debs):
    c.write("/root/loop.sh", LOOP, 0o755)
    c.run(["systemd-run", "--unit=token-loop", "--property=Type=oneshot", "--no-block",
           "/bin/sh", "/root/loop.sh", TOKEN_URL])
    out = c.copy + "/root/loop.out"
    lines = lambda: open(out).read().split() if os.path.exists(out) else []
    wait_for(lambda: len(lines()) >= 20, 60, "the request loop to start")
    at_start = len(lines())
    old_pid = show(c, "mi-agent.service", "MainPID")
    dpkg(c, "-i", "/root/mi-agent-upgrade.deb")
    at_end = len(lines())
    wait_for(lambda: "done" in lines(), 120, "the request loop to finish (bounded: 300)", 1)
    codes = [x for x in lines() if x != "done"]
    print(f"upgrade: requests {at_start}..{at_end} of {len(codes)} ran during dpkg -i")
    assert len(codes) == 300
    assert codes == ["200"] * 300, {code: codes.count(code) for code in set(codes)}
    version = c.run(["dpkg-query", "-W", "-f=${Version}", "mi-agent"]).stdout
    assert version == debs["upgrade_version"]
    wait_serving(c)
    assert show(c, "mi-agent.service", "MainPID") != old_pid, "the upgrade did not restart it"


def test_6_remove_then_install_again(c):
    dpkg(c, "-r", "mi-agent")
    assert show(c, "mi-agent.service", "ActiveState") in ("inactive", "failed")
    masked = {u: c.run(["systemctl", "is-enabled", u], check=False).stdout.strip()
              for u in ("mi-agent.service", "mi-agent.socket")}
    assert masked == {"mi-agent.service": "masked", "mi-agent.socket": "masked"}, masked
    dpkg(c, "-i", "/root/mi-agent.deb")
    enabled = {u: c.run(["systemctl", "is-enabled", u], check=False).stdout.strip()
               for u in ("mi-agent.service", "mi-agent.socket")}
    active = {u: show(c, u, "ActiveState") for u in ("mi-agent.service", "mi-agent.socket")}
    assert enabled == {"mi-agent.service": "enabled", "mi-agent.socket": "enabled"}, enabled
    assert active == {"mi-agent.service": "active", "mi-agent.socket": "active"}, active
    wait_serving(c)


def test_7_purge_leaves_nothing(c):
    # Our own drop-in first: it is not the package's, and would keep the unit loaded.
    shutil.rmtree(c.copy + "/etc/systemd/system/mi-agent.service.d")
    listed = c.run(["dpkg", "-L", "mi-agent"]).stdout.split("\n")
    owned = [p for p in listed if p and (not os.path.isdir(c.copy + p) or "mi-agent" in p)]
    assert "/usr/bin/mi-agent" in owned, listed
    dpkg(c, "--purge", "mi-agent")
    assert c.run(["dpkg-query", "-W", "mi-agent"], check=False).returncode != 0
    left = [p for p in owned if os.path.lexists(c.copy + p)]
    assert not left, f"purge left the package's files: {left}"
    assert not os.path.exists(c.copy + "/etc/mi-agent")
    assert not os.path.exists(c.copy + DISCOVERY)
    links = glob.glob(c.copy + UNIT_LINKS_GLOB, recursive=True)
    assert not links, links
    state = glob.glob(c.copy + "/var/lib/systemd/deb-systemd-helper-*/**/*mi-agent*",
                      recursive=True)
    assert not state, state
    for unit in ("mi-agent.service", "mi-agent.socket"):
        assert show(c, unit, "LoadState") == "not-found", unit
    # Beyond the package's own list: what systemd made for the unit (LogsDirectory=).
    found = c.run(["find", "/etc", "/lib", "/usr", "/var", "/run", "-xdev",
                   "-name", "*mi-agent*"], check=False).stdout.split()
    assert not found, f"purge left {found}"

