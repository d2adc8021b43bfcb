"""Logs (SPEC §6, §8): one line per event, never a token, whatever happens; JSON
lines parse one by one; journal priorities under systemd; IMDS failures and
identity state changes are logged once per change, not once per retry."""

import json
import re
import time

import pytest

from conftest import ARM, UA_CLIENT_ID, request, wait_for

ENC = "https%3A%2F%2Fmanagement.azure.com%2F"
UNKNOWN_CLIENT = "99999999-8888-4777-8666-555555555555"
# Put into an IMDS error body: must not reach the log either.
SENTINEL = "eyJ0eXAiSENTINELsecretTOKENvalue0123456789abcdefghijklmnop"

FAST = {
    "retry": {"delta_seconds": 0.05, "max_delay_seconds": 0.5, "max_attempts": 3},
    "budget": {"rate_per_second": 100, "burst": 20, "max_concurrent": 3},
    "cache": {"negative_ttl_seconds": 0},
    "prefetch": [{"resource": ARM}, {"resource": ARM, "client_id": UA_CLIENT_ID}],
}


def scenario(agent, emulator):
    """Traffic and faults that give the agent every reason to log."""
    assert agent.token("resource=" + ENC)[0] == 200
    assert agent.token(f"resource={ENC}&client_id={UA_CLIENT_ID}")[0] == 200
    assert agent.token(f"api-version=2018-02-01&resource={ENC}", path="/metadata/identity/oauth2/token")[0] == 200
    body = f"resource={ENC}&object_id="
    assert request(agent.port, "POST", "/oauth2/token", {"Metadata": "true",
                   "Content-Type": "application/x-www-form-urlencoded"}, body)[0] == 200
    # Each fault on a fresh key so the request reaches IMDS.
    faults = [
        {"malformed": True},
        {"missing_expires_on": True},
        {"oversized_bytes": 200000},
        {"status": 500, "body": {"error": "internal_error", "access_token": SENTINEL}},
        {"status": 503, "body": "access_token=" + SENTINEL},
    ]
    for i, step in enumerate(faults):
        emulator.faults([dict(step, count=1)])
        code, _, _ = agent.token(f"resource=https%3A%2F%2Fr{i}.example.com")
        assert code in (200, 500), code
    emulator.faults([])
    # IMDS says no for an identity the VM does not have.
    code, _, body = agent.token(f"resource={ENC}&client_id={UNKNOWN_CLIENT}")
    assert code == 400, body
    # A bad request or two.
    assert request(agent.port, "GET", "/oauth2/token?resource=" + ENC)[0] == 400
    assert request(agent.port, "GET", "/oauth2/token?resource=" + ENC + "&client_id=x&object_id=y",
                   {"Metadata": "true"})[0] == 400
    # The health side.
    for path in ("/status", "/metrics", "/healthz"):
        assert agent.health(path)[0] == 200


def windows(text, width=24):
    return {text[i:i + width] for i in range(max(0, len(text) - width + 1))}


def assert_no_tokens(log, emulator):
    tokens = emulator.admin("GET", "tokens")["tokens"]
    assert len(tokens) >= 5
    assert SENTINEL not in log and SENTINEL[:24] not in log
    seen = windows(log)
    for token in tokens:
        assert token not in log
        # Any 24-character piece of a token's payload or signature (the header is a
        # constant, not a secret) would be a leak.
        for part in token.split(".")[1:]:
            for i in range(0, max(1, len(part) - 24), 8):
                assert part[i:i + 24] not in seen, f"a piece of a token is in the log: {part[i:i + 24]}"


def run(agent_factory, emulator, *args, env=None):
    agent = agent_factory(emulator, config=FAST, extra_args=("--log-level", "debug", *args), env=env)
    scenario(agent, emulator)
    code = agent.stop()
    assert code == 0, agent.output()
    return agent.output()


def test_text_log_has_no_token(agent_factory, emulator):
    log = run(agent_factory, emulator)
    lines = log.splitlines()
    assert len(lines) > 10
    line_re = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z (debug|info|warning|error)\s+\S")
    for line in lines:
        assert line_re.match(line), line
    assert any("ready" in line for line in lines)
    assert any("stopped" in line for line in lines)
    assert_no_tokens(log, emulator)


def test_json_log_parses_line_by_line_and_has_no_token(agent_factory, emulator):
    log = run(agent_factory, emulator, "--log-format", "json")
    lines = log.splitlines()
    assert len(lines) > 10
    levels = set()
    for line in lines:
        entry = json.loads(line)  # every line is one JSON object
        assert set(entry) == {"time", "level", "msg"}, entry
        assert re.match(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$", entry["time"])
        assert entry["level"] in ("debug", "info", "warning", "error")
        assert entry["msg"] and "\n" not in entry["msg"]
        levels.add(entry["level"])
    assert {"info", "warning"} <= levels
    assert_no_tokens(log, emulator)


def test_journal_format_under_systemd(agent_factory, emulator):
    # --log-format auto picks journal priorities when stderr is the journal.
    log = run(agent_factory, emulator, "--log-format", "auto", env={"JOURNAL_STREAM": "8:123456"})
    lines = log.splitlines()
    assert lines and all(re.match(r"^<[0-7]>\S", line) for line in lines), lines[:5]
    assert any(line.startswith("<6>") for line in lines)  # info
    assert any(line.startswith("<4>") for line in lines)  # warning
    assert_no_tokens(log, emulator)


@pytest.mark.emulator_args("--lifetime", "30", "--reissue-before", "30")
def test_failures_are_logged_once_per_state_change(agent_factory, emulator):
    config = {"cache": {"margin_seconds": 26, "refresh_ahead_seconds": 1, "hard_floor_seconds": 1},
              "retry": {"delta_seconds": 0.05, "max_delay_seconds": 0.3},
              "prefetch": [{"resource": ARM}]}
    agent = agent_factory(emulator, config=config)
    emulator.faults(mode={"kind": "fail_all", "status": 503})
    # Sustained failure: many upstream attempts ...
    wait_for(lambda: emulator.requests()["count"] >= 10, timeout=20, what="retries")
    assert json.loads(agent.health("/status")[2])["identities"][0]["resources"][0]["state"] == "degraded"
    emulator.faults()

    def recovered():
        doc = json.loads(agent.health("/status")[2])
        return doc["identities"][0]["resources"][0]["state"] == "ok" and doc["upstream"]["state"] == "ok"

    wait_for(recovered, timeout=15, what="recovery")
    time.sleep(0.2)
    assert agent.stop() == 0
    lines = agent.output().splitlines()
    # ... one line when IMDS starts failing, one when it is back.
    failed = [l for l in lines if "IMDS request failed" in l]
    assert len(failed) == 1, failed
    assert "warning" in failed[0] and "503" in failed[0]
    back = [l for l in lines if "IMDS answering again" in l]
    assert len(back) == 1, lines
    # The identity: one line into degraded, one back to ok.
    changes = [l for l in lines if "identity default resource" in l and "->" in l and " debug " not in l]
    assert any("-> degraded" in l and "503" in l for l in changes), changes
    assert any("degraded -> ok" in l for l in changes), changes
    assert len(changes) == 2, changes


def test_imds_values_cannot_forge_a_log_line(agent_factory, emulator):
    """An IMDS "error" with a line break is one escaped line, in text and JSON logs."""
    for fmt in ("text", "json"):
        agent = agent_factory(emulator, config=FAST, extra_args=("--log-format", fmt))
        emulator.faults([
            {"count": 3, "match": {"resource": "https://forged1.example.com"},
             "status": 500, "body": {"error": "boom\nforged line 5xx"}},
            {"count": 1, "match": {"resource": "https://forged2.example.com"},
             "status": 400, "body": {"error": "no\nforged line 4xx", "error_description": "d"}},
        ])
        assert agent.token("resource=https%3A%2F%2Fforged1.example.com")[0] == 500
        code, _, body = agent.token("resource=https%3A%2F%2Fforged2.example.com")
        assert code == 400, body
        # A JSON error object from IMDS is passed through unchanged.
        assert json.loads(body) == {"error": "no\nforged line 4xx", "error_description": "d"}
        emulator.faults([])
        assert agent.stop() == 0
        lines = agent.output().splitlines()
        if fmt == "json":
            lines = [json.loads(line)["msg"] for line in lines]  # one object per line
        else:
            line_re = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z (debug|info|warning|error)\s+\S")
            assert all(line_re.match(line) for line in lines), lines
        assert not any(line.startswith("forged line") for line in lines), lines
        # The failure is logged once, on one line, with the break escaped ...
        failed = [line for line in lines if "IMDS request failed" in line]
        assert len(failed) == 1, lines
        assert "boom\\nforged line 5xx" in failed[0], failed
        # ... and so is every other line that mentions an IMDS error.
        forged = [line for line in lines if "forged line" in line]
        assert forged and all("\\nforged line" in line for line in forged), forged


def test_non_json_imds_rejection_is_wrapped_as_a_json_error(agent_factory, emulator):
    agent = agent_factory(emulator, config=FAST)
    emulator.faults([{"status": 403, "body": "<html>\r\nForbidden\x01</html>"}])
    code, headers, body = agent.token("resource=https%3A%2F%2Fhtml.example.com")
    assert code == 403, body
    assert headers.get("content-type", "").startswith("application/json"), headers
    assert json.loads(body) == {"error": "imds_error",
                                "error_description": "IMDS answered 403: <html>\\r\\nForbidden\\x01</html>"}
