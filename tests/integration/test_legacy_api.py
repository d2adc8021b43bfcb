"""The legacy VM-extension API and the IMDS-shaped API, every request form of
SPEC §3 against the real agent and the real emulator, on 127.0.0.1 and ::1."""

import base64
import json
import os
import signal
import socket

import pytest

from conftest import (ARM, UA_CLIENT_ID, UA_OBJECT_ID, UA_RES_ID, Agent, Emulator, free_port, request,
                      token_request, wait_for)

ENC_ARM = "https%3A%2F%2Fmanagement.azure.com%2F"


@pytest.fixture(scope="module")
def env():
    emulator = Emulator()
    agent = Agent(emulator, config={"retry": {"max_attempts": 2, "delta_seconds": 0.01},
                                    "cache": {"negative_ttl_seconds": 0}})
    yield emulator, agent
    code = agent.stop()
    emulator.stop()
    assert code == 0, agent.output()


def claims(token_json):
    payload = token_json["access_token"].split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def assert_token(status, body, resource=ARM):
    assert status == 200, body
    j = json.loads(body)
    for field in ("access_token", "expires_in", "expires_on", "not_before", "resource", "token_type"):
        assert isinstance(j[field], str), (field, j)
    assert j["token_type"] == "Bearer"
    assert j["expires_on"].isdigit() and j["expires_in"].isdigit()
    assert j["resource"] == resource
    assert j["access_token"].count(".") == 2
    return j


def raw(port, data, host="127.0.0.1", read_responses=1):
    """Sends raw bytes; returns the raw answer text (reads `read_responses` responses)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect((host, port))
        s.sendall(data)
        out = b""
        while out.count(b"HTTP/1.1 ") < read_responses or not _complete(out, read_responses):
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        return out.decode("utf-8", "replace")


def _complete(out, n):
    # Every response carries Content-Length; check the last body is complete.
    parts = out.split(b"HTTP/1.1 ")[1:]
    if len(parts) < n:
        return False
    last = parts[-1]
    head, sep, body = last.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":")[1])
    return True


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_get_on_both_loopback_addresses(env, host):
    _, agent = env
    assert_token(*token_request(agent.port, "resource=" + ENC_ARM, host=host)[::2])


def test_get_with_api_version_on_the_legacy_path(env):
    _, agent = env
    assert_token(*agent.token("resource=" + ENC_ARM + "&api-version=2018-02-01")[::2])


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded",
                                          "application/x-www-form-urlencoded; charset=UTF-8"])
def test_post_form_with_content_length(env, content_type):
    _, agent = env
    status, _, body = request(agent.port, "POST", "/oauth2/token",
                              {"Metadata": "true", "Content-Type": content_type}, "resource=" + ENC_ARM)
    assert_token(status, body)


def test_post_form_chunked(env):
    _, agent = env
    body = ("resource=" + ENC_ARM).encode()
    data = (b"POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n" % 10 + body[:10] + b"\r\n" + b"%x\r\n" % (len(body) - 10) + body[10:] + b"\r\n0\r\n\r\n")
    answer = raw(agent.port, data)
    assert answer.startswith("HTTP/1.1 200"), answer
    assert_token(200, answer.split("\r\n\r\n", 1)[1])


def test_post_empty_body_with_query_parameters(env):
    _, agent = env
    status, _, body = request(agent.port, "POST", "/oauth2/token?resource=" + ENC_ARM,
                              {"Metadata": "true", "Content-Length": "0"})
    assert_token(status, body)


def test_content_type_on_a_bodyless_get_lowercase_headers_no_user_agent(env):
    _, agent = env
    answer = raw(agent.port, ("GET /oauth2/token?resource=" + ENC_ARM + " HTTP/1.1\r\nhost: localhost\r\n"
                              "metadata: true\r\ncontent-type: application/json\r\n\r\n").encode())
    assert answer.startswith("HTTP/1.1 200"), answer


def test_keep_alive_and_pipelining_answer_in_order(env):
    _, agent = env
    resources = ["https://a.example/", "https://b.example/", "https://c.example/"]
    data = b"".join(("GET /oauth2/token?resource=" + r + " HTTP/1.1\r\nHost: localhost\r\nMetadata: true\r\n"
                     "Connection: keep-alive\r\n\r\n").encode() for r in resources)
    answer = raw(agent.port, data, read_responses=3)
    bodies = [part.split("\r\n\r\n", 1)[1] for part in answer.split("HTTP/1.1 ")[1:]]
    assert [json.loads(b)["resource"] for b in bodies] == resources


def test_empty_client_id_means_not_given_and_unknown_fields_are_ignored(env):
    emulator, agent = env
    status, _, body = request(agent.port, "POST", "/oauth2/token",
                              {"Metadata": "true", "Content-Type": "application/x-www-form-urlencoded"},
                              "resource=" + ENC_ARM + "&client_id=&grant_type=client_credentials"
                              "&authority=https%3A%2F%2Flogin.microsoftonline.com&api-version=2018-02-01")
    j = assert_token(status, body)
    assert claims(j)["xms_mirid"].lower().find("userassignedidentities") < 0  # the system identity


def test_plus_and_percent_decoding_and_unencoded_resource(env):
    emulator, agent = env
    assert_token(*agent.token("resource=https://management.azure.com/")[::2])
    status, _, body = agent.token("resource=https%3A%2F%2Fexample.com%2Fa+b")
    assert_token(status, body, resource="https://example.com/a b")


@pytest.mark.parametrize("param,value", [("client_id", UA_CLIENT_ID), ("client_id", UA_CLIENT_ID.upper()),
                                         ("object_id", UA_OBJECT_ID), ("msi_res_id", UA_RES_ID),
                                         ("mi_res_id", UA_RES_ID)])
def test_user_assigned_selectors(env, param, value):
    emulator, agent = env
    from urllib.parse import quote
    status, _, body = agent.token(f"resource={ENC_ARM}&{param}={quote(value, safe='')}")
    j = assert_token(status, body)
    assert j["client_id"].lower() == UA_CLIENT_ID


def test_msi_res_id_is_sent_upstream_as_mi_res_id(env):
    emulator, agent = env
    from urllib.parse import quote
    emulator.reset()
    status, _, body = agent.token("resource=https%3A%2F%2Fmsi-res-id.example%2F&msi_res_id=" + quote(UA_RES_ID, safe=""))
    assert_token(status, body, resource="https://msi-res-id.example/")
    log = emulator.requests()["log"]
    assert len(log) == 1 and log[0]["selector"].lower() == ("mi_res_id=" + UA_RES_ID).lower(), log


@pytest.mark.parametrize("path", ["/oauth2/token/", "//oauth2/token"])
def test_trailing_and_doubled_slash(env, path):
    _, agent = env
    assert_token(*agent.token("resource=" + ENC_ARM, path=path)[::2])


@pytest.mark.parametrize("path", ["/metadata/identity/oauth2/token", "/metadata/identity/oauth2/token/",
                                  "//metadata/identity/oauth2/token"])
def test_imds_shaped_endpoint(env, path):
    _, agent = env
    assert_token(*agent.token("api-version=2018-02-01&resource=" + ENC_ARM, path=path)[::2])


def test_imds_shaped_endpoint_requires_api_version(env):
    _, agent = env
    status, _, body = agent.token("resource=" + ENC_ARM, path="/metadata/identity/oauth2/token")
    assert status == 400 and json.loads(body)["error"] == "invalid_request"


@pytest.mark.parametrize("headers", [{}, {"Metadata": "True"}, {"Metadata": "1"}, {"Metadata": ""}])
def test_metadata_header_is_required_exactly(env, headers):
    _, agent = env
    status, _, body = request(agent.port, "GET", "/oauth2/token?resource=" + ENC_ARM, headers)
    assert status == 400
    assert json.loads(body) == {"error": "bad_request_102",
                                "error_description": "Required metadata header not specified"}


def expect_error(result, status, error):
    got_status, headers, body = result
    assert got_status == status, body
    assert headers["content-type"].startswith("application/json")
    assert json.loads(body)["error"] == error, body


@pytest.mark.parametrize("query", [
    "client_id=" + UA_CLIENT_ID,                                          # no resource
    "resource=" + ENC_ARM + "&client_id=" + UA_CLIENT_ID + "&object_id=" + UA_OBJECT_ID,  # two selectors
    "resource=" + ENC_ARM + "&client_id=not-a-guid",                       # malformed ids
    "resource=" + ENC_ARM + "&object_id=1234",
    "resource=" + ENC_ARM + "&msi_res_id=%2Fnot%2Fan%2Farm%2Fid",
    "resource=" + ENC_ARM + "&resource=https%3A%2F%2Fother%2F",            # given twice
    "resource=%ZZ",                                                        # bad escape
])
def test_invalid_requests_never_reach_imds(env, query):
    emulator, agent = env
    before = emulator.count()
    expect_error(agent.token(query), 400, "invalid_request")
    assert emulator.count() == before


def test_x_forwarded_for_is_refused(env):
    _, agent = env
    expect_error(request(agent.port, "GET", "/oauth2/token?resource=" + ENC_ARM,
                         {"Metadata": "true", "X-Forwarded-For": "10.0.0.1"}), 400, "invalid_request")


def raw_status_error(answer):
    """(status, error) of one raw answer."""
    status = int(answer.split(" ", 2)[1]) if answer.startswith("HTTP/1.") else 0
    body = answer.split("\r\n\r\n", 1)[1] if "\r\n\r\n" in answer else ""
    try:
        return status, json.loads(body).get("error")
    except ValueError:
        return status, None


TOKEN_TARGET = "/oauth2/token?resource=" + ENC_ARM


def get(head, target=TOKEN_TARGET, version="HTTP/1.1"):
    return (f"GET {target} {version}\r\n{head}Metadata: true\r\nConnection: close\r\n\r\n").encode()


@pytest.mark.parametrize("head", [
    "Host: attacker.example:50342\r\n",                     # DNS rebinding: the page's own name
    "Host: attacker.example\r\n",
    "Host: localhost.attacker.example\r\n",
    "Host: localhost:http\r\n",                             # malformed port
    "Host: \r\n",
    "",                                                      # HTTP/1.1 without Host
    "Host: localhost\r\nHost: localhost\r\n",              # several Host headers
    "Host: localhost\r\nOrigin: http://attacker.example\r\n",
    "Host: localhost\r\nOrigin: null\r\n",
])
def test_foreign_missing_or_doubled_host_and_origin_are_refused(env, head):
    emulator, agent = env
    before = emulator.count()
    assert raw_status_error(raw(agent.port, get(head))) == (400, "invalid_request")
    assert raw_status_error(raw(agent.port, get(head, "/no/such/path"))) == (400, "invalid_request")
    assert emulator.count() == before


@pytest.mark.parametrize("host,head", [
    ("127.0.0.1", "Host: localhost\r\n"),
    ("127.0.0.1", "Host: LOCALHOST:50342\r\n"),
    ("127.0.0.1", "Host: 127.0.0.1:1\r\n"),
    ("::1", "Host: [::1]:50342\r\n"),
    ("::1", "Host: [::1]\r\n"),
])
def test_loopback_host_names_are_served_on_any_port(env, host, head):
    _, agent = env
    answer = raw(agent.port, get(head), host=host)
    assert answer.startswith("HTTP/1.1 200"), answer


def test_http10_without_host_is_served(env):
    _, agent = env
    answer = raw(agent.port, get("", version="HTTP/1.0"))
    assert answer.startswith("HTTP/1.1 200"), answer
    assert_token(200, answer.split("\r\n\r\n", 1)[1])


def test_metadata_only_in_a_chunked_trailer_does_not_pass(env):
    emulator, agent = env
    body = ("resource=" + ENC_ARM).encode()
    data = (b"POST /oauth2/token HTTP/1.1\r\nHost: localhost\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n" + b"%x\r\n" % len(body) + body + b"\r\n0\r\nMetadata: true\r\n\r\n")
    before = emulator.count()
    answer = raw(agent.port, data)
    assert raw_status_error(answer) == (400, "bad_request_102"), answer
    assert emulator.count() == before


def test_allowed_hosts_and_absolute_form_authority(agent_factory, emulator):
    agent = agent_factory(emulator, config={"allowed_hosts": ["MyVM.internal", "[fd00::4]"], "absolute_form": True})
    for head in ("Host: myvm.internal:50342\r\n", "Host: MYVM.INTERNAL\r\n", "Host: [fd00::4]:80\r\n",
                 "Host: 169.254.169.254\r\n"):
        answer = raw(agent.port, get(head))
        assert answer.startswith("HTTP/1.1 200"), (head, answer)
    imds = "/metadata/identity/oauth2/token?api-version=2018-02-01&resource=" + ENC_ARM
    answer = raw(agent.port, get("Host: 169.254.169.254\r\n", "http://169.254.169.254" + imds))
    assert answer.startswith("HTTP/1.1 200"), answer
    answer = raw(agent.port, get("Host: localhost\r\n", "http://myvm.internal:50342" + imds))
    assert answer.startswith("HTTP/1.1 200"), answer
    for target in ("http://attacker.example" + imds, "http://attacker.example:80" + imds,
                   "http://user@169.254.169.254" + imds):
        for head in ("Host: localhost\r\n", "Host: attacker.example\r\n"):
            assert raw_status_error(raw(agent.port, get(head, target))) == (400, "invalid_request"), (target, head)
    assert raw_status_error(raw(agent.port, get("Host: othervm.internal\r\n"))) == (400, "invalid_request")


def test_allowed_hosts_apply_on_reload(agent_factory, emulator):
    agent = agent_factory(emulator)
    assert raw_status_error(raw(agent.port, get("Host: myvm.internal\r\n"))) == (400, "invalid_request")
    cfg = dict(agent.config, allowed_hosts=["myvm.internal"])
    agent.write_config(cfg)
    agent.send_signal(signal.SIGHUP)
    wait_for(lambda: raw(agent.port, get("Host: myvm.internal\r\n")).startswith("HTTP/1.1 200"),
             what="allowed_hosts applied on reload")
    # The defaults stay: the CLI and the SDKs name 127.0.0.1 / localhost.
    assert raw(agent.port, get("Host: localhost\r\n")).startswith("HTTP/1.1 200")


def test_invalid_allowed_hosts_fail_start_up_with_the_key_path():
    agent = Agent(config={"allowed_hosts": ["myvm.internal", "bad host"]}, wait_ready=False)
    try:
        assert agent.wait() != 0
        assert "allowed_hosts[1]" in agent.output(), agent.output()
    finally:
        agent.stop()
        os.unlink(agent.config_path)


def test_options_and_unknown_methods_are_refused(env):
    _, agent = env
    for method in ("OPTIONS", "PUT", "DELETE"):
        status, _, body = request(agent.port, method, "/oauth2/token?resource=" + ENC_ARM, {"Metadata": "true"})
        assert status == 405, (method, body)
        assert "access-control-allow-origin" not in body.lower()


def test_unknown_path(env):
    _, agent = env
    status, _, body = request(agent.port, "GET", "/oauth2/other", {"Metadata": "true"})
    assert status == 401
    assert json.loads(body) == {"error": "unknown_source", "error_description": "Unknown Source /oauth2/other"}


def test_malformed_http_gets_400_and_the_agent_lives_on(env):
    _, agent = env
    answer = raw(agent.port, b"GARBAGE\r\n\r\n")
    assert answer.startswith("HTTP/1.1 400"), answer
    assert_token(*agent.token("resource=" + ENC_ARM)[::2])


def test_imds_4xx_is_passed_through(env):
    emulator, agent = env
    unknown = "11111111-2222-4333-8444-555555555555"
    status, _, body = agent.token(f"resource={ENC_ARM}&client_id={unknown}")
    assert status == 400
    assert json.loads(body) == {"error": "invalid_request", "error_description": "Identity not found"}


def test_imds_5xx_and_malformed_become_500_unknown(env):
    emulator, agent = env
    emulator.faults([{"status": 500, "count": 2}])
    expect_error(agent.token("resource=https%3A%2F%2Ffive-hundred%2F"), 500, "unknown")
    emulator.faults([{"malformed": True, "count": 2}])
    expect_error(agent.token("resource=https%3A%2F%2Fmalformed%2F"), 500, "unknown")
    emulator.faults([])
    assert_token(*agent.token("resource=https%3A%2F%2Fmalformed%2F")[::2], resource="https://malformed/")


def test_emulator_down_gives_500_and_the_agent_keeps_running(agent_factory):
    dead = free_port()
    agent = agent_factory(config={"imds": {"endpoint": f"http://127.0.0.1:{dead}/metadata/identity/oauth2/token"},
                                  "retry": {"max_attempts": 2, "delta_seconds": 0.01}})
    expect_error(agent.token("resource=" + ENC_ARM), 500, "unknown")
    assert agent.alive()
    status, _, _ = agent.health("/healthz")
    assert status == 200
