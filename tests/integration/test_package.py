"""The Linux packages, built with CPack from the build tree (into a temporary
directory, so the tree is untouched):

  .deb: lintian has no errors and no hardening-* tag; the binary is PIE with
        full RELRO (GNU_RELRO, BIND_NOW) and fortified calls; the contents are
        right; `dpkg -i` installs the binary, units, conffile, man page and
        writes the (port-aware) discovery file; `dpkg -r` masks the units and
        keeps their enablement, so installing again leaves them enabled (and
        an administrator's disable survives remove + install and upgrades);
        `dpkg --purge` leaves nothing behind.
  .rpm: builds, lists the same files in the RPM locations plus the systemd
        preset, the config as %config; has the description, URL, the
        changelog made from packaging/changelog.in and the %systemd_* script
        semantics.

Installing touches the real system (it is what the test is for), so it runs
only as root, and never over an mi-agent package that was already installed.
"""

import glob
import hashlib
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
    "./usr/share/mi-agent/prometheus/mi-agent.rules.yml",
    "./usr/share/mi-agent/prometheus/mi-agent.rules.test.yml",
    "./usr/share/mi-agent/grafana/mi-agent.json",
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
    "/usr/share/mi-agent/prometheus/mi-agent.rules.yml",
    "/usr/share/mi-agent/prometheus/mi-agent.rules.test.yml",
    "/usr/share/mi-agent/grafana/mi-agent.json",
    "/usr/share/doc/mi-agent/copyright",
]
# Left by deb-systemd-helper when the units are enabled.
ENABLE_LINKS = [
    "/etc/systemd/system/sockets.target.wants/mi-agent.socket",
    "/etc/systemd/system/multi-user.target.wants/mi-agent.service",
]
# Left by deb-systemd-helper mask on remove (-> /dev/null).
MASK_LINKS = ["/etc/systemd/system/mi-agent.socket", "/etc/systemd/system/mi-agent.service"]
UNITS = ["mi-agent.socket", "mi-agent.service"]
PRESET = "/usr/lib/systemd/system-preset/90-mi-agent.preset"


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


def was_enabled(unit):
    """deb-systemd-helper's own answer (what postinst asks); it only runs for dpkg."""
    env = dict(os.environ, DPKG_MAINTSCRIPT_PACKAGE="mi-agent")
    return run(["deb-systemd-helper", "--quiet", "was-enabled", unit], check=False,
               env=env).returncode == 0


def masked(link):
    return os.path.islink(link) and os.readlink(link) == "/dev/null"


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


def test_deb_lintian_has_no_errors_and_no_hardening_tags(deb):
    if not shutil.which("lintian"):
        pytest.skip("lintian not installed")
    # --display-info: hardening-no-bindnow is an I: tag.
    result = run(["lintian", "--tag-display-limit", "0", "--display-info", deb],
                 check=False, timeout=900)
    output = result.stdout + result.stderr
    print(output)
    errors = [line for line in output.splitlines() if line.startswith("E:")]
    assert not errors, output
    # "X: package: tag [context]"
    tags = [line.split()[2] for line in output.splitlines()
            if re.match(r"^[EWIPX]: \S+: \S", line)]
    hardening = [tag for tag in tags if tag.startswith("hardening-")]
    assert not hardening, output
    assert not any(tag.startswith("command-with-path-in-maintainer-script") for tag in tags), output


def test_deb_binary_is_hardened(deb, tmp_path):
    """The checksec facts for the packaged (stripped) binary: PIE, full RELRO
    (GNU_RELRO + BIND_NOW), stack protector and fortified calls."""
    if not shutil.which("readelf"):
        pytest.skip("readelf not installed")
    run(["dpkg-deb", "-x", deb, str(tmp_path)])
    binary = str(tmp_path / "usr" / "bin" / "mi-agent")
    header = run(["readelf", "-hW", binary]).stdout
    assert re.search(r"Type:\s+DYN ", header), header
    segments = run(["readelf", "-lW", binary]).stdout
    assert re.search(r"^\s*GNU_RELRO\s", segments, re.M), segments
    dynamic = run(["readelf", "-dW", binary]).stdout
    assert re.search(r"\(FLAGS\)\s+.*BIND_NOW", dynamic) or \
        re.search(r"\(FLAGS_1\)\s+Flags:.*\bNOW\b", dynamic), dynamic
    assert re.search(r"\(FLAGS_1\)\s+Flags:.*\bPIE\b", dynamic), dynamic
    symbols = run(["readelf", "-sW", "--dyn-syms", binary]).stdout
    assert "__stack_chk_fail" in symbols, "no stack protector"
    assert re.search(r"__\w+_chk@", symbols), "no fortified (_chk) calls"


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

        # Remove masks the units (as dh_installsystemd's postrm does) and keeps
        # their enablement, so installing again leaves them enabled.
        dpkg("-r", "mi-agent")
        assert installed_state() == "config-files"
        assert not os.path.exists("/usr/bin/mi-agent")
        assert not os.path.exists("/lib/systemd/system/mi-agent.service")
        assert not os.path.exists(DISCOVERY), "remove left the discovery file pointing at nothing"
        assert os.path.exists("/etc/mi-agent/config.json"), "remove must keep the configuration"
        for link in MASK_LINKS:
            assert masked(link), f"{link} is not masked after remove"
        for unit in UNITS:
            assert was_enabled(unit), f"{unit}: remove lost its enablement"

        dpkg("-i", deb)
        assert installed_state() == "installed"
        assert "51234" in open("/etc/mi-agent/config.json").read(), "the kept config was replaced"
        assert json.load(open(DISCOVERY)) == {"url": "http://localhost:51234/oauth2/token"}
        for link in MASK_LINKS:
            assert not os.path.lexists(link), f"{link}: reinstall left the unit masked"
        for link in ENABLE_LINKS:
            assert os.path.islink(link), f"{link}: reinstall after remove left it disabled"
        for unit in UNITS:
            assert was_enabled(unit), unit

        # The administrator's disable (what `systemctl disable` does: the links
        # go, deb-systemd-helper's record stays) survives an upgrade and a
        # remove + install.
        for link in ENABLE_LINKS:
            os.unlink(link)
        dpkg("-i", deb)
        for link in ENABLE_LINKS:
            assert not os.path.lexists(link), f"{link}: an upgrade re-enabled a disabled unit"
        dpkg("-r", "mi-agent")
        dpkg("-i", deb)
        for link in ENABLE_LINKS:
            assert not os.path.lexists(link), f"{link}: remove + install re-enabled a disabled unit"
        for link in MASK_LINKS:
            assert not os.path.lexists(link), link

        dpkg("--purge", "mi-agent")
        assert installed_state() == ""
        assert not os.path.exists("/etc/mi-agent")
        assert not os.path.exists(DISCOVERY)
        assert os.path.isdir("/var/lib/waagent") == waagent_existed
        leftovers = glob.glob("/var/lib/systemd/deb-systemd-helper-*/**/*mi-agent*", recursive=True)
        leftovers += glob.glob("/etc/systemd/system/**/*mi-agent*", recursive=True)
        assert not leftovers, leftovers
        # Purged: a new install is a first install again (enabled).
        dpkg("-i", deb)
        for link in ENABLE_LINKS:
            assert os.path.islink(link), f"{link}: purge kept the old disable"
        dpkg("--purge", "mi-agent")
        assert installed_state() == ""
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
                                        "/usr/lib/systemd/system-preset", "/usr/share/man/man8")), \
        "claims a distribution directory"
    config = run(["rpm", "-qcp", rpm]).stdout.split()
    assert config == ["/etc/mi-agent/config.json"], config
    requires = run(["rpm", "-qp", "--requires", rpm]).stdout
    assert "libuv.so" in requires, requires

    # The preset that %post applies (the shipped file is packaging/rpm's, by
    # digest), enabling our two units and nothing else; not %config.
    assert PRESET in files, listing
    source = os.path.join(h.SOURCE_DIR, "packaging", "rpm", os.path.basename(PRESET))
    digests = dict(line.split() for line in run(
        ["rpm", "-qp", "--qf", "[%{FILENAMES} %{FILEDIGESTS}\n]", rpm]).stdout.splitlines()
        if len(line.split()) == 2)
    assert digests[PRESET] == hashlib.sha256(open(source, "rb").read()).hexdigest()
    preset = [line.split() for line in open(source)
              if line.strip() and not line.startswith("#")]
    assert preset == [["enable", "mi-agent.socket"], ["enable", "mi-agent.service"]], preset

    # Description and URL.
    info = run(["rpm", "-qip", rpm]).stdout
    assert re.search(r"^URL\s*: https?://\S+", info, re.M), info
    description = info.split("Description :", 1)[1]
    assert "Instance" in description and "Metadata Service" in description, info

    # The changelog, one entry per version of packaging/changelog.in.
    changelog = run(["rpm", "-qp", "--changelog", rpm]).stdout
    debian = open(os.path.join(h.SOURCE_DIR, "packaging", "changelog.in")).read()
    versions = re.findall(r"^mi-agent \(([^)]+)\)", debian, re.M)
    version = run(["rpm", "-qp", "--qf", "%{VERSION}", rpm]).stdout
    assert versions and versions[0] == version, (versions, version)
    rpm_versions = re.findall(r"^\* \w{3} \w{3} \d\d \d{4} .+ - (\S+)-\d+$", changelog, re.M)
    assert rpm_versions == versions, changelog

    # The scripts: %systemd_post / _preun / _postun_with_restart semantics.
    scripts = run(["rpm", "-qp", "--scripts", rpm]).stdout
    assert DISCOVERY in scripts, scripts
    parts = re.split(r"^(\w+) scriptlet \(using [^)]*\):$", scripts, flags=re.M)
    by_name = dict(zip(parts[1::2], parts[2::2]))
    assert "systemctl --no-reload preset mi-agent.socket mi-agent.service" in by_name["postinstall"]
    assert "systemctl --no-reload disable --now mi-agent.service mi-agent.socket" in \
        by_name["preuninstall"]
    assert "systemctl try-restart mi-agent.service" in by_name["postuninstall"]
    assert "try-restart" not in by_name["postinstall"], "restart belongs in %postun"
