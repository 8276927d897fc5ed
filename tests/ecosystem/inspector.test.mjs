// The MCP Inspector's CLI (@modelcontextprotocol/inspector 2.x, `--cli`, Node ≥ 22)
// against `mcpplus serve` over stdio and Streamable HTTP, in the legacy era (its
// default) and the modern one (`--protocol-era modern`): tools/list, tools/call,
// and `tools/list --strict`, its tool-schema portability lint, which must find
// no error-severity problem.
import { describe, it as test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { rmSync } from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";
import { MCPPLUS, BUNDLED_TOOLS, serveArgs, startHttpServer, tempDir, track, checkToolList, assertValid } from "./lib.mjs";

const require = createRequire(import.meta.url);
const INSPECTOR = path.join(path.dirname(require.resolve("@modelcontextprotocol/inspector/package.json")),
    "clients", "launcher", "build", "index.js");

// Exit codes (docs/cli-smoke-testing.md in the Inspector): 0 ok, 5 tool isError,
// 6 --strict found an error-severity schema problem.
const EXIT_TOOL_ERROR = 5;

let home;
let http;
before(async () => {
    // The Inspector keeps a catalog, client config and secrets under ~/.mcp-inspector.
    home = tempDir("inspector-home");
    http = await startHttpServer();
});
after(async () => {
    await http?.stop();
    rmSync(home, { recursive: true, force: true });
});

/** Run `inspector --cli ARGS`; resolves with {code, stdout, stderr}. */
function inspector(args) {
    return new Promise((resolve) => {
        const child = track(execFile(process.execPath, [INSPECTOR, "--cli", ...args], {
            env: { ...process.env, HOME: home, NO_COLOR: "1" },
            timeout: 180_000,
            killSignal: "SIGKILL",
            maxBuffer: 64 * 1024 * 1024,
        }, (error, stdout, stderr) => {
            resolve({ code: error ? (error.code ?? error.signal) : 0, stdout, stderr });
        }));
        child.stdin?.end();
    });
}

function json(run) {
    const line = run.stdout.trim().split("\n").at(-1);
    try {
        return JSON.parse(line);
    } catch {
        assert.fail(`no JSON on stdout (exit ${run.code}):\n${run.stdout}\n${run.stderr}`);
    }
}

const TRANSPORTS = {
    stdio: () => {
        const dir = tempDir("inspector-stdio");
        // The server's own arguments go after `--`, at the end.
        return { target: [MCPPLUS], tail: ["--", ...serveArgs(path.join(dir, "data"))], cleanup: () => rmSync(dir, { recursive: true, force: true }) };
    },
    http: () => ({ target: ["--transport", "http", http.url], tail: [], cleanup: () => {} }),
};

for (const transport of Object.keys(TRANSPORTS)) {
    for (const era of ["legacy", "modern"]) {
        describe(`Inspector CLI over ${transport}, ${era} era`, () => {
            // The transport and era in each name, for the failure summary.
            const it = (name, fn) => test(`${name} [Inspector, ${transport}, ${era}]`, fn);
            const run = async (...args) => {
                const t = TRANSPORTS[transport]();
                try {
                    // Inspector options first: after a stdio command, the rest is the server's.
                    return await inspector(["--protocol-era", era, "--connect-timeout", "120000",
                        "--format", "json", ...args, ...t.target, ...t.tail]);
                } finally {
                    t.cleanup();
                }
            };
            let tools;

            it("tools/list lists every bundled tool", async () => {
                const r = await run("--method", "tools/list");
                assert.equal(r.code, 0, r.stderr);
                tools = checkToolList(json(r).result.tools);
            });

            const call = era === "legacy"
                ? ["describe", { c: "blue", perms: ["write"], initial: "é", loud: true }, { result: "É IS BLUE AND MAY WRITE" }]
                : ["checksum", { data: "AQL/" }, { result: [258, "/wIB"] }];
            it(`tools/call ${call[0]} returns structuredContent matching its outputSchema`, async () => {
                const [name, args, expected] = call;
                const r = await run("--method", "tools/call", "--tool-name", name, "--tool-args-json", JSON.stringify(args));
                assert.equal(r.code, 0, r.stderr);
                const result = json(r).result;
                assert.ok(!result.isError, JSON.stringify(result));
                assert.deepEqual(result.structuredContent, expected);
                assert.ok(tools, "tools were listed");
                assertValid(result.structuredContent, tools[name].outputSchema, name);
            });

            it("a tool error exits with the tool-error code", async () => {
                const r = await run("--method", "tools/call", "--tool-name", "divide",
                    "--tool-args-json", JSON.stringify({ numerator: 1, denominator: 0 }));
                assert.equal(r.code, EXIT_TOOL_ERROR, `${r.stdout}\n${r.stderr}`);
            });

            if (era === "legacy") {
                it("tools/list --strict finds no error-severity schema portability problem", async (t) => {
                    const r = await run("--method", "tools/list", "--strict");
                    const out = json(r);
                    // The lint saw the whole list.
                    assert.deepEqual(BUNDLED_TOOLS.filter((n) => !out.result.tools.some((tool) => tool.name === n)), []);
                    const findings = (out.schemaFindings ?? []).flatMap(({ toolName, findings }) =>
                        findings.map((f) => ({ tool: toolName, ...f })));
                    const line = (f) => `${f.severity} ${f.tool}: ${f.schema}.${f.path}: ${f.issue}`;
                    const warnings = findings.filter((f) => f.severity !== "error");
                    // Warnings are reported, not failures.
                    const byIssue = Map.groupBy(warnings, (f) => f.issue);
                    for (const [issue, fs] of byIssue) {
                        t.diagnostic(`${fs.length} warnings: ${issue} (${fs.map((f) => `${f.tool} ${f.schema}.${f.path}`).join(", ")})`);
                    }
                    const errors = findings.filter((f) => f.severity === "error");
                    assert.equal(errors.length, 0, `${errors.length} error-severity findings:\n${errors.map(line).join("\n")}`);
                    assert.equal(r.code, 0, r.stderr);
                });
            }
        });
    }
}
