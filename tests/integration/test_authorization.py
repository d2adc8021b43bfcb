"""Per-caller authorization (issue #13) with real users: the test creates local
users and groups (useradd), asks for tokens as each of them (setpriv + curl)
over loopback TCP from the real agent against the emulator, and checks allow
and deny per matcher (uid, user, supplementary group, exe, process name),
audit mode, a SIGHUP reload of the rules, root without a rule, and
--check-config's errors. The agent runs as root here, so /proc is readable.
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import urllib.parse

import pytest

from conftest import UA_CLIENT_ID, Agent, agent_command, request, wait_for
from local_users import LocalUsers

ARM = "https://management.azure.com/"
VAULT = "https://vault.azure.net"
STORAGE = "https://storage.azure.com/"
GRAPH = "https://graph.microsoft.com/"

pytestmark = pytest.mark.skipif(not LocalUsers.available() or not shutil.which("curl"),
                                reason="needs root, useradd, setpriv and curl")


@pytest.fixture
def users():
    with LocalUsers() as u:
        yield u


@pytest.fixture
def tools():
    """Copies of curl under names of their own, for the exe and process-name rules."""
    d = tempfile.mkdtemp(prefix="mi-authz-")
    os.chmod(d, 0o755)
    paths = {}
    for name in ("mi-exe-tool", "mi-name-tool"):
        paths[name] = os.path.join(d, name)
        shutil.copy2(shutil.which("curl"), paths[name])
        os.chmod(paths[name], 0o755)
    yield paths
    shutil.rmtree(d, ignore_errors=True)


def query(resource, **selector):
    return urllib.parse.urlencode({"resource": resource, **selector})


def as_user(user, port, resource, curl="curl", **selector):
    """A token request as `user` (its uid, gid and groups) with `curl`; (status, JSON)."""
    url = f"http://127.0.0.1:{port}/oauth2/token?{query(resource, **selector)}"
    out = user.run([curl, "-s", "-H", "Metadata: true", "-w", "\n%{http_code}", url], timeout=60)
    assert out.returncode == 0, out.stderr
    body, _, code = out.stdout.rpartition("\n")
    try:
        return int(code), json.loads(body)
    except ValueError:
        return int(code), body


def as_root(port, resource, **selector):
    status, _, body = request(port, "GET", f"/oauth2/token?{query(resource, **selector)}", {"Metadata": "true"})
    return status, json.loads(body)


def rule(name, callers, identities, resources):
    return {"name": name, "callers": callers, "identities": identities, "resources": resources}


def test_enforce_allows_and_denies_per_matcher(emulator, agent_factory, users, tools):
    alice = users.user("alice", groups=["billing"])
    bob = users.user("bob")
    carol = users.user("carol", groups=["billing"])
    billing = users.group("billing")
    dave = users.user("dave")
    agent = agent_factory(emulator, {"authorization": {"mode": "enforce", "rules": [
        rule("by-uid", {"uids": [alice.uid]}, ["default"], [ARM]),
        rule("by-user", {"users": [bob.name]}, [{"client_id": UA_CLIENT_ID.upper()}], [ARM]),
        rule("by-group", {"groups": [billing]}, "*", [VAULT]),
        rule("by-exe", {"exe": [tools["mi-exe-tool"]]}, ["default"], [STORAGE]),
        rule("by-name", {"process_names": ["mi-name-tool"]}, ["default"], [GRAPH]),
    ]}})

    # uid: alice's default identity for ARM, nothing else through that rule.
    assert as_user(alice, agent.port, ARM)[0] == 200
    status, body = as_user(alice, agent.port, ARM, client_id=UA_CLIENT_ID)
    assert status == 401 and body["error"] == "unauthorized_client", body
    assert f"client_id={UA_CLIENT_ID}" in body["error_description"] and ARM in body["error_description"]
    assert "by-user" not in body["error_description"], "the rules are not named"

    # user: bob, with the user-assigned identity (ids compare case-insensitively).
    assert as_user(bob, agent.port, ARM, client_id=UA_CLIENT_ID)[0] == 200
    # ARM's default token is cached now (alice); a hit is checked like a miss.
    assert as_user(bob, agent.port, ARM)[0] == 401

    # group (supplementary): alice and carol, any identity, VAULT only.
    assert as_user(carol, agent.port, VAULT)[0] == 200
    assert as_user(alice, agent.port, VAULT, client_id=UA_CLIENT_ID)[0] == 200
    assert as_user(bob, agent.port, VAULT)[0] == 401
    assert as_user(carol, agent.port, ARM)[0] == 401

    # exe and process name: the same user with the named program and without it.
    assert as_user(dave, agent.port, STORAGE)[0] == 401
    assert as_user(dave, agent.port, STORAGE, curl=tools["mi-exe-tool"])[0] == 200
    assert as_user(dave, agent.port, STORAGE, curl=tools["mi-name-tool"])[0] == 401
    assert as_user(dave, agent.port, GRAPH, curl=tools["mi-name-tool"])[0] == 200
    assert as_user(dave, agent.port, GRAPH)[0] == 401

    # root has no implicit rights.
    status, body = as_root(agent.port, ARM)
    assert status == 401 and body["error"] == "unauthorized_client"
    # Logged, rate-limited: the first denial's line at least.
    assert f"authorization: denied uid {alice.uid}" in agent.output()


def test_root_only_rule(emulator, agent_factory, users):
    bob = users.user("bob")
    agent = agent_factory(emulator, {"authorization": {"mode": "enforce", "rules": [
        rule("root-only", {"uids": [0]}, "*", "*")]}})
    assert as_root(agent.port, ARM)[0] == 200
    assert as_user(bob, agent.port, ARM)[0] == 401


def test_audit_mode_answers_as_off_and_logs_would_be_denials(emulator, agent_factory, users):
    bob = users.user("bob")
    agent = agent_factory(emulator, {"authorization": {"mode": "audit", "rules": [
        rule("root", {"uids": [0]}, "*", "*")]}})
    status, body = as_user(bob, agent.port, ARM)
    assert status == 200 and body["access_token"], body
    assert as_root(agent.port, ARM)[0] == 200
    wait_for(lambda: f"would deny uid {bob.uid}" in agent.output(), what="the would-deny line")
    assert "authorization: denied" not in agent.output()


def test_sighup_reloads_the_rules(emulator, agent_factory, users):
    alice = users.user("alice")
    bob = users.user("bob")
    cfg = {"authorization": {"mode": "enforce", "rules": [rule("a", {"users": [alice.name]}, "*", "*")]}}
    agent = agent_factory(emulator, cfg)
    assert as_user(alice, agent.port, ARM)[0] == 200
    assert as_user(bob, agent.port, ARM)[0] == 401

    config = dict(agent.config)
    config["authorization"] = {"mode": "enforce", "rules": [rule("b", {"uids": [bob.uid]}, "*", "*")]}
    agent.write_config(config)
    agent.send_signal(signal.SIGHUP)
    wait_for(lambda: "configuration reloaded" in agent.output(), what="the reload")
    assert as_user(bob, agent.port, ARM)[0] == 200
    assert as_user(alice, agent.port, ARM)[0] == 401

    enforced_digest = digest(agent)

    # Back to off (rules kept): everyone, as today, and the digest of a config without a policy.
    config["authorization"]["mode"] = "off"
    agent.write_config(config)
    agent.send_signal(signal.SIGHUP)
    wait_for(lambda: agent.output().count("configuration reloaded") == 2, what="the second reload")
    assert as_user(alice, agent.port, ARM)[0] == 200
    off_digest = digest(agent)
    del config["authorization"]
    agent.write_config(config)
    agent.send_signal(signal.SIGHUP)
    wait_for(lambda: agent.output().count("configuration reloaded") == 3, what="the third reload")
    assert digest(agent) == off_digest, "a policy that is off does not change the digest"
    assert enforced_digest != off_digest


def digest(agent):
    status, _, body = agent.health("/status")
    assert status == 200, body
    return json.loads(body)["config_digest"]


def test_check_config_names_the_bad_key(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"authorization": {"mode": "enforce", "rules": [
        rule("a", {"uids": [1]}, ["default"], "*"),
        rule("b", "*", "*", "*"),
        rule("c", "*", ["default", {"client_id": "not-a-guid"}], "*")]}}))
    out = subprocess.run(agent_command("--check-config", str(path)), capture_output=True, text=True, timeout=30)
    assert out.returncode == 78, out
    assert "authorization.rules[2].identities[1].client_id: not a GUID" in out.stderr

    path.write_text(json.dumps({"authorization": {"mode": "enforce", "rules": [
        {"name": "x", "callers": {"uids": [1]}, "identities": "*"}]}}))
    out = subprocess.run(agent_command("--check-config", str(path)), capture_output=True, text=True, timeout=30)
    assert out.returncode == 78 and "authorization.rules[0].resources: required" in out.stderr, out

    path.write_text(json.dumps({"authorization": {"mode": "audit", "rules": [rule("a", {"groups": ["adm"]}, "*", "*")]}}))
    out = subprocess.run(agent_command("--check-config", str(path)), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out
