"""`mcpplus:host/client`: a guest asks the MCP client that called it — the user
(elicitation), the client's model (sampling), its roots — seen from the official
Python client (PyPI `mcp`), whose callbacks answer. Both eras: a 2025-11-25 client
gets real server→client requests mid-call; a 2026-07-28 client gets
`input_required` results, which `Client.call_tool` answers and retries by itself.
Prompts ask the same way (`Client.get_prompt` answers and retries too), and a
prompt's signed `requestState` is no tool's.

The guest is the conformance fixture (guest-tools/conformance), whose `ask_client`
tool asks whatever it is given and answers `{answers, state, remember_error}`."""

import json
import shutil

import httpx2 as httpx
import mcp_types as types
import pytest
from mcp import Client, MCPError

from conftest import ERAS, FIXTURES, MCPPLUS, TRANSPORTS, HttpServer, stdio_params

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]

ALL_GRANTS = "[client]\nelicit = true\nsample = true\nroots = true\n"
NAME_FORM = {"message": "What is your name?",
             "requestedSchema": {"type": "object", "properties": {"name": {"type": "string"}},
                                 "required": ["name"]}}
# What the user answers, by form field.
ANSWERS = {"name": "Ada", "color": "blue", "ok": True, "context": "a sunny day"}
SAMPLING = {"messages": [{"role": "user", "content": {"type": "text", "text": "Say hello"}}],
            "maxTokens": 20}


def tools_with(tmp_path_factory, name: str, policy: str | None):
    tools = tmp_path_factory.mktemp(name)
    shutil.copy(FIXTURES / "conformance.wasm", tools / "conformance.wasm")
    if policy is not None:
        (tools / "conformance.policy.toml").write_text(policy)
    return tools


@pytest.fixture(scope="module")
def granted_tools(tmp_path_factory):
    return tools_with(tmp_path_factory, "granted", ALL_GRANTS)


@pytest.fixture(scope="module")
def granted_server(granted_tools):
    server = HttpServer("--tools", str(granted_tools), "--no-admin", "--log-format", "json")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sample_only_tools(tmp_path_factory):
    return tools_with(tmp_path_factory, "sample-only", "[client]\nsample = true\n")


@pytest.fixture(scope="module")
def sample_only_server(sample_only_tools):
    server = HttpServer("--tools", str(sample_only_tools), "--no-admin", "--log-format", "json")
    yield server
    server.stop()


class Callbacks:
    """A client's answers, and what it was asked."""

    def __init__(self):
        self.asked: list[tuple[str, object]] = []

    async def elicit(self, context, params):
        self.asked.append(("elicitation/create", params))
        schema = params.requested_schema
        fields = (schema if isinstance(schema, dict) else schema.model_dump())["properties"]
        return types.ElicitResult(action="accept", content={f: ANSWERS.get(f, "?") for f in fields})

    async def sample(self, context, params):
        self.asked.append(("sampling/createMessage", params))
        return types.CreateMessageResult(role="assistant", model="test-model", stop_reason="endTurn",
                                         content=types.TextContent(type="text", text="Hello from the model"))

    async def roots(self, context):
        self.asked.append(("roots/list", None))
        return types.ListRootsResult(roots=[types.Root(uri="file:///work/project", name="project")])

    def methods(self) -> list[str]:
        return [m for m, _ in self.asked]


def client(transport, mode, server, tools, callbacks: Callbacks | None = None, *, elicit=True, sample=True,
           roots=True):
    target = stdio_params("--tools", str(tools), "--no-admin") if transport == "stdio" else server.url
    kwargs = {}
    if callbacks is not None:
        if elicit:
            kwargs["elicitation_callback"] = callbacks.elicit
        if sample:
            kwargs["sampling_callback"] = callbacks.sample
        if roots:
            kwargs["list_roots_callback"] = callbacks.roots
    return Client(target, mode=mode, read_timeout_seconds=120, **kwargs)


async def ask_client(c: Client, requests: list[dict], remember: str | None = None) -> dict:
    result = await c.call_tool("ask_client", {"requests": requests, "remember": remember})
    assert not result.is_error, result.content
    return json.loads(result.content[0].text)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode", ERAS)
async def test_the_user_the_model_and_the_roots_answer_the_guest(granted_server, granted_tools, transport, mode):
    callbacks = Callbacks()
    async with client(transport, mode, granted_server, granted_tools, callbacks) as c:
        out = await ask_client(c, [
            {"key": "who", "method": "elicitation/create", "params": NAME_FORM},
            {"key": "model", "method": "sampling/createMessage", "params": SAMPLING},
            {"key": "shared", "method": "roots/list", "params": {}},
        ], remember="kept for round 2")
        answers = out["answers"]
        # Each answer reached the guest as the client gave it.
        assert answers["who"] == {"action": "accept", "content": {"name": "Ada"}}, answers
        assert answers["model"]["content"] == {"type": "text", "text": "Hello from the model"}, answers
        assert answers["model"]["model"] == "test-model"
        assert answers["shared"]["roots"] == [{"uri": "file:///work/project", "name": "project"}], answers
        assert out["remember_error"] is None
        if mode == "legacy":
            # Real requests, answered while the guest waited: one run, no state.
            assert out["state"] is None
        else:
            # One input_required round, then the guest ran again with the answers
            # and the state it kept, signed and verified by the host.
            assert out["state"] == "kept for round 2"
        # The client was asked exactly what the guest asked, once each.
        assert sorted(callbacks.methods()) == ["elicitation/create", "roots/list", "sampling/createMessage"]
        elicit = next(p for m, p in callbacks.asked if m == "elicitation/create")
        assert elicit.message == "What is your name?"
        sample = next(p for m, p in callbacks.asked if m == "sampling/createMessage")
        assert sample.max_tokens == 20 and sample.messages[0].content.text == "Say hello"

        # The fixtures of the conformance suite, through the same client.
        callbacks.asked.clear()
        greeting = await c.call_tool("test_input_required_result_elicitation", {})
        assert greeting.content[0].text == "Hello, Ada!"
        multi = await c.call_tool("test_input_required_result_multi_round", {})
        assert multi.content[0].text == "Ada likes blue", multi.content
        state = await c.call_tool("test_input_required_result_request_state", {})
        # The state exists only across rounds: only the 2026 client has them.
        assert state.content[0].text.startswith("state-ok" if mode == "auto" else "state-missing"), state.content


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode", ERAS)
async def test_a_client_without_the_capability_is_not_asked(granted_server, granted_tools, transport, mode):
    callbacks = Callbacks()
    async with client(transport, mode, granted_server, granted_tools, callbacks, elicit=False, roots=False) as c:
        out = await ask_client(c, [
            {"key": "who", "method": "elicitation/create", "params": NAME_FORM},
            {"key": "shared", "method": "roots/list", "params": {}},
            {"key": "model", "method": "sampling/createMessage", "params": SAMPLING},
        ])
        answers = out["answers"]
        assert answers["who"]["error"] == "not-supported", answers
        assert "`elicitation`" in answers["who"]["message"]
        assert answers["shared"]["error"] == "not-supported"
        assert "`roots`" in answers["shared"]["message"]
        # What it declared still works.
        assert answers["model"]["content"]["text"] == "Hello from the model"
        assert callbacks.methods() == ["sampling/createMessage"]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode", ERAS)
async def test_a_method_the_policy_does_not_grant_fails_naming_the_grant(sample_only_server, sample_only_tools,
                                                                         transport, mode):
    callbacks = Callbacks()
    async with client(transport, mode, sample_only_server, sample_only_tools, callbacks) as c:
        out = await ask_client(c, [
            {"key": "who", "method": "elicitation/create", "params": NAME_FORM},
            {"key": "model", "method": "sampling/createMessage", "params": SAMPLING},
            {"key": "bogus", "method": "ping", "params": {}},
        ])
        answers = out["answers"]
        assert answers["who"]["error"] == "failed", answers
        assert "add [client] elicit = true to its policy" in answers["who"]["message"]
        assert answers["model"]["content"]["text"] == "Hello from the model"
        assert answers["bogus"]["error"] == "failed"
        assert "`elicitation/create`, `sampling/createMessage` or `roots/list`" in answers["bogus"]["message"]
        # The refused request never reached the client.
        assert callbacks.methods() == ["sampling/createMessage"]
    if transport == "http":
        assert await sample_only_server.wait_for_log(
            '"capability.denied"', '"capability":"client"', "mcpplus:host/client.ask(elicitation/create)")


async def test_without_a_policy_nothing_is_asked(tmp_path_factory):
    tools = tools_with(tmp_path_factory, "no-policy", None)
    callbacks = Callbacks()
    async with Client(stdio_params("--tools", str(tools), "--no-admin"), mode="auto", read_timeout_seconds=120,
                      elicitation_callback=callbacks.elicit, list_roots_callback=callbacks.roots) as c:
        answer = await c.call_tool("test_input_required_result_list_roots", {})
        assert answer.is_error
        assert "add [client] roots = true to its policy" in answer.content[0].text
        assert callbacks.asked == []


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode", ERAS)
async def test_a_run_may_ask_at_most_16_times(granted_server, granted_tools, transport, mode):
    callbacks = Callbacks()
    requests = [{"key": f"r{i}", "method": "roots/list", "params": {}} for i in range(17)]
    async with client(transport, mode, granted_server, granted_tools, callbacks) as c:
        out = await ask_client(c, requests)
        answers = out["answers"]
        for i in range(16):
            assert answers[f"r{i}"]["roots"][0]["name"] == "project", answers[f"r{i}"]
        assert answers["r16"]["error"] == "failed"
        assert "at most 16 times" in answers["r16"]["message"]
        # 16 requests, each answered once by the client.
        assert callbacks.methods() == ["roots/list"] * 16
        # A duplicate key within the limit is refused too (and big params, and a long key).
        out = await ask_client(c, [
            {"key": "a", "method": "roots/list", "params": {}},
            {"key": "a", "method": "roots/list", "params": {}},
            {"key": "k" * 129, "method": "roots/list", "params": {}},
            {"key": "big", "method": "sampling/createMessage",
             "params": {**SAMPLING, "systemPrompt": "x" * (64 * 1024)}},
        ], remember="s" * (16 * 1024 + 1))
        answers = out["answers"]
        assert answers["a"]["error"] == "failed" and "already asked" in answers["a"]["message"], answers["a"]
        assert answers["k" * 129]["error"] == "failed" and "1 to 128 characters" in answers["k" * 129]["message"]
        assert answers["big"]["error"] == "failed" and "over the limit of 65536 bytes" in answers["big"]["message"]
        assert "over the limit of 16384 bytes" in out["remember_error"]


def post(url: str, tool: str, arguments: dict, method: str = "tools/call", **params) -> dict:
    """One stateless 2026-07-28 `tools/call` (or `prompts/get` of prompt `tool`),
    raw: its JSON-RPC response."""
    body = {"jsonrpc": "2.0", "id": 7, "method": method,
            "params": {"name": tool, "arguments": arguments, **params,
                       "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                                 "io.modelcontextprotocol/clientCapabilities": {"elicitation": {}},
                                 "io.modelcontextprotocol/clientInfo": {"name": "raw", "version": "0"}}}}
    headers = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2026-07-28",
               "Mcp-Method": method, "Mcp-Name": tool}
    r = httpx.post(url, json=body, headers=headers, timeout=60)
    if r.headers["content-type"].startswith("text/event-stream"):
        for line in r.text.splitlines():
            if line.startswith("data:") and line[5:].strip():
                message = json.loads(line[5:])
                if message.get("id") == 7:
                    return message
        raise AssertionError(f"no response in the stream: {r.text}")
    return r.json()


def test_a_tampered_request_state_is_refused_before_the_tool_runs(granted_server):
    tool = "test_input_required_result_tampered_state"
    first = post(granted_server.url, tool, {})["result"]
    assert first["resultType"] == "input_required", first
    assert first["inputRequests"]["confirm"]["method"] == "elicitation/create"
    state = first["requestState"]
    assert "tampered-state" not in state, "the state is encoded, not sent as the guest wrote it"
    answers = {"confirm": {"action": "accept", "content": {"ok": True}}}

    for bad, why in [(state + "-TAMPERED", "changed"), (state[:-2] + ("AA" if state[-2:] != "AA" else "BB"), "flipped"),
                     ("rs2.bm90LXNpZ25lZA.bm90LXNpZ25lZA", "forged")]:
        error = post(granted_server.url, tool, {}, inputResponses=answers, requestState=bad).get("error")
        assert error is not None, why
        assert error["code"] == -32602 and "requestState" in error["message"], (why, error)
    # Signed for another tool: refused too.
    other = post(granted_server.url, "test_input_required_result_request_state", {},
                 inputResponses=answers, requestState=state).get("error")
    assert other is not None and other["code"] == -32602, other
    # The state as signed completes the call.
    done = post(granted_server.url, tool, {}, inputResponses=answers, requestState=state)["result"]
    assert done.get("resultType", "complete") == "complete" and done["content"][0]["text"].startswith("confirmed"), done
    # An answer that is not a result of its request: -32602 too.
    error = post(granted_server.url, tool, {}, inputResponses={"confirm": 12345}, requestState=state).get("error")
    assert error is not None and error["code"] == -32602 and "`confirm`" in error["message"], error


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("mode", ERAS)
async def test_a_prompt_asks_the_client_as_a_tool_does(granted_server, granted_tools, sample_only_server,
                                                       sample_only_tools, transport, mode):
    callbacks = Callbacks()
    async with client(transport, mode, granted_server, granted_tools, callbacks) as c:
        # 2025-11-25: a real elicitation/create while the prompt renders;
        # 2026-07-28: an input_required round, which get_prompt answers and retries.
        prompt = await c.get_prompt("test_input_required_result_prompt")
        assert prompt.messages[0].content.text == "Prompt with context: a sunny day", prompt.messages
        assert callbacks.methods() == ["elicitation/create"]
        assert callbacks.asked[0][1].message == "What context should the prompt use?"
    # The component's [client] grants apply to its prompts too.
    async with client(transport, mode, sample_only_server, sample_only_tools, Callbacks()) as c:
        with pytest.raises(MCPError) as raised:
            await c.get_prompt("test_input_required_result_prompt")
        assert raised.value.error.code == -32603, raised.value.error
        assert "[client] elicit = true" in raised.value.error.message, raised.value.error.message


def test_a_prompt_state_is_no_tool_state_and_back(granted_server):
    prompt, tool = "test_input_required_result_prompt", "test_input_required_result_tampered_state"
    first = post(granted_server.url, prompt, {}, method="prompts/get")["result"]
    assert first["resultType"] == "input_required", first
    assert list(first["inputRequests"]) == ["user_context"], first
    assert first["inputRequests"]["user_context"]["method"] == "elicitation/create"
    prompt_state = first["requestState"]
    tool_state = post(granted_server.url, tool, {})["result"]["requestState"]
    answers = {"user_context": {"action": "accept", "content": {"context": "raw"}},
               "confirm": {"action": "accept", "content": {"ok": True}}}

    # A prompt's state sent with a tool call, a tool's with prompts/get: refused.
    error = post(granted_server.url, tool, {}, inputResponses=answers, requestState=prompt_state).get("error")
    assert error is not None and error["code"] == -32602 and "requestState" in error["message"], error
    error = post(granted_server.url, prompt, {}, method="prompts/get", inputResponses=answers,
                 requestState=tool_state).get("error")
    assert error is not None and error["code"] == -32602 and "requestState" in error["message"], error
    # Each with its own request completes.
    done = post(granted_server.url, prompt, {}, method="prompts/get", inputResponses=answers,
                requestState=prompt_state)["result"]
    assert done.get("resultType", "complete") == "complete", done
    assert done["messages"][0]["content"]["text"] == "Prompt with context: raw", done
    done = post(granted_server.url, tool, {}, inputResponses=answers, requestState=tool_state)["result"]
    assert done["content"][0]["text"].startswith("confirmed"), done


def test_a_call_no_client_made_has_no_one_to_ask(granted_tools):
    import subprocess

    out = subprocess.run(
        [MCPPLUS, "call", str(granted_tools / "conformance.wasm"), "ask_client", "--args",
         json.dumps({"requests": [{"key": "who", "method": "elicitation/create", "params": NAME_FORM}]})],
        capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    answers = json.loads(json.loads(out.stdout)["content"][0]["text"])["answers"]
    assert answers["who"]["error"] == "failed" and "no MCP client to ask" in answers["who"]["message"], answers
