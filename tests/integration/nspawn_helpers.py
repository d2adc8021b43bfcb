"""A booted Debian container for test_nspawn.py: the rootfs (debootstrap, cached
in the build directory and kept pristine), a systemd-nspawn boot of a throwaway
copy, and commands run inside it through nsenter.

Usable on its own to warm the cache:
    python3 tests/integration/nspawn_helpers.py BUILD_DIR
"""

import ctypes
import glob
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

SUITE = "bookworm"
# Only what the checks need: systemd as PID 1 (and dbus for systemctl), the
# package's shared libraries (dpkg -i does not fetch dependencies), curl, and
# procps: the unit's ExecReload= is /bin/kill, which every real image has but
# minbase does not (the .deb does not declare it).
PACKAGES = ["systemd", "systemd-sysv", "dbus", "libuv1", "libcurl4", "libsystemd0", "curl",
            "procps"]
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Bump when what cached_rootfs does after debootstrap changes: a new cache key.
ROOTFS_REVISION = "1"


def missing_tools():
    """The reason the container cannot be built here, or None."""
    if os.geteuid() != 0:
        return "systemd-nspawn and debootstrap need root"
    for tool in ("systemd-nspawn", "debootstrap", "nsenter"):
        if not shutil.which(tool):
            return f"{tool} not installed (tests/install-deps.sh installs it)"
    return None


def apt_mirror():
    """The Debian archive this machine's apt uses (CI reaches only Debian's)."""
    entries = []
    for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*")):
        try:
            text = open(path).read()
        except OSError:
            continue
        if path.endswith(".sources"):  # deb822: one stanza per paragraph
            for stanza in text.split("\n\n"):
                fields = {}
                for line in stanza.splitlines():
                    if ":" in line and not line.startswith("#"):
                        key, value = line.split(":", 1)
                        fields[key.strip().lower()] = value.split()
                if "deb" in fields.get("types", []) and SUITE in fields.get("suites", []):
                    entries += fields.get("uris", [])
        elif path.endswith(".list"):
            for line in text.splitlines():
                words = line.split("#", 1)[0].split()
                words = [w for w in words if not w.startswith("[")]
                if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
                    entries.append(words[1])
    for uri in entries:
        if "security" not in uri and "debian" in uri:
            return uri.rstrip("/")
    return DEFAULT_MIRROR


def cached_rootfs(build_dir, log=print):
    """The pristine rootfs for this package list, suite and mirror, built once
    (into a temporary directory, renamed into place when complete)."""
    mirror = apt_mirror()
    key = hashlib.sha256(" ".join([ROOTFS_REVISION, SUITE, mirror] + sorted(PACKAGES)).encode()).hexdigest()[:12]
    rootfs = os.path.join(build_dir, f"nspawn-rootfs-{key}")
    if os.path.isfile(os.path.join(rootfs, "usr/lib/systemd/systemd")):
        return rootfs
    # Half-built ones (an interrupted run) and caches for another package list.
    for stale in glob.glob(os.path.join(build_dir, ".nspawn-rootfs-*")) + \
            glob.glob(os.path.join(build_dir, "nspawn-rootfs-*")):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = tempfile.mkdtemp(prefix=f".nspawn-rootfs-{key}-", dir=build_dir)
    os.chmod(tmp, 0o755)
    started = time.monotonic()
    result = subprocess.run(
        ["debootstrap", "--variant=minbase", "--include=" + ",".join(PACKAGES),
         SUITE, tmp, mirror],
        capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise RuntimeError(f"debootstrap exited {result.returncode}:\n"
                           f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    # Leaner and quieter boots: no getty on the console, no apt timers.
    for unit in ("console-getty.service", "getty@.service",
                 "apt-daily.timer", "apt-daily-upgrade.timer"):
        os.symlink("/dev/null", os.path.join(tmp, "etc/systemd/system", unit))
    shutil.rmtree(os.path.join(tmp, "var/cache/apt/archives"), ignore_errors=True)
    os.makedirs(os.path.join(tmp, "var/cache/apt/archives/partial"), exist_ok=True)
    os.rename(tmp, rootfs)
    log(f"nspawn: debootstrap {SUITE} from {mirror} took {time.monotonic() - started:.0f} s")
    return rootfs


def _stop_with_parent():
    """In the nspawn child: SIGTERM (a clean halt of the container) when the test
    process dies without its teardown (ctest's timeout kill)."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


class Container:
    """One boot of a copy of the rootfs. Use as a context manager: teardown
    (kill nspawn, wait, remove the copy) always runs."""

    def __init__(self, rootfs, work_dir, log=print):
        self.rootfs = rootfs
        self.work_dir = work_dir
        self.log = log
        self.name = f"mi-agent-test-{os.getpid()}"
        self.copy = os.path.join(work_dir, "rootfs")
        self.console = os.path.join(work_dir, "console.log")
        self.proc = None
        self.leader = None

    def __enter__(self):
        try:
            self.boot()
        except BaseException:
            self.teardown()
            raise
        return self

    def __exit__(self, *exc):
        self.teardown()
        return False

    def boot(self, timeout=120):
        # A private copy per run: the cache stays pristine, every run starts clean.
        subprocess.run(["cp", "-a", "--reflink=auto", self.rootfs, self.copy],
                       check=True, timeout=600)
        with open(self.console, "wb") as out:
            self.proc = subprocess.Popen(
                ["systemd-nspawn", "-D", self.copy, "--boot", "--register=no", "--keep-unit",
                 "--private-network", f"--machine={self.name}", "--console=pipe"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_stop_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited {self.proc.returncode}:\n"
                                   + self.console_tail())
            if self.leader is None:
                self.leader = self._find_leader()
            if self.leader is not None:
                state = self.run(["systemctl", "is-system-running"], check=False, timeout=10)
                if state.stdout.strip() in ("running", "degraded"):
                    return
            time.sleep(0.5)
        raise RuntimeError("the container's systemd did not come up:\n" + self.console_tail())

    def _find_leader(self):
        """The container's PID 1: the child of systemd-nspawn running systemd."""
        try:
            children = open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read().split()
        except OSError:  # no CONFIG_PROC_CHILDREN: look for the parent pid
            children = []
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    stat = open(f"/proc/{pid}/stat").read()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == self.proc.pid:
                    children.append(pid)
        for pid in children:
            try:
                exe = os.readlink(f"/proc/{pid}/exe")
            except OSError:
                continue
            if exe.endswith("/systemd"):
                return int(pid)
        return None

    def console_tail(self, n=4000):
        try:
            return open(self.console, errors="replace").read()[-n:]
        except OSError:
            return ""

    def run(self, argv, check=True, timeout=120, input=None):
        """argv inside the container (all of PID 1's namespaces, its root); stdin
        is `input`, else empty (nothing inside may wait for an answer)."""
        stdin = {"input": input} if input is not None else {"stdin": subprocess.DEVNULL}
        result = subprocess.run(
            ["nsenter", "-t", str(self.leader), "-a", "--",
             "/usr/bin/env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
             *argv],
            capture_output=True, text=True, timeout=timeout, **stdin)
        if check and result.returncode != 0:
            raise AssertionError(f"in container: {' '.join(argv)} exited {result.returncode}:\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def sh(self, script, **kwargs):
        return self.run(["/bin/sh", "-c", script], **kwargs)

    def put(self, host_path, path, mode=0o644):
        """Copies a host file into the container (through the copy's directory:
        nothing is bind-mounted, so nothing is left mounted)."""
        target = self.copy + path
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(host_path, target)
        os.chmod(target, mode)

    def write(self, path, text, mode=0o644):
        target = self.copy + path
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w") as f:
            f.write(text)
        os.chmod(target, mode)

    def teardown(self):
        if self.proc is not None and self.proc.poll() is None:
            # SIGTERM asks nspawn for a clean shutdown of the container; then
            # SIGKILL the whole session if that does not finish in time.
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=30)
        if os.path.isdir(self.copy):
            shutil.rmtree(self.copy, ignore_errors=True)


if __name__ == "__main__":
    print(cached_rootfs(os.path.abspath(sys.argv[1])))
