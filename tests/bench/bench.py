#!/usr/bin/python3
"""mi-agent vs nginx proxy_cache, side by side on one machine (issue #7).

Started by tests/bench/run.sh (which installs the tools and builds the
binaries); usable on its own with the paths given as options. Standard library
only. Prints figures and writes a report; never decides pass/fail for CI.

Phases (every loop is bounded in time and count; every process this script
starts is stopped on exit, including on SIGINT/SIGTERM):
  1. the IMDS emulator (upstream), mi-agent and nginx (proxy_cache peer plus a
     fixed-body "loopback floor" server) on free loopback ports;
  2. cached-token throughput: wrk -t1 against each server at several
     connection counts, server on one core and wrk on another, medians of a few
     repetitions; server CPU time per request from /proc/PID/stat, RSS;
  3. cold burst: N concurrent requests for one uncached key while the emulator
     answers after a fixed delay: upstream calls and client latency;
  4. memory: a fresh mi-agent idle, with 1,000 cached tokens, with 10,000
     open idle connections;
  5. start-to-ready of mi-agent without prefetch;
  (authz, only when asked: --phases authz) the cost of per-caller authorization
     (issue #13): mi-agent with "authorization" off and with enforce and
     --authz-rules uid-only rules (the matching one last), interleaved, at 64
     keep-alive connections and with a new connection per request;
  6. results/latest.md, results/latest.json, results/latest.png (gnuplot).
"""

import argparse
import datetime
import http.client
import json
import os
import re
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
RESOURCE = "https://management.azure.com/"
RESOURCE_Q = "https%3A%2F%2Fmanagement.azure.com%2F"
TOKEN_PATH = "/oauth2/token?resource=" + RESOURCE_Q

# Issue #7 targets (measured and reported, never asserted).
TARGET_CPU_RATIO_64 = 0.4
TARGET_RPS_RATIO = 2.0
TARGET_BURST_SLACK_MS = 5.0
BURST_SPREAD_MS = 10.0  # a client that took longer to send the burst was preempted
TARGET_RSS_1000_MB = 8.0
TARGET_RSS_10K_MB = 64.0
TARGET_READY_MS = 50.0
TARGET_AUTHZ_KEEPALIVE = 1.05  # issue #13: enforce + 10 rules vs off, CPU per cached request, 64 connections
TARGET_AUTHZ_NEWCONN = 1.5     # issue #13: a new connection per request, uid-only rules vs off


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---------------------------------------------------------------------------
# Processes


class Procs:
    """Every process we start, in its own session, stopped by stop_all()."""

    def __init__(self, workdir, pidfile):
        self.workdir = workdir
        self.pidfile = pidfile
        self.live = []

    def start(self, name, argv, cpu=None, env=None):
        if cpu is not None:
            argv = ["taskset", "-c", str(cpu)] + argv  # taskset execs: same pid
        logf = open(os.path.join(self.workdir, name + ".log"), "ab")
        p = subprocess.Popen(argv, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, env=env)
        logf.close()
        p.bench_name = name
        self.live.append(p)
        with open(self.pidfile, "a") as f:
            f.write(f"{p.pid}\n")
        return p

    def stop(self, p, sig=signal.SIGTERM, timeout=5.0):
        if p.poll() is None:
            try:
                os.killpg(p.pid, sig)  # the session we created for it (nginx: master + workers)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(5)
        else:
            # The leader is gone; its group (nginx workers) may not be.
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if p in self.live:
            self.live.remove(p)

    def stop_all(self):
        for p in list(reversed(self.live)):
            self.stop(p)


def logtail(workdir, name, n=15):
    try:
        with open(os.path.join(workdir, name + ".log"), errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_until(pred, timeout, what, interval=0.01, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout}s waiting for {what}")


def http_get(port, target, headers=None, method="GET", body=None, timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, target, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


# ---------------------------------------------------------------------------
# /proc


def tree_pids(root):
    """root and all its descendants (nginx: master, worker, cache manager/loader)."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
        except OSError:
            continue
        ppid = int(st[st.rindex(")") + 2:].split()[1])
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo and len(out) < 1000:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def cpu_times(pids):
    """(utime, stime) of the live pids, seconds (children that already exited are not counted)."""
    user = sys_ = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                st = f.read()
        except OSError:
            continue
        fields = st[st.rindex(")") + 2:].split()
        user += int(fields[11])  # utime (field 14)
        sys_ += int(fields[12])  # stime (field 15)
    return user / CLK_TCK, sys_ / CLK_TCK


def cpu_seconds(pids):
    return sum(cpu_times(pids))


def rss_kb(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE_KB
        except OSError:
            pass
    return total


def mem_detail(pid):
    """{'rss','anon','file','pss'} in KB: file-backed RSS is mostly shared-library pages."""
    out = {"rss": 0, "anon": 0, "file": 0, "pss": 0}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "RssAnon", "RssFile"):
                    out[{"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file"}[k]] = int(v.split()[0])
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    out["pss"] = int(line.split()[1])
    except OSError:
        pass
    return out


def fd_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "?"


# ---------------------------------------------------------------------------
# wrk

_UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def _ms(text):
    m = re.match(r"([\d.]+)(us|ms|s)$", text)
    return float(m.group(1)) * _UNIT[m.group(2)] if m else float("nan")


def parse_wrk(out):
    r = {"requests": 0, "rps": 0.0, "p50_ms": float("nan"), "p99_ms": float("nan"), "non2xx": 0,
         "sock_errors": 0}
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    if m:
        r["requests"] = int(m.group(1))
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        r["rps"] = float(m.group(1))
    for pct, key in (("50", "p50_ms"), ("99", "p99_ms")):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", out, re.M)
        if m:
            r[key] = _ms(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        r["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        r["sock_errors"] = sum(int(x) for x in m.groups())
    return r


def run_wrk(url, conns, duration, cpu, server_pid, headers=()):
    pids = tree_pids(server_pid)
    u0, s0 = cpu_times(pids)
    argv = ["taskset", "-c", str(cpu), "wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--latency",
            "--timeout", "5s", "-H", "Metadata: true"]
    for h in headers:
        argv += ["-H", h]
    argv.append(url)
    t0 = time.monotonic()
    with tempfile.TemporaryFile(mode="w+") as out:
        p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = t0 + duration + 60
        while True:  # bounded wait that keeps wrk's rusage (Popen.wait would discard it)
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                p.returncode = os.waitstatus_to_exitcode(status)
                break
            if time.monotonic() > deadline:
                p.kill()
                pid, status, ru = os.wait4(p.pid, 0)
                p.returncode = -9
                break
            time.sleep(0.05)
        wall = time.monotonic() - t0
        out.seek(0)
        text = out.read()
    pids = tree_pids(server_pid)
    u1, s1 = cpu_times(pids)
    r = parse_wrk(text)
    r["rss_kb"] = rss_kb(pids)
    r["cpu_s"] = (u1 - u0) + (s1 - s0)
    r["cpu_us_per_req"] = r["cpu_s"] * 1e6 / r["requests"] if r["requests"] else float("nan")
    r["sys_share"] = (s1 - s0) / r["cpu_s"] if r["cpu_s"] > 0 else float("nan")
    # How busy each side's core was: near 100% for wrk means the load generator, not
    # the server, set the request rate.
    r["server_core"] = r["cpu_s"] / wall
    r["wrk_core"] = (ru.ru_utime + ru.ru_stime) / wall
    if p.returncode != 0 or not r["requests"]:
        r["wrk_error"] = text.strip()[-300:]
    return r


# ---------------------------------------------------------------------------
# Raw-socket clients (cold burst, idle connections)


def _request_bytes(target):
    return f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nMetadata: true\r\n\r\n".encode()


class _Resp:
    __slots__ = ("buf", "need", "status", "done")

    def __init__(self):
        self.buf = bytearray()
        self.need = None
        self.status = 0
        self.done = False

    def feed(self, data):
        self.buf += data
        if self.need is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return False
            head = bytes(self.buf[:end]).decode("latin-1")
            self.status = int(head.split(" ", 2)[1])
            m = re.search(r"(?im)^content-length:\s*(\d+)", head)
            self.need = end + 4 + (int(m.group(1)) if m else 0)
        self.done = len(self.buf) >= self.need
        return self.done


def connect_many(port, n, batch=500, timeout=30.0):
    """n connected sockets (non-blocking), opened in bounded batches."""
    socks = []
    deadline = time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    try:
        while len(socks) < n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"connect_many: only {len(socks)}/{n} connected in {timeout}s")
            pending = []
            for _ in range(min(batch, n - len(socks))):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.connect_ex(("127.0.0.1", port))
                sel.register(s, selectors.EVENT_WRITE)
                pending.append(s)
            left = set(pending)
            while left and time.monotonic() < deadline:
                for key, _ in sel.select(timeout=1.0):
                    s = key.fileobj
                    sel.unregister(s)
                    left.discard(s)
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        s.close()
                    else:
                        socks.append(s)
            for s in left:
                sel.unregister(s)
                s.close()
        return socks
    except BaseException:
        for s in socks:
            s.close()
        raise
    finally:
        sel.close()


def request_all(socks, target, timeout=30.0):
    """Sends one request on every socket at once; returns per-socket (status, latency_ms)
    (status 0: no complete answer). Arrival is stamped once per poll return, so the
    client's own parsing does not inflate later latencies."""
    req = _request_bytes(target)
    sel = selectors.DefaultSelector()
    resp = [_Resp() for _ in socks]
    done_at = [float("nan")] * len(socks)
    sent = [0.0] * len(socks)
    lat = [float("nan")] * len(socks)
    for i, s in enumerate(socks):
        sel.register(s, selectors.EVENT_READ, i)
    for i, s in enumerate(socks):
        sent[i] = time.perf_counter()
        try:
            s.send(req)
        except OSError:
            resp[i].done = True
    left = sum(1 for r in resp if not r.done)
    deadline = time.monotonic() + timeout
    try:
        while left and time.monotonic() < deadline:
            events = sel.select(timeout=1.0)
            now = time.perf_counter()
            for key, _ in events:
                i = key.data
                if resp[i].done:
                    continue
                try:
                    data = key.fileobj.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    resp[i].done = True
                    sel.unregister(key.fileobj)
                    left -= 1
                elif resp[i].feed(data):
                    lat[i] = (now - sent[i]) * 1000
                    done_at[i] = (now - sent[0]) * 1000
                    left -= 1
    finally:
        sel.close()
    request_all.send_spread_ms = (sent[-1] - sent[0]) * 1000 if sent else 0.0
    request_all.from_start_ms = done_at
    return [(r.status if r.done and r.need is not None and len(r.buf) >= r.need else 0, lat[i])
            for i, r in enumerate(resp)]


# ---------------------------------------------------------------------------
# Servers


NGINX_CONF = """\
# Generated by tests/bench/bench.py: nginx as the fair peer of mi-agent.
{user}
daemon off;
master_process on;
worker_processes 1;
worker_rlimit_nofile 65536;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;

events {{
    worker_connections 20000;
}}

http {{
    access_log off;
    server_tokens off;
    tcp_nodelay on;
    keepalive_timeout 600s;
    keepalive_requests 100000000;   # mi-agent has no per-connection request cap
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy_temp;
    fastcgi_temp_path {prefix}/fastcgi_temp;
    uwsgi_temp_path {prefix}/uwsgi_temp;
    scgi_temp_path {prefix}/scgi_temp;

    upstream imds {{
        server 127.0.0.1:{emu_port};
        keepalive 16;
    }}

    proxy_cache_path {prefix}/cache levels=1:2 keys_zone=tokens:10m max_size=256m inactive=1d
                     use_temp_path=off;
{open_file_cache}

    # The peer: the legacy token API in front of IMDS with a token cache.
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location = /oauth2/token {{
            default_type application/json;
            if ($http_metadata != "true") {{
                return 400 '{{"error":"bad_request_102","error_description":"Required metadata header not specified"}}';
            }}
            proxy_pass http://imds/metadata/identity/oauth2/token?api-version={api_version}&$args;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Metadata "true";
            proxy_cache tokens;
            proxy_cache_key "$arg_resource|$arg_client_id|$arg_object_id|$arg_msi_res_id|$arg_mi_res_id";
            proxy_cache_lock on;
            proxy_cache_lock_timeout 30s;
            proxy_cache_lock_age 30s;
            proxy_cache_valid 200 {cache_valid}s;
            proxy_ignore_headers Cache-Control Expires Set-Cookie Vary;
        }}
    }}

    # The loopback floor: a fixed token-sized body, no upstream, no cache.
    server {{
        listen 127.0.0.1:{floor_port} backlog=4096;
        location / {{
            default_type application/json;
            return 200 '{floor_body}';
        }}
    }}
}}
"""


class Bench:
    def __init__(self, args):
        self.a = args
        self.work = tempfile.mkdtemp(prefix="mi-bench-")
        self.procs = Procs(self.work, args.pidfile or os.path.join(self.work, "pids"))
        self.res = {"throughput": [], "burst": [], "memory": {}, "ready": {}, "authz": [], "notes": []}
        self.agent_cfg = None

    # --- process start-up ------------------------------------------------------

    def start_emulator(self):
        pf = os.path.join(self.work, "emulator.port")
        self.emu = self.procs.start("emulator", [
            self.a.emulator, "--port", "0", "--port-file", pf, "--token-bytes", str(self.a.token_bytes),
            "--lifetime", str(self.a.lifetime)], cpu=self.a.client_cpu)
        wait_until(lambda: os.path.exists(pf) and open(pf).read().strip(), 10, "emulator port file",
                   proc=self.emu)
        self.emu_port = int(open(pf).read().strip())
        self.emu_url = f"http://127.0.0.1:{self.emu_port}/metadata/identity/oauth2/token"
        st, body = http_get(self.emu_port, "/metadata/identity/oauth2/token?api-version=2018-02-01&resource="
                            + RESOURCE_Q, {"Metadata": "true"})
        if st != 200:
            raise RuntimeError(f"emulator answered {st}: {body[:200]!r}")
        self.token_body = body
        log(f"emulator on {self.emu_port}, token body {len(body)} bytes")

    def emu_admin(self, method, path, body=None):
        st, data = http_get(self.emu_port, path, method=method,
                            body=json.dumps(body) if body is not None else None,
                            headers={"Content-Type": "application/json"} if body is not None else None)
        if st != 200:
            raise RuntimeError(f"emulator {method} {path}: {st} {data[:200]!r}")
        return json.loads(data)

    def emu_count(self):
        return self.emu_admin("GET", "/admin/requests?limit=0")["count"]

    def write_agent_config(self, port, health_port, extra=None):
        cfg = {
            "port": port,
            "listen": ["127.0.0.1"],
            "health": [f"127.0.0.1:{health_port}"],
            "imds": {"endpoint": self.emu_url},
            # The memory phase fetches 1,000 tokens; the default IMDS budget (5/s)
            # would make that take minutes. Not on any cached-request path.
            "budget": {"rate_per_second": 1000, "burst": 1000, "max_concurrent": 4, "max_queue": 100000},
            "limits": {"max_connections": 20000, "idle_timeout_seconds": 600, "header_timeout_seconds": 600,
                       "max_waiters": 100000},
            "cache": {"max_keys": 20000},
            "log": {"level": "warning", "format": "text"},
        }
        cfg.update(extra or {})
        self.agent_cfg = cfg
        path = os.path.join(self.work, f"agent-{port}.json")
        with open(path, "w") as f:
            json.dump(cfg, f, indent=1)
        return path

    def start_agent(self, name="mi-agent", binary=None, extra=None):
        port, hport = free_port(), free_port()
        cfg = self.write_agent_config(port, hport, extra)
        p = self.procs.start(name, [binary or self.a.agent, "--config", cfg], cpu=self.a.server_cpu)
        wait_until(lambda: self._ready(hport), 10, f"{name} /readyz", proc=p)
        return p, port, hport

    @staticmethod
    def _ready(hport):
        try:
            return http_get(hport, "/readyz", timeout=1)[0] == 200
        except OSError:
            return False

    def start_nginx(self):
        prefix = os.path.join(self.work, "nginx")
        for d in ("cache", "client_body", "proxy_temp", "fastcgi_temp", "uwsgi_temp", "scgi_temp", "logs"):
            os.makedirs(os.path.join(prefix, d), exist_ok=True)
        self.nginx_port, self.floor_port = free_port(), free_port()
        body = self.token_body.decode()
        if "'" in body or "\\" in body or "$" in body:
            raise RuntimeError("token body not embeddable in nginx return")
        user = ""
        if os.geteuid() == 0:
            # The master runs as root; keep the worker on the same user so it can use the temp dir.
            import grp
            import pwd
            user = f"user {pwd.getpwuid(0).pw_name} {grp.getgrgid(0).gr_name};"
        conf = NGINX_CONF.format(user=user, prefix=prefix, emu_port=self.emu_port, port=self.nginx_port,
                                 floor_port=self.floor_port, api_version="2018-02-01",
                                 cache_valid=max(60, self.a.lifetime - 300), floor_body=body,
                                 open_file_cache=("    # --nginx-open-file-cache: keep cache files open (a hit then costs\n"
                                                  "    # recv + 2 pread + writev instead of also open/fstat/close).\n"
                                                  "    open_file_cache max=10000 inactive=60s;\n"
                                                  "    open_file_cache_valid 60s;")
                                 if self.a.nginx_open_file_cache else "")
        path = os.path.join(prefix, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        t = subprocess.run([self.a.nginx, "-t", "-p", prefix + "/", "-c", path, "-e", prefix + "/error.log"],
                           capture_output=True, text=True, timeout=30)
        if t.returncode != 0:
            raise RuntimeError("nginx -t failed:\n" + t.stdout + t.stderr)
        self.nginx = self.procs.start("nginx", [self.a.nginx, "-p", prefix + "/", "-c", path, "-e",
                                                prefix + "/error.log"], cpu=self.a.server_cpu)
        wait_until(lambda: port_open(self.nginx_port) and port_open(self.floor_port), 10, "nginx ports",
                   proc=self.nginx)
        log(f"nginx on {self.nginx_port} (proxy_cache), {self.floor_port} (floor), pids {tree_pids(self.nginx.pid)}")

    # --- phases ----------------------------------------------------------------------

    def throughput(self):
        a = self.a
        self.agent, self.agent_port, _ = self.start_agent()
        self.start_nginx()
        servers = [
            ("mi-agent", self.agent, f"http://127.0.0.1:{self.agent_port}{TOKEN_PATH}"),
            ("nginx", self.nginx, f"http://127.0.0.1:{self.nginx_port}{TOKEN_PATH}"),
            ("floor", self.nginx, f"http://127.0.0.1:{self.floor_port}/oauth2/token"),
        ]
        if a.baseline_agent:
            # Another mi-agent build (e.g. the previous commit) in the same interleaved runs:
            # the before/after figure for a change, free of run-to-run drift.
            base, base_port, _ = self.start_agent("baseline", a.baseline_agent)
            servers.insert(1, ("baseline", base, f"http://127.0.0.1:{base_port}{TOKEN_PATH}"))
        # Warm: first request fills each cache; then a short wrk run each (discarded).
        for name, p, url in servers:
            port = int(url.split(":")[2].split("/")[0])
            st, body = http_get(port, url.split(str(port), 1)[1], {"Metadata": "true"})
            if st != 200:
                raise RuntimeError(f"{name} warm-up answered {st}: {body[:200]!r}")
            run_wrk(url, 16, 1, a.client_cpu, p.pid)
        upstream_before = self.emu_count()
        runs = {}
        for conns in a.conns:
            for rep in range(a.reps):
                for name, p, url in servers:  # interleaved, so drift hits all servers alike
                    r = run_wrk(url, conns, a.duration, a.client_cpu, p.pid)
                    runs.setdefault((name, conns), []).append(r)
                    log(f"c={conns:<5} rep {rep + 1}/{a.reps} {name:<8} {r['rps']:>9.0f} req/s  "
                        f"p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  "
                        f"cpu {r['cpu_us_per_req']:.2f} us/req  cores srv {r['server_core'] * 100:.0f}% "
                        f"wrk {r['wrk_core'] * 100:.0f}%  err {r['non2xx'] + r['sock_errors']}"
                        + (f"  wrk: {r['wrk_error']}" if r.get("wrk_error") else ""))
        self.res["throughput_upstream_calls"] = self.emu_count() - upstream_before
        for (name, conns), rs in runs.items():
            med = {k: statistics.median([r[k] for r in rs])
                   for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req", "sys_share", "rss_kb", "server_core",
                             "wrk_core")}
            med["errors"] = sum(r["non2xx"] + r["sock_errors"] for r in rs)
            med["requests"] = sum(r["requests"] for r in rs)
            self.res["throughput"].append({"server": name, "conns": conns, **med, "runs": rs})

    def authz_policy(self):
        """--authz-rules uid-only rules, the one matching this process last, so every
        request walks all of them (the worst case for a linear policy)."""
        n = max(1, self.a.authz_rules)
        rules = [{"name": f"other-{i}", "callers": {"uids": [40000 + i]},
                  "identities": [{"client_id": f"00000000-0000-4000-8000-{i:012d}"}],
                  "resources": [f"https://other-{i}.example/"]} for i in range(n - 1)]
        rules.append({"name": "bench", "callers": {"uids": [os.geteuid()]}, "identities": ["default"],
                      "resources": [RESOURCE]})
        return {"authorization": {"mode": "enforce", "rules": rules}}

    def authz(self):
        """Cost of authorization: off vs enforce, same binary, interleaved runs."""
        a = self.a
        variants = [("authz-off", {}), ("authz-enforce", self.authz_policy())]
        servers = []
        for name, extra in variants:
            p, port, _ = self.start_agent(name, extra=extra)
            url = f"http://127.0.0.1:{port}{TOKEN_PATH}"
            st, body = http_get(port, TOKEN_PATH, {"Metadata": "true"})
            if st != 200:
                raise RuntimeError(f"{name} warm-up answered {st}: {body[:200]!r}")
            run_wrk(url, 16, 1, a.client_cpu, p.pid)
            servers.append((name, p, url))
        modes = [("keep-alive", 64, ()), ("new connection per request", 16, ("Connection: close",))]
        runs = {}
        for rep in range(a.reps):
            for mode, conns, headers in modes:
                for name, p, url in servers:
                    r = run_wrk(url, conns, a.duration, a.client_cpu, p.pid, headers)
                    runs.setdefault((mode, conns, name), []).append(r)
                    log(f"authz {mode:<27} c={conns:<3} rep {rep + 1}/{a.reps} {name:<13} {r['rps']:>8.0f} req/s  "
                        f"cpu {r['cpu_us_per_req']:.2f} us/req  err {r['non2xx'] + r['sock_errors']}"
                        + (f"  wrk: {r['wrk_error']}" if r.get("wrk_error") else ""))
        for name, p, _ in servers:
            self.procs.stop(p)
        out = []
        for (mode, conns, name), rs in runs.items():
            med = {k: statistics.median([r[k] for r in rs]) for k in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req")}
            med["errors"] = sum(r["non2xx"] + r["sock_errors"] for r in rs)
            out.append({"mode": mode, "conns": conns, "server": name, **med, "runs": rs})
        self.res["authz"] = out

    def _authz_md(self, md):
        a = self.a
        rows = self.res.get("authz") or []
        if not rows:
            return
        md.append(f"## Authorization cost: off vs enforce with {a.authz_rules} uid-only rules (issue #13)\n")
        md.append("The same binary twice, runs interleaved; the rule that matches the caller is the last one. "
                  "`new connection per request`: wrk with `Connection: close` (connect, one request, close).\n")
        md.append("| mode | conns | server | req/s | p50 ms | p99 ms | CPU µs/req | errors |")
        md.append("|---|---:|---|---:|---:|---:|---:|---:|")
        for r in rows:
            md.append(f"| {r['mode']} | {r['conns']} | {r['server']} | {r['rps']:.0f} | {r['p50_ms']:.3f} | "
                      f"{r['p99_ms']:.3f} | {r['cpu_us_per_req']:.2f} | {r['errors']} |")
        md.append("")

    def cold_burst(self):
        a = self.a
        self.emu_admin("POST", "/admin/config", {"delay_ms": a.burst_delay_ms})
        try:
            targets = [("mi-agent", self.agent_port, "/oauth2/token"), ("nginx", self.nginx_port, "/oauth2/token")]
            for rep in range(a.reps):
                for name, port, path in targets:
                    res = f"https://cold-burst-{rep}-{name}-{int(time.time() * 1000)}.example/"
                    target = f"{path}?resource={res.replace(':', '%3A').replace('/', '%2F')}"
                    socks = connect_many(port, a.burst)
                    try:
                        time.sleep(0.2)  # let the server accept them all before the burst
                        before = self.emu_count()
                        out = request_all(socks, target, timeout=30)
                    finally:
                        for s in socks:
                            s.close()
                    time.sleep(0.2)
                    reqs = self.emu_admin("GET", "/admin/requests?limit=1")
                    calls = reqs["count"] - before
                    # The emulator's own arrival-to-answer time for the (last) upstream call:
                    # what the client saw beyond it was spent in the proxy or on the way.
                    emu_ms = float(reqs["log"][-1].get("latency_ms", "nan")) if reqs.get("log") else float("nan")
                    ok = [lat for st, lat in out if st == 200]
                    ok_start = [t for (st, _), t in zip(out, request_all.from_start_ms) if st == 200]
                    row = {"server": name, "rep": rep, "requests": len(out), "ok": len(ok),
                           "send_spread_ms": request_all.send_spread_ms, "upstream_ms": emu_ms,
                           "p50_from_start_ms": statistics.median(ok_start) if ok_start else float("nan"),
                           "errors": len(out) - len(ok), "upstream_calls": calls,
                           "min_ms": min(ok) if ok else float("nan"),
                           "p50_ms": statistics.median(ok) if ok else float("nan"),
                           "max_ms": max(ok) if ok else float("nan")}
                    self.res["burst"].append(row)
                    log(f"cold burst {name:<8} rep {rep + 1}: {len(ok)}/{len(out)} ok, upstream calls {calls}, "
                        f"upstream {emu_ms:.0f} ms, min {row['min_ms']:.1f} ms, p50 {row['p50_ms']:.1f} ms, max {row['max_ms']:.1f} ms")
        finally:
            self.emu_admin("POST", "/admin/config", {"delay_ms": 0})

    def memory(self):
        a = self.a
        p, port, _ = self.start_agent("mi-agent-mem")
        mem = self.res["memory"]
        time.sleep(0.5)
        mem["idle_kb"] = rss_kb([p.pid])
        mem["idle_detail"] = mem_detail(p.pid)
        log(f"memory: idle {mem['idle_kb'] / 1024:.1f} MB")
        # 1,000 distinct resources, each requested once (bounded by a deadline).
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        before = self.emu_count()
        bad = 0
        deadline = time.monotonic() + 120
        for i in range(a.tokens):
            if time.monotonic() > deadline:
                self.res["notes"].append(f"memory: token fill stopped at {i} after 120 s")
                break
            conn.request("GET", f"/oauth2/token?resource=https%3A%2F%2Fbench-{i}.example%2F",
                         headers={"Metadata": "true"})
            r = conn.getresponse()
            r.read()
            bad += r.status != 200
        conn.close()
        time.sleep(0.5)
        mem["tokens"] = a.tokens
        mem["token_errors"] = bad
        mem["token_upstream_calls"] = self.emu_count() - before
        mem["tokens_kb"] = rss_kb([p.pid])
        mem["tokens_detail"] = mem_detail(p.pid)
        log(f"memory: {a.tokens} tokens ({bad} errors, {mem['token_upstream_calls']} upstream calls) "
            f"{mem['tokens_kb'] / 1024:.1f} MB")
        # 10,000 idle connections.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        n = a.idle_conns
        if soft < n + 100:
            mem["idle_conns_skipped"] = f"ulimit -n is {soft}; need {n + 100}"
            self.res["notes"].append("memory: idle connections skipped: " + mem["idle_conns_skipped"])
            return
        base_fds = fd_count(p.pid)
        socks = connect_many(port, n, timeout=60)
        try:
            wait_until(lambda: fd_count(p.pid) >= base_fds + n, 30, f"mi-agent to accept {n} connections",
                       interval=0.1, proc=p)
            time.sleep(1.0)
            mem["idle_conns"] = n
            mem["idle_conns_kb"] = rss_kb([p.pid])
            mem["idle_conns_detail"] = mem_detail(p.pid)
            log(f"memory: {n} idle connections (never used) {mem['idle_conns_kb'] / 1024:.1f} MB")
            out = request_all(socks, TOKEN_PATH, timeout=60)
            mem["used_conns_ok"] = sum(1 for st, _ in out if st == 200)
            time.sleep(1.0)
            mem["used_conns_kb"] = rss_kb([p.pid])
            mem["used_conns_detail"] = mem_detail(p.pid)
            mem["used_conns_open"] = fd_count(p.pid) - base_fds
            log(f"memory: same {n} connections after one request each "
                f"({mem['used_conns_ok']} ok, {mem['used_conns_open']} still open) {mem['used_conns_kb'] / 1024:.1f} MB")
        finally:
            for s in socks:
                s.close()
        self.procs.stop(p)

    def start_to_ready(self):
        a = self.a
        rows = []
        for i in range(a.ready_runs):
            port, hport = free_port(), free_port()
            cfg = self.write_agent_config(port, hport)
            t_accept = t_ready = cpu_ready = None
            t0 = time.perf_counter()
            p = self.procs.start(f"mi-agent-ready-{i}", [a.agent, "--config", cfg], cpu=a.server_cpu)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and p.poll() is None:
                if t_accept is None:
                    try:
                        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                            t_accept = time.perf_counter() - t0
                    except OSError:
                        time.sleep(0.0002)
                        continue
                try:
                    if http_get(hport, "/readyz", timeout=1)[0] == 200:
                        t_ready = time.perf_counter() - t0
                        cpu_ready = cpu_seconds([p.pid])
                        break
                except OSError:
                    pass
                time.sleep(0.0002)
            self.procs.stop(p)
            rows.append({"accept_ms": t_accept * 1000 if t_accept else float("nan"),
                         "ready_ms": t_ready * 1000 if t_ready else float("nan"),
                         "cpu_ms": cpu_ready * 1000 if cpu_ready is not None else float("nan")})
        # Reference: exec + dynamic loading + exit, no agent start-up (`mi-agent --version`).
        ver = []
        for _ in range(a.ready_runs):
            t0 = time.perf_counter()
            vp = subprocess.Popen(["taskset", "-c", str(a.server_cpu), a.agent, "--version"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _, _, ru = os.wait4(vp.pid, 0)
            vp.returncode = 0
            ver.append({"wall_ms": (time.perf_counter() - t0) * 1000, "cpu_ms": (ru.ru_utime + ru.ru_stime) * 1000})
        acc = [r["accept_ms"] for r in rows]
        rdy = [r["ready_ms"] for r in rows]
        cpu = [r["cpu_ms"] for r in rows]
        self.res["ready"] = {"runs": rows, "accept_median_ms": statistics.median(acc), "accept_max_ms": max(acc),
                             "ready_median_ms": statistics.median(rdy), "ready_max_ms": max(rdy),
                             "cpu_median_ms": statistics.median(cpu), "cpu_max_ms": max(cpu),
                             "version_runs": ver,
                             "version_wall_median_ms": statistics.median(v["wall_ms"] for v in ver),
                             "version_wall_max_ms": max(v["wall_ms"] for v in ver),
                             "version_cpu_median_ms": statistics.median(v["cpu_ms"] for v in ver),
                             "version_cpu_max_ms": max(v["cpu_ms"] for v in ver)}
        log(f"start to ready: port accepting median {statistics.median(acc):.1f} ms, /readyz 200 median "
            f"{statistics.median(rdy):.1f} ms (max {max(rdy):.1f}) over {len(rows)} runs")

    # --- report ------------------------------------------------------------------------

    def row(self, name, conns):
        for r in self.res["throughput"]:
            if r["server"] == name and r["conns"] == conns:
                return r
        return None

    def targets(self):
        out = []
        t = self.res["throughput"]
        if t:
            a64, n64 = self.row("mi-agent", 64), self.row("nginx", 64)
            if a64 and n64:
                ratio = a64["cpu_us_per_req"] / n64["cpu_us_per_req"]
                out.append(("server CPU per cached request ≤ 0.4× nginx at 64 connections",
                            f"{ratio:.2f}× ({a64['cpu_us_per_req']:.1f} vs {n64['cpu_us_per_req']:.1f} µs)",
                            ratio <= TARGET_CPU_RATIO_64))
            ratios = []
            for c in (16, 64, 256):
                ar, nr = self.row("mi-agent", c), self.row("nginx", c)
                if ar and nr and nr["rps"]:
                    ratios.append((c, ar["rps"] / nr["rps"]))
            if ratios:
                worst = min(ratios, key=lambda x: x[1])
                busy = max(self.row("mi-agent", c)["server_core"] for c, _ in ratios)
                caveat = ""
                if busy < 0.8:
                    caveat = (f"; mi-agent's core was at most {busy * 100:.0f}% busy, so req/s was set by CPU "
                              f"contention on the machine, not by the server")
                out.append(("req/s ≥ 2× nginx at 16–256 connections",
                            ", ".join(f"{c}: {r:.2f}×" for c, r in ratios) + f" (worst {worst[1]:.2f}× at {worst[0]})"
                            + caveat,
                            worst[1] >= TARGET_RPS_RATIO))
        b_all = [r for r in self.res["burst"] if r["server"] == "mi-agent"]
        # A burst whose sends spread over more than BURST_SPREAD_MS had its client preempted:
        # its latencies do not describe the server; use the others when there are any.
        b = [r for r in b_all if r["send_spread_ms"] <= BURST_SPREAD_MS] or b_all
        if b:
            calls = sorted({r["upstream_calls"] for r in b_all})
            p50 = statistics.median([r["p50_ms"] for r in b])
            p50s = statistics.median([r["p50_from_start_ms"] for r in b])
            limit = self.a.burst_delay_ms + TARGET_BURST_SLACK_MS
            out.append((f"cold burst: exactly 1 upstream call, p50 ≤ {limit:g} ms",
                        f"upstream calls {calls}, p50 {p50:.1f} ms ({p50s:.1f} ms from burst start; "
                        f"median of {len(b)} bursts"
                        + (f" whose sends took ≤ {BURST_SPREAD_MS:g} ms" if len(b) < len(b_all) else "") + ")",
                        calls == [1] and p50 <= limit))
        m = self.res["memory"]
        if "tokens_kb" in m:
            mb = m["tokens_kb"] / 1024
            d = m.get("tokens_detail", {})
            out.append(("RSS ≤ 8 MB with 1,000 tokens",
                        f"{mb:.1f} MB (anon {d.get('anon', 0) / 1024:.1f} MB, file-backed {d.get('file', 0) / 1024:.1f} MB)",
                        mb <= TARGET_RSS_1000_MB))
        if "idle_conns_kb" in m:
            mb = max(m["idle_conns_kb"], m.get("used_conns_kb", 0)) / 1024
            out.append(("10,000 idle connections, RSS ≤ 64 MB",
                        f"{m['idle_conns_kb'] / 1024:.1f} MB never used, "
                        f"{m.get('used_conns_kb', 0) / 1024:.1f} MB after one request each",
                        mb <= TARGET_RSS_10K_MB))
        az = {(r["mode"], r["server"]): r for r in self.res.get("authz") or []}
        for mode, target, label in (("keep-alive", TARGET_AUTHZ_KEEPALIVE,
                                     f"enforce with {self.a.authz_rules} rules: CPU per cached request ≤ "
                                     f"{TARGET_AUTHZ_KEEPALIVE}× off at 64 keep-alive connections"),
                                    ("new connection per request", TARGET_AUTHZ_NEWCONN,
                                     f"enforce, uid-only rules, a new connection per request: CPU ≤ "
                                     f"{TARGET_AUTHZ_NEWCONN}× off")):
            off, on = az.get((mode, "authz-off")), az.get((mode, "authz-enforce"))
            if off and on and off["cpu_us_per_req"]:
                ratio = on["cpu_us_per_req"] / off["cpu_us_per_req"]
                out.append((label, f"{ratio:.3f}× ({on['cpu_us_per_req']:.2f} vs {off['cpu_us_per_req']:.2f} µs)",
                            ratio <= target))
        r = self.res["ready"]
        if r:
            out.append(("start to ready ≤ 50 ms", f"{r['ready_median_ms']:.1f} ms median, {r['ready_max_ms']:.1f} ms max "
                        f"(CPU {r['cpu_median_ms']:.0f} ms; `--version` alone {r['version_wall_median_ms']:.0f} ms)",
                        r["ready_median_ms"] <= TARGET_READY_MS))
        return out

    def _memory_md(self, md, m):
        a = self.a
        md.append("## mi-agent memory (a fresh process)\n")
        md.append("RSS = anonymous (the agent's own heap and stacks) + file-backed (mostly shared-library "
                  "pages, shared with other processes); PSS splits shared pages among their users.\n")
        md.append("| state | RSS MB | anon MB | file MB | PSS MB |")
        md.append("|---|---:|---:|---:|---:|")
        mb = lambda kb: f"{kb / 1024:.1f}"
        def mrow(label, key):
            d = m.get(key + "_detail", {})
            md.append(f"| {label} | {mb(m[key + '_kb'])} | {mb(d.get('anon', 0))} | {mb(d.get('file', 0))} | "
                      f"{mb(d.get('pss', 0))} |")
        if "idle_kb" in m:
            mrow("idle, no tokens", "idle")
        if "tokens_kb" in m:
            mrow(f"{m['tokens']} distinct resources requested once ({m['token_upstream_calls']} upstream calls, "
                 f"{m['token_errors']} errors)", "tokens")
        if "idle_conns_kb" in m:
            mrow(f"+ {m['idle_conns']} open idle connections, never used", "idle_conns")
            mrow(f"+ the same connections after one request each ({m['used_conns_ok']} ok, "
                 f"{m['used_conns_open']} still open)", "used_conns")
        if "idle_conns_skipped" in m:
            md.append(f"| {a.idle_conns} idle connections | skipped: {m['idle_conns_skipped']} | | | |")
        md.append("")

    def report(self, started, load_start):
        a = self.a
        md = []
        now = datetime.datetime.now().astimezone()
        ver = lambda argv: (subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
                            + subprocess.run(argv, capture_output=True, text=True, timeout=10).stderr).strip().splitlines()
        try:
            agent_ver = ver([a.agent, "--version"])[0]
        except Exception:
            agent_ver = "?"
        try:
            nginx_ver = ver([a.nginx, "-v"])[0]
        except Exception:
            nginx_ver = "?"
        try:
            wrk_ver = ver(["wrk", "--version"])[0].split(" [")[0]
        except Exception:
            wrk_ver = "?"
        rev = self.rev
        md.append("# mi-agent vs nginx proxy_cache: benchmark results\n")
        md.append("Written by `tests/bench/run.sh` (issue #7). Figures only: benchmarks never gate CI.\n")
        md.append("| | |\n|---|---|")
        md.append(f"| date | {now.strftime('%Y-%m-%d %H:%M:%S %Z')} (took {time.monotonic() - started:.0f} s) |")
        md.append(f"| machine | `nproc` = {os.cpu_count()}, {cpu_model()}, kernel {os.uname().release} |")
        md.append(f"| load average | {load_start} at start, {loadavg()} at end |")
        md.append(f"| command | `{a.command}` |")
        md.append(f"| source | `{rev}`; {agent_ver}; {nginx_ver}; {wrk_ver} |")
        md.append(f"| method | server pinned to CPU {a.server_cpu}, wrk (`-t1 --latency`, header `Metadata: true`) "
                  f"and emulator on CPU {a.client_cpu}; {a.duration} s per run, {a.reps} run(s) per row "
                  f"interleaved across servers, median shown; CPU = utime+stime from /proc/PID/stat "
                  f"(nginx: master + worker + cache helpers); RSS after the run (nginx: sum over its processes) |")
        md.append(f"| upstream | imds-emulator, token body {len(self.token_body)} bytes, lifetime {a.lifetime} s; "
                  f"nginx `proxy_cache_valid 200 {max(60, a.lifetime - 300)}s` (lifetime − mi-agent's 5 min margin)"
                  + ("; nginx with `open_file_cache`" if a.nginx_open_file_cache else "; nginx without `open_file_cache`")
                  + " |")
        md.append("")
        if a.noisy_note:
            md.append(f"> {a.noisy_note}\n")

        md.append("## Cached token, steady state\n")
        md.append("`floor` is nginx answering a fixed body of the same size (`return 200 '...'`): "
                  "the loopback floor, no proxying or caching.\n")
        md.append("`server core` and `wrk core`: CPU time / wall time of each side; a `wrk core` near 100% "
                  "means the single-threaded load generator, not the server, limited req/s.\n")
        md.append("| conns | server | req/s | p50 ms | p99 ms | CPU µs/req | of which kernel | server core | wrk core | RSS MB | errors |")
        md.append("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for c in a.conns:
            for name in ("mi-agent", "baseline", "nginx", "floor"):
                r = self.row(name, c)
                if r:
                    md.append(f"| {c} | {name} | {r['rps']:.0f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
                              f"{r['cpu_us_per_req']:.2f} | {r['sys_share'] * 100:.0f}% | {r['server_core'] * 100:.0f}% | "
                              f"{r['wrk_core'] * 100:.0f}% | {r['rss_kb'] / 1024:.1f} | {r['errors']} |")
        md.append(f"\nUpstream calls during the steady-state runs: {self.res.get('throughput_upstream_calls', '?')}.\n")
        md.append("### Ratios mi-agent / nginx (and mi-agent / floor)\n")
        md.append("| conns | req/s | p50 | p99 | CPU/req | RSS | req/s vs floor | CPU/req vs floor |")
        md.append("|---:|---:|---:|---:|---:|---:|---:|---:|")
        q = lambda x, y: f"{x / y:.2f}×" if y else "–"
        for c in a.conns:
            ar, nr, fr = self.row("mi-agent", c), self.row("nginx", c), self.row("floor", c)
            if ar and nr and fr:
                md.append(f"| {c} | {q(ar['rps'], nr['rps'])} | {q(ar['p50_ms'], nr['p50_ms'])} | "
                          f"{q(ar['p99_ms'], nr['p99_ms'])} | {q(ar['cpu_us_per_req'], nr['cpu_us_per_req'])} | "
                          f"{q(ar['rss_kb'], nr['rss_kb'])} | {q(ar['rps'], fr['rps'])} | "
                          f"{q(ar['cpu_us_per_req'], fr['cpu_us_per_req'])} |")
        md.append("")
        if a.baseline_agent:
            md.append(f"### mi-agent / baseline (`{a.baseline_agent}`)\n")
            md.append("| conns | req/s | CPU/req | p99 |")
            md.append("|---:|---:|---:|---:|")
            for c in a.conns:
                ar, br = self.row("mi-agent", c), self.row("baseline", c)
                if ar and br:
                    q3 = lambda x, y: f"{x / y:.3f}×" if y else "–"
                    md.append(f"| {c} | {q3(ar['rps'], br['rps'])} | {q3(ar['cpu_us_per_req'], br['cpu_us_per_req'])} | "
                              f"{q3(ar['p99_ms'], br['p99_ms'])} |")
            md.append("")

        if self.res["burst"]:  # not when --phases left it out
            md.append(f"## Cold burst: {a.burst} concurrent requests, one uncached key, IMDS delay {a.burst_delay_ms} ms\n")
            md.append("Latency of each request from its own send; the client sends the burst over "
                      "`send spread` ms, so late requests join the upstream call already in flight. "
                      "`p50 from burst start` counts from the first send.\n")
            md.append("`upstream ms`: the emulator's own arrival-to-answer time for that call (its 50 ms delay "
                      "plus its scheduling); the rest of a client's latency is the proxy and the network.\n")
            md.append("| server | burst | ok | errors | upstream calls | upstream ms | min ms | p50 ms | max ms | send spread ms | p50 from burst start ms |")
            md.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            for r in self.res["burst"]:
                md.append(f"| {r['server']} | {r['rep'] + 1} | {r['ok']} | {r['errors']} | {r['upstream_calls']} | "
                          f"{r['upstream_ms']:.0f} | {r['min_ms']:.1f} | {r['p50_ms']:.1f} | {r['max_ms']:.1f} | {r['send_spread_ms']:.1f}"
                          + (" (client preempted)" if r["send_spread_ms"] > BURST_SPREAD_MS else "")
                          + f" | {r['p50_from_start_ms']:.1f} |")
            md.append("")

        m = self.res["memory"]
        if m:
            self._memory_md(md, m)
        r = self.res["ready"]
        if r:
            md.append(f"## mi-agent start to ready (no prefetch, {len(r['runs'])} runs)\n")
            md.append("| from exec to | median ms | max ms |")
            md.append("|---|---:|---:|")
            md.append(f"| token port accepting | {r['accept_median_ms']:.1f} | {r['accept_max_ms']:.1f} |")
            md.append(f"| /readyz 200 | {r['ready_median_ms']:.1f} | {r['ready_max_ms']:.1f} |")
            md.append(f"| CPU time used until /readyz 200 (utime+stime) | {r['cpu_median_ms']:.1f} | {r['cpu_max_ms']:.1f} |")
            md.append(f"| reference: `mi-agent --version` exit, wall (exec + dynamic loading only) | "
                      f"{r['version_wall_median_ms']:.1f} | {r['version_wall_max_ms']:.1f} |")
            md.append(f"| reference: `mi-agent --version`, CPU | {r['version_cpu_median_ms']:.1f} | "
                      f"{r['version_cpu_max_ms']:.1f} |")
            md.append("")
        self._authz_md(md)

        md.append("## Targets (issues #7 and #13; measured, not asserted)\n")
        md.append("| target | measured | met |")
        md.append("|---|---|---|")
        for name, measured, ok in self.targets():
            md.append(f"| {name} | {measured} | {'yes' if ok else '**no**'} |")
        md.append("")
        if self.res["notes"]:
            md.append("## Notes\n")
            md.extend(f"* {n}" for n in self.res["notes"])
            md.append("")
        if self.res["throughput"] and os.path.exists(os.path.join(a.out, a.name + ".png")):
            md.append(f"![requests/s and CPU per request vs connections]({a.name}.png)\n")
        return "\n".join(md)

    def plot(self):
        dat = os.path.join(self.work, "plot.dat")
        with open(dat, "w") as f:
            f.write("# conns rps(mi-agent nginx floor) cpu_us(mi-agent nginx floor)\n")
            for c in self.a.conns:
                rows = [self.row(n, c) for n in ("mi-agent", "nginx", "floor")]
                if not all(rows):
                    continue
                f.write(f"{c} " + " ".join(f"{r['rps']:.1f}" for r in rows) + " "
                        + " ".join(f"{r['cpu_us_per_req']:.3f}" for r in rows) + "\n")
        png = os.path.join(self.a.out, self.a.name + ".png")
        xt = ", ".join(f'"{c}" {c}' for c in self.a.conns)
        gp = f"""
set terminal pngcairo size 1200,500 font ",10" noenhanced
set output "{png}"
set multiplot layout 1,2 title "mi-agent vs nginx proxy_cache (cached token, wrk -t1; server on one core)"
set logscale x 2
set xrange [{min(self.a.conns) / 1.5}:{max(self.a.conns) * 1.5}]
set xtics ({xt})
set xlabel "connections"
set grid
set key top left
set yrange [0:*]
set ylabel "requests/s"
set title "throughput"
plot "{dat}" u 1:2 w lp lw 2 pt 7 t "mi-agent", "" u 1:3 w lp lw 2 pt 5 t "nginx proxy_cache", "" u 1:4 w lp dt 2 pt 1 t "nginx fixed body (floor)"
set ylabel "server CPU µs per request (log scale)"
set title "server CPU per request"
set logscale y
set yrange [*:*]
set key top right
plot "{dat}" u 1:5 w lp lw 2 pt 7 t "mi-agent", "" u 1:6 w lp lw 2 pt 5 t "nginx proxy_cache", "" u 1:7 w lp dt 2 pt 1 t "nginx fixed body (floor)"
unset multiplot
"""
        p = subprocess.run([self.a.gnuplot], input=gp, capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            self.res["notes"].append("gnuplot failed: " + p.stderr.strip()[-300:])
            log("gnuplot failed: " + p.stderr.strip())

    def source_rev(self):
        """Commit of the source tree; "-dirty" if tracked files outside results/ differ from it."""
        try:
            git = ["git", "-C", self.a.source]
            rev = subprocess.run(git + ["describe", "--always"], capture_output=True, text=True,
                                 timeout=10).stdout.strip() or "?"
            dirty = subprocess.run(git + ["diff", "--quiet", "HEAD", "--", ".", ":(exclude)tests/bench/results"],
                                   capture_output=True, timeout=10).returncode
            return rev + ("-dirty" if dirty == 1 else "")
        except Exception:
            return "?"

    def run(self):
        started = time.monotonic()
        self.rev = self.source_rev()
        load_start = loadavg()
        os.makedirs(self.a.out, exist_ok=True)
        phases = self.a.phases
        self.start_emulator()
        if "throughput" in phases or "burst" in phases:
            self.throughput() if "throughput" in phases else self._start_peers_only()
        if "burst" in phases:
            self.cold_burst()
        if "memory" in phases:
            self.memory()
        if "ready" in phases:
            self.start_to_ready()
        if "authz" in phases:
            self.authz()
        self.procs.stop_all()
        if self.res["throughput"]:
            self.plot()
        with open(os.path.join(self.a.out, self.a.name + ".json"), "w") as f:
            json.dump({k: v for k, v in self.res.items()}, f, indent=1, default=str)
        text = self.report(started, load_start)
        with open(os.path.join(self.a.out, self.a.name + ".md"), "w") as f:
            f.write(text)
        print("\n" + text)
        n = self.a.name
        log(f"wrote {self.a.out}/{n}.md, {n}.json" + (f", {n}.png" if self.res["throughput"] else ""))

    def _start_peers_only(self):
        self.agent, self.agent_port, _ = self.start_agent()
        self.start_nginx()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agent", required=True, help="mi-agent binary")
    ap.add_argument("--emulator", required=True, help="imds-emulator binary")
    ap.add_argument("--baseline-agent", default="",
                    help="a second mi-agent binary run in the same interleaved throughput runs (before/after)")
    ap.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    ap.add_argument("--gnuplot", default=shutil.which("gnuplot") or "gnuplot")
    ap.add_argument("--source", default=".", help="source tree (for git describe)")
    ap.add_argument("--out", required=True, help="results directory")
    ap.add_argument("--name", default="latest", help="report file names: NAME.md, NAME.png, NAME.json")
    ap.add_argument("--conns", default="1,16,64,256,1024")
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--reps", type=int, default=3, help="runs per row (median)")
    ap.add_argument("--burst", type=int, default=200)
    ap.add_argument("--burst-delay-ms", type=int, default=50)
    ap.add_argument("--tokens", type=int, default=1000)
    ap.add_argument("--idle-conns", type=int, default=10000)
    ap.add_argument("--ready-runs", type=int, default=7)
    ap.add_argument("--token-bytes", type=int, default=1200, help="emulator access_token length (~1.4 KB body)")
    ap.add_argument("--lifetime", type=int, default=86400, help="emulator token lifetime, seconds")
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--phases", default="throughput,burst,memory,ready",
                    help="comma-separated; also: authz (the cost of authorization, issue #13)")
    ap.add_argument("--authz-rules", type=int, default=10, help="rules in the authz phase's enforce policy")
    ap.add_argument("--nginx-open-file-cache", action="store_true",
                    help="add open_file_cache to nginx (a stronger peer than the issue's configuration)")
    ap.add_argument("--pidfile", default="", help="append every started pid here (run.sh's trap reads it)")
    ap.add_argument("--command", default=" ".join(sys.argv), help="command line shown in the report")
    ap.add_argument("--noisy-note", default="", help="a sentence for the report (e.g. shared machine)")
    a = ap.parse_args()
    a.conns = [int(x) for x in a.conns.split(",") if x]
    a.phases = set(a.phases.split(","))
    a.out = os.path.abspath(a.out)
    for flag in ("agent", "emulator"):
        path = getattr(a, flag)
        if not os.access(path, os.X_OK):
            sys.exit(f"bench: --{flag} {path} is not an executable")
        setattr(a, flag, os.path.abspath(path))
    ncpu = os.cpu_count() or 1
    if max(a.server_cpu, a.client_cpu) >= ncpu:
        a.server_cpu, a.client_cpu = 0, min(1, ncpu - 1)
    # Raise our own fd limit (the idle-connection client); children inherit it.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, min(hard, 65536))
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        pass

    b = Bench(a)

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    try:
        b.run()
    except KeyboardInterrupt as e:
        log(f"interrupted ({e}); stopping")
        return 130
    except Exception as e:
        log(f"failed: {e!r}")
        for name in ("emulator", "mi-agent", "nginx"):
            t = logtail(b.work, name)
            if t:
                log(f"--- {name} log tail ---\n{t}")
        log(f"work directory kept: {b.work}")
        b.procs.stop_all()
        return 1
    finally:
        b.procs.stop_all()
    shutil.rmtree(b.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
