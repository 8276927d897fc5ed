//! MCP tasks (2026-07-28 `io.modelcontextprotocol/tasks`) with the rmcp client
//! declaring the extension: a long-running tool call becomes a task in the
//! durable queue, `tasks/get` shows its progress and result, `tasks/cancel`
//! stops it. A client without the extension gets the same call answered
//! directly.

use std::time::{Duration, Instant};

use mcpplus_tests::{HttpServer, Scratch};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CancelTaskParams, ClientCapabilities, ClientConfig,
    GetTaskParams, GetTaskResult, Implementation, ProtocolVersion, TaskPayload, TaskStatus,
};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientLifecycleMode, ClientServiceExt};
use serde_json::{Value, json};

fn modern() -> ClientLifecycleMode {
    ClientLifecycleMode::Discover {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
    }
}

async fn client_with_tasks(url: &str) -> RunningService<RoleClient, ClientConfig> {
    let info = ClientConfig::new(
        ClientCapabilities::builder().enable_tasks().build(),
        Implementation::new("tasks-test", "0"),
    );
    info.serve_with_lifecycle(StreamableHttpClientTransport::from_uri(url), modern())
        .await
        .expect("connect")
}

fn call(tool: &str, args: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(tool.to_string())
        .with_arguments(args.as_object().cloned().expect("object"))
}

fn server(scratch: &Scratch) -> HttpServer {
    let config = scratch.join("mcpplus.toml");
    std::fs::write(
        &config,
        "[queue]\nworkers = 2\nlease_ms = 3000\nlong_running = [\"count_to\", \"divide\"]\n",
    )
    .unwrap();
    let data = scratch.join("data");
    HttpServer::start(&[
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--no-admin",
    ])
}

async fn poll_until(
    client: &RunningService<RoleClient, ClientConfig>,
    id: &str,
    mut done: impl FnMut(&GetTaskResult) -> bool,
) -> GetTaskResult {
    let started = Instant::now();
    loop {
        let got = client
            .get_task(GetTaskParams::new(id))
            .await
            .expect("tasks/get");
        if done(&got) {
            return got;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "task {id} stuck at {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_calls_become_tasks_for_clients_that_declare_the_extension() {
    let scratch = Scratch::new("mcp-tasks");
    let server = server(&scratch);
    let client = client_with_tasks(&server.url).await;

    let info = client.peer_info().expect("server info");
    assert!(
        info.capabilities.supports_tasks(),
        "the server advertises the extension"
    );

    // A long-running tool: a task handle, then progress, then the result.
    let response = client
        .call_tool_once(call("count_to", json!({"to": 20, "pause_ms": 40})))
        .await
        .expect("tools/call");
    let CallToolResponse::Task(created) = response else {
        panic!("expected a task handle, got {response:?}");
    };
    let id = created.task.task_id.clone();
    assert_eq!(created.task.status, TaskStatus::Working);
    assert!(created.task.poll_interval_ms.is_some());
    // Kept for [queue] retention_ms after it ends (7 days by default).
    assert_eq!(created.task.ttl_ms, Some(7 * 24 * 3_600_000));
    // Generated ids are 128 random bits.
    assert!(id.starts_with("task-") && id.len() == 37, "{id}");
    let progressing = poll_until(&client, &id, |t| {
        t.task
            .task
            .status_message
            .as_deref()
            .is_some_and(|m| m.contains(" of 20"))
    })
    .await;
    assert_eq!(progressing.task.status(), TaskStatus::Working);
    let done = poll_until(&client, &id, |t| t.task.status().is_terminal()).await;
    let TaskPayload::Completed { result } = &done.task.payload else {
        panic!("expected completed, got {done:?}");
    };
    assert_eq!(result["isError"], json!(false));
    assert_eq!(result["structuredContent"], json!({"result": 20}));

    // A tool error is a completed task whose result has isError (extension rule).
    let CallToolResponse::Task(failing) = client
        .call_tool_once(call("divide", json!({"numerator": 1, "denominator": 0})))
        .await
        .unwrap()
    else {
        panic!("divide is long-running here");
    };
    let done = poll_until(&client, &failing.task.task_id, |t| {
        t.task.status().is_terminal()
    })
    .await;
    let TaskPayload::Completed { result } = &done.task.payload else {
        panic!("expected completed with isError, got {done:?}");
    };
    assert_eq!(result["isError"], json!(true));

    // Tools not configured as long-running answer directly.
    let echo = client
        .call_tool_once(call("echo", json!({"message": "now"})))
        .await
        .unwrap();
    assert!(matches!(echo, CallToolResponse::Complete(_)), "{echo:?}");

    // tasks/cancel stops a running task; cancelling again is an empty ack.
    let CallToolResponse::Task(long) = client
        .call_tool_once(call("count_to", json!({"to": 1000, "pause_ms": 20})))
        .await
        .unwrap()
    else {
        panic!("expected a task");
    };
    let long_id = long.task.task_id.clone();
    // Running once its status names progress ("n of 1000").
    poll_until(&client, &long_id, |t| {
        t.task
            .task
            .status_message
            .as_deref()
            .is_some_and(|m| m.contains(" of "))
    })
    .await;
    client
        .cancel_task(CancelTaskParams::new(long_id.clone()))
        .await
        .expect("tasks/cancel");
    let cancelled = poll_until(&client, &long_id, |t| t.task.status().is_terminal()).await;
    assert_eq!(cancelled.task.status(), TaskStatus::Cancelled);
    client
        .cancel_task(CancelTaskParams::new(long_id))
        .await
        .expect("cancelling a finished task is acknowledged");

    let unknown = client.get_task(GetTaskParams::new("task-999999")).await;
    assert!(
        format!("{unknown:?}").contains("there is no task"),
        "{unknown:?}"
    );
    client.cancel().await.ok();

    // A client without the extension: the same call is answered directly.
    let plain = ()
        .serve_with_lifecycle(
            StreamableHttpClientTransport::from_uri(server.url.as_str()),
            modern(),
        )
        .await
        .expect("connect");
    let direct = plain
        .call_tool_once(call("count_to", json!({"to": 3, "pause_ms": 1})))
        .await
        .unwrap();
    let CallToolResponse::Complete(direct) = direct else {
        panic!("a client without the extension must not get a task: {direct:?}");
    };
    assert_eq!(direct.structured_content, Some(json!({"result": 3})));
    plain.cancel().await.ok();
}

/// A 2025-11-25 client over HTTP: it gets a session of its own.
async fn legacy_client_with_tasks(url: &str) -> RunningService<RoleClient, ClientConfig> {
    let info = ClientConfig::new(
        ClientCapabilities::builder().enable_tasks().build(),
        Implementation::new("tasks-test-legacy", "0"),
    );
    info.serve_with_lifecycle(
        StreamableHttpClientTransport::from_uri(url),
        ClientLifecycleMode::Initialize,
    )
    .await
    .expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_belongs_to_the_session_that_created_it() {
    let scratch = Scratch::new("mcp-tasks-owner");
    let server = server(&scratch);
    let (owner, other) = (
        legacy_client_with_tasks(&server.url).await,
        legacy_client_with_tasks(&server.url).await,
    );
    let response = owner
        .call_tool_once(call("count_to", json!({"to": 50, "pause_ms": 100})))
        .await
        .expect("tools/call");
    let CallToolResponse::Task(created) = response else {
        panic!("expected a task handle, got {response:?}");
    };
    let id = created.task.task_id.clone();
    assert!(owner.get_task(GetTaskParams::new(id.clone())).await.is_ok());
    // Another session is told there is no such task, and cannot cancel it.
    let seen = other.get_task(GetTaskParams::new(id.clone())).await;
    assert!(
        format!("{seen:?}").contains(&format!("there is no task `{id}`")),
        "{seen:?}"
    );
    assert!(
        other
            .cancel_task(CancelTaskParams::new(id.clone()))
            .await
            .is_err()
    );
    let still = owner
        .get_task(GetTaskParams::new(id.clone()))
        .await
        .expect("tasks/get");
    assert_ne!(still.task.status(), TaskStatus::Cancelled);
    owner
        .cancel_task(CancelTaskParams::new(id.clone()))
        .await
        .expect("the owner may cancel");
}

/// A call that crashes (a guest panic) has no result: its task ends `failed`
/// with a JSON-RPC error, not `completed` with an error result (that is for
/// errors the tool itself returns). And a tool that runs only as a task
/// (`[queue] task_required`) refuses clients without the extension with -32021.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_calls_fail_their_task_and_task_only_tools_need_the_extension() {
    let scratch = Scratch::new("mcp-tasks-crash");
    let tools = scratch.join("tools");
    std::fs::create_dir_all(&tools).unwrap();
    std::fs::copy(
        mcpplus_tests::artifacts::misbehaving(),
        tools.join("misbehaving.wasm"),
    )
    .unwrap();
    let config = scratch.join("mcpplus.toml");
    std::fs::write(
        &config,
        "[queue]\nworkers = 1\nlong_running = [\"panic\"]\ntask_required = [\"trap\"]\n",
    )
    .unwrap();
    let data = scratch.join("data");
    let server = HttpServer::start(&[
        "--tools",
        tools.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--no-admin",
    ]);
    let client = client_with_tasks(&server.url).await;
    let CallToolResponse::Task(created) = client
        .call_tool_once(call("panic", json!({"message": "boom"})))
        .await
        .expect("tools/call")
    else {
        panic!("panic is long-running here");
    };
    let done = poll_until(&client, &created.task.task_id, |t| {
        t.task.status().is_terminal()
    })
    .await;
    let TaskPayload::Failed { error } = &done.task.payload else {
        panic!("a crashed call must fail its task, got {done:?}");
    };
    assert!(
        error["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{error:?}"
    );

    // With the extension, a task-only tool becomes a task.
    let with_tasks = client.call_tool_once(call("trap", json!({}))).await;
    assert!(
        matches!(with_tasks, Ok(CallToolResponse::Task(_))),
        "{with_tasks:?}"
    );
    client.cancel().await.ok();

    // Without it: -32021, naming the extension.
    let plain = ()
        .serve_with_lifecycle(
            StreamableHttpClientTransport::from_uri(server.url.as_str()),
            modern(),
        )
        .await
        .expect("connect");
    let refused = plain
        .call_tool_once(call("trap", json!({})))
        .await
        .expect_err("a task-only tool refuses a client without tasks");
    let text = format!("{refused:?}");
    assert!(
        text.contains("-32021") && text.contains("io.modelcontextprotocol/tasks"),
        "{text}"
    );
    plain.cancel().await.ok();
}
