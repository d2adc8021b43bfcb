"""The identity echo check (issue #14, point 2): an IMDS 200 answer for another
identity than the caller named is served to nobody and cached for nobody."""

import json

from conftest import UA_CLIENT_ID, UA_OBJECT_ID, wait_for

ENC = "https%3A%2F%2Fmanagement.azure.com%2F"
WRONG_CLIENT_ID = "0bad1d00-0000-4000-8000-00000000e0e0"
METRIC = "mi_agent_upstream_wrong_identity_total"


def metric(agent):
    code, _, body = agent.health("/metrics")
    assert code == 200
    for line in body.splitlines():
        if line.startswith(METRIC + " "):
            return float(line.split(" ")[1])
    return None


def test_answer_for_another_identity_is_refused_counted_and_not_cached(agent_factory, emulator):
    agent = agent_factory(emulator)
    assert metric(agent) is None, "absent until the first"
    emulator.admin("POST", "config", {"wrong_identity": True})

    code, _, body = agent.token(f"resource={ENC}&client_id={UA_CLIENT_ID}")
    assert code == 500, body
    answer = json.loads(body)
    assert answer["error"] == "unknown"
    assert answer["error_description"] == "IMDS answered for another identity"
    assert "access_token" not in body
    assert metric(agent) == 1
    code, _, body = agent.token(f"resource={ENC}&object_id={UA_OBJECT_ID}")
    assert code == 500 and "another identity" in body, body
    assert metric(agent) == 2
    # The default identity has nothing to compare: served as IMDS answered.
    code, _, body = agent.token(f"resource={ENC}")
    assert code == 200, body
    assert json.loads(body)["client_id"] == WRONG_CLIENT_ID

    # Logged as a state change, never with the token.
    issued = emulator.admin("GET", "tokens")["tokens"]
    wait_for(lambda: "wrong_identity" in agent.output(), what="the failure logged")
    log = agent.output()
    assert f"client_id={UA_CLIENT_ID}" in log
    assert not any(t in log or t.split(".")[1] in log for t in issued)

    # A later correct answer is served (nothing wrong was cached), then from the cache.
    emulator.admin("POST", "config", {"wrong_identity": False})
    before = emulator.count()
    code, _, body = agent.token(f"resource={ENC}&client_id={UA_CLIENT_ID}")
    assert code == 200, body
    assert json.loads(body)["client_id"] == UA_CLIENT_ID
    assert emulator.count() == before + 1
    assert agent.token(f"resource={ENC}&client_id={UA_CLIENT_ID}")[0] == 200
    assert emulator.count() == before + 1
    assert metric(agent) == 2
