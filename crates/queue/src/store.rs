//! Where the queue keeps its tasks: the [`TaskStore`] seam between the
//! queue's state machine (claims fenced by `(id, attempt, state)`, leases,
//! retries with backoff, idempotency keys, parking for input) and the
//! database that holds it. Two backends implement it with the same rules:
//! [`SqliteStore`] (one node's file, the default) and
//! [`crate::postgres_store::PostgresStore`] (one database shared by any number
//! of nodes). The model test (`crate::tests`) runs the same operation
//! sequences against both.
//!
//! Times are milliseconds since the Unix epoch and are passed in, so the
//! state machine can be driven by a test clock. (The PostgreSQL backend
//! reads the database's clock instead, unless a test asks for the passed
//! one: see its module.)

use std::ops::Deref;

use serde_json::{Map, Value};

use crate::remote::AttemptRef;
use crate::{AttemptOutcome, Claim, Lease, NewTask, Settled, Task, TaskState};
use mcpplus_policy::config::queue::Quotas;

use crate::sql::{Dialect, Sql, SqlValue};
pub use crate::sqlite_store::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("the queue database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// A PostgreSQL error, or the database could not be reached.
    #[error("the queue database (PostgreSQL): {0}")]
    Postgres(String),
    #[error("{0}")]
    Invalid(String),
    #[error("there is no task `{0}`")]
    NotFound(String),
    #[error("task `{id}` is {state}; {what}")]
    WrongState {
        id: String,
        state: &'static str,
        what: String,
    },
    #[error(
        "idempotency key `{key}` was already used for task `{id}` with different work; use a new key"
    )]
    KeyConflict { key: String, id: String },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which tasks a listing shows.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Any of these states (empty: all).
    pub states: Vec<TaskState>,
    pub worker: Option<String>,
    /// Every one of these tags.
    pub tags: Vec<String>,
    pub min_priority: Option<f64>,
}

impl ListFilter {
    /// The listing's two statements, the count and one page of `columns`,
    /// with their arguments (`?N` placeholders, which the PostgreSQL backend
    /// rewrites; only the tag test differs between the databases).
    pub(crate) fn statements(
        &self,
        columns: &str,
        offset: u64,
        limit: u64,
        dialect: Dialect,
    ) -> (String, String, Vec<SqlValue>) {
        let mut clauses = vec!["1 = 1".to_string()];
        let mut args = Vec::new();
        if !self.states.is_empty() {
            let marks: Vec<String> = self
                .states
                .iter()
                .map(|s| {
                    args.push(SqlValue::from(s.as_str()));
                    format!("?{}", args.len())
                })
                .collect();
            clauses.push(format!("state IN ({})", marks.join(", ")));
        }
        if let Some(w) = &self.worker {
            // A worker id matches its slots (`worker/N`) too.
            args.push(SqlValue::from(w));
            let n = args.len();
            clauses.push(format!(
                "(worker = ?{n} OR substr(worker, 1, length(CAST(?{n} AS TEXT)) + 1) = ?{n} || '/')"
            ));
        }
        for t in &self.tags {
            args.push(SqlValue::from(t));
            let n = args.len();
            clauses.push(match dialect {
                Dialect::Sqlite => {
                    format!("EXISTS (SELECT 1 FROM json_each(tags) WHERE value = ?{n})")
                }
                Dialect::Postgres => format!(
                    "EXISTS (SELECT 1 FROM jsonb_array_elements_text(tags::jsonb) AS tag WHERE tag = ?{n})"
                ),
            });
        }
        if let Some(p) = self.min_priority {
            args.push(SqlValue::from(p));
            clauses.push(format!("priority >= ?{}", args.len()));
        }
        let clause = clauses.join(" AND ");
        // Within one state the index gives this order without sorting.
        let order = if self.states.len() == 1 {
            "priority DESC, seq ASC"
        } else {
            "state <> 'queued', priority DESC, seq ASC"
        };
        (
            format!("SELECT COUNT(*) FROM tasks WHERE {clause}"),
            format!(
                "SELECT {columns} FROM tasks WHERE {clause} ORDER BY {order} LIMIT {limit} OFFSET {offset}"
            ),
            args,
        )
    }
}

/// Why and since when the queue is paused.
#[derive(Debug, Clone, PartialEq)]
pub struct Pause {
    pub reason: Option<String>,
    pub at_ms: i64,
}

/// What [`TaskStore::timings`] measures.
#[derive(Debug, Clone, PartialEq)]
pub struct Timings {
    pub average_wait_ms: Option<f64>,
    pub average_run_ms: Option<f64>,
    pub finished_since: u64,
}

/// The operations of the queue's state machine, one backend each. Every
/// method is one transaction, committed before it returns.
pub trait TaskStore: Send + Sync {
    /// `sqlite` or `postgres` (audit, logs, metrics).
    fn backend(&self) -> &'static str;

    /// The SQLite backend, for what only it has (tests of its group commit).
    fn sqlite(&self) -> Option<&SqliteStore> {
        None
    }

    /// Run `body` as one transaction beside the tasks, committed when it
    /// returns true (see [`QueueStore::transaction`]).
    fn transaction_dyn(&self, now: i64, body: &mut dyn FnMut(&mut Txn<'_>) -> bool) -> Result<()>;

    /// Woken whenever a task may have become ready (on this node or, for a
    /// shared database, any node), so idle workers need not poll.
    fn ready_signal(&self) -> &tokio::sync::Notify;

    /// Woken whenever a task settles, is cancelled, re-queued or reports
    /// progress. Register (`Notified::enable`) before reading the task.
    fn change_signal(&self) -> &tokio::sync::Notify;

    /// Enforce `quotas` from now on (the defaults apply until then).
    fn set_quotas(&self, quotas: Quotas);

    /// Delete tasks that finished before `before` (completed, failed,
    /// cancelled), and tasks waiting for input since before then; returns how
    /// many.
    fn purge_finished(&self, before: i64) -> Result<u64>;

    /// Accept a task. With an idempotency key already used for the same work,
    /// returns the existing task (`false`: not new). Returns once the task is
    /// durable.
    fn submit(&self, new: NewTask, now: i64) -> Result<(Task, bool)>;

    /// Accept many tasks in one transaction: all or none.
    fn submit_batch(&self, tasks: Vec<NewTask>, now: i64) -> Result<Vec<(Task, bool)>>;

    fn get(&self, id: &str) -> Result<Task>;

    /// Hand the next ready task that `tools` covers (`None` = any tool) to
    /// `worker` until `lease_until`. Nothing while the queue is paused.
    fn claim(
        &self,
        worker: &str,
        tools: Option<&[String]>,
        lease_until: i64,
        now: i64,
    ) -> Result<Option<Claim>> {
        self.claim_as(worker, None, tools, lease_until, now)
    }

    /// [`Self::claim`] for a worker of `remote_peer` (`None`: this node's).
    fn claim_as(
        &self,
        worker: &str,
        remote_peer: Option<&str>,
        tools: Option<&[String]>,
        lease_until: i64,
        now: i64,
    ) -> Result<Option<Claim>>;

    /// Renew the lease of attempt `attempt` of `id`.
    fn heartbeat(&self, id: &str, attempt: u32, lease_until: i64) -> Result<Lease>;

    /// Record progress of a running attempt (ignored when the attempt is stale).
    fn progress(
        &self,
        id: &str,
        attempt: u32,
        progress: f64,
        total: Option<f64>,
        message: Option<&str>,
    ) -> Result<bool>;

    /// Attempt `attempt` of `id` succeeded. `false` when that attempt no
    /// longer owns the task (so the result is discarded: exactly one
    /// completion per task).
    fn complete(&self, id: &str, attempt: u32, result: &Value, now: i64) -> Result<bool> {
        let settled = self.settle(id, attempt, &AttemptOutcome::Completed(result.clone()), now)?;
        Ok(matches!(settled, Settled::Recorded(_)))
    }

    /// Attempt `attempt` of `id` failed. With attempts left and `retryable`,
    /// the task goes back to the queue after its backoff; otherwise it fails.
    /// `None` when the attempt no longer owns the task.
    fn fail(
        &self,
        id: &str,
        attempt: u32,
        error: &str,
        retryable: bool,
        now: i64,
    ) -> Result<Option<TaskState>> {
        self.fail_with_result(id, attempt, error, None, retryable, now)
    }

    /// [`Self::fail`], keeping the tool's error result (an `isError`
    /// CallToolResult) as the task's result.
    fn fail_with_result(
        &self,
        id: &str,
        attempt: u32,
        error: &str,
        result: Option<&Value>,
        retryable: bool,
        now: i64,
    ) -> Result<Option<TaskState>> {
        let outcome = AttemptOutcome::Failed {
            error: error.to_string(),
            retryable,
            result: result.cloned(),
        };
        Ok(match self.settle(id, attempt, &outcome, now)? {
            Settled::Recorded(state) => Some(state),
            Settled::AlreadyRecorded | Settled::Stale => None,
        })
    }

    /// Record how attempt `attempt` of `id` ended. Only the attempt holding
    /// the task is recorded; a repeat of an outcome already recorded for this
    /// same attempt is `AlreadyRecorded`, anything else `Stale`.
    fn settle(&self, id: &str, attempt: u32, outcome: &AttemptOutcome, now: i64)
    -> Result<Settled>;

    /// The tools of tasks ready to run at `now`, at most `limit` names.
    fn ready_tools(&self, now: i64, limit: u32) -> Result<Vec<String>>;

    /// Queued tasks per tool (at most `limit` tools, the largest backlogs).
    fn backlog(&self, limit: u32) -> Result<Vec<(String, u64)>>;

    /// Give back attempt `attempt` of `id` unrun: ready again at once, the
    /// attempt does not count against `max_attempts`.
    fn release(&self, id: &str, attempt: u32) -> Result<bool>;

    /// Re-queue (or fail, when out of attempts) every running task whose
    /// lease ended before `now`. Returns the ids touched.
    fn expire_leases(&self, now: i64) -> Result<Vec<String>>;

    /// Cancel a queued or running task. A running attempt learns it at its
    /// next heartbeat, and its completion is then refused.
    fn cancel(&self, id: &str, reason: Option<&str>, now: i64) -> Result<Task>;

    /// The client answered some of a parked task's requests (see
    /// docs/queue.md); once nothing is pending the task is queued again.
    fn provide_input(&self, id: &str, responses: &Map<String, Value>) -> Result<Task>;

    /// Put a failed (or cancelled) task back in the queue with
    /// `extra_attempts` more attempts.
    fn retry(&self, id: &str, extra_attempts: u32) -> Result<Task>;

    /// Change a task's priority; returns the old one.
    fn set_priority(&self, id: &str, priority: f64) -> Result<f64>;

    /// How many ready tasks run before `id` (0 = next), `None` unless queued.
    fn position(&self, id: &str) -> Result<Option<u64>>;

    fn pause(&self, paused: bool) -> Result<()> {
        self.set_pause(paused.then_some(Pause {
            reason: None,
            at_ms: 0,
        }))
    }

    /// Pause (with why and when) or resume (`None`). Kept across restarts.
    fn set_pause(&self, pause: Option<Pause>) -> Result<()>;

    /// Why and since when the queue is paused; `None` when it is not.
    fn paused(&self) -> Result<Option<Pause>>;

    /// Mean wait and run times over the last 1,000 finished tasks, and how
    /// many finished since `since`.
    fn timings(&self, since: i64) -> Result<Timings>;

    /// At start-up, before any worker runs: the running attempts this node
    /// held when it stopped count as failed attempts. (A shared database
    /// cannot tell them from other nodes' live ones, so there it does
    /// nothing: their leases lapse instead.)
    fn requeue_interrupted(&self, now: i64) -> Result<Vec<String>>;

    /// At start-up: attempts held by other nodes' workers get until at least
    /// `lease_until` to heartbeat again. Returns the ids.
    fn extend_remote_leases(&self, lease_until: i64) -> Result<Vec<String>>;

    /// Keep the outcome of attempt `attempt` of `owner`'s task `id` until the
    /// owner answers it (the P2P mesh).
    fn outbox_put(
        &self,
        owner: &str,
        id: &str,
        attempt: u32,
        outcome: &AttemptOutcome,
        now: i64,
    ) -> Result<()>;

    /// The outcomes waiting for `owner`'s answer, oldest first.
    fn outbox(&self, owner: &str) -> Result<Vec<(AttemptRef, AttemptOutcome)>>;

    /// One waiting outcome.
    fn outbox_get(&self, owner: &str, attempt: &AttemptRef) -> Result<Option<AttemptOutcome>>;

    /// The owner answered: forget the outcome.
    fn outbox_remove(&self, owner: &str, id: &str, attempt: u32) -> Result<()>;

    /// Delete the tasks in `states` (not running ones). Returns how many.
    fn clear(&self, states: &[TaskState]) -> Result<u64>;

    /// Tasks in queue order, filtered, one page; and how many match.
    fn list(&self, filter: &ListFilter, offset: u64, limit: u64) -> Result<(Vec<Task>, u64)>;

    /// How many tasks are in each state.
    fn counts(&self) -> Result<Vec<(TaskState, u64)>>;
}

/// The queue's store: one backend behind the [`TaskStore`] seam. It derefs
/// to the backend, so `store.submit(..)` is the backend's.
pub struct QueueStore {
    backend: Box<dyn TaskStore>,
}

impl QueueStore {
    /// Open (or create) the SQLite queue at `path`.
    pub fn open(path: &std::path::Path) -> Result<Self> {
        Ok(Self::with_backend(Box::new(SqliteStore::open(path)?)))
    }

    /// A queue that lives in memory (tests, benchmarks of the logic alone).
    pub fn in_memory() -> Result<Self> {
        Ok(Self::with_backend(Box::new(SqliteStore::in_memory()?)))
    }

    pub fn with_backend(backend: Box<dyn TaskStore>) -> Self {
        Self { backend }
    }

    /// Resolves when a task may have become ready (submitted, retried, queue
    /// resumed, a lease expired). Idle workers wait on it next to their poll.
    pub async fn ready(&self) {
        self.backend.ready_signal().notified().await
    }

    /// Run `body` as one transaction beside the tasks, for a controller that
    /// keeps its own tables there (workflows): what it reads, writes (through
    /// [`Txn::conn`]) and submits commits together or not at all. Committed
    /// only when `body` returns `Ok`.
    pub fn transaction<T, E: From<StoreError>>(
        &self,
        now: i64,
        body: impl FnOnce(&mut Txn<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut body = Some(body);
        let mut out = None;
        let done = self.backend.transaction_dyn(now, &mut |txn| {
            let Some(body) = body.take() else {
                return false; // a backend never runs it twice; refuse to commit if one did
            };
            let result = body(txn);
            let commit = result.is_ok();
            out = Some(result);
            commit
        });
        match (done, out) {
            // The body failed: its error, whatever the rollback said.
            (_, Some(Err(e))) => Err(e),
            (Ok(()), Some(Ok(value))) => Ok(value),
            (Err(e), _) => Err(e.into()),
            (Ok(()), None) => Err(StoreError::Invalid(
                "the transaction ended without running its body".into(),
            )
            .into()),
        }
    }
}

/// One open transaction beside the tasks ([`QueueStore::transaction`]).
pub struct Txn<'a> {
    inner: &'a mut dyn TxnBackend,
}

/// What a backend's open transaction offers [`Txn`].
pub trait TxnBackend {
    fn sql(&self) -> &dyn Sql;
    fn now(&self) -> i64;
    fn room(&self) -> u64;
    fn submit(&mut self, new: NewTask) -> Result<(Task, bool)>;
    fn get(&self, id: &str) -> Result<Option<Task>>;
    fn cancel(&mut self, id: &str, reason: &str) -> Result<Option<Task>>;
}

impl<'a> Txn<'a> {
    pub(crate) fn new(inner: &'a mut dyn TxnBackend) -> Self {
        Self { inner }
    }

    /// The connection, for the caller's own tables (portable SQL: see
    /// [`crate::sql`]).
    pub fn conn(&self) -> &dyn Sql {
        self.inner.sql()
    }

    /// The transaction's clock: the `now` it was opened with, or on
    /// PostgreSQL the database's (one clock for every node's controller).
    pub fn now(&self) -> i64 {
        self.inner.now()
    }

    /// More tasks that fit under `[queue] max_queued` in this transaction.
    pub fn room(&self) -> u64 {
        self.inner.room()
    }

    /// Submit a task as [`TaskStore::submit`] does, inside this transaction.
    pub fn submit(&mut self, new: NewTask) -> Result<(Task, bool)> {
        self.inner.submit(new)
    }

    /// The task `id`, if it exists.
    pub fn get(&self, id: &str) -> Result<Option<Task>> {
        self.inner.get(id)
    }

    /// Cancel a queued or running task as [`TaskStore::cancel`] does; a task
    /// already finished (or gone) is left as it is (`None`).
    pub fn cancel(&mut self, id: &str, reason: &str) -> Result<Option<Task>> {
        self.inner.cancel(id, reason)
    }
}

impl Deref for QueueStore {
    type Target = dyn TaskStore;

    fn deref(&self) -> &Self::Target {
        &*self.backend
    }
}

/// `Ok` when `allowed`; otherwise why `task`'s state refuses the change.
pub(crate) fn ensure(task: &Task, allowed: bool, what: &str) -> Result<()> {
    if allowed {
        return Ok(());
    }
    Err(StoreError::WrongState {
        id: task.id.clone(),
        state: task.state.as_str(),
        what: what.into(),
    })
}

pub(crate) fn check_priority(priority: f64) -> Result<()> {
    if priority.is_finite() && priority > 0.0 {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "priority must be a positive number (higher runs first; the default is 1.0), not {priority}"
        )))
    }
}

pub(crate) fn validate(new: &NewTask) -> Result<()> {
    let invalid = |m: String| Err(StoreError::Invalid(m));
    if new.id.as_deref().is_some_and(|id| id.trim().is_empty()) {
        return invalid("task_id must not be empty; leave it out to get a generated one".into());
    }
    if new.tool.trim().is_empty() {
        return invalid("the tool to run (task_type) must not be empty".into());
    }
    if !new.arguments.is_object() {
        return invalid("the payload (the tool's arguments) must be a JSON object".into());
    }
    check_priority(new.priority)?;
    if new.tags.iter().any(|t| t.trim().is_empty()) {
        return invalid("tags must be non-empty strings".into());
    }
    if new.timeout_ms == Some(0) {
        return invalid("timeout must be at least 1".into());
    }
    if new.max_attempts == 0 {
        return invalid("max_attempts must be at least 1".into());
    }
    Ok(())
}

/// An outcome whose result is over `max` bytes of JSON becomes a failure
/// naming the limit (not retried: the tool would answer the same again).
pub(crate) fn outcome_too_large(outcome: &AttemptOutcome, max: u64) -> Option<AttemptOutcome> {
    let result = match outcome {
        AttemptOutcome::Completed(result) => result,
        AttemptOutcome::Failed {
            result: Some(result),
            ..
        } => result,
        AttemptOutcome::Failed { result: None, .. } => return None,
        AttemptOutcome::InputRequired { requests } => requests,
    };
    let size = result.to_string().len() as u64;
    (size > max).then(|| AttemptOutcome::Failed {
        error: format!(
            "the result is {size} bytes of JSON, over this queue's limit of {max} ([queue] max_result_bytes); have the tool return less, or write the data somewhere and return a reference"
        ),
        retryable: false,
        result: None,
    })
}

/// How long a failed attempt waits before its task is ready again:
/// `backoff_ms` doubled per attempt so far, at most an hour.
pub(crate) fn retry_backoff_ms(task: &Task) -> i64 {
    task.backoff_ms
        .saturating_mul(1 << task.attempt.saturating_sub(1).min(20))
        .min(3_600_000) as i64
}

/// The `paused` setting as stored: the pause as JSON, or `false`.
pub(crate) fn pause_setting(pause: Option<&Pause>) -> String {
    match pause {
        Some(p) => serde_json::json!({"reason": p.reason, "at_ms": p.at_ms}).to_string(),
        None => "false".into(),
    }
}

/// The pause a stored `paused` setting describes (`None`: not paused).
pub(crate) fn pause_from_setting(value: Option<&str>) -> Option<Pause> {
    match value {
        None | Some("false") => None,
        Some(text) => {
            let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
            Some(Pause {
                reason: v["reason"].as_str().map(String::from),
                at_ms: v["at_ms"].as_i64().unwrap_or(0),
            })
        }
    }
}

/// Every state with its count, from (state name, count) rows.
pub(crate) fn counts_by_state(rows: &[(String, i64)]) -> Vec<(TaskState, u64)> {
    TaskState::ALL
        .into_iter()
        .map(|s| {
            let n = rows
                .iter()
                .find(|(name, _)| name == s.as_str())
                .map_or(0, |(_, n)| *n as u64);
            (s, n)
        })
        .collect()
}

/// What answering a parked task does ([`TaskStore::provide_input`]).
pub(crate) struct Answered {
    /// The requests still unanswered.
    pub pending: Map<String, Value>,
    /// Every answer so far, as JSON for the next attempt.
    pub answers: String,
    /// Nothing is pending: the task is ready again.
    pub ready: bool,
}

/// Apply `responses` to `task` (waiting for input): answers to pending
/// requests are kept, the requests they answer removed, other keys ignored.
/// Refused when the answers would exceed `max_payload_bytes`.
pub(crate) fn answer(
    task: &Task,
    responses: &Map<String, Value>,
    max_payload_bytes: u64,
) -> Result<Answered> {
    ensure(
        task,
        task.state == TaskState::WaitingInput,
        "only a task waiting for input takes answers",
    )?;
    let mut pending = match &task.input_requests {
        Some(Value::Object(map)) => map.clone(),
        _ => Default::default(),
    };
    let mut answers = match &task.input_responses {
        Some(Value::Object(map)) => map.clone(),
        _ => Default::default(),
    };
    for (key, answer) in responses {
        if pending.remove(key).is_some() {
            answers.insert(key.clone(), answer.clone());
        }
    }
    let answers = Value::Object(answers).to_string();
    if answers.len() as u64 > max_payload_bytes {
        return Err(StoreError::Invalid(format!(
            "the task's answers would be {} bytes of JSON, over this queue's limit of {max_payload_bytes} ([queue] max_payload_bytes)",
            answers.len()
        )));
    }
    let ready = pending.is_empty();
    Ok(Answered {
        pending,
        answers,
        ready,
    })
}
