"""Golden transcripts: today's observable behaviour, byte for byte.

Each test drives the real mi-agent (against the real IMDS emulator) through a
fixed list of requests or commands and compares a normalized transcript with
tests/golden/<area>.txt. Only what varies between runs is masked; everything
else, header order and Content-Length included, must stay identical:
  * access tokens (JWTs)                  -> <token>
  * expires_on / not_before / *_epoch     -> <epoch>, ISO times -> <iso-time>
  * expires_in, ext_expires_in, uptime, ages, p50/p99 -> <n> (they move with the clock)
  * Content-Length of a body with a mask  -> <n>
  * config_digest (the config holds this run's ports) -> <digest>
  * ports, config and temporary paths     -> <port>, <health_port>, <imds_port>, ...
  * /metrics: latency buckets and sums, *_seconds gauges, the process_*
    values (memory, CPU, descriptors) and the health listener's accepted
    connections (they count readiness polls) -> <n>; the build's git
    revision -> <revision>
  * the CLI: "up <dur>", latencies, libcurl's "after <n> ms"
  * the Date header is left out.
Long one-line JSON bodies are shown split after each comma (reversible).

    MI_GOLDEN_UPDATE=1 python3 -m pytest tests/integration/test_golden.py

rewrites the golden files instead of comparing (then review the diff)."""

import json
import os
import re
import socket
import subprocess
import tempfile
import threading

import pytest

from conftest import UA_CLIENT_ID, UA_OBJECT_ID, UA_RES_ID, agent_command, agent_env, free_port, request, wait_for

GOLDEN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "golden")
UPDATE = os.environ.get("MI_GOLDEN_UPDATE") == "1"

ENC_ARM = "https%3A%2F%2Fmanagement.azure.com%2F"
UNKNOWN_CLIENT = "11111111-2222-4333-8444-555555555555"


def pct(value):
    from urllib.parse import quote
    return quote(value, safe="")


# ---------------------------------------------------------------------------
# Normalization: mask what differs between runs, nothing else.

class Masks:
    """Literal values of this run (ports, paths) replaced by fixed names."""

    def __init__(self):
        self.literals = []  # (text, replacement), longest first

    def add(self, text, name):
        text = str(text)
        if text and all(t != text for t, _ in self.literals):
            self.literals.append((text, name))
            self.literals.sort(key=lambda p: -len(p[0]))

    def apply(self, text):
        for literal, name in self.literals:
            if literal.isdigit():  # a port: never part of a longer number
                text = re.sub(r"(?<!\d)" + literal + r"(?!\d)", name, text)
            else:
                text = text.replace(literal, name)
        return text


_BODY_RULES = [
    # Token fields (JSON strings).
    (re.compile(r'"access_token":"[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"'), '"access_token":"<token>"'),
    (re.compile(r'"(expires_on|not_before)":"\d+"'), r'"\1":"<epoch>"'),
    (re.compile(r'"(ext_expires_in|expires_in)":"\d+"'), r'"\1":"<n>"'),
    # /status and /healthz: clocks and timing.
    (re.compile(r'"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"'), '"<iso-time>"'),
    (re.compile(r'"(\w+_epoch|expires_on)":\d+'), r'"\1":<epoch>'),
    # A digest of the configuration, which holds this run's ports.
    (re.compile(r'"config_digest":"[0-9a-f]*"'), '"config_digest":"<digest>"'),
    (re.compile(r'"(uptime_seconds|age_seconds|expires_in_seconds|refresh_in_seconds|'
                r'next_refresh_in_seconds|last_refresh_ago_seconds|idle_seconds|'
                r'p50|p99)":-?\d+(\.\d+)?'), r'"\1":<n>'),
]


def normalize_body(body, masks):
    for rx, repl in _BODY_RULES:
        body = rx.sub(repl, body)
    return masks.apply(body)


def normalize_metrics(body, masks):
    """Prometheus text: mask the values of series that depend on timing."""
    out = []
    for line in body.split("\n"):
        if line and not line.startswith("#"):
            name = re.split(r"[{ ]", line, 1)[0]
            # Histogram buckets and sums and every gauge in seconds depend on timing;
            # _count and the +Inf bucket count requests, which does not.
            # The health listener's accepted connections include the readiness polls
            # of Agent.wait_ready, whose number depends on how fast the agent starts.
            if ((re.search(r"_seconds(_bucket|_sum)?$", name) and 'le="+Inf"' not in line)
                    or name.startswith("process_")
                    or line.startswith('mi_agent_connections_accepted_total{listener="health"}')):
                line = re.sub(r" \S+$", " <n>", line)
            line = re.sub(r'(mi_agent_build_info\{.*revision=)"[^"]*"', r'\1"<revision>"', line)
        out.append(line)
    return masks.apply("\n".join(out))


# ---------------------------------------------------------------------------
# Raw HTTP: exact bytes out, exact response head in.

def parse_responses(data, count, head_only=False):
    """Splits `data` into up to `count` final responses (1xx ones are kept
    too); returns (list of (head, body) bytes, rest, complete)."""
    out = []
    rest = data
    finals = 0
    while finals < count:
        head, sep, after = rest.partition(b"\r\n\r\n")
        if not sep:
            return out, rest, False
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        status = head.split(b" ", 2)[1] if b" " in head else b""
        interim = status.startswith(b"1")
        if interim or head_only:
            length = 0
        if len(after) < length:
            return out, rest, False
        out.append((head, after[:length]))
        rest = after[length:]
        if not interim:
            finals += 1
    return out, rest, True


def raw_exchange(port, chunks, responses=1, host="127.0.0.1", timeout=20):
    """Sends `chunks` (bytes, or a list: each next chunk after the first
    response head arrives) and reads `responses` final responses; when the last
    one says "Connection: close", reads on to the close. Returns (responses,
    bytes after them)."""
    if isinstance(chunks, bytes):
        chunks = [chunks]
    head_only = chunks[0].startswith(b"HEAD ")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect((host, port))
        data = b""
        s.sendall(chunks[0])
        for chunk in chunks[1:]:
            while b"\r\n\r\n" not in data:  # an interim answer (100 Continue) first
                got = s.recv(65536)
                if not got:
                    break
                data += got
            s.sendall(chunk)
        eof = False
        while True:
            parsed, rest, complete = parse_responses(data, responses, head_only)
            if complete or eof:
                break
            got = _recv(s)
            eof = not got
            data += got
        if not parsed:
            return [(data, b"")], b""
        if b"\r\nconnection: close" in parsed[-1][0].lower():
            while not eof:
                got = _recv(s)
                eof = not got
                rest += got
        return parsed, rest


def _recv(s):
    try:
        return s.recv(65536)
    except ConnectionResetError:
        return b""


def wrap_json(text):
    """A long one-line JSON body, split after each comma (readable diffs; the
    split is reversible as a compact body has no newline)."""
    if len(text) > 200 and "\n" not in text and text.startswith("{"):
        return text.replace(",", ",\n") + "\n(wrapped after each comma)"
    return text


def render_response(head, body, masks, body_normalizer=None):
    lines = head.decode("latin-1").split("\r\n")
    text = body.decode("utf-8", "replace")
    norm = (body_normalizer or normalize_body)(text, masks)
    out = ["< " + lines[0]]
    for line in lines[1:]:
        name = line.split(":", 1)[0].strip().lower()
        if name == "date":
            continue
        if name == "content-length" and norm != text:
            line = line.split(":", 1)[0] + ": <n>"
        out.append("< " + masks.apply(line))
    if norm:
        if norm.endswith("\n"):
            out.append(norm + "(ends with a newline)")
        else:
            out.append(wrap_json(norm) if body_normalizer is None else norm)
    return "\n".join(out)


class Transcript:
    def __init__(self, masks):
        self.masks = masks
        self.parts = []

    def http(self, label, port, chunks, responses=1, host="127.0.0.1", body_normalizer=None):
        first = (chunks if isinstance(chunks, bytes) else chunks[0]).split(b"\r\n", 1)[0]
        shown = first.decode("latin-1")
        if len(shown) > 160:
            shown = shown[:160] + f"...({len(shown)} bytes)"
        entry = [f"### {label}", "> " + self.masks.apply(shown)]
        parsed, rest = raw_exchange(port, chunks, responses, host=host)
        for head, body in parsed:
            entry.append(render_response(head, body, self.masks, body_normalizer))
        if rest:
            entry.append(f"(then {len(rest)} more bytes before the close: {rest[:200]!r})")
        self.parts.append("\n".join(entry))

    def text(self, label, text):
        self.parts.append(f"### {label}\n" + self.masks.apply(text))

    def render(self):
        return "\n\n".join(self.parts) + "\n"


def check_golden(name, text):
    path = os.path.normpath(os.path.join(GOLDEN_DIR, name))
    if UPDATE:
        os.makedirs(GOLDEN_DIR, exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        return
    with open(path, encoding="utf-8", newline="") as f:
        expected = f.read()
    if text != expected:
        got = os.path.join(os.environ.get("MI_BUILD_DIR") or tempfile.gettempdir(), "golden-" + name + ".got")
        with open(got, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        import difflib
        diff = "".join(difflib.unified_diff(expected.splitlines(True), text.splitlines(True),
                                            path, got, n=2))
        pytest.fail(f"{name} differs from the golden file (this run: {got}):\n{diff[:20000]}")


def get(target, head="Host: localhost\r\nMetadata: true\r\n", version="HTTP/1.1", method="GET",
        close=True, body=b""):
    extra = "Connection: close\r\n" if close else ""
    return f"{method} {target} {version}\r\n{head}{extra}\r\n".encode() + body


def post_form(body, head="Host: localhost\r\nMetadata: true\r\n", target="/oauth2/token",
              content_type="application/x-www-form-urlencoded"):
    data = body.encode()
    return (f"POST {target} HTTP/1.1\r\n{head}Content-Type: {content_type}\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode() + data


def make_masks(emulator, *agents):
    m = Masks()
    for a in agents:
        m.add(a.port, "<port>")
        m.add(a.health_port, "<health_port>")
        m.add(a.config_path, "<config_path>")
    if emulator is not None:
        m.add(emulator.port, "<imds_port>")
    return m


FAST = {"retry": {"max_attempts": 2, "delta_seconds": 0.01, "max_delay_seconds": 0.05,
                  "gone_window_seconds": 0.2, "retry_after_cap_seconds": 0.1},
        "budget": {"rate_per_second": 1000, "burst": 1000, "max_concurrent": 4},
        "cache": {"negative_ttl_seconds": 0},
        "imds": {"timeout_seconds": 0.5}}


# ---------------------------------------------------------------------------
# 1. The token listener.

def test_token_listener(agent_factory, emulator):
    agent = agent_factory(emulator, config=FAST)
    absolute = agent_factory(emulator, config=dict(FAST, absolute_form=True, allowed_hosts=["myvm.internal"]))
    masks = make_masks(emulator, agent, absolute)
    masks.add(absolute.port, "<port2>")
    t = Transcript(masks)
    p = agent.port
    tok = "/oauth2/token?resource=" + ENC_ARM
    imds = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=" + ENC_ARM

    # Served requests.
    t.http("legacy GET, resource only", p, get(tok))
    t.http("legacy GET, resource only again (cached)", p, get(tok))
    t.http("legacy GET, keep-alive (no Connection header)", p, get(tok, close=False))
    t.http("legacy GET, HTTP/1.0 without Host", p, get(tok, head="Metadata: true\r\n", version="HTTP/1.0"))
    t.http("legacy GET, ::1", p, get(tok, head="Host: [::1]\r\nMetadata: true\r\n"), host="::1")
    t.http("legacy GET, client_id", p, get(tok + "&client_id=" + UA_CLIENT_ID))
    t.http("legacy GET, object_id", p, get(tok + "&object_id=" + UA_OBJECT_ID))
    t.http("legacy GET, mi_res_id", p, get(tok + "&mi_res_id=" + pct(UA_RES_ID)))
    t.http("legacy GET, msi_res_id", p, get(tok + "&msi_res_id=" + pct(UA_RES_ID)))
    t.http("legacy GET, api-version", p, get(tok + "&api-version=2018-02-01"))
    t.http("legacy GET, empty client_id and unknown fields", p, get(tok + "&client_id=&grant_type=x"))
    t.http("legacy GET, trailing slash", p, get("/oauth2/token/?resource=" + ENC_ARM))
    t.http("POST form body", p, post_form("resource=" + ENC_ARM))
    t.http("POST form body, charset", p, post_form("resource=" + ENC_ARM,
                                                   content_type="application/x-www-form-urlencoded; charset=UTF-8"))
    t.http("POST empty body, query parameters", p,
           get(tok, method="POST", head="Host: localhost\r\nMetadata: true\r\nContent-Length: 0\r\n"))
    body = ("resource=" + ENC_ARM).encode()
    t.http("POST chunked form body", p,
           b"POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\n"
           b"Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n"
           b"Connection: close\r\n\r\n" + b"%x\r\n" % 10 + body[:10] + b"\r\n"
           + b"%x\r\n" % (len(body) - 10) + body[10:] + b"\r\n0\r\n\r\n")
    head = (f"POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(body)}\r\n"
            f"Expect: 100-continue\r\nConnection: close\r\n\r\n").encode()
    t.http("POST with Expect: 100-continue", p, [head, body])
    t.http("IMDS-shaped GET", p, get(imds))
    t.http("IMDS-shaped GET, trailing slash", p,
           get("/metadata/identity/oauth2/token/?api-version=2018-02-01&resource=" + ENC_ARM))
    t.http("pipelined pair", p,
           get("/oauth2/token?resource=https://a.example/", close=False) + get("/oauth2/token?resource=https://b.example/"),
           responses=2)

    # Refused by the API.
    t.http("no Metadata header", p, get(tok, head="Host: localhost\r\n"))
    t.http("Metadata: True", p, get(tok, head="Host: localhost\r\nMetadata: True\r\n"))
    t.http("Metadata twice", p, get(tok, head="Host: localhost\r\nMetadata: true\r\nMetadata: true\r\n"))
    t.http("missing resource", p, get("/oauth2/token?client_id=" + UA_CLIENT_ID))
    t.http("empty resource", p, get("/oauth2/token?resource="))
    t.http("resource twice", p, get(tok + "&resource=https%3A%2F%2Fother%2F"))
    t.http("bad percent escape", p, get("/oauth2/token?resource=%ZZ"))
    t.http("two selectors", p, get(tok + "&client_id=" + UA_CLIENT_ID + "&object_id=" + UA_OBJECT_ID))
    t.http("malformed client_id", p, get(tok + "&client_id=not-a-guid"))
    t.http("malformed msi_res_id", p, get(tok + "&msi_res_id=%2Fnot%2Fan%2Farm%2Fid"))
    t.http("IMDS-shaped without api-version", p, get("/metadata/identity/oauth2/token?resource=" + ENC_ARM))
    t.http("IMDS-shaped with a bad api-version", p,
           get("/metadata/identity/oauth2/token?api-version=bogus&resource=" + ENC_ARM))
    t.http("POST with a non-form body", p, post_form("{}", content_type="application/json"))
    t.http("POST on the IMDS-shaped path", p, post_form("resource=" + ENC_ARM, target=imds))
    t.http("unknown path", p, get("/oauth2/other"))
    t.http("root path", p, get("/"))
    for method in ("PUT", "DELETE", "OPTIONS", "HEAD"):
        t.http(f"{method} on the legacy path", p, get(tok, method=method))
    t.http("PUT on the IMDS-shaped path", p, get(imds, method="PUT"))
    t.http("foreign Host", p, get(tok, head="Host: attacker.example\r\nMetadata: true\r\n"))
    t.http("foreign Host with port", p, get(tok, head="Host: attacker.example:50342\r\nMetadata: true\r\n"))
    t.http("malformed Host port", p, get(tok, head="Host: localhost:http\r\nMetadata: true\r\n"))
    t.http("empty Host", p, get(tok, head="Host: \r\nMetadata: true\r\n"))
    t.http("HTTP/1.1 without Host", p, get(tok, head="Metadata: true\r\n"))
    t.http("two Host headers", p, get(tok, head="Host: localhost\r\nHost: localhost\r\nMetadata: true\r\n"))
    t.http("Origin header", p, get(tok, head="Host: localhost\r\nOrigin: http://attacker.example\r\nMetadata: true\r\n"))
    t.http("Origin: null", p, get(tok, head="Host: localhost\r\nOrigin: null\r\nMetadata: true\r\n"))
    t.http("X-Forwarded-For", p, get(tok, head="Host: localhost\r\nMetadata: true\r\nX-Forwarded-For: 10.0.0.1\r\n"))
    t.http("absolute-form target, not enabled", p, get("http://169.254.169.254" + imds))
    t.http("Metadata only in a chunked trailer", p,
           b"POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\n"
           b"Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n"
           b"Connection: close\r\n\r\n" + b"%x\r\n" % len(body) + body + b"\r\n0\r\nMetadata: true\r\n\r\n")

    # Refused by the HTTP server.
    t.http("oversize header (431)", p, get(tok, head="Host: localhost\r\nMetadata: true\r\nX-Pad: " + "a" * 9000 + "\r\n"))
    big = "resource=" + ENC_ARM + "&x=" + "b" * 9000
    t.http("oversize body (413)", p, post_form(big))
    t.http("oversize chunked body (413)", p,
           b"POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\n"
           b"Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n"
           b"Connection: close\r\n\r\n" + b"%x\r\n" % 9000 + b"c" * 9000 + b"\r\n0\r\n\r\n")
    t.http("HTTP/2.0 request line (505)", p, get(tok, version="HTTP/2.0"))
    t.http("HTTP/0.9-ish request line", p, b"GET /oauth2/token\r\n\r\n")
    t.http("garbage (400)", p, b"GARBAGE\r\n\r\n")
    t.http("bad header line (400)", p, b"GET / HTTP/1.1\r\nHost localhost\r\n\r\n")
    t.http("Content-Length and chunked both", p,
           b"POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\nContent-Length: 3\r\n"
           b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n")
    t.http("bad Content-Length", p,
           b"POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\nContent-Length: x\r\n\r\n")

    # The absolute form, enabled.
    q = absolute.port
    t.http("absolute-form target, enabled", q, get("http://169.254.169.254" + imds,
                                                   head="Host: 169.254.169.254\r\nMetadata: true\r\n"))
    t.http("absolute-form target, allowed host", q, get("http://myvm.internal" + tok))
    t.http("absolute-form target, foreign host", q, get("http://attacker.example" + imds))
    t.http("absolute-form target, userinfo", q, get("http://user@169.254.169.254" + imds))
    t.http("allowed_hosts Host", q, get(tok, head="Host: MyVM.internal:50342\r\nMetadata: true\r\n"))

    # Upstream answers (emulator identities and fault scripts); a resource each, so no cache hit.
    t.http("IMDS: identity not found (400)", p, get(tok + "&client_id=" + UNKNOWN_CLIENT))
    emulator.admin("POST", "config", {"reject_resources": ["https://rejected.example/"]})
    t.http("IMDS: rejected resource (400 invalid_resource)", p,
           get("/oauth2/token?resource=https%3A%2F%2Frejected.example%2F"))
    cases = [
        ("IMDS: 404 on every attempt", "r404", {"kind": "fail_all", "status": 404}, None),
        ("IMDS: 404 once, then a token", "r404once", None, [{"status": 404}]),
        ("IMDS: 429 on every attempt", "r429", {"kind": "fail_all", "status": 429}, None),
        ("IMDS: 429 with Retry-After on every attempt", "r429ra",
         {"kind": "fail_all", "status": 429, "retry_after": "1"}, None),
        ("IMDS: 500 on every attempt", "r500", {"kind": "fail_all", "status": 500}, None),
        ("IMDS: 503 once, then a token", "r503once", None, [{"status": 503}]),
        ("IMDS: 410 gone", "r410", {"kind": "gone"}, None),
        ("IMDS: 400 with a custom body", "r400body",
         None, [{"status": 400, "body": {"error": "invalid_request", "error_description": "custom"}}]),
        ("IMDS: 400 with a non-JSON body", "r400text", None, [{"status": 400, "body": "plain text"}]),
        ("IMDS: malformed body", "rmalformed", None, [{"malformed": True, "count": 10}]),
        ("IMDS: oversized body", "roversized", None, [{"oversized_bytes": 70000, "count": 10}]),
        ("IMDS: missing expires_on", "rnoexp", None, [{"missing_expires_on": True, "count": 10}]),
        ("IMDS: connection reset", "rreset", None, [{"reset": True, "count": 10}]),
        ("IMDS: hangs (timeout)", "rhang", None, [{"hang": True, "count": 10}]),
    ]
    for label, name, mode, steps in cases:
        resource = f"https://{name}.example/"
        if mode is not None:
            mode = dict(mode, match={"resource": resource})
        for step in steps or []:
            step["match"] = {"resource": resource}
        emulator.faults(steps=steps, mode=mode)
        t.http(label, p, get("/oauth2/token?resource=" + pct(resource)))
        emulator.faults()
    t.http("after the faults: the first key, from the cache", p, get(tok))

    # Connection limits, on an agent of their own.
    lim = agent_factory(emulator, config=dict(FAST, limits={"header_timeout_seconds": 1, "max_connections": 1}))
    masks.add(lim.port, "<port3>")
    masks.add(lim.health_port, "<health_port3>")
    t.http("incomplete head: header timeout (408)", lim.port, b"GET /oauth2/token HTTP/1.1\r\nHost: localhost\r\n")
    wait_open_connections(lim, 0)
    with socket.create_connection(("127.0.0.1", lim.port)):
        wait_open_connections(lim, 1)
        t.http("beyond max_connections (503)", lim.port, get(tok))

    # Deadline and shedding, on an agent with one upstream slot and a queue of one:
    # A holds the slot (IMDS hangs), B waits in the queue, C finds it full.
    shed = agent_factory(emulator, config=dict(FAST, budget={"max_concurrent": 1, "max_queue": 1},
                                               limits={"caller_deadline_seconds": 3},
                                               retry={"max_attempts": 1}, imds={"timeout_seconds": 30}))
    masks.add(shed.port, "<port4>")
    masks.add(shed.health_port, "<health_port4>")
    emulator.reset()
    emulator.faults(steps=[{"hang": True, "count": 10, "match": {"resource": "https://hang.example/"}}])
    answers = {}

    def ask(name):
        answers[name] = raw_exchange(shed.port, get("/oauth2/token?resource=https%3A%2F%2F" + name + ".example%2F"))

    waiting = [threading.Thread(target=ask, args=("hang",))]
    waiting[0].start()
    wait_for(lambda: emulator.requests()["in_flight"] == 1, what="the hanging IMDS request")
    waiting.append(threading.Thread(target=ask, args=("queued",)))
    waiting[1].start()
    wait_for(lambda: 'mi_agent_upstream_queue_depth{priority="caller"} 1\n'
             in request(shed.health_port, "GET", "/metrics")[2], what="a queued caller")
    t.http("upstream queue full: shed (429)", shed.port, get("/oauth2/token?resource=https%3A%2F%2Fshed.example%2F"))
    for thread in waiting:
        thread.join(timeout=30)
    for label, name in (("the caller deadline, IMDS holding the request (500)", "hang"),
                        ("the caller deadline, still queued (429)", "queued")):
        parsed, rest = answers[name]
        t.parts.append("\n".join([f"### {label}", f"> GET /oauth2/token?resource=https%3A%2F%2F{name}.example%2F HTTP/1.1"]
                                 + [render_response(head, body, masks) for head, body in parsed]))
    emulator.faults()

    check_golden("token_listener.txt", t.render())


def wait_open_connections(agent, n):
    """Until the token listener has `n` open connections (a sync point, not a timing)."""
    line = f'mi_agent_open_connections{{listener="token"}} {n}\n'
    wait_for(lambda: line in request(agent.health_port, "GET", "/metrics")[2], what=line.strip())


# ---------------------------------------------------------------------------
# 2. The health listener.

def test_health_listener(agent_factory, emulator):
    agent = agent_factory(emulator, config=FAST)
    masks = make_masks(emulator, agent)
    t = Transcript(masks)
    h = agent.health_port

    def hget(label, target, method="GET", **kw):
        t.http(label, h, get(target, head="Host: localhost\r\n", method=method), **kw)

    hget("/healthz before any token", "/healthz")
    hget("/readyz", "/readyz")
    hget("/status before any token", "/status")
    tok = agent.port
    for target in ("/oauth2/token?resource=" + ENC_ARM,
                   "/oauth2/token?resource=" + ENC_ARM,
                   "/oauth2/token?resource=https%3A%2F%2Fvault.azure.net&client_id=" + UA_CLIENT_ID,
                   "/oauth2/token?resource=https%3A%2F%2Fstorage.azure.com%2F&mi_res_id=" + pct(UA_RES_ID),
                   "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https%3A%2F%2Fgraph.microsoft.com%2F",
                   "/oauth2/token?resource=" + ENC_ARM + "&client_id=" + UNKNOWN_CLIENT,
                   "/oauth2/token"):
        raw_exchange(tok, get(target))
    emulator.faults(mode={"kind": "fail_all", "status": 500, "match": {"resource": "https://fails.example/"}})
    raw_exchange(tok, get("/oauth2/token?resource=https%3A%2F%2Ffails.example%2F"))
    emulator.faults()
    raw_exchange(tok, get("/oauth2/other"))

    hget("/healthz", "/healthz")
    hget("/readyz after tokens", "/readyz")
    hget("/status", "/status")
    hget("/status?entries=all", "/status?entries=all")
    hget("/status with another query", "/status?entries=some")
    hget("/metrics", "/metrics", body_normalizer=normalize_metrics)
    hget("unknown path", "/nope")
    hget("root", "/")
    hget("POST /status", "/status", method="POST")
    hget("HEAD /healthz", "/healthz", method="HEAD")
    t.http("oversize header", h, get("/healthz", head="Host: localhost\r\nX-Pad: " + "a" * 9000 + "\r\n"))
    t.http("garbage", h, b"GARBAGE\r\n\r\n")

    check_golden("health_listener.txt", t.render())


# ---------------------------------------------------------------------------
# 3. The command line.

def run_cli(args, masks, label):
    """One CLI run. Commands that never reach the agent get masks without this
    run's ports, so an ephemeral port equal to 50342 cannot alter --help."""
    env = agent_env()
    # Wide enough that no line of `status` is cut where timings vary (test_cli checks 80 columns).
    env["COLUMNS"] = "120"
    r = subprocess.run(agent_command(*args), capture_output=True, timeout=60, env=env, stdin=subprocess.DEVNULL)
    out = normalize_cli(r.stdout.decode("utf-8", "replace"), masks)
    err = normalize_cli(r.stderr.decode("utf-8", "replace"), masks)
    shown = " ".join(masks.apply(a) for a in args)
    return f"### {label}\n$ mi-agent {shown}\nexit {r.returncode}\n--- stdout\n{out}--- stderr\n{err}--- end"


_CLI_RULES = [
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"), "<iso-time>"),
    (re.compile(r"eyJ[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]+\.[A-Za-z0-9_\-]*"), "<token>"),
    (re.compile(r'"(\w+_epoch|expires_on)"(\s*):(\s*)\d+'), r'"\1"\2:\3<epoch>'),
    (re.compile(r'"config_digest"(\s*):(\s*)"[0-9a-f]*"'), r'"config_digest"\1:\2"<digest>"'),
    (re.compile(r"^(mi-agent \S+, .*\bup )\w+$", re.M), r"\1<dur>"),
    (re.compile(r"^config [0-9a-f]+, ", re.M), "config <digest>, "),
    (re.compile(r"latency p50 \d+ ms p99 \d+ ms"), "latency p50 <n> ms p99 <n> ms"),
    (re.compile(r"(Failed to connect to .* after )\d+ ms"), r"\1<n> ms"),  # libcurl's message
    (re.compile(r'"(expires_on|not_before)"\s*:\s*"\d+"'), r'"\1": "<epoch>"'),
    (re.compile(r'"(ext_expires_in|expires_in)"\s*:\s*"\d+"'), r'"\1": "<n>"'),
    (re.compile(r'"(uptime_seconds|age_seconds|expires_in_seconds|refresh_in_seconds|next_refresh_in_seconds|'
                r'last_refresh_ago_seconds|idle_seconds|p50|p99)"(\s*):(\s*)-?\d+(\.\d+)?'), r'"\1"\2:\3<n>'),
]


def normalize_cli(text, masks):
    for rx, repl in _CLI_RULES:
        text = rx.sub(repl, text)
    return masks.apply(text)


def test_cli(agent_factory, emulator):
    agent = agent_factory(emulator, config=FAST)
    masks = make_masks(emulator, agent)
    tmp = tempfile.mkdtemp(prefix="mi-golden-")
    masks.add(tmp, "<tmp>")
    good = os.path.join(tmp, "good.json")
    with open(good, "w") as f:
        json.dump({"port": 50342, "imds": {"timeout_seconds": 3}, "cache": {"max_keys": 100}}, f)
    bad_key = os.path.join(tmp, "bad-key.json")
    with open(bad_key, "w") as f:
        json.dump({"port": 50342, "cahce": {}}, f)
    bad_value = os.path.join(tmp, "bad-value.json")
    with open(bad_value, "w") as f:
        json.dump({"port": 70000, "retry": {"max_attempts": 0}}, f)
    bad_json = os.path.join(tmp, "bad-json.json")
    with open(bad_json, "w") as f:
        f.write('{"port": 50342,')
    missing = os.path.join(tmp, "missing.json")

    # A lifetime whose "EXPIRES IN" reads the same a second later ("1d01h", 91800 s less a few).
    emulator.admin("POST", "config", {"lifetime": 91800})
    raw_exchange(agent.port, get("/oauth2/token?resource=" + ENC_ARM))
    raw_exchange(agent.port, get("/oauth2/token?resource=https%3A%2F%2Fvault.azure.net&client_id=" + UA_CLIENT_ID))

    health = f"127.0.0.1:{agent.health_port}"
    port = str(agent.port)
    dead = str(free_port())
    masks.add(dead, "<free_port>")
    runs = [
        ("help", ["--help"]),
        ("version", ["--version"]),
        ("check-config, good file", ["--check-config", good]),
        ("check-config, unknown key", ["--check-config", bad_key]),
        ("check-config, bad values", ["--check-config", bad_value]),
        ("check-config, bad JSON", ["--check-config", bad_json]),
        ("check-config, missing file", ["--check-config", missing]),
        ("check-config, no argument", ["--check-config"]),
        ("status", ["status", "--health", health]),
        ("status --json", ["status", "--health", health, "--json"]),
        ("status, nothing listening", ["status", "--health", f"127.0.0.1:{dead}"]),
        ("token, nothing listening", ["token", "--resource", "https://management.azure.com/", "--port", dead]),
        ("token, redacted", ["token", "--resource", "https://management.azure.com/", "--port", port]),
        ("token --show-token", ["token", "--resource", "https://management.azure.com/", "--port", port,
                                "--show-token"]),
        ("token, client id", ["token", "--resource", "https://vault.azure.net", "--client-id", UA_CLIENT_ID,
                              "--port", port]),
        ("token, unknown identity", ["token", "--resource", "https://management.azure.com/", "--client-id",
                                     UNKNOWN_CLIENT, "--port", port]),
        ("token, malformed client id", ["token", "--resource", "https://management.azure.com/", "--client-id",
                                        "not-a-guid", "--port", port]),
        ("token without --resource", ["token", "--port", port]),
        ("token with two selectors", ["token", "--resource", "https://management.azure.com/", "--client-id",
                                      UA_CLIENT_ID, "--object-id", UA_OBJECT_ID]),
        ("unknown option", ["--bogus"]),
        ("unknown command", ["bogus"]),
        ("--port without a value", ["--port"]),
        ("--port out of range", ["--port", "70000", "--check-config", good]),
        ("--log-level bad", ["--log-level", "loud", "--check-config", good]),
        ("status --bogus", ["status", "--bogus"]),
    ]
    local = Masks()
    local.add(tmp, "<tmp>")
    parts = [run_cli(args, masks if args[0] in ("status", "token") else local, label) for label, args in runs]
    emulator.faults(mode={"kind": "fail_all", "status": 500, "match": {"resource": "https://fails.example/"}})
    raw_exchange(agent.port, get("/oauth2/token?resource=https%3A%2F%2Ffails.example%2F"))
    parts.append(run_cli(["status", "--health", health], masks, "status with a failing key"))
    check_golden("cli.txt", "\n\n".join(parts) + "\n")
