"""{{name}}: an mcpplus tool component written in Python.

Every function the world in wit/world.wit exports is an MCP tool; the methods of
WitWorld below implement them (kebab-case WIT names become snake_case). Build it
with `mcpplus build`.

For a `result<T, E>`, return T for `ok`, or raise Err(E) for `err`: the client
gets a tool error its model can read and act on.

Logging and progress: uncomment the imports in wit/world.wit, then

    from wit_world.imports import log, progress
    log.log(log.Level.INFO, "counted", [("words", str(words))])
    progress.report(done, total, "counting")
"""

import wit_world
from componentize_py_types import Err


class WitWorld(wit_world.WitWorld):
    def count_words(self, text: str) -> int:
        return len(text.split())

    def summarize_text(self, text: str, min_length: int | None) -> wit_world.TextSummary:
        if not text.strip():
            raise Err("the text is empty: pass some words to summarize")
        minimum = 1 if min_length is None else min_length
        words = [word for word in text.split() if len(word) >= minimum]
        longest_word = None
        for word in words:
            if longest_word is None or len(word) > len(longest_word):
                longest_word = word
        # A last line without a newline counts.
        lines = text.count("\n") + (0 if text.endswith("\n") else 1)
        return wit_world.TextSummary(words=len(words), lines=lines, longest_word=longest_word)
