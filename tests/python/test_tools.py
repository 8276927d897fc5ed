"""The bundled tools over MCP, with the official Python client, in both protocol
eras and over both transports: listing, schemas, calls, tool errors and protocol
errors."""

import base64
import re

import jsonschema
import pytest
from mcp import MCPError

from conftest import ERAS, TRANSPORTS, connect

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(600)]

SHOWCASE = {"echo", "echo_integers", "scale", "area", "describe", "summarize", "checksum", "divide",
            "parse_port", "maybe_double", "nested", "badge", "noop", "count_to"}
TEXT_UTILS = {"word_count", "slugify", "change_case", "wrap", "truncate", "extract_urls"}
PY_STATS = {"describe_sample", "percentile"}
JS_TEXT_DIFF = {"unified_diff", "diff_stats", "url_parts"}
FETCH = {"fetch"}
TASK_QUEUE = {"task_submit", "task_status", "task_cancel", "task_list", "task_priority", "task_result",
              "queue_stats", "queue_pause", "queue_resume", "queue_clear", "task_retry",
              "worker_register", "worker_unregister", "worker_status"}
PEER_TOOLS = {"peer_discover", "peer_connect", "peer_disconnect", "peer_list", "peer_metrics",
              "bootstrap_network"}
WORKFLOW_TOOLS = {"workflow_submit", "workflow_status", "workflow_cancel", "workflow_list",
                  "workflow_dependencies", "workflow_result", "workflow_templates"}
ALL_TOOLS = SHOWCASE | TEXT_UTILS | PY_STATS | JS_TEXT_DIFF | FETCH | TASK_QUEUE | PEER_TOOLS | WORKFLOW_TOOLS


@pytest.fixture(params=[(t, m) for t in TRANSPORTS for m in ERAS], ids=lambda p: f"{p[0]}-{p[1]}")
def session_kind(request):
    return request.param


@pytest.fixture
async def client(session_kind, http_server):
    transport, mode = session_kind
    async with connect(transport, mode, http_server) as c:
        yield c


async def list_all(client):
    page = await client.list_tools()
    assert page.next_cursor is None, "all tools come in one page, without a cursor"
    return {t.name: t for t in page.tools}


async def test_negotiated_era(client, session_kind):
    _, mode = session_kind
    expected = "2025-11-25" if mode == "legacy" else "2026-07-28"
    assert client.protocol_version == expected
    caps = client.server_capabilities
    assert caps.tools is not None and caps.tools.list_changed is True


async def test_lists_every_bundled_tool_with_valid_schemas(client):
    tools = await list_all(client)
    assert set(tools) == ALL_TOOLS
    for name, tool in tools.items():
        assert re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", name)
        schema = tool.input_schema
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["type"] == "object" and schema["additionalProperties"] is False
        if tool.output_schema is not None:
            jsonschema.Draft202012Validator.check_schema(tool.output_schema)
            assert tool.output_schema["type"] == "object"
        assert tool.description


async def test_descriptions_come_from_wit_doc_comments(client):
    tools = await list_all(client)
    assert tools["echo"].description == "Echo a message back unchanged."
    assert tools["echo"].input_schema["properties"]["message"]["description"] == "the text to send back"
    assert tools["slugify"].input_schema["properties"]["separator"]["description"].startswith("the character between")
    # Record field docs and Python- and JavaScript-authored docs survive too.
    assert tools["summarize"].input_schema["properties"]["items"]["items"]["properties"]["count"][
        "description"] == "How many are in stock (at most 255)."
    assert tools["describe_sample"].description.startswith("Summarize a sample of numbers")
    # A record declared in a world (not an interface) keeps its field docs.
    assert tools["describe_sample"].output_schema["properties"]["count"]["description"] == "Number of values."
    assert tools["unified_diff"].description.startswith("Compare two texts line by line")
    assert tools["diff_stats"].output_schema["properties"]["removed"]["description"] == "Lines only in `before`."


async def test_integer_ranges_are_exact(client):
    tools = await list_all(client)
    props = tools["echo_integers"].input_schema["properties"]["values"]["properties"]
    assert (props["a"]["minimum"], props["a"]["maximum"]) == (-128, 127)
    assert (props["b"]["minimum"], props["b"]["maximum"]) == (0, 255)
    assert (props["h"]["minimum"], props["h"]["maximum"]) == (0, 2**64 - 1)
    assert (props["g"]["minimum"], props["g"]["maximum"]) == (-(2**63), 2**63 - 1)


CALLS = [
    ("echo", {"message": "héllo ✓"}, {"result": "héllo ✓"}),
    ("echo_integers",
     {"values": {"a": -128, "b": 255, "c": -32768, "d": 65535, "e": -2**31, "f": 2**32 - 1, "g": -2**63, "h": 2**64 - 1}},
     {"a": -128, "b": 255, "c": -32768, "d": 65535, "e": -2**31, "f": 2**32 - 1, "g": -2**63, "h": 2**64 - 1}),
    ("scale", {"p": {"x": 1.5, "y": -2}, "factor": 2}, {"x": 3.0, "y": -4.0}),
    ("area", {"s": {"rectangle": [2, 3.5]}}, {"result": 7.0}),
    ("area", {"s": "empty"}, {"result": 0.0}),
    ("describe", {"c": "green", "perms": ["read", "execute"], "initial": "Z", "loud": False},
     {"result": "Z is green and may read+execute"}),
    ("summarize", {"items": [{"name": "bolt", "count": 200, "tags": []},
                             {"name": "nut", "count": 55, "tags": ["m4"], "note": "zinc"},
                             {"name": "washer", "count": 0, "tags": [], "note": None}]},
     {"total_count": 255, "names": ["bolt", "nut", "washer"], "notes": ["zinc"]}),
    ("checksum", {"data": base64.b64encode(b"\x01\x02\xff").decode()}, {"result": [258, base64.b64encode(b"\xff\x02\x01").decode()]}),
    ("checksum", {"data": [1, 2, 255]}, {"result": [258, base64.b64encode(b"\xff\x02\x01").decode()]}),
    ("divide", {"numerator": 7, "denominator": 2}, {"result": 3.5}),
    ("parse_port", {"text": " 8080 "}, {"result": 8080}),
    ("maybe_double", {"x": 21}, {"result": 42}),
    ("maybe_double", {}, {"result": None}),
    ("nested", {"value": [None, ["a", [{"ok": 1}, {"err": "bad"}]]]}, {"result": [None, ["a", [{"ok": 1}, {"err": "bad"}]]]}),
    ("word_count", {"text": "one two\nthree ✓"}, {"words": 4, "lines": 2, "characters": 15, "bytes": 17}),
    ("slugify", {"text": "Héllo, World! 2026"}, {"result": "hello-world-2026"}),
    ("slugify", {"text": "a b", "separator": "_"}, {"result": "a_b"}),
    ("change_case", {"text": "parseHTTPResponse now", "style": "snake"}, {"result": "parse_httpresponse_now"}),
    ("change_case", {"text": "hello big-world", "style": "pascal"}, {"result": "HelloBigWorld"}),
    ("wrap", {"text": "aa bb cc dd", "width": 5}, {"result": "aa bb\ncc dd"}),
    ("truncate", {"text": "abcdefghij", "max_chars": 6}, {"result": "abcde…"}),
    ("extract_urls", {"text": "see https://a.example/x, and (http://b.example)."}, {"result": ["https://a.example/x", "http://b.example"]}),
    ("describe_sample", {"values": [1, 2, 3, 4]},
     {"count": 4, "mean": 2.5, "median": 2.5, "stdev": pytest.approx(1.2909944487358056), "min": 1.0, "max": 4.0}),
    ("percentile", {"values": [10, 20, 30, 40], "percent": 50}, {"result": 25.0}),
    ("unified_diff", {"before": "a\nb\n", "after": "a\nc\n"}, {"result": "--- before\n+++ after\n@@ -1,2 +1,2 @@\n a\n-b\n+c\n"}),
    ("diff_stats", {"before": "a\nb\n", "after": "a\nc\n"}, {"added": 1, "removed": 1, "unchanged": 1, "similarity": 0.5}),
    ("url_parts", {"url": "https://example.com/p?q=1#f"},
     {"href": "https://example.com/p?q=1#f", "origin": "https://example.com", "protocol": "https:", "username": "",
      "password": "", "hostname": "example.com", "port": None, "pathname": "/p", "search": "?q=1",
      "params": [{"name": "q", "value": "1"}], "hash": "#f"}),
]


async def test_calls_return_structured_content_matching_the_output_schema(client):
    tools = await list_all(client)
    for name, args, expected in CALLS:
        result = await client.call_tool(name, args)
        assert not result.is_error, (name, result.content)
        assert result.structured_content == expected, name
        jsonschema.validate(result.structured_content, tools[name].output_schema,
                            cls=jsonschema.Draft202012Validator)
        # A text rendering accompanies the structured value.
        assert result.content and result.content[0].type == "text"


async def test_tool_errors_are_is_error_results(client):
    cases = [
        ("divide", {"numerator": 1, "denominator": 0}, "cannot divide 1 by zero"),
        ("parse_port", {"text": "99999"}, '{"out-of-range":99999}'),
        ("parse_port", {"text": ""}, "empty"),
        ("wrap", {"text": "x", "width": 0}, "width must be at least 1"),
        ("describe_sample", {"values": []}, "the sample is empty"),
        ("percentile", {"values": [1], "percent": 101}, "percent must be between 0 and 100"),
        ("url_parts", {"url": "no scheme"}, 'invalid URL: "no scheme"'),
    ]
    for name, args, message in cases:
        result = await client.call_tool(name, args)
        assert result.is_error, name
        assert result.structured_content is None, "no structuredContent on errors"
        assert message in result.content[0].text, (name, result.content[0].text)


async def test_bad_arguments_name_the_path_and_type(client):
    result = await client.call_tool("summarize", {"items": [{"name": "a", "count": 1, "tags": []},
                                                            {"name": "b", "count": 300, "tags": []}]})
    assert result.is_error
    assert "arguments.items[1].count: expected u8 (0..=255), got 300" in result.content[0].text

    result = await client.call_tool("echo", {})
    assert result.is_error and "arguments.message: missing required value" in result.content[0].text

    result = await client.call_tool("echo", {"message": "x", "extra": 1})
    assert result.is_error and "arguments.extra: unknown argument" in result.content[0].text

    result = await client.call_tool("describe", {"c": "purple", "perms": [], "initial": "ab", "loud": True})
    assert result.is_error and "arguments.c: expected enum (one of: red, green, blue)" in result.content[0].text


async def test_unknown_tool_is_a_protocol_error(client):
    with pytest.raises(MCPError) as err:
        await client.call_tool("no_such_tool", {})
    assert err.value.code == -32602
    assert "Unknown tool: no_such_tool" in err.value.message


async def test_content_blocks(client):
    result = await client.call_tool("badge", {"label": "ok"})
    assert not result.is_error
    assert [c.type for c in result.content] == ["text", "image", "audio", "resource"]
    assert result.content[0].text == "badge: ok"
    assert base64.b64decode(result.content[1].data).startswith(b"\x89PNG")
    assert result.content[1].mime_type == "image/png"
    assert base64.b64decode(result.content[2].data).startswith(b"RIFF")
    assert str(result.content[3].resource.uri) == "badge://ok"
    assert result.content[3].resource.text == "[ok]"
    assert result.structured_content is None


async def test_no_return_value(client):
    result = await client.call_tool("noop", {})
    assert not result.is_error and result.structured_content is None
