"""Prompts and resources served by components (`mcpplus:host/prompts`,
`mcpplus:host/resources`), seen by the official Python MCP client over stdio
and HTTP in both protocol eras: listing, getting with arguments, reading fixed
and templated resources, the errors for unknown names and URIs, a guest that
crashes while rendering a prompt, subscriptions, and hot loading a component
in and out (the lists change and list_changed is sent).

The fixture is guest-tools/conformance, which serves the official conformance
suite's prompts and resources."""

import base64
import os
import shutil

import anyio
import mcp.types as types
import pytest
from mcp import Client, MCPError
from mcp.shared.subscriptions import PromptsListChanged, ResourcesListChanged

from conftest import ERAS, FIXTURES, TRANSPORTS, HttpServer, connect, stdio_params

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]

PROMPTS = {
    "test_simple_prompt",
    "test_prompt_with_arguments",
    "test_prompt_with_embedded_resource",
    "test_prompt_with_image",
    "test_input_required_result_prompt",
    "test_trapping_prompt",
}
RESOURCES = {"test://static-text", "test://static-binary", "test://watched-resource"}
TEMPLATE = "test://template/{id}/data"


def tools_dir(tmp_path_factory, *names):
    tools = tmp_path_factory.mktemp("tools")
    for name in names:
        shutil.copy(FIXTURES / name, tools / name)
    return tools


@pytest.fixture(scope="module")
def tools(tmp_path_factory):
    return tools_dir(tmp_path_factory, "conformance.wasm")


@pytest.fixture(scope="module")
def server(tools):
    server = HttpServer("--tools", str(tools), "--no-admin")
    yield server
    server.stop()


def connection(transport, mode, server, tools):
    return connect(transport, mode, server, serve_args=("--tools", str(tools), "--no-admin"))


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode", ERAS)
async def test_prompts_list_and_get(transport, mode, server, tools):
    async with connection(transport, mode, server, tools) as client:
        prompts = client.server_capabilities.prompts
        assert prompts is not None and prompts.list_changed
        listed = {p.name: p for p in (await client.list_prompts()).prompts}
        assert set(listed) == PROMPTS
        assert all(p.description for p in listed.values())
        args = {a.name: a.required for a in listed["test_prompt_with_arguments"].arguments}
        assert args == {"arg1": True, "arg2": True}

        simple = await client.get_prompt("test_simple_prompt")
        assert simple.messages[0].role == "user" and simple.messages[0].content.text

        with_args = await client.get_prompt("test_prompt_with_arguments", {"arg1": "hello", "arg2": "world"})
        assert with_args.messages[0].content.text == "Prompt with arguments: arg1='hello', arg2='world'"

        embedded = await client.get_prompt("test_prompt_with_embedded_resource", {"resourceUri": "test://x"})
        resource = embedded.messages[0].content
        assert resource.type == "resource" and resource.resource.uri == "test://x"

        image = await client.get_prompt("test_prompt_with_image")
        block = image.messages[0].content
        assert block.type == "image" and block.mime_type == "image/png"
        assert base64.b64decode(block.data).startswith(b"\x89PNG")


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode", ERAS)
async def test_prompt_errors(transport, mode, server, tools):
    async with connection(transport, mode, server, tools) as client:
        with pytest.raises(MCPError) as raised:
            await client.get_prompt("no_such_prompt")
        assert raised.value.error.code == -32602 and "no prompt `no_such_prompt`" in raised.value.error.message

        with pytest.raises(MCPError) as raised:
            await client.get_prompt("test_prompt_with_arguments", {"arg1": "only one"})
        assert raised.value.error.code == -32602 and "arg2" in raised.value.error.message

        # A guest that crashes while rendering: a clean error, and the server keeps serving.
        with pytest.raises(MCPError) as raised:
            await client.get_prompt("test_trapping_prompt")
        assert raised.value.error.code == -32603
        assert "crashed" in raised.value.error.message, raised.value.error.message
        assert (await client.get_prompt("test_simple_prompt")).messages


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode", ERAS)
async def test_resources_list_and_read(transport, mode, server, tools):
    async with connection(transport, mode, server, tools) as client:
        resources = client.server_capabilities.resources
        assert resources is not None and resources.list_changed
        listed = {r.uri: r for r in (await client.list_resources()).resources}
        assert set(map(str, listed)) == RESOURCES
        templates = (await client.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == [TEMPLATE]
        assert templates[0].mime_type == "application/json"

        text = (await client.read_resource("test://static-text")).contents[0]
        assert text.mime_type == "text/plain" and text.text

        blob = (await client.read_resource("test://static-binary")).contents[0]
        assert blob.mime_type == "image/png" and base64.b64decode(blob.blob).startswith(b"\x89PNG")

        templated = (await client.read_resource("test://template/123/data")).contents[0]
        assert str(templated.uri) == "test://template/123/data"
        assert templated.mime_type == "application/json" and '"id":"123"' in templated.text


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode", ERAS)
async def test_unknown_uris_are_invalid_params_with_the_uri(transport, mode, server, tools):
    async with connection(transport, mode, server, tools) as client:
        # No resource, and no template match (a template variable is one segment).
        for uri in ["test://nowhere", "test://template/1/2/data", "test://template//data"]:
            with pytest.raises(MCPError) as raised:
                await client.read_resource(uri)
            assert raised.value.error.code == -32602, uri
            assert raised.value.error.data == {"uri": uri}


async def test_subscribe_and_unsubscribe_legacy(server):
    async with Client(server.url, mode="legacy") as client:
        assert client.server_capabilities.resources.subscribe
        await client.subscribe_resource("test://watched-resource")
        await client.unsubscribe_resource("test://watched-resource")
        with pytest.raises(MCPError) as raised:
            await client.subscribe_resource("test://nowhere")
        assert raised.value.error.code == -32602


class Changes:
    def __init__(self):
        self.prompts = 0
        self.resources = 0

    async def on_message(self, message):
        message = getattr(message, "root", message)
        if isinstance(message, types.PromptListChangedNotification):
            self.prompts += 1
        if isinstance(message, types.ResourceListChangedNotification):
            self.resources += 1


async def wait_for(predicate, what, within=20.0):
    deadline = anyio.current_time() + within
    while not predicate():
        assert anyio.current_time() < deadline, f"timed out waiting for {what()}"
        await anyio.sleep(0.05)


async def test_hot_loading_changes_the_lists(tmp_path):
    tools = tmp_path / "tools"
    tools.mkdir()
    shutil.copy(FIXTURES / "versioned-1.wasm", tools / "versioned.wasm")
    server = HttpServer("--tools", str(tools), "--no-admin", "--watch-settle-ms", "100")
    stdio = stdio_params("--tools", str(tools), "--no-admin", "--watch-settle-ms", "100")
    http_legacy, stdio_legacy = Changes(), Changes()
    try:
        async with (
            Client(server.url, mode="legacy", message_handler=http_legacy.on_message) as c1,
            Client(stdio, mode="legacy", message_handler=stdio_legacy.on_message) as c2,
            Client(server.url, mode="auto") as c3,
        ):
            for c in (c1, c2, c3):
                assert (await c.list_prompts(cache_mode="bypass")).prompts == []
                assert (await c.list_resources(cache_mode="bypass")).resources == []
            modern = {"prompts": 0, "resources": 0}

            async def listen():
                async with c3.listen(prompts_list_changed=True, resources_list_changed=True) as sub:
                    async for event in sub:
                        if isinstance(event, PromptsListChanged):
                            modern["prompts"] += 1
                        if isinstance(event, ResourcesListChanged):
                            modern["resources"] += 1

            async with anyio.create_task_group() as tg:
                tg.start_soon(listen)
                await anyio.sleep(0.5)  # the stream is acknowledged
                tmp = tools / "conformance.wasm.tmp"
                shutil.copy(FIXTURES / "conformance.wasm", tmp)
                os.replace(tmp, tools / "conformance.wasm")
                await wait_for(
                    lambda: min(http_legacy.prompts, http_legacy.resources, stdio_legacy.prompts,
                                stdio_legacy.resources, modern["prompts"], modern["resources"]) >= 1,
                    lambda: f"list_changed after loading: {vars(http_legacy)} {vars(stdio_legacy)} {modern}",
                )
                for c in (c1, c2, c3):
                    names = {p.name for p in (await c.list_prompts(cache_mode="bypass")).prompts}
                    assert names == PROMPTS
                    uris = {str(r.uri) for r in (await c.list_resources(cache_mode="bypass")).resources}
                    assert uris == RESOURCES
                assert (await c3.read_resource("test://template/7/data")).contents[0].text

                (tools / "conformance.wasm").unlink()
                await wait_for(
                    lambda: min(http_legacy.prompts, stdio_legacy.prompts, modern["prompts"]) >= 2,
                    lambda: f"list_changed after unloading: {vars(http_legacy)} {vars(stdio_legacy)} {modern}",
                )
                tg.cancel_scope.cancel()
            for c in (c1, c2, c3):
                assert (await c.list_prompts(cache_mode="bypass")).prompts == []
                assert (await c.list_resource_templates(cache_mode="bypass")).resource_templates == []
            with pytest.raises(MCPError) as raised:
                await c1.read_resource("test://static-text")
            assert raised.value.error.data == {"uri": "test://static-text"}
    finally:
        server.stop()
