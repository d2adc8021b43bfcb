"""The Linux packages, built with CPack from the build tree (into a temporary
directory, so the tree is untouched):

  .deb: lintian has no errors; the contents are right; `dpkg -i` installs the
        binary, units, conffile, man page and writes the (port-aware)
        discovery file; `dpkg -r` then `dpkg --purge` leave nothing behind.
  .rpm: builds, and lists the same files in the RPM locations, the config as
        %config.

Installing touches the real system (it is what the test is for), so it runs
only as root, and never over an mi-agent package that was already installed.
"""

import glob
import json
import os
import re
import shutil
import subprocess
import time

import pytest

import svc_helpers as h

DISCOVERY = "/var/lib/waagent/ManagedIdentity-Settings"
DEB_FILES = [
    "./usr/bin/mi-agent",
    "./lib/systemd/system/mi-agent.service",
    "./lib/systemd/system/mi-agent.socket",
    "./etc/mi-agent/config.json",
    "./etc/mi-agent/config.d/",
    "./usr/share/man/man8/mi-agent.8.gz",
    "./usr/share/mi-agent/process-rules.conf",
    "./usr/share/doc/mi-agent/copyright",
    "./usr/share/doc/mi-agent/changelog.gz",
]
RPM_FILES = [
    "/usr/bin/mi-agent",
    "/usr/lib/systemd/system/mi-agent.service",
    "/usr/lib/systemd/system/mi-agent.socket",
    "/etc/mi-agent/config.json",
    "/etc/mi-agent/config.d",
    "/usr/share/man/man8/mi-agent.8.gz",
    "/usr/share/mi-agent/process-rules.conf",
    "/usr/share/doc/mi-agent/copyright",
]
# Left by deb-systemd-helper when the units are enabled.
ENABLE_LINKS = [
    "/etc/systemd/system/sockets.target.wants/mi-agent.socket",
    "/etc/systemd/system/multi-user.target.wants/mi-agent.service",
]


def run(argv, timeout=600, check=True, **kwargs):
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {result.returncode}:\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def cpack(generator, out_dir):
    if not h.BUILD_DIR or not os.path.exists(os.path.join(h.BUILD_DIR, "CPackConfig.cmake")):
        pytest.skip("MI_BUILD_DIR with CPackConfig.cmake not given")
    if not shutil.which("cpack"):
        pytest.skip("cpack not installed")
    run(["cpack", "--config", os.path.join(h.BUILD_DIR, "CPackConfig.cmake"),
         "-G", generator, "-B", str(out_dir)], cwd=h.BUILD_DIR)
    pattern = "*.deb" if generator == "DEB" else "*.rpm"
    found = glob.glob(os.path.join(str(out_dir), pattern))
    assert len(found) == 1, found
    return found[0]


def dpkg(*args):
    """dpkg, waiting for the lock if apt or another dpkg holds it."""
    deadline = time.monotonic() + 300
    while True:
        result = run(["dpkg", *args], check=False)
        locked = "lock" in result.stderr and ("locked" in result.stderr or "held" in result.stderr)
        if result.returncode == 0 or not locked or time.monotonic() > deadline:
            break
        time.sleep(2)
    if result.returncode != 0:
        raise AssertionError(f"dpkg {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def installed_state():
    result = run(["dpkg-query", "-W", "-f=${db:Status-Status}", "mi-agent"], check=False)
    return result.stdout.strip() if result.returncode == 0 else ""


@pytest.fixture(scope="module")
def deb(tmp_path_factory):
    if not shutil.which("dpkg-deb"):
        pytest.skip("dpkg-deb not installed")
    return cpack("DEB", tmp_path_factory.mktemp("deb"))


def test_deb_contents_and_metadata(deb):
    listing = run(["dpkg-deb", "-c", deb]).stdout
    paths = {line.split()[-1] if " -> " not in line else line.split()[-3]
             for line in listing.splitlines()}
    for path in DEB_FILES:
        assert path in paths, f"{path} missing from the .deb:\n{listing}"
    assert not any(p.startswith("./var/") for p in paths), "the discovery file is written, not shipped"
    assert re.search(r"-rwxr-xr-x root/root .* \./usr/bin/mi-agent$", listing, re.M), listing

    conffiles = run(["dpkg-deb", "-I", deb, "conffiles"]).stdout.split()
    assert conffiles == ["/etc/mi-agent/config.json"], conffiles
    fields = run(["dpkg-deb", "-f", deb, "Package", "Depends", "Section"]).stdout
    assert "Package: mi-agent" in fields
    # dpkg-shlibdeps found the shared libraries the binary really links.
    for lib in ("libc6", "libuv1", "libcurl"):
        assert lib in fields, fields


def test_deb_lintian_has_no_errors(deb):
    if not shutil.which("lintian"):
        pytest.skip("lintian not installed")
    result = run(["lintian", "--tag-display-limit", "0", deb], check=False, timeout=900)
    output = result.stdout + result.stderr
    print(output)
    errors = [line for line in output.splitlines() if line.startswith("E:")]
    assert not errors, output


def test_deb_install_remove_purge(deb, tmp_path):
    if os.geteuid() != 0 or not shutil.which("dpkg"):
        pytest.skip("installing a package needs root and dpkg")
    if installed_state():
        pytest.skip(f"an mi-agent package is already on this machine ({installed_state()}); "
                    "not touching it")
    waagent_existed = os.path.isdir("/var/lib/waagent")
    try:
        dpkg("-i", deb)
        assert installed_state() == "installed"
        for path in DEB_FILES:
            assert os.path.exists(path[1:]), path
        assert run(["/usr/bin/mi-agent", "--version"]).stdout.startswith("mi-agent ")
        shipped = open(os.path.join(h.SOURCE_DIR, "packaging", "config.json")).read()
        assert open("/etc/mi-agent/config.json").read() == shipped
        assert "/etc/mi-agent/config.json" in run(["dpkg-query", "-W", "-f=${Conffiles}",
                                                   "mi-agent"]).stdout
        # The discovery file, as the old VM extension wrote it.
        assert json.load(open(DISCOVERY)) == {"url": "http://localhost:50342/oauth2/token"}
        assert oct(os.stat(DISCOVERY).st_mode & 0o777) == "0o644"
        # Enabled (symlinks only: no systemd runs here, so nothing was started).
        for link in ENABLE_LINKS:
            assert os.path.islink(link), link

        # Port-aware: a changed port reaches the discovery file on reconfigure.
        text = open("/etc/mi-agent/config.json").read()
        open("/etc/mi-agent/config.json", "w").write(text.replace("50342", "51234"))
        dpkg("-i", deb)  # reinstall = upgrade path, keeps the modified conffile
        assert "51234" in open("/etc/mi-agent/config.json").read()
        assert json.load(open(DISCOVERY)) == {"url": "http://localhost:51234/oauth2/token"}

        dpkg("-r", "mi-agent")
        assert installed_state() == "config-files"
        assert not os.path.exists("/usr/bin/mi-agent")
        assert not os.path.exists("/lib/systemd/system/mi-agent.service")
        assert not os.path.exists(DISCOVERY), "remove left the discovery file pointing at nothing"
        assert os.path.exists("/etc/mi-agent/config.json"), "remove must keep the configuration"
        for link in ENABLE_LINKS:
            assert not os.path.lexists(link), link

        dpkg("--purge", "mi-agent")
        assert installed_state() == ""
        assert not os.path.exists("/etc/mi-agent")
        assert not os.path.exists(DISCOVERY)
        assert os.path.isdir("/var/lib/waagent") == waagent_existed
        leftovers = glob.glob("/var/lib/systemd/deb-systemd-helper-*/**/*mi-agent*", recursive=True)
        leftovers += glob.glob("/etc/systemd/system/**/*mi-agent*", recursive=True)
        assert not leftovers, leftovers
    finally:
        if installed_state():
            dpkg("--purge", "mi-agent")


def test_rpm_builds_with_the_same_files(tmp_path):
    if not shutil.which("rpmbuild") or not shutil.which("rpm"):
        pytest.skip("rpm/rpmbuild not installed (Debian package rpm)")
    rpm = cpack("RPM", tmp_path)
    listing = run(["rpm", "-qlp", rpm]).stdout
    print(listing)
    files = set(listing.split())
    for path in RPM_FILES:
        assert path in files, f"{path} missing from the .rpm:\n{listing}"
    assert not any(p.startswith("/lib/") or p == "/lib" for p in files), \
        "RPM distributions are /usr-merged: nothing may be packaged under /lib"
    assert not any(p in files for p in ("/usr/lib/systemd", "/usr/lib/systemd/system",
                                        "/usr/share/man/man8")), "claims a distribution directory"
    config = run(["rpm", "-qcp", rpm]).stdout.split()
    assert config == ["/etc/mi-agent/config.json"], config
    scripts = run(["rpm", "-qp", "--scripts", rpm]).stdout
    assert DISCOVERY in scripts and "systemctl" in scripts, scripts
    requires = run(["rpm", "-qp", "--requires", rpm]).stdout
    assert "libuv.so" in requires, requires
