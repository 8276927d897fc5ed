//! What nodes say to each other over `/mcpplus/queue/1.0.0` (request-response,
//! JSON, 1 MiB requests / 10 MiB responses at most).

use std::collections::BTreeMap;

use mcpplus_queue::remote::{OwnerRequest, OwnerResponse};
use serde::{Deserialize, Serialize};

pub use mcpplus_queue::remote::PROTOCOL;

/// The most tools one node announces; a catalog beyond it is cut (and logged).
pub const MAX_ANNOUNCED_TOOLS: usize = 512;
/// The most tool names one `ready` hint carries.
pub const MAX_READY_TOOLS: usize = 64;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "body", rename_all = "snake_case")]
pub enum MeshRequest {
    /// A worker of the sender speaks to the queue of the receiver.
    Queue(OwnerRequest),
    /// What the sender hosts; the receiver answers with its own.
    Caps(Caps),
    /// The sender (an owner) has ready tasks of these tools: a hint to claim
    /// now instead of at the next poll.
    Ready { tools: Vec<String> },
    /// Enqueue a task in the receiver's queue (needs the `submit` role there);
    /// the receiver owns it from then on.
    Submit(Submission),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "body", rename_all = "snake_case")]
pub enum MeshResponse {
    Queue(OwnerResponse),
    Caps(Caps),
    /// Received; nothing to answer.
    Ack,
    /// The submitted task, as the receiver's queue holds it now.
    Submitted {
        id: String,
        state: mcpplus_queue::TaskState,
        /// `false`: the idempotency key matched an earlier task, returned instead.
        new: bool,
    },
    /// The request was understood but refused; `error` says why.
    Refused {
        error: String,
    },
    /// The sender may not do this here; `error` names the missing role.
    Denied {
        error: String,
    },
}

/// What a node offers the mesh: sent on connect and after every hot load.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Caps {
    /// Grows with every change, so a late, reordered announcement is ignored.
    pub version: u64,
    /// The tools this node serves, with what a client needs to call them.
    pub tools: Vec<ToolCap>,
    /// Worker slots it lends to peers (`[mesh] slots`).
    pub slots: u32,
    /// Queued tasks per tool in its own queue, when it announced.
    pub backlog: BTreeMap<String, u64>,
}

/// One hosted tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCap {
    pub name: String,
    pub component: String,
    /// The component's sha256, so callers can tell builds apart.
    pub sha256: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub input_schema: serde_json::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<serde_json::Value>,
    /// The MCP annotations (what the sandbox lets it do).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<serde_json::Value>,
}

/// A task a peer asks this node to run (and own).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Submission {
    pub tool: String,
    pub arguments: serde_json::Value,
    #[serde(default = "one")]
    pub priority: f64,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default = "one_attempt")]
    pub max_attempts: u32,
    /// The same key from the same peer returns the first task.
    #[serde(default)]
    pub idempotency_key: Option<String>,
}

fn one() -> f64 {
    1.0
}

fn one_attempt() -> u32 {
    1
}
