"""/metrics (SPEC §8): Prometheus text format that promtool accepts, whose
counters match what the test did to the agent."""

import shutil
import subprocess

from conftest import request

ENC = "https%3A%2F%2Fmanagement.azure.com%2F"
VAULT_ENC = "https%3A%2F%2Fvault.azure.net"


def scrape(agent):
    code, headers, body = agent.health("/metrics")
    assert code == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    return body


def parse(text):
    """{'name{labels}': value} plus the set of (family, type)."""
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
        elif line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            assert name not in samples, f"duplicate sample {name}"
            samples[name] = float(value)
    return samples, types


def promtool_check(text):
    promtool = shutil.which("promtool")
    assert promtool, "promtool not installed (Debian package prometheus, tests/deps/health.txt)"
    r = subprocess.run([promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    assert r.returncode == 0, "promtool check metrics:\n" + r.stdout.decode() + r.stderr.decode()


def test_metrics_pass_promtool_and_count_what_happened(agent_factory, emulator):
    agent = agent_factory(emulator)
    promtool_check(scrape(agent))  # before any traffic too

    n = 9
    # One miss, then N-1 hits for the same key on the legacy route.
    for _ in range(n):
        code, _, body = agent.token("resource=" + ENC)
        assert code == 200, body
    # The IMDS-shaped route: a second key (miss), then a hit.
    for _ in range(2):
        code, _, body = agent.token(f"api-version=2018-02-01&resource={VAULT_ENC}",
                                    path="/metadata/identity/oauth2/token")
        assert code == 200, body
    # Errors answered by the agent itself.
    assert request(agent.port, "GET", "/oauth2/token?resource=" + ENC)[0] == 400  # no Metadata header
    assert agent.token("resource=" + ENC, path="/unknown")[0] == 401

    text = scrape(agent)
    promtool_check(text)
    m, types = parse(text)
    # Ours, and the process families of the Prometheus client conventions.
    assert all(name.startswith(("mi_agent_", "process_")) for name in types)
    assert all(name.endswith("_total") for name, kind in types.items() if kind == "counter")

    assert m['mi_agent_requests_total{route="legacy",code="200"}'] == n
    assert m['mi_agent_requests_total{route="legacy",code="400"}'] == 1
    assert m['mi_agent_requests_total{route="imds",code="200"}'] == 2
    assert m['mi_agent_requests_total{route="other",code="401"}'] == 1
    assert m["mi_agent_cache_hits_total"] == (n - 1) + 1
    assert m["mi_agent_cache_misses_total"] == 2
    upstream_calls = emulator.count()
    assert upstream_calls == 2
    assert m['mi_agent_upstream_requests_total{class="2xx"}'] == upstream_calls
    assert m['mi_agent_upstream_requests_total{class="5xx"}'] == 0
    assert m["mi_agent_upstream_retries_total"] == 0
    assert m['mi_agent_tokens{state="ok"}'] == 2
    assert m["mi_agent_cache_keys"] == 2
    assert 86000 < m["mi_agent_token_earliest_expiry_seconds"] <= 86400
    assert m["mi_agent_upstream_up"] == 1
    assert m["mi_agent_waiters"] == 0
    assert m['mi_agent_upstream_queue_depth{priority="caller"}'] == 0
    assert m['mi_agent_open_connections{listener="health"}'] >= 1  # this scrape
    assert m['mi_agent_connections_accepted_total{listener="token"}'] == n + 2 + 2
    assert m["mi_agent_process_start_time_seconds"] > 1.6e9
    assert any(k.startswith("mi_agent_build_info{version=") for k in m)

    # Histogram: cumulative buckets ending in +Inf == _count == upstream calls.
    assert types["mi_agent_upstream_latency_seconds"] == "histogram"
    buckets = [(k, v) for k, v in m.items() if k.startswith("mi_agent_upstream_latency_seconds_bucket")]
    values = [v for _, v in buckets]
    assert values == sorted(values) and buckets[-1][0].endswith('le="+Inf"}')
    assert values[-1] == m["mi_agent_upstream_latency_seconds_count"] == upstream_calls
    # Millisecond clock: answers of the local emulator may all round to 0.
    assert 0 <= m["mi_agent_upstream_latency_seconds_sum"] < 10


def test_failures_retries_and_throttling_are_counted(agent_factory, emulator):
    agent = agent_factory(emulator, config={
        "retry": {"delta_seconds": 0.1, "max_delay_seconds": 1, "retry_after_cap_seconds": 1},
        "budget": {"rate_per_second": 100, "burst": 20, "max_concurrent": 3}})
    emulator.faults([{"status": 500, "count": 2}, {"status": 429, "retry_after": 1}])
    code, _, body = agent.token("resource=" + ENC)
    assert code == 200, body
    text = scrape(agent)
    promtool_check(text)
    m, _ = parse(text)
    assert m['mi_agent_upstream_requests_total{class="5xx"}'] == 2
    assert m['mi_agent_upstream_requests_total{class="4xx"}'] == 1
    assert m['mi_agent_upstream_requests_total{class="2xx"}'] == 1
    assert m["mi_agent_upstream_retries_total"] == 3
    assert m["mi_agent_upstream_throttle_pauses_total"] == 1
    assert m["mi_agent_upstream_latency_seconds_count"] == 4 == emulator.count()
    assert m["mi_agent_upstream_up"] == 1
    assert m["mi_agent_cache_misses_total"] == 1
    assert m['mi_agent_requests_total{route="legacy",code="200"}'] == 1
