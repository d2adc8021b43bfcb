"""The audit trail (issue #13) with real users: the real agent against the
emulator, the file sink, token requests as two created users (setpriv + curl)
under enforce and then audit mode. Records carry the fields, the fingerprint is
sha256(access_token)[:16] of the token the caller got, no token is ever in the
file, repeats collapse into a record with a count, and a logrotate-style rename
plus SIGHUP reopens the file. The journal sink is checked when journald runs.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.parse
import uuid

import pytest

from conftest import Agent, request, wait_for
from local_users import LocalUsers

VAULT = "https://vault.azure.net"
STORAGE = "https://storage.azure.com/"
ARM = "https://management.azure.com/"

needs_users = pytest.mark.skipif(not LocalUsers.available() or not shutil.which("curl"),
                                 reason="needs root, useradd, setpriv and curl")


@pytest.fixture
def users():
    with LocalUsers() as u:
        yield u


def as_user(user, port, resource):
    """A token request as `user` with curl: (status, parsed JSON body)."""
    url = f"http://127.0.0.1:{port}/oauth2/token?" + urllib.parse.urlencode({"resource": resource})
    out = user.run(["curl", "-s", "-H", "Metadata: true", "-w", "\n%{http_code}", url], timeout=60)
    assert out.returncode == 0, out.stderr
    body, _, code = out.stdout.rpartition("\n")
    return int(code), json.loads(body)


def as_root(port, resource):
    status, _, body = request(port, "GET", "/oauth2/token?" + urllib.parse.urlencode({"resource": resource}),
                              {"Metadata": "true"})
    return status, json.loads(body)


def records(path):
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def fingerprint(token):
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def policy(mode, alice):
    return {"mode": mode,
            "rules": [{"name": "alice-vault", "callers": {"users": [alice.name]}, "identities": ["default"],
                       "resources": [VAULT]}]}


def reload(agent, n):
    agent.send_signal(signal.SIGHUP)
    wait_for(lambda: agent.output().count("configuration reloaded") == n, what=f"reload {n}")


@needs_users
def test_file_sink_under_enforce_then_audit(emulator, agent_factory, users, tmp_path):
    alice = users.user("alice")
    bob = users.user("bob")
    path = str(tmp_path / "audit.log")
    audit = {"enabled": True, "sink": "file", "path": path, "summarize_seconds": 2}
    agent = agent_factory(emulator, {"authorization": policy("enforce", alice), "audit": audit})
    # The file exists from the start, mode 0640.
    assert os.stat(path).st_mode & 0o777 == 0o640

    tokens = set()
    for _ in range(5):
        status, body = as_user(alice, agent.port, VAULT)
        assert status == 200, body
        tokens.add(body["access_token"])
    status, body = as_user(bob, agent.port, VAULT)
    assert status == 401 and body["error"] == "unauthorized_client", body

    def alice_total():
        return sum(r["count"] for r in records(path) if r.get("caller_uid") == alice.uid)
    wait_for(lambda: alice_total() == 5, what="alice's summarized records")

    recs = records(path)
    mine = [r for r in recs if r.get("caller_uid") == alice.uid]
    assert len(mine) < 5, mine  # repeats collapsed into records with a count
    assert any(r["count"] > 1 for r in mine), mine
    first = mine[0]
    assert first["count"] == 1
    assert first["caller_user"] == alice.name
    assert first["decision"] == "allow" and first["status"] == 200
    assert first["listener"] == "tcp" and first["dialect"] == "legacy"
    assert first["identity"] == "default" and first["resource"] == VAULT
    assert first["cache"] in ("miss", "coalesced", "hit")
    assert first["time"].endswith("Z")
    assert first["token_fingerprint"] in {fingerprint(t) for t in tokens}
    assert isinstance(first["expires_on"], int) and first["expires_on"] > time.time()

    denied = [r for r in recs if r.get("caller_uid") == bob.uid]
    assert len(denied) == 1, recs
    assert denied[0]["decision"] == "deny" and denied[0]["status"] == 401 and denied[0]["cache"] == "none"
    assert "token_fingerprint" not in denied[0] and "expires_on" not in denied[0]

    # Audit mode: bob gets his token; the record says it would have been denied.
    agent.write_config({**agent.config, "authorization": policy("audit", alice)})
    reload(agent, 1)
    status, body = as_user(bob, agent.port, STORAGE)
    assert status == 200, body
    tokens.add(body["access_token"])
    would = wait_for(lambda: [r for r in records(path) if r.get("caller_uid") == bob.uid
                              and r["decision"] == "would_deny"], what="the would_deny record")
    assert would[0]["status"] == 200 and would[0]["resource"] == STORAGE
    assert would[0]["token_fingerprint"] == fingerprint(body["access_token"])

    # /metrics counts decisions with bounded labels; /status names the top callers.
    _, _, metrics = agent.health("/metrics")
    assert 'mi_agent_authorization_decisions_total{decision="deny",listener="tcp",dialect="legacy"} 1' in metrics
    assert "mi_agent_audit_records_total" in metrics
    assert 'uid="' not in metrics  # no uid labels
    _, _, status_doc = agent.health("/status")
    callers = json.loads(status_doc)["callers"]
    assert callers["top_by_requests"][0]["uid"] == alice.uid
    assert callers["top_by_denials"][0]["uid"] == bob.uid

    # Never a token, anywhere in the file.
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for t in tokens:
        assert t not in text
        assert t[:24] not in text


@needs_users
def test_logrotate_rename_and_sighup_reopen(emulator, agent_factory, users, tmp_path):
    alice = users.user("alice")
    path = str(tmp_path / "audit.log")
    # Mode "off" with the trail on: every request is recorded (the caller as the listener saw it).
    audit = {"enabled": True, "sink": "file", "path": path, "summarize_seconds": 60}
    agent = agent_factory(emulator, {"audit": audit})
    assert as_user(alice, agent.port, VAULT)[0] == 200
    wait_for(lambda: len(records(path)) == 1, what="the first record")
    assert records(path)[0]["caller_uid"] == alice.uid

    os.rename(path, path + ".1")
    reload(agent, 1)
    assert as_root(agent.port, STORAGE)[0] == 200
    wait_for(lambda: len(records(path)) == 1, what="a record in the reopened file")
    assert records(path)[0]["caller_uid"] == 0 and records(path)[0]["resource"] == STORAGE
    assert [r["resource"] for r in records(path + ".1")] == [VAULT]


def test_bad_audit_path_fails_start_up_with_a_clear_message(emulator, tmp_path):
    path = str(tmp_path / "no-such-dir" / "audit.log")
    agent = Agent(emulator, {"audit": {"enabled": True, "sink": "file", "path": path}}, wait_ready=False)
    assert agent.wait(timeout=30) != 0
    assert "audit.path " + path + ": cannot open" in agent.output()


def journal_available():
    return os.path.exists("/run/systemd/journal/socket") and shutil.which("journalctl") is not None and \
        subprocess.run(["journalctl", "-n", "0"], capture_output=True).returncode == 0


@pytest.mark.skipif(not journal_available(), reason="journald is not running")
def test_journal_sink_structured_fields(emulator, agent_factory):
    agent = agent_factory(emulator, {"audit": {"enabled": True, "sink": "journal"}})
    resource = f"https://mi-audit-test-{uuid.uuid4().hex}.example/"
    status, body = as_root(agent.port, resource)
    assert status == 200, body

    def entries():
        out = subprocess.run(["journalctl", "-o", "json", "--no-pager", f"MI_RESOURCE={resource}"],
                             capture_output=True, text=True)
        return [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    found = wait_for(entries, what="the journal entry")
    e = found[0]
    assert e["MESSAGE_ID"] == "601c857e51094af4b16923c03187d13f"
    assert e["MI_DECISION"] == "allow" and e["MI_CALLER_UID"] == "0" and e["MI_STATUS"] == "200"
    assert e["MI_TOKEN_FINGERPRINT"] == fingerprint(body["access_token"])
    assert body["access_token"] not in json.dumps(found)
