"""A misbehaving guest (guest-tools/fixtures) hurts only its own call: traps,
panics, missing imports, endless loops and memory hogs become tool errors, and guest
output never reaches the stdio protocol stream."""

import pytest
from mcp import Client

from conftest import FIXTURES, HttpServer, connect

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]

SERVE = ("--tools", str(FIXTURES), "--call-timeout", "2", "--call-memory", "64")


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_guest_output_does_not_corrupt_stdio(mode):
    async with connect("stdio", mode, serve_args=SERVE) as client:
        for _ in range(3):
            result = await client.call_tool("chatty", {"lines": 200})
            assert not result.is_error, result.content
            assert result.structured_content == {"result": 200}


async def test_failures_are_contained_and_explained():
    async with connect("stdio", "legacy", serve_args=SERVE) as client:
        trap = await client.call_tool("trap", {})
        assert trap.is_error and "the tool crashed" in trap.content[0].text
        assert "unreachable" in trap.content[0].text

        panic = await client.call_tool("panic", {"message": "boom 42"})
        assert panic.is_error and "boom 42" in panic.content[0].text

        missing = await client.call_tool("call_missing_import", {})
        assert missing.is_error
        assert "frobnicate" in missing.content[0].text

        spin = await client.call_tool("spin", {})
        assert spin.is_error and "time limit" in spin.content[0].text

        hog = await client.call_tool("allocate", {"mebibytes": 500})
        assert hog.is_error and "memory limit of 64 MiB" in hog.content[0].text

        # The server is still healthy.
        ok = await client.call_tool("allocate", {"mebibytes": 4})
        assert not ok.is_error and ok.structured_content == {"result": 4}


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_a_client_that_gives_up_stops_the_guest(mode):
    """The client times out and cancels (notifications/cancelled, or a closed
    request stream on 2026-07-28 HTTP); the spinning guest must stop then, long
    before its own 120 s deadline."""
    server = HttpServer("--tools", str(FIXTURES), "--call-timeout", "120")
    try:
        async with Client(server.url, mode=mode) as client:
            with pytest.raises(Exception):
                await client.call_tool("spin", {}, read_timeout_seconds=1)
            if not await server.wait_for_log('"tool.failed"', '"spin"', "cancelled", within=20):
                pytest.fail("the guest was not stopped after the client cancelled:\n" + "".join(server.stderr_lines[-20:]))
            # And the server still answers.
            ok = await client.call_tool("chatty", {"lines": 1})
            assert not ok.is_error
    finally:
        server.stop()
