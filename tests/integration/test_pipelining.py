"""Pipelining on one connection against the real agent: far more cached answers
than the agent buffers per connection (256 KiB), sent in one write while the
client reads, are all answered, in request order (issue #11, item 3)."""

import json
import socket
import threading
import time

from conftest import ARM

VAULT = "https://vault.azure.net"
REQUESTS = 10000


def read_responses(sock, count, deadline):
    """Reads `count` Content-Length-framed responses; returns [(status, body)]."""
    buf = bytearray()
    out = []
    pos = 0
    while len(out) < count and time.monotonic() < deadline:
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        buf += chunk
        while len(out) < count:
            end = buf.find(b"\r\n\r\n", pos)
            if end < 0:
                break
            head = bytes(buf[pos:end]).decode("latin-1").split("\r\n")
            length = 0
            for line in head[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(buf) < end + 4 + length:
                break
            out.append((int(head[0].split()[1]), bytes(buf[end + 4:end + 4 + length])))
            pos = end + 4 + length
        if pos > 1 << 20:  # keep the buffer small
            del buf[:pos]
            pos = 0
    return out


def test_ten_thousand_pipelined_cache_hits_on_one_connection(agent_factory, emulator):
    agent = agent_factory(emulator, config={"prefetch": [{"resource": ARM}, {"resource": VAULT}]})
    fetched = emulator.count()
    resources = [ARM if i % 2 == 0 else VAULT for i in range(REQUESTS)]
    data = b"".join(f"GET /oauth2/token?resource={r} HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\n\r\n".encode()
                    for r in resources)
    with socket.create_connection(("127.0.0.1", agent.port), timeout=30) as sock:
        # One write from another thread: the agent answers while we still send.
        writer = threading.Thread(target=sock.sendall, args=(data,), daemon=True)
        writer.start()
        answers = read_responses(sock, REQUESTS, deadline=time.monotonic() + 120)
        writer.join(timeout=30)
    assert len(answers) == REQUESTS, f"only {len(answers)} of {REQUESTS} answered"
    for i, (status, body) in enumerate(answers):
        assert status == 200, (i, status, body[:200])
        assert json.loads(body)["resource"] == resources[i], f"answer {i} out of order"
    assert emulator.count() == fetched, "cache hits went to IMDS"
