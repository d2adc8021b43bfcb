#!/usr/bin/env python3
"""Fails on an include edge that points up or sideways in the layer graph.

  agent/base (mi_base)  <-  agent (mi_core)  <-  proxy/http (mi_http)  <-  proxy (mi_proxy)
  <-  agent/app (mi_app)  <-  agent/main.cc (POSIX), windows-service (mi_windows_service)

Nothing includes windows-service/: it is the top of the graph, with the Windows main.

Each rule names the include prefixes a folder may use. The most specific folder wins
(agent/base/x.h is in agent/base, not in agent). Run by ctest as `layering`; run by hand
with `python3 tests/layering_test.py [SOURCE_DIR]`.
"""

import os
import re
import sys

BASE = ("agent/base/",)
CORE = BASE + ("agent/core:",)          # agent/<file> (not a subfolder): see allowed()
HTTP = BASE + ("proxy/http/",)
# The proxy sees the core only through its interfaces: the token types, the broker
# seam, the health model, and the caller/audit/authorization interfaces.
CORE_INTERFACES = ("agent/token.h", "agent/token_key.h", "agent/token_broker.h", "agent/health.h",
                   "agent/caller.h", "agent/audit_event.h", "agent/access_gate.h")
PROXY = HTTP + CORE_INTERFACES + ("proxy/",)
APP = HTTP + ("agent/core:", "proxy/", "agent/app/")

# folder -> what its files may include (besides themselves and system headers)
RULES = [
    ("agent/base/", BASE),
    ("agent/app/", APP),
    ("agent/main.cc", ("agent/app/",)),
    ("agent/", CORE),
    ("proxy/http/", HTTP),
    ("proxy/", PROXY),
    ("windows-service/", APP + ("windows-service/",)),  # agent/app, agent, proxy, agent/base
    ("tests/emulator/", HTTP + ("tests/emulator/",)),
]

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def layer_of(path):
    for folder, allowed in RULES:
        if path == folder or path.startswith(folder):
            return folder, allowed
    return None, None


def allowed(include, rules):
    for prefix in rules:
        if prefix == "agent/core:":
            # The domain layer: a file directly in agent/ (agent/token.h), not agent/base or app.
            if include.startswith("agent/") and "/" not in include[len("agent/"):]:
                return True
        elif prefix.endswith("/") and include.startswith(prefix):
            return True
        elif include == prefix:
            return True
    return False


def violations(root):
    found = []
    for top in ("agent", "proxy", "windows-service", "tests/emulator"):
        for dirpath, _, files in os.walk(os.path.join(root, top)):
            for name in sorted(files):
                if not name.endswith((".h", ".cc")):
                    continue
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, root).replace(os.sep, "/")
                folder, rules = layer_of(rel)
                if folder is None:
                    continue
                with open(full, encoding="utf-8") as f:
                    text = f.read()
                for include in INCLUDE.findall(text):
                    if include.startswith(folder) and folder.endswith("/") and (
                            folder != "agent/" or allowed(include, ("agent/core:",))):
                        continue
                    if not allowed(include, rules):
                        found.append(f"{rel}: includes \"{include}\" (not allowed from {folder})")
    return found


def self_test():
    """The check itself can fail: a synthetic tree with one edge of each forbidden kind."""
    import tempfile
    bad_edges = {
        "agent/base/a.h": "agent/token.h",          # base -> core
        "agent/token.h": "proxy/http/http_server.h",  # core -> http
        "agent/b.h": "agent/app/daemon.h",          # core -> app
        "proxy/http/c.h": "agent/token.h",          # http -> core
        "proxy/d.h": "agent/app/config.h",          # proxy -> app
        "proxy/i.h": "agent/token_cache.h",         # proxy -> a core implementation
        "agent/app/e.h": "windows-service/w.h",     # app -> windows-service
        "agent/main.cc": "windows-service/w.h",     # the POSIX main -> windows-service
        "proxy/i.h": "windows-service/w.h",         # proxy -> windows-service
        "tests/emulator/f.h": "proxy/token_api.h",  # emulator -> proxy
    }
    good_edges = {"proxy/g.h": "agent/token.h", "agent/app/h.h": "proxy/token_api.h",
                  "windows-service/main_win.cc": "agent/app/cli.h",
                  "windows-service/s.cc": "agent/platform.h"}
    with tempfile.TemporaryDirectory() as root:
        for path, include in list(bad_edges.items()) + list(good_edges.items()):
            os.makedirs(os.path.join(root, os.path.dirname(path)), exist_ok=True)
            with open(os.path.join(root, path), "w") as f:
                f.write(f'#include "{include}"\n')
        found = violations(root)
    flagged = {line.split(":")[0] for line in found}
    assert flagged == set(bad_edges), (sorted(flagged), sorted(bad_edges))


def main():
    self_test()
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    bad = violations(os.path.abspath(root))
    for line in bad:
        print(line)
    if bad:
        print(f"{len(bad)} forbidden include edge(s); see the graph in tests/layering_test.py")
        return 1
    print("layering: every include points down the graph")
    return 0


if __name__ == "__main__":
    sys.exit(main())
