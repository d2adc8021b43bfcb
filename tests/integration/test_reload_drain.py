"""SIGHUP reloads the configuration file without losing the cache or the
listeners; an invalid file keeps the running configuration. SIGTERM drains:
a request in flight completes, new connections are refused, and the drain is
bounded by limits.drain_seconds, at which callers still waiting get 503.
"""

import base64
import http.server
import json
import signal
import threading
import time
import urllib.parse

import pytest

from conftest import Agent, port_accepts, token_request, wait_for
import svc_helpers as h

ARM = "https://management.azure.com/"
VAULT = "https://vault.azure.net"
STORAGE = "https://storage.azure.com/"


@pytest.fixture(autouse=True)
def binaries(request):
    h.require_test_binaries(request)


def test_reload_applies_prefetch_and_log_level_and_keeps_the_cache(tmp_path, emulator):
    config = tmp_path / "config.json"
    h.write_config(config, prefetch=[{"resource": ARM}], log={"level": "info"})
    agent = Agent(emulator, flags=True, config_path=str(config), log_path=str(tmp_path / "agent.log"))
    try:
        wait_for(lambda: emulator.count(ARM) >= 1, timeout=h.START_TIMEOUT,
                 what="the start-up prefetch of ARM")
        status, body = h.get_token(agent.port, ARM)
        assert status == 200, body
        arm_fetches = emulator.count(ARM)
        assert emulator.count(VAULT) == 0

        # 1. A new prefetch key and log level: the new key is fetched, the old
        #    one stays cached (no new upstream request).
        h.write_config(config, prefetch=[{"resource": ARM}, {"resource": VAULT}],
                       log={"level": "debug"})
        agent.send_signal(signal.SIGHUP)
        wait_for(lambda: emulator.count(VAULT) >= 1, timeout=h.START_TIMEOUT,
                 what="the reloaded prefetch of VAULT")
        wait_for(lambda: agent.output().count("configuration reloaded") == 1, timeout=h.START_TIMEOUT,
                     what="the reload to be logged")
        status, body = h.get_token(agent.port, ARM)
        assert status == 200, body
        status, body = h.get_token(agent.port, VAULT)
        assert status == 200, body
        assert emulator.count(ARM) == arm_fetches, "reload dropped the cached ARM token"
        assert emulator.count(VAULT) == 1, "the prefetched VAULT token was not served from cache"

        # 2. An invalid file is rejected; the agent keeps serving from its cache.
        config.write_text('{"prefetch": [ {"resource": ')
        agent.send_signal(signal.SIGHUP)
        wait_for(lambda: agent.output().count("reload rejected") == 1, timeout=h.START_TIMEOUT,
                     what="the invalid file to be rejected")
        assert agent.alive()
        for resource in (ARM, VAULT):
            status, body = h.get_token(agent.port, resource)
            assert status == 200, body
        assert emulator.count(ARM) == arm_fetches and emulator.count(VAULT) == 1

        # 3. log.level "warning" (and one more prefetch key, which shows when the
        #    reload has been applied): the reload's info line is not logged.
        h.write_config(config, prefetch=[{"resource": ARM}, {"resource": VAULT},
                                         {"resource": STORAGE}], log={"level": "warning"})
        agent.send_signal(signal.SIGHUP)
        wait_for(lambda: emulator.count(STORAGE) >= 1, timeout=h.START_TIMEOUT,
                 what="the reloaded prefetch of STORAGE")
        # An error line still is: a second invalid file.
        config.write_text("not json")
        agent.send_signal(signal.SIGHUP)
        wait_for(lambda: agent.output().count("reload rejected") == 2, timeout=h.START_TIMEOUT,
                     what="the second invalid file to be rejected")
        assert agent.output().count("configuration reloaded") == 1, \
            "an info line was logged after log.level became warning:\n" + agent.output()

        assert agent.stop() == 0, agent.output()
    finally:
        agent.stop()


class SlowImds:
    """A stand-in for IMDS that holds every answer until the test releases it,
    so a request is provably in flight when the agent is told to stop."""

    def __init__(self):
        self.arrived = threading.Event()
        self.release = threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                outer.arrived.set()
                outer.release.wait(timeout=60)
                now = int(time.time())
                claims = {"aud": ARM, "iat": now, "nbf": now, "exp": now + 3600}
                jwt = ".".join(
                    base64.urlsafe_b64encode(json.dumps(part).encode()).decode().rstrip("=")
                    for part in ({"typ": "JWT", "alg": "RS256"}, claims)) + ".c2ln"
                body = json.dumps({
                    "access_token": jwt, "refresh_token": "", "expires_in": "3600",
                    "expires_on": str(now + 3600), "not_before": str(now), "resource": ARM,
                    "token_type": "Bearer"}).encode()
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the agent gave up on us (drain timeout)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}/metadata/identity/oauth2/token"

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def slow_imds():
    imds = SlowImds()
    yield imds
    imds.close()


def test_sigterm_drains_the_request_in_flight(tmp_path, slow_imds):
    agent = Agent(flags=True, imds_url=slow_imds.url, log_path=str(tmp_path / "agent.log"))
    result = {}

    def client():
        result["answer"] = h.get_token(agent.port, ARM, timeout=60)

    caller = threading.Thread(target=client)
    try:
        caller.start()
        assert slow_imds.arrived.wait(timeout=20), "the agent never asked IMDS"
        agent.send_signal(signal.SIGTERM)
        # Draining: no new connections, but the process waits for the caller.
        wait_for(lambda: not port_accepts(agent.port), timeout=10,
                     what="the listener to close on SIGTERM")
        time.sleep(0.3)
        assert agent.alive(), "the agent exited with a request in flight:\n" + agent.output()
        slow_imds.release.set()
        caller.join(timeout=30)
        status, body = result["answer"]
        assert status == 200 and body["token_type"] == "Bearer", (status, body)
        assert agent.wait(timeout=20) == 0, agent.output()
    finally:
        slow_imds.release.set()
        agent.stop()
        caller.join(timeout=5)


def test_drain_is_bounded_and_answers_503_to_callers_still_waiting(tmp_path, slow_imds):
    """IMDS never answers: at drain_seconds after SIGTERM the waiting caller is
    told 503 + Retry-After + Connection: close, and the agent exits soon after."""
    config = h.write_config(tmp_path / "config.json", limits={"drain_seconds": 1})
    agent = Agent(flags=True, imds_url=slow_imds.url, config_path=config, log_path=str(tmp_path / "agent.log"))
    result = {}

    def client():
        try:
            result["answer"] = token_request(agent.port, urllib.parse.urlencode({"resource": ARM}), timeout=60)
        except OSError as e:
            result["error"] = e

    caller = threading.Thread(target=client, daemon=True)
    caller.start()
    try:
        assert slow_imds.arrived.wait(timeout=20), "the agent never asked IMDS"
        started = time.monotonic()
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(timeout=15) == 0, agent.output()
        assert time.monotonic() - started < 8, "the drain outlived drain_seconds by far"
        caller.join(timeout=10)
        assert "answer" in result, f"the waiting caller got no answer: {result.get('error')}"
        status, headers, body = result["answer"]
        assert status == 503, (status, body)
        assert headers.get("retry-after", "").isdigit(), headers
        assert headers.get("connection") == "close", headers
        assert json.loads(body)["error"] == "temporarily_unavailable", body
    finally:
        agent.stop()
