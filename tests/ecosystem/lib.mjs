// Shared helpers for the ecosystem tests: where the binary and the tools are,
// starting `mcpplus serve` over HTTP on a loopback port, a JSON Schema 2020-12
// validator of our own (Ajv, independent of the SDKs' validation), and the tool
// calls that cover every WIT type family (the bundled `showcase` component).
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import assert from "node:assert/strict";
import { Ajv2020 } from "ajv/dist/2020.js";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const MCPPLUS = process.env.MCPPLUS_BIN ?? path.join(ROOT, "target", "debug", "mcpplus");
export const DIST = process.env.MCPPLUS_TOOLS_DIST ?? path.join(ROOT, "guest-tools", "dist");
// The compile cache scripts/test.sh warms, so servers start in about a second.
export const CACHE = process.env.MCPPLUS_CACHE_DIR ?? path.join(ROOT, "target", "test-cache");
// How long a server may take to start: a cold cache compiles py_stats (18 MiB)
// with a debug build of wasmtime.
export const START_TIMEOUT_MS = 240_000;

// Every child this process starts, killed when it exits whatever happens
// (the test runner stops a file that overruns --test-timeout with a signal).
const children = new Set();
const killAll = () => {
    for (const child of children) child.kill("SIGKILL");
};
process.on("exit", killAll);
for (const [signal, code] of [["SIGINT", 130], ["SIGTERM", 143], ["SIGHUP", 129]]) {
    process.once(signal, () => {
        killAll();
        process.exit(code);
    });
}
export function track(child) {
    children.add(child);
    child.on("exit", () => children.delete(child));
    return child;
}

export function tempDir(prefix) {
    return mkdtempSync(path.join(os.tmpdir(), `mcpplus-eco-${prefix}-`));
}

/** `serve` arguments common to every server a test starts: its own data dir,
 * no admin socket, no folder watching, the shared compile cache. */
export function serveArgs(dataDir, ...extra) {
    return ["serve", "--tools", DIST, "--data-dir", dataDir, "--cache-dir", CACHE,
        "--no-admin", "--no-watch", ...extra];
}

/** Wait until `stream` has printed a line matching `re`; resolves with the match. */
export function waitForLine(stream, re, { timeoutMs = START_TIMEOUT_MS, proc, log } = {}) {
    return new Promise((resolve, reject) => {
        let buffered = "";
        const timer = setTimeout(() => finish(new Error(`no line matching ${re} within ${timeoutMs} ms`)), timeoutMs);
        const onData = (chunk) => {
            buffered += chunk;
            let nl;
            while ((nl = buffered.indexOf("\n")) >= 0) {
                const line = buffered.slice(0, nl);
                buffered = buffered.slice(nl + 1);
                const m = line.match(re);
                if (m) return finish(null, m);
            }
        };
        const onExit = (code, signal) => finish(new Error(`server exited (${code ?? signal}) before printing ${re}\n${log?.() ?? ""}`));
        function finish(err, m) {
            clearTimeout(timer);
            stream.off("data", onData);
            proc?.off("exit", onExit);
            err ? reject(err) : resolve(m);
        }
        stream.setEncoding("utf8");
        stream.on("data", onData);
        proc?.on("exit", onExit);
    });
}

/** Kill a child politely, then surely; resolves when it is gone. */
export async function stop(child, graceMs = 10_000) {
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const gone = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
    await gone;
    clearTimeout(timer);
}

/** `mcpplus serve --http 127.0.0.1:0 --no-auth` with its own data dir; resolves
 * once it prints the URL it listens on. */
export async function startHttpServer(...extra) {
    const dir = tempDir("http");
    const proc = track(spawn(MCPPLUS, serveArgs(path.join(dir, "data"), "--http", "127.0.0.1:0", "--no-auth", ...extra),
        { stdio: ["ignore", "ignore", "pipe"] }));
    let log = "";
    proc.stderr.on("data", (d) => { log = (log + d).slice(-20_000); });
    const waits = [waitForLine(proc.stderr, /^mcpplus: listening on (http:\/\/\S+)/, { proc, log: () => log })];
    if (extra.includes("--metrics")) {
        waits.push(waitForLine(proc.stderr, /^mcpplus: metrics on (http:\/\/\S+)/, { proc, log: () => log }));
    }
    let matches;
    try {
        matches = await Promise.all(waits);
    } catch (e) {
        await stop(proc);
        rmSync(dir, { recursive: true, force: true });
        throw e;
    }
    return {
        url: matches[0][1],
        metricsUrl: matches[1]?.[1] ?? matches[0][1].replace(/\/mcp$/, "/metrics"),
        proc,
        log: () => log,
        async stop() {
            await stop(proc);
            rmSync(dir, { recursive: true, force: true });
        },
    };
}

/** Record every message a client transport delivers, from the first one
 * (`initialize` / `server/discover` included): the SDKs set `onmessage` when
 * they connect, so the tap wraps whatever they set. */
export function tapTransport(transport) {
    const seen = [];
    let handler;
    Object.defineProperty(transport, "onmessage", {
        configurable: true,
        get: () => handler,
        set: (fn) => {
            handler = fn && ((message, extra) => {
                seen.push(message);
                return fn(message, extra);
            });
        },
    });
    return seen;
}

/** The raw JSON-RPC result the server sent for the latest request of `method`
 * (matched through the ids of requests the transport sent). */
export function tapSends(transport) {
    const sent = [];
    const send = transport.send.bind(transport);
    transport.send = (message, options) => {
        sent.push(message);
        return send(message, options);
    };
    return sent;
}
export function lastResult(sent, seen, method) {
    const ids = sent.filter((m) => m.method === method && m.id !== undefined).map((m) => m.id);
    assert.ok(ids.length, `no ${method} request was sent`);
    const id = ids.at(-1);
    const response = seen.find((m) => m.id === id && ("result" in m || "error" in m));
    assert.ok(response, `no response to ${method} (id ${id})`);
    assert.ok(!response.error, `${method} failed: ${JSON.stringify(response.error)}`);
    return response.result;
}

// Our own validator: JSON Schema 2020-12 as the MCP spec says (2025-11-25 onwards),
// checking each schema against the 2020-12 meta-schema too.
const ajv = new Ajv2020({ allErrors: true, strict: false, validateSchema: true, validateFormats: false });
const compiled = new WeakMap();
export function validator(schema) {
    if (!compiled.has(schema)) compiled.set(schema, ajv.compile(schema));
    return compiled.get(schema);
}
export function assertValid(value, schema, what) {
    const validate = validator(schema);
    assert.ok(validate(value), `${what}: ${JSON.stringify(value)} does not match its schema: ${ajv.errorsText(validate.errors)}\nschema: ${JSON.stringify(schema)}`);
}

// The bundled tools (tests/python/test_tools.py has the same list).
export const BUNDLED_TOOLS = [
    // showcase
    "echo", "echo_integers", "scale", "area", "describe", "summarize", "checksum", "divide",
    "parse_port", "maybe_double", "nested", "badge", "noop", "count_to",
    // text_utils, py_stats, fetch
    "word_count", "slugify", "change_case", "wrap", "truncate", "extract_urls",
    "describe_sample", "percentile", "fetch",
    // task_queue
    "task_submit", "task_status", "task_cancel", "task_list", "task_priority", "task_result",
    "queue_stats", "queue_pause", "queue_resume", "queue_clear", "task_retry",
    "worker_register", "worker_unregister", "worker_status",
    // peer_tools, workflow_tools
    "peer_discover", "peer_connect", "peer_disconnect", "peer_list", "peer_metrics", "bootstrap_network",
    "workflow_submit", "workflow_status", "workflow_cancel", "workflow_list",
    "workflow_dependencies", "workflow_result", "workflow_templates",
];

// One call per WIT type family, with the structuredContent it must return
// (docs/type-mapping.md). Integers stay within what a JavaScript number holds
// exactly: the u64/s64 extremes are a JavaScript limit, not a server one.
export const FAMILY_CALLS = [
    ["strings", "echo", { message: "héllo ✓" }, { result: "héllo ✓" }],
    ["numbers (every integer width)", "echo_integers",
        { values: { a: -128, b: 255, c: -32768, d: 65535, e: -(2 ** 31), f: 2 ** 32 - 1, g: Number.MIN_SAFE_INTEGER, h: Number.MAX_SAFE_INTEGER } },
        { a: -128, b: 255, c: -32768, d: 65535, e: -(2 ** 31), f: 2 ** 32 - 1, g: Number.MIN_SAFE_INTEGER, h: Number.MAX_SAFE_INTEGER }],
    ["numbers (floats)", "divide", { numerator: 7, denominator: 2 }, { result: 3.5 }],
    ["records", "scale", { p: { x: 1.5, y: -2 }, factor: 2 }, { x: 3, y: -4 }],
    ["variants (with payload, a tuple)", "area", { s: { rectangle: [2, 3.5] } }, { result: 7 }],
    ["variants (without payload)", "area", { s: "empty" }, { result: 0 }],
    ["enums, flags, char, bool", "describe", { c: "green", perms: ["read", "execute"], initial: "Z", loud: false },
        { result: "Z is green and may read+execute" }],
    ["lists of records with options", "summarize",
        { items: [{ name: "bolt", count: 200, tags: [] }, { name: "nut", count: 55, tags: ["m4"], note: "zinc" },
            { name: "washer", count: 0, tags: [], note: null }] },
        { total_count: 255, names: ["bolt", "nut", "washer"], notes: ["zinc"] }],
    ["bytes (base64) and tuples", "checksum", { data: "AQL/" }, { result: [258, "/wIB"] }],
    ["bytes (array of numbers) and tuples", "checksum", { data: [1, 2, 255] }, { result: [258, "/wIB"] }],
    ["options (some)", "maybe_double", { x: 21 }, { result: 42 }],
    ["options (none)", "maybe_double", {}, { result: null }],
    ["results (top-level ok)", "parse_port", { text: " 8080 " }, { result: 8080 }],
    ["results, tuples, options, lists nested", "nested", { value: [null, ["a", [{ ok: 1 }, { err: "bad" }]]] },
        { result: [null, ["a", [{ ok: 1 }, { err: "bad" }]]] }],
];

/** Shared checks of a tools/list result. */
export function checkToolList(tools) {
    const names = tools.map((t) => t.name);
    const missing = BUNDLED_TOOLS.filter((n) => !names.includes(n));
    assert.deepEqual(missing, [], "every bundled tool is listed");
    assert.equal(new Set(names).size, names.length, "tool names are unique");
    for (const tool of tools) {
        assert.match(tool.name, /^[a-zA-Z0-9_-]{1,64}$/);
        assert.equal(tool.inputSchema.type, "object", `${tool.name}: inputSchema.type`);
        assert.ok(validator(tool.inputSchema), `${tool.name}: inputSchema compiles`);
        if (tool.outputSchema) {
            assert.equal(tool.outputSchema.type, "object", `${tool.name}: outputSchema.type`);
            assert.ok(validator(tool.outputSchema), `${tool.name}: outputSchema compiles`);
        }
    }
    return Object.fromEntries(tools.map((t) => [t.name, t]));
}

/** Shared checks of a successful call's result. */
export function checkCall(tool, args, result, expected) {
    assert.ok(!result.isError, `${tool.name} failed: ${JSON.stringify(result.content)}`);
    assertValid(args, tool.inputSchema, `${tool.name} arguments`);
    assert.deepEqual(result.structuredContent, expected, `${tool.name} structuredContent`);
    assert.ok(tool.outputSchema, `${tool.name} declares an outputSchema`);
    assertValid(result.structuredContent, tool.outputSchema, `${tool.name} structuredContent`);
    assert.equal(result.content?.[0]?.type, "text", `${tool.name}: a text copy accompanies structuredContent`);
}
