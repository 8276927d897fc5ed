//! `[queue]` in the operator config: the built-in worker and which tools run as
//! MCP tasks.
//!
//! ```toml
//! [queue]
//! workers = 4                  # slots of the built-in worker `local` (0: none)
//! lease_ms = 30000             # a claim lasts this long without a heartbeat
//! poll_ms = 1000               # idle slots look for work at least this often
//! long_running = ["count_to"]  # tools served as MCP tasks to clients that support them
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
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            workers: 4,
            lease_ms: 30_000,
            poll_ms: 1_000,
            long_running: Vec::new(),
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
        Ok(())
    }

    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    pub fn poll(&self) -> Duration {
        Duration::from_millis(self.poll_ms)
    }
}

/// The most slots one worker may have.
pub const MAX_SLOTS: u32 = 64;
