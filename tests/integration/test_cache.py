"""The token cache end to end (issue: single flight, refresh ahead, bounded
memory) with the emulator's token lifetime shortened and margins scaled."""

import concurrent.futures
import os
import http.client
import json
import time

import pytest

from conftest import rss_kb

ENC = "https%3A%2F%2Fmanagement.azure.com%2F"
POLL_LIFETIME = 12  # seconds: the token lifetime of the polling test
FAST_BUDGET = {"rate_per_second": 1000, "burst": 100, "max_concurrent": 4, "max_queue": 100000}


def test_200_concurrent_cold_requests_make_one_upstream_call(agent_factory, emulator):
    emulator.admin("POST", "config", {"delay_ms": 300})
    agent = agent_factory(emulator, config={"limits": {"max_pipelined": 32}})

    def one(_):
        status, _, body = agent.token("resource=" + ENC)
        return status, json.loads(body).get("access_token")

    with concurrent.futures.ThreadPoolExecutor(200) as pool:
        results = list(pool.map(one, range(200)))
    assert all(status == 200 for status, _ in results), results[:3]
    assert len({token for _, token in results}) == 1, "every caller got the same token"
    assert emulator.count() == 1, emulator.requests()


def test_10000_sequential_requests_for_a_warm_key_make_no_upstream_call(agent_factory, emulator):
    agent = agent_factory(emulator)
    assert agent.token("resource=" + ENC)[0] == 200
    before = emulator.count()
    conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=10)
    try:
        for _ in range(10000):
            conn.request("GET", "/oauth2/token?resource=" + ENC, headers={"Metadata": "true"})
            resp = conn.getresponse()
            body = resp.read()
            assert resp.status == 200, body
    finally:
        conn.close()
    assert emulator.count() == before == 1


@pytest.mark.emulator_args("--lifetime", str(POLL_LIFETIME), "--reissue-before", "8")
def test_polling_across_three_lifetimes_never_waits_on_imds(agent_factory, emulator):
    lifetime, margin = POLL_LIFETIME, 3
    # The emulator re-issues a token once less than 8 s remain; the agent refreshes
    # 5-7 s before expiry (margin 3 + refresh_ahead 2..4).
    agent = agent_factory(emulator, config={"cache": {"margin_seconds": margin, "refresh_ahead_seconds": 4,
                                                      "hard_floor_seconds": 1}})
    seen = {}
    start = time.monotonic()
    while time.monotonic() - start < 3 * lifetime + 1:
        status, _, body = agent.token("resource=" + ENC)
        assert status == 200, body
        j = json.loads(body)
        assert int(j["expires_in"]) >= margin, j["expires_in"]
        assert int(j["expires_on"]) > time.time()
        seen[j["access_token"]] = int(j["expires_on"])
        time.sleep(0.1)
    assert len(seen) >= 3, "the token was renewed across the lifetimes"
    log = emulator.requests()["log"]
    assert log[0]["status"] == 200
    # After the first request (the cold miss), every upstream call was a
    # refresh made while the cached token still had more than the margin left.
    expiries = sorted(seen.values())
    for entry in log[1:]:
        t = entry["t_ms"] / 1000.0
        # The token being served when this refresh went out (issued before it).
        current = max(e for e in expiries if e - lifetime < t - 1)
        assert current - t > margin, (entry, current)
    # About one upstream call per lifetime, not a poll-rate storm.
    assert len(log) <= 3 * 3 + 2, log
    status, _, text = agent.health("/status")
    if status == 200 and text.strip() not in ("", "{}"):
        print("status:", text[:400])


def test_5000_distinct_resources_with_a_key_cap_of_1000_stay_bounded(agent_factory, emulator):
    agent = agent_factory(emulator, config={"cache": {"max_keys": 1000}, "budget": FAST_BUDGET})
    conn = http.client.HTTPConnection("127.0.0.1", agent.port, timeout=30)
    rss = {}
    try:
        for i in range(5000):
            resource = f"https://random-{i}.example/"
            conn.request("GET", "/oauth2/token?resource=" + resource, headers={"Metadata": "true"})
            resp = conn.getresponse()
            body = json.loads(resp.read())
            assert resp.status == 200, body
            assert body["resource"] == resource
            if i + 1 in (1000, 5000):
                rss[i + 1] = rss_kb(agent.proc.pid)
    finally:
        conn.close()
    print(f"mi-agent RSS after 1,000 keys: {rss[1000]} kB; after 5,000 (cap 1,000): {rss[5000]} kB")
    if os.environ.get("MI_ASAN") != "1":  # ASan quarantines freed memory: RSS says nothing there
        assert rss[5000] - rss[1000] < 16 * 1024, rss
    assert agent.alive()
    # The oldest keys were evicted: asking again goes upstream; the newest are hits.
    before = emulator.count()
    assert agent.token("resource=https://random-4999.example/")[0] == 200
    assert emulator.count() == before
    assert agent.token("resource=https://random-0.example/")[0] == 200
    assert emulator.count() == before + 1
