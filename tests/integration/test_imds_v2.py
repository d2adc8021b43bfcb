"""The IMDS v2 paths (issue #14 point 3): /metadata/identity/getplatformmetadata
and /metadata/identity/issuecredential are passed through uncached to the
configured IMDS host (method, body, status, body and Server header kept), on
the IMDS budget; with imds.v2_passthrough false they get a fast 404. Timeouts
are failure guards only."""

import json
import os
import re
import threading

from conftest import free_port, request, wait_for

PLATFORM = "/metadata/identity/getplatformmetadata"
CREDENTIAL = "/metadata/identity/issuecredential"
META = {"Metadata": "true"}


def test_get_passes_through_status_body_and_server(agent_factory, emulator):
    agent = agent_factory(emulator)
    status, headers, body = request(agent.port, "GET", PLATFORM + "?cred-api-version=1.0", META)
    assert status == 200, body
    assert headers.get("server") == "imds-emulator-v2"
    echoed = json.loads(body)
    assert echoed == {"emulator": "imds-v2", "path": PLATFORM, "method": "GET", "query": "cred-api-version=1.0",
                      "body": ""}
    # Not cached: the next one reaches IMDS again, with IMDS's status.
    status, headers, body = request(agent.port, "GET", PLATFORM + "?cred-api-version=1.0&emulator_status=404", META)
    assert status == 404, body
    assert json.loads(body)["query"] == "cred-api-version=1.0&emulator_status=404"
    assert headers.get("server") == "imds-emulator-v2"


def test_post_passes_through_method_and_body(agent_factory, emulator):
    agent = agent_factory(emulator)
    payload = json.dumps({"cnf": {"jwk": {"kid": "k1"}}, "latch_key": False})
    status, headers, body = request(agent.port, "POST", CREDENTIAL + "?cred-api-version=0.1", dict(
        META, **{"Content-Type": "application/json"}), body=payload)
    assert status == 200, body
    echoed = json.loads(body)
    assert echoed["method"] == "POST"
    assert echoed["path"] == CREDENTIAL
    assert echoed["body"] == payload
    assert headers.get("server") == "imds-emulator-v2"
    # Token requests are not counted for the v2 paths: no token fetch happened.
    assert emulator.requests()["count"] == 0


def test_the_callers_spelling_is_forwarded(agent_factory, emulator):
    agent = agent_factory(emulator)
    status, _, body = request(agent.port, "GET", "/metadata/identity/getPlatformMetadata?cred-api-version=2.0", META)
    assert status == 200, body
    assert json.loads(body)["path"] == "/metadata/identity/getPlatformMetadata"


def test_metadata_header_and_method_checked(agent_factory, emulator):
    agent = agent_factory(emulator)
    status, _, body = request(agent.port, "GET", PLATFORM, {})
    assert status == 400 and json.loads(body)["error"] == "bad_request_102"
    status, headers, _ = request(agent.port, "PUT", PLATFORM, META, body="x")
    assert status == 405 and headers.get("allow") == "GET, POST"


def test_v2_passthrough_false_is_a_fast_404(agent_factory, emulator):
    agent = agent_factory(emulator, config={"imds": {"v2_passthrough": False}})
    for path in (PLATFORM, CREDENTIAL + "?cred-api-version=0.1"):
        status, headers, body = request(agent.port, "GET", path, META, timeout=5)
        assert status == 404, body
        assert json.loads(body)["error"] == "not_found"
        assert "server" not in headers


def test_imds_down_answers_promptly(agent_factory):
    down = f"http://127.0.0.1:{free_port()}/metadata/identity/oauth2/token"  # nothing listens
    agent = agent_factory(imds_url=down, config={"imds": {"timeout_seconds": 2, "connect_timeout_seconds": 1}})
    status, _, body = request(agent.port, "GET", PLATFORM, META, timeout=10)
    assert status == 502, body
    assert json.loads(body)["error"] == "bad_gateway"


def test_budget_applies(agent_factory, emulator):
    # One start per 100 s and one queue place: the first request takes the
    # bucket's only token, the second waits in the queue, the third is refused.
    agent = agent_factory(emulator, config={"budget": {"rate_per_second": 0.01, "burst": 1, "max_queue": 1}})
    assert request(agent.port, "GET", PLATFORM, META, timeout=10)[0] == 200

    waiting = threading.Thread(target=_ignore_timeout, args=(agent.port,), daemon=True)
    waiting.start()

    def caller_queued():
        text = agent.health("/metrics")[2]
        return re.search(r'mi_agent_upstream_queue_depth\{[^}]*"caller"[^}]*\} 1\b', text) is not None
    wait_for(caller_queued, 10, what="the second request queued")
    status, _, body = request(agent.port, "GET", PLATFORM, META, timeout=10)
    assert status == 429, body
    assert json.loads(body)["error"] == "too_many_requests"
    waiting.join(10)


def _ignore_timeout(port):
    try:
        request(port, "GET", PLATFORM, META, timeout=3)
    except OSError:
        pass


def test_enforce_needs_a_rule_for_the_default_identity_and_the_path(agent_factory, emulator):
    me = {"uids": [os.getuid()]}
    token_only = {"name": "token-only", "callers": me, "identities": "*", "resources": ["https://management.azure.com/"]}
    agent = agent_factory(emulator, {"authorization": {"mode": "enforce", "rules": [token_only]}})
    status, _, body = request(agent.port, "GET", PLATFORM, META, timeout=10)
    assert status == 401 and json.loads(body)["error"] == "unauthorized_client", body
    agent.stop()
    anything = dict(token_only, name="anything", resources="*")
    agent = agent_factory(emulator, {"authorization": {"mode": "enforce", "rules": [anything]}})
    assert request(agent.port, "GET", PLATFORM, META, timeout=10)[0] == 200
    paths = dict(token_only, name="v2", resources=[CREDENTIAL])
    agent.stop()
    agent = agent_factory(emulator, {"authorization": {"mode": "enforce", "rules": [paths]}})
    assert request(agent.port, "GET", CREDENTIAL + "?cred-api-version=0.1", META, timeout=10)[0] == 200
    assert request(agent.port, "GET", PLATFORM, META, timeout=10)[0] == 401
