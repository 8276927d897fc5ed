// @modelcontextprotocol/client 2.x (dual-era) against `mcpplus serve`, over
// stdio and Streamable HTTP, in each way it picks an era:
// `versionNegotiation.mode` "legacy" (the default: initialize, 2025-11-25),
// "auto" (probes server/discover, then 2026-07-28 since mcpplus answers it; on
// stdio the probe runs in a throwaway sibling process) and a pin to 2026-07-28.
// v2 rejects modern results without resultType, and validates structuredContent
// against the outputSchema itself; we validate again with our own Ajv.
import { before, after } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { rmSync } from "node:fs";
import { Client, StreamableHTTPClientTransport } from "@modelcontextprotocol/client";
import { StdioClientTransport } from "@modelcontextprotocol/client/stdio";
import { MCPPLUS, serveArgs, startHttpServer, tapSends, tapTransport, tempDir } from "./lib.mjs";
import { clientSuite } from "./client-suite.mjs";

let http;
before(async () => {
    http = await startHttpServer();
});
after(async () => {
    await http?.stop();
});

const MODES = [
    ["legacy", "legacy"],
    ["auto", "modern"],
    [{ pin: "2026-07-28" }, "modern"],
];

async function connect(mode, era, transport, cleanup = () => {}) {
    const seen = tapTransport(transport);
    const sent = tapSends(transport);
    const client = new Client({ name: "mcpplus-ecosystem-client-v2", version: "0" }, { versionNegotiation: { mode } });
    await client.connect(transport, { timeout: 120_000 });
    assert.equal(client.getProtocolEra(), era);
    assert.equal(client.getNegotiatedProtocolVersion(), era === "modern" ? "2026-07-28" : "2025-11-25");
    assert.equal(client.getServerVersion()?.name, "mcpplus");
    if (era === "modern") {
        const discovered = client.getDiscoverResult();
        assert.ok(discovered?.supportedVersions.includes("2026-07-28"), JSON.stringify(discovered));
        assert.equal(discovered.capabilities.tools?.listChanged, true);
    }
    return {
        client, sent, seen,
        callWithProgress: (params, onprogress) => client.callTool(params, { onprogress }),
        async close() {
            await client.close();
            cleanup();
        },
    };
}

for (const [mode, era] of MODES) {
    const label = typeof mode === "string" ? mode : `pin ${mode.pin}`;
    clientSuite(`@modelcontextprotocol/client 2.x, mode ${label}, over stdio`, {
        tag: `client 2.x ${label}, stdio`,
        era,
        connect: () => {
            const dir = tempDir("v2-stdio");
            const transport = new StdioClientTransport({
                command: MCPPLUS, args: serveArgs(path.join(dir, "data")), stderr: "ignore",
            });
            return connect(mode, era, transport, () => rmSync(dir, { recursive: true, force: true }));
        },
    });
    clientSuite(`@modelcontextprotocol/client 2.x, mode ${label}, over Streamable HTTP`, {
        tag: `client 2.x ${label}, http`,
        era,
        connect: () => connect(mode, era, new StreamableHTTPClientTransport(new URL(http.url))),
    });
}
