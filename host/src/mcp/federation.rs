//! Federated tools (`[mesh] federate = true`, docs/mesh.md): `tools/list`
//! also lists tools that only connected peers host, and a `tools/call` of one
//! becomes a task owned by this node that a hosting peer pulls and runs; the
//! caller gets its result (and its progress) as if it had run here.
//!
//! Only peers that may claim here (role `claim`) count as hosts: a tool is
//! listed only if a peer exists that can actually run the call.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use mcpplus_mesh::node::MeshHandle;
use mcpplus_mesh::protocol::ToolCap;
use mcpplus_queue::service::QueueService;
use mcpplus_queue::worker::{blocking, now_ms};
use mcpplus_queue::{NewTask, Task, TaskState};
use rmcp::ErrorData as McpError;
use rmcp::RoleServer;
use rmcp::model::{CallToolResult, JsonObject, MetaObject, ProgressNotificationParam, Tool};
use rmcp::service::RequestContext;
use serde_json::{Value, json};

/// Attempts of one federated call: a host that dies mid-call is retried by another.
const ATTEMPTS: u32 = 3;
/// A safety net under the change signal (a missed wake-up costs at most this).
const RECHECK: Duration = Duration::from_millis(250);

pub struct Federation {
    pub mesh: MeshHandle,
    /// Peers that may claim this node's tasks.
    claimers: Vec<PeerId>,
    timeout: Duration,
}

/// A tool only peers host, and which.
pub struct RemoteTool {
    pub cap: ToolCap,
    pub hosts: Vec<PeerId>,
}

impl Federation {
    /// `claimers`: the peers that may claim this node's tasks.
    pub fn new(mesh: MeshHandle, claimers: Vec<PeerId>, timeout: Duration) -> Self {
        Self {
            mesh,
            claimers,
            timeout,
        }
    }

    /// Tools connected claiming peers host, by name (a name this node
    /// serves itself is never federated: the local tool answers).
    pub fn remote_tools(&self, is_local: impl Fn(&str) -> bool) -> BTreeMap<String, RemoteTool> {
        let directory = self.mesh.directory();
        let mut tools: BTreeMap<String, RemoteTool> = BTreeMap::new();
        for peer in &self.claimers {
            let Some(caps) = directory.get(peer) else {
                continue;
            };
            for cap in &caps.tools {
                if is_local(&cap.name) {
                    continue;
                }
                tools
                    .entry(cap.name.clone())
                    .or_insert_with(|| RemoteTool {
                        cap: cap.clone(),
                        hosts: Vec::new(),
                    })
                    .hosts
                    .push(*peer);
            }
        }
        tools
    }

    /// Whether a peer that may claim here hosts `tool` now.
    pub fn hosted_by_peers(&self, tool: &str) -> bool {
        let directory = self.mesh.directory();
        self.claimers.iter().any(|p| {
            directory
                .get(p)
                .is_some_and(|c| c.tools.iter().any(|t| t.name == tool))
        })
    }

    /// Run `tool` as a task of this node and wait for a peer to finish it.
    pub async fn call(
        &self,
        queue: &Arc<QueueService>,
        tool: &str,
        arguments: Option<&JsonObject>,
        context: &RequestContext<RoleServer>,
        client: &str,
    ) -> Result<CallToolResult, McpError> {
        let mut new = NewTask::new(tool, Value::Object(arguments.cloned().unwrap_or_default()));
        new.max_attempts = ATTEMPTS;
        new.metadata = json!({"origin": "federated", "client": client});
        let store = queue.store().clone();
        let task = match blocking(&store, move |s| s.submit(new, now_ms())).await {
            Some(Ok((task, _))) => task,
            Some(Err(e)) => return Err(McpError::internal_error(e.to_string(), None)),
            None => {
                return Err(McpError::internal_error(
                    "the queue did not accept the call",
                    None,
                ));
            }
        };
        mcpplus_telemetry::metrics::metrics()
            .queue_submitted
            .get_or_create(&vec![("origin", "federated".to_string())])
            .inc();
        tracing::info!(event = "mesh.federated_call", task = %task.id, tool, client,
            "a call of a peer's tool runs as a task of this node");
        let progress_token = context.meta.get_progress_token();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut last_progress: Option<(f64, Option<f64>, Option<String>)> = None;
        loop {
            let changed = store.change_signal().notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let id = task.id.clone();
            let current = match blocking(&store, move |s| s.get(&id)).await {
                Some(Ok(task)) => task,
                Some(Err(e)) => return Err(McpError::internal_error(e.to_string(), None)),
                None => return Err(McpError::internal_error("the queue stopped", None)),
            };
            if let (Some(token), Some(done)) = (&progress_token, current.progress) {
                let now = (
                    done,
                    current.progress_total,
                    current.progress_message.clone(),
                );
                if last_progress.as_ref() != Some(&now) {
                    let mut param = json!({"progressToken": token, "progress": done});
                    if let Some(total) = now.1 {
                        param["total"] = json!(total);
                    }
                    if let Some(message) = &now.2 {
                        param["message"] = json!(message);
                    }
                    if let Ok(p) = serde_json::from_value::<ProgressNotificationParam>(param) {
                        let _ = context.peer.notify_progress(p).await;
                    }
                    last_progress = Some(now);
                }
            }
            if current.state.is_terminal() {
                return outcome(current);
            }
            tokio::select! {
                _ = &mut changed => {}
                _ = tokio::time::sleep(RECHECK) => {}
                _ = context.ct.cancelled() => {
                    cancel(queue, &task.id, "the client cancelled the call").await;
                    return Err(McpError::internal_error("the call was cancelled", None));
                }
                _ = tokio::time::sleep_until(deadline) => {
                    cancel(queue, &task.id, "no peer finished the federated call in time").await;
                    return Err(McpError::internal_error(
                        format!(
                            "`{tool}` runs on a peer, and no peer finished it within {} s (task {} was cancelled); \
                             check that a node hosting it is connected (`mcpplus peers`), or raise [mesh] call_timeout_ms",
                            self.timeout.as_secs_f64(),
                            task.id
                        ),
                        Some(json!({"task": task.id, "tool": tool})),
                    ));
                }
            }
        }
    }
}

async fn cancel(queue: &Arc<QueueService>, id: &str, why: &'static str) {
    let id = id.to_string();
    let _ = blocking(queue.store(), move |s| s.cancel(&id, Some(why), now_ms())).await;
}

/// A finished task as the answer to the call.
fn outcome(task: Task) -> Result<CallToolResult, McpError> {
    let ran_on = task.remote_peer.clone();
    match (task.state, task.result) {
        (TaskState::Completed | TaskState::Failed, Some(result)) => {
            let mut result: CallToolResult = serde_json::from_value(result).map_err(|e| {
                McpError::internal_error(
                    format!("the peer's result is not a CallToolResult: {e}"),
                    None,
                )
            })?;
            let mut meta = result.meta.map(|m| m.0).unwrap_or_default();
            meta.insert("mcpplus/task".into(), json!(task.id));
            if let Some(peer) = ran_on {
                meta.insert("mcpplus/peer".into(), json!(peer));
            }
            result.meta = Some(MetaObject(meta));
            Ok(result)
        }
        (state, _) => Err(McpError::internal_error(
            format!(
                "the federated call ended {}: {}",
                state.as_str(),
                task.error.unwrap_or_else(|| "no reason given".into())
            ),
            Some(json!({"task": task.id})),
        )),
    }
}

/// A peer's tool as `tools/list` shows it, marked with where it runs.
pub fn to_tool(name: &str, remote: &RemoteTool) -> Option<Tool> {
    let cap = &remote.cap;
    let hosts: Vec<String> = remote.hosts.iter().map(|p| p.to_string()).collect();
    let mut tool = json!({
        "name": name,
        "description": cap.description.clone().unwrap_or_default(),
        "inputSchema": cap.input_schema,
        "_meta": {
            "mcpplus/component": cap.component,
            "mcpplus/federated": true,
            "mcpplus/hosts": hosts,
            "mcpplus/sha256": cap.sha256,
        },
    });
    if let Some(annotations) = &cap.annotations {
        tool["annotations"] = annotations.clone();
    }
    if let Some(output) = &cap.output_schema {
        tool["outputSchema"] = output.clone();
    }
    serde_json::from_value(tool).ok()
}
