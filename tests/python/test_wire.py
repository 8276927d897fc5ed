"""What the HTTP transport answers when the request is wrong, what a session's
DELETE answers, the (empty) prompts and resources a client may ask for, tools
that run only as MCP tasks, and the conformance suite's diagnostic tools — each
found by trying the official clients and the conformance suite against mcpplus."""

import json
import shutil

import httpx2 as httpx
import pytest
from mcp import MCPError

from conftest import DIST, ERAS, FIXTURES, HttpServer, connect

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(180)]

ACCEPT = {"Accept": "application/json, text/event-stream"}
INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "wire-test", "version": "0"}}}


def jsonrpc_error(response: httpx.Response) -> dict:
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert body["jsonrpc"] == "2.0" and body["id"] is None, body
    return body["error"]


def test_bad_bodies_get_jsonrpc_errors(http_server):
    json_headers = {**ACCEPT, "Content-Type": "application/json"}
    # Not JSON at all: parse error, HTTP 400.
    r = httpx.post(http_server.url, content=b"{not json", headers=json_headers)
    assert r.status_code == 400
    error = jsonrpc_error(r)
    assert error["code"] == -32700 and "not valid JSON" in error["message"]
    # JSON, but not a JSON-RPC message: invalid request, HTTP 400.
    r = httpx.post(http_server.url, content=b'{"hello": "world"}', headers=json_headers)
    assert r.status_code == 400
    assert jsonrpc_error(r)["code"] == -32600
    # The wrong media type keeps its status, and says so in JSON-RPC.
    r = httpx.post(http_server.url, content=json.dumps(INIT), headers={**ACCEPT, "Content-Type": "text/plain"})
    assert r.status_code == 415
    error = jsonrpc_error(r)
    assert error["code"] == -32600 and "application/json" in error["message"]
    # The server is unharmed.
    assert httpx.post(http_server.url, json=INIT, headers=ACCEPT).status_code == 200


def test_deleting_a_session_answers_204_and_ends_it(http_server):
    r = httpx.post(http_server.url, json=INIT, headers=ACCEPT)
    session = r.headers["mcp-session-id"]
    headers = {**ACCEPT, "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
    initialized = {"jsonrpc": "2.0", "method": "notifications/initialized"}
    assert httpx.post(http_server.url, json=initialized, headers=headers).status_code == 202
    r = httpx.delete(http_server.url, headers=headers)
    assert r.status_code == 204, (r.status_code, r.text)
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    assert httpx.post(http_server.url, json=ping, headers=headers).status_code == 404


@pytest.mark.parametrize("mode", ERAS)
async def test_prompts_and_resources_are_declared_and_empty(http_server, mode):
    async with connect("http", mode, http_server) as client:
        capabilities = client.server_capabilities
        assert capabilities.prompts is not None and capabilities.resources is not None
        assert (await client.list_prompts()).prompts == []
        assert (await client.list_resources()).resources == []
        with pytest.raises(MCPError) as raised:
            await client.get_prompt("summarize")
        assert raised.value.error.code == -32602 and "no prompt `summarize`" in raised.value.error.message
        with pytest.raises(MCPError) as raised:
            await client.read_resource("test://nowhere")
        assert raised.value.error.code == -32602
        assert raised.value.error.data == {"uri": "test://nowhere"}


@pytest.fixture(scope="module")
def conformance_server(tmp_path_factory):
    tools = tmp_path_factory.mktemp("tools")
    shutil.copy(FIXTURES / "conformance.wasm", tools / "conformance.wasm")
    config = tools.parent / "config.toml"
    config.write_text('[queue]\ntask_required = ["failing_job"]\n')
    server = HttpServer("--tools", str(tools), "--config", str(config), "--no-admin", "--conformance-fixtures")
    yield server
    server.stop()


@pytest.mark.parametrize("mode", ERAS)
async def test_a_task_required_tool_refuses_clients_without_tasks(conformance_server, mode):
    async with connect("http", mode, conformance_server) as client:
        with pytest.raises(MCPError) as raised:
            await client.call_tool("failing_job", {})
        error = raised.value.error
        assert error.code == -32021
        assert "runs only as an MCP task" in error.message
        assert error.data == {"requiredCapabilities": {"extensions": {"io.modelcontextprotocol/tasks": {}}}}
        # Other tools of the component answer as usual.
        result = await client.call_tool("greet", {"name": "Ada"})
        assert result.content[0].text == "Hello, Ada!"


@pytest.mark.parametrize("mode", ERAS)
async def test_diagnostic_tools(conformance_server, mode):
    async with connect("http", mode, conformance_server) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert {"test_missing_capability", "test_trigger_tool_change", "test_simple_text"} <= names
        # The Python client declares no sampling capability.
        with pytest.raises(MCPError) as raised:
            await client.call_tool("test_missing_capability", {})
        assert raised.value.error.code == -32021
        assert raised.value.error.data == {"requiredCapabilities": {"sampling": {}}}
        # Each trigger adds or removes test_dynamic_tool.
        before = "test_dynamic_tool" in names
        await client.call_tool("test_trigger_tool_change", {})
        after = {t.name for t in (await client.list_tools()).tools}
        assert ("test_dynamic_tool" in after) != before


def test_diagnostic_tools_are_off_by_default(http_server):
    r = httpx.post(http_server.url, json=INIT, headers=ACCEPT)
    session = r.headers["mcp-session-id"]
    headers = {**ACCEPT, "Mcp-Session-Id": session, "MCP-Protocol-Version": "2025-11-25"}
    httpx.post(http_server.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
    r = httpx.post(http_server.url, json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, headers=headers)
    text = r.text
    assert "echo" in text and "test_missing_capability" not in text and "test_trigger_tool_change" not in text
    httpx.delete(http_server.url, headers=headers)
