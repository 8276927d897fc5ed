"""Federated calls across real mcpplus nodes on loopback, with the official
client on node A: A lists the tools its peers host and runs calls of them as
its own tasks that a hosting peer pulls. Asserted: the listing marks where a
tool runs; a call returns the peer's result and names the peer; progress
crosses the hop; A's own workers never take a peer's task; with the hosting
node killed mid-call, another host finishes it; with no host left the call
fails with a clear error once `call_timeout_ms` passes, and its task is
cancelled."""

import sqlite3
import subprocess
import time

import anyio
import pytest
from mcp import Client

from conftest import MCPPLUS
from mesh_nodes import Node

pytestmark = pytest.mark.anyio


async def wait_for_tool(client: Client, name: str, within: float = 30.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        tools = {t.name: t for t in (await client.list_tools()).tools}
        if name in tools:
            return tools[name]
        await anyio.sleep(0.2)
    raise AssertionError(f"{name} never appeared in tools/list")


async def wait_until(check, what: str, within: float = 30.0):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return
        await anyio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Progress:
    def __init__(self):
        self.seen = []

    async def on_progress(self, progress, total, message):
        self.seen.append((progress, total, message))


async def test_a_client_of_one_node_calls_tools_another_node_hosts(tmp_path):
    a, c = Node(tmp_path, "a"), Node(tmp_path, "c")
    c.host("recorder.wasm", "showcase.wasm")
    # A runs two local workers: they must leave the peers' tasks alone.
    a.configure({c.id: ["claim"]}, extra="[queue]\nworkers = 2\nlease_ms = 3000\n", mesh="federate = true")
    c.configure({a.id: []})
    try:
        a.start("--mesh-listen", "/ip4/127.0.0.1/tcp/0")
        c.start("--bootstrap", a.address)
        async with Client(a.server.url, mode="legacy", read_timeout_seconds=60) as client:
            tool = await wait_for_tool(client, "note_execution")
            assert tool.meta["mcpplus/federated"] is True
            assert tool.meta["mcpplus/hosts"] == [c.id]
            assert set(tool.input_schema["properties"]) == {"key", "work_ms"}

            result = await client.call_tool("note_execution", {"key": "f1", "work_ms": 0})
            assert not result.is_error, result
            assert result.structured_content == {"result": 0}
            assert result.meta["mcpplus/peer"] == c.id
            assert c.journal() == ["f1"]

            got = Progress()
            result = await client.call_tool(
                "count_to", {"to": 5, "pause_ms": 300}, progress_callback=got.on_progress
            )
            assert result.structured_content == {"result": 5}
            values = [p[0] for p in got.seen]
            assert len(values) >= 2, got.seen
            assert values == sorted(values) and values[-1] <= 5 and got.seen[-1][1] == 5

            # A tool nobody hosts is still an unknown tool.
            with pytest.raises(Exception, match="Unknown tool"):
                await client.call_tool("no_such_tool", {})
        assert await a.server.wait_for_log('"mesh.federated_call"', '"tool":"count_to"')
        # A's local workers claimed nothing: every run happened on C.
        assert not any('"queue.task_started"' in line and '"worker":"local' in line for line in a.server.stderr_lines)
    finally:
        a.stop()
        c.stop()


async def test_a_federated_call_survives_its_host_dying_and_fails_clearly_with_none_left(tmp_path):
    a, b, c = Node(tmp_path, "a"), Node(tmp_path, "b"), Node(tmp_path, "c")
    for worker in (b, c):
        worker.host("recorder.wasm")
        worker.configure({a.id: []})
    a.configure(
        {b.id: ["claim"], c.id: ["claim"]},
        extra="[queue]\nworkers = 0\nlease_ms = 3000\n",
        mesh="federate = true\ncall_timeout_ms = 15000",
    )
    try:
        a.start("--mesh-listen", "/ip4/127.0.0.1/tcp/0")
        c.start("--bootstrap", a.address)
        async with Client(a.server.url, mode="legacy", read_timeout_seconds=60) as client:
            await wait_for_tool(client, "note_execution")
            outcome = {}

            async def call(key, work_ms):
                try:
                    outcome[key] = await client.call_tool("note_execution", {"key": key, "work_ms": work_ms})
                except Exception as e:  # the clear error is the point of the second call
                    outcome[key] = e

            async with anyio.create_task_group() as tg:
                tg.start_soon(call, "k1", 4000)
                await wait_until(lambda: "k1" in c.journal(), "C to start k1")
                c.kill()
                b.start("--bootstrap", a.address)
            result = outcome["k1"]
            assert not isinstance(result, Exception), result
            assert result.meta["mcpplus/peer"] == b.id
            assert "k1" in b.journal()

            started = time.monotonic()
            async with anyio.create_task_group() as tg:
                tg.start_soon(call, "k2", 60000)
                await wait_until(lambda: "k2" in b.journal(), "B to start k2")
                b.kill()
            error = outcome["k2"]
            assert isinstance(error, Exception), error
            assert "no peer finished it within 15 s" in str(error)
            assert time.monotonic() - started < 40
        # A's queue (read beside the running server): k1 completed by B, k2 cancelled.
        with sqlite3.connect(a.dir / "data" / "queue.sqlite3") as db:
            rows = dict(db.execute("SELECT json_extract(arguments, '$.key'), state FROM tasks").fetchall())
        assert rows == {"k1": "completed", "k2": "cancelled"}
    finally:
        for node in (a, b, c):
            node.stop()


async def test_a_task_for_a_tool_no_node_hosts_is_accepted_with_a_warning_and_runs_once_a_host_joins(tmp_path):
    a, c = Node(tmp_path, "a"), Node(tmp_path, "c")
    a.host("task_queue.wasm")
    c.host("recorder.wasm")
    a.configure({c.id: ["claim"]}, extra="[queue]\nworkers = 2\n")
    c.configure({a.id: []})
    try:
        a.start("--mesh-listen", "/ip4/127.0.0.1/tcp/0")
        async with Client(a.server.url, mode="legacy", read_timeout_seconds=60) as client:
            submit = {"task_id": "early", "task_type": "note_execution", "payload": {"key": "early", "work_ms": 0}}
            early = (await client.call_tool("task_submit", submit)).structured_content
            assert early["success"] and early["status"] == "queued"
            assert "no node hosts the tool `note_execution`" in early["warning"]
            c.start("--bootstrap", a.address)
            await wait_until(lambda: "early" in c.journal(), "C to run the early task")
            later = (await client.call_tool("task_submit", {**submit, "task_id": "later", "payload": {"key": "later", "work_ms": 0}})).structured_content
            assert later.get("warning") is None, later
            status = (await client.call_tool("task_status", {"task_id": "early"})).structured_content
            await wait_until(lambda: "later" in c.journal(), "C to run the later task")
        assert status["status"] in ("running", "completed")
    finally:
        a.stop()
        c.stop()


async def test_only_nodes_with_the_private_network_key_complete_a_handshake(tmp_path):
    a, b, c = Node(tmp_path, "a"), Node(tmp_path, "b"), Node(tmp_path, "c")
    keys = {}
    for name in ("right", "wrong"):
        keys[name] = tmp_path / f"{name}.key"
        subprocess.run([MCPPLUS, "peers", "psk", str(keys[name])], check=True, capture_output=True)
    for node in (b, c):
        node.host("peer_tools.wasm")
    a.configure({b.id: ["claim"], c.id: ["claim"]}, mesh=f'psk_file = "{keys["right"]}"')
    b.configure({a.id: []}, mesh=f'psk_file = "{keys["right"]}"')
    c.configure({a.id: []}, mesh=f'psk_file = "{keys["wrong"]}"')
    try:
        a.start("--mesh-listen", "/ip4/127.0.0.1/tcp/0")
        b.start("--bootstrap", a.address)
        c.start("--bootstrap", a.address)
        assert await b.server.wait_for_log('"mesh.peer_connected"', a.id, within=20)
        async with Client(c.server.url, mode="legacy", read_timeout_seconds=60) as client:
            # C keeps asking A for work; with the wrong key no request ever arrives.
            deadline = time.monotonic() + 30
            while True:
                report = (await client.call_tool("peer_metrics", {"peer_id": a.id})).structured_content
                metrics = report["current_metrics"]
                if metrics["requests_failed"] >= 3:
                    break
                assert time.monotonic() < deadline, report
                await anyio.sleep(0.2)
            assert metrics["connects"] == 0 and metrics["bytes_received"] == 0
            assert report["connection_info"]["status"] == "disconnected"
        assert not any(c.id in line and "mesh.peer_connected" in line for line in a.server.stderr_lines)
    finally:
        for node in (a, b, c):
            node.stop()
