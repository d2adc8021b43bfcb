"""`mi-agent status` and `mi-agent token` against a live agent: output and exit
codes (0 healthy/200, 1 degraded-failing/error answer, 2 unreachable)."""

import json
import os
import re
import subprocess

import pytest

from conftest import ARM, UA_CLIENT_ID, agent_command, free_port

UNKNOWN_CLIENT = "99999999-8888-4777-8666-555555555555"


def cli(*args, columns=None):
    env = dict(os.environ)
    env.pop("COLUMNS", None)
    if columns is not None:
        env["COLUMNS"] = str(columns)
    # The agent is local: a proxy in the environment must not be used.
    env.update(http_proxy="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9", no_proxy="", NO_PROXY="")
    r = subprocess.run(agent_command(*args), capture_output=True, text=True, timeout=120, env=env)
    return r.returncode, r.stdout, r.stderr


def parse_groups(lines):
    """The status table's groups: {identity heading: [[resource, state, expires, error], ...]};
    a failing key's description (its own line, indented further) ends its row."""
    groups, current = {}, None
    for line in lines:
        if line.startswith("    "):
            groups[current][-1].append(line.strip())
        elif line.startswith("  "):
            groups[current].append(re.split(r"\s{2,}", line.strip()))
        else:
            current = line
            groups[current] = []
    return groups


def issued(emulator):
    return emulator.admin("GET", "tokens")["tokens"]


def test_status_ok_then_failing(agent_factory, emulator):
    agent = agent_factory(emulator, config={"prefetch": [{"resource": ARM}, {"resource": ARM, "client_id": UA_CLIENT_ID}]})
    health = f"127.0.0.1:{agent.health_port}"

    code, out, err = cli("status", "--health", health)
    assert code == 0, out + err
    lines = out.splitlines()
    assert lines[0].startswith("mi-agent ") and ", ready, up " in lines[0]
    assert lines[1].startswith("IMDS ok")
    assert lines[2].startswith("config ") and "last reload" in lines[2]
    assert re.split(r"\s{2,}", lines[3]) == ["IDENTITY / RESOURCE", "STATE", "EXPIRES IN", "LAST ERROR"]
    groups = parse_groups(lines[4:])
    assert sorted(groups) == sorted(["default", f"client_id={UA_CLIENT_ID}"])
    rows = [r for g in groups.values() for r in g]
    assert all(r[:2] == [ARM, "ok"] for r in rows), groups
    assert all(re.match(r"^(\d+d\d\dh|23h\d\dm)$", r[2]) for r in rows), rows
    assert all(r[3] == "-" for r in rows)

    code, out, _ = cli("status", "--health", f"http://{health}/", "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["summary"]["ok"] == 2

    # An identity the VM does not have: its key fails, status says so.
    code, _, _ = cli("token", "--resource", ARM, "--client-id", UNKNOWN_CLIENT, "--port", str(agent.port))
    assert code == 1
    code, out, err = cli("status", "--health", health)
    assert code == 1, out + err
    row = parse_groups(out.splitlines()[4:])[f"client_id={UNKNOWN_CLIENT}"]
    assert row == [[ARM, "failing", "-", "400 invalid_request", "Identity not found"]], row
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
    groups = parse_groups(out.splitlines()[4:])
    assert list(groups) == ["default"]
    assert all(r[1] == "ok" for r in groups["default"])
    assert len(groups["default"]) == 61
    # The 2 KB resource is shortened to fit 80 columns; -o wide shows it whole.
    assert all(len(l) <= 80 for l in out.splitlines())
    code, out, _ = cli("status", "--health", health, "-o", "wide")
    assert code == 0
    groups = parse_groups(out.splitlines()[4:])
    assert sorted(r[0] for r in groups["default"]) == sorted(resources)

    code, out, _ = cli("status", "--health", health, "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["entries_total"] == 61 and doc["truncated"] is False
    assert sorted(r["resource"] for i in doc["identities"] for r in i["resources"]) == sorted(resources)


# A realistic user-assigned identity: a 227-character resource id, mixed case.
LONG_RES_ID = ("/subscriptions/3f2b6c1e-8d4a-4e2b-9c7d-5a1e0f9b2c84/resourceGroups/"
               "rg-production-westeurope-platform-shared-services-01/providers/"
               "Microsoft.ManagedIdentity/userAssignedIdentities/id-payments-api-worker-westeurope-prod-000001-ab")
LONG_CLIENT_ID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


@pytest.mark.emulator_args("--user-assigned", f"{LONG_CLIENT_ID},,{LONG_RES_ID}")
def test_status_fits_80_columns_and_wide_shows_everything(agent_factory, emulator):
    assert len(LONG_RES_ID) == 227
    agent = agent_factory(emulator, config={"prefetch": [{"resource": ARM}]})
    health = f"127.0.0.1:{agent.health_port}"
    code, out, err = cli("token", "--resource", ARM, "--mi-res-id", LONG_RES_ID, "--port", str(agent.port))
    assert code == 0, out + err

    code, out, err = cli("status", "--health", health)
    assert code == 0, out + err
    lines = out.splitlines()
    assert all(len(l) <= 80 for l in lines), "\n".join(l for l in lines if len(l) > 80)
    heading = [l for l in lines if l.startswith("mi_res_id=")]
    # Shortened in the middle, the original spelling kept (the key compares lower case).
    assert len(heading) == 1 and "\u2026" in heading[0], lines
    assert heading[0].startswith("mi_res_id=/subscriptions/") and heading[0].endswith("-prod-000001-ab"), heading

    code, out, _ = cli("status", "--health", health, "-o", "wide")
    assert code == 0
    assert f"mi_res_id={LONG_RES_ID}" in out.splitlines()

    code, out, _ = cli("status", "--health", health, columns=120)
    assert code == 0 and all(len(l) <= 120 for l in out.splitlines())
    assert max(len(l) for l in out.splitlines()) > 80
