//! MCP tasks (the 2026-07-28 `io.modelcontextprotocol/tasks` extension): a call
//! of a tool configured as long-running (`[queue] long_running`) from a client
//! that declares the extension becomes a task in the durable queue; the client
//! polls `tasks/get` and may `tasks/cancel`. A task whose tool asks the
//! client (`mcpplus:host/client`) parks in `waiting_input` (`input_required`
//! with the `inputRequests`) until the client answers with `tasks/update`. Clients without the extension get
//! the same call answered directly, or use the task tools.
//!
//! Mapping (docs/queue.md): queued and running → `working` (progress in
//! `statusMessage`); completed → `completed` with the CallToolResult; a tool
//! error (`isError`) → `completed` with that result, as the extension says;
//! a failure of the host (lease lost, time limit, missing tool) → `failed`
//! with a JSON-RPC error; cancelled → `cancelled`.

use std::sync::Arc;

use rmcp::ErrorData as McpError;
use rmcp::model::{
    CallToolResponse, ClientCapabilities, CreateTaskResult, DetailedTask, GetTaskResult,
    InputResponses, JsonObject, Task as McpTask, TaskPayload, TaskStatus,
};
use serde_json::{Value, json};

use mcpplus_queue::service::QueueService;
use mcpplus_queue::worker::{blocking, now_ms};
use mcpplus_queue::{NewTask, QueueStore, StoreError, Task, TaskState};
use mcpplus_telemetry::logs::rfc3339_ms;

/// How often clients should poll `tasks/get`.
const POLL_INTERVAL_MS: u64 = 500;

/// Whether a call of `tool` becomes a task for clients with the extension.
pub fn is_long_running(queue: &QueueService, tool: &str) -> bool {
    let config = queue.config();
    config.long_running.iter().any(|t| t == tool) || is_task_required(queue, tool)
}

/// Whether `tool` runs only as a task (`[queue] task_required`).
pub fn is_task_required(queue: &QueueService, tool: &str) -> bool {
    queue.config().task_required.iter().any(|t| t == tool)
}

/// The error for a client without the tasks extension calling a tool that runs
/// only as a task: -32021, naming the extension (HTTP 400 on HTTP).
pub fn extension_required(tool: &str) -> McpError {
    let mut error = McpError::missing_required_client_capability(
        serde_json::from_value(json!({"extensions": {TASKS_EXTENSION: {}}}))
            .expect("a capabilities object naming the tasks extension"),
    );
    error.message = format!(
        "`{tool}` runs only as an MCP task: declare the `{TASKS_EXTENSION}` extension in the client capabilities, or submit it with the task_submit tool"
    )
    .into();
    error
}

const TASKS_EXTENSION: &str = "io.modelcontextprotocol/tasks";

async fn on_store<T: Send + 'static>(
    queue: &Arc<QueueService>,
    f: impl FnOnce(&QueueStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, McpError> {
    match blocking(queue.store(), f).await {
        Some(Ok(value)) => Ok(value),
        Some(Err(StoreError::NotFound(id))) => Err(McpError::invalid_params(
            format!("there is no task `{id}`"),
            Some(json!({"taskId": id})),
        )),
        // Answers for a task that waits for none, or too large.
        Some(Err(e @ (StoreError::WrongState { .. } | StoreError::Invalid(_)))) => {
            Err(McpError::invalid_params(e.to_string(), None))
        }
        Some(Err(e)) => Err(McpError::internal_error(e.to_string(), None)),
        None => Err(McpError::internal_error(
            "the queue operation did not finish",
            None,
        )),
    }
}

/// Queue the call; answer once it is on disk (so `tasks/get` finds it).
pub async fn start(
    queue: &Arc<QueueService>,
    tool: &str,
    arguments: Option<&JsonObject>,
    client: &str,
    owner: &str,
    capabilities: Option<&ClientCapabilities>,
) -> Result<CallToolResponse, McpError> {
    let mut new = NewTask::new(tool, Value::Object(arguments.cloned().unwrap_or_default()));
    // A direct call is not retried either: one attempt, its outcome is the answer.
    new.max_attempts = 1;
    // What the client can answer if the tool asks (`TaskLink`).
    let asks = capabilities
        .map(|c| json!({"elicitation": c.elicitation, "sampling": c.sampling, "roots": c.roots}));
    new.metadata = json!({"origin": "mcp-task", "client": client, "owner": owner,
        "client_capabilities": asks});
    let task = on_store(queue, move |s| s.submit(new, now_ms()).map(|(t, _)| t)).await?;
    mcpplus_telemetry::metrics::metrics()
        .queue_submitted
        .get_or_create(&vec![("origin", "mcp_task".to_string())])
        .inc();
    tracing::info!(event = "queue.task_submitted", task = %task.id, tool = %task.tool, client, "tool call runs as an MCP task");
    Ok(CallToolResponse::Task(CreateTaskResult::new(base(
        &task,
        None,
        queue.config().retention_ms,
    ))))
}

/// `tasks/get`.
pub async fn get(
    queue: &Arc<QueueService>,
    id: String,
    requester: &str,
) -> Result<GetTaskResult, McpError> {
    let requester = requester.to_string();
    let (task, position) = on_store(queue, move |s| {
        let task = owned(s.get(&id)?, &requester)?;
        let position = s.position(&id)?;
        Ok((task, position))
    })
    .await?;
    Ok(GetTaskResult::new(detailed(
        &task,
        position,
        queue.config().retention_ms,
    )))
}

/// `tasks/cancel`: an empty acknowledgement, also for a task already finished.
pub async fn cancel(
    queue: &Arc<QueueService>,
    id: String,
    requester: &str,
) -> Result<(), McpError> {
    let requester = requester.to_string();
    on_store(queue, move |s| {
        owned(s.get(&id)?, &requester)?;
        match s.cancel(
            &id,
            Some("cancelled by the client (tasks/cancel)"),
            now_ms(),
        ) {
            Ok(_) | Err(StoreError::WrongState { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    })
    .await
}

/// `tasks/update`: the client's answers to a task waiting for input (keys it
/// does not wait for are ignored); once all are answered it runs again. An
/// empty acknowledgement.
pub async fn update(
    queue: &Arc<QueueService>,
    id: String,
    responses: InputResponses,
    requester: &str,
) -> Result<(), McpError> {
    let requester = requester.to_string();
    let responses: serde_json::Map<String, Value> = responses.into_iter().collect();
    let task = on_store(queue, move |s| {
        owned(s.get(&id)?, &requester)?;
        s.provide_input(&id, &responses)
    })
    .await?;
    tracing::info!(event = "queue.task_input", task = %task.id, state = task.state.as_str(), "the client answered the task's input requests");
    Ok(())
}

/// `retention_ms`: how long the finished task is kept (0: for ever), the
/// extension's `ttlMs`.
/// `task` if `requester` may see it: MCP tasks belong to who created them;
/// anyone else is told there is no such task (its existence is not revealed).
fn owned(task: Task, requester: &str) -> Result<Task, StoreError> {
    match task.metadata.get("owner").and_then(Value::as_str) {
        Some(owner) if owner != requester => Err(StoreError::NotFound(task.id)),
        _ => Ok(task),
    }
}

fn base(task: &Task, position: Option<u64>, retention_ms: u64) -> McpTask {
    let updated = [task.finished_ms, task.started_ms]
        .into_iter()
        .flatten()
        .fold(task.created_ms, i64::max);
    let mut mcp = McpTask::new(
        task.id.clone(),
        TaskStatus::Working,
        rfc3339_ms(task.created_ms),
        rfc3339_ms(updated),
    )
    .with_poll_interval_ms(POLL_INTERVAL_MS);
    if retention_ms > 0 {
        mcp = mcp.with_ttl_ms(retention_ms);
    }
    if let Some(message) = status_message(task, position) {
        mcp = mcp.with_status_message(message);
    }
    mcp
}

fn status_message(task: &Task, position: Option<u64>) -> Option<String> {
    match task.state {
        TaskState::Queued => Some(match position {
            Some(0) => "queued, next to run".to_string(),
            Some(n) => format!("queued, {n} task(s) ahead"),
            None => "queued".to_string(),
        }),
        TaskState::Running => Some(match (task.progress, task.progress_total) {
            (Some(done), total) => {
                let amount = match total {
                    Some(total) => format!("{done} of {total}"),
                    None => format!("{done}"),
                };
                match &task.progress_message {
                    Some(m) => format!("{amount}: {m}"),
                    None => amount,
                }
            }
            (None, _) => "running".to_string(),
        }),
        TaskState::Failed | TaskState::Cancelled => task.error.clone(),
        TaskState::WaitingInput => Some("waiting for the client's input (tasks/update)".into()),
        TaskState::Completed => None,
    }
}

fn detailed(task: &Task, position: Option<u64>, retention_ms: u64) -> DetailedTask {
    let result_object = || match &task.result {
        Some(Value::Object(map)) => Some(map.clone()),
        _ => None,
    };
    let payload = match task.state {
        TaskState::Queued | TaskState::Running => TaskPayload::Working,
        TaskState::Completed => TaskPayload::Completed {
            result: result_object().unwrap_or_default(),
        },
        // The tool answered with an error result: for the extension that is a
        // completed call whose result has `isError: true`.
        TaskState::Failed => match result_object() {
            Some(result) => TaskPayload::Completed { result },
            None => TaskPayload::Failed {
                error: match json!({
                    "code": -32603,
                    "message": task.error.clone().unwrap_or_else(|| "the task failed".into()),
                }) {
                    Value::Object(map) => map,
                    _ => JsonObject::new(),
                },
            },
        },
        TaskState::Cancelled => TaskPayload::Cancelled,
        TaskState::WaitingInput => TaskPayload::InputRequired {
            input_requests: task
                .input_requests
                .clone()
                .and_then(|r| serde_json::from_value(r).ok())
                .unwrap_or_default(),
        },
    };
    DetailedTask::new(base(task, position, retention_ms), payload)
}
