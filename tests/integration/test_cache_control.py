"""The cache-control parameters (issue #14, point 1) end to end against the
emulator: claims in the key and forwarded, token_sha256_to_refresh dropping the
token it names (one upstream call for many callers), xms_cc and unknown
parameters never forwarded."""

import concurrent.futures
import hashlib
import json
import urllib.parse

ENC = "https%3A%2F%2Fmanagement.azure.com%2F"
CLAIMS = '{"access_token":{"xms_az_nwperimid":{"essential":true,"values":["p1"]}}}'


def token_of(reply):
    status, _, body = reply
    assert status == 200, body
    return json.loads(body)["access_token"]


def test_claims_are_forwarded_and_keyed_apart(agent_factory, emulator):
    agent = agent_factory(emulator)
    plain = token_of(agent.token("resource=" + ENC))
    with_claims = token_of(agent.token("resource=" + ENC + "&claims=" + urllib.parse.quote(CLAIMS, safe="")))
    assert with_claims != plain, "a token for claims is another token"
    log = emulator.requests()["log"]
    assert len(log) == 2, log
    assert "claims" not in log[0]
    assert log[1]["claims"] == CLAIMS
    # Both cached under their own keys: no further upstream call.
    assert token_of(agent.token("resource=" + ENC)) == plain
    assert token_of(agent.token("resource=" + ENC + "&claims=" + urllib.parse.quote(CLAIMS, safe=""))) == with_claims
    assert emulator.count() == 2


def test_claims_imds_refuses_are_passed_through(agent_factory, emulator):
    agent = agent_factory(emulator)
    status, _, body = agent.token("resource=" + ENC + "&claims=" + urllib.parse.quote('{"access_token":{"x":{}}}'))
    assert status == 400, body
    assert json.loads(body)["error"] == "invalid_request"
    status, _, body = agent.token("resource=" + ENC + "&claims=" + "x" * 2049)
    assert status == 400 and "claims is too long" in body, body
    assert emulator.count() == 1, "the too long claims never went upstream"


def test_stale_hash_refetches_once_for_many_callers(agent_factory, emulator):
    emulator.admin("POST", "config", {"delay_ms": 300})
    agent = agent_factory(emulator, config={"limits": {"max_pipelined": 32}})
    stale = token_of(agent.token("resource=" + ENC))
    # The emulator would hand back the same token (it caches): make it mint anew.
    emulator.admin("POST", "reset", {"tokens": True})
    digest = hashlib.sha256(stale.encode()).hexdigest().upper()

    def one(_):
        return token_of(agent.token("resource=" + ENC + "&token_sha256_to_refresh=" + digest))

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        fresh = set(pool.map(one, range(20)))
    assert len(fresh) == 1 and stale not in fresh, fresh
    assert emulator.count() == 1, emulator.requests()
    # A hash that names no cached token (the one held is newer): served from the cache.
    assert token_of(agent.token("resource=" + ENC + "&token_sha256_to_refresh=" + digest)) in fresh
    assert emulator.count() == 1
    assert "other_params" not in emulator.requests()["log"][0], "token_sha256_to_refresh is never forwarded"


def test_xms_cc_and_unknown_parameters_are_not_forwarded(agent_factory, emulator):
    agent = agent_factory(emulator)
    a = token_of(agent.token("resource=" + ENC + "&xms_cc=cp1&foo=bar"))
    assert token_of(agent.token("resource=" + ENC)) == a, "xms_cc is not part of the key"
    log = emulator.requests()["log"]
    assert len(log) == 1 and "other_params" not in log[0], log


def test_client_request_id_goes_upstream_with_the_fetch_it_started(agent_factory, emulator):
    from conftest import request
    agent = agent_factory(emulator)
    path = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=" + ENC
    status, _, body = request(agent.port, "GET", path, {"Metadata": "true", "x-ms-client-request-id": "corr-1"})
    assert status == 200, body
    # A hit starts no fetch; a bad id (a space) is ignored, not an error.
    status, _, body = request(agent.port, "GET", path, {"Metadata": "true", "x-ms-client-request-id": "corr-2"})
    assert status == 200, body
    status, _, body = request(agent.port, "GET", path.replace("management", "vault"),
                              {"Metadata": "true", "x-ms-client-request-id": "bad id"})
    assert status == 200, body
    log = emulator.requests()["log"]
    assert len(log) == 2, log
    assert log[0]["client_request_id"] == "corr-1"
    assert "client_request_id" not in log[1]


def test_bypass_cache_is_forwarded_once_per_window(agent_factory, emulator):
    from conftest import request
    agent = agent_factory(emulator, config={"cache": {"bypass_min_interval_seconds": 3600}})
    cached = token_of(agent.token("resource=" + ENC))
    emulator.admin("POST", "reset", {"tokens": True})  # so the bypass gets a new token
    bypassed = token_of(agent.token("resource=" + ENC + "&bypass_cache=true"))
    assert bypassed != cached
    # Inside the window: the token the last bypass fetched, no upstream call.
    assert token_of(agent.token("resource=" + ENC + "&bypass_cache=true")) == bypassed
    assert token_of(agent.token("resource=" + ENC)) == bypassed
    reqs = emulator.requests()
    assert reqs["count"] == 1 and reqs["bypass_cache"] == 1, reqs
    assert reqs["log"][0]["other_params"] == "bypass_cache"
    status, _, metrics = request(agent.health_port, "GET", "/metrics")
    assert status == 200
    assert 'mi_agent_cache_bypass_total{outcome="fetched"} 1' in metrics, metrics
    assert 'mi_agent_cache_bypass_total{outcome="recent"} 1' in metrics
