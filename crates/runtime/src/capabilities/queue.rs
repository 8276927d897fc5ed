//! `mcpplus:host/queue`: the task queue, for components whose policy grants
//! `[queue] submit` (submit, get, list, cancel, stats) or `[queue] admin`
//! (everything). Refusals are audit events and `queue-error.denied` values
//! that name the grant to add.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::bindings::queue::{
    Host, QueueError, QueueStats, Task, TaskFilter, TaskPage, TaskSpec, TaskState, WorkerInfo,
    WorkerRemoved, WorkerSpec,
};
use crate::host_state::HostState;
use mcpplus_policy::imports::Capability;
use mcpplus_queue::service::{self, QueueService};
use mcpplus_queue::store::ListFilter;
use mcpplus_queue::worker::{blocking, now_ms};
use mcpplus_queue::{self as q, NewTask, QueueStore};

/// Most tasks one listing returns.
const MAX_PAGE: u32 = 1000;

#[derive(Clone, Copy, PartialEq)]
enum Needs {
    /// `[queue] submit` or `admin`.
    Submit,
    Admin,
}

impl HostState {
    /// The queue, if this call may use `function`.
    fn queue_for(&self, function: &str, needs: Needs) -> Result<Arc<QueueService>, QueueError> {
        let grants = self.queue_grants();
        let allowed = match needs {
            Needs::Submit => grants.submit || grants.admin,
            Needs::Admin => grants.admin,
        };
        if !allowed {
            let grant = match needs {
                Needs::Submit => "[queue] submit = true (or admin = true)",
                Needs::Admin => "[queue] admin = true",
            };
            return Err(QueueError::Denied(self.call().refuse_function(
                Capability::Queue,
                "mcpplus:host/queue",
                function,
                grant,
            )));
        }
        self.queue_service().cloned().ok_or_else(|| {
            QueueError::Unavailable(
                "the task queue does not run in this process: `mcpplus serve` runs it (in its --data-dir); `mcpplus call` does not".into(),
            )
        })
    }
}

/// Run a store operation off the async threads (commits fsync).
async fn on_store<T: Send + 'static>(
    queue: &QueueService,
    f: impl FnOnce(&QueueStore) -> Result<T, q::StoreError> + Send + 'static,
) -> Result<T, QueueError> {
    match blocking(queue.store(), f).await {
        Some(result) => result.map_err(|e| to_wit_error(e.into())),
        None => Err(QueueError::Unavailable(
            "the queue operation did not finish".into(),
        )),
    }
}

fn to_wit_error(e: service::QueueError) -> QueueError {
    match e {
        service::QueueError::Invalid(m) => QueueError::Invalid(m),
        service::QueueError::NotFound(m) => QueueError::NotFound(m),
        service::QueueError::Conflict(m) => QueueError::Conflict(m),
        service::QueueError::Unavailable(m) => QueueError::Unavailable(m),
    }
}

fn parse_json(text: &str, what: &str) -> Result<Value, QueueError> {
    serde_json::from_str(text)
        .map_err(|e| QueueError::Invalid(format!("{what} is not valid JSON: {e}")))
}

fn object_or_empty(text: &str, what: &str) -> Result<Value, QueueError> {
    let value = parse_json(text, what)?;
    match value {
        Value::Null => Ok(Value::Object(Default::default())),
        Value::Object(_) => Ok(value),
        other => Err(QueueError::Invalid(format!(
            "{what} must be a JSON object, not {other}"
        ))),
    }
}

fn state_to_wit(s: q::TaskState) -> TaskState {
    match s {
        q::TaskState::Queued => TaskState::Queued,
        q::TaskState::Running => TaskState::Running,
        q::TaskState::Completed => TaskState::Completed,
        q::TaskState::Failed => TaskState::Failed,
        q::TaskState::Cancelled => TaskState::Cancelled,
        // The WIT enum is frozen: a task waiting for its MCP client's input is
        // live and not running, so guests see it queued (not ready: no
        // position), its progress message saying what it waits for.
        q::TaskState::WaitingInput => TaskState::Queued,
    }
}

/// The queue states a WIT state stands for (`queued` includes waiting ones).
fn states_from_wit(s: TaskState) -> Vec<q::TaskState> {
    match s {
        TaskState::Queued => vec![q::TaskState::Queued, q::TaskState::WaitingInput],
        other => vec![state_from_wit(other)],
    }
}

fn state_from_wit(s: TaskState) -> q::TaskState {
    match s {
        TaskState::Queued => q::TaskState::Queued,
        TaskState::Running => q::TaskState::Running,
        TaskState::Completed => q::TaskState::Completed,
        TaskState::Failed => q::TaskState::Failed,
        TaskState::Cancelled => q::TaskState::Cancelled,
    }
}

fn task_to_wit(t: q::Task, queue_position: Option<u64>) -> Task {
    let progress_message = match (&t.state, &t.input_requests) {
        (q::TaskState::WaitingInput, Some(serde_json::Value::Object(requests))) => Some(format!(
            "waiting for the MCP client's input (tasks/update): {}",
            requests.keys().cloned().collect::<Vec<_>>().join(", ")
        )),
        _ => t.progress_message,
    };
    Task {
        id: t.id,
        tool: t.tool,
        arguments: t.arguments.to_string(),
        priority: t.priority,
        tags: t.tags,
        metadata: t.metadata.to_string(),
        state: state_to_wit(t.state),
        attempt: t.attempt,
        max_attempts: t.max_attempts,
        timeout_ms: t.timeout_ms,
        worker: t.worker,
        queue_position,
        progress: t.progress,
        progress_total: t.progress_total,
        progress_message,
        result: t.result.map(|r| r.to_string()),
        error: t.error,
        created_ms: t.created_ms,
        started_ms: t.started_ms,
        finished_ms: t.finished_ms,
        retries: t.retries,
    }
}

/// A task with its queue position (when queued).
fn task_with_position(store: &QueueStore, task: q::Task) -> Result<Task, q::StoreError> {
    let position = if task.state == q::TaskState::Queued {
        store.position(&task.id)?
    } else {
        None
    };
    Ok(task_to_wit(task, position))
}

fn stats_of(store: &QueueStore) -> Result<QueueStats, q::StoreError> {
    let counts = store.counts()?;
    let count = |s: q::TaskState| counts.iter().find(|(k, _)| *k == s).map_or(0, |(_, n)| *n);
    let pause = store.paused()?;
    let timings = store.timings(now_ms() - 60_000)?;
    Ok(QueueStats {
        queued: count(q::TaskState::Queued) + count(q::TaskState::WaitingInput),
        running: count(q::TaskState::Running),
        completed: count(q::TaskState::Completed),
        failed: count(q::TaskState::Failed),
        cancelled: count(q::TaskState::Cancelled),
        paused: pause.is_some(),
        paused_reason: pause.as_ref().and_then(|p| p.reason.clone()),
        paused_at_ms: pause.map(|p| p.at_ms),
        average_wait_ms: timings.average_wait_ms,
        average_run_ms: timings.average_run_ms,
        finished_last_minute: timings.finished_since,
    })
}

fn worker_to_wit(w: service::WorkerInfo) -> WorkerInfo {
    WorkerInfo {
        id: w.spec.id,
        tools: w.spec.tools,
        slots: w.spec.slots,
        metadata: w.spec.metadata.to_string(),
        status: w.status.to_string(),
        registered_at_ms: w.registered_at_ms,
        running_tasks: w.running_tasks,
        completed: w.completed,
        failed: w.failed,
    }
}

impl Host for HostState {
    async fn submit(&mut self, spec: TaskSpec) -> Result<Task, QueueError> {
        let queue = self.queue_for("submit", Needs::Submit)?;
        let new = NewTask {
            id: spec.id,
            tool: spec.tool,
            arguments: parse_json(&spec.arguments, "the task's arguments")?,
            priority: spec.priority,
            tags: spec.tags,
            metadata: object_or_empty(&spec.metadata, "the task's metadata")?,
            timeout_ms: spec.timeout_ms,
            max_attempts: spec.max_attempts,
            backoff_ms: spec.backoff_ms,
            idempotency_key: spec.idempotency_key,
        };
        let (component, tool) = (self.call().component.clone(), self.call().tool.clone());
        on_store(&queue, move |s| {
            let (task, new) = s.submit(new, now_ms())?;
            if new {
                mcpplus_telemetry::metrics::metrics()
                    .queue_submitted
                    .get_or_create(&vec![("origin", "tool".to_string())])
                    .inc();
                tracing::info!(event = "queue.task_submitted", task = %task.id, tool = %task.tool,
                    priority = task.priority, by_component = %component, by_tool = %tool, "task submitted");
            }
            task_with_position(s, task)
        })
        .await
    }

    async fn hosts(&mut self, tool: String) -> Result<Vec<String>, QueueError> {
        let queue = self.queue_for("hosts", Needs::Submit)?;
        let mut hosts = Vec::new();
        if queue.hosts_locally(&tool) {
            hosts.push("local".to_string());
        }
        if let Some(peers) = self.peer_network() {
            hosts.extend(peers.hosts(&tool));
        }
        Ok(hosts)
    }

    async fn get(&mut self, id: String) -> Result<Task, QueueError> {
        let queue = self.queue_for("get", Needs::Submit)?;
        on_store(&queue, move |s| task_with_position(s, s.get(&id)?)).await
    }

    async fn list_tasks(
        &mut self,
        filter: TaskFilter,
        offset: u64,
        limit: u32,
    ) -> Result<TaskPage, QueueError> {
        let queue = self.queue_for("list-tasks", Needs::Submit)?;
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(QueueError::Invalid(format!(
                "limit must be between 1 and {MAX_PAGE}, got {limit}"
            )));
        }
        if filter
            .priority_min
            .is_some_and(|p| !p.is_finite() || p < 0.0)
        {
            return Err(QueueError::Invalid(
                "priority_min must be a number of 0 or more".into(),
            ));
        }
        // Only a listing of exactly the queued tasks is in queue order from 0
        // (the ready ones come first; waiting ones have no position).
        let in_queue_order = filter.states == [TaskState::Queued]
            && filter.worker.is_none()
            && filter.tags.is_empty()
            && filter.priority_min.is_none();
        let filter = ListFilter {
            states: filter
                .states
                .into_iter()
                .flat_map(states_from_wit)
                .collect(),
            worker: filter.worker,
            tags: filter.tags,
            min_priority: filter.priority_min,
        };
        on_store(&queue, move |s| {
            let (tasks, total) = s.list(&filter, offset, limit as u64)?;
            let tasks = tasks
                .into_iter()
                .enumerate()
                .map(|(i, t)| {
                    let position = (in_queue_order && t.state == q::TaskState::Queued)
                        .then_some(offset + i as u64);
                    task_to_wit(t, position)
                })
                .collect();
            Ok(TaskPage { tasks, total })
        })
        .await
    }

    async fn cancel(&mut self, id: String, reason: Option<String>) -> Result<Task, QueueError> {
        let queue = self.queue_for("cancel", Needs::Submit)?;
        on_store(&queue, move |s| {
            let task = s.cancel(&id, reason.as_deref(), now_ms())?;
            tracing::info!(event = "queue.task_cancelled", task = %task.id, "task cancelled");
            Ok(task_to_wit(task, None))
        })
        .await
    }

    async fn stats(&mut self) -> Result<QueueStats, QueueError> {
        let queue = self.queue_for("stats", Needs::Submit)?;
        on_store(&queue, stats_of).await
    }

    async fn set_priority(&mut self, id: String, priority: f64) -> Result<Task, QueueError> {
        let queue = self.queue_for("set-priority", Needs::Admin)?;
        on_store(&queue, move |s| {
            s.set_priority(&id, priority)?;
            task_with_position(s, s.get(&id)?)
        })
        .await
    }

    async fn retry(&mut self, id: String, extra_attempts: u32) -> Result<Task, QueueError> {
        let queue = self.queue_for("retry", Needs::Admin)?;
        on_store(&queue, move |s| {
            let task = s.retry(&id, extra_attempts)?;
            task_with_position(s, task)
        })
        .await
    }

    async fn pause(&mut self, reason: Option<String>) -> Result<QueueStats, QueueError> {
        let queue = self.queue_for("pause", Needs::Admin)?;
        on_store(&queue, move |s| {
            s.set_pause(Some(q::store::Pause {
                reason,
                at_ms: now_ms(),
            }))?;
            tracing::warn!(
                event = "queue.paused",
                "task queue paused: workers claim nothing until it resumes"
            );
            stats_of(s)
        })
        .await
    }

    async fn resume(&mut self) -> Result<QueueStats, QueueError> {
        let queue = self.queue_for("resume", Needs::Admin)?;
        on_store(&queue, move |s| {
            s.set_pause(None)?;
            tracing::info!(event = "queue.resumed", "task queue resumed");
            stats_of(s)
        })
        .await
    }

    async fn clear(&mut self, states: Vec<TaskState>) -> Result<u64, QueueError> {
        let queue = self.queue_for("clear", Needs::Admin)?;
        if states.is_empty() {
            return Err(QueueError::Invalid(
                "name the states to clear (queued, completed, failed, cancelled)".into(),
            ));
        }
        let states: Vec<q::TaskState> = states.into_iter().flat_map(states_from_wit).collect();
        on_store(&queue, move |s| {
            let cleared = s.clear(&states)?;
            tracing::warn!(event = "queue.cleared", cleared, states = ?states, "tasks cleared");
            Ok(cleared)
        })
        .await
    }

    async fn register_worker(&mut self, spec: WorkerSpec) -> Result<WorkerInfo, QueueError> {
        let queue = self.queue_for("register-worker", Needs::Admin)?;
        let spec = service::WorkerSpec {
            id: spec.id,
            tools: spec.tools,
            slots: spec.slots,
            metadata: object_or_empty(&spec.metadata, "the worker's metadata")?,
        };
        queue
            .register(spec)
            .map(worker_to_wit)
            .map_err(to_wit_error)
    }

    async fn unregister_worker(
        &mut self,
        id: String,
        graceful: bool,
        timeout_ms: u64,
    ) -> Result<WorkerRemoved, QueueError> {
        let queue = self.queue_for("unregister-worker", Needs::Admin)?;
        let removed = queue
            .unregister(&id, graceful, Duration::from_millis(timeout_ms))
            .await
            .map_err(to_wit_error)?;
        Ok(WorkerRemoved {
            id: removed.id,
            completed: removed.completed,
            abandoned: removed.abandoned,
        })
    }

    async fn worker(&mut self, id: String) -> Result<WorkerInfo, QueueError> {
        let queue = self.queue_for("worker", Needs::Admin)?;
        queue.worker(&id).map(worker_to_wit).map_err(to_wit_error)
    }

    async fn workers(&mut self) -> Result<Vec<WorkerInfo>, QueueError> {
        let queue = self.queue_for("workers", Needs::Admin)?;
        Ok(queue.workers().into_iter().map(worker_to_wit).collect())
    }
}
