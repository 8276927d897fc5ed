// The TypeScript SDK 1.x client (@modelcontextprotocol/sdk, legacy era only)
// against `mcpplus serve`, over stdio and Streamable HTTP. Its listTools()
// compiles every outputSchema (draft-07 Ajv), and its callTool() validates
// structuredContent against it: a schema it reads differently fails here.
import { before, after } from "node:test";
import path from "node:path";
import { rmSync } from "node:fs";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { MCPPLUS, serveArgs, startHttpServer, tapSends, tapTransport, tempDir } from "./lib.mjs";
import { clientSuite } from "./client-suite.mjs";

let http;
before(async () => {
    http = await startHttpServer();
});
after(async () => {
    await http?.stop();
});

async function connect(transport, cleanup = () => {}) {
    const seen = tapTransport(transport);
    const sent = tapSends(transport);
    const client = new Client({ name: "mcpplus-ecosystem-sdk-v1", version: "0" });
    await client.connect(transport, { timeout: 120_000 });
    return {
        client, sent, seen,
        callWithProgress: (params, onprogress) => client.callTool(params, undefined, { onprogress }),
        async close() {
            await client.close();
            cleanup();
        },
    };
}

clientSuite("@modelcontextprotocol/sdk 1.x over stdio", {
    tag: "sdk 1.x, stdio",
    era: "legacy",
    connect: () => {
        const dir = tempDir("v1-stdio");
        const transport = new StdioClientTransport({
            command: MCPPLUS, args: serveArgs(path.join(dir, "data")), stderr: "ignore",
        });
        return connect(transport, () => rmSync(dir, { recursive: true, force: true }));
    },
});

clientSuite("@modelcontextprotocol/sdk 1.x over Streamable HTTP", {
    tag: "sdk 1.x, http",
    era: "legacy",
    connect: () => connect(new StreamableHTTPClientTransport(new URL(http.url))),
});
