"""`mi-agent doctor` against a live agent and the emulator: one line per check,
exit 0 without a failure, 1 with one; --bundle's contents, never a token."""

import os
import re
import subprocess
import tarfile

import pytest

from conftest import ARM, UA_CLIENT_ID, agent_command

LINE = re.compile(r"^(ok  |warn|fail|skip) (\w+): \S")


def doctor(agent, *args, env=None):
    run_env = {k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    run_env.update(env or {})
    r = subprocess.run(agent_command("doctor", "--config", agent.config_path, *args), capture_output=True,
                       text=True, timeout=120, env=run_env)
    lines = r.stdout.splitlines()
    assert all(LINE.match(l) for l in lines), r.stdout
    checks = {}
    for l in lines:
        checks.setdefault(l[5:].split(":", 1)[0], []).append(l)
    return r.returncode, checks, r.stdout + r.stderr


def verdicts(checks, name):
    return [l[:4].strip() for l in checks.get(name, [])]


@pytest.mark.emulator_args("--date-offset", "0")
def test_doctor_all_ok(agent_factory, emulator):
    agent = agent_factory(emulator, config={"prefetch": [{"resource": ARM}, {"resource": ARM, "client_id": UA_CLIENT_ID}]})
    code, checks, out = doctor(agent)
    assert code == 0, out
    assert verdicts(checks, "config") == ["ok"], out
    assert verdicts(checks, "imds") == ["ok"] and "answers (HTTP 400 in " in checks["imds"][0], out
    assert verdicts(checks, "clock") == ["ok"], out
    assert verdicts(checks, "proxy") == ["ok"], out
    assert verdicts(checks, "agent") == ["ok"] and "ready" in checks["agent"][0], out
    assert checks["identity"] == ["ok   identity: 2 key(s) ok"], out
    assert "fail" not in [v for name in checks for v in verdicts(checks, name)], out


@pytest.mark.emulator_args("--date-offset", "-400")
def test_doctor_clock_skew_and_proxy_warn(agent_factory, emulator):
    agent = agent_factory(emulator)
    code, checks, out = doctor(agent, env={"https_proxy": "http://127.0.0.1:9", "no_proxy": "localhost"})
    assert code == 1, out
    assert verdicts(checks, "clock") == ["fail"] and "ahead of" in checks["clock"][0], out
    assert verdicts(checks, "proxy") == ["warn"] and "169.254.169.254" in checks["proxy"][0], out
    code, checks, out = doctor(agent, env={"HTTP_PROXY": "http://127.0.0.1:9", "NO_PROXY": "localhost,169.254.169.254"})
    assert verdicts(checks, "proxy") == ["ok"], out


def test_doctor_imds_down_fails(agent_factory, emulator):
    agent = agent_factory(emulator)
    emulator.stop()
    code, checks, out = doctor(agent)
    assert code == 1, out
    assert verdicts(checks, "imds") == ["fail"] and "cannot reach" in checks["imds"][0], out
    assert "->" in checks["imds"][0]


def test_doctor_failing_identity_and_no_agent(agent_factory, emulator, tmp_path):
    agent = agent_factory(emulator)
    unknown = "99999999-8888-4777-8666-555555555555"
    subprocess.run(agent_command("token", "--resource", ARM, "--client-id", unknown, "--port", str(agent.port)),
                   capture_output=True, timeout=60)
    code, checks, out = doctor(agent)
    assert code == 1, out
    assert any(unknown in l and l.startswith("fail") for l in checks["identity"]), out

    bad = tmp_path / "bad.json"
    bad.write_text('{"cahce": {}}')
    r = subprocess.run(agent_command("doctor", "--config", str(bad), "--health", "127.0.0.1:9"),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert re.search(r"^fail config: invalid: .*cahce: unknown key", r.stdout, re.M), r.stdout
    assert re.search(r"^fail agent: cannot reach the agent", r.stdout, re.M), r.stdout
    assert subprocess.run(agent_command("doctor", "--bogus"), capture_output=True, timeout=60).returncode == 2


@pytest.mark.emulator_args("--date-offset", "0")
def test_doctor_bundle_has_everything_and_no_token(agent_factory, emulator, tmp_path):
    agent = agent_factory(emulator, config={"dialects": {"app_service": {"enabled": False}}})
    r = subprocess.run(agent_command("token", "--resource", ARM, "--port", str(agent.port), "--show-token"),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    tokens = emulator.admin("GET", "tokens")["tokens"]
    assert tokens

    bundle = tmp_path / "support.tar.gz"
    code, checks, out = doctor(agent, "--bundle", str(bundle))
    assert code == 0, out
    assert checks["bundle"] == [f"ok   bundle: wrote {bundle}"], out
    assert os.stat(bundle).st_mode & 0o077 == 0
    with tarfile.open(bundle) as tar:
        names = sorted(tar.getnames())
        assert names == sorted(["doctor.txt", "status.json", "metrics.txt", "config.json", "journal.txt",
                                "versions.txt"])
        files = {n: tar.extractfile(n).read().decode() for n in names}
    assert "ok   imds:" in files["doctor.txt"]
    assert '"identities"' in files["status.json"] and ARM in files["status.json"]
    assert "mi_agent_" in files["metrics.txt"]
    assert str(agent.port) in files["config.json"] and '"effective"' in files["config.json"]
    assert files["journal.txt"].strip()
    assert files["versions.txt"].startswith("mi-agent ") and "libuv " in files["versions.txt"]
    assert "libcurl/" in files["versions.txt"] and "kernel " in files["versions.txt"]
    for name, text in files.items():
        assert "eyJ" not in text, name
        for token in tokens:
            assert token not in text and token.split(".")[2][:24] not in text, name
