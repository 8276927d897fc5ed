"""Outbound HTTP through the server, with the official MCP client: the bundled
`fetch` tool reaches a loopback HTTP server only through its grant, a failing
destination's breaker opens and fails fast, and operators see and reset it with
`mcpplus breakers` and in /metrics."""

import http.server
import json
import shutil
import subprocess
import threading
import urllib.request

import jsonschema
import pytest

from conftest import DIST, ERAS, MCPPLUS, ROOT, HttpServer, connect

SCHEMA = json.loads((ROOT / "docs" / "log-schema.json").read_text())


class Upstream:
    """A loopback HTTP server: /ok answers 200, /flaky 503 while `failing`."""

    def __init__(self):
        self.hits = 0
        self.failing = True
        upstream = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                upstream.hits += 1
                status = 503 if self.path == "/flaky" and upstream.failing else 200
                body = b"fine" if status == 200 else b"down"
                self.send_response(status)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.destination = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self):
        self.server.shutdown()


def breakers(socket, *args):
    return subprocess.run(
        [MCPPLUS, "breakers", "--admin-socket", str(socket), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ERAS)
async def test_fetch_through_the_breaker_and_reset_it(tmp_path, mode):
    upstream = Upstream()
    tools = tmp_path / "tools"
    tools.mkdir()
    shutil.copy(DIST / "fetch.wasm", tools / "fetch.wasm")
    (tools / "fetch.policy.toml").write_text(f'[network]\nallow = ["{upstream.destination}"]\n')
    config = tmp_path / "mcpplus.toml"
    config.write_text(
        "[outbound]\nretries = 0\n"
        "[outbound.breaker]\nconsecutive_failures = 2\nfailure_rate = 0\ncooldown_ms = 60000\n"
    )
    socket = tmp_path / "admin.sock"
    server = HttpServer("--tools", str(tools), "--config", str(config), "--admin-socket", str(socket), "--no-watch")
    try:
        async with connect("http", mode, server) as client:
            ok = await client.call_tool("fetch", {"url": f"{upstream.destination}/ok"})
            assert not ok.is_error, ok
            assert ok.structured_content["status"] == 200
            assert ok.structured_content["body"] == "fine"

            # Not granted: a tool error that says what to add.
            denied = await client.call_tool("fetch", {"url": "http://127.0.0.1:9/"})
            assert denied.is_error
            assert 'add "http://127.0.0.1:9" to [network] allow' in denied.content[0].text

            for _ in range(2):
                r = await client.call_tool("fetch", {"url": f"{upstream.destination}/flaky"})
                assert r.structured_content["status"] == 503
            hits = upstream.hits
            fast = await client.call_tool("fetch", {"url": f"{upstream.destination}/ok"})
            assert fast.is_error
            assert f"the circuit breaker for {upstream.destination} is open" in fast.content[0].text
            assert upstream.hits == hits, "an open breaker sends nothing"

            listed = breakers(socket, "--json")
            assert listed.returncode == 0, listed.stderr
            [entry] = [b for b in json.loads(listed.stdout)["breakers"] if b["destination"] == upstream.destination]
            assert entry["state"] == "open"
            assert entry["rejected"] == 1 and entry["failures"] == 2
            assert entry["retryAfterMs"] > 50_000
            table = breakers(socket)
            assert upstream.destination in table.stdout and "open" in table.stdout

            metrics_url = server.url.rsplit("/", 1)[0] + "/metrics"
            metrics = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
            assert f'mcpplus_breaker_state{{destination="{upstream.destination}"}} 2' in metrics
            assert f'mcpplus_breaker_transitions_total{{destination="{upstream.destination}",to="open"}} 1' in metrics

            reset = breakers(socket, "reset", upstream.destination)
            assert reset.returncode == 0, reset.stderr
            assert "closed" in reset.stdout
            assert await server.wait_for_log("breaker.reset", upstream.destination)
            again = await client.call_tool("fetch", {"url": f"{upstream.destination}/ok"})
            assert not again.is_error and again.structured_content["status"] == 200

            unknown = breakers(socket, "reset", "http://127.0.0.1:1")
            assert unknown.returncode == 1
            assert "there is no breaker for http://127.0.0.1:1" in unknown.stderr

        # The breaker's story is in the log, and every line fits the schema.
        lines = [json.loads(line) for line in server.stderr_lines if line.startswith("{")]
        for line in lines:
            jsonschema.validate(line, SCHEMA)
        events = [(l["event"], l.get("destination")) for l in lines]
        for event in ["breaker.opened", "breaker.reset", "outbound.failed"]:
            assert (event, upstream.destination) in events, event
        [opened] = [l for l in lines if l["event"] == "breaker.opened"]
        assert opened["reason"] == "2 failures in a row" and opened["cooldown_ms"] == 60000
    finally:
        server.stop()
        upstream.stop()
