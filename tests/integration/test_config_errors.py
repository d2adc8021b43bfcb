"""Configuration errors are loud, and drop-ins merge over the main file.

  * An invalid file, drop-in or option value at start: exit 78 (EX_CONFIG) and
    an error line naming the file and the key; --check-config answers 0 / 78.
  * <dir of --config>/config.d/*.json merge over the file in name order.
  * SIGHUP with a bad drop-in keeps the running configuration: /status
    "reload" says "failed" (and why), mi_agent_config_reload_success is 0,
    STATUS= says "reload failed: ..."; a fixed drop-in makes them "ok" and 1.

Every config file lives in the test's own directory: never /tmp/config.d,
which other agents' temporary config files would share.
"""

import json
import signal
import subprocess

import pytest

from conftest import Agent, agent_command, agent_env, free_port, port_accepts, wait_for
from test_sd_notify import FakeSystemd
import svc_helpers as h

EX_CONFIG = 78
ARM = "https://management.azure.com/"


@pytest.fixture(autouse=True)
def binaries(request):
    h.require_test_binaries(request)


def write(path, doc):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return str(path)


def check_config(path):
    return subprocess.run(agent_command("--check-config", str(path)), capture_output=True, text=True,
                          env=agent_env(), timeout=30)


def status(agent):
    code, _, body = agent.health("/status")
    assert code == 200, body
    return json.loads(body)


def metrics(agent):
    code, _, body = agent.health("/metrics")
    assert code == 200, body
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in body.splitlines() if line and not line.startswith("#")}


def failed_start(emulator, config_path, *extra_args):
    agent = Agent(emulator, flags=True, config_path=str(config_path), extra_args=extra_args, wait_ready=False)
    try:
        return agent.wait(timeout=h.START_TIMEOUT), agent.output()
    finally:
        agent.stop()


def error_lines(output):
    # --log-format text: "<time> error <message>"
    return [line for line in output.splitlines() if line.split(" ", 2)[1:2] == ["error"]]


def test_an_invalid_file_stops_the_start_with_78_and_an_error_line(emulator, tmp_path):
    config = tmp_path / "config.json"
    write(config, {"cache": {"margin_seconds": "soon"}})
    code, out = failed_start(emulator, config)
    assert code == EX_CONFIG, out
    assert any(f"invalid configuration: {config}: cache.margin_seconds: expected a number" in line
               for line in error_lines(out)), out


def test_an_invalid_drop_in_is_named(emulator, tmp_path):
    config = tmp_path / "config.json"
    write(config, {})
    bad = write(tmp_path / "config.d" / "20-bad.json", {"budget": {"burst": 0}})
    code, out = failed_start(emulator, config)
    assert code == EX_CONFIG, out
    assert any(f"invalid configuration: {bad}: budget.burst: expected an integer" in line
               for line in error_lines(out)), out


def test_a_refused_option_value_is_an_invalid_configuration(emulator, tmp_path):
    config = tmp_path / "config.json"
    write(config, {})
    code, out = failed_start(emulator, config, "--log-level", "loud")
    assert code == EX_CONFIG, out
    assert any("invalid configuration: --log-level: expected" in line for line in error_lines(out)), out


def test_check_config_exit_codes_and_drop_ins(tmp_path):
    config = tmp_path / "config.json"
    write(config, {"port": 4000})
    r = check_config(config)
    assert r.returncode == 0 and "(port 4000," in r.stdout, r
    write(tmp_path / "config.d" / "10-port.json", {"port": 4001})
    write(tmp_path / "config.d" / "10-port.json~", "not json")  # an editor's backup: ignored
    r = check_config(config)
    assert r.returncode == 0 and "(port 4001," in r.stdout, r
    bad = write(tmp_path / "config.d" / "20-bad.json", {"prot": 1})
    r = check_config(config)
    assert r.returncode == EX_CONFIG and f"invalid configuration: {bad}: prot: unknown key" in r.stderr, r
    write(tmp_path / "config.d" / "20-bad.json", "{")
    r = check_config(config)
    assert r.returncode == EX_CONFIG and f"{bad}: not valid JSON" in r.stderr, r
    r = check_config(tmp_path / "missing.json")
    assert r.returncode == EX_CONFIG, r


def start_with_drop_in(emulator, tmp_path, env=None):
    """An agent whose main file says one port and whose drop-in another."""
    main_port, port, health_port = free_port(), free_port(), free_port()
    config = tmp_path / "config.json"
    write(config, {"port": main_port, "listen": ["127.0.0.1"], "health": [f"127.0.0.1:{health_port}"],
                   "imds": {"endpoint": emulator.endpoint}})
    write(tmp_path / "config.d" / "50-port.json", {"port": port})
    agent = Agent(emulator, config_path=str(config), port=port, env=env, wait_ready=False)
    agent.health_port = health_port
    return agent, main_port


def test_a_drop_in_overrides_the_port_and_a_bad_one_fails_the_reload_only(emulator, tmp_path):
    agent, main_port = start_with_drop_in(emulator, tmp_path)
    try:
        agent.wait_ready()
        assert not port_accepts(main_port)
        status_code, body = h.get_token(agent.port, ARM)
        assert status_code == 200, body
        doc = status(agent)
        assert doc["reload"] == {"result": "none", "time": None, "time_epoch": None, "error": None}
        m = metrics(agent)
        assert m["mi_agent_config_reload_success"] == 1 and m["mi_agent_config_reload_timestamp_seconds"] == 0

        bad = write(tmp_path / "config.d" / "60-bad.json", {"cache": {"max_keys": "many"}})
        agent.send_signal(signal.SIGHUP)
        doc = wait_for(lambda: (lambda d: d if d["reload"]["result"] == "failed" else None)(status(agent)),
                       what="the failed reload in /status")
        assert doc["reload"]["error"].startswith(f"{bad}: cache.max_keys: expected an integer"), doc["reload"]
        assert doc["reload"]["time_epoch"] > 0 and doc["reload"]["time"].endswith("Z")
        m = metrics(agent)
        assert m["mi_agent_config_reload_success"] == 0, m
        assert m["mi_agent_config_reload_timestamp_seconds"] == doc["reload"]["time_epoch"]
        assert f"reload rejected, keeping the running configuration: {bad}: cache.max_keys" in agent.output()
        assert any("reload rejected" in line for line in error_lines(agent.output()))
        # Still serving, on the drop-in's port.
        assert h.get_token(agent.port, "https://vault.azure.net")[0] == 200

        write(tmp_path / "config.d" / "60-bad.json", {"cache": {"max_keys": 100}})
        agent.send_signal(signal.SIGHUP)
        doc = wait_for(lambda: (lambda d: d if d["reload"]["result"] == "ok" else None)(status(agent)),
                       what="the good reload in /status")
        assert doc["reload"]["error"] is None
        assert metrics(agent)["mi_agent_config_reload_success"] == 1
        assert agent.stop() == 0, agent.output()
    finally:
        agent.stop()


def wait_status(manager, predicate, what):
    """Receives until some STATUS= so far satisfies `predicate`."""
    def seen():
        manager.receive(0.2)
        return any(predicate(f["STATUS"]) for _, f, _ in manager.messages if "STATUS" in f)
    wait_for(seen, what=what)


def test_status_line_says_imds_unknown_then_ok_and_a_failed_reload(emulator, tmp_path):
    manager = FakeSystemd(tmp_path)
    agent, _ = start_with_drop_in(emulator, tmp_path, env={"NOTIFY_SOCKET": manager.path})
    try:
        first = manager.wait_for("STATUS")["STATUS"]
        assert first.endswith("IMDS unknown"), first
        assert h.get_token(agent.port, ARM)[0] == 200
        wait_status(manager, lambda s: s.endswith("IMDS ok"), "STATUS= ... IMDS ok")

        bad = write(tmp_path / "config.d" / "60-bad.json", {"port": "x"})
        agent.send_signal(signal.SIGHUP)
        wait_status(manager, lambda s: f"IMDS ok; reload failed: {bad}: port: expected" in s,
                    "STATUS= ... reload failed")
    finally:
        agent.stop()
        manager.close()


def test_env_reads_the_drop_ins_too(tmp_path):
    """`mi-agent env` takes its port and secret from the same merged configuration."""
    secret = tmp_path / "app-service.secret"
    secret.write_text("s" * 32)
    secret.chmod(0o600)
    config = tmp_path / "config.json"
    write(config, {"port": 4100})
    write(tmp_path / "config.d" / "10-dialects.json",
          {"port": 4101, "dialects": {"app_service": {"enabled": True, "secret_file": str(secret)}}})
    out = subprocess.run(agent_command("env", "--config", str(config)), env=agent_env(), capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "export IDENTITY_ENDPOINT='http://127.0.0.1:4101/msi/token'\n" in out.stdout, out.stdout


def test_adopted_sockets_unlike_the_configured_port_are_warned_about(tmp_path, emulator):
    from test_socket_activation import ACTIVATE, activate
    if not ACTIVATE:
        pytest.skip("systemd-socket-activate not installed (package systemd)")
    port, configured = free_port(), free_port()
    proc = activate(tmp_path, [f"127.0.0.1:{port}"],
                    ["--port", str(configured), "--listen", "127.0.0.1", "--no-health",
                     "--imds-endpoint", emulator.endpoint, "--log-format", "text"])
    try:
        wait_for(lambda: port_accepts(port) or not proc.alive(), timeout=h.START_TIMEOUT,
                 what="systemd-socket-activate to listen")
        assert h.get_token(port, ARM)[0] == 200, proc.output()
        warning = [line for line in proc.output().splitlines() if " warning " in line and "sockets" in line]
        assert len(warning) == 1, proc.output()
        assert f"(127.0.0.1:{port}) differ from the configured port and listen addresses " \
               f"(127.0.0.1:{configured})" in warning[0], warning
    finally:
        proc.stop()
