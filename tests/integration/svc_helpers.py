"""What only the service-integration tests (sd_notify, socket activation,
reload and drain, units, packages) need on top of conftest: the source and
build trees, skipping when a binary is missing, a config file from keyword
arguments, token answers as JSON, and an mi-agent set up by command-line
flags. Processes, the emulator, ports and waiting come from conftest.

Environment (set by tests/CMakeLists.txt): MI_AGENT_BIN, IMDS_EMULATOR_BIN,
MI_SOURCE_DIR, MI_BUILD_DIR.
"""

import json
import os
import socket
import urllib.parse

import pytest

from conftest import (AGENT_BIN, EMULATOR_BIN, Process, agent_env, free_port, port_accepts,
                      token_request, wait_for)

SOURCE_DIR = os.environ.get(
    "MI_SOURCE_DIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
)
BUILD_DIR = os.environ.get("MI_BUILD_DIR", "")

# Sanitizer builds are slower to start and may print to stderr; allow for both.
START_TIMEOUT = 20.0


def require_binaries(*names):
    """Skips unless the binaries the test needs were given (ctest sets them)."""
    paths = {"agent": AGENT_BIN, "emulator": EMULATOR_BIN}
    for name in names:
        path = paths[name]
        if not path or not os.access(path, os.X_OK):
            pytest.skip(f"{name} binary not available (set MI_AGENT_BIN / IMDS_EMULATOR_BIN)")


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
    """Writes a config file; keys as in agent/config.h ("log" takes {"level": ...})."""
    path.write_text(json.dumps(fields, indent=2) + "\n")
    return str(path)


class Agent(Process):
    """mi-agent on 127.0.0.1:<port>, health off, pointed at `imds_url`, with the
    listener and upstream given as flags (unlike conftest.Agent) so that the
    config file is the test's own to rewrite for SIGHUP; `port` may be one
    already taken; `wait=False` when the test plays systemd (NOTIFY_SOCKET in
    `env`) and waits for READY=1 itself."""

    def __init__(self, tmp_path, imds_url, config_path=None, port=None, env=None, extra_args=(),
                 wait=True, name="agent"):
        self.port = port or free_port()
        # Always a file of our own: never whatever /etc/mi-agent/config.json holds.
        if not config_path:
            config_path = write_config(tmp_path / f"{name}-config.json")
        argv = [AGENT_BIN, "--config", config_path,
                "--port", str(self.port), "--listen", "127.0.0.1", "--no-health",
                "--imds-endpoint", imds_url, "--log-format", "text", *extra_args]
        super().__init__(argv, "mi-agent", env=agent_env(env), log_path=str(tmp_path / f"{name}.log"))
        if wait:
            self.wait_listening()

    def wait_listening(self):
        def up():
            if not self.alive():
                raise AssertionError(f"mi-agent exited early ({self.proc.returncode}):\n{self.output()}")
            return port_accepts(self.port)

        wait_for(up, START_TIMEOUT, what=f"mi-agent to listen on 127.0.0.1:{self.port}")
