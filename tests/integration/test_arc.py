"""Azure Arc-enabled servers as the upstream (issue #14 point 5): mi-agent with
imds.kind "arc" against the emulator's Arc mode (--arc-token-dir), which answers
each token request without the right secret with a 401 challenge naming a fresh
.key file, and can be told to name hostile ones."""

import json
import os
import re

import pytest

from conftest import ARM, UA_CLIENT_ID, UA_RES_ID, Emulator, wait_for

ENC = "https%3A%2F%2Fmanagement.azure.com%2F"
VAULT = "https%3A%2F%2Fvault.azure.net"


@pytest.fixture
def arc(tmp_path):
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    e = Emulator("--arc-token-dir", str(tokens), log_path=str(tmp_path / "emulator.log"))
    e.tokens = tokens
    yield e
    e.stop()


def arc_agent(agent_factory, arc):
    # The default retry policy: a refused challenge is not retried, so callers hear at once.
    return agent_factory(arc, {"imds": {"kind": "arc", "arc_token_dir": str(arc.tokens)},
                               "log": {"level": "debug"}})


def secrets_handed_out(arc):
    """Every secret the emulator wrote (the files still there, and those used up are gone)."""
    found = []
    for root in (arc.tokens, arc.tokens.parent):
        for name in os.listdir(root):
            path = root / name
            if name.endswith((".key", ".txt")) and path.is_file() and not path.is_symlink():
                found.append(path.read_text()[:32])
    return found


def test_system_assigned_and_user_assigned_through_the_challenge(agent_factory, arc):
    agent = arc_agent(agent_factory, arc)
    code, _, body = agent.token(f"resource={ENC}")
    assert code == 200, body
    assert json.loads(body)["resource"] == ARM
    log = arc.requests()["log"]
    assert [e["status"] for e in log] == [401, 200]
    assert log[0]["fault"] == "arc_challenge"
    # Served from the cache afterwards: the challenge is per fetch, not per caller.
    assert agent.token(f"resource={ENC}")[0] == 200
    assert arc.count() == 2

    code, _, body = agent.token(f"resource={ENC}&client_id={UA_CLIENT_ID}")
    assert code == 200, body
    assert json.loads(body)["client_id"] == UA_CLIENT_ID
    code, _, body = agent.token(f"resource={VAULT}&mi_res_id={UA_RES_ID}")
    assert code == 200, body
    log = arc.requests()["log"]
    assert [e["status"] for e in log] == [401, 200, 401, 200, 401, 200]
    assert log[3]["selector"].lower() == f"client_id={UA_CLIENT_ID}".lower()
    # mi_res_id goes to Arc as msi_res_id.
    assert log[5]["selector"].lower() == f"msi_res_id={UA_RES_ID}".lower()

    # A used secret's file is removed by the emulator; none was reused (each fetch read a fresh one).
    assert os.listdir(arc.tokens) == []


@pytest.mark.parametrize("realm,check", [
    ("outside", "outside the tokens directory"),
    ("not_key", "does not name a .key file"),
    ("too_big", "larger than 4096 bytes"),
    ("symlink", "symbolic link"),
    ("dotdot", ". or .. component"),
])
def test_hostile_realm_is_refused_with_500_and_nothing_cached(agent_factory, arc, realm, check):
    agent = arc_agent(agent_factory, arc)
    arc.admin("POST", "config", {"arc_realm": realm})
    code, _, body = agent.token(f"resource={ENC}")
    assert code == 500, body
    answer = json.loads(body)
    assert answer["error"] == "unknown"
    assert answer["error_description"] == "IMDS could not provide a token: arc_challenge_refused"
    assert "access_token" not in body
    # One request: the agent never answered the hostile challenge.
    assert [e["status"] for e in arc.requests()["log"]] == [401]
    wait_for(lambda: check in agent.output(), what="the refusal logged")
    assert "arc: token request refused" in agent.output()
    # /status says which check refused it (the description), for `mi-agent status`.
    status = json.loads(agent.health("/status")[2])
    described = status["identities"][0]["resources"][0]["last_error"]["description"]
    assert described.startswith("Arc challenge: ") and check in described, described

    # Nothing was cached: with a proper challenge the next caller gets a fresh fetch.
    arc.admin("POST", "config", {"arc_realm": "normal"})
    code, _, body = agent.token(f"resource={ENC}")
    assert code == 200, body
    assert arc.count() == 3
    for secret in secrets_handed_out(arc):
        assert secret not in agent.output()


def test_secret_is_never_logged_even_at_debug(agent_factory, arc):
    agent = arc_agent(agent_factory, arc)
    for resource in (ENC, VAULT, "https%3A%2F%2Fstorage.azure.com%2F"):
        code, _, body = agent.token(f"resource={resource}")
        assert code == 200, body
    # A wrong-realm challenge leaves its file (and secret) behind: it is not logged either.
    arc.admin("POST", "config", {"arc_realm": "not_key"})
    assert agent.token("resource=https%3A%2F%2Fgraph.microsoft.com%2F")[0] == 500
    left = secrets_handed_out(arc)
    assert left, "the refused challenge's file is still there"
    out = agent.output()
    assert "answering the challenge" in out, "debug logging is on"
    for secret in left:
        assert secret not in out
    # The used secrets' files are gone: no secret-shaped run (32 hex digits) and no header in the log.
    assert not re.search(r"\b[0-9a-f]{32}\b", out), out
    assert "Authorization" not in out and "Basic " not in out


def test_imds_kind_does_not_answer_challenges(agent_factory, arc):
    agent = agent_factory(arc, {"retry": {"max_attempts": 1}})
    code, _, body = agent.token(f"resource={ENC}")
    assert code != 200, body
    assert arc.count() == 1
