"""The bundled JavaScript tool (guest-tools/js-text-diff, built with ComponentizeJS)
through the official MCP client over stdio, in both protocol eras: its tools and
schemas, a minimal line diff that `patch` semantics accept, URL parsing, and tool
errors."""

import json
import random
import re
import shutil
import subprocess

import jsonschema
import pytest

from conftest import DIST, ERAS, MCPPLUS, connect

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(600)]

COMPONENT = DIST / "js_text_diff.wasm"
TOOLS = {"unified_diff", "diff_stats", "url_parts"}


@pytest.fixture(scope="module")
def tools_dir(tmp_path_factory):
    """A folder serving only the JavaScript component."""
    folder = tmp_path_factory.mktemp("js-tools")
    shutil.copy(COMPONENT, folder)
    return folder


@pytest.fixture(params=ERAS)
async def client(request, tools_dir):
    async with connect("stdio", request.param, serve_args=("--tools", str(tools_dir), "--no-admin")) as c:
        yield c


async def call_ok(client, name, args):
    result = await client.call_tool(name, args)
    assert not result.is_error, (name, result.content)
    return result.structured_content


def lines_of(text: str) -> list[str]:
    """Lines with their "\\n" (the last one may lack it), split only at "\\n"."""
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def apply_unified(before: str, patch: str) -> str:
    """Apply a unified diff strictly (no fuzz, no offsets), checking every hunk's
    counts and every context and removed line."""
    if patch == "":
        return before
    src = lines_of(before)
    rows = patch.split("\n")
    assert rows[0].startswith("--- ") and rows[1].startswith("+++ ") and rows[-1] == ""
    out, pos, i = [], 0, 2
    while rows[i]:
        m = re.fullmatch(r"@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@", rows[i])
        assert m, rows[i]
        a_len = 1 if m[2] is None else int(m[2])
        b_len = 1 if m[4] is None else int(m[4])
        start = int(m[1]) - 1 if a_len else int(m[1])
        assert start >= pos, "hunks in order, not overlapping"
        assert len(out) + start - pos == (int(m[3]) - 1 if b_len else int(m[3])), "new start matches"
        out += src[pos:start]
        pos = start
        i += 1
        seen_a = seen_b = 0
        while rows[i] and not rows[i].startswith("@@"):
            tag, text = rows[i][0], rows[i][1:]
            no_eol = rows[i + 1] == "\\ No newline at end of file"
            full = text if no_eol else text + "\n"
            assert tag in " -+", rows[i]
            if tag in " -":
                assert src[pos] == full, (pos, src[pos], full)
                pos += 1
                seen_a += 1
            if tag in " +":
                out.append(full)
                seen_b += 1
            i += 2 if no_eol else 1
        assert (seen_a, seen_b) == (a_len, b_len), "hunk header counts"
    return "".join(out + src[pos:])


def lcs_length(a: list[str], b: list[str]) -> int:
    row = [0] * (len(b) + 1)
    for x in a:
        prev = 0
        for j, y in enumerate(b):
            cur = row[j + 1]
            row[j + 1] = prev + 1 if x == y else max(row[j + 1], row[j])
            prev = cur
    return row[-1]


async def test_lists_the_tools_with_documented_schemas(client):
    page = await client.list_tools()
    tools = {t.name: t for t in page.tools}
    assert set(tools) == TOOLS
    for tool in tools.values():
        jsonschema.Draft202012Validator.check_schema(tool.input_schema)
        jsonschema.Draft202012Validator.check_schema(tool.output_schema)
        assert tool.input_schema["additionalProperties"] is False
    diff = tools["unified_diff"]
    assert diff.description.startswith("Compare two texts line by line")
    props = diff.input_schema["properties"]
    assert set(props) == {"before", "after", "context", "before_name", "after_name"}
    assert diff.input_schema["required"] == ["before", "after"]
    assert props["context"]["description"] == "unchanged lines shown around each change (default 3)"
    assert props["context"]["anyOf"][0] == {"type": "integer", "minimum": 0, "maximum": 2**32 - 1}
    stats = tools["diff_stats"].output_schema
    assert stats["required"] == ["added", "removed", "unchanged", "similarity"]
    assert stats["properties"]["added"]["description"] == "Lines only in `after`."
    url = tools["url_parts"]
    assert url.input_schema["required"] == ["url"]
    assert url.output_schema["properties"]["port"]["anyOf"][0]["maximum"] == 65535
    assert url.output_schema["properties"]["params"]["items"]["required"] == ["name", "value"]


async def test_unified_diff_prints_hunks_like_diff_u(client, tmp_path):
    before = "".join(f"line {i}\n" for i in range(1, 21))
    after = before.replace("line 2\n", "line two\n").replace("line 15\n", "").replace("line 17\n", "line 17\nnew\n")
    result = await client.call_tool("unified_diff", {"before": before, "after": after})
    expected = (
        "--- before\n+++ after\n"
        "@@ -1,5 +1,5 @@\n line 1\n-line 2\n+line two\n line 3\n line 4\n line 5\n"
        "@@ -12,9 +12,9 @@\n line 12\n line 13\n line 14\n-line 15\n line 16\n line 17\n+new\n"
        " line 18\n line 19\n line 20\n"
    )
    assert result.structured_content == {"result": expected}
    assert result.content[0].text == expected
    if shutil.which("diff"):  # GNU diff agrees (the alignment here is unique)
        (tmp_path / "a").write_text(before)
        (tmp_path / "b").write_text(after)
        gnu = subprocess.run(["diff", "-u", "--label", "before", "--label", "after", tmp_path / "a", tmp_path / "b"],
                             capture_output=True, text=True)
        assert gnu.stdout == expected

    named = await call_ok(client, "unified_diff", {"before": "a\nb\n", "after": "a\nc", "context": 0,
                                                   "before_name": "x.txt", "after_name": "x.txt (new)"})
    assert named["result"] == ("--- x.txt\n+++ x.txt (new)\n@@ -2 +2 @@\n-b\n+c\n"
                               "\\ No newline at end of file\n")
    assert (await call_ok(client, "unified_diff", {"before": "", "after": "new\n"}))["result"] == \
        "--- before\n+++ after\n@@ -0,0 +1 @@\n+new\n"
    assert (await call_ok(client, "unified_diff", {"before": "same\n", "after": "same\n", "context": None})) == \
        {"result": ""}


async def test_random_diffs_are_minimal_and_apply(client):
    rng = random.Random(20261129)

    def text():
        lines = [rng.choice(["a", "b", "c", "", "d e"]) for _ in range(rng.randrange(12))]
        body = "".join(line + "\n" for line in lines)
        return body[:-1] if body and rng.random() < 0.25 else body

    for _ in range(40):
        before, after, context = text(), text(), rng.randrange(5)
        patch = (await call_ok(client, "unified_diff", {"before": before, "after": after, "context": context}))["result"]
        assert apply_unified(before, patch) == after, (before, after, patch)
        assert (patch == "") == (before == after)
        stats = await call_ok(client, "diff_stats", {"before": before, "after": after})
        a, b = lines_of(before), lines_of(after)
        common = lcs_length(a, b)
        assert (stats["unchanged"], stats["removed"], stats["added"]) == (common, len(a) - common, len(b) - common)
        assert stats["similarity"] == pytest.approx(2 * common / (len(a) + len(b)) if a or b else 1.0)
        assert stats["added"] == sum(1 for r in patch.split("\n")[2:] if r.startswith("+"))


async def test_large_scattered_diffs_stay_correct_within_the_time_limit(tools_dir):
    """Past its search budget the diff anchors on unique lines: correct, not always minimal."""
    before = "".join(f"line {i}\n" for i in range(5000))
    after = "".join(f"line {(i * 7) % 5003}\n" for i in range(5000))
    async with connect("stdio", "auto", serve_args=("--tools", str(tools_dir), "--no-admin")) as client:
        patch = (await call_ok(client, "unified_diff", {"before": before, "after": after, "context": 0}))["result"]
    assert apply_unified(before, patch) == after
    removed = sum(1 for row in patch.split("\n")[2:] if row.startswith("-"))
    assert 5000 - removed > 500  # lines kept; a longest common subsequence has at least 715


async def test_diff_stats(client):
    assert await call_ok(client, "diff_stats", {"before": "a\nb\nc\n", "after": "a\nB\nc\nd\n"}) == \
        {"added": 2, "removed": 1, "unchanged": 2, "similarity": pytest.approx(4 / 7)}
    assert await call_ok(client, "diff_stats", {"before": "", "after": ""}) == \
        {"added": 0, "removed": 0, "unchanged": 0, "similarity": 1.0}


async def test_url_parts(client):
    tools = {t.name: t for t in (await client.list_tools()).tools}
    parts = await call_ok(client, "url_parts", {"url": "HTTPS://User:p%40ss@Bücher.Example:8443/a/../b/?q=1&tag=x%20y&flag#top"})
    assert parts == {
        "href": "https://User:p%40ss@xn--bcher-kva.example:8443/b/?q=1&tag=x%20y&flag#top",
        "origin": "https://xn--bcher-kva.example:8443",
        "protocol": "https:",
        "username": "User",
        "password": "p%40ss",
        "hostname": "xn--bcher-kva.example",
        "port": 8443,
        "pathname": "/b/",
        "search": "?q=1&tag=x%20y&flag",
        "params": [{"name": "q", "value": "1"}, {"name": "tag", "value": "x y"}, {"name": "flag", "value": ""}],
        "hash": "#top",
    }
    jsonschema.validate(parts, tools["url_parts"].output_schema, cls=jsonschema.Draft202012Validator)

    relative = await call_ok(client, "url_parts", {"url": "../img.png?v=2", "base": "http://[::1]:80/docs/guide/"})
    assert relative["href"] == "http://[::1]/docs/img.png?v=2"
    assert relative["hostname"] == "[::1]" and relative["port"] is None  # 80 is http's default
    data = await call_ok(client, "url_parts", {"url": "data:text/plain,hi", "base": None})
    assert (data["origin"], data["pathname"], data["hostname"]) == ("null", "text/plain,hi", "")


async def test_errors_are_tool_errors(client):
    cases = [
        ({"url": "/just/a/path"}, 'invalid URL: "/just/a/path"; it has no scheme: pass `base` to resolve a relative URL'),
        ({"url": "http://[::1"}, 'invalid URL: "http://[::1"'),
        ({"url": "x", "base": "not a base"}, 'invalid base URL: "not a base"'),
    ]
    for args, message in cases:
        result = await client.call_tool("url_parts", args)
        assert result.is_error, args
        assert result.structured_content is None
        assert result.content[0].text == message

    result = await client.call_tool("unified_diff", {"before": "a", "after": "b", "context": -1})
    assert result.is_error
    assert "arguments.context" in result.content[0].text

    result = await client.call_tool("diff_stats", {"before": "a"})
    assert result.is_error and "arguments.after: missing required value" in result.content[0].text


def test_the_component_imports_nothing():
    """Every ComponentizeJS feature is disabled in its build (guest-tools/js-text-diff/build.mjs)."""
    out = subprocess.run([MCPPLUS, "inspect", str(COMPONENT), "--json"], capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    assert report["imports"] == []
    assert report["hasDocs"] is True
    assert {t["name"] for t in report["tools"]} == TOOLS
