//! `[queue]` in the operator config: the built-in worker and which tools run as
//! MCP tasks.
//!
//! ```toml
//! [queue]
//! workers = 4                  # slots of the built-in worker `local` (0: none)
//! lease_ms = 30000             # a claim lasts this long without a heartbeat
//! poll_ms = 1000               # idle slots look for work at least this often
//! long_running = ["count_to"]  # tools served as MCP tasks to clients that support them
//! task_required = ["render"]   # tools served only as MCP tasks (others get error -32021)
//! max_queued = 100000          # tasks waiting or running at once; more are refused
//! max_payload_bytes = 1048576  # a task's arguments plus metadata, as JSON
//! max_result_bytes = 10485760  # a task's result, as JSON (larger: the attempt fails)
//! retention_ms = 604800000     # finished tasks are deleted this long after they end (7 days)
//! ```

use std::time::Duration;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Slots of the worker `local` started with the server; 0 starts none
    /// (tasks then wait for `worker_register`).
    pub workers: u32,
    pub lease_ms: u64,
    pub poll_ms: u64,
    /// Tools whose calls become MCP tasks for clients that declare the
    /// `io.modelcontextprotocol/tasks` extension.
    pub long_running: Vec<String>,
    /// Tools that run only as MCP tasks: a client without the extension gets
    /// error -32021 naming it (the task tools still reach them).
    pub task_required: Vec<String>,
    /// Tasks queued or running at once; a submit beyond it is refused.
    pub max_queued: u64,
    /// A task's arguments plus metadata, as JSON bytes.
    pub max_payload_bytes: u64,
    /// A task's result, as JSON bytes; a larger one fails the attempt.
    pub max_result_bytes: u64,
    /// Finished tasks are deleted this long after they end (0: kept for ever).
    pub retention_ms: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            workers: 4,
            lease_ms: 30_000,
            poll_ms: 1_000,
            long_running: Vec::new(),
            task_required: Vec::new(),
            max_queued: 100_000,
            max_payload_bytes: 1 << 20,
            max_result_bytes: 10 << 20,
            retention_ms: 7 * 24 * 3_600_000,
        }
    }
}

impl QueueConfig {
    /// Refuse values that could never work, naming the key.
    pub fn check(&self) -> Result<(), String> {
        if self.workers > MAX_SLOTS {
            return Err(format!(
                "[queue] workers must be at most {MAX_SLOTS}, got {}",
                self.workers
            ));
        }
        if self.lease_ms < 300 {
            return Err(format!(
                "[queue] lease_ms must be at least 300 (workers heartbeat every third of it), got {}",
                self.lease_ms
            ));
        }
        if self.poll_ms == 0 {
            return Err("[queue] poll_ms must be greater than 0".into());
        }
        for (key, value) in [
            ("max_queued", self.max_queued),
            ("max_payload_bytes", self.max_payload_bytes),
            ("max_result_bytes", self.max_result_bytes),
        ] {
            if value == 0 {
                return Err(format!("[queue] {key} must be greater than 0"));
            }
        }
        Ok(())
    }

    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    pub fn poll(&self) -> Duration {
        Duration::from_millis(self.poll_ms)
    }

    /// What the store enforces on every submit and outcome.
    pub fn quotas(&self) -> Quotas {
        Quotas {
            max_queued: self.max_queued,
            max_payload_bytes: self.max_payload_bytes,
            max_result_bytes: self.max_result_bytes,
        }
    }
}

/// Bounds on what submitters and tools can make the queue hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quotas {
    pub max_queued: u64,
    pub max_payload_bytes: u64,
    pub max_result_bytes: u64,
}

impl Default for Quotas {
    fn default() -> Self {
        QueueConfig::default().quotas()
    }
}

/// The most slots one worker may have.
pub const MAX_SLOTS: u32 = 64;
