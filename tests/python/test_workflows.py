"""Workflows through the official `mcp` client: the six MCP++ workflow tools
and `workflow_templates` (bundled component `workflow_tools`) against a real
server whose steps run the bundled components through the queue, with the
queue (and the workflow tables) on each backend: SQLite, and PostgreSQL (the
test server scripts/test.sh starts)."""

import shutil
import subprocess

import anyio
import pytest

from conftest import DIST, HttpServer, backend_lines, connect

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]


async def ok(client, tool, args=None):
    result = await client.call_tool(tool, args or {})
    assert not result.is_error, f"{tool} {args}: {result.content}"
    # The workflow tools return `json`, which the host sends as {"result": value};
    # task_list returns a record, sent as it is.
    content = result.structured_content
    answer = content if "success" in content else content["result"]
    assert answer["success"] is True, answer
    return answer


async def refused(client, tool, args, *fragments):
    result = await client.call_tool(tool, args)
    assert result.is_error, f"{tool} {args} should fail: {result.structured_content}"
    text = result.content[0].text
    for fragment in fragments:
        assert fragment in text, f"{tool}: {fragment!r} not in {text!r}"
    return text


async def wait_for(client, workflow_id, *states, within=60.0):
    with anyio.fail_after(within):
        while True:
            status = await ok(client, "workflow_status", {"workflow_id": workflow_id, "include_steps": True})
            if status["status"] in states:
                return status
            await anyio.sleep(0.05)


def steps_by_id(status):
    return {s["step_id"]: s for s in status["steps"]}


@pytest.fixture(params=["sqlite", "postgres"])
def server(tmp_path, request):
    tools = tmp_path / "tools"
    tools.mkdir()
    for artifact in list(DIST.glob("*.wasm")) + list(DIST.glob("*.policy.toml")):
        shutil.copy(artifact, tools / artifact.name)
    # task_list needs queue submit rights to watch the step tasks.
    (tools / "task_queue.policy.toml").write_text("[queue]\nsubmit = true\n")
    config = tmp_path / "mcpplus.toml"
    config.write_text("[queue]\nworkers = 12\nlease_ms = 3000\npoll_ms = 100\n"
                      + backend_lines(request.param, tmp_path))
    server = HttpServer("--tools", str(tools), "--data-dir", str(tmp_path / "data"), "--config", str(config),
                        "--no-admin")
    yield server
    server.stop()


async def test_a_fan_out_keeps_item_order_and_its_max_parallel(server):
    async with connect("http", "auto", server) as client:
        spec = {
            "workflow_id": "fan", "name": "fan-out and fan-in", "max_parallel": 20,
            "steps": [
                {"step_id": "doubled", "action": "maybe_double", "for_each": list(range(50)),
                 "inputs": {"x": "${item}"}},
                {"step_id": "slow", "action": "count_to", "for_each": list(range(24)), "max_parallel": 8,
                 "inputs": {"to": 2, "pause_ms": 40}},
                {"step_id": "reduce", "action": "echo", "depends_on": ["slow"],
                 "inputs": {"message": "doubled: ${steps.doubled.result}"}},
            ],
        }
        answer = await ok(client, "workflow_submit", spec)
        assert answer["status"] == "running" and answer["created"] is True
        # Watch the queue while it runs: never more than 8 `slow` items at once.
        peak = 0
        with anyio.fail_after(60):
            while True:
                page = await ok(client, "task_list", {"status_filter": "running", "tag_filter": ["step:slow"],
                                                      "limit": 100})
                peak = max(peak, len(page["tasks"]))
                status = await ok(client, "workflow_status", {"workflow_id": "fan"})
                if status["status"] != "running":
                    break
                await anyio.sleep(0.01)
        assert status["status"] == "completed", status
        assert 2 <= peak <= 8, f"{peak} slow items ran at once"
        result = await ok(client, "workflow_result", {"workflow_id": "fan"})
        outputs = {o["step_id"]: o for o in result["outputs"]}
        assert outputs["doubled"]["result"] == [2 * i for i in range(50)]
        assert outputs["slow"]["result"] == [2] * 24
        assert result["result"] == {"reduce": "doubled: " + str([2 * i for i in range(50)]).replace(" ", "")}
        # The same id and spec again: the existing workflow, nothing new.
        again = await ok(client, "workflow_submit", spec)
        assert again["created"] is False


async def test_failures_skip_exactly_the_dependents_and_graphs_explain_the_run(server):
    async with connect("http", "legacy", server) as client:
        await ok(client, "workflow_submit", {
            "workflow_id": "mixed", "name": "a \"quoted\" name", "on_failure": "continue",
            "steps": [
                {"step_id": "a", "action": "echo", "inputs": {"message": "start"}},
                {"step_id": "b", "action": "divide", "depends_on": ["a"], "retry": {"max_attempts": 1},
                 "inputs": {"numerator": 1, "denominator": 0}},
                {"step_id": "c", "action": "slugify", "depends_on": ["a"], "inputs": {"text": "Hello World"}},
                {"step_id": "end", "action": "echo", "depends_on": ["b", "c"], "inputs": {"message": "x"}},
                {"step_id": "graph", "action": "echo", "depends_on": ["end"], "trigger": "all_done",
                 "inputs": {"message": "cleanup after ${steps.c.result}"}},
                {"step_id": "big", "action": "echo", "depends_on": ["a"], "inputs": {"message": "no"},
                 "when": {"eq": ["${steps.a.result}", "something else"]}},
            ],
        })
        status = await wait_for(client, "mixed", "completed", "failed")
        steps = steps_by_id(status)
        assert status["status"] == "failed"
        assert {k: v["status"] for k, v in steps.items()} == {
            "a": "completed", "b": "failed", "c": "completed", "end": "skipped", "graph": "completed",
            "big": "skipped"}
        assert steps["end"]["reason"] == "depends on failed step(s): b"
        assert steps["big"]["reason"] == "condition false"
        result = await ok(client, "workflow_result", {"workflow_id": "mixed", "include_logs": True})
        graph_output = {o["step_id"]: o for o in result["outputs"]}["graph"]["result"]
        assert graph_output == "cleanup after hello-world"
        assert any(e["kind"] == "step.skipped" for e in result["logs"])

        as_json = await ok(client, "workflow_dependencies", {"workflow_id": "mixed", "fmt": "json"})
        assert as_json["critical_path_basis"] == "run"
        wall = status["end_time"] - status["start_time"]
        assert as_json["critical_path_ms"] == wall, (as_json["critical_path"], wall)
        edges = {(e["from"], e["to"], e["implicit"]) for e in as_json["edges"]}
        assert ("c", "graph", True) in edges and ("a", "b", False) in edges
        dot = await ok(client, "workflow_dependencies", {"workflow_id": "mixed", "fmt": "dot"})
        svg = subprocess.run(["dot", "-Tsvg"], input=dot["dag"], capture_output=True, text=True, check=True)
        assert svg.stdout.count('class="node"') == 6
        mermaid = await ok(client, "workflow_dependencies", {"workflow_id": "mixed", "fmt": "mermaid"})
        assert mermaid["dag"].startswith("flowchart LR")
        await refused(client, "workflow_dependencies", {"workflow_id": "mixed", "fmt": "png"},
                      "json, dot, mermaid")


async def test_cancel_list_and_errors(server):
    async with connect("http", "auto", server) as client:
        await ok(client, "workflow_submit", {
            "workflow_id": "long", "name": "long", "tags": ["slow"],
            "steps": [
                {"step_id": "wait", "action": "count_to", "inputs": {"to": 600, "pause_ms": 50}},
                {"step_id": "after", "action": "echo", "depends_on": ["wait"], "inputs": {"message": "x"}},
            ],
        })
        with anyio.fail_after(30):
            while steps_by_id(await wait_for(client, "long", "running"))["wait"]["status"] != "running":
                await anyio.sleep(0.05)
        graceful = await ok(client, "workflow_cancel", {"workflow_id": "long", "reason": "not needed"})
        assert graceful["status"] == "cancelling" and graceful["running_steps"] == 1
        forced = await ok(client, "workflow_cancel", {"workflow_id": "long", "force": True})
        assert forced["cancelled_steps"] >= 1
        status = await wait_for(client, "long", "cancelled", within=15)
        assert {k: v["status"] for k, v in steps_by_id(status).items()} == {"wait": "cancelled", "after": "cancelled"}

        listed = await ok(client, "workflow_list", {"tag_filter": ["slow"]})
        assert [w["workflow_id"] for w in listed["workflows"]] == ["long"]
        assert listed["total_count"] == 1 and listed["has_more"] is False
        none = await ok(client, "workflow_list", {"status_filter": "running"})
        assert none["total_count"] == 0

        await refused(client, "workflow_status", {"workflow_id": "nope"}, "no workflow `nope`")
        await refused(client, "workflow_submit", {"workflow_id": "cyc", "name": "n", "steps": [
            {"step_id": "a", "action": "echo", "depends_on": ["c"], "inputs": {"message": "x"}},
            {"step_id": "b", "action": "echo", "depends_on": ["a"], "inputs": {"message": "x"}},
            {"step_id": "c", "action": "echo", "depends_on": ["b"], "inputs": {"message": "x"}},
        ]}, "cycle: ")
        await refused(client, "workflow_submit", {"workflow_id": "t", "name": "n", "steps": [
            {"step_id": "a", "action": "no_such_tool"}]}, "calls `no_such_tool`")
        await refused(client, "workflow_list", {"limit": 0}, "limit")
        listed = await ok(client, "workflow_list", {})
        assert listed["total_count"] == 1, "refused specs store nothing"


async def test_templates_are_listed_instantiated_and_validated(server):
    async with connect("http", "auto", server) as client:
        templates = await ok(client, "workflow_templates")
        ids = {t["template_id"] for t in templates["templates"]}
        assert {"text-report", "sample-stats", "page-words"} <= ids
        text = "Read https://example.org/a and http://example.net/b today"
        answer = await ok(client, "workflow_submit", {
            "workflow_id": "report", "name": "report", "template_id": "text-report",
            "parameters": {"title": "Two Links", "text": text, "excerpt_chars": 10},
        })
        assert answer["template"]["template_version"] == "1.0.0"
        await wait_for(client, "report", "completed")
        result = await ok(client, "workflow_result", {"workflow_id": "report", "include_outputs": False})
        assert result["result"] == {
            "slug": "two-links", "words": 5, "lines": 1,
            "links": ["https://example.org/a", "http://example.net/b"], "excerpt": result["result"]["excerpt"]}
        assert len(result["result"]["excerpt"]) <= 10
        await refused(client, "workflow_submit", {
            "workflow_id": "bad", "name": "bad", "template_id": "text-report",
            "parameters": {"title": "x", "text": "y", "excerpt_chars": "ten"}}, "excerpt_chars", "integer")
        await refused(client, "workflow_submit", {
            "workflow_id": "bad", "name": "bad", "template_id": "text-report", "parameters": {"title": "x"}},
            "text")
        stats = await ok(client, "workflow_submit", {
            "workflow_id": "stats", "name": "stats", "template_id": "sample-stats",
            "parameters": {"samples": [[1, 2, 3], [10, 20, 30, 40]], "percent": 50}})
        assert stats["created"] is True
        await wait_for(client, "stats", "completed", within=120)
        result = await ok(client, "workflow_result", {"workflow_id": "stats", "include_outputs": False})
        assert [d["count"] for d in result["result"]["descriptions"]] == [3, 4]
        assert result["result"]["percentiles"] == [2.0, 25.0]


async def test_cached_tools_are_not_run_twice_and_an_outside_world_grant_needs_a_ttl(tmp_path):
    tools = tmp_path / "tools"
    tools.mkdir()
    for name in ("text_utils.wasm", "fetch.wasm", "workflow_tools.wasm", "workflow_tools.policy.toml"):
        shutil.copy(DIST / name, tools / name)
    (tools / "text_utils.policy.toml").write_text('[cache]\ntools = ["word_count"]\n')
    # fetch reaches the network: caching it for ever is refused at load.
    (tools / "fetch.policy.toml").write_text(
        '[network]\nallow = ["http://127.0.0.1"]\n\n[cache]\ntools = ["fetch"]\n')
    server = HttpServer("--tools", str(tools), "--data-dir", str(tmp_path / "data"), "--no-admin")
    try:
        async with connect("http", "auto", server) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert "word_count" in names and "fetch" not in names
            assert await server.wait_for_log("tool.load_failed", "ttl_s", "network")
            for wid, text in (("one", "a b c"), ("two", "a b c"), ("three", "a b c d")):
                await ok(client, "workflow_submit", {"workflow_id": wid, "name": wid, "steps": [
                    {"step_id": "count", "action": "word_count", "inputs": {"text": text}},
                    {"step_id": "slug", "action": "slugify", "inputs": {"text": "${steps.count.result/words} words"}}]})
                await wait_for(client, wid, "completed")
            reasons = {}
            for wid in ("one", "two", "three"):
                status = await ok(client, "workflow_status", {"workflow_id": wid})
                reasons[wid] = steps_by_id(status)["count"]["reason"]
            assert reasons["one"] is None and reasons["three"] is None, reasons
            assert reasons["two"] == "cached: the result of task wf:one:count, not run again", reasons
            result = await ok(client, "workflow_result", {"workflow_id": "two"})
            assert result["result"] == {"slug": "3-words"}
    finally:
        server.stop()


async def test_step_and_workflow_timeouts(server):
    async with connect("http", "auto", server) as client:
        started = anyio.current_time()
        await ok(client, "workflow_submit", {"workflow_id": "step-timeout", "name": "n", "steps": [
            {"step_id": "slow", "action": "count_to", "timeout_ms": 200,
             "retry": {"max_attempts": 2, "backoff_ms": 10}, "inputs": {"to": 100, "pause_ms": 50}}]})
        status = await wait_for(client, "step-timeout", "failed", "completed", within=10)
        elapsed = anyio.current_time() - started
        slow = steps_by_id(status)["slow"]
        assert status["status"] == "failed" and slow["attempts"] == 2, status
        assert elapsed < 2.0, f"two 200 ms attempts took {elapsed:.2f} s"

        started = anyio.current_time()
        await ok(client, "workflow_submit", {"workflow_id": "deadline", "name": "n", "timeout_ms": 1000, "steps": [
            {"step_id": "long", "action": "count_to", "inputs": {"to": 200, "pause_ms": 50}}]})
        status = await wait_for(client, "deadline", "failed", "completed", within=10)
        elapsed = anyio.current_time() - started
        assert status["status"] == "failed" and status["error"] == "timed out after 1000 ms", status
        # The deadline, one sweep (0.5 s) and the task's next heartbeat (lease_ms / 3 = 1 s).
        assert elapsed < 1.0 + 0.5 + 1.0 + 0.5, f"took {elapsed:.2f} s"
        page = await ok(client, "task_list", {"tag_filter": ["workflow:deadline"], "limit": 10})
        assert [t["status"] for t in page["tasks"]] == ["cancelled"], page
