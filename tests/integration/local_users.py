"""Real local users and groups for the authorization tests (issue #13).

    with LocalUsers() as users:
        alice = users.user("alice", groups=["billing"])   # useradd; a fresh name each run
        out = alice.run(["curl", ...])                     # setpriv as that user
        users.group("billing")                             # the group's real name

Names get a per-run suffix (mi<pid>…) so parallel or aborted runs never clash;
everything created is removed on exit (userdel/groupdel), also after a failure.
Needs root plus useradd/groupadd/setpriv; `LocalUsers.available()` says whether
the test can run (skip otherwise).
"""

import grp
import os
import pwd
import shutil
import subprocess


class LocalUser:
    def __init__(self, name):
        self.name = name
        pw = pwd.getpwnam(name)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid

    def command(self, argv):
        """argv run as this user (real and effective ids, its groups)."""
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--", *argv]

    def run(self, argv, timeout=60, **kw):
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self.command(argv), timeout=timeout, **kw)

    def popen(self, argv, **kw):
        return subprocess.Popen(self.command(argv), **kw)


class LocalUsers:
    def __init__(self):
        self._tag = f"mi{os.getpid() % 100000}"
        self._users = []
        self._groups = []

    @staticmethod
    def available():
        return os.geteuid() == 0 and all(shutil.which(t) for t in ("useradd", "groupadd", "userdel", "groupdel", "setpriv"))

    def _name(self, base):
        return f"{self._tag}{base}"[:31]

    def group(self, base):
        """Creates group `base` (once) and returns its real name."""
        name = self._name(base)
        try:
            grp.getgrnam(name)
        except KeyError:
            subprocess.run(["groupadd", name], check=True, capture_output=True)
            self._groups.append(name)
        return name

    def user(self, base, groups=()):
        """Creates a system user with no home and no login, in `groups` (bases)."""
        name = self._name(base)
        argv = ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                "--shell", "/usr/sbin/nologin", "--user-group"]
        names = [self.group(g) for g in groups]
        if names:
            argv += ["--groups", ",".join(names)]
        subprocess.run([*argv, name], check=True, capture_output=True)
        self._users.append(name)
        return LocalUser(name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for name in reversed(self._users):
            subprocess.run(["pkill", "-KILL", "-u", name], capture_output=True)
            subprocess.run(["userdel", name], capture_output=True)
        for name in reversed(self._groups):
            subprocess.run(["groupdel", name], capture_output=True)
        self._users.clear()
        self._groups.clear()
        return False
