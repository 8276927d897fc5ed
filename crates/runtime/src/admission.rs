//! Admission control: a per-tool cap on simultaneous instances and a server-wide
//! cap, each with a bounded, first-come-first-served wait. When a queue is full
//! the call is refused at once with a "busy" error instead of piling up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use mcpplus_policy::config::{CallLimits, ServerLimits};

/// Holding this is the right to run one call.
pub struct Permit {
    _tool: OwnedSemaphorePermit,
    _server: OwnedSemaphorePermit,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum Busy {
    #[error(
        "tool `{tool}` is busy: {running} calls are running and {queued} are waiting, its limit; try again shortly"
    )]
    Tool {
        tool: String,
        running: u32,
        queued: u32,
    },
    #[error(
        "the server is busy: {running} calls are running and {queued} are waiting; try again shortly"
    )]
    Server { running: u32, queued: u32 },
}

/// One semaphore with a bounded number of waiters. Tokio's semaphore is fair:
/// released slots go to waiters in arrival order.
struct Gate {
    slots: Arc<Semaphore>,
    size: u32,
    max_queued: u32,
    waiting: AtomicU32,
}

impl Gate {
    fn new(size: u32, max_queued: u32) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(size as usize)),
            size,
            max_queued,
            waiting: AtomicU32::new(0),
        }
    }

    /// A slot, or `None` when the wait queue is full.
    async fn enter(&self) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = self.slots.clone().try_acquire_owned() {
            return Some(permit);
        }
        if self.waiting.fetch_add(1, Ordering::SeqCst) >= self.max_queued {
            self.waiting.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        // Leave the queue even if this future is dropped (timeout, cancellation).
        struct Leave<'a>(&'a AtomicU32);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _leave = Leave(&self.waiting);
        self.slots.clone().acquire_owned().await.ok()
    }

    fn running(&self) -> u32 {
        self.size - self.slots.available_permits() as u32
    }
}

pub struct Admission {
    server: Gate,
    tools: Mutex<HashMap<String, Arc<Gate>>>,
}

impl Admission {
    pub fn new(server: &ServerLimits) -> Self {
        Self {
            server: Gate::new(server.max_concurrency, server.max_queued),
            tools: Mutex::default(),
        }
    }

    /// Wait (boundedly) for a slot for `tool` and a server-wide slot.
    pub async fn enter(&self, tool: &str, limits: &CallLimits) -> Result<Permit, Busy> {
        let gate = self.gate(tool, limits);
        let tool_permit = gate.enter().await.ok_or_else(|| Busy::Tool {
            tool: tool.to_string(),
            running: gate.running(),
            queued: gate.max_queued,
        })?;
        let server_permit = self.server.enter().await.ok_or(Busy::Server {
            running: self.server.running(),
            queued: self.server.max_queued,
        })?;
        Ok(Permit {
            _tool: tool_permit,
            _server: server_permit,
        })
    }

    fn gate(&self, tool: &str, limits: &CallLimits) -> Arc<Gate> {
        let matches =
            |g: &Gate| g.size == limits.max_concurrency && g.max_queued == limits.max_queued;
        let mut tools = self.tools.lock().unwrap_or_else(|e| e.into_inner());
        // The common case: the gate exists with these limits (no key allocation).
        if let Some(gate) = tools.get(tool).filter(|g| matches(g)) {
            return gate.clone();
        }
        // New tool, or its limits changed (new config, replaced tool): later calls
        // use a new gate while calls already admitted finish on the old one.
        let gate = Arc::new(Gate::new(limits.max_concurrency, limits.max_queued));
        tools.insert(tool.to_string(), gate.clone());
        gate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(concurrency: u32, queued: u32) -> CallLimits {
        CallLimits {
            max_concurrency: concurrency,
            max_queued: queued,
            ..CallLimits::default()
        }
    }

    #[tokio::test]
    async fn a_full_queue_is_refused_at_once_and_slots_go_in_order() {
        let admission = Arc::new(Admission::new(&ServerLimits::default()));
        let l = limits(1, 1);
        let first = admission.enter("t", &l).await.unwrap();
        // One may wait...
        let waiter = {
            let admission = admission.clone();
            let l = l.clone();
            tokio::spawn(async move { admission.enter("t", &l).await.map(|_| ()) })
        };
        tokio::task::yield_now().await;
        while admission.gate("t", &l).waiting.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        // ...a second waiter is refused, naming the tool.
        let refused = admission.enter("t", &l).await.err().unwrap();
        assert_eq!(
            refused,
            Busy::Tool {
                tool: "t".into(),
                running: 1,
                queued: 1
            }
        );
        // Other tools are unaffected.
        assert!(admission.enter("other", &l).await.is_ok());
        drop(first);
        waiter.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn the_server_cap_applies_across_tools() {
        let admission = Admission::new(&ServerLimits {
            max_concurrency: 1,
            max_queued: 0,
            ..ServerLimits::default()
        });
        let _held = admission.enter("a", &limits(4, 4)).await.unwrap();
        let refused = admission.enter("b", &limits(4, 4)).await.err().unwrap();
        assert_eq!(
            refused,
            Busy::Server {
                running: 1,
                queued: 0
            }
        );
    }
}
