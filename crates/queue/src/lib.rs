//! The durable task queue (docs/queue.md): a task is a deferred call of a
//! named tool with JSON arguments. `store` holds the state machine in SQLite,
//! `worker` runs tasks through the sandbox, `service` is the queue as `serve`
//! runs it (data directory, lock, worker registry). The `mcpplus:host/queue`
//! interface is in `capabilities/queue.rs`, MCP tasks in `mcp/tasks.rs`.
//!
//! States (docs/queue.md):
//!
//! ```text
//!            claim                complete
//!  queued ─────────▶ running ─────────────▶ completed
//!    ▲  ▲              │ │ fail / lease expired, attempts left
//!    │  └──────────────┘ │   (back to queued after a backoff)
//!    │ retry             │ fail / lease expired, no attempts left
//!  failed ◀──────────────┘
//!  queued | running | waiting_input ──cancel──▶ cancelled
//!  running ──asks the client──▶ waiting_input ──all answered──▶ queued
//! ```
//!
//! Priority: one convention, a positive number, **higher runs first**; equal
//! priorities run in submission order. The original MCP++ tools' float
//! priorities (default 1.0, must be > 0) are taken as they are; its DuckDB
//! queue's 1..10 integers mean the same thing as floats.
//!
//! Exactly-once completion, at-least-once execution: a claim hands out an
//! attempt number, and only the holder of the current attempt of a running
//! task can complete or fail it. A worker that loses its lease (it stopped
//! heartbeating, or the process died) finds its completion refused; the task
//! has gone back to the queue and runs again.

mod group_commit;
/// Tests' PostgreSQL schemas (the `test-support` feature, for other
/// crates' tests).
#[cfg(any(test, feature = "test-support"))]
pub mod pg_test;
pub mod postgres_store;
pub mod pull;
pub mod remote;
#[cfg(test)]
mod remote_model;
pub mod service;
pub mod sql;
pub mod sqlite_store;
pub mod store;
#[cfg(test)]
mod tests;
pub mod worker;

use serde::{Deserialize, Serialize};

pub use store::{QueueStore, SqliteStore, StoreError, TaskStore, Txn};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
    /// Parked: an attempt asked the client for input (an MCP task's
    /// `input_required`); not claimable until every request is answered.
    WaitingInput,
}

impl TaskState {
    pub const ALL: [TaskState; 6] = [
        TaskState::Queued,
        TaskState::Running,
        TaskState::Completed,
        TaskState::Failed,
        TaskState::Cancelled,
        TaskState::WaitingInput,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Running => "running",
            TaskState::Completed => "completed",
            TaskState::Failed => "failed",
            TaskState::Cancelled => "cancelled",
            TaskState::WaitingInput => "waiting_input",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Completed | TaskState::Failed | TaskState::Cancelled
        )
    }
}

/// What a submitter asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    /// Chosen by the submitter, or generated when `None`.
    pub id: Option<String>,
    /// The tool to call (its MCP name).
    pub tool: String,
    /// The tool's arguments, a JSON object.
    pub arguments: serde_json::Value,
    /// Higher runs first; must be > 0.
    pub priority: f64,
    pub tags: Vec<String>,
    pub metadata: serde_json::Value,
    /// Per-attempt time limit for the call.
    pub timeout_ms: Option<u64>,
    /// Attempts in all, the first included (>= 1).
    pub max_attempts: u32,
    /// Backoff before attempt n+1 is `backoff_ms * 2^(n-1)`.
    pub backoff_ms: u64,
    /// Submitting the same key again returns the first task instead of a new one.
    pub idempotency_key: Option<String>,
}

impl NewTask {
    pub fn new(tool: impl Into<String>, arguments: serde_json::Value) -> Self {
        Self {
            id: None,
            tool: tool.into(),
            arguments,
            priority: 1.0,
            tags: Vec::new(),
            metadata: serde_json::Value::Object(Default::default()),
            timeout_ms: None,
            max_attempts: 3,
            backoff_ms: 1_000,
            idempotency_key: None,
        }
    }
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Task {
    pub id: String,
    pub tool: String,
    pub arguments: serde_json::Value,
    pub priority: f64,
    pub tags: Vec<String>,
    pub metadata: serde_json::Value,
    pub timeout_ms: Option<u64>,
    pub max_attempts: u32,
    pub backoff_ms: u64,
    pub idempotency_key: Option<String>,
    pub state: TaskState,
    /// Attempts started so far.
    pub attempt: u32,
    pub worker: Option<String>,
    pub lease_until_ms: Option<i64>,
    /// A queued task is not claimed before this (retry backoff).
    pub not_before_ms: i64,
    pub progress: Option<f64>,
    pub progress_total: Option<f64>,
    pub progress_message: Option<String>,
    pub result: Option<serde_json::Value>,
    pub error: Option<String>,
    pub created_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    /// How many times an operator re-queued it after it failed.
    pub retries: u32,
    /// The peer whose worker holds (or last held) the task; `None` for this
    /// node's own workers.
    pub remote_peer: Option<String>,
    /// While `waiting_input`: the requests still unanswered, by key (a JSON
    /// object of MCP `InputRequest`s).
    pub input_requests: Option<serde_json::Value>,
    /// The answers received so far, by key (a JSON object), which the next
    /// attempt sees.
    pub input_responses: Option<serde_json::Value>,
}

/// How one attempt of a task ended, as its worker reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The tool's result (a CallToolResult as JSON).
    Completed(serde_json::Value),
    Failed {
        error: String,
        /// Whether another attempt could succeed (a refused capability or
        /// invalid arguments fail the same way every time).
        retryable: bool,
        /// The tool's own error result (`isError: true`), when it gave one.
        result: Option<serde_json::Value>,
    },
    /// The tool asked the client for input that has not arrived: the task
    /// parks in `waiting_input` with these requests (a JSON object by key).
    /// The attempt does not count against `max_attempts`.
    InputRequired { requests: serde_json::Value },
}

/// What the owner made of a reported outcome ([`QueueStore::settle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Settled {
    /// Recorded now; the task is in this state.
    Recorded(TaskState),
    /// This attempt's outcome was recorded before (a retried report).
    AlreadyRecorded,
    /// The attempt no longer holds the task; the outcome is discarded.
    Stale,
}

/// A running attempt, as handed to a worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Claim {
    pub task: Task,
    /// Present this to heartbeat, complete or fail.
    pub attempt: u32,
}

/// What a heartbeat learns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Lease {
    /// Still yours, renewed.
    Renewed,
    /// The task was cancelled: stop.
    Cancelled,
    /// No longer yours (expired and re-queued or re-claimed, or finished).
    Lost,
}
