"""Observability from the outside: every JSON log line validates against
docs/log-schema.json and carries the call's context (trace id from the client's
traceparent); secrets are masked; /metrics parses with the Prometheus client's
OpenMetrics parser and its counters move exactly with the calls made."""

import json
import os
import pathlib
import re
import shutil
import subprocess
import urllib.request

import jsonschema
import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from conftest import DIST, FIXTURES, MCPPLUS, ROOT, HttpServer, connect

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]

SCHEMA = json.loads((ROOT / "docs" / "log-schema.json").read_text())
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def scrape(url: str) -> dict:
    """{(name, labels...): value} for every sample."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def test_metrics_move_with_calls():
    server = HttpServer("--tools", str(DIST))
    try:
        metrics_url = server.url.replace("/mcp", "/metrics")
        before = scrape(metrics_url)
        async with connect("http", "auto", http_server=server) as client:
            for _ in range(3):
                assert not (await client.call_tool("echo", {"message": "hi"})).is_error
            assert (await client.call_tool("echo", {"message": 42})).is_error
            assert (await client.call_tool("divide", {"numerator": 1, "denominator": 0})).is_error
        after = scrape(metrics_url)

        def delta(name, **labels):
            return value(after, name, **labels) - value(before, name, **labels)

        calls = "mcpplus_tool_calls_total"
        assert delta(calls, tool="echo", component="showcase", outcome="ok") == 3
        assert delta(calls, tool="echo", component="showcase", outcome="invalid_arguments") == 1
        assert delta(calls, tool="divide", component="showcase", outcome="tool_error") == 1
        assert delta("mcpplus_tool_call_duration_seconds_count", tool="echo") == 4
        assert delta("mcpplus_instantiation_duration_seconds_count") == 4  # echo ok x3 + divide
        assert value(after, "mcpplus_components_loaded") == 8  # the bundled tools
        assert value(after, "mcpplus_instances_active") == 0
        builds = [k for k in after if k[0] == "mcpplus_build_info"]
        assert builds and after[builds[0]] == 1
        assert value(after, "mcpplus_guest_memory_peak_bytes_count") >= 4
    finally:
        server.stop()


def test_stdio_servers_serve_metrics_on_their_own_address():
    proc = subprocess.Popen(
        [MCPPLUS, "serve", "--tools", str(DIST), "--metrics", "127.0.0.1:0", "--no-admin"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = None
        for line in proc.stderr:
            m = re.search(r"metrics on (http://\S+)", line)
            if m:
                url = m.group(1)
                break
        assert url
        samples = scrape(url)
        assert value(samples, "mcpplus_components_loaded") == 8
    finally:
        proc.kill()
        proc.wait()


async def test_log_lines_follow_the_schema_and_carry_context(tmp_path):
    tools = tmp_path / "tools"
    tools.mkdir()
    shutil.copy(FIXTURES / "hostile.wasm", tools)
    shutil.copy(DIST / "showcase.wasm", tools)
    (tools / "hostile.policy.toml").write_text('env = ["MCPPLUS_TEST_SECRET", "MCPPLUS_TEST_SHORT"]\n')
    secret = "s3cr3t-value-0123456789"
    os.environ["MCPPLUS_TEST_SECRET"] = secret
    os.environ["MCPPLUS_TEST_SHORT"] = "ab1"
    try:
        server = HttpServer("--tools", str(tools), "--log-format", "json", "--log", "debug", "--no-admin")
    finally:
        del os.environ["MCPPLUS_TEST_SECRET"]
        del os.environ["MCPPLUS_TEST_SHORT"]
    try:
        async with connect("http", "auto", http_server=server) as client:
            echo = await client.call_tool(
                "echo", {"message": "Bearer abcdefghijklmnop"}, meta={"traceparent": TRACEPARENT}
            )
            assert not echo.is_error
            # The tool may see its granted secret; the log never shows it.
            got = await client.call_tool("env_var", {"name": "MCPPLUS_TEST_SECRET"})
            assert got.structured_content == {"result": secret}
            await client.call_tool("shout", {"text": f"my key is {secret}"})
            await client.call_tool("tcp_connect", {"address": "127.0.0.1:9"})  # denied
        assert await server.wait_for_log('"capability.denied"')
        assert await server.wait_for_log('"guest.output"')
        # A value too short to mask is named at load, so the operator knows.
        assert await server.wait_for_log('"policy.short_secret"', "MCPPLUS_TEST_SHORT")
        lines = [json.loads(l) for l in server.stderr_lines if l.startswith("{")]
        assert len(lines) > 10
        for line in lines:
            jsonschema.validate(line, SCHEMA)
        everything = "\n".join(server.stderr_lines)
        assert secret not in everything, "a granted secret reached the log"
        assert "abcdefghijklmnop" not in everything, "a bearer token reached the log"

        invoked = [l for l in lines if l["event"] == "tool.invoked" and l.get("tool") is None]
        assert any("[redacted]" in l["arguments"] for l in invoked), invoked
        echo_lines = [l for l in lines if l.get("trace_id") == "4bf92f3577b34da6a3ce929d0e0e4736"]
        assert any(l["event"] == "tool.completed" for l in echo_lines), echo_lines
        completed = next(l for l in echo_lines if l["event"] == "tool.completed")
        assert completed["tool"] == "echo" and completed["span_id"] != "00f067aa0ba902b7"
        assert completed["request_id"] and completed["call_id"] >= 1

        shout = next(l for l in lines if l["event"] == "guest.output")
        assert shout["message"] == "my key is [redacted]"
        assert shout["tool"] == "shout" and shout["stream"] == "stderr"
        denied = next(l for l in lines if l["event"] == "capability.denied")
        assert denied["tool"] == "tcp_connect" and denied["trace_id"] and denied["request_id"]
    finally:
        server.stop()


class Received:
    def __init__(self):
        self.logs = []
        self.progress = []

    async def on_log(self, params):
        self.logs.append(params)

    async def on_progress(self, progress, total, message):
        self.progress.append((progress, total, message))


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_guest_logs_and_progress_reach_the_client(mode):
    server = HttpServer("--tools", str(DIST), "--log-format", "json", "--no-admin")
    got = Received()
    try:
        from mcp import Client

        async with Client(
            server.url, mode=mode, logging_callback=got.on_log, log_level="info" if mode == "auto" else None
        ) as client:
            if mode == "legacy":
                await client.set_logging_level("info")
            result = await client.call_tool(
                "count_to", {"to": 4, "pause_ms": 5}, progress_callback=got.on_progress
            )
            assert not result.is_error and result.structured_content == {"result": 4}
        assert [p[0] for p in got.progress] == [1, 2, 3, 4]
        assert all(p[1] == 4 for p in got.progress) and got.progress[-1][2] == "4 of 4"
        assert len(got.logs) == 4
        first = got.logs[0]
        assert first.level == "info" and first.logger == "count_to"
        assert first.data == {"message": "counted", "fields": {"n": "1"}}
        # The server log has them too, with the fields as an object.
        assert await server.wait_for_log('"guest.log"', '"fields":{"n":"4"}')
    finally:
        server.stop()


async def test_a_flooding_guest_is_rate_limited_and_counted(tmp_path):
    config = tmp_path / "mcpplus.toml"
    config.write_text("[tools.log_flood]\nlog_lines_per_second = 50\n")
    tools = tmp_path / "tools"
    tools.mkdir()
    shutil.copy(FIXTURES / "misbehaving.wasm", tools)
    server = HttpServer("--tools", str(tools), "--config", str(config), "--log-format", "json", "--no-admin")
    try:
        metrics_url = server.url.replace("/mcp", "/metrics")
        async with connect("http", "auto", http_server=server) as client:
            result = await client.call_tool("log_flood", {"lines": 20000})
            assert not result.is_error and result.structured_content == {"result": 20000}
            # Its neighbour is unaffected.
            assert (await client.call_tool("echo", {"text": "still here"})).structured_content == {"result": "still here"}
        assert await server.wait_for_log('"limit.exceeded"', '"log_rate"')
        kept = [l for l in server.stderr_lines if '"guest.log"' in l]
        exceeded = json.loads(next(l for l in server.stderr_lines if '"log_rate"' in l))
        assert len(kept) <= 50 + 50 * 5, len(kept)  # the burst plus refill over a few seconds at most
        assert exceeded["dropped_lines"] == 20000 - len(kept)
        assert exceeded["tool"] == "log_flood" and exceeded["call_id"] >= 1
        samples = scrape(metrics_url)
        assert value(samples, "mcpplus_guest_log_dropped_total", tool="log_flood") == exceeded["dropped_lines"]
        assert value(samples, "mcpplus_guest_log_lines_total", tool="log_flood") == len(kept)
    finally:
        server.stop()


async def test_call_spans_are_exported_over_otlp():
    """A real HTTP server on loopback stands in for an OpenTelemetry collector."""
    import http.server
    import threading

    bodies = []

    class Collector(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers["Content-Length"])
            bodies.append((self.path, json.loads(self.rfile.read(length))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    collector = http.server.HTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}"
    server = HttpServer("--tools", str(DIST), "--otlp-endpoint", endpoint, "--no-admin", "--log", "mcpplus=debug")
    try:
        async with connect("http", "auto", http_server=server) as client:
            await client.call_tool("echo", {"message": "traced"}, meta={"traceparent": TRACEPARENT})
            await client.call_tool("divide", {"numerator": 1, "denominator": 0})
        import time

        deadline = time.monotonic() + 10
        spans = []
        while time.monotonic() < deadline and len(spans) < 2:
            spans = [
                s
                for path, body in bodies
                for rs in body["resourceSpans"]
                for ss in rs["scopeSpans"]
                for s in ss["spans"]
            ]
            time.sleep(0.1)
        assert {p for p, _ in bodies} == {"/v1/traces"}
        echo = next(s for s in spans if s["name"] == "tools/call echo")
        assert echo["traceId"] == "4bf92f3577b34da6a3ce929d0e0e4736"
        assert echo["parentSpanId"] == "00f067aa0ba902b7"
        assert echo["status"]["code"] == 1 and echo["kind"] == 2
        attributes = {a["key"]: a["value"]["stringValue"] for a in echo["attributes"]}
        assert attributes["mcpplus.component"] == "showcase"
        assert int(echo["endTimeUnixNano"]) >= int(echo["startTimeUnixNano"])
        divide = next(s for s in spans if s["name"] == "tools/call divide")
        assert divide["status"]["code"] == 2 and "parentSpanId" not in divide
        # The span id in the log is the exported one.
        assert await server.wait_for_log(echo["spanId"])
    finally:
        server.stop()
        collector.shutdown()


async def test_a_tool_log_level_drops_lines_below_it(tmp_path):
    config = tmp_path / "mcpplus.toml"
    config.write_text('[tools.count_to]\nlog_level = "warn"\n')
    server = HttpServer("--tools", str(DIST), "--config", str(config), "--log-format", "json", "--no-admin")
    try:
        async with connect("http", "auto", http_server=server) as client:
            result = await client.call_tool("count_to", {"to": 3, "pause_ms": 1})
            assert not result.is_error
            assert (await client.call_tool("echo", {"message": "after"})).structured_content == {"result": "after"}
        assert not any('"guest.log"' in l for l in server.stderr_lines), "info lines passed a warn filter"
    finally:
        server.stop()
    # The positive control: without the filter, the same call does log its lines,
    # so the absence above is the filter's doing.
    control = HttpServer("--tools", str(DIST), "--log-format", "json", "--no-admin")
    try:
        async with connect("http", "auto", http_server=control) as client:
            assert not (await client.call_tool("count_to", {"to": 3, "pause_ms": 1})).is_error
        assert await control.wait_for_log('"guest.log"', '"tool":"count_to"')
    finally:
        control.stop()
