//! The 14 task-queue tools of the original MCP++, with its names and
//! parameters, over the host's durable queue (`mcpplus:host/queue`). This
//! component validates the way the original's stricter mirror did and turns
//! every refusal into a tool error that says what to fix; the host does the
//! queueing, and enforces the policy's `[queue]` grants.

wit_bindgen::generate!({ path: "wit", world: "task-queue", generate_all });

use exports::mcpplus::task_queue::tasks::*;
use mcpplus::host::queue::{self, QueueError, TaskFilter, TaskSpec, TaskState};

struct TaskQueue;

const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;
const DEFAULT_RETRIES: u32 = 2;
const MAX_RETRIES: u32 = 100;
const DEFAULT_BACKOFF_MS: u64 = 1_000;
const DEFAULT_SLOTS: u32 = 5;
const DEFAULT_UNREGISTER_TIMEOUT_S: u32 = 300;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn explain(e: QueueError) -> String {
    match e {
        QueueError::Invalid(m)
        | QueueError::NotFound(m)
        | QueueError::Conflict(m)
        | QueueError::Denied(m)
        | QueueError::Unavailable(m) => m,
    }
}

fn non_empty(value: &str, name: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        Err(format!("{name} must be a non-empty string"))
    } else {
        Ok(())
    }
}

fn positive(value: f64, name: &str) -> Result<(), String> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(format!(
            "{name} must be a number greater than 0 (higher runs first), not {value}"
        ))
    }
}

/// `text` must be a JSON object (`null` counts as empty when allowed).
fn object(text: &str, name: &str, null_ok: bool) -> Result<String, String> {
    let trimmed = text.trim();
    if null_ok && trimmed == "null" {
        return Ok("{}".into());
    }
    if trimmed.starts_with('{') {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{name} must be an object (e.g. {{\"key\": \"value\"}}), not {trimmed:.80}"
        ))
    }
}

fn history(task: &queue::Task) -> Vec<String> {
    let mut lines = vec![format!("submitted at {} ms", task.created_ms)];
    if let Some(start) = task.started_ms {
        lines.push(format!(
            "attempt {} of {} started at {start} ms on {}",
            task.attempt,
            task.max_attempts,
            task.worker.as_deref().unwrap_or("a worker")
        ));
    }
    if let Some(message) = &task.progress_message {
        lines.push(format!("progress: {message}"));
    }
    if let Some(error) = &task.error {
        lines.push(format!("error: {error}"));
    }
    if task.retries > 0 {
        lines.push(format!("retried by hand {} time(s)", task.retries));
    }
    if let Some(end) = task.finished_ms {
        lines.push(format!("{} at {end} ms", state_name(task.state)));
    }
    lines
}

fn state_name(state: TaskState) -> &'static str {
    match state {
        TaskState::Queued => "queued",
        TaskState::Running => "running",
        TaskState::Completed => "completed",
        TaskState::Failed => "failed",
        TaskState::Cancelled => "cancelled",
    }
}

fn execution_ms(task: &queue::Task) -> Option<i64> {
    Some(task.finished_ms? - task.started_ms?)
}

/// The structured part of a stored CallToolResult
/// (`{"content", "structuredContent", "isError"}`), when it has one.
fn result_value(result: &str) -> Option<String> {
    let result: serde_json::Value = serde_json::from_str(result).ok()?;
    match result.get("structuredContent")? {
        serde_json::Value::Null => None,
        structured => Some(structured.to_string()),
    }
}

impl Guest for TaskQueue {
    fn task_submit(
        task_id: String,
        task_type: String,
        payload: String,
        priority: Option<f64>,
        tags: Option<Vec<String>>,
        timeout: Option<u32>,
        retry_policy: Option<RetryPolicy>,
        metadata: Option<String>,
    ) -> Result<Submitted, String> {
        non_empty(&task_id, "task_id")?;
        non_empty(&task_type, "task_type")?;
        let payload = object(&payload, "payload", false)?;
        let priority = priority.unwrap_or(1.0);
        positive(priority, "priority")?;
        let tags = tags.unwrap_or_default();
        if tags.iter().any(|t| t.trim().is_empty()) {
            return Err("tags must be non-empty strings".into());
        }
        if timeout == Some(0) {
            return Err("timeout must be an integer of at least 1 (seconds)".into());
        }
        let policy = retry_policy.unwrap_or(RetryPolicy {
            max_retries: None,
            backoff_ms: None,
        });
        let retries = policy.max_retries.unwrap_or(DEFAULT_RETRIES);
        if retries > MAX_RETRIES {
            return Err(format!(
                "retry_policy.max_retries must be at most {MAX_RETRIES}, got {retries}"
            ));
        }
        let metadata = match metadata {
            Some(m) => object(&m, "metadata", true)?,
            None => "{}".into(),
        };
        let task = queue::submit(&TaskSpec {
            id: Some(task_id),
            tool: task_type,
            arguments: payload,
            priority,
            tags,
            metadata,
            timeout_ms: timeout.map(|s| u64::from(s) * 1000),
            max_attempts: retries + 1,
            backoff_ms: policy.backoff_ms.unwrap_or(DEFAULT_BACKOFF_MS),
            idempotency_key: None,
        })
        .map_err(explain)?;
        // Accepted either way (a host may join later), but said plainly.
        let warning = match queue::hosts(&task.tool) {
            Ok(hosts) if hosts.is_empty() => Some(format!(
                "no node hosts the tool `{}` now: the task waits in the queue until a node that hosts it runs (or connects)",
                task.tool
            )),
            _ => None,
        };
        Ok(Submitted {
            success: true,
            warning,
            task_id: task.id,
            status: task.state,
            queue_position: task.queue_position,
            assigned_worker: (task.state == TaskState::Running)
                .then_some(task.worker)
                .flatten(),
        })
    }

    fn task_status(
        task_id: String,
        include_logs: Option<bool>,
        include_metrics: Option<bool>,
    ) -> Result<TaskStatusReport, String> {
        non_empty(&task_id, "task_id")?;
        let task = queue::get(&task_id).map_err(explain)?;
        let logs = include_logs.unwrap_or(false).then(|| history(&task));
        let metrics = include_metrics.unwrap_or(false).then(|| TaskMetrics {
            attempt: task.attempt,
            max_attempts: task.max_attempts,
            retries: task.retries,
            priority: task.priority,
            wait_ms: task.started_ms.map(|s| s - task.created_ms),
            execution_ms: execution_ms(&task),
        });
        Ok(TaskStatusReport {
            success: true,
            progress: task.progress.map(|p| Progress {
                progress: p,
                total: task.progress_total,
                message: task.progress_message.clone(),
            }),
            worker_id: task.worker,
            start_time_ms: task.started_ms,
            end_time_ms: task.finished_ms,
            queue_position: task.queue_position,
            error: task.error,
            task_id: task.id,
            status: task.state,
            logs,
            metrics,
        })
    }

    fn task_cancel(
        task_id: String,
        reason: Option<String>,
        force: Option<bool>,
    ) -> Result<Cancelled, String> {
        non_empty(&task_id, "task_id")?;
        let task = queue::get(&task_id).map_err(explain)?;
        let running = task.state == TaskState::Running;
        if running && !force.unwrap_or(false) {
            return Err(format!(
                "task `{task_id}` is running (attempt {}); pass force=true to stop it",
                task.attempt
            ));
        }
        let task = queue::cancel(&task_id, reason.as_deref()).map_err(explain)?;
        Ok(Cancelled {
            success: true,
            task_id: task.id,
            status: task.state,
            cancelled_at_ms: task.finished_ms.unwrap_or_else(now_ms),
            cleanup_required: running,
        })
    }

    fn task_list(
        status_filter: Option<TaskState>,
        worker_filter: Option<String>,
        tag_filter: Option<Vec<String>>,
        priority_min: Option<f64>,
        limit: Option<u32>,
        offset: Option<u64>,
    ) -> Result<TaskListing, String> {
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(format!(
                "limit must be between 1 and {MAX_LIMIT}, got {limit}"
            ));
        }
        if let Some(p) = priority_min
            && (!p.is_finite() || p < 0.0)
        {
            return Err(format!(
                "priority_min must be a number of 0 or more, not {p}"
            ));
        }
        let tags = tag_filter.unwrap_or_default();
        if tags.iter().any(|t| t.trim().is_empty()) {
            return Err("tag_filter must hold non-empty strings".into());
        }
        if worker_filter
            .as_deref()
            .is_some_and(|w| w.trim().is_empty())
        {
            return Err("worker_filter must be a non-empty worker id".into());
        }
        let offset = offset.unwrap_or(0);
        let page = queue::list_tasks(
            &TaskFilter {
                states: status_filter.into_iter().collect(),
                worker: worker_filter,
                tags,
                priority_min,
            },
            offset,
            limit,
        )
        .map_err(explain)?;
        let returned = page.tasks.len() as u32;
        let has_more = offset + u64::from(returned) < page.total;
        Ok(TaskListing {
            success: true,
            tasks: page
                .tasks
                .into_iter()
                .map(|t| TaskSummary {
                    task_id: t.id,
                    task_type: t.tool,
                    status: t.state,
                    priority: t.priority,
                    tags: t.tags,
                    worker_id: t.worker,
                    attempt: t.attempt,
                    created_at_ms: t.created_ms,
                    queue_position: t.queue_position,
                })
                .collect(),
            total_count: page.total,
            returned_count: returned,
            has_more,
            offset,
            limit,
            next_offset: has_more.then_some(offset + u64::from(returned)),
        })
    }

    fn task_priority(
        task_id: String,
        new_priority: f64,
        requeue: Option<bool>,
    ) -> Result<Reprioritized, String> {
        non_empty(&task_id, "task_id")?;
        positive(new_priority, "new_priority")?;
        if requeue == Some(false) {
            return Err("requeue=false is not supported: queued tasks always run in priority order; leave it out".into());
        }
        let old = queue::get(&task_id).map_err(explain)?;
        let task = queue::set_priority(&task_id, new_priority).map_err(explain)?;
        Ok(Reprioritized {
            success: true,
            task_id: task.id,
            old_priority: old.priority,
            new_priority: task.priority,
            new_queue_position: task.queue_position,
        })
    }

    fn task_result(
        task_id: String,
        include_output: Option<bool>,
        include_logs: Option<bool>,
    ) -> Result<TaskOutcome, String> {
        non_empty(&task_id, "task_id")?;
        let task = queue::get(&task_id).map_err(explain)?;
        let stored = task.result.clone();
        Ok(TaskOutcome {
            success: true,
            result: stored.as_deref().and_then(result_value),
            output: stored.filter(|_| include_output.unwrap_or(true)),
            logs: include_logs.unwrap_or(false).then(|| history(&task)),
            execution_time_ms: execution_ms(&task),
            error: task.error,
            task_id: task.id,
            status: task.state,
        })
    }

    fn queue_stats(
        include_worker_stats: Option<bool>,
        include_historical: Option<bool>,
    ) -> Result<QueueStatistics, String> {
        let stats = queue::stats().map_err(explain)?;
        let worker_stats = if include_worker_stats.unwrap_or(false) {
            Some(
                queue::workers()
                    .map_err(explain)?
                    .into_iter()
                    .map(|w| WorkerSummary {
                        worker_id: w.id,
                        status: w.status,
                        slots: w.slots,
                        running_tasks: w.running_tasks.len() as u32,
                        completed_tasks: w.completed,
                        failed_tasks: w.failed,
                    })
                    .collect(),
            )
        } else {
            None
        };
        Ok(QueueStatistics {
            success: true,
            status: if stats.paused { "paused" } else { "active" }.into(),
            queued_count: stats.queued,
            running_count: stats.running,
            completed_count: stats.completed,
            failed_count: stats.failed,
            cancelled_count: stats.cancelled,
            average_wait_time_ms: stats.average_wait_ms,
            average_execution_time_ms: stats.average_run_ms,
            throughput: stats.finished_last_minute as f64 / 60.0,
            worker_stats,
            historical: include_historical.unwrap_or(false).then_some(Historical {
                finished_last_minute: stats.finished_last_minute,
                completed_total: stats.completed,
                failed_total: stats.failed,
                cancelled_total: stats.cancelled,
            }),
        })
    }

    fn queue_pause(reason: Option<String>) -> Result<Paused, String> {
        let stats = queue::pause(reason.as_deref()).map_err(explain)?;
        Ok(Paused {
            success: true,
            status: "paused".into(),
            paused_at_ms: stats.paused_at_ms.unwrap_or_else(now_ms),
            reason: stats.paused_reason,
            queued_tasks: stats.queued,
            running_tasks: stats.running,
        })
    }

    fn queue_resume(reorder_by_priority: Option<bool>) -> Result<Resumed, String> {
        if reorder_by_priority == Some(false) {
            return Err("reorder_by_priority=false is not supported: queued tasks always run in priority order; leave it out".into());
        }
        let stats = queue::resume().map_err(explain)?;
        Ok(Resumed {
            success: true,
            status: "active".into(),
            resumed_at_ms: now_ms(),
            queued_tasks: stats.queued,
            reordered: true,
        })
    }

    fn queue_clear(status_filter: Option<TaskState>, confirm: bool) -> Result<Cleared, String> {
        if !confirm {
            return Err(
                "queue_clear deletes tasks and cannot be undone; call it again with confirm=true"
                    .into(),
            );
        }
        let states = match status_filter {
            Some(TaskState::Running) => {
                return Err(
                    "running tasks cannot be cleared; cancel them (task_cancel with force=true) first"
                        .into(),
                );
            }
            Some(state) => vec![state],
            None => vec![
                TaskState::Queued,
                TaskState::Completed,
                TaskState::Failed,
                TaskState::Cancelled,
            ],
        };
        let cleared = queue::clear(&states).map_err(explain)?;
        let stats = queue::stats().map_err(explain)?;
        Ok(Cleared {
            success: true,
            cleared_count: cleared,
            remaining_count: stats.queued
                + stats.running
                + stats.completed
                + stats.failed
                + stats.cancelled,
            cleared_at_ms: now_ms(),
        })
    }

    fn task_retry(task_id: String, retry_config: Option<RetryConfig>) -> Result<Retried, String> {
        non_empty(&task_id, "task_id")?;
        let extra = retry_config.and_then(|c| c.extra_attempts).unwrap_or(1);
        if !(1..=MAX_RETRIES).contains(&extra) {
            return Err(format!(
                "retry_config.extra_attempts must be between 1 and {MAX_RETRIES}, got {extra}"
            ));
        }
        let task = queue::retry(&task_id, extra).map_err(explain)?;
        Ok(Retried {
            success: true,
            retry_task_id: task.id.clone(),
            task_id: task.id,
            retry_count: task.retries,
            queue_position: task.queue_position,
        })
    }

    fn worker_register(
        worker_id: String,
        capabilities: Vec<String>,
        max_concurrent_tasks: Option<u32>,
        resource_limits: Option<String>,
        metadata: Option<String>,
    ) -> Result<Registered, String> {
        non_empty(&worker_id, "worker_id")?;
        if capabilities.iter().any(|c| c.trim().is_empty()) {
            return Err("capabilities must be non-empty tool names".into());
        }
        let metadata = match metadata {
            Some(m) => object(&m, "metadata", true)?,
            None => "{}".into(),
        };
        // Resource limits are kept with the worker; calls run under the
        // server's limits for the tool.
        let metadata = match resource_limits {
            Some(limits) => {
                let limits = object(&limits, "resource_limits", true)?;
                format!("{{\"metadata\":{metadata},\"resourceLimits\":{limits}}}")
            }
            None => metadata,
        };
        let worker = queue::register_worker(&queue::WorkerSpec {
            id: worker_id,
            tools: capabilities,
            slots: max_concurrent_tasks.unwrap_or(DEFAULT_SLOTS),
            metadata,
        })
        .map_err(explain)?;
        Ok(Registered {
            success: true,
            worker_id: worker.id,
            status: worker.status,
            registered_at_ms: worker.registered_at_ms,
            assigned_peers: Vec::new(),
        })
    }

    fn worker_unregister(
        worker_id: String,
        graceful: Option<bool>,
        timeout: Option<u32>,
    ) -> Result<Unregistered, String> {
        non_empty(&worker_id, "worker_id")?;
        let timeout = timeout.unwrap_or(DEFAULT_UNREGISTER_TIMEOUT_S);
        let removed = queue::unregister_worker(
            &worker_id,
            graceful.unwrap_or(true),
            u64::from(timeout) * 1000,
        )
        .map_err(explain)?;
        Ok(Unregistered {
            success: true,
            worker_id: removed.id,
            status: "unregistered".into(),
            unregistered_at_ms: now_ms(),
            completed_tasks: removed.completed,
            abandoned_tasks: removed.abandoned,
        })
    }

    fn worker_status(
        worker_id: String,
        include_tasks: Option<bool>,
        include_metrics: Option<bool>,
    ) -> Result<WorkerReport, String> {
        non_empty(&worker_id, "worker_id")?;
        let w = queue::worker(&worker_id).map_err(explain)?;
        Ok(WorkerReport {
            success: true,
            running_tasks: w.running_tasks.len() as u32,
            completed_tasks: w.completed,
            failed_tasks: w.failed,
            tasks: include_tasks
                .unwrap_or(false)
                .then(|| w.running_tasks.clone()),
            metrics: include_metrics.unwrap_or(false).then(|| WorkerMetrics {
                slots: w.slots,
                capabilities: w.tools.clone(),
                registered_at_ms: w.registered_at_ms,
                metadata: w.metadata.clone(),
            }),
            worker_id: w.id,
            status: w.status,
        })
    }
}

export!(TaskQueue);
