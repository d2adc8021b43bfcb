"""Resilience against emulator fault scripts (SPEC §7): one test per IMDS
failure mode, each asserting what the caller got and how many upstream requests
were made when. Backoff is scaled down by configuration; the unit tests prove
the real schedule."""

import concurrent.futures
import json
import resource
import socket
import time

import pytest

from conftest import Emulator, free_port, rss_kb

ENC = "https%3A%2F%2Fmanagement.azure.com%2F"
# Scaled schedule: attempts at about 0, 0.1, 0.3, 0.7, 1.5 s.
FAST_RETRY = {"delta_seconds": 0.1, "max_delay_seconds": 1, "gone_window_seconds": 3, "retry_after_cap_seconds": 5}
FAST_BUDGET = {"rate_per_second": 100, "burst": 20, "max_concurrent": 3}


def fast_agent(agent_factory, emulator, **extra):
    config = {"retry": dict(FAST_RETRY), "budget": dict(FAST_BUDGET), "cache": {"negative_ttl_seconds": 0},
              "imds": {"timeout_seconds": 1}}
    for key, value in extra.items():
        config.setdefault(key, {}).update(value)
    return agent_factory(emulator, config=config)


def times(emulator):
    return [e["t_ms"] / 1000.0 for e in emulator.requests()["log"]]


def gaps(ts):
    return [b - a for a, b in zip(ts, ts[1:])]


def token_ok(result):
    status, headers, body = result
    assert status == 200, body
    return json.loads(body)


def test_404_three_times_then_200(agent_factory, emulator):
    agent = fast_agent(agent_factory, emulator)
    emulator.faults([{"status": 404, "count": 3}])
    token_ok(agent.token("resource=" + ENC))
    ts = times(emulator)
    assert len(ts) == 4
    g = gaps(ts)
    assert g[0] >= 0.07 and g[1] >= 0.15 and g[2] >= 0.3, g  # backoff grows (lower bounds only)


def test_410_window_is_retried_past_max_attempts(agent_factory, emulator):
    agent = fast_agent(agent_factory, emulator, limits={"caller_deadline_seconds": 20})
    emulator.faults(mode={"mode": "gone", "duration_ms": 2500})
    token_ok(agent.token("resource=" + ENC))
    log = emulator.requests()["log"]
    assert log[-1]["status"] == 200
    assert sum(1 for e in log if e["status"] == 410) >= 5, "410 keeps being retried beyond max_attempts"
    assert log[-1]["t_ms"] - log[0]["t_ms"] >= 2400


def test_429_with_retry_after_is_honoured(agent_factory, emulator):
    agent = fast_agent(agent_factory, emulator)
    emulator.faults([{"status": 429, "retry_after": "2"}])
    token_ok(agent.token("resource=" + ENC))
    ts = times(emulator)
    assert len(ts) == 2
    assert gaps(ts)[0] >= 1.9, "waited at least Retry-After"


def test_500_twice_then_200(agent_factory, emulator):
    agent = fast_agent(agent_factory, emulator)
    emulator.faults([{"status": 500, "count": 2}])
    token_ok(agent.token("resource=" + ENC))
    assert emulator.count() == 3


def test_400_identity_not_found_is_not_retried(agent_factory, emulator):
    agent = fast_agent(agent_factory, emulator)
    status, _, body = agent.token("resource=" + ENC + "&client_id=11111111-2222-4333-8444-555555555555")
    assert status == 400
    assert json.loads(body)["error_description"] == "Identity not found"
    time.sleep(0.5)
    assert emulator.count() == 1


def test_hang_longer_than_the_timeout_then_200(agent_factory, emulator):
    agent = fast_agent(agent_factory, emulator, imds={"timeout_seconds": 0.5})
    emulator.faults([{"hang": True}])
    token_ok(agent.token("resource=" + ENC))
    assert emulator.count() == 2


def test_connection_reset_then_200(agent_factory, emulator):
    agent = fast_agent(agent_factory, emulator)
    emulator.faults([{"reset": True}])
    token_ok(agent.token("resource=" + ENC))
    assert emulator.count() == 2


def test_malformed_json_then_200(agent_factory, emulator):
    agent = fast_agent(agent_factory, emulator)
    emulator.faults([{"malformed": True}])
    token_ok(agent.token("resource=" + ENC))
    assert emulator.count() == 2


def test_oversized_body_is_refused_and_retried(agent_factory, emulator):
    agent = fast_agent(agent_factory, emulator, imds={"max_response_bytes": 65536})
    emulator.faults([{"oversized_bytes": 200000}])
    token_ok(agent.token("resource=" + ENC))
    assert emulator.count() == 2
    emulator.reset()
    emulator.faults([{"oversized_bytes": 200000, "count": 10}])
    status, _, body = agent.token("resource=https%3A%2F%2Fbig%2F")
    assert status == 500 and json.loads(body)["error"] == "unknown"
    assert emulator.count() == 5, "max_attempts, then the caller gets the error"
    assert agent.alive()


def test_emulator_down_at_start_then_up(agent_factory):
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}/metadata/identity/oauth2/token"
    agent = agent_factory(config={"imds": {"endpoint": endpoint}, "retry": dict(FAST_RETRY)})
    status, _, body = agent.token("resource=" + ENC)
    assert status == 500 and json.loads(body)["error"] == "unknown"
    assert "connect" in agent.output().lower(), "the failure is reported in the log"
    emulator = Emulator(port=port)
    try:
        token_ok(agent.token("resource=" + ENC))
    finally:
        emulator.stop()


@pytest.mark.emulator_args("--lifetime", "30", "--reissue-before", "20")
def test_outage_with_a_warm_cache_serves_every_caller_and_backs_off(agent_factory, emulator):
    # Tokens live 30 s; the agent refreshes 10-15 s before expiry. The outage
    # starts 2 s before that window opens and lasts 8 s, so every refresh attempt
    # of the first round (and the retries after it) meets a failing IMDS, while
    # the cached token is still far above the hard floor.
    agent = agent_factory(emulator, config={
        "cache": {"margin_seconds": 5, "refresh_ahead_seconds": 10, "hard_floor_seconds": 1},
        "retry": {"delta_seconds": 0.2, "max_delay_seconds": 1, "max_attempts": 3}})
    first = token_ok(agent.token("resource=" + ENC))
    window_opens = int(first["expires_on"]) - 15
    while time.time() < window_opens - 2:
        token_ok(agent.token("resource=" + ENC))
        time.sleep(0.1)
    emulator.reset()
    emulator.faults(mode={"mode": "fail_all", "status": 500})
    outage_end = time.time() + 8
    served = 0
    while time.time() < outage_end:
        j = token_ok(agent.token("resource=" + ENC))
        assert j["access_token"] == first["access_token"]
        assert int(j["expires_on"]) > time.time() + 1
        served += 1
        time.sleep(0.1)
    during = emulator.requests()["log"]
    emulator.faults(mode=None)
    # Recovery without a restart: a fresh token arrives before the old one expires.
    deadline = time.time() + 15
    while time.time() < deadline:
        j = token_ok(agent.token("resource=" + ENC))
        if j["access_token"] != first["access_token"]:
            break
        time.sleep(0.2)
    assert j["access_token"] != first["access_token"], "recovered with a new token"
    assert served >= 20
    failed = [e for e in during if e["status"] == 500]
    assert len(failed) >= 3, "the refresher kept trying during the outage"
    assert len(failed) <= 20, f"backoff, not a storm: {len(failed)} upstream requests in 8 s"


@pytest.mark.emulator_args("--throttle-rps", "20")
def test_throttled_imds_never_sees_more_than_the_budget(agent_factory, emulator):
    agent = agent_factory(emulator, config={
        "budget": {"rate_per_second": 10, "burst": 5, "max_concurrent": 2, "max_queue": 1000},
        "limits": {"caller_deadline_seconds": 10}, "retry": dict(FAST_RETRY)})
    emulator.admin("POST", "config", {"delay_ms": 20})

    def one(i):
        return agent.token(f"resource=https%3A%2F%2Fkey-{i}.example%2F")

    with concurrent.futures.ThreadPoolExecutor(250) as pool:
        results = list(pool.map(one, range(500)))
    served = sum(1 for s, _, _ in results if s == 200)
    shed = [(s, h) for s, h, _ in results if s == 429]
    assert served + len(shed) == 500, [r for r in results if r[0] not in (200, 429)][:3]
    assert all("retry-after" in h for _, h in shed), "every 429 carries Retry-After"
    assert served > 0
    info = emulator.requests()
    assert info["max_concurrent"] <= 2, info["max_concurrent"]
    assert info["throttled"] == 0, "the agent kept under IMDS's limit"
    ts = sorted(e["t_ms"] for e in info["log"])
    for i, t in enumerate(ts):
        in_window = sum(1 for u in ts[i:i + 40] if u - t < 1000)
        # rate x 1 s + burst, and 2 for arrival jitter between agent and emulator
        assert in_window <= 10 + 5 + 2, f"{in_window} requests within 1 s"
    print(f"throttle: {served} served, {len(shed)} shed with 429, {len(ts)} upstream requests")


def test_load_with_slow_loris(agent_factory, emulator):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))
    agent = agent_factory(emulator, config={"limits": {"header_timeout_seconds": 2, "max_connections": 5000}})
    token_ok(agent.token("resource=" + ENC))  # warm

    # 200 slow-loris connections trickling a header byte by byte.
    loris = []
    for _ in range(200):
        s = socket.create_connection(("127.0.0.1", agent.port))
        s.setblocking(False)
        loris.append(s)
    request_bytes = b"GET /oauth2/token?resource=" + ENC.encode() + b" HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\n\r\n"
    # 2,000 well-behaved keep-alive connections.
    good = [socket.create_connection(("127.0.0.1", agent.port)) for _ in range(2000)]
    ok = 0
    errors = []
    closed_loris = set()
    stop_at = time.time() + 6
    rounds = 0
    while time.time() < stop_at and rounds < 3:
        rounds += 1
        for i, s in enumerate(loris):
            if i in closed_loris:
                continue
            try:
                s.send(b"X")
            except OSError:
                closed_loris.add(i)
        for s in good:
            s.sendall(request_bytes)
        for s in good:
            s.settimeout(10)
            data = b""
            while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            if data.startswith(b"HTTP/1.1 200"):
                ok += 1
            else:
                errors.append(data[:80])
    # Keep trickling until the header timeout has closed every slow-loris connection.
    deadline = time.time() + 10
    while len(closed_loris) < len(loris) and time.time() < deadline:
        for i, s in enumerate(loris):
            if i in closed_loris:
                continue
            try:
                s.send(b"Y")
                if s.recv(4096) == b"":
                    closed_loris.add(i)
            except BlockingIOError:
                pass
            except OSError:
                closed_loris.add(i)
        time.sleep(0.2)
    rss = rss_kb(agent.proc.pid)
    print(f"load: {ok} answers to well-behaved clients, {len(closed_loris)}/200 slow-loris closed, RSS {rss} kB")
    for s in good + loris:
        s.close()
    assert not errors, errors[:3]
    assert ok == 2000 * rounds
    assert len(closed_loris) == 200, "the header timeout closed every slow-loris connection"
    assert rss < 256 * 1024
    token_ok(agent.token("resource=" + ENC))
