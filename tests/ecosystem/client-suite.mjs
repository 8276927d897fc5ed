// The tests every TypeScript SDK client runs against a connected server, whatever
// the SDK, transport and protocol era: list the bundled tools, call one tool of
// each WIT type family, and check structuredContent with our own validator.
import { describe, it as test, before, after } from "node:test";
import assert from "node:assert/strict";
import { FAMILY_CALLS, checkToolList, checkCall, lastResult } from "./lib.mjs";

const MODERN = "2026-07-28";
const LEGACY = "2025-11-25";
const VERSION_KEY = "io.modelcontextprotocol/protocolVersion";

/**
 * `connect()` resolves to `{client, sent, seen, callWithProgress, close}`: the
 * SDK client, the messages its transport sent and received (tapped; see
 * lib.mjs), and `callTool` with a progress callback (the SDKs differ there).
 * `era` is "legacy" or "modern", what the connection must have negotiated;
 * `tag` a short name for the client, transport and era.
 */
export function clientSuite(title, { tag, era, connect }) {
    // The tag names the client and transport in the failure summary too.
    const it = (name, fn) => test(`${name} [${tag}]`, fn);
    describe(title, () => {
        let conn;
        let tools;
        before(async () => {
            conn = await connect();
        });
        after(async () => {
            await conn?.close();
        });

        const raw = (method) => lastResult(conn.sent, conn.seen, method);

        it(`negotiates the ${era} era`, () => {
            if (era === "legacy") {
                const init = raw("initialize");
                assert.equal(init.protocolVersion, LEGACY);
                assert.equal(init.serverInfo.name, "mcpplus");
                assert.equal(init.capabilities.tools.listChanged, true);
                assert.ok(!conn.sent.some((m) => m.method === "server/discover"), "a legacy client sends no server/discover");
            } else {
                assert.ok(!conn.sent.some((m) => m.method === "initialize"), "no initialize on a modern connection");
            }
        });

        it("lists every bundled tool, in one page, with schemas an independent 2020-12 validator compiles", async () => {
            const listed = await conn.client.listTools();
            tools = checkToolList(listed.tools);
            const wire = raw("tools/list");
            assert.equal(wire.nextCursor, undefined, "one page, no nextCursor");
            if (era === "modern") {
                assert.equal(wire.resultType, "complete");
                assert.ok(Number.isInteger(wire.ttlMs) && wire.ttlMs >= 0, `ttlMs: ${wire.ttlMs}`);
                assert.ok(["public", "private"].includes(wire.cacheScope), `cacheScope: ${wire.cacheScope}`);
                const request = conn.sent.findLast((m) => m.method === "tools/list");
                assert.equal(request.params?._meta?.[VERSION_KEY], MODERN, "the request carried the modern _meta");
            }
        });

        for (const [family, name, args, expected] of FAMILY_CALLS) {
            it(`${family}: ${name}`, async () => {
                assert.ok(tools, "tools were listed");
                const result = await conn.client.callTool({ name, arguments: args });
                checkCall(tools[name], args, result, expected);
                const wire = raw("tools/call");
                assert.deepEqual(wire.structuredContent, expected, "structuredContent on the wire");
                if (era === "modern") assert.equal(wire.resultType, "complete");
            });
        }

        it("a tool error is an isError result without structuredContent", async () => {
            const result = await conn.client.callTool({ name: "divide", arguments: { numerator: 1, denominator: 0 } });
            assert.equal(result.isError, true);
            assert.equal(result.structuredContent, undefined);
            assert.match(result.content[0].text, /cannot divide 1 by zero/);
            if (era === "modern") assert.equal(raw("tools/call").resultType, "complete");
        });

        it("a structured error (result<_, variant>) is an isError result", async () => {
            const result = await conn.client.callTool({ name: "parse_port", arguments: { text: "99999" } });
            assert.equal(result.isError, true);
            assert.equal(result.structuredContent, undefined);
            assert.match(result.content[0].text, /\{"out-of-range":99999\}/);
        });

        it("content blocks: text, image, audio, embedded resource", async () => {
            const result = await conn.client.callTool({ name: "badge", arguments: { label: "ok" } });
            assert.ok(!result.isError);
            assert.deepEqual(result.content.map((c) => c.type), ["text", "image", "audio", "resource"]);
            assert.equal(result.content[1].mimeType, "image/png");
            assert.ok(Buffer.from(result.content[1].data, "base64").subarray(0, 4).equals(Buffer.from("\x89PNG", "latin1")));
            assert.equal(result.content[3].resource.uri, "badge://ok");
            assert.equal(result.structuredContent, undefined);
        });

        it("progress notifications reach the caller (count_to)", async () => {
            const progress = [];
            const result = await conn.callWithProgress({ name: "count_to", arguments: { to: 3, pause_ms: 20 } },
                (p) => progress.push(p));
            assert.deepEqual(result.structuredContent, { result: 3 });
            // The last notification comes right before the response, and both SDKs
            // drop one they handle after it (typescript-sdk#2580: notifications are
            // dispatched a microtask later than responses), so "3 of 3" may be lost.
            // The earlier ones are 20 ms clear of it. (The wire has all three, in order.)
            const got = progress.map((p) => [p.progress, p.total]);
            assert.deepEqual(got.slice(0, 2), [[1, 3], [2, 3]], JSON.stringify(got));
            assert.ok(got.length <= 3 && (got.length === 2 || got[2][0] === 3), JSON.stringify(got));
            const token = conn.sent.findLast((m) => m.method === "tools/call").params._meta.progressToken;
            const onWire = conn.seen.filter((m) => m.method === "notifications/progress" && m.params.progressToken === token);
            assert.deepEqual(onWire.map((m) => m.params.progress), [1, 2, 3], "the server sent every step");
            const response = conn.seen.findIndex((m) => m.id === conn.sent.findLast((r) => r.method === "tools/call").id && "result" in m);
            assert.ok(conn.seen.indexOf(onWire.at(-1)) < response, "progress comes before the response");
        });

        it("no return value: content only", async () => {
            const result = await conn.client.callTool({ name: "noop", arguments: {} });
            assert.ok(!result.isError);
            assert.equal(result.structuredContent, undefined);
        });

        it("bad arguments are a tool error naming the path", async () => {
            const result = await conn.client.callTool({
                name: "summarize",
                arguments: { items: [{ name: "a", count: 1, tags: [] }, { name: "b", count: 300, tags: [] }] },
            });
            assert.equal(result.isError, true);
            assert.match(result.content[0].text, /arguments\.items\[1\]\.count: expected u8 \(0\.\.=255\), got 300/);
        });

        it("an unknown tool is a -32602 protocol error", async () => {
            await assert.rejects(conn.client.callTool({ name: "no_such_tool", arguments: {} }), (err) => {
                assert.equal(err.code, -32602, String(err));
                assert.match(err.message, /Unknown tool: no_such_tool/);
                return true;
            });
        });
    });
}
