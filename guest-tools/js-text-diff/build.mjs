// Build the component with ComponentizeJS's API (not `jco componentize`):
//   node build.mjs OUT.wasm
// Every WASI feature of the engine is disabled, so the component imports nothing:
// stdio (console.*, error reports), random (Math.random, crypto), clocks (Date.now,
// timers), http (fetch) and fetch-event. See README.md for what that implies.
import { writeFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { componentize } from "@bytecodealliance/componentize-js";

const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const out = process.argv[2];
if (!out) {
  console.error("usage: node build.mjs OUT.wasm");
  process.exit(2);
}
const { component } = await componentize({
  sourcePath: here("./app.js"),
  witPath: here("./wit"),
  worldName: "js-text-diff",
  disableFeatures: ["stdio", "random", "clocks", "http", "fetch-event"],
});
await writeFile(out, component);
