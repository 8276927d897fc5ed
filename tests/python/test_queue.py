"""The 14 task-queue tools (bundled component `task_queue`) through the official
`mcp` client, against a server with its own data directory: each tool's
success and its errors, the queue order, workers running tasks, and grants."""

import shutil
import sqlite3
import urllib.request

import anyio
import pytest

from conftest import DIST, HttpServer, backend_lines, connect

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(300)]


async def ok(client, tool, args=None):
    result = await client.call_tool(tool, args or {})
    assert not result.is_error, f"{tool} {args}: {result.content}"
    assert result.structured_content["success"] is True
    return result.structured_content


async def refused(client, tool, args, *fragments):
    result = await client.call_tool(tool, args)
    assert result.is_error, f"{tool} {args} should fail: {result.structured_content}"
    text = result.content[0].text
    for fragment in fragments:
        assert fragment in text, f"{tool}: {fragment!r} not in {text!r}"
    return text


def http_get(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read().decode()


def metric(text, sample):
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{sample} not in /metrics")


async def wait_for_state(client, task_id, state, within=30.0):
    with anyio.fail_after(within):
        while True:
            status = await ok(client, "task_status", {"task_id": task_id})
            if status["status"] == state:
                return status
            await anyio.sleep(0.05)


def tools_with_queue_admin(tmp_path):
    """The bundled tools, with the task tools granted queue admin (shipped without)."""
    tools = tmp_path / "tools"
    tools.mkdir()
    for wasm in DIST.glob("*.wasm"):
        shutil.copy(wasm, tools / wasm.name)
    (tools / "task_queue.policy.toml").write_text("[queue]\nsubmit = true\nadmin = true\n\n[limits]\ntimeout_ms = 330000\n")
    for policy in DIST.glob("*.policy.toml"):
        if policy.name != "task_queue.policy.toml":
            shutil.copy(policy, tools / policy.name)
    return tools


@pytest.fixture(params=["sqlite", "postgres"])
def queue_server(tmp_path, request):
    """A server with its queue on each backend: the task tools must behave the same."""
    config = tmp_path / "mcpplus.toml"
    config.write_text("[queue]\nworkers = 1\nlease_ms = 3000\npoll_ms = 100\n" + backend_lines(request.param, tmp_path))
    server = HttpServer("--tools", str(tools_with_queue_admin(tmp_path)), "--data-dir", str(tmp_path / "data"),
                        "--config", str(config), "--no-admin")
    yield server
    server.stop()


@pytest.mark.parametrize("mode", ["legacy", "auto"])
async def test_every_queue_tool_and_its_errors(queue_server, mode):
    async with connect("http", mode, queue_server) as client:
        stats = await ok(client, "queue_stats")
        assert stats["status"] == "active" and stats["queued_count"] == 0

        paused = await ok(client, "queue_pause", {"reason": "maintenance"})
        assert paused["status"] == "paused" and paused["reason"] == "maintenance"

        # task_submit: the queue order follows priority, then submission.
        a = await ok(client, "task_submit", {"task_id": "a", "task_type": "echo", "payload": {"message": "A"}})
        assert a["status"] == "queued" and a["queue_position"] == 0
        assert a.get("warning") is None  # this node hosts `echo`
        b = await ok(client, "task_submit", {"task_id": "b", "task_type": "echo",
                                             "payload": {"message": "B"}, "priority": 5})
        assert b["queue_position"] == 0
        c = await ok(client, "task_submit", {"task_id": "c", "task_type": "count_to",
                                             "payload": {"to": 3, "pause_ms": 10}, "tags": ["slow"],
                                             "timeout": 20, "metadata": {"owner": "test"}})
        assert c["queue_position"] == 2
        await refused(client, "task_submit", {"task_id": "", "task_type": "echo", "payload": {}}, "task_id")
        await refused(client, "task_submit", {"task_id": "x", "task_type": "echo", "payload": {}, "priority": 0},
                      "priority must be a number greater than 0")
        await refused(client, "task_submit", {"task_id": "x", "task_type": "echo", "payload": [1, 2]},
                      "payload must be an object")
        await refused(client, "task_submit", {"task_id": "x", "task_type": "echo", "payload": {}, "tags": [""]},
                      "tags must be non-empty")
        await refused(client, "task_submit", {"task_id": "x", "task_type": "echo", "payload": {}, "timeout": 0},
                      "timeout must be")
        await refused(client, "task_submit", {"task_id": "a", "task_type": "echo", "payload": {}},
                      "already exists")

        # task_list: queue order, pagination, filters, limits.
        listing = await ok(client, "task_list", {"status_filter": "queued"})
        assert [t["task_id"] for t in listing["tasks"]] == ["b", "a", "c"]
        assert [t["queue_position"] for t in listing["tasks"]] == [0, 1, 2]
        assert (listing["total_count"], listing["returned_count"], listing["has_more"]) == (3, 3, False)
        page = await ok(client, "task_list", {"status_filter": "queued", "limit": 2})
        assert page["has_more"] and page["next_offset"] == 2 and page["returned_count"] == 2
        rest = await ok(client, "task_list", {"status_filter": "queued", "limit": 2, "offset": 2})
        assert [t["task_id"] for t in rest["tasks"]] == ["c"] and not rest["has_more"]
        assert rest["next_offset"] is None
        slow = await ok(client, "task_list", {"tag_filter": ["slow"]})
        assert [t["task_id"] for t in slow["tasks"]] == ["c"]
        high = await ok(client, "task_list", {"priority_min": 2})
        assert [t["task_id"] for t in high["tasks"]] == ["b"]
        await refused(client, "task_list", {"limit": 0}, "limit must be between 1 and 1000")
        await refused(client, "task_list", {"limit": 1001}, "limit must be between 1 and 1000")

        # task_priority reorders at once.
        moved = await ok(client, "task_priority", {"task_id": "a", "new_priority": 10})
        assert (moved["old_priority"], moved["new_priority"], moved["new_queue_position"]) == (1, 10, 0)
        await refused(client, "task_priority", {"task_id": "a", "new_priority": -1}, "greater than 0")
        await refused(client, "task_priority", {"task_id": "a", "new_priority": 2, "requeue": False}, "requeue")
        await refused(client, "task_priority", {"task_id": "nope", "new_priority": 2}, "there is no task `nope`")

        # task_status with logs and metrics.
        status = await ok(client, "task_status", {"task_id": "a", "include_logs": True, "include_metrics": True})
        assert status["status"] == "queued" and status["queue_position"] == 0
        assert status["metrics"]["attempt"] == 0 and status["metrics"]["priority"] == 10
        assert any("submitted" in line for line in status["logs"])
        await refused(client, "task_status", {"task_id": "nope"}, "there is no task")

        # task_cancel, then task_retry of the cancelled task.
        cancelled = await ok(client, "task_cancel", {"task_id": "c", "reason": "not now"})
        assert cancelled["status"] == "cancelled" and cancelled["cleanup_required"] is False
        await refused(client, "task_cancel", {"task_id": "c"}, "only queued or running tasks")
        retried = await ok(client, "task_retry", {"task_id": "c"})
        assert retried["retry_count"] == 1 and retried["retry_task_id"] == "c"
        assert retried["queue_position"] == 2
        await refused(client, "task_retry", {"task_id": "a"}, "only failed or cancelled tasks")
        await refused(client, "task_retry", {"task_id": "a", "retry_config": {"extra_attempts": 0}},
                      "extra_attempts must be between 1")

        # queue_clear needs confirmation and never touches running tasks.
        await refused(client, "queue_clear", {"confirm": False}, "confirm=true")
        await refused(client, "queue_clear", {"status_filter": "running", "confirm": True}, "cancel them")

        # Workers.
        reg = await ok(client, "worker_register", {"worker_id": "echoer", "capabilities": ["echo"],
                                                   "max_concurrent_tasks": 2, "metadata": {"rack": 1}})
        assert reg["status"] == "active" and reg["assigned_peers"] == []
        await refused(client, "worker_register", {"worker_id": "echoer", "capabilities": []}, "already registered")
        await refused(client, "worker_register", {"worker_id": "w", "capabilities": [], "max_concurrent_tasks": 0},
                      "between 1 and 64")
        await refused(client, "worker_register", {"worker_id": "", "capabilities": []}, "worker_id")
        ws = await ok(client, "worker_status", {"worker_id": "echoer", "include_metrics": True, "include_tasks": True})
        assert ws["metrics"]["slots"] == 2 and ws["metrics"]["capabilities"] == ["echo"]
        assert ws["metrics"]["metadata"] == {"rack": 1} and ws["tasks"] == []
        await refused(client, "worker_status", {"worker_id": "ghost"}, "there is no worker `ghost`", "local")

        # Resume: everything runs, on the workers allowed to run it.
        resumed = await ok(client, "queue_resume")
        assert resumed["status"] == "active" and resumed["reordered"] is True
        await refused(client, "queue_resume", {"reorder_by_priority": False}, "reorder_by_priority")
        for task_id in ["a", "b", "c"]:
            await wait_for_state(client, task_id, "completed")
        result = await ok(client, "task_result", {"task_id": "a"})
        assert result["result"] == {"result": "A"} and result["output"]["isError"] is False
        assert result["execution_time_ms"] >= 0
        counted = await ok(client, "task_result", {"task_id": "c", "include_output": False, "include_logs": True})
        assert counted["output"] is None and any("completed" in line for line in counted["logs"])
        status = await ok(client, "task_status", {"task_id": "c", "include_metrics": True})
        assert status["progress"]["progress"] == 3 and status["progress"]["total"] == 3
        assert status["worker_id"].startswith("local/"), "only `local` may run count_to"
        by_local = await ok(client, "task_list", {"worker_filter": "local"})
        assert "c" in [t["task_id"] for t in by_local["tasks"]]

        # A failing task: the tool's error, no retries left.
        await ok(client, "task_submit", {"task_id": "bad", "task_type": "divide",
                                         "payload": {"numerator": 1, "denominator": 0}, "retry_policy": {"max_retries": 0}})
        failed = await wait_for_state(client, "bad", "failed")
        assert "zero" in failed["error"]
        outcome = await ok(client, "task_result", {"task_id": "bad"})
        assert outcome["status"] == "failed" and outcome["output"]["isError"] is True

        stats = await ok(client, "queue_stats", {"include_worker_stats": True, "include_historical": True})
        assert stats["completed_count"] == 3 and stats["failed_count"] == 1
        assert stats["average_execution_time_ms"] is not None and stats["throughput"] > 0
        assert stats["historical"]["finished_last_minute"] == 4
        workers = {w["worker_id"]: w for w in stats["worker_stats"]}
        assert set(workers) == {"local", "echoer"}
        assert workers["local"]["completed_tasks"] + workers["echoer"]["completed_tasks"] == 3

        metrics = http_get(queue_server.url.replace("/mcp", "/metrics"))
        submitted = metric(metrics, 'mcpplus_queue_tasks_submitted_total{origin="tool"}')
        assert submitted == 4, "a, b, c and bad"
        assert metric(metrics, 'mcpplus_queue_attempts_total{outcome="completed"}') == 3
        assert metric(metrics, 'mcpplus_queue_attempts_total{outcome="failed"}') == 1

        gone = await ok(client, "worker_unregister", {"worker_id": "echoer"})
        assert gone["status"] == "unregistered" and gone["abandoned_tasks"] == 0
        assert gone["completed_tasks"] == workers["echoer"]["completed_tasks"]
        await refused(client, "worker_unregister", {"worker_id": "echoer"}, "there is no worker")

        cleared = await ok(client, "queue_clear", {"status_filter": "completed", "confirm": True})
        assert cleared["cleared_count"] == 3 and cleared["remaining_count"] == 1
        await refused(client, "task_status", {"task_id": "a"}, "there is no task")


async def test_a_running_task_needs_force_and_unregistering_requeues_it(queue_server):
    async with connect("http", "auto", queue_server) as client:
        await ok(client, "worker_unregister", {"worker_id": "local"})
        await ok(client, "worker_register", {"worker_id": "slow", "capabilities": ["count_to"]})
        await ok(client, "task_submit", {"task_id": "long", "task_type": "count_to",
                                         "payload": {"to": 1000, "pause_ms": 20}})
        running = await wait_for_state(client, "long", "running")
        assert running["worker_id"].startswith("slow/")
        await refused(client, "task_cancel", {"task_id": "long"}, "is running", "force=true")
        gone = await ok(client, "worker_unregister", {"worker_id": "slow", "graceful": False})
        assert gone["abandoned_tasks"] == 1
        status = await ok(client, "task_status", {"task_id": "long", "include_metrics": True})
        assert status["status"] == "queued" and "unregistered" in status["error"]
        await ok(client, "worker_register", {"worker_id": "again", "capabilities": ["count_to"]})
        await wait_for_state(client, "long", "running")
        stopped = await ok(client, "task_cancel", {"task_id": "long", "force": True, "reason": "enough"})
        assert stopped["cleanup_required"] is True
        # The next heartbeat (lease 3 s / 3) stops the attempt.
        with anyio.fail_after(10):
            while (await ok(client, "worker_status", {"worker_id": "again"}))["running_tasks"] != 0:
                await anyio.sleep(0.05)
        assert (await ok(client, "task_status", {"task_id": "long"}))["status"] == "cancelled"


async def test_grants_decide_what_the_tools_may_do(tmp_path):
    tools = tmp_path / "tools"
    tools.mkdir()
    shutil.copy(DIST / "task_queue.wasm", tools / "task_queue.wasm")
    # As shipped: submit, not admin.
    shutil.copy(DIST / "task_queue.policy.toml", tools / "task_queue.policy.toml")
    server = HttpServer("--tools", str(tools), "--data-dir", str(tmp_path / "data"), "--no-admin")
    try:
        async with connect("http", "auto", server) as client:
            await ok(client, "task_submit", {"task_id": "t", "task_type": "nothing", "payload": {}})
            await ok(client, "queue_stats")
            await refused(client, "queue_pause", {}, "may not call mcpplus:host/queue.pause",
                          "[queue] admin = true")
            await refused(client, "worker_register", {"worker_id": "w", "capabilities": []}, "[queue] admin = true")
        assert await server.wait_for_log("capability.denied", "mcpplus:host/queue.pause")
    finally:
        server.stop()
    (tools / "task_queue.policy.toml").unlink()
    server = HttpServer("--tools", str(tools), "--data-dir", str(tmp_path / "data2"), "--no-admin")
    try:
        async with connect("http", "auto", server) as client:
            await refused(client, "queue_stats", {}, "[queue] submit = true")
    finally:
        server.stop()


async def test_sigterm_drains_and_hands_running_tasks_back(tmp_path):
    tools = tools_with_queue_admin(tmp_path)
    socket = tmp_path / "admin.sock"
    config = tmp_path / "mcpplus.toml"
    config.write_text("[queue]\nworkers = 1\nlease_ms = 3000\npoll_ms = 100\n")
    args = ("--tools", str(tools), "--data-dir", str(tmp_path / "data"), "--config", str(config),
            "--admin-socket", str(socket), "--log-format", "json")
    server = HttpServer(*args)
    try:
        async with connect("http", "legacy", server) as client:
            await ok(client, "task_submit", {"task_id": "long", "task_type": "count_to",
                                             "payload": {"to": 40, "pause_ms": 100}})
            await wait_for_state(client, "long", "running")
        assert socket.exists()
        server.proc.terminate()  # SIGTERM
        assert server.proc.wait(15) == 0
        assert not socket.exists(), "the admin socket is removed"
        assert await server.wait_for_log('"server.stopping"', "SIGTERM")
    finally:
        server.stop()
    # Handed back: queued again, saying why (read beside the stopped server).
    with sqlite3.connect(tmp_path / "data" / "queue.sqlite3") as db:
        state, error = db.execute("SELECT state, error FROM tasks WHERE id = 'long'").fetchone()
    assert state == "queued" and "shut down" in error, (state, error)
    again = HttpServer(*args)
    try:
        async with connect("http", "legacy", again) as client:
            await wait_for_state(client, "long", "completed", within=60)
    finally:
        again.stop()
