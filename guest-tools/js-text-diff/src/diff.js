// A minimal line diff: Myers' O(ND) algorithm in linear space (bisecting at the
// middle snake, as diff-match-patch does), after trimming the common prefix and
// suffix of every sub-range. Plain JavaScript with no imports, so it runs the same
// in the component and under Node.

const EQUAL = 0;
const DELETE = 1;
const INSERT = 2;

// Steps of the search (diagonals tried plus lines matched) after which the rest of the
// diff is found by anchoring on unique lines instead (`anchorRange`): still a correct
// diff, not always minimal, so that large inputs with many scattered changes stay
// within the host's time limit. The engine runs interpreted (no JIT in the component),
// at about 0.6 million steps a second: some 4 to 7 seconds of search at most.
const WORK_BUDGET = 4_000_000;
// How deep anchoring may recurse into the gaps between anchors.
const MAX_ANCHOR_DEPTH = 16;

/** Split a text into lines; `missingNewline` tells whether the last line lacks its "\n". */
export function splitLines(text) {
  if (text === "") return { lines: [], missingNewline: false };
  const lines = text.split("\n");
  if (lines[lines.length - 1] === "") {
    lines.pop();
    return { lines, missingNewline: false };
  }
  return { lines, missingNewline: true };
}

/** Number each distinct line, so the diff compares integers. A last line without a
 * newline differs from the same text with one, as in `diff`. */
function intern(...files) {
  const ids = new Map();
  const lastIds = new Map();
  let next = 0;
  return files.map(({ lines, missingNewline }) =>
    Int32Array.from(lines, (line, i) => {
      const table = missingNewline && i === lines.length - 1 ? lastIds : ids;
      let id = table.get(line);
      if (id === undefined) {
        id = next++;
        table.set(line, id);
      }
      return id;
    }),
  );
}

/** Append `count` operations of `type` to a run-length list. */
function push(ops, type, count) {
  if (count <= 0) return;
  const last = ops[ops.length - 1];
  if (last && last[0] === type) last[1] += count;
  else ops.push([type, count]);
}

function diffRange(a, aLo, aHi, b, bLo, bHi, ops, state) {
  let prefix = 0;
  while (aLo + prefix < aHi && bLo + prefix < bHi && a[aLo + prefix] === b[bLo + prefix]) prefix++;
  let suffix = 0;
  while (aHi - suffix > aLo + prefix && bHi - suffix > bLo + prefix
         && a[aHi - 1 - suffix] === b[bHi - 1 - suffix]) suffix++;
  push(ops, EQUAL, prefix);
  const a0 = aLo + prefix, a1 = aHi - suffix, b0 = bLo + prefix, b1 = bHi - suffix;
  if (a0 === a1) {
    push(ops, INSERT, b1 - b0);
  } else if (b0 === b1) {
    push(ops, DELETE, a1 - a0);
  } else if (state.budget > 0 && bisect(a, a0, a1, b, b0, b1, ops, state)) {
    // diffed both halves
  } else if (!anchorRange(a, a0, a1, b, b0, b1, ops, state)) {
    push(ops, DELETE, a1 - a0);
    push(ops, INSERT, b1 - b0);
  }
  push(ops, EQUAL, suffix);
}

/** Once the budget is spent: match the lines that occur exactly once in each range,
 * keep the longest series of them in the same order in both (patience sorting) as
 * anchors, and diff the gaps between anchors. False when there is no anchor. */
function anchorRange(a, a0, a1, b, b0, b1, ops, state) {
  if (state.anchorDepth >= MAX_ANCHOR_DEPTH) return false;
  const seen = new Map(); // line id -> [count in a, count in b, position in b]
  for (let i = a0; i < a1; i++) {
    const entry = seen.get(a[i]);
    if (entry) entry[0]++;
    else seen.set(a[i], [1, 0, -1]);
  }
  for (let j = b0; j < b1; j++) {
    const entry = seen.get(b[j]);
    if (entry) {
      entry[1]++;
      entry[2] = j;
    }
  }
  const pairA = [];
  const pairB = [];
  for (let i = a0; i < a1; i++) {
    const [inA, inB, j] = seen.get(a[i]);
    if (inA === 1 && inB === 1) {
      pairA.push(i);
      pairB.push(j);
    }
  }
  if (pairA.length === 0) return false;
  // The longest increasing run of b positions, in a order.
  const tails = [];
  const previous = new Int32Array(pairA.length);
  for (let t = 0; t < pairA.length; t++) {
    let lo = 0, hi = tails.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (pairB[tails[mid]] < pairB[t]) lo = mid + 1;
      else hi = mid;
    }
    previous[t] = lo > 0 ? tails[lo - 1] : -1;
    tails[lo] = t;
  }
  const anchors = [];
  for (let t = tails[tails.length - 1]; t !== -1; t = previous[t]) anchors.push(t);
  anchors.reverse();
  state.anchorDepth++;
  let x = a0, y = b0;
  for (const t of anchors) {
    diffRange(a, x, pairA[t], b, y, pairB[t], ops, state);
    push(ops, EQUAL, 1);
    x = pairA[t] + 1;
    y = pairB[t] + 1;
  }
  diffRange(a, x, a1, b, y, b1, ops, state);
  state.anchorDepth--;
  return true;
}

/** Find where a shortest edit path crosses the middle and diff both halves; false
 * when the work budget ran out first (nothing has been pushed then). */
function bisect(a, a0, a1, b, b0, b1, ops, state) {
  const n = a1 - a0;
  const m = b1 - b0;
  const maxD = Math.ceil((n + m) / 2);
  const offset = maxD;
  const size = 2 * maxD + 2;
  const v1 = new Int32Array(size).fill(-1);
  const v2 = new Int32Array(size).fill(-1);
  v1[offset + 1] = 0;
  v2[offset + 1] = 0;
  const delta = n - m;
  // With an odd delta the forward path meets the reverse one; with an even delta, the reverse meets the forward.
  const front = delta % 2 !== 0;
  let k1start = 0, k1end = 0, k2start = 0, k2end = 0;
  const split = (x, y) => {
    diffRange(a, a0, a0 + x, b, b0, b0 + y, ops, state);
    diffRange(a, a0 + x, a1, b, b0 + y, b1, ops, state);
    return true;
  };
  for (let d = 0; d < maxD; d++) {
    if (state.budget <= 0) return false;
    for (let k1 = -d + k1start; k1 <= d - k1end; k1 += 2) {
      const k1o = offset + k1;
      let x1 = k1 === -d || (k1 !== d && v1[k1o - 1] < v1[k1o + 1]) ? v1[k1o + 1] : v1[k1o - 1] + 1;
      let y1 = x1 - k1;
      const start = x1;
      while (x1 < n && y1 < m && a[a0 + x1] === b[b0 + y1]) { x1++; y1++; }
      state.budget -= 1 + x1 - start;
      v1[k1o] = x1;
      if (x1 > n) {
        k1end += 2; // ran off the right
      } else if (y1 > m) {
        k1start += 2; // ran off the bottom
      } else if (front) {
        const k2o = offset + delta - k1;
        if (k2o >= 0 && k2o < size && v2[k2o] !== -1 && x1 >= n - v2[k2o]) return split(x1, y1);
      }
    }
    for (let k2 = -d + k2start; k2 <= d - k2end; k2 += 2) {
      const k2o = offset + k2;
      let x2 = k2 === -d || (k2 !== d && v2[k2o - 1] < v2[k2o + 1]) ? v2[k2o + 1] : v2[k2o - 1] + 1;
      let y2 = x2 - k2;
      const start = x2;
      while (x2 < n && y2 < m && a[a1 - x2 - 1] === b[b1 - y2 - 1]) { x2++; y2++; }
      state.budget -= 1 + x2 - start;
      v2[k2o] = x2;
      if (x2 > n) {
        k2end += 2;
      } else if (y2 > m) {
        k2start += 2;
      } else if (!front) {
        const k1o = offset + delta - k2;
        if (k1o >= 0 && k1o < size && v1[k1o] !== -1) {
          const x1 = v1[k1o];
          const y1 = offset + x1 - k1o;
          if (x1 >= n - x2) return split(x1, y1);
        }
      }
    }
  }
  return false;
}

/** The edit script from `a` to `b` as runs [type, count], each change written as its
 * deletions followed by its insertions (as `diff` prints them). Lines that occur in
 * only one of the texts can never match, so they are set aside before the search (as
 * GNU diff does): a large rewrite then costs little, and the diff stays minimal. */
function editScript(a, b, budget) {
  const inA = new Set(a);
  const inB = new Set(b);
  const aIndex = [];
  const bIndex = [];
  for (let i = 0; i < a.length; i++) if (inB.has(a[i])) aIndex.push(i);
  for (let j = 0; j < b.length; j++) if (inA.has(b[j])) bIndex.push(j);
  const ra = Int32Array.from(aIndex, (i) => a[i]);
  const rb = Int32Array.from(bIndex, (j) => b[j]);
  const raw = [];
  diffRange(ra, 0, ra.length, rb, 0, rb.length, raw, { budget, anchorDepth: 0 });
  // Map the matched lines back; everything between two matches is deleted, then inserted.
  const ops = [];
  let x = 0, y = 0, p = 0, q = 0;
  for (const [type, count] of raw) {
    if (type === DELETE) p += count;
    else if (type === INSERT) q += count;
    else {
      for (let k = 0; k < count; k++, p++, q++) {
        push(ops, DELETE, aIndex[p] - x);
        push(ops, INSERT, bIndex[q] - y);
        push(ops, EQUAL, 1);
        x = aIndex[p] + 1;
        y = bIndex[q] + 1;
      }
    }
  }
  push(ops, DELETE, a.length - x);
  push(ops, INSERT, b.length - y);
  return ops;
}

/** The changes of an edit script: where each starts and how many lines it spans. */
function changes(ops) {
  const list = [];
  let ai = 0, bi = 0;
  for (const [type, count] of ops) {
    if (type === EQUAL) {
      ai += count;
      bi += count;
      continue;
    }
    let change = list[list.length - 1];
    if (!change || change.aEnd !== ai || change.bEnd !== bi) {
      change = { aStart: ai, aEnd: ai, bStart: bi, bEnd: bi };
      list.push(change);
    }
    if (type === DELETE) change.aEnd = ai += count;
    else change.bEnd = bi += count;
  }
  return list;
}

/** `diff -u`'s line range: "start,count", "start" for one line, "before,0" for none. */
function range(start, end) {
  const count = end - start;
  if (count === 0) return `${start},0`;
  if (count === 1) return `${start + 1}`;
  return `${start + 1},${count}`;
}

const NO_NEWLINE = "\\ No newline at end of file";

/** `budget` is for tests of the fallback; the tools use the default. */
export function unifiedDiff(before, after, context = 3, beforeName = "before", afterName = "after",
                            budget = WORK_BUDGET) {
  const A = splitLines(before);
  const B = splitLines(after);
  const [a, b] = intern(A, B);
  const list = changes(editScript(a, b, budget));
  if (list.length === 0) return "";
  const out = [`--- ${beforeName}`, `+++ ${afterName}`];
  const line = (file, prefix, i) => {
    out.push(prefix + file.lines[i]);
    if (file.missingNewline && i === file.lines.length - 1) out.push(NO_NEWLINE);
  };
  for (let first = 0; first < list.length;) {
    // A hunk takes the following changes while the unchanged lines between them are at most 2 × context.
    let last = first;
    while (last + 1 < list.length && list[last + 1].aStart - list[last].aEnd <= 2 * context) last++;
    const lead = Math.min(context, list[first].aStart);
    const trail = Math.min(context, a.length - list[last].aEnd);
    const aStart = list[first].aStart - lead, aEnd = list[last].aEnd + trail;
    const bStart = list[first].bStart - lead, bEnd = list[last].bEnd + trail;
    out.push(`@@ -${range(aStart, aEnd)} +${range(bStart, bEnd)} @@`);
    let ai = aStart;
    for (let c = first; c <= last; c++) {
      const change = list[c];
      for (; ai < change.aStart; ai++) line(A, " ", ai);
      for (; ai < change.aEnd; ai++) line(A, "-", ai);
      for (let bi = change.bStart; bi < change.bEnd; bi++) line(B, "+", bi);
    }
    for (; ai < aEnd; ai++) line(A, " ", ai);
    first = last + 1;
  }
  return out.join("\n") + "\n";
}

export function diffStats(before, after, budget = WORK_BUDGET) {
  const A = splitLines(before);
  const B = splitLines(after);
  const [a, b] = intern(A, B);
  let added = 0, removed = 0, unchanged = 0;
  for (const [type, count] of editScript(a, b, budget)) {
    if (type === INSERT) added += count;
    else if (type === DELETE) removed += count;
    else unchanged += count;
  }
  const total = a.length + b.length;
  return { added, removed, unchanged, similarity: total === 0 ? 1 : (2 * unchanged) / total };
}
