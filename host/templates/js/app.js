// {{name}}: an mcpplus tool component written in JavaScript.
//
// Every function the world in wit/world.wit exports is an MCP tool; export it
// here under its camelCase name (`summarize-text` → `summarizeText`). Record
// fields are camelCase too, and an `option` is `undefined` when absent. For a
// `result<T, E>`, return T for `ok`, or throw E for `err`: the client gets a
// tool error its model can read and act on. Build it with `mcpplus build`.
//
// Logging and progress: uncomment the imports in wit/world.wit, then
//   import { log } from 'mcpplus:host/log@0.1.0';
//   import { report } from 'mcpplus:host/progress@0.1.0';
//   log('info', 'counted', [['words', String(words)]]);
//   report(done, total, 'counting');

const words = (text) => text.split(/\s+/).filter((word) => word.length > 0);

// Length in characters (code points), not UTF-16 units.
const length = (word) => [...word].length;

export function countWords(text) {
  return words(text).length;
}

export function summarizeText(text, minLength) {
  if (text.trim() === '') {
    throw 'the text is empty: pass some words to summarize';
  }
  const minimum = minLength ?? 1;
  const counted = words(text).filter((word) => length(word) >= minimum);
  let longestWord;
  for (const word of counted) {
    if (longestWord === undefined || length(word) > length(longestWord)) {
      longestWord = word;
    }
  }
  // A last line without a newline counts.
  const lines = text.split('\n').length - (text.endsWith('\n') ? 1 : 0);
  return { words: counted.length, lines, longestWord };
}
