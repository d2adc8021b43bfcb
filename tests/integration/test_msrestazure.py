"""Interop with a real client library written for the VM extension: Debian's
python3-msrestazure, get_msi_token(resource, port, msi_conf)."""

import os

import pytest

from conftest import ARM, UA_CLIENT_ID, UA_OBJECT_ID, UA_RES_ID, Agent, Emulator

from msrestazure import azure_active_directory as msrestazure  # noqa: E402  (Debian python3-msrestazure)


@pytest.fixture(scope="module")
def agent():
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "MSI_ENDPOINT"):
        os.environ.pop(var, None)
    os.environ["no_proxy"] = "localhost,127.0.0.1,::1"
    emulator = Emulator()
    a = Agent(emulator)
    yield a
    assert a.stop() == 0, a.output()
    emulator.stop()


@pytest.mark.parametrize("msi_conf", [None, {"client_id": UA_CLIENT_ID}, {"object_id": UA_OBJECT_ID},
                                      {"msi_res_id": UA_RES_ID}])
def test_get_msi_token(agent, msi_conf):
    token_type, access_token, entry = msrestazure.get_msi_token(ARM, agent.port, msi_conf)
    assert token_type == "Bearer"
    assert access_token.count(".") == 2
    assert entry["resource"] == ARM
    assert int(entry["expires_on"]) > 0
    if msi_conf:
        assert entry["client_id"].lower() == UA_CLIENT_ID
