"""Every failure explains itself (issue #15 point 3) and callers fail fast while
IMDS is down (point 8), against the real agent and emulator:
  * IMDS's error_description is the "description" of /status's last_error, in
    the failure's log line and in `mi-agent status`; the caller's answer is
    IMDS's body, unchanged;
  * an agent pointed at a closed port says "connection refused", and a caller
    without a token gets its 500 well before a 10 s client timeout although
    retries would take far longer (the answer's arrival is asserted, never a
    time);
  * the CLI's "cannot reach" messages say what to run next."""

import json
import os
import re
import subprocess

from conftest import ARM, agent_command, free_port, request, wait_for

UNKNOWN_CLIENT = "99999999-8888-4777-8666-555555555555"
HINT = "is the service running? try: systemctl status mi-agent"


def cli(*args):
    env = dict(os.environ)
    env.update(http_proxy="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9", no_proxy="", NO_PROXY="")
    r = subprocess.run(agent_command(*args), capture_output=True, text=True, timeout=120, env=env)
    return r.returncode, r.stdout, r.stderr


def status(agent):
    code, _, body = agent.health("/status")
    assert code == 200, body
    return json.loads(body)


def entry(doc, identity, resource):
    for i in doc["identities"]:
        for r in i["resources"]:
            if i["identity"] == identity and r["resource"] == resource:
                return r
    raise AssertionError(f"no entry for {identity} {resource}: {doc['identities']}")


def test_imds_error_description_in_status_log_and_cli(agent_factory, emulator):
    agent = agent_factory(emulator)
    code, _, body = agent.token(f"resource={ARM}&client_id={UNKNOWN_CLIENT}")
    assert code == 400
    # The caller gets IMDS's own body, as before.
    assert json.loads(body) == {"error": "invalid_request", "error_description": "Identity not found"}

    e = entry(status(agent), f"client_id={UNKNOWN_CLIENT}", ARM)
    assert e["state"] == "failing"
    assert e["last_error"] == {"status": 400, "error": "invalid_request", "description": "Identity not found"}
    # IMDS answered: upstream has no failure of its own (a rejection is an answer).
    assert status(agent)["upstream"]["last_error"] is None

    wait_for(lambda: re.search(r"failing \(last error: 400 invalid_request: Identity not found\)", agent.output()),
             what="the failure's log line with its description")

    code, out, err = cli("status", "--health", f"127.0.0.1:{agent.health_port}")
    assert code == 1, out + err
    lines = out.splitlines()
    heading = lines.index(f"client_id={UNKNOWN_CLIENT}")
    assert "failing" in lines[heading + 1] and "400 invalid_request" in lines[heading + 1], out
    assert lines[heading + 2] == "    Identity not found", out


def test_closed_port_is_refused_and_callers_fail_fast(agent_factory):
    closed = free_port()
    # Retries that would outlast the client's 10 s several times over: only
    # failing fast answers in time.
    config = {"retry": {"max_attempts": 100, "delta_seconds": 1, "max_delay_seconds": 5},
              "limits": {"caller_deadline_seconds": 60, "fail_fast_seconds": 2}}
    agent = agent_factory(imds_url=f"http://127.0.0.1:{closed}/metadata/identity/oauth2/token", config=config)

    for _ in range(2):  # the first learns IMDS is down, the second arrives while it is
        code, _, body = request(agent.port, "GET", f"/metadata/identity/oauth2/token?api-version=2018-02-01&resource={ARM}",
                                {"Metadata": "true"}, timeout=10)
        assert code == 500, body
        assert json.loads(body)["error"] == "unknown"
        assert "refused" not in body  # the description is for /status and logs only

    doc = status(agent)
    up = doc["upstream"]
    assert up["state"] == "failing"
    assert up["last_error"]["status"] == 0 and up["last_error"]["error"] == "connect_error"
    assert up["last_error"]["description"] == "connection refused"
    assert entry(doc, "default", ARM)["last_error"]["description"] == "connection refused"
    wait_for(lambda: "IMDS request failed: connect_error (connection refused)" in agent.output(),
             what="the upstream failure's log line")

    code, out, _ = cli("status", "--health", f"127.0.0.1:{agent.health_port}")
    assert code == 1
    assert out.splitlines()[1].startswith("IMDS failing (connect_error: connection refused)"), out


def test_cli_cannot_reach_says_what_to_try():
    port = free_port()
    code, out, err = cli("status", "--health", f"127.0.0.1:{port}")
    assert code == 2 and out == ""
    assert "cannot reach the agent's health listener at http://127.0.0.1:" in err and HINT in err, err
    code, out, err = cli("token", "--resource", ARM, "--port", str(port))
    assert code == 2 and out == ""
    assert "cannot reach the agent's token listener at" in err and HINT in err, err
