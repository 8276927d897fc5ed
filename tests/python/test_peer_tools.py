"""The 6 peer tools (bundled `peer_tools` component) on three real nodes, with
the official client: every answer is a measured fact of this mesh. Asserted:
peer ids equal each node's key (`mcpplus peers id`); capabilities are what
each peer hosts, and the capability filter uses them; latency comes from ping
and the history holds its samples; request and byte counters grow with use;
disconnect holds (the peer's own redials are refused) until connect; a
bootstrap with one unreachable address counts it as failed; two nodes given
only a third's address find each other (kad); a read-only grant lists but may
not disconnect."""

import time

import anyio
import pytest
from mcp import Client

from mesh_nodes import Node, peer_id

pytestmark = pytest.mark.anyio


async def call(client: Client, tool: str, args: dict) -> dict:
    result = await client.call_tool(tool, args)
    assert not result.is_error, result
    return result.structured_content


async def eventually(client: Client, tool: str, args: dict, check, within: float = 20.0) -> dict:
    deadline = time.monotonic() + within
    while True:
        answer = await call(client, tool, args)
        if check(answer):
            return answer
        assert time.monotonic() < deadline, f"{tool} never satisfied the check: {answer}"
        await anyio.sleep(0.2)


async def test_peer_tools_report_what_the_mesh_measured(tmp_path):
    a, b, c = Node(tmp_path, "a"), Node(tmp_path, "b"), Node(tmp_path, "c")
    # Allowed at A, but never started: its address can only fail.
    absent = peer_id(tmp_path / "absent")
    a.host("peer_tools.wasm")
    b.host("peer_tools.wasm", "recorder.wasm")
    c.host("showcase.wasm")
    # B may read its peers but not change connections.
    (b.dir / "tools" / "peer_tools.policy.toml").write_text("[peers]\nread = true\n")
    a.configure({b.id: ["claim"], c.id: ["claim"], absent: []})
    b.configure({a.id: [], c.id: []})
    c.configure({a.id: [], b.id: []})
    try:
        a.start("--mesh-listen", "/ip4/127.0.0.1/tcp/0")
        b.start("--mesh-listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", a.address)
        c.start("--mesh-listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", a.address)
        async with Client(a.server.url, mode="legacy", read_timeout_seconds=60) as client:
            both = lambda r: {p["peer_id"] for p in r["peers"] if p["status"] == "connected"} == {b.id, c.id}
            listing = await eventually(
                client, "peer_list", {"sort_by": "peer_id"},
                lambda r: both(r) and all(p["capabilities"] for p in r["peers"] if p["status"] == "connected"),
            )
            by_id = {p["peer_id"]: p for p in listing["peers"]}
            assert set(by_id) == {b.id, c.id, absent}
            assert listing["total_count"] == 3 and listing["has_more"] is False
            assert "note_execution" in by_id[b.id]["capabilities"] and "peer_list" in by_id[b.id]["capabilities"]
            assert "count_to" in by_id[c.id]["capabilities"]
            assert by_id[b.id]["roles"] == ["claim"] and by_id[absent]["status"] == "disconnected"
            assert by_id[b.id]["multiaddr"].startswith("/ip4/127.0.0.1/tcp/")

            page = await call(client, "peer_list", {"sort_by": "peer_id", "limit": 1, "offset": 1})
            assert page["returned_count"] == 1 and page["has_more"] is True
            assert page["peers"][0]["peer_id"] == sorted(by_id)[1]

            found = await call(client, "peer_discover", {"capability_filter": ["count_to"], "include_metrics": True})
            assert [p["peer_id"] for p in found["peers"]] == [c.id]
            assert found["peers"][0]["metrics"]["connected_hours"] > 0

            metrics = await eventually(
                client, "peer_metrics", {"peer_id": b.id, "include_history": True},
                lambda r: r["current_metrics"]["latency_ms"] is not None and r["history"],
            )
            current = metrics["current_metrics"]
            assert 0 < current["latency_ms"] < 1000
            assert all(0 < s["latency_ms"] < 1000 for s in metrics["history"])
            assert current["requests_sent"] >= 1 and current["bytes_sent"] > 0 and current["bytes_received"] > 0
            assert current["bytes_transferred"] == current["bytes_sent"] + current["bytes_received"]
            # Requests sent before B was up failed to dial: the ratio is what was measured.
            sent, failed = current["requests_sent"], current["requests_failed"]
            assert current["request_success_ratio"] == pytest.approx((sent - failed) / sent)
            assert metrics["connection_info"]["status"] == "connected"
            assert metrics["connection_info"]["protocol_version"].startswith("mcpplus/")

            gone = await call(client, "peer_disconnect", {"peer_id": c.id, "reason": "test"})
            assert gone["was_connected"] is True and gone["reason"] == "test"
            # C keeps redialling A (every 2 s); A refuses until it connects again.
            await anyio.sleep(3)
            listing = await call(client, "peer_list", {"status_filter": "connected"})
            assert [p["peer_id"] for p in listing["peers"]] == [b.id]

            back = await call(client, "peer_connect", {"peer_id": c.id, "multiaddr": c.address.split("/p2p/")[0]})
            assert back["success"] and back["attempts"] == 1 and back["connection_time_ms"] > 0
            await eventually(client, "peer_list", {}, both)

            mismatch = await client.call_tool("peer_connect", {"peer_id": b.id, "multiaddr": c.address})
            assert mismatch.is_error and "must be the same node" in mismatch.content[0].text

            boot = await call(
                client, "bootstrap_network",
                {"bootstrap_nodes": [f"/ip4/127.0.0.1/tcp/1/p2p/{absent}", b.address], "timeout": 20,
                 "min_connections": 2},
            )
            assert boot["failed_count"] == 1 and boot["failures"][0]["address"].endswith(absent)
            assert boot["connected_count"] == 2 and boot["network_ready"] is True
            assert set(boot["connected_peers"]) == {b.id, c.id}

        async with Client(b.server.url, mode="legacy", read_timeout_seconds=60) as client:
            # B and C were only given A's address: they found each other through kad.
            await eventually(
                client, "peer_list", {"status_filter": "connected"},
                lambda r: {p["peer_id"] for p in r["peers"]} == {a.id, c.id},
            )
            refused = await client.call_tool("peer_disconnect", {"peer_id": a.id})
            assert refused.is_error and "[peers] admin = true" in refused.content[0].text
        assert await b.server.wait_for_log('"capability.denied"', "mcpplus:host/peers.disconnect")
    finally:
        for node in (a, b, c):
            node.stop()
