//! MCP tasks (2026-07-28 `io.modelcontextprotocol/tasks`) with the rmcp client
//! declaring the extension: a long-running tool call becomes a task in the
//! durable queue, `tasks/get` shows its progress and result, `tasks/cancel`
//! stops it. A client without the extension gets the same call answered
//! directly.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mcpplus_tests::{HttpServer, Scratch};
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CancelTaskParams, ClientCapabilities, ClientConfig,
    GetTaskParams, GetTaskResult, Implementation, InputResponses, ProtocolVersion, TaskPayload,
    TaskStatus, UpdateTaskParams,
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

/// A 2026-07-28 client that declares no capabilities (no tasks extension).
async fn client_without_tasks(url: &str) -> RunningService<RoleClient, ()> {
    ().serve_with_lifecycle(StreamableHttpClientTransport::from_uri(url), modern())
        .await
        .expect("connect")
}

fn call(tool: &str, args: Value) -> CallToolRequestParams {
    CallToolRequestParams::new(tool.to_string())
        .with_arguments(args.as_object().cloned().expect("object"))
}

fn server(scratch: &Scratch) -> HttpServer {
    start_server(
        scratch,
        "[queue]\nworkers = 2\nlease_ms = 3000\nlong_running = [\"count_to\", \"divide\"]\n",
        &[],
    )
}

/// A server with `config` as its operator config, serving the bundled tools,
/// or only `components` (each copied with its policy file, if it has one).
///
/// With `MCPPLUS_TEST_QUEUE_BACKEND=postgres` (scripts/test.sh runs this file
/// a second time so) the queue is on the test PostgreSQL server instead, in a
/// schema of this server: MCP tasks must behave the same on both backends.
fn start_server(scratch: &Scratch, config: &str, components: &[PathBuf]) -> HttpServer {
    let config_path = scratch.join("mcpplus.toml");
    std::fs::write(&config_path, with_backend(config)).unwrap();
    let data = scratch.join("data");
    let tools = scratch.join("tools");
    let mut args = vec![
        "--config".to_string(),
        config_path.display().to_string(),
        "--data-dir".into(),
        data.display().to_string(),
        "--no-admin".into(),
    ];
    if !components.is_empty() {
        std::fs::create_dir_all(&tools).unwrap();
        for component in components {
            let name = component.file_name().unwrap();
            std::fs::copy(component, tools.join(name)).unwrap();
            let policy = component.with_extension("policy.toml");
            if policy.exists() {
                std::fs::copy(&policy, tools.join(policy.file_name().unwrap())).unwrap();
            }
        }
        args.extend(["--tools".into(), tools.display().to_string()]);
    }
    HttpServer::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// `config` with the queue on the backend this run tests.
fn with_backend(config: &str) -> String {
    match std::env::var("MCPPLUS_TEST_QUEUE_BACKEND").as_deref() {
        Ok("postgres") => {
            let url = std::env::var("MCPPLUS_TEST_PG_URL")
                .expect("MCPPLUS_TEST_QUEUE_BACKEND=postgres needs MCPPLUS_TEST_PG_URL (scripts/test.sh sets both)");
            static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let schema = format!(
                "mcp_tasks_{}_{}",
                std::process::id(),
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            assert!(
                config.starts_with("[queue]\n"),
                "the config starts with [queue]"
            );
            config.replacen(
                "[queue]\n",
                &format!(
                    "[queue]\nbackend = \"postgres\"\nurl = \"{url}\"\nschema = \"{schema}\"\n"
                ),
                1,
            )
        }
        Ok("sqlite") | Err(_) => config.to_string(),
        Ok(other) => panic!("MCPPLUS_TEST_QUEUE_BACKEND is sqlite or postgres, not {other}"),
    }
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
    let plain = client_without_tasks(&server.url).await;
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
    let server = start_server(
        &scratch,
        "[queue]\nworkers = 1\nlong_running = [\"panic\"]\ntask_required = [\"trap\"]\n",
        &[mcpplus_tests::artifacts::misbehaving()],
    );
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
    let plain = client_without_tasks(&server.url).await;
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

/// A server of the conformance fixture (its `confirm_delete` and
/// `multi_input` ask the client), both served as MCP tasks.
fn asking_server(scratch: &Scratch) -> HttpServer {
    start_server(
        scratch,
        "[queue]\nworkers = 2\nlease_ms = 3000\nlong_running = [\"confirm_delete\", \"multi_input\"]\n",
        &[mcpplus_tests::dist().join("fixtures/conformance.wasm")],
    )
}

/// Tasks and elicitation, in `lifecycle` (2026-07-28 discovery, or a
/// 2025-11-25 session of its own).
async fn asking_client(
    url: &str,
    lifecycle: ClientLifecycleMode,
) -> RunningService<RoleClient, ClientConfig> {
    let capabilities: ClientCapabilities = serde_json::from_value(json!({
        "elicitation": {},
        "extensions": {"io.modelcontextprotocol/tasks": {}},
    }))
    .unwrap();
    let info = ClientConfig::new(capabilities, Implementation::new("tasks-input-test", "0"));
    info.serve_with_lifecycle(StreamableHttpClientTransport::from_uri(url), lifecycle)
        .await
        .expect("connect")
}

async fn start_task(
    client: &RunningService<RoleClient, ClientConfig>,
    request: CallToolRequestParams,
) -> String {
    match client.call_tool_once(request).await.expect("tools/call") {
        CallToolResponse::Task(created) => created.task.task_id,
        other => panic!("expected a task handle, got {other:?}"),
    }
}

/// The keys and methods of a task's pending input requests, once it waits.
async fn wait_for_input(
    client: &RunningService<RoleClient, ClientConfig>,
    id: &str,
) -> Vec<(String, String)> {
    let parked = poll_until(client, id, |t| {
        t.task.status() == TaskStatus::InputRequired || t.task.status().is_terminal()
    })
    .await;
    let TaskPayload::InputRequired { input_requests } = &parked.task.payload else {
        panic!("expected input_required, got {parked:?}");
    };
    let wire = serde_json::to_value(input_requests).unwrap();
    wire.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v["method"].as_str().unwrap_or("").to_string()))
        .collect()
}

fn answer(key: &str, content: Value) -> InputResponses {
    let mut responses = InputResponses::new();
    responses.insert(
        key.to_string(),
        json!({"action": "accept", "content": content}),
    );
    responses
}

/// A task whose tool asks the client parks in `input_required` with the
/// request; `tasks/update` brings the answer and the task resumes and
/// completes with it. Answering part of several requests keeps it waiting
/// for the rest; a waiting task can be cancelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_asks_the_client_waits_for_tasks_update() {
    let scratch = Scratch::new("mcp-tasks-input");
    let server = asking_server(&scratch);
    let client = asking_client(&server.url, modern()).await;

    let id = start_task(
        &client,
        call("confirm_delete", json!({"filename": "a.txt"})),
    )
    .await;
    let pending = wait_for_input(&client, &id).await;
    assert_eq!(
        pending,
        [(
            "confirm_delete".to_string(),
            "elicitation/create".to_string()
        )]
    );
    // Still waiting: the request stays until answered.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(wait_for_input(&client, &id).await.len(), 1);
    client
        .update_task(UpdateTaskParams::new(
            id.clone(),
            answer("confirm_delete", json!({"confirm": true})),
        ))
        .await
        .expect("tasks/update");
    let done = poll_until(&client, &id, |t| t.task.status().is_terminal()).await;
    let TaskPayload::Completed { result } = &done.task.payload else {
        panic!("expected completed, got {done:?}");
    };
    assert_eq!(result["isError"], json!(false), "{result:?}");
    assert!(
        Value::Object(result.clone())
            .to_string()
            .contains("Deleted a.txt"),
        "{result:?}"
    );
    // A task that waits for nothing takes no answers.
    let late = client
        .update_task(UpdateTaskParams::new(
            id.clone(),
            answer("confirm_delete", json!({"confirm": true})),
        ))
        .await;
    assert!(format!("{late:?}").contains("-32602"), "{late:?}");

    // Two requests at once: answering one keeps it waiting for the other.
    let id = start_task(&client, call("multi_input", json!({}))).await;
    let pending = wait_for_input(&client, &id).await;
    let keys: Vec<&str> = pending.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["confirm", "name"]);
    client
        .update_task(UpdateTaskParams::new(
            id.clone(),
            answer("name", json!({"name": "Ada"})),
        ))
        .await
        .expect("tasks/update");
    let pending = wait_for_input(&client, &id).await;
    assert_eq!(
        pending,
        [("confirm".to_string(), "elicitation/create".to_string())]
    );
    // An answer to nothing pending is ignored.
    let mut both = answer("confirm", json!({"ok": true}));
    both.insert("unknown".into(), json!({"ignored": true}));
    client
        .update_task(UpdateTaskParams::new(id.clone(), both))
        .await
        .expect("tasks/update");
    let done = poll_until(&client, &id, |t| t.task.status().is_terminal()).await;
    let TaskPayload::Completed { result } = &done.task.payload else {
        panic!("expected completed, got {done:?}");
    };
    let text = Value::Object(result.clone()).to_string();
    assert!(text.contains("Ada") && text.contains("true"), "{text}");

    // A waiting task can be cancelled.
    let id = start_task(
        &client,
        call("confirm_delete", json!({"filename": "b.txt"})),
    )
    .await;
    wait_for_input(&client, &id).await;
    client
        .cancel_task(CancelTaskParams::new(id.clone()))
        .await
        .expect("tasks/cancel");
    let done = poll_until(&client, &id, |t| t.task.status().is_terminal()).await;
    assert_eq!(done.task.status(), TaskStatus::Cancelled);
    client.cancel().await.ok();
}

/// Only the client that created a waiting task can answer it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_answers_a_waiting_task() {
    let scratch = Scratch::new("mcp-tasks-input-owner");
    let server = asking_server(&scratch);
    let (owner, other) = (
        asking_client(&server.url, ClientLifecycleMode::Initialize).await,
        asking_client(&server.url, ClientLifecycleMode::Initialize).await,
    );
    let id = start_task(&owner, call("confirm_delete", json!({"filename": "c.txt"}))).await;
    wait_for_input(&owner, &id).await;
    let refused = other
        .update_task(UpdateTaskParams::new(
            id.clone(),
            answer("confirm_delete", json!({"confirm": true})),
        ))
        .await;
    assert!(
        format!("{refused:?}").contains(&format!("there is no task `{id}`")),
        "{refused:?}"
    );
    // Still waiting for its owner's answer.
    assert_eq!(wait_for_input(&owner, &id).await.len(), 1);
    owner
        .update_task(UpdateTaskParams::new(
            id.clone(),
            answer("confirm_delete", json!({"confirm": false})),
        ))
        .await
        .expect("tasks/update");
    let done = poll_until(&owner, &id, |t| t.task.status().is_terminal()).await;
    let TaskPayload::Completed { result } = &done.task.payload else {
        panic!("expected completed, got {done:?}");
    };
    assert!(
        Value::Object(result.clone())
            .to_string()
            .contains("Kept c.txt"),
        "{result:?}"
    );
}
