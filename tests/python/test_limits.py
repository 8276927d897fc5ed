"""Per-call limits from the operator config, enforced on real misbehaving guests
(guest-tools/fixtures): time, memory, result size, captured output and
concurrency. Each bad call fails alone while a well-behaved tool keeps answering."""

import time

import anyio
import pytest
from mcp import Client

from conftest import FIXTURES, HttpServer, connect

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]

CONFIG = """
[limits]
timeout_ms = 10000
memory_mib = 64
result_kib = 1024
output_kib = 16

[server]
max_concurrency = 16
max_queued = 64

[tools.spin]
timeout_ms = 700

[tools.sleep_ms]
max_concurrency = 1
max_queued = 1
"""


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "mcpplus.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture(scope="module")
def server(config_file):
    s = HttpServer("--tools", str(FIXTURES), "--config", str(config_file))
    yield s
    s.stop()


async def test_per_tool_time_limit_names_the_limit(server):
    async with Client(server.url, mode="legacy") as client:
        spin = await client.call_tool("spin", {})
        assert spin.is_error
        assert "time limit of 700ms" in spin.content[0].text


async def test_a_guest_returning_a_gibibyte_is_stopped_by_its_memory_limit(server):
    async with Client(server.url, mode="legacy") as client:
        huge = await client.call_tool("huge_result", {"mebibytes": 1024})
        assert huge.is_error and "memory limit of 64 MiB" in huge.content[0].text


async def test_results_over_the_size_limit_are_withheld(server):
    async with Client(server.url, mode="legacy") as client:
        big = await client.call_tool("huge_result", {"mebibytes": 2})
        assert big.is_error and "over its limit of 1048576 bytes" in big.content[0].text
        small = await client.call_tool("huge_result", {"mebibytes": 0})
        assert not small.is_error


async def test_flooded_output_is_truncated_not_fatal(server):
    async with Client(server.url, mode="legacy") as client:
        flood = await client.call_tool("chatty", {"lines": 20000})
        assert not flood.is_error and flood.structured_content == {"result": 20000}
    if not await server.wait_for_log('"limit.exceeded"', '"output"', "dropped_bytes"):
        pytest.fail("dropped guest output was not reported")


async def test_concurrency_cap_queues_fairly_then_refuses_as_busy(server):
    async with Client(server.url, mode="legacy") as client:
        results = []

        async def sleeper():
            results.append(await client.call_tool("sleep_ms", {"ms": 800}))

        async def gauge(name):
            import urllib.request
            url = server.url.removesuffix("/mcp") + "/metrics"
            text = await anyio.to_thread.run_sync(lambda: urllib.request.urlopen(url, timeout=10).read().decode())
            return next(float(l.split()[-1]) for l in text.splitlines() if l.startswith(name + " "))

        async def until(name, value):
            with anyio.fail_after(15):
                while await gauge(name) < value:
                    await anyio.sleep(0.02)

        async with anyio.create_task_group() as tg:
            # Each call is started once the previous one is observably running / waiting.
            tg.start_soon(sleeper)
            await until("mcpplus_instances_active", 1)
            tg.start_soon(sleeper)
            await until("mcpplus_calls_queued", 1)
            tg.start_soon(sleeper)
        ok = [r for r in results if not r.is_error]
        busy = [r for r in results if r.is_error]
        # One runs, one waits its turn, the third finds the queue full.
        assert len(ok) == 2 and len(busy) == 1, [r.content[0].text for r in results]
        assert "tool `sleep_ms` is busy" in busy[0].content[0].text


async def test_bad_guests_do_not_stop_a_good_neighbour(server):
    """Two endless loops, a memory hog, a 1 GiB result and an output flood run at
    once; the echo
    tool keeps answering correctly meanwhile."""
    async with Client(server.url, mode="legacy") as client:
        answered = []

        async def neighbour():
            for i in range(20):
                started = time.monotonic()
                r = await client.call_tool("echo", {"text": f"ping {i}"})
                answered.append((r, time.monotonic() - started))
                await anyio.sleep(0.02)

        async with anyio.create_task_group() as tg:
            tg.start_soon(client.call_tool, "spin", {})
            tg.start_soon(client.call_tool, "spin", {})
            tg.start_soon(client.call_tool, "allocate", {"mebibytes": 1000})
            tg.start_soon(client.call_tool, "chatty", {"lines": 50000})
            tg.start_soon(client.call_tool, "huge_result", {"mebibytes": 1024})
            tg.start_soon(neighbour)
        assert [r.structured_content for r, _ in answered] == [{"result": f"ping {i}"} for i in range(20)]
        # Not a benchmark (see docs/benchmarks.md): only that nobody starved it.
        assert max(t for _, t in answered) < 5, answered


def test_a_request_over_max_request_bytes_is_refused_on_both_transports(tmp_path):
    import json
    import subprocess

    import httpx2 as httpx

    from conftest import DIST, MCPPLUS

    config = tmp_path / "mcpplus.toml"
    config.write_text("[server]\nmax_request_bytes = 100000\n")
    big = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
           "params": {"name": "echo", "arguments": {"message": "x" * 200_000}}}
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
    # stdio: the oversized line ends the session, with the limit named in the log.
    proc = subprocess.run(
        [MCPPLUS, "serve", "--tools", str(DIST), "--config", str(config), "--no-admin", "--no-watch"],
        input=json.dumps(init) + "\n" + json.dumps(big) + "\n", capture_output=True, text=True, timeout=120,
    )
    answers = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert [a.get("id") for a in answers] == [1], "the initialize is answered, the oversized call never runs"
    assert "max_request_bytes" in proc.stderr
    # HTTP: 413, and the server keeps serving.
    server = HttpServer("--tools", str(DIST), "--config", str(config), "--no-admin")
    try:
        headers = {"Accept": "application/json, text/event-stream"}
        assert httpx.post(server.url, json=big, headers=headers).status_code == 413
        assert httpx.post(server.url, json=init, headers=headers).status_code == 200
    finally:
        server.stop()
