"""Tokens stay out of core dumps (Linux). The real agent, run as an unprivileged
user (a temporary one when the tests run as root), holding a token fetched from
the emulator:

* by default it is not dumpable and its core limit is 0: its /proc files belong
  to root, the same user can neither read its /proc/<pid>/environ nor gcore it,
  and a crash leaves no core file;
* --allow-core-dumps keeps it dumpable (the same user may gcore it, a crash
  writes a core);
* either way the cached token lives in memory marked "dd" (never dumped):
  root's gcore and the kernel's core file leave that memory out. Other copies
  (an answer on its way to a caller) may be in a core: not asserted here.
"""

import json
import os
import pwd
import shutil
import signal
import struct
import subprocess
import tempfile

import pytest

from conftest import Agent, token_request, wait_for

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="Linux only")

ASAN = os.environ.get("MI_ASAN") == "1"
CAP_SYS_PTRACE = 19


def has_capability(bit):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) & (1 << bit))
    return False


def yama_allows_same_user_ptrace():
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            return f.read().strip() == "0"
    except FileNotFoundError:
        return True


class User:
    """Who runs the agent and the probes: `prefix` runs a command as them."""

    def __init__(self, uid, gid, prefix):
        self.uid, self.gid, self.prefix = uid, gid, prefix

    def run(self, *args, timeout=120):
        env = dict(os.environ, HOME="/tmp")
        return subprocess.run([*self.prefix, *args], capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL)


@pytest.fixture
def user():
    if os.geteuid() != 0:
        yield User(os.getuid(), os.getgid(), [])
        return
    if not shutil.which("useradd") or not shutil.which("setpriv"):
        pytest.skip("needs useradd and setpriv to run the agent unprivileged")
    name = f"mi-core-test-{os.getpid() % 100000}"
    subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                    "--shell", "/usr/sbin/nologin", name], check=True, capture_output=True)
    try:
        pw = pwd.getpwnam(name)
        yield User(pw.pw_uid, pw.pw_gid,
                   ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--clear-groups", "--"])
    finally:
        subprocess.run(["userdel", name], capture_output=True)
        subprocess.run(["groupdel", name], capture_output=True)  # if userdel left it


@pytest.fixture
def workdir(user):
    """A directory the agent's user may write (cwd: where a crash's core goes)."""
    d = tempfile.mkdtemp(prefix="mi-core-")
    os.chown(d, user.uid, user.gid)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def start(user, emulator, workdir):
    """start(*args, env=None) runs the agent as `user` in `workdir` with the core
    limit raised as far as it goes, and waits until it is ready."""
    agents = []

    def launch(*args, env=None):
        # `exec` all the way down: the Popen pid is the agent's.
        wrapper = ["sh", "-c", 'ulimit -c unlimited 2>/dev/null; cd "$0" && exec "$@"', workdir]
        agent = Agent(emulator, prefix=[*user.prefix, *wrapper], env=env, extra_args=args, wait_ready=False)
        agents.append(agent)
        agent.wait_ready()
        return agent

    yield launch
    for agent in agents:
        if agent.alive():
            agent.stop(signal.SIGKILL)
        os.unlink(agent.config_path)


def fetch_token(agent):
    status, _, body = token_request(agent.port)
    assert status == 200, body
    token = json.loads(body)["access_token"]
    assert len(token) > 100
    return token.encode()


def core_limit(pid):
    with open(f"/proc/{pid}/limits") as f:
        for line in f:
            if line.startswith("Max core file size"):
                return line.split()[4:6]
    raise AssertionError("no core limit in /proc/<pid>/limits")


def dump_excluded_ranges(pid):
    """[(start, end)] of the mappings whose VmFlags include dd."""
    ranges, current = [], None
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(" ", 1)[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = head.split("-")
                current = (int(lo, 16), int(hi, 16))
            elif line.startswith("VmFlags:") and "dd" in line.split()[1:]:
                ranges.append(current)
    return ranges


def find_in_ranges(pid, ranges, needle, max_bytes=1 << 20):
    """The (start, end) ranges whose memory holds `needle` (small ranges only:
    the sanitizers' shadow is dd too, and terabytes long)."""
    found = []
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for lo, hi in ranges:
            if hi - lo > max_bytes:
                continue
            try:
                mem.seek(lo)
                data = mem.read(hi - lo)
            except OSError:  # [vvar] and the like are dd but cannot be read
                continue
            if needle in data:
                found.append((lo, hi))
    return found


def core_loads(path):
    """[(vaddr, memsz, filesz)] of the PT_LOAD segments of an ELF64 core file."""
    with open(path, "rb") as f:
        ident = f.read(64)
        assert ident[:4] == b"\x7fELF" and ident[4] == 2, "not an ELF64 core"
        phoff, = struct.unpack_from("<Q", ident, 32)
        shoff, = struct.unpack_from("<Q", ident, 40)
        phentsize, phnum = struct.unpack_from("<HH", ident, 54)
        if phnum == 0xFFFF:  # PN_XNUM: the count is in section 0's sh_info
            f.seek(shoff + 44)
            phnum, = struct.unpack("<I", f.read(4))
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    loads = []
    for i in range(phnum):
        p_type, _, _, vaddr, _, filesz, memsz, _ = struct.unpack_from("<IIQQQQQQ", table, i * phentsize)
        if p_type == 1:
            loads.append((vaddr, memsz, filesz))
    return loads


def assert_left_out_of_core(core, ranges):
    loads = core_loads(core)
    assert any(filesz > 0 for _, _, filesz in loads), "the core holds no memory at all"
    for vaddr, memsz, filesz in loads:
        for lo, hi in ranges:
            if vaddr < hi and lo < vaddr + memsz:
                assert filesz == 0, f"core holds {filesz} bytes of dump-excluded memory at {lo:#x}"


def kernel_writes_core_files_to_cwd():
    with open("/proc/sys/kernel/core_pattern") as f:
        pattern = f.read().strip()
    return pattern and not pattern.startswith("|") and not pattern.startswith("/")


def cores_in(directory):
    return [os.path.join(directory, n) for n in os.listdir(directory) if n.startswith("core")]


def test_agent_is_not_dumpable_and_refuses_same_user_debuggers(start, user, workdir):
    agent = start()
    token = fetch_token(agent)

    assert core_limit(agent.pid) == ["0", "0"]
    # The kernel hands a non-dumpable process's /proc files to root.
    assert os.stat(f"/proc/{agent.pid}/status").st_uid == 0
    assert user.uid != 0
    r = user.run("cat", f"/proc/{agent.pid}/environ")
    assert r.returncode != 0 and r.stdout == "", r
    if shutil.which("gcore"):
        out = os.path.join(workdir, "gcore")
        r = user.run("gcore", "-o", out, str(agent.pid))
        assert r.returncode != 0, r.stdout + r.stderr
        assert not os.path.exists(f"{out}.{agent.pid}")

    assert agent.alive()
    assert token_request(agent.port)[0] == 200
    assert token not in agent.output().encode()
    assert agent.stop() == 0


@pytest.mark.skipif(not kernel_writes_core_files_to_cwd(), reason="core_pattern does not write to the cwd")
def test_crash_writes_no_core_file(start, workdir):
    agent = start()
    fetch_token(agent)
    agent.send_signal(signal.SIGABRT)  # the default action dumps core
    agent.wait()
    assert cores_in(workdir) == []


def test_allow_core_dumps_keeps_the_process_dumpable(start, user, workdir):
    agent = start("--allow-core-dumps")
    fetch_token(agent)
    assert "core dumps allowed (--allow-core-dumps" in agent.output()
    assert os.stat(f"/proc/{agent.pid}/status").st_uid == user.uid
    r = user.run("cat", f"/proc/{agent.pid}/environ")
    assert r.returncode == 0, r
    assert core_limit(agent.pid)[1] == core_limit(os.getpid())[1]  # the hard limit was left alone
    if shutil.which("gcore") and yama_allows_same_user_ptrace() and not ASAN:
        out = os.path.join(workdir, "gcore")
        r = user.run("gcore", "-o", out, str(agent.pid))
        assert r.returncode == 0, r.stdout + r.stderr
        assert os.path.getsize(f"{out}.{agent.pid}") > 0
    assert agent.stop() == 0


@pytest.mark.skipif(os.geteuid() != 0 or not has_capability(CAP_SYS_PTRACE), reason="needs root with CAP_SYS_PTRACE")
def test_cached_token_is_in_memory_that_roots_gcore_leaves_out(start, workdir):
    agent = start()
    token = fetch_token(agent)
    excluded = dump_excluded_ranges(agent.pid)
    holding = find_in_ranges(agent.pid, excluded, token)
    assert holding, "the cached token is in no dump-excluded mapping"
    if not shutil.which("gcore") or ASAN:
        # gdb would write out the sanitizers' terabytes of reserved memory.
        assert agent.stop() == 0
        return

    out = os.path.join(workdir, "root-gcore")
    r = subprocess.run(["gcore", "-o", out, str(agent.pid)], capture_output=True, text=True, timeout=300,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout + r.stderr
    assert_left_out_of_core(f"{out}.{agent.pid}", holding)
    os.unlink(f"{out}.{agent.pid}")
    assert token_request(agent.port)[0] == 200
    assert agent.stop() == 0


@pytest.mark.skipif(not kernel_writes_core_files_to_cwd(), reason="core_pattern does not write to the cwd")
def test_crash_with_allow_core_dumps_leaves_the_cached_token_out_of_the_core(start, workdir):
    # ASan turns core files off unless told otherwise.
    env = {"ASAN_OPTIONS": os.environ.get("ASAN_OPTIONS", "") + ":disable_coredump=0"} if ASAN else None
    agent = start("--allow-core-dumps", env=env)
    token = fetch_token(agent)
    holding = find_in_ranges(agent.pid, dump_excluded_ranges(agent.pid), token)
    assert holding, "the cached token is in no dump-excluded mapping"
    agent.send_signal(signal.SIGABRT)
    agent.wait()
    cores = wait_for(lambda: cores_in(workdir), timeout=30, what="a core file")
    assert len(cores) == 1
    assert_left_out_of_core(cores[0], holding)

