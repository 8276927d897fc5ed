// A real Prometheus (Debian's `prometheus`) scraping mcpplus's /metrics: one
// server over Streamable HTTP (metrics on its HTTP listener) and one over stdio
// with `--metrics 127.0.0.1:0`. After some tool calls, Prometheus' query API
// must report mcpplus_tool_calls_total with exactly those counts
// (docs/metrics.md). Everything on 127.0.0.1, free ports, temp dirs.
import { it, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { Client as ClientV1 } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { Client as ClientV2, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";
import { MCPPLUS, serveArgs, startHttpServer, stop, tempDir, track, waitForLine } from "./lib.mjs";

const PROMETHEUS = process.env.PROMETHEUS_BIN ?? "prometheus";
const POLL_MS = 250;
const DEADLINE_MS = 60_000;

const cleanups = [];
after(async () => {
    for (const cleanup of cleanups.reverse()) await cleanup();
});

function freePort() {
    return new Promise((resolve, reject) => {
        const server = net.createServer();
        server.on("error", reject);
        server.listen(0, "127.0.0.1", () => {
            const { port } = server.address();
            server.close(() => resolve(port));
        });
    });
}

/** Poll `probe` every POLL_MS until it returns `{ok: true, value}` or the deadline
 * passes; `gone()` names a reason to give up at once (a process that exited). */
async function pollUntil(what, probe, { deadlineMs = DEADLINE_MS, gone = () => null } = {}) {
    const deadline = Date.now() + deadlineMs;
    let last;
    while (Date.now() < deadline) {
        const reason = gone();
        if (reason) assert.fail(`${what}: ${reason}`);
        try {
            last = await probe();
            if (last?.ok) return last.value;
        } catch (e) {
            last = { error: String(e) };
        }
        await sleep(POLL_MS);
    }
    assert.fail(`${what}: not within ${deadlineMs} ms; last: ${JSON.stringify(last)}`);
}

let promUrl;
let stdioMetrics;
let httpServer;
let v1;
let v2;

before(async () => {
    // The HTTP server serves /metrics on its own listener.
    httpServer = await startHttpServer();
    cleanups.push(() => httpServer.stop());

    // The stdio server, started by the 1.x SDK client, serves metrics with --metrics.
    const dir = tempDir("prom-stdio");
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const transport = new StdioClientTransport({
        command: MCPPLUS,
        args: serveArgs(path.join(dir, "data"), "--metrics", "127.0.0.1:0"),
        stderr: "pipe",
    });
    const metricsLine = waitForLine(transport.stderr, /^mcpplus: metrics on (http:\/\/\S+)/);
    v1 = new ClientV1({ name: "mcpplus-ecosystem-prometheus", version: "0" });
    await v1.connect(transport, { timeout: 120_000 });
    cleanups.push(() => v1.close());
    stdioMetrics = new URL((await metricsLine)[1]);

    v2 = new ClientV2({ name: "mcpplus-ecosystem-prometheus", version: "0" }, { versionNegotiation: { mode: { pin: "2026-07-28" } } });
    await v2.connect(new StreamableHTTPClientTransport(new URL(httpServer.url)), { timeout: 120_000 });
    cleanups.push(() => v2.close());

    // Prometheus with a temp config and storage, on a free loopback port.
    const promDir = tempDir("prometheus");
    cleanups.push(() => rmSync(promDir, { recursive: true, force: true }));
    const httpMetrics = new URL(httpServer.metricsUrl);
    const config = path.join(promDir, "prometheus.yml");
    writeFileSync(config, `global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: mcpplus-http
    metrics_path: ${httpMetrics.pathname}
    static_configs: [{targets: ["${httpMetrics.host}"]}]
  - job_name: mcpplus-stdio
    metrics_path: ${stdioMetrics.pathname}
    static_configs: [{targets: ["${stdioMetrics.host}"]}]
`);
    const port = await freePort();
    promUrl = `http://127.0.0.1:${port}`;
    const prom = track(spawn(PROMETHEUS, [
        `--config.file=${config}`,
        `--storage.tsdb.path=${path.join(promDir, "data")}`,
        `--web.listen-address=127.0.0.1:${port}`,
        "--log.level=warn",
    ], { stdio: ["ignore", "ignore", "pipe"] }));
    let promLog = "";
    prom.stderr.on("data", (d) => { promLog = (promLog + d).slice(-10_000); });
    const spawned = new Promise((resolve, reject) => {
        prom.once("spawn", resolve);
        prom.once("error", (e) => reject(new Error(`cannot start ${PROMETHEUS} (scripts/test-ecosystem.sh installs Debian's prometheus): ${e.message}`)));
    });
    await spawned;
    cleanups.push(() => stop(prom));
    await pollUntil("Prometheus ready", async () => {
        const r = await fetch(`${promUrl}/-/ready`);
        return { ok: r.status === 200, value: true, status: r.status };
    }, { gone: () => (prom.exitCode ?? prom.signalCode) !== null ? `prometheus exited:\n${promLog}` : null });
});

async function query(promql) {
    const r = await fetch(`${promUrl}/api/v1/query?query=${encodeURIComponent(promql)}`);
    const body = await r.json();
    assert.equal(body.status, "success", JSON.stringify(body));
    return body.data.result;
}

it("Prometheus scrapes both metrics endpoints", async () => {
    await pollUntil("both targets up", async () => {
        const up = Object.fromEntries((await query("up")).map((s) => [s.metric.job, s.value[1]]));
        return { ok: up["mcpplus-http"] === "1" && up["mcpplus-stdio"] === "1", value: up, up };
    });
});

it("mcpplus_tool_calls_total in Prometheus counts the calls made", async () => {
    // stdio server, legacy era (SDK 1.x): 3 ok echo calls and 1 tool error.
    for (let i = 0; i < 3; i++) {
        const r = await v1.callTool({ name: "echo", arguments: { message: `m${i}` } });
        assert.ok(!r.isError);
    }
    assert.equal((await v1.callTool({ name: "divide", arguments: { numerator: 1, denominator: 0 } })).isError, true);
    // HTTP server, modern era (client 2.x): 2 ok calls and 1 with invalid arguments.
    for (let i = 0; i < 2; i++) {
        assert.ok(!(await v2.callTool({ name: "echo", arguments: { message: `n${i}` } })).isError);
    }
    assert.equal((await v2.callTool({ name: "echo", arguments: {} })).isError, true);

    const expected = {
        "mcpplus-stdio echo showcase ok": "3",
        "mcpplus-stdio divide showcase tool_error": "1",
        "mcpplus-http echo showcase ok": "2",
        "mcpplus-http echo showcase invalid_arguments": "1",
    };
    const seen = await pollUntil("Prometheus reports the calls", async () => {
        const series = await query("mcpplus_tool_calls_total");
        const got = Object.fromEntries(series.map((s) =>
            [`${s.metric.job} ${s.metric.tool} ${s.metric.component} ${s.metric.outcome}`, s.value[1]]));
        return { ok: JSON.stringify(Object.entries(got).sort()) === JSON.stringify(Object.entries(expected).sort()), value: got, got };
    });
    assert.deepEqual(seen, expected);
    // A PromQL aggregation over them, as an alert would use.
    const total = await query('sum by (job) (mcpplus_tool_calls_total{outcome="ok"})');
    assert.deepEqual(Object.fromEntries(total.map((s) => [s.metric.job, s.value[1]])), { "mcpplus-stdio": "3", "mcpplus-http": "2" });
});

it("the call duration histogram and build info are scraped too", async () => {
    const count = await query('sum by (job) (mcpplus_tool_call_duration_seconds_count{tool="echo"})');
    assert.deepEqual(Object.fromEntries(count.map((s) => [s.metric.job, s.value[1]])), { "mcpplus-stdio": "3", "mcpplus-http": "3" });
    const info = await query("mcpplus_build_info");
    assert.equal(info.length, 2, JSON.stringify(info));
    for (const s of info) assert.ok(s.metric.version, JSON.stringify(s.metric));
});
