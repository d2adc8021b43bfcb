"""What only the service-integration tests (sd_notify, socket activation,
reload and drain, units, packages) need on top of conftest: the source and
build trees, skipping when a binary is missing, a config file from keyword
arguments and token answers as JSON. The agent (Agent(flags=True) for one set
up by command-line flags), the emulator, processes, ports and waiting come
from conftest.

Environment (set by tests/CMakeLists.txt): MI_AGENT_BIN, IMDS_EMULATOR_BIN,
MI_SOURCE_DIR, MI_BUILD_DIR.
"""

import json
import os
import socket
import urllib.parse

import pytest

import conftest
from conftest import AGENT_BIN, EMULATOR_BIN, token_request

SOURCE_DIR = os.environ.get(
    "MI_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
)
BUILD_DIR = os.environ.get("MI_BUILD_DIR", "")
START_TIMEOUT = conftest.START_TIMEOUT


def require_binaries(*names):
    """Skips unless the binaries the test needs were given (ctest sets them)."""
    paths = {"agent": AGENT_BIN, "emulator": EMULATOR_BIN}
    for name in names:
        path = paths[name]
        if not path or not os.access(path, os.X_OK):
            pytest.skip(f"{name} binary not available (set MI_AGENT_BIN / IMDS_EMULATOR_BIN)")


def require_test_binaries(request):
    """For a module's autouse fixture: skips, before any process starts, unless
    the agent and (when the test uses the emulator fixture) the emulator exist."""
    require_binaries("agent", *(["emulator"] if "emulator" in request.fixturenames else []))


def ipv6_loopback_available():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def get_token(port, resource, host="127.0.0.1", timeout=30.0):
    """Asks the legacy endpoint for a token; returns (status, parsed JSON or None)."""
    status, _, body = token_request(port, urllib.parse.urlencode({"resource": resource}),
                                    host=host, timeout=timeout)
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


def write_config(path, **fields):
    """Writes a config file; keys as in agent/app/config.h ("log" takes {"level": ...})."""
    path.write_text(json.dumps(fields, indent=2) + "\n")
    return str(path)
