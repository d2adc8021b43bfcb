"""The App Service / Functions dialects (issue #14 point 4) against the
emulator: /msi/token 2019-08-01 with X-IDENTITY-HEADER, /MSI/token 2017-09-01
with Secret, 401 for a missing or wrong secret, `mi-agent env`, and Debian's
python3-msrestazure as a real client (MSI_ENDPOINT/MSI_SECRET)."""

import json
import os
import secrets
import shutil
import signal
import subprocess
import urllib.parse

import pytest

from conftest import ARM, UA_CLIENT_ID, UA_OBJECT_ID, Agent, agent_command, agent_env, request, wait_for

SECRET = secrets.token_hex(24)
RESOURCE = urllib.parse.quote(ARM, safe="")


@pytest.fixture
def secret_file(tmp_path):
    path = tmp_path / "app-service.secret"
    path.write_text(SECRET + "\n")
    path.chmod(0o640)
    return str(path)


@pytest.fixture
def agent(emulator, agent_factory, secret_file):
    return agent_factory(emulator, {"dialects": {"app_service": {"enabled": True, "secret_file": secret_file}}})


def get(agent, target, headers):
    status, _, body = request(agent.port, "GET", target, headers)
    return status, json.loads(body)


def test_2019_answers_the_dialects_shape(agent, emulator):
    status, doc = get(agent, f"/msi/token?api-version=2019-08-01&resource={RESOURCE}", {"X-IDENTITY-HEADER": SECRET})
    assert status == 200, doc
    assert list(doc) == ["access_token", "expires_on", "resource", "token_type", "client_id"]
    assert doc["access_token"].count(".") == 2
    assert doc["expires_on"].isdigit() and int(doc["expires_on"]) > 0
    assert doc["resource"] == ARM and doc["token_type"] == "Bearer"
    # The same cache as the other dialects: the IMDS-shaped API gets the same token, no second fetch.
    status, _, body = agent.token()
    assert status == 200 and json.loads(body)["access_token"] == doc["access_token"]
    assert emulator.count() == 1


@pytest.mark.parametrize("selector,value", [("client_id", UA_CLIENT_ID), ("object_id", UA_OBJECT_ID),
                                            ("principal_id", UA_OBJECT_ID)])
def test_2019_user_assigned(agent, selector, value):
    status, doc = get(agent, f"/msi/token?api-version=2019-08-01&resource={RESOURCE}&{selector}={value}",
                      {"X-IDENTITY-HEADER": SECRET})
    assert status == 200, doc
    assert doc["client_id"].lower() == UA_CLIENT_ID


def test_2017_answers_epoch_seconds(agent):
    status, doc = get(agent, f"/MSI/token/?resource={ARM}&api-version=2017-09-01&clientid={UA_CLIENT_ID}",
                      {"Secret": SECRET})
    assert status == 200, doc
    assert doc["expires_on"].isdigit(), "epoch seconds, not the original service's date"
    assert doc["client_id"].lower() == UA_CLIENT_ID


@pytest.mark.parametrize("target,headers", [
    ("/msi/token?api-version=2019-08-01&resource=r", {}),
    ("/msi/token?api-version=2019-08-01&resource=r", {"X-IDENTITY-HEADER": SECRET[:-1] + "x"}),
    ("/msi/token?api-version=2019-08-01&resource=r", {"Secret": SECRET}),
    ("/MSI/token?api-version=2017-09-01&resource=r", {"Secret": "wrong"}),
])
def test_missing_or_wrong_secret_is_401(agent, emulator, target, headers):
    status, doc = get(agent, target, headers)
    assert status == 401 and doc["error"] == "unauthorized_client", doc
    assert SECRET not in agent.output()
    assert emulator.count() == 0


def test_host_and_origin_checks_apply(agent):
    target = f"/msi/token?api-version=2019-08-01&resource={RESOURCE}"
    status, doc = get(agent, target, {"X-IDENTITY-HEADER": SECRET, "Origin": "http://evil.example"})
    assert status == 400, doc
    status, _, _ = request(agent.port, "GET", target, {"X-IDENTITY-HEADER": SECRET, "Host": "evil.example"})
    assert status == 400


def test_reload_reads_the_secret_again(agent, secret_file):
    target = f"/msi/token?api-version=2019-08-01&resource={RESOURCE}"
    new = secrets.token_hex(20)
    with open(secret_file, "w") as f:
        f.write(new)
    agent.send_signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in agent.output(), what="the reload")
    assert get(agent, target, {"X-IDENTITY-HEADER": SECRET})[0] == 401
    assert get(agent, target, {"X-IDENTITY-HEADER": new})[0] == 200
    assert new not in agent.output() and SECRET not in agent.output()


def test_off_by_default_the_paths_are_unknown(emulator, agent_factory):
    a = agent_factory(emulator)
    status, doc = get(a, "/msi/token?api-version=2019-08-01&resource=r", {"X-IDENTITY-HEADER": SECRET})
    assert status == 401 and doc["error"] == "unknown_source"


def test_env_prints_what_an_application_needs(agent):
    out = subprocess.run(agent_command("env", "--config", agent.config_path), env=agent_env(),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    base = f"http://127.0.0.1:{agent.port}"
    assert out.stdout == (f"export IDENTITY_ENDPOINT='{base}/msi/token'\nexport IDENTITY_HEADER='{SECRET}'\n"
                          f"export MSI_ENDPOINT='{base}/MSI/token'\nexport MSI_SECRET='{SECRET}'\n")
    # What a shell makes of it, handed to a client.
    env = subprocess.run(["sh", "-c", out.stdout + 'curl -s -H "X-IDENTITY-HEADER: $IDENTITY_HEADER" '
                          f'"$IDENTITY_ENDPOINT?api-version=2019-08-01&resource={RESOURCE}"'],
                         env={"PATH": os.environ["PATH"], "no_proxy": "*"}, capture_output=True, text=True,
                         timeout=30)
    assert json.loads(env.stdout)["resource"] == ARM


def test_env_refuses_when_the_dialect_is_off(emulator, agent_factory):
    a = agent_factory(emulator)
    out = subprocess.run(agent_command("env", "--config", a.config_path), env=agent_env(), capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 1 and "dialects.app_service.enabled is false" in out.stderr


def test_a_missing_secret_file_stops_the_start_naming_it(emulator, tmp_path):
    missing = str(tmp_path / "nope.secret")
    a = Agent(emulator, {"dialects": {"app_service": {"enabled": True, "secret_file": missing}}}, wait_ready=False)
    try:
        wait_for(lambda: not a.alive(), what="mi-agent exits")
        assert a.wait() == 78  # EX_CONFIG: an invalid configuration
        assert missing in a.output()
    finally:
        a.stop()


def msrestazure_env(agent, monkeypatch, app_service):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "IDENTITY_ENDPOINT", "IDENTITY_HEADER"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "localhost,127.0.0.1,::1")
    monkeypatch.setenv("MSI_ENDPOINT", f"http://127.0.0.1:{agent.port}/MSI/token")
    monkeypatch.setenv("MSI_SECRET", SECRET)
    if app_service:
        monkeypatch.setenv("APPSETTING_WEBSITE_SITE_NAME", "mi-agent-test")
    else:
        monkeypatch.delenv("APPSETTING_WEBSITE_SITE_NAME", raising=False)


@pytest.mark.parametrize("client_id", [None, UA_CLIENT_ID])
def test_msrestazure_on_app_service(agent, monkeypatch, client_id):
    from msrestazure.azure_active_directory import MSIAuthentication  # Debian python3-msrestazure
    msrestazure_env(agent, monkeypatch, app_service=True)
    kwargs = {"client_id": client_id} if client_id else {}
    creds = MSIAuthentication(resource=ARM, **kwargs)  # 2017-09-01 with the Secret header
    assert creds.scheme == "Bearer"
    assert creds.token["access_token"].count(".") == 2
    assert int(creds.token["expires_on"]) > 0
    if client_id:
        assert creds.token["client_id"].lower() == UA_CLIENT_ID


def test_msrestazure_off_app_service_posts_the_legacy_api(agent, monkeypatch):
    # MSI_ENDPOINT without APPSETTING_WEBSITE_SITE_NAME: msrestazure POSTs the
    # VM extension's form with Metadata: true and no secret.
    from msrestazure.azure_active_directory import MSIAuthentication
    msrestazure_env(agent, monkeypatch, app_service=False)
    creds = MSIAuthentication(resource=ARM, client_id=UA_CLIENT_ID)
    assert creds.token["access_token"].count(".") == 2
    assert creds.token["client_id"].lower() == UA_CLIENT_ID


def azure_identity_env():
    """NODE_PATH holding @azure/identity (MI_NODE_PATH, else the default
    resolution), or None when node cannot load it: the test is skipped."""
    if not shutil.which("node"):
        return None
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    if os.environ.get("MI_NODE_PATH"):
        env["NODE_PATH"] = os.environ["MI_NODE_PATH"]
    probe = subprocess.run(["node", "-e", "require('@azure/identity')"], env=env, capture_output=True, timeout=60)
    return env if probe.returncode == 0 else None


@pytest.mark.parametrize("client_id", [None, UA_CLIENT_ID])
def test_azure_identity_js_managed_identity_credential(agent, emulator, client_id):
    env = azure_identity_env()
    if env is None:
        pytest.skip("node with @azure/identity not available (npm install @azure/identity; MI_NODE_PATH=.../node_modules)")
    env.update({"IDENTITY_ENDPOINT": f"http://127.0.0.1:{agent.port}/msi/token", "IDENTITY_HEADER": SECRET,
                "no_proxy": "*"})
    script = os.path.join(os.path.dirname(__file__), "azure_identity_client.js")
    out = subprocess.run(["node", script, *([client_id] if client_id else [])], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr + agent.output()
    doc = json.loads(out.stdout)
    assert doc["parts"] == 3 and doc["expiresOnTimestamp"] > 0
    ua = [r for r in emulator.requests()["log"] if UA_CLIENT_ID in json.dumps(r).lower()]
    assert bool(ua) == bool(client_id)
