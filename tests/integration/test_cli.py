"""`mi-agent status` and `mi-agent token` against a live agent: output and exit
codes (0 healthy/200, 1 degraded-failing/error answer, 2 unreachable)."""

import json
import os
import re
import subprocess

from conftest import ARM, UA_CLIENT_ID, agent_command, free_port

UNKNOWN_CLIENT = "99999999-8888-4777-8666-555555555555"


def cli(*args):
    env = dict(os.environ)
    # The agent is local: a proxy in the environment must not be used.
    env.update(http_proxy="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9", no_proxy="", NO_PROXY="")
    r = subprocess.run(agent_command(*args), capture_output=True, text=True, timeout=120, env=env)
    return r.returncode, r.stdout, r.stderr


def issued(emulator):
    return emulator.admin("GET", "tokens")["tokens"]


def test_status_ok_then_failing(agent_factory, emulator):
    agent = agent_factory(emulator, config={"prefetch": [{"resource": ARM}, {"resource": ARM, "client_id": UA_CLIENT_ID}]})
    health = f"127.0.0.1:{agent.health_port}"

    code, out, err = cli("status", "--health", health)
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0].startswith("mi-agent ") and "IMDS ok" in lines[0]
    assert re.split(r"\s{2,}", lines[1]) == ["IDENTITY", "RESOURCE", "STATE", "EXPIRES IN", "LAST ERROR"]
    rows = [re.split(r"\s{2,}", l) for l in lines[2:]]
    assert ["default", ARM, "ok"] == rows[0][:3] or ["default", ARM, "ok"] in [r[:3] for r in rows]
    assert [f"client_id={UA_CLIENT_ID}", ARM, "ok"] in [r[:3] for r in rows]
    assert all(re.match(r"^(\d+d\d\dh|23h\d\dm)$", r[3]) for r in rows), rows
    assert all(r[4] == "-" for r in rows)

    code, out, _ = cli("status", "--health", f"http://{health}/", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["summary"]["ok"] == 2

    # An identity the VM does not have: its key fails, status says so.
    code, _, _ = cli("token", "--resource", ARM, "--client-id", UNKNOWN_CLIENT, "--port", str(agent.port))
    assert code == 1
    code, out, err = cli("status", "--health", health)
    assert code == 1, out + err
    row = [re.split(r"\s{2,}", l) for l in out.splitlines() if UNKNOWN_CLIENT in l]
    assert row and row[0][2] == "failing" and row[0][3] == "-" and row[0][4] == "400 invalid_request: Identity not found", row
    assert cli("status", "--health", health, "--json")[0] == 1

    for text in (out, cli("status", "--health", health, "--json")[1]):
        for token in issued(emulator):
            assert token.split(".")[2][:32] not in text


def test_token_redacted_shown_and_errors(agent_factory, emulator):
    agent = agent_factory(emulator)
    port = str(agent.port)

    code, out, err = cli("token", "--resource", ARM, "--port", port)
    assert code == 0, out + err
    doc = json.loads(out)
    assert doc["token_type"] == "Bearer" and doc["resource"] == ARM and int(doc["expires_on"]) > 0
    tokens = issued(emulator)
    assert len(tokens) == 1
    assert re.match(r"^eyJ0\u2026\[redacted %d chars\]$" % len(tokens[0]), doc["access_token"]), doc["access_token"]
    assert tokens[0][8:] not in out and tokens[0].split(".")[2][:16] not in out

    code, out, _ = cli("token", "--resource", ARM, "--client-id", UA_CLIENT_ID, "--port", port, "--show-token")
    assert code == 0
    doc = json.loads(out)
    assert doc["access_token"] in issued(emulator) and doc["access_token"] != tokens[0]
    assert doc["client_id"] == UA_CLIENT_ID

    code, out, _ = cli("token", "--resource", ARM, "--host", "::1", "--port", port)
    assert code == 0 and "redacted" in out

    # An error answer is printed, exit 1.
    code, out, _ = cli("token", "--resource", ARM, "--client-id", UNKNOWN_CLIENT, "--port", port)
    assert code == 1
    assert "HTTP 400" in out and '"invalid_request"' in out
    code, out, _ = cli("token", "--resource", ARM, "--client-id", "not-a-guid", "--port", port)
    assert code == 1 and "invalid_request" in out

    # Usage errors.
    assert cli("token", "--port", port)[0] == 2
    assert cli("token", "--resource", ARM, "--client-id", UA_CLIENT_ID, "--object-id", UA_CLIENT_ID)[0] == 2


def test_no_agent_is_exit_2():
    port = free_port()
    code, out, err = cli("status", "--health", f"127.0.0.1:{port}")
    assert code == 2 and "cannot reach" in err and out == ""
    code, out, err = cli("token", "--resource", ARM, "--port", str(port))
    assert code == 2 and "cannot reach" in err and out == ""


def test_invalid_utf8_option_is_refused_at_start():
    # Used to start, then abort (type_error.316) while the config digest was built.
    r = subprocess.run(agent_command("--port", "0", "--no-health", "--imds-endpoint", b"http://x/\xff"),
                       capture_output=True, timeout=60)
    assert r.returncode == 78, (r.returncode, r.stderr)  # a refused value: an invalid configuration (EX_CONFIG)
    assert b"--imds-endpoint: the value is not valid UTF-8 (byte 9)" in r.stderr, r.stderr


def test_status_shows_every_key_exactly(agent_factory, emulator):
    # More keys than the default /status view holds, one with a 2 KB resource:
    # the CLI asks for the full view and shows each, unshortened.
    long_resource = "https://long.example/".ljust(2048, "x")
    resources = [f"https://r{i:02}.example/" for i in range(60)] + [long_resource]
    agent = agent_factory(emulator, config={"budget": {"rate_per_second": 1000, "burst": 1000},
                                            "prefetch": [{"resource": r} for r in resources]})
    health = f"127.0.0.1:{agent.health_port}"
    code, out, err = cli("status", "--health", health)
    assert code == 0, out + err
    rows = [re.split(r"\s{2,}", l) for l in out.splitlines()[2:]]
    assert sorted(r[1] for r in rows) == sorted(resources)
    assert all(r[0] == "default" and r[2] == "ok" for r in rows), rows

    code, out, _ = cli("status", "--health", health, "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["entries_total"] == 61 and doc["truncated"] is False
    assert sorted(r["resource"] for i in doc["identities"] for r in i["resources"]) == sorted(resources)
