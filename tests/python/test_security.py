"""Capability grants seen from a real MCP client (PyPI `mcp`): tool annotations come
from the grants, an escape attempt is a tool error with an audit event in the
server log, and a component whose policy is broken is refused while the others
serve."""

import json
import shutil

import pytest

from conftest import DIST, ERAS, FIXTURES, HttpServer, connect

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]


@pytest.fixture
def tools_dir(tmp_path):
    """hostile (read-only grant of `granted/`), text_utils (no policy), and
    showcase with a policy that names an unknown capability."""
    tools = tmp_path / "tools"
    tools.mkdir()
    granted = tmp_path / "granted"
    granted.mkdir()
    (granted / "note.txt").write_text("inside")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("SECRET")
    shutil.copy(FIXTURES / "hostile.wasm", tools)
    shutil.copy(DIST / "text_utils.wasm", tools)
    shutil.copy(DIST / "showcase.wasm", tools)
    (tools / "hostile.policy.toml").write_text(
        f'[[files]]\nhost = "{granted}"\nguest = "/data"\naccess = "read-only"\n'
    )
    (tools / "showcase.policy.toml").write_text('env = ["HOME"]\n\n[filesystem]\nroot = "/"\n')
    return tools


def denials(server: HttpServer) -> list[dict]:
    events = []
    for line in server.stderr_lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "capability.denied":
            events.append(event)
    return events


@pytest.mark.parametrize("mode", ERAS)
async def test_grants_shape_annotations_and_refusals(tools_dir, mode):
    server = HttpServer("--tools", str(tools_dir), "--log-format", "json")
    try:
        # The broken policy refuses showcase, with file, line and key.
        assert await server.wait_for_log("showcase.policy.toml: line 3", "unknown capability or key `filesystem`")
        async with connect("http", mode, http_server=server) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert "read_at" in tools and "change_case" in tools
            assert "echo_integers" not in tools, "showcase must not load with a broken policy"

            hints = tools["read_at"].annotations
            assert hints.read_only_hint is True
            assert hints.destructive_hint is False
            assert hints.open_world_hint is False

            inside = await client.call_tool("read_at", {"path": "note.txt"})
            assert not inside.is_error and inside.structured_content == {"result": "inside"}

            escape = await client.call_tool("read_at", {"path": "../outside/secret.txt"})
            assert escape.is_error and escape.content[0].text == "not-permitted"
            write = await client.call_tool("write_at", {"path": "note.txt", "contents": "x"})
            assert write.is_error and write.content[0].text == "not-permitted"

            http = await client.call_tool("http_get", {"authority": "127.0.0.1:9"})
            assert http.is_error and "permission denied" in http.content[0].text

        assert await server.wait_for_log('"capability.denied"', '"open ../outside/secret.txt"')
        events = denials(server)
        targets = {e["target"] for e in events}
        assert {"open ../outside/secret.txt", "open-for-writing note.txt"} <= targets
        assert any(e["capability"] == "network" for e in events)
        for e in events:
            assert e["component"] == "hostile" and e["tool"] and e["call_id"] > 0 and e["reason"]
        # One refusal per call here, and every call has its own id.
        assert len({e["call_id"] for e in events}) == len(events)
        assert (tools_dir.parent / "granted" / "note.txt").read_text() == "inside"
    finally:
        server.stop()
