"""The health listener (SPEC §8) against the real emulator: /status reflects what
IMDS does to each identity, /readyz stays up while cached tokens carry the VM
through an IMDS outage, and nothing there ever shows a token.

Time is scaled: tokens live 30 s and are reissued on every request; the agent
refreshes 4-5 s after a token arrives (margin 24 s, refresh ahead 2 s), so a
refresh attempt comes within seconds and a token outlives an outage by ~25 s."""

import json
import re
import select
import socket
import time
import urllib.parse

import pytest

from conftest import ARM, UA_CLIENT_ID, request, wait_for

VAULT = "https://vault.azure.net"
UA2 = "22222222-3333-4444-8555-666666666666"
ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")

CONFIG = {
    "cache": {"margin_seconds": 24, "refresh_ahead_seconds": 2, "hard_floor_seconds": 1},
    "retry": {"delta_seconds": 0.1, "max_delay_seconds": 1},
    "prefetch": [{"resource": ARM}, {"resource": ARM, "client_id": UA_CLIENT_ID},
                 {"resource": ARM, "client_id": UA2}, {"resource": VAULT, "client_id": UA2}],
}
KEYS = [("default", ARM), (f"client_id={UA_CLIENT_ID}", ARM), (f"client_id={UA2}", ARM),
        (f"client_id={UA2}", VAULT)]


pytestmark = pytest.mark.emulator_args("--user-assigned", UA2, "--lifetime", "30", "--reissue-before", "30")


def status(agent):
    code, headers, body = agent.health("/status")
    assert code == 200, body
    assert headers["content-type"].startswith("application/json")
    return json.loads(body)


def entries(doc):
    """{(identity, resource): entry}"""
    return {(i["identity"], r["resource"]): r for i in doc["identities"] for r in i["resources"]}


def metrics(agent):
    code, _, body = agent.health("/metrics")
    assert code == 200
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def assert_no_tokens(emulator, *texts):
    tokens = emulator.admin("GET", "tokens")["tokens"]
    assert tokens, "the emulator issued tokens"
    for text in texts:
        for token in tokens:
            # The payload and signature segments are the secret parts of a JWT.
            for part in token.split(".")[1:]:
                assert part[:40] not in text, "a token fragment is exposed"


def test_status_document_when_all_is_well(agent_factory, emulator):
    agent = agent_factory(emulator, config=CONFIG)
    doc = status(agent)
    assert re.match(r"^\d+\.\d+\.\d+", doc["version"])
    assert ISO.match(doc["start_time"]) and ISO.match(doc["now"])
    assert abs(doc["start_time_epoch"] - time.time()) < 60
    assert 0 <= doc["uptime_seconds"] < 60
    assert re.match(r"^[0-9a-f]{16}$", doc["config_digest"])
    assert f"127.0.0.1:{agent.port}" in doc["listeners"] and f"[::1]:{agent.port}" in doc["listeners"]
    assert doc["ready"] is True

    up = doc["upstream"]
    assert up["endpoint"] == emulator.endpoint
    assert up["state"] == "ok"
    assert ISO.match(up["last_success"])
    assert up["last_error"] is None
    assert up["throttled_until"] is None
    assert up["latency_ms"]["samples"] >= 4 and up["latency_ms"]["p99"] >= up["latency_ms"]["p50"] >= 0
    assert up["max_concurrent"] == 2 and 0 <= up["budget_in_use"] <= 1
    assert up["queue_depth"] == 0

    e = entries(doc)
    assert set(e) == set(KEYS)
    for key, entry in e.items():
        assert entry["state"] == "ok", (key, entry)
        assert entry["prefetch"] is True
        assert 20 <= entry["expires_in_seconds"] <= 30
        assert abs(entry["expires_on"] - time.time() - entry["expires_in_seconds"]) <= 2
        assert ISO.match(entry["expires_at"]) and ISO.match(entry["last_refresh"]) and ISO.match(entry["next_refresh"])
        assert entry["next_refresh_epoch"] > entry["last_refresh_epoch"]
        assert entry["last_error"] is None and entry["consecutive_failures"] == 0
    assert doc["summary"] == {"ok": 4, "refreshing": 0, "degraded": 0, "failing": 0}

    # Hits and misses per key.
    for _ in range(3):
        assert agent.token("resource=https%3A%2F%2Fmanagement.azure.com%2F")[0] == 200
    assert entries(status(agent))[("default", ARM)]["hits"] == 3
    assert_no_tokens(emulator, agent.health("/status")[2], agent.health("/metrics")[2])


def test_rejected_identity_turns_failing_others_stay_ok(agent_factory, emulator):
    agent = agent_factory(emulator, config=CONFIG)
    before = entries(status(agent))
    due = max(before[k]["next_refresh_epoch"] for k in KEYS if UA2 in k[0])

    # The VM loses the second user-assigned identity.
    emulator.admin("POST", "identities", {"system_assigned": True, "user_assigned": [{"client_id": UA_CLIENT_ID}]})

    def ua2_failing():
        e = entries(status(agent))
        return e if all(e[k]["state"] == "failing" for k in KEYS if UA2 in k[0]) else None

    e = wait_for(ua2_failing, timeout=15, interval=0.2, what="the removed identity's entries to fail")
    # Within one refresh attempt: no later than its scheduled refresh (plus slack).
    assert time.time() <= due + 3, "failing was reported only after several refreshes"
    for key in KEYS:
        entry = e[key]
        if UA2 in key[0]:
            assert entry["last_error"] == {"status": 400, "error": "invalid_request", "description": "Identity not found"}, entry
            assert entry["consecutive_failures"] >= 1
            assert entry["expires_on"] is None  # IMDS said no: the old token is not served
        else:
            assert entry["state"] in ("ok", "refreshing"), (key, entry)
            assert entry["consecutive_failures"] == 0 and entry["expires_in_seconds"] > 0

    # The others keep refreshing fine through a full refresh cycle.
    time.sleep(6)
    doc = status(agent)
    e = entries(doc)
    for key in KEYS:
        if UA2 not in key[0]:
            assert e[key]["state"] in ("ok", "refreshing") and e[key]["consecutive_failures"] == 0, e[key]
            assert e[key]["last_refresh_epoch"] > before[key]["last_refresh_epoch"]
    assert doc["summary"]["failing"] == 2
    assert doc["upstream"]["state"] == "ok"  # a definite "no" for one identity is not an IMDS outage
    m = metrics(agent)
    assert m['mi_agent_tokens{state="failing"}'] == 2
    assert m['mi_agent_tokens{state="ok"}'] + m['mi_agent_tokens{state="refreshing"}'] == 2

    # Callers of that identity get IMDS's answer; others their tokens.
    code, _, body = agent.token(f"resource={ARM}&client_id={UA2}")
    assert code == 400 and json.loads(body)["error"] == "invalid_request"
    assert agent.token(f"resource={ARM}&client_id={UA_CLIENT_ID}")[0] == 200
    assert agent.health("/readyz")[0] == 200
    assert_no_tokens(emulator, agent.health("/status")[2])


def test_outage_degrades_keeps_ready_and_recovers(agent_factory, emulator):
    config = dict(CONFIG, prefetch=CONFIG["prefetch"][:2])
    agent = agent_factory(emulator, config=config)
    keys = KEYS[:2]
    emulator.faults(mode={"kind": "fail_all", "status": 500})

    def all_degraded():
        e = entries(status(agent))
        return e if all(e[k]["state"] == "degraded" for k in keys) else None

    e = wait_for(all_degraded, timeout=15, interval=0.2, what="entries to degrade")
    for k in keys:
        assert e[k]["last_error"] == {"status": 500, "error": "unknown_error", "description": "Internal server error"}
        assert e[k]["expires_in_seconds"] > 0
    doc = status(agent)
    assert doc["upstream"]["state"] == "failing"
    assert doc["upstream"]["last_error"]["status"] == 500
    assert doc["upstream"]["last_error"]["error"] == "unknown_error"
    assert ISO.match(doc["upstream"]["last_error"]["time"])
    # Cached tokens carry the VM: still ready, still serving.
    code, _, body = agent.health("/readyz")
    assert code == 200, body
    assert agent.token()[0] == 200
    m = metrics(agent)
    assert m['mi_agent_tokens{state="degraded"}'] == 2
    assert m["mi_agent_upstream_up"] == 0
    assert m['mi_agent_upstream_requests_total{class="5xx"}'] >= 2

    emulator.faults()  # IMDS recovers

    def all_ok():
        d = status(agent)
        e = entries(d)
        ok = all(e[k]["state"] == "ok" and e[k]["consecutive_failures"] == 0 for k in keys)
        return d if ok and d["upstream"]["state"] == "ok" else None

    doc = wait_for(all_ok, timeout=15, interval=0.2, what="entries to recover")
    assert doc["summary"]["ok"] == 2
    assert metrics(agent)["mi_agent_upstream_up"] == 1


def test_readyz_waits_for_prefetch_and_routes(emulator, agent_factory):
    # A slow IMDS: the health listener is up before the first prefetch round ends.
    emulator.admin("POST", "config", {"delay_ms": 1500})
    agent = agent_factory(emulator, config={"prefetch": [{"resource": ARM}]}, wait_ready=False)

    def readyz():
        try:
            return agent.health("/readyz")
        except OSError:
            return None

    code, headers, body = wait_for(readyz, what="the health listener")
    assert code == 503, body
    assert json.loads(body)["error"] == "not_ready"
    assert json.loads(body)["error_description"]
    assert "retry-after" in headers
    assert agent.health("/healthz")[0] == 200
    assert status(agent)["ready"] is False
    agent.wait_ready()
    assert json.loads(agent.health("/readyz")[2]) == {"status": "ready"}

    code, _, body = agent.health("/healthz")
    assert code == 200 and json.loads(body)["status"] == "ok"
    code, _, body = agent.health("/nope")
    assert code == 404 and json.loads(body)["error"] == "not_found"
    code, headers, body = request(agent.health_port, "POST", "/status", body="")
    assert code == 405 and headers.get("allow") == "GET" and json.loads(body)["error"]
    # The health listener never serves tokens.
    code, _, body = request(agent.health_port, "GET", "/oauth2/token?resource=" + ARM, {"Metadata": "true"})
    assert code == 404 and "access_token" not in body


def open_idle_sockets(port, count):
    socks = []
    for _ in range(count):
        socks.append(socket.create_connection(("127.0.0.1", port), timeout=10))
    return socks


def test_idle_sockets_at_the_cap_do_not_lock_out_healthz(agent_factory, emulator):
    """Anyone local may hold the health listener's connections; at the cap (64
    by default) the connection idle longest makes way for the probe."""
    agent = agent_factory(emulator)
    socks = open_idle_sockets(agent.health_port, 64 + 4)
    try:
        for _ in range(3):
            code, _, body = agent.health("/healthz")
            assert code == 200, body
        # The oldest idle sockets were closed for the newcomers.
        socks[0].settimeout(10)
        assert socks[0].recv(1) == b"", "the longest-idle connection was kept"
    finally:
        for s in socks:
            s.close()


def test_health_limits_cap_and_idle_timeout_are_configurable(agent_factory, emulator):
    agent = agent_factory(emulator, config={"health_limits": {"max_connections": 4, "idle_timeout_seconds": 0.5}})
    socks = open_idle_sockets(agent.health_port, 4)
    try:
        code, _, body = agent.health("/healthz")
        assert code == 200, body
        # Idle health connections are closed after idle_timeout_seconds.
        for s in socks:
            s.settimeout(10)
            assert s.recv(1) == b""
    finally:
        for s in socks:
            s.close()
    # The token listener keeps its own limits: a connection there stays open.
    with socket.create_connection(("127.0.0.1", agent.port), timeout=10) as s:
        s.settimeout(1.5)
        with pytest.raises(socket.timeout):
            s.recv(1)  # b"" would mean the token listener closed it


def read_response(sock, buf):
    """One HTTP/1.1 response with a Content-Length from `sock`, after the bytes
    already in `buf`. Returns (status, headers, body bytes, bytes left over)."""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(1 << 20)
        assert chunk, "connection closed before the headers"
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
    length = int(headers["content-length"])
    chunks = [rest]
    have = len(rest)
    while have < length:
        chunk = sock.recv(1 << 20)
        assert chunk, "connection closed before the body"
        chunks.append(chunk)
        have += len(chunk)
    data = b"".join(chunks)
    return int(lines[0].split()[1]), headers, data[:length], data[length:]


# A plain emulator, tokens for a day: 4,096 keys stay ok, with no refresh under way.
@pytest.mark.emulator_args()
def test_status_views_with_4096_keys_and_hits_during_the_full_one(agent_factory, emulator):
    n = 4096  # the cache's default cap
    resources = [f"https://r{i}.example/".ljust(2048, "x") for i in range(n)]
    config = {"budget": {"rate_per_second": 1000, "burst": 1000, "max_concurrent": 16, "max_queue": 2 * n},
              "prefetch": [{"resource": r} for r in resources]}
    agent = agent_factory(emulator, config=config, wait_ready=False)
    agent.wait_ready(timeout=120)
    wait_for(lambda: json.loads(agent.health("/status")[2])["summary"]["ok"] == n, timeout=120, interval=0.5,
             what="every key to hold a token")

    # The default view stays small: a summary and the first keys, strings shortened.
    code, _, body = agent.health("/status")
    assert code == 200
    doc = json.loads(body)
    assert doc["summary"] == {"ok": n, "refreshing": 0, "degraded": 0, "failing": 0}
    assert doc["entries_total"] == n and doc["entries_shown"] == 50 and doc["truncated"] is True
    assert doc["full_view"] == "/status?entries=all"
    assert len(entries(doc)) == 50 and len(body) < 64 * 1024
    for code, target in ((400, "/status?entries=10"), (400, "/status?full=1"), (400, "/status?entries=all&x=1"),
                         (200, "/status?")):
        assert agent.health(target)[0] == code, target

    # A full view, and a second one right behind it on the same connection.
    hit = "/oauth2/token?resource=" + urllib.parse.quote(resources[n - 1], safe="")
    status_sock = socket.create_connection(("127.0.0.1", agent.health_port))
    hits = socket.create_connection(("127.0.0.1", agent.port))
    try:
        hits.settimeout(30)
        status_sock.settimeout(30)
        started = time.monotonic()
        status_sock.sendall(b"GET /status?entries=all HTTP/1.1\r\nHost: localhost\r\n\r\n"
                            b"GET /status?entries=all HTTP/1.1\r\nHost: localhost\r\n\r\n")
        # Cache hits, one after another, until the first byte of /status arrives:
        # they are answered while the full view is being written.
        answered, latencies, leftover = 0, [], b""
        while answered < 5000 and time.monotonic() - started < 60:
            if select.select([status_sock], [], [], 0)[0]:
                break
            sent = time.monotonic()
            hits.sendall(f"GET {hit} HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\n\r\n".encode())
            code, _, body, leftover = read_response(hits, leftover)
            latencies.append(time.monotonic() - sent)
            assert code == 200 and json.loads(body)["resource"] == resources[n - 1]
            answered += 1
        first_byte = time.monotonic()
        code, headers, body, rest = read_response(status_sock, b"")
        done = time.monotonic()
        busy_code, busy_headers, busy_body, _ = read_response(status_sock, rest)
    finally:
        hits.close()
        status_sock.close()
    print(f"full /status: {len(body)} bytes, first byte after {(first_byte - started) * 1000:.0f} ms, "
          f"complete after {(done - started) * 1000:.0f} ms; {answered} cache hits meanwhile, "
          f"latency max {max(latencies, default=0) * 1000:.1f} ms, "
          f"median {sorted(latencies)[len(latencies) // 2] * 1000 if latencies else 0:.1f} ms")
    # Built in one go, the document would hold the loop: at most a hit or two
    # would slip in before it (the one racing the /status request).
    assert answered >= 3, answered

    assert code == 200 and headers["content-type"].startswith("application/json")
    full = json.loads(body)
    assert full["entries_total"] == n and full["entries_shown"] == n and full["truncated"] is False
    e = entries(full)
    assert sorted(r for _, r in e) == sorted(resources)  # every key, values exact
    assert all(entry["state"] == "ok" and entry["expires_in_seconds"] > 0 for entry in e.values())
    # One full view at a time: the second waited its turn and was told to retry.
    assert busy_code == 503 and busy_headers["retry-after"] == "1"
    assert json.loads(busy_body)["error"] == "busy"
    assert agent.health("/status?entries=all")[0] == 200  # free again
