"""Hot loading seen by real MCP clients (PyPI `mcp`), over stdio and HTTP, in both
protocol eras: tools replaced, added and removed while calls keep flowing, with
zero failed calls; list_changed to every client; broken replacements leave the
old version serving; the admin socket's load/unload/reload.

The fixture `versioned` is built in two versions that answer "1" and "2"; each
replacement also gets a unique custom section, so every swap has its own sha256,
which mcpplus reports in each result's `_meta`."""

import bisect
import hashlib
import json
import os
import pathlib
import shutil
import stat
import subprocess
import time

import anyio
import mcp.types as types
import pytest
from mcp import Client

from conftest import DIST, FIXTURES, MCPPLUS, HttpServer, stdio_params

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(600)]

V1 = (FIXTURES / "versioned-1.wasm").read_bytes()
V2 = (FIXTURES / "versioned-2.wasm").read_bytes()


def leb128(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def variant(base: bytes, n: int) -> bytes:
    """`base` with a custom section saying `n`: the same code, a new sha256."""
    name = b"mcpplus-test-variant"
    payload = leb128(len(name)) + name + str(n).encode()
    return base + b"\x00" + leb128(len(payload)) + payload


def install(path: pathlib.Path, data: bytes):
    """Write beside, then rename: how operators should replace a component."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Recorder:
    """One client calling `version` in a loop, recording every answer."""

    def __init__(self, name: str, client: Client):
        self.name = name
        self.client = client
        self.calls: list[dict] = []  # start, end, error, text, sha256
        self.running = True

    async def run(self):
        while self.running:
            start = time.monotonic()
            try:
                result = await self.client.call_tool("slow_version", {"ms": 2})
                error = result.is_error
                text = result.content[0].text if result.content else ""
                digest = (result.meta or {}).get("mcpplus/sha256")
            except Exception as e:  # a protocol error counts as a failed call
                error, text, digest = True, repr(e), None
            self.calls.append(
                {"start": start, "end": time.monotonic(), "error": error, "text": text, "sha256": digest}
            )

    def seen(self, digest: str, after: float) -> bool:
        return any(c["sha256"] == digest and c["start"] > after for c in self.calls)


def check_monotonic(calls: list[dict], order: dict[str, int], where: str):
    """A call that starts after another call has finished never gets an older build."""
    ends = sorted((c["end"], order[c["sha256"]]) for c in calls)
    end_times = [e for e, _ in ends]
    best = []
    running = -1
    for _, k in ends:
        running = max(running, k)
        best.append(running)
    for c in calls:
        i = bisect.bisect_left(end_times, c["start"])
        if i > 0:
            assert order[c["sha256"]] >= best[i - 1], f"{where}: a call got an older build after a newer one answered"


async def test_twenty_swaps_under_load_fail_no_call(tmp_path):
    tools = tmp_path / "tools"
    tools.mkdir()
    target = tools / "versioned.wasm"
    builds = [variant(V1 if n % 2 == 0 else V2, n) for n in range(21)]
    order = {sha(b): n for n, b in enumerate(builds)}
    version_of = {sha(b): ("1" if n % 2 == 0 else "2") for n, b in enumerate(builds)}
    install(target, builds[0])

    server = HttpServer("--tools", str(tools), "--no-admin", "--watch-settle-ms", "100")
    stdio = ["--tools", str(tools), "--no-admin", "--watch-settle-ms", "100"]
    try:
        async with (
            Client(server.url, mode="legacy", read_timeout_seconds=60) as http_legacy,
            Client(server.url, mode="auto", read_timeout_seconds=60) as http_modern,
            Client(stdio_params(*stdio), mode="legacy", read_timeout_seconds=60) as stdio_legacy,
            Client(stdio_params(*stdio), mode="auto", read_timeout_seconds=60) as stdio_modern,
        ):
            recorders = [
                Recorder("http-legacy", http_legacy),
                Recorder("http-2026", http_modern),
                Recorder("stdio-legacy", stdio_legacy),
                Recorder("stdio-2026", stdio_modern),
            ]
            async with anyio.create_task_group() as tg:
                for r in recorders:
                    tg.start_soon(r.run)
                await wait_for(lambda: all(r.calls for r in recorders), 30, "every client calling")
                for n in range(1, 21):
                    swapped_at = time.monotonic()
                    install(target, builds[n])
                    if n % 5 == 0:  # add another component, and remove it later
                        install(tools / "text_utils.wasm", (DIST / "text_utils.wasm").read_bytes())
                    if n % 5 == 3:
                        (tools / "text_utils.wasm").unlink(missing_ok=True)
                    # Every client (on both servers) switches to the new build.
                    deadline = time.monotonic() + 30
                    while not all(r.seen(sha(builds[n]), swapped_at) for r in recorders):
                        assert time.monotonic() < deadline, f"swap {n} never reached every client"
                        await anyio.sleep(0.02)
                # Keep the load going until thousands of calls were made in all.
                deadline = time.monotonic() + 120
                while sum(len(r.calls) for r in recorders) < 2000 and time.monotonic() < deadline:
                    await anyio.sleep(0.1)
                for r in recorders:
                    r.running = False

        total = sum(len(r.calls) for r in recorders)
        failed = [c for r in recorders for c in r.calls if c["error"]]
        assert not failed, f"{len(failed)} of {total} calls failed, e.g. {failed[:3]}"
        assert total >= 2000, f"only {total} calls were made"
        for r in recorders:
            for c in r.calls:
                # Answered by exactly one build, and its answer is that build's.
                assert c["sha256"] in order, f"{r.name}: unknown build {c['sha256']}"
                assert c["text"] == version_of[c["sha256"]], f"{r.name}: {c}"
            check_monotonic(r.calls, order, r.name)
        # Calls through one server are ordered across its clients too.
        check_monotonic(recorders[0].calls + recorders[1].calls, order, "http server")
        print(f"{total} calls, 20 swaps, 0 failed: " + ", ".join(f"{r.name} {len(r.calls)}" for r in recorders))
    finally:
        server.stop()


class ChangeCounter:
    def __init__(self):
        self.count = 0

    async def on_message(self, message):
        message = getattr(message, "root", message)
        if isinstance(message, types.ToolListChangedNotification):
            self.count += 1


async def wait_for(predicate, within=15.0, what=""):
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await anyio.sleep(0.05)


async def test_every_client_is_told_about_each_change(tmp_path):
    tools = tmp_path / "tools"
    tools.mkdir()
    install(tools / "versioned.wasm", V1)
    server = HttpServer("--tools", str(tools), "--no-admin", "--watch-settle-ms", "100")
    stdio = stdio_params("--tools", str(tools), "--no-admin", "--watch-settle-ms", "100")
    http_legacy, stdio_legacy = ChangeCounter(), ChangeCounter()
    try:
        async with (
            Client(server.url, mode="legacy", message_handler=http_legacy.on_message) as c1,
            Client(stdio, mode="legacy", message_handler=stdio_legacy.on_message) as c2,
            Client(server.url, mode="auto") as c3,
            Client(stdio, mode="auto") as c4,
        ):
            for c in (c1, c2):
                await c.list_tools()
            modern = {"http-2026": 0, "stdio-2026": 0}

            async def listen(name, client):
                async with client.listen(tools_list_changed=True) as sub:
                    async for _ in sub:
                        modern[name] += 1

            async with anyio.create_task_group() as tg:
                tg.start_soon(listen, "http-2026", c3)
                tg.start_soon(listen, "stdio-2026", c4)
                await anyio.sleep(0.5)  # streams acknowledged
                changes = [
                    lambda: install(tools / "text_utils.wasm", (DIST / "text_utils.wasm").read_bytes()),
                    lambda: install(tools / "versioned.wasm", V2),
                    lambda: (tools / "text_utils.wasm").unlink(),
                ]
                for i, change in enumerate(changes, start=1):
                    change()
                    await wait_for(
                        lambda: min(http_legacy.count, stdio_legacy.count, *modern.values()) >= i,
                        what=f"list_changed #{i}: legacy http {http_legacy.count}, legacy stdio {stdio_legacy.count}, {modern}",
                    )
                tg.cancel_scope.cancel()
            # And the list they refetch is the new one.
            names = {t.name for t in (await c1.list_tools()).tools}
            assert "slugify" not in names and "version" in names
            assert (await c4.call_tool("version", {})).content[0].text == "2"
    finally:
        server.stop()


async def wait_for_calls_in_flight(socket, component, n, within=15.0):
    """Until the server reports `n` calls of `component` running (admin socket)."""
    def running():
        listing = json.loads(tools_cli(socket, "list", "--json").stdout)
        return any(c["name"] == component and c["callsInFlight"] >= n for c in listing["components"])
    await wait_for(running, within, f"{n} call(s) of {component} in flight")


def tools_cli(socket, *args):
    return subprocess.run(
        [MCPPLUS, "tools", "--admin-socket", str(socket), *args], capture_output=True, text=True, timeout=120
    )


async def test_broken_replacements_leave_the_old_version_serving(tmp_path):
    tools = tmp_path / "tools"
    tools.mkdir()
    target = tools / "versioned.wasm"
    install(target, V1)
    socket = tmp_path / "admin.sock"
    server = HttpServer(
        "--tools", str(tools), "--admin-socket", str(socket), "--watch-settle-ms", "100", "--log-format", "json"
    )
    try:
        async with Client(server.url, mode="auto") as client:

            async def serving() -> str:
                result = await client.call_tool("version", {})
                assert not result.is_error
                return result.content[0].text

            failures = 0

            async def refused(*fragments):
                nonlocal failures
                failures += 1
                deadline = time.monotonic() + 15
                while sum('"tool.load_failed"' in l for l in server.stderr_lines) < failures:
                    assert time.monotonic() < deadline, "no tool.load_failed event"
                    await anyio.sleep(0.05)
                line = [l for l in server.stderr_lines if '"tool.load_failed"' in l][-1]
                event = json.loads(line)
                assert event["still_serving"] is True
                for f in fragments:
                    assert f in event["error"], event["error"]
                assert await serving() == "1"

            install(target, b"\x00asm not really")
            await refused("not a WebAssembly component")
            install(target, V2[: len(V2) // 2])  # a copy cut short
            await refused("versioned.wasm")
            install(target, V1)  # back to the serving build: nothing to do
            (tools / "versioned.policy.toml").write_text("[[files]]\nhost = \"/no/such/dir\"\nguest = \"/d\"\n")
            await refused("versioned.policy.toml: line 2: files[0].host")
            (tools / "versioned.policy.toml").unlink()

            # A name collision, through the admin socket: refused with a reply.
            other = tmp_path / "elsewhere"
            other.mkdir()
            shutil.copy(FIXTURES / "versioned-2.wasm", other / "clash.wasm")
            run = tools_cli(socket, "load", str(other / "clash.wasm"))
            assert run.returncode == 1
            assert "tool `slow_version` is already provided by component `versioned`" in run.stderr
            assert await serving() == "1"

            install(target, V2)
            await wait_for(lambda: any('"tool.replaced"' in l for l in server.stderr_lines), what="replace")
            assert await serving() == "2"
    finally:
        server.stop()


async def test_admin_socket_lists_loads_and_drains_unloads(tmp_path):
    tools = tmp_path / "tools"
    tools.mkdir()
    install(tools / "versioned.wasm", V1)
    socket = tmp_path / "admin" / "admin.sock"
    server = HttpServer(
        "--tools", str(tools), "--admin-socket", str(socket), "--no-watch", "--drain-timeout", "0.5"
    )
    try:
        assert stat.S_IMODE(socket.stat().st_mode) == 0o600
        assert stat.S_IMODE(socket.parent.stat().st_mode) == 0o700

        listed = json.loads(tools_cli(socket, "list", "--json").stdout)
        assert listed["ok"] and [c["name"] for c in listed["components"]] == ["versioned"]
        assert listed["components"][0]["sha256"] == sha(V1)

        run = tools_cli(socket, "load", str(DIST / "text_utils.wasm"), "--json")
        change = json.loads(run.stdout)["change"]
        assert run.returncode == 0 and change["action"] == "added"
        assert "slugify" in change["added"] and change["removed"] == []

        # Reload after the file changed (no watcher here): named as changed.
        install(tools / "versioned.wasm", V2)
        change = json.loads(tools_cli(socket, "reload", "versioned", "--json").stdout)["change"]
        assert change["action"] == "replaced" and change["changed"] == ["slow_version", "version"]
        assert change["sha256"] == sha(V2) and change["previousSha256"] == sha(V1)

        async with Client(server.url, mode="auto") as client:
            assert (await client.call_tool("version", {})).content[0].text == "2"

            # Unload while a call runs: a short call finishes within the drain time...
            async with anyio.create_task_group() as tg:
                results = {}

                async def slow(ms, key):
                    results[key] = await client.call_tool("slow_version", {"ms": ms})

                tg.start_soon(slow, 200, "short")
                await wait_for_calls_in_flight(socket, "versioned", 1)
                run = tools_cli(socket, "unload", "versioned", "--json")
            change = json.loads(run.stdout)["change"]
            assert change["action"] == "removed" and change["cancelledCalls"] == 0
            assert not results["short"].is_error and results["short"].content[0].text == "2"

            # ...a long one is cancelled with a clear error once it runs out.
            tools_cli(socket, "load", str(tools / "versioned.wasm"))
            async with anyio.create_task_group() as tg:
                tg.start_soon(slow, 5000, "long")
                await wait_for_calls_in_flight(socket, "versioned", 1)
                run = tools_cli(socket, "unload", "versioned", "--json")
            assert json.loads(run.stdout)["change"]["cancelledCalls"] == 1
            assert results["long"].is_error
            assert "was unloaded while this call was running" in results["long"].content[0].text

            names = {t.name for t in (await client.list_tools()).tools}
            assert "version" not in names and "slugify" in names

        run = tools_cli(socket, "unload", "nope")
        assert run.returncode == 1 and "no component named `nope`" in run.stderr
    finally:
        server.stop()

    # A second server cannot take over a live socket; it serves without one.
    first = HttpServer("--tools", str(tools), "--admin-socket", str(socket), "--no-watch")
    second = HttpServer("--tools", str(tools), "--admin-socket", str(socket), "--no-watch")
    try:
        assert await second.wait_for_log("another mcpplus server is using the admin socket")
        assert json.loads(tools_cli(socket, "list", "--json").stdout)["ok"]
    finally:
        second.stop()
        first.stop()

    # A path that is not a socket is never deleted to make room for one.
    planted = tmp_path / "not-a-socket"
    planted.write_text("keep me")
    third = HttpServer("--tools", str(tools), "--admin-socket", str(planted), "--no-watch")
    try:
        assert await third.wait_for_log("exists and is not a socket")
        assert planted.read_text() == "keep me"
    finally:
        third.stop()


async def test_a_draining_unload_does_not_hold_up_other_changes(tmp_path):
    tools = tmp_path / "tools"
    tools.mkdir()
    install(tools / "versioned.wasm", V1)
    socket = tmp_path / "admin.sock"
    server = HttpServer("--tools", str(tools), "--admin-socket", str(socket), "--no-watch", "--drain-timeout", "20")
    try:
        async with Client(server.url, mode="auto") as client:
            async with anyio.create_task_group() as tg:
                results = {}

                async def slow():
                    results["slow"] = await client.call_tool("slow_version", {"ms": 3000})

                tg.start_soon(slow)
                await wait_for_calls_in_flight(socket, "versioned", 1)
                unload = subprocess.Popen(
                    [MCPPLUS, "tools", "--admin-socket", str(socket), "unload", "versioned"],
                    stdout=subprocess.PIPE,
                    text=True,
                )
                # Draining: the component has left the catalog, its call still runs.
                await wait_for(
                    lambda: all(c["name"] != "versioned"
                                for c in json.loads(tools_cli(socket, "list", "--json").stdout)["components"]),
                    15, "the unload to start draining")
                started = time.monotonic()
                run = tools_cli(socket, "load", str(DIST / "text_utils.wasm"))
                assert run.returncode == 0, run.stderr
                assert time.monotonic() - started < 2.0, "a load waited for the unload's drain"
                assert unload.poll() is None, "the unload should still be draining"
            # The slow call finished on its version; the unload then completed without cancelling.
            assert not results["slow"].is_error and results["slow"].content[0].text == "1"
            assert unload.wait(30) == 0
    finally:
        server.stop()
