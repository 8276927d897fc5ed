// The component's exports (world `js-text-diff` in wit/world.wit): each exported
// WIT interface is an object named after it, holding the camelCase functions.
// `option<T>` parameters arrive as `undefined` when absent.
import { unifiedDiff, diffStats } from "./src/diff.js";
import { urlParts } from "./src/url.js";

export const diff = {
  unifiedDiff(before, after, context, beforeName, afterName) {
    return unifiedDiff(before, after, context ?? 3, beforeName ?? "before", afterName ?? "after");
  },
  diffStats(before, after) {
    return diffStats(before, after);
  },
};

export const url = {
  urlParts(text, base) {
    return urlParts(text, base ?? undefined);
  },
};
