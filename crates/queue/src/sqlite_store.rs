//! The SQLite backend ([`SqliteStore`]): one table of tasks, one of queue settings. Every
//! change is one transaction, committed (WAL, `synchronous = FULL`) before the
//! call returns, so an accepted task survives `kill -9` and power loss.
//!
//! Times are milliseconds since the Unix epoch and are passed in, so the state
//! machine can be driven by a test clock.
//!
//! Concurrent [`SqliteStore::submit`]s share a transaction (group commit,
//! `crate::group_commit`): each still returns only once its task is durably
//! committed, with the outcome it would have had alone.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::Value;

use crate::group_commit::GroupCommit;
use crate::remote::AttemptRef;
use crate::sql::{Dialect, Sql};
use crate::store::{
    Answered, ListFilter, Pause, Result, StoreError, TaskStore, Timings, Txn, TxnBackend, answer,
    check_priority, counts_by_state, ensure, outcome_too_large, pause_from_setting, pause_setting,
    retry_backoff_ms, validate,
};
use crate::{AttemptOutcome, Claim, Lease, NewTask, Settled, Task, TaskState};
use mcpplus_policy::config::queue::Quotas;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tasks (
    seq              INTEGER PRIMARY KEY AUTOINCREMENT,
    id               TEXT NOT NULL UNIQUE,
    tool             TEXT NOT NULL,
    arguments        TEXT NOT NULL,
    priority         REAL NOT NULL,
    tags             TEXT NOT NULL,
    metadata         TEXT NOT NULL,
    timeout_ms       INTEGER,
    max_attempts     INTEGER NOT NULL,
    backoff_ms       INTEGER NOT NULL,
    idempotency_key  TEXT UNIQUE,
    state            TEXT NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    worker           TEXT,
    lease_until      INTEGER,
    not_before       INTEGER NOT NULL DEFAULT 0,
    progress         REAL,
    progress_total   REAL,
    progress_message TEXT,
    result           TEXT,
    error            TEXT,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER,
    retries          INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS tasks_ready ON tasks(state, priority DESC, seq);
CREATE INDEX IF NOT EXISTS tasks_lease ON tasks(state, lease_until);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
-- Outcomes this node's workers finished for tasks other nodes own, kept until
-- the owner answers (crate::pull).
CREATE TABLE IF NOT EXISTS outbox (
    owner      TEXT NOT NULL,
    id         TEXT NOT NULL,
    attempt    INTEGER NOT NULL,
    outcome    TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (owner, id, attempt)
);
";

/// Columns added after the first release, with their definitions: a file
/// written by an older build gets them when opened.
const ADDED_COLUMNS: &[(&str, &str)] = &[
    // The peer that holds (or last held) the attempt; NULL for this node's workers.
    ("remote_peer", "TEXT"),
    // The attempt whose own outcome (complete or fail) was recorded, so a
    // repeated report of it is told `already_recorded`, not `stale`.
    ("settled_attempt", "INTEGER"),
    // A parked task's unanswered requests to the client (a JSON object by key).
    ("input_requests", "TEXT"),
    // The client's answers so far (a JSON object by key), for the next attempt.
    ("input_responses", "TEXT"),
    // When the task parked in `waiting_input` (it expires like a finished task).
    ("waiting_since", "INTEGER"),
];

const COLUMNS: &str = "id, tool, arguments, priority, tags, metadata, timeout_ms, max_attempts, \
    backoff_ms, idempotency_key, state, attempt, worker, lease_until, not_before, progress, \
    progress_total, progress_message, result, error, created_at, started_at, finished_at, retries, \
    remote_peer, input_requests, input_responses";

pub struct SqliteStore {
    db: Mutex<Connection>,
    /// Woken whenever a task may have become ready, so idle workers need not poll.
    ready: tokio::sync::Notify,
    /// Woken whenever a task settles, is cancelled, re-queued or reports
    /// progress, so a caller waiting for one task's outcome need not poll.
    changed: tokio::sync::Notify,
    quotas: Mutex<Quotas>,
    /// Single submits waiting to share the next commit ([`Self::submit`]).
    submits: GroupCommit<(NewTask, i64), Result<(Task, bool)>>,
}

impl SqliteStore {
    /// Open (or create) the queue at `path`.
    pub fn open(path: &Path) -> Result<Self> {
        Self::setup(Connection::open(path)?)
    }

    /// A queue that lives in memory (tests, benchmarks of the logic alone).
    pub fn in_memory() -> Result<Self> {
        Self::setup(Connection::open_in_memory()?)
    }

    fn setup(db: Connection) -> Result<Self> {
        // First, so that setting up waits for another connection (a second
        // process reading the file) instead of failing at once.
        db.busy_timeout(std::time::Duration::from_secs(10))?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.execute_batch(SCHEMA)?;
        add_missing_columns(&db)?;
        Ok(Self {
            db: Mutex::new(db),
            ready: tokio::sync::Notify::new(),
            changed: tokio::sync::Notify::new(),
            quotas: Mutex::new(Quotas::default()),
            submits: GroupCommit::new(),
        })
    }

    /// The signal behind [`Self::ready`], for waiters that must register
    /// before they look (`Notified::enable`) so no wake-up is missed.
    pub fn ready_signal(&self) -> &tokio::sync::Notify {
        &self.ready
    }

    fn wake(&self) {
        self.ready.notify_waiters();
    }

    /// Enforce `quotas` from now on (the defaults apply until then).
    pub fn set_quotas(&self, quotas: Quotas) {
        *self.quotas.lock().unwrap_or_else(|e| e.into_inner()) = quotas;
    }

    fn quotas(&self) -> Quotas {
        *self.quotas.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Delete tasks that finished before `before` (completed, failed,
    /// cancelled), and tasks waiting for input since before then; returns how
    /// many.
    pub fn purge_finished(&self, before: i64) -> Result<u64> {
        let n = self.db().execute(
            "DELETE FROM tasks WHERE (state IN ('completed', 'failed', 'cancelled')
               AND finished_at IS NOT NULL AND finished_at < ?1)
               OR (state = 'waiting_input' AND waiting_since IS NOT NULL AND waiting_since < ?1)",
            [before],
        )?;
        Ok(n as u64)
    }

    /// The signal woken when a task settles, is cancelled, re-queued or
    /// reports progress. Register (`Notified::enable`) before reading the task.
    pub fn change_signal(&self) -> &tokio::sync::Notify {
        &self.changed
    }

    fn changed(&self) {
        self.changed.notify_waiters();
    }

    fn db(&self) -> MutexGuard<'_, Connection> {
        self.db.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Accept a task. With an idempotency key already used for the same work,
    /// returns the existing task (`false`: not new).
    ///
    /// Returns once the task is committed to disk. Submits from several
    /// threads at once share one transaction and one fsync (group commit):
    /// each runs in its own savepoint, in arrival order, so each gets exactly
    /// the outcome it would have had alone and one's error (a quota, a key
    /// conflict, invalid input) leaves the others' tasks in. Only a failed
    /// commit fails them all.
    pub fn submit(&self, new: NewTask, now: i64) -> Result<(Task, bool)> {
        self.submits
            .run((new, now), |batch| self.submit_together(batch))
            .unwrap_or_else(|| {
                Err(sql_error(
                    rusqlite::ffi::SQLITE_ABORT,
                    "the transaction holding this submit did not finish (it panicked); submit again"
                        .into(),
                ))
            })
    }

    /// One transaction, one commit, for a batch of [`Self::submit`]s: one
    /// result each, in order.
    fn submit_together(&self, batch: Vec<(NewTask, i64)>) -> Vec<Result<(Task, bool)>> {
        let n = batch.len();
        let mut db = self.db();
        let committed = (|| {
            let mut tx = db.transaction()?;
            // Counted once; each insert takes its task out of it, so each
            // submit sees the ones before it in the batch.
            let mut room = Room::of(&tx, self.quotas())?;
            let mut results = Vec::with_capacity(n);
            for (new, now) in batch {
                let sp = tx.savepoint()?;
                let room_before = room.tasks;
                let result = insert(&sp, new, now, &mut room);
                if result.is_ok() {
                    sp.commit()?;
                } else {
                    // Undo this submit alone (`finish` rolls back to the
                    // savepoint). Should even that fail, the `?` drops the
                    // whole transaction rather than commit a half-undone one.
                    room.tasks = room_before;
                    sp.finish()?;
                }
                results.push(result);
            }
            tx.commit()?;
            Ok::<_, StoreError>(results)
        })();
        drop(db);
        match committed {
            Ok(results) => {
                if results.iter().any(|r| matches!(r, Ok((_, true)))) {
                    self.wake();
                }
                results
            }
            // Nothing of the batch is in: every submit gets the error.
            Err(e) => (0..n).map(|_| Err(copy_error(&e))).collect(),
        }
    }

    /// Whether a group of submits is being committed, and how many submits
    /// wait for the next one.
    #[cfg(test)]
    pub(crate) fn submits_waiting(&self) -> (bool, usize) {
        self.submits.waiting()
    }

    /// Accept many tasks in one transaction: all or none.
    pub fn submit_batch(&self, tasks: Vec<NewTask>, now: i64) -> Result<Vec<(Task, bool)>> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let mut room = Room::of(&tx, self.quotas())?;
        let submitted = tasks
            .into_iter()
            .map(|t| insert(&tx, t, now, &mut room))
            .collect::<Result<Vec<_>>>()?;
        tx.commit()?;
        drop(db);
        self.wake();
        Ok(submitted)
    }

    pub fn get(&self, id: &str) -> Result<Task> {
        get(&self.db(), id)
    }
}

/// Insert one task inside `tx` (see [`SqliteStore::submit`]).
/// What one transaction may still add, counted once per transaction.
struct Room {
    /// More tasks that fit under `max_queued`.
    tasks: u64,
    quotas: Quotas,
}

impl Room {
    fn of(tx: &Connection, quotas: Quotas) -> Result<Self> {
        let live: i64 = tx.query_row(
            "SELECT COUNT(*) FROM tasks WHERE state IN ('queued', 'running', 'waiting_input')",
            [],
            |r| r.get(0),
        )?;
        Ok(Self {
            tasks: quotas.max_queued.saturating_sub(live as u64),
            quotas,
        })
    }
}

fn insert(tx: &Connection, new: NewTask, now: i64, room: &mut Room) -> Result<(Task, bool)> {
    validate(&new)?;
    // Serialised once: measured for the quota, then stored.
    let arguments = new.arguments.to_string();
    let metadata = new.metadata.to_string();
    let payload = arguments.len() + metadata.len();
    if payload as u64 > room.quotas.max_payload_bytes {
        return Err(StoreError::Invalid(format!(
            "the task's arguments and metadata are {payload} bytes of JSON, over this queue's limit of {} ([queue] max_payload_bytes); pass a reference (a path, a URL) instead of the data",
            room.quotas.max_payload_bytes
        )));
    }
    if let Some(key) = &new.idempotency_key
        && let Some(existing) = tx
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM tasks WHERE idempotency_key = ?1"
            ))?
            .query_row([key], task_from_row)
            .optional()?
    {
        if existing.tool != new.tool || existing.arguments != new.arguments {
            return Err(StoreError::KeyConflict {
                key: key.clone(),
                id: existing.id,
            });
        }
        return Ok((existing, false));
    }
    if room.tasks == 0 {
        return Err(StoreError::Invalid(format!(
            "the queue already holds {} queued or running tasks, its limit ([queue] max_queued); wait for some to finish, or cancel or clear some",
            room.quotas.max_queued
        )));
    }
    let id = match &new.id {
        Some(id) => id.clone(),
        None => generated_id(tx)?,
    };
    // Cached statements: a submit is parsed by SQLite once per connection.
    let inserted = tx
        .prepare_cached(
            "INSERT INTO tasks (id, tool, arguments, priority, tags, metadata, timeout_ms,
                max_attempts, backoff_ms, idempotency_key, state, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'queued', ?11)
             ON CONFLICT(id) DO NOTHING",
        )?
        .execute(params![
            id,
            new.tool,
            arguments,
            new.priority,
            serde_json::to_string(&new.tags).unwrap_or_default(),
            metadata,
            new.timeout_ms.map(|t| t as i64),
            new.max_attempts,
            new.backoff_ms as i64,
            new.idempotency_key,
            now,
        ])?;
    if inserted == 0 {
        return Err(StoreError::Invalid(format!(
            "a task with id `{id}` already exists; choose another id, or leave it out to get a generated one"
        )));
    }
    room.tasks -= 1;
    Ok((get(tx, &id)?, true))
}

/// One open transaction on the queue's file ([`crate::QueueStore::transaction`]).
struct SqliteTxn<'a> {
    tx: rusqlite::Transaction<'a>,
    room: Room,
    now: i64,
    submitted: bool,
    changed: bool,
}

impl TxnBackend for SqliteTxn<'_> {
    fn sql(&self) -> &dyn Sql {
        &*self.tx
    }

    fn now(&self) -> i64 {
        self.now
    }

    fn room(&self) -> u64 {
        self.room.tasks
    }

    fn submit(&mut self, new: NewTask) -> Result<(Task, bool)> {
        let submitted = insert(&self.tx, new, self.now, &mut self.room)?;
        self.submitted |= submitted.1;
        Ok(submitted)
    }

    fn get(&self, id: &str) -> Result<Option<Task>> {
        match get(&self.tx, id) {
            Ok(task) => Ok(Some(task)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn cancel(&mut self, id: &str, reason: &str) -> Result<Option<Task>> {
        match TxnBackend::get(self, id)? {
            Some(task) if !task.state.is_terminal() => {
                self.changed = true;
                cancel(&self.tx, id, Some(reason), self.now).map(Some)
            }
            _ => Ok(None),
        }
    }
}

fn cancel(tx: &Connection, id: &str, reason: Option<&str>, now: i64) -> Result<Task> {
    let task = get(tx, id)?;
    ensure(
        &task,
        !task.state.is_terminal(),
        "only queued or running tasks (or tasks waiting for input) can be cancelled",
    )?;
    tx.execute(
        "UPDATE tasks SET state = 'cancelled', error = ?2, finished_at = ?3, lease_until = NULL
         WHERE id = ?1",
        params![id, reason.unwrap_or("cancelled"), now],
    )?;
    get(tx, id)
}

impl SqliteStore {
    /// [`Self::claim`] for a worker of `remote_peer` (`None`: this node's).
    /// A remote attempt survives this node's restart by one lease of grace
    /// ([`Self::extend_remote_leases`]) instead of being re-queued at once.
    pub fn claim_as(
        &self,
        worker: &str,
        remote_peer: Option<&str>,
        tools: Option<&[String]>,
        lease_until: i64,
        now: i64,
    ) -> Result<Option<Claim>> {
        let mut db = self.db();
        let tx = db.transaction()?;
        if paused(&tx)? {
            return Ok(None);
        }
        let tools_json = tools.map(|t| serde_json::to_string(t).unwrap_or_default());
        let id: Option<String> = tx
            .query_row(
                "SELECT id FROM tasks
                 WHERE state = 'queued' AND not_before <= ?1
                   AND (?2 IS NULL OR tool IN (SELECT value FROM json_each(?2)))
                 ORDER BY priority DESC, seq ASC LIMIT 1",
                params![now, tools_json],
                |r| r.get(0),
            )
            .optional()?;
        let Some(id) = id else { return Ok(None) };
        tx.execute(
            "UPDATE tasks SET state = 'running', attempt = attempt + 1, worker = ?2,
                lease_until = ?3, started_at = ?4, progress = NULL, progress_total = NULL,
                progress_message = NULL, remote_peer = ?5
             WHERE id = ?1",
            params![id, worker, lease_until, now, remote_peer],
        )?;
        let task = get(&tx, &id)?;
        tx.commit()?;
        Ok(Some(Claim {
            attempt: task.attempt,
            task,
        }))
    }

    /// Renew the lease of attempt `attempt` of `id`.
    pub fn heartbeat(&self, id: &str, attempt: u32, lease_until: i64) -> Result<Lease> {
        let db = self.db();
        let renewed = db.execute(
            "UPDATE tasks SET lease_until = ?3 WHERE id = ?1 AND attempt = ?2 AND state = 'running'",
            params![id, attempt, lease_until],
        )?;
        if renewed == 1 {
            return Ok(Lease::Renewed);
        }
        let state: Option<(String, u32)> = db
            .query_row(
                "SELECT state, attempt FROM tasks WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(match state {
            Some((s, a)) if s == "cancelled" && a == attempt => Lease::Cancelled,
            _ => Lease::Lost,
        })
    }

    /// Record progress of a running attempt (ignored when the attempt is stale).
    pub fn progress(
        &self,
        id: &str,
        attempt: u32,
        progress: f64,
        total: Option<f64>,
        message: Option<&str>,
    ) -> Result<bool> {
        let changed = self.db().execute(
            "UPDATE tasks SET progress = ?3, progress_total = ?4, progress_message = ?5
             WHERE id = ?1 AND attempt = ?2 AND state = 'running'",
            params![id, attempt, progress, total, message],
        )?;
        if changed == 1 {
            self.changed();
        }
        Ok(changed == 1)
    }

    /// Record how attempt `attempt` of `id` ended. Only the attempt holding
    /// the task is recorded; a repeat of an outcome already recorded for this
    /// same attempt (a retry after a lost answer) is `AlreadyRecorded`, and
    /// anything else (another attempt, a lapsed lease, a cancelled or cleared
    /// task) is `Stale`.
    pub fn settle(
        &self,
        id: &str,
        attempt: u32,
        outcome: &AttemptOutcome,
        now: i64,
    ) -> Result<Settled> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let task = match get(&tx, id) {
            Ok(task) => task,
            Err(StoreError::NotFound(_)) => return Ok(Settled::Stale),
            Err(e) => return Err(e),
        };
        if task.state != TaskState::Running || task.attempt != attempt {
            let settled: Option<u32> = tx.query_row(
                "SELECT settled_attempt FROM tasks WHERE id = ?1",
                [id],
                |r| r.get(0),
            )?;
            return Ok(if settled == Some(attempt) {
                Settled::AlreadyRecorded
            } else {
                Settled::Stale
            });
        }
        let oversized = outcome_too_large(outcome, self.quotas().max_result_bytes);
        let outcome = oversized.as_ref().unwrap_or(outcome);
        let state = match outcome {
            AttemptOutcome::Completed(result) => {
                tx.execute(
                    "UPDATE tasks SET state = 'completed', result = ?2, error = NULL,
                        finished_at = ?3, lease_until = NULL
                     WHERE id = ?1",
                    params![id, result.to_string(), now],
                )?;
                TaskState::Completed
            }
            AttemptOutcome::Failed {
                error,
                retryable,
                result,
            } => settle_failed_attempt(&tx, &task, error, result.as_ref(), *retryable, now)?,
            // Parked: the attempt number stays used (so this attempt can
            // never complete it), but it does not count against
            // `max_attempts`, as a released grant does not.
            AttemptOutcome::InputRequired { requests } => {
                tx.execute(
                    "UPDATE tasks SET state = 'waiting_input', input_requests = ?2,
                        worker = NULL, lease_until = NULL, waiting_since = ?3,
                        max_attempts = max_attempts + 1
                     WHERE id = ?1",
                    params![id, requests.to_string(), now],
                )?;
                TaskState::WaitingInput
            }
        };
        tx.execute(
            "UPDATE tasks SET settled_attempt = ?2 WHERE id = ?1",
            params![id, attempt],
        )?;
        tx.commit()?;
        drop(db);
        if state == TaskState::Queued {
            self.wake();
        }
        self.changed();
        Ok(Settled::Recorded(state))
    }

    /// The tools of tasks ready to run at `now` (queued, not waiting out a
    /// backoff), at most `limit` names: what an owner hints to its peers.
    pub fn ready_tools(&self, now: i64, limit: u32) -> Result<Vec<String>> {
        let db = self.db();
        let mut stmt = db.prepare_cached(
            "SELECT DISTINCT tool FROM tasks WHERE state = 'queued' AND not_before <= ?1 LIMIT ?2",
        )?;
        let tools = stmt
            .query_map(params![now, limit], |r| r.get(0))?
            .collect::<std::result::Result<_, _>>()?;
        Ok(tools)
    }

    /// Queued tasks per tool (at most `limit` tools, the largest backlogs).
    pub fn backlog(&self, limit: u32) -> Result<Vec<(String, u64)>> {
        let db = self.db();
        let mut stmt = db.prepare_cached(
            "SELECT tool, COUNT(*) AS n FROM tasks WHERE state = 'queued'
             GROUP BY tool ORDER BY n DESC LIMIT ?1",
        )?;
        let backlog = stmt
            .query_map([limit], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))?
            .collect::<std::result::Result<_, _>>()?;
        Ok(backlog)
    }

    /// Give back attempt `attempt` of `id` unrun (its grant never reached the
    /// worker, or arrived too late to start safely): the task is ready again
    /// at once and the attempt does not count against `max_attempts`. The
    /// attempt number stays used, so the old grant can never complete.
    pub fn release(&self, id: &str, attempt: u32) -> Result<bool> {
        let released = self.db().execute(
            "UPDATE tasks SET state = 'queued', worker = NULL, lease_until = NULL,
                max_attempts = max_attempts + 1, not_before = 0
             WHERE id = ?1 AND attempt = ?2 AND state = 'running'",
            params![id, attempt],
        )?;
        if released == 1 {
            self.wake();
        }
        Ok(released == 1)
    }

    /// Re-queue (or fail, when out of attempts) every running task whose
    /// lease ended before `now`. Returns the ids touched.
    pub fn expire_leases(&self, now: i64) -> Result<Vec<String>> {
        self.requeue_running(Some(now), now, |attempt| {
            format!("attempt {attempt} lost its lease (the worker stopped or the server restarted)")
        })
    }

    /// Cancel a queued or running task. A running attempt learns it at its
    /// next heartbeat, and its completion is then refused.
    pub fn cancel(&self, id: &str, reason: Option<&str>, now: i64) -> Result<Task> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let task = cancel(&tx, id, reason, now)?;
        tx.commit()?;
        drop(db);
        self.changed();
        Ok(task)
    }

    /// The client answered some of a parked task's requests: `responses` (a
    /// JSON object by key) are kept for the next attempt, the requests they
    /// answer are removed, and keys that answer no pending request are
    /// ignored. Once nothing is pending the task is queued again (ready at
    /// once). Only a `waiting_input` task takes answers.
    pub fn provide_input(
        &self,
        id: &str,
        responses: &serde_json::Map<String, Value>,
    ) -> Result<Task> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let task = get(&tx, id)?;
        let Answered {
            pending,
            answers,
            ready,
        } = answer(&task, responses, self.quotas().max_payload_bytes)?;
        if ready {
            tx.execute(
                "UPDATE tasks SET state = 'queued', input_requests = NULL, input_responses = ?2,
                    waiting_since = NULL, not_before = 0
                 WHERE id = ?1",
                params![id, answers],
            )?;
        } else {
            tx.execute(
                "UPDATE tasks SET input_requests = ?2, input_responses = ?3 WHERE id = ?1",
                params![id, Value::Object(pending).to_string(), answers],
            )?;
        }
        let task = get(&tx, id)?;
        tx.commit()?;
        drop(db);
        if ready {
            self.wake();
        }
        self.changed();
        Ok(task)
    }

    /// Run `body` as one transaction on the queue's file (see
    /// [`crate::QueueStore::transaction`]); committed when it returns true.
    pub fn transaction_dyn(
        &self,
        now: i64,
        body: &mut dyn FnMut(&mut Txn<'_>) -> bool,
    ) -> Result<()> {
        let mut db = self.db();
        let (submitted, changed) = {
            let tx = db.transaction()?;
            let room = Room::of(&tx, self.quotas())?;
            let mut txn = SqliteTxn {
                tx,
                room,
                now,
                submitted: false,
                changed: false,
            };
            if !body(&mut Txn::new(&mut txn)) {
                return Ok(()); // dropped: rolled back
            }
            txn.tx.commit()?;
            (txn.submitted, txn.changed)
        };
        drop(db);
        if submitted {
            self.wake();
        }
        if changed {
            self.changed();
        }
        Ok(())
    }

    /// Put a failed (or cancelled) task back in the queue with `extra_attempts`
    /// more attempts.
    pub fn retry(&self, id: &str, extra_attempts: u32) -> Result<Task> {
        if extra_attempts == 0 {
            return Err(StoreError::Invalid(
                "a retry needs at least one more attempt".into(),
            ));
        }
        let mut db = self.db();
        let tx = db.transaction()?;
        let task = get(&tx, id)?;
        ensure(
            &task,
            matches!(task.state, TaskState::Failed | TaskState::Cancelled),
            "only failed or cancelled tasks can be retried",
        )?;
        tx.execute(
            "UPDATE tasks SET state = 'queued', max_attempts = attempt + ?2, not_before = 0,
                worker = NULL, finished_at = NULL, retries = retries + 1,
                input_requests = NULL, waiting_since = NULL
             WHERE id = ?1",
            params![id, extra_attempts],
        )?;
        let task = get(&tx, id)?;
        tx.commit()?;
        drop(db);
        self.wake();
        Ok(task)
    }

    /// Change a task's priority; returns the old one. Queued tasks move in the
    /// order at once.
    pub fn set_priority(&self, id: &str, priority: f64) -> Result<f64> {
        check_priority(priority)?;
        let mut db = self.db();
        let tx = db.transaction()?;
        let task = get(&tx, id)?;
        ensure(
            &task,
            !task.state.is_terminal(),
            "its priority no longer matters",
        )?;
        tx.execute(
            "UPDATE tasks SET priority = ?2 WHERE id = ?1",
            params![id, priority],
        )?;
        tx.commit()?;
        Ok(task.priority)
    }

    /// How many ready tasks run before `id` (0 = next), `None` unless queued.
    pub fn position(&self, id: &str) -> Result<Option<u64>> {
        let db = self.db();
        let task = get(&db, id)?;
        if task.state != TaskState::Queued {
            return Ok(None);
        }
        let ahead: i64 = db.query_row(
            "SELECT COUNT(*) FROM tasks t, tasks me WHERE me.id = ?1 AND t.state = 'queued'
               AND (t.priority > me.priority OR (t.priority = me.priority AND t.seq < me.seq))",
            [id],
            |r| r.get(0),
        )?;
        Ok(Some(ahead as u64))
    }

    /// Pause (with why and when) or resume (`None`). Kept across restarts.
    pub fn set_pause(&self, pause: Option<Pause>) -> Result<()> {
        let resumed = pause.is_none();
        let value = pause_setting(pause.as_ref());
        self.db().execute(
            "INSERT INTO settings (key, value) VALUES ('paused', ?1)
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [value],
        )?;
        if resumed {
            self.wake();
        }
        Ok(())
    }

    /// Why and since when the queue is paused; `None` when it is not.
    pub fn paused(&self) -> Result<Option<Pause>> {
        pause_state(&self.db())
    }

    /// Mean wait and run times over the last 1,000 finished tasks, and how many
    /// finished since `since`.
    pub fn timings(&self, since: i64) -> Result<Timings> {
        let db = self.db();
        let (wait, run): (Option<f64>, Option<f64>) = db.query_row(
            "SELECT AVG(started_at - created_at), AVG(finished_at - started_at) FROM (
                 SELECT created_at, started_at, finished_at FROM tasks
                 WHERE finished_at IS NOT NULL AND started_at IS NOT NULL
                 ORDER BY finished_at DESC LIMIT 1000)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let recent: i64 = db.query_row(
            "SELECT COUNT(*) FROM tasks WHERE finished_at >= ?1",
            [since],
            |r| r.get(0),
        )?;
        Ok(Timings {
            average_wait_ms: wait,
            average_run_ms: run,
            finished_since: recent as u64,
        })
    }

    /// At start-up, before any worker runs: every task still `running` was
    /// interrupted when the server stopped. Each counts as a failed attempt,
    /// so it runs again (or fails, out of attempts). Returns the ids.
    pub fn requeue_interrupted(&self, now: i64) -> Result<Vec<String>> {
        self.requeue_running(None, now, |attempt| {
            format!("attempt {attempt} was interrupted: the server stopped while it ran")
        })
    }

    /// Settle running attempts as failed (retryable, with `why`): those whose
    /// lease ended before `lease_ended_before`, or all of them with `None`.
    fn requeue_running(
        &self,
        lease_ended_before: Option<i64>,
        now: i64,
        why: impl Fn(u32) -> String,
    ) -> Result<Vec<String>> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let running: Vec<Task> = {
            let mut stmt = tx.prepare(&format!(
                "SELECT {COLUMNS} FROM tasks
                 WHERE state = 'running'
                   AND (?1 IS NULL AND remote_peer IS NULL OR lease_until < ?1)"
            ))?;
            stmt.query_map([lease_ended_before], task_from_row)?
                .collect::<Result<_, _>>()?
        };
        for task in &running {
            settle_failed_attempt(&tx, task, &why(task.attempt), None, true, now)?;
        }
        tx.commit()?;
        drop(db);
        if !running.is_empty() {
            self.wake();
            self.changed();
        }
        Ok(running.into_iter().map(|t| t.id).collect())
    }

    /// At start-up, next to [`Self::requeue_interrupted`]: attempts held by
    /// other nodes' workers may still be running there, so each gets until at
    /// least `lease_until` (one lease from now) to heartbeat again before its
    /// lease lapses. Returns the ids.
    pub fn extend_remote_leases(&self, lease_until: i64) -> Result<Vec<String>> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let ids: Vec<String> = {
            let mut stmt = tx.prepare(
                "SELECT id FROM tasks WHERE state = 'running' AND remote_peer IS NOT NULL",
            )?;
            stmt.query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?
        };
        tx.execute(
            "UPDATE tasks SET lease_until = MAX(COALESCE(lease_until, 0), ?1)
             WHERE state = 'running' AND remote_peer IS NOT NULL",
            [lease_until],
        )?;
        tx.commit()?;
        Ok(ids)
    }

    /// Keep the outcome of attempt `attempt` of `owner`'s task `id` until the
    /// owner answers it.
    pub fn outbox_put(
        &self,
        owner: &str,
        id: &str,
        attempt: u32,
        outcome: &AttemptOutcome,
        now: i64,
    ) -> Result<()> {
        let outcome = serde_json::to_string(outcome)
            .map_err(|e| StoreError::Invalid(format!("an outcome that is not JSON: {e}")))?;
        self.db().execute(
            "INSERT INTO outbox (owner, id, attempt, outcome, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
            params![owner, id, attempt, outcome, now],
        )?;
        Ok(())
    }

    /// The outcomes waiting for `owner`'s answer, oldest first.
    pub fn outbox(&self, owner: &str) -> Result<Vec<(AttemptRef, AttemptOutcome)>> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT id, attempt, outcome FROM outbox WHERE owner = ?1 ORDER BY created_at, id",
        )?;
        let rows: Vec<(String, u32, String)> = stmt
            .query_map([owner], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<Result<_, _>>()?;
        Ok(rows
            .into_iter()
            .filter_map(|(id, attempt, text)| {
                let outcome = serde_json::from_str(&text).ok()?;
                Some((AttemptRef { id, attempt }, outcome))
            })
            .collect())
    }

    /// One waiting outcome.
    pub fn outbox_get(&self, owner: &str, attempt: &AttemptRef) -> Result<Option<AttemptOutcome>> {
        let text: Option<String> = self
            .db()
            .query_row(
                "SELECT outcome FROM outbox WHERE owner = ?1 AND id = ?2 AND attempt = ?3",
                params![owner, attempt.id, attempt.attempt],
                |r| r.get(0),
            )
            .optional()?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    /// The owner answered: forget the outcome.
    pub fn outbox_remove(&self, owner: &str, id: &str, attempt: u32) -> Result<()> {
        self.db().execute(
            "DELETE FROM outbox WHERE owner = ?1 AND id = ?2 AND attempt = ?3",
            params![owner, id, attempt],
        )?;
        Ok(())
    }

    /// Delete the tasks in `states` (running tasks cannot be cleared: cancel
    /// them). Returns how many were deleted.
    pub fn clear(&self, states: &[TaskState]) -> Result<u64> {
        if states.contains(&TaskState::Running) {
            return Err(StoreError::Invalid(
                "running tasks cannot be cleared; cancel them first".into(),
            ));
        }
        let names: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
        let deleted = self.db().execute(
            "DELETE FROM tasks WHERE state IN (SELECT value FROM json_each(?1))",
            [serde_json::to_string(&names).unwrap_or_default()],
        )?;
        Ok(deleted as u64)
    }

    /// Tasks in queue order (ready ones by priority, then the rest by
    /// submission), filtered, one page.
    pub fn list(&self, filter: &ListFilter, offset: u64, limit: u64) -> Result<(Vec<Task>, u64)> {
        let db = self.db();
        let (count, page, args) = filter.statements(COLUMNS, offset, limit, Dialect::Sqlite);
        let total: i64 = db.query_row(&count, rusqlite::params_from_iter(args.iter()), |r| {
            r.get(0)
        })?;
        let mut stmt = db.prepare(&page)?;
        let tasks = stmt
            .query_map(rusqlite::params_from_iter(args.iter()), task_from_row)?
            .collect::<Result<_, _>>()?;
        Ok((tasks, total as u64))
    }

    /// How many tasks are in each state.
    pub fn counts(&self) -> Result<Vec<(TaskState, u64)>> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT state, COUNT(*) FROM tasks GROUP BY state")?;
        let rows: Vec<(String, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok(counts_by_state(&rows))
    }
}

/// A failed attempt: back to the queue after the backoff, or failed for good.
fn settle_failed_attempt(
    tx: &Connection,
    task: &Task,
    error: &str,
    result: Option<&Value>,
    retryable: bool,
    now: i64,
) -> Result<TaskState> {
    let result = result.map(Value::to_string);
    if retryable && task.attempt < task.max_attempts {
        let backoff = retry_backoff_ms(task);
        tx.execute(
            "UPDATE tasks SET state = 'queued', error = ?2, not_before = ?3, worker = NULL,
                lease_until = NULL, result = ?4
             WHERE id = ?1",
            params![task.id, error, now + backoff, result],
        )?;
        Ok(TaskState::Queued)
    } else {
        tx.execute(
            "UPDATE tasks SET state = 'failed', error = ?2, finished_at = ?3, lease_until = NULL,
                result = ?4
             WHERE id = ?1",
            params![task.id, error, now, result],
        )?;
        Ok(TaskState::Failed)
    }
}

fn add_missing_columns(db: &Connection) -> Result<()> {
    let present: Vec<String> = {
        let mut stmt = db.prepare("SELECT name FROM pragma_table_info('tasks')")?;
        stmt.query_map([], |r| r.get(0))?
            .collect::<Result<_, _>>()?
    };
    for (name, definition) in ADDED_COLUMNS {
        if !present.iter().any(|p| p == name) {
            db.execute_batch(&format!("ALTER TABLE tasks ADD COLUMN {name} {definition}"))?;
        }
    }
    Ok(())
}

fn get(db: &Connection, id: &str) -> Result<Task> {
    db.prepare_cached(&format!("SELECT {COLUMNS} FROM tasks WHERE id = ?1"))?
        .query_row([id], task_from_row)
        .optional()?
        .ok_or_else(|| StoreError::NotFound(id.to_string()))
}

fn paused(db: &Connection) -> Result<bool> {
    Ok(pause_state(db)?.is_some())
}

fn pause_state(db: &Connection) -> Result<Option<Pause>> {
    let value: Option<String> = db
        .query_row("SELECT value FROM settings WHERE key = 'paused'", [], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(pause_from_setting(value.as_deref()))
}

/// `task-<n>`, n the sequence number the task will get (never reused, even
/// after tasks are cleared).
/// A fresh id: 128 random bits (SQLite's ChaCha20 generator, seeded by the
/// OS), so nobody can guess another client's task, and a client that chose an
/// id of the same shape can never make generated ids fail: a taken one is
/// simply drawn again.
fn generated_id(db: &Connection) -> Result<String> {
    loop {
        let (id, taken): (String, bool) = db
            .prepare_cached(
                "WITH candidate(id) AS (SELECT 'task-' || lower(hex(randomblob(16))))
                 SELECT id, EXISTS(SELECT 1 FROM tasks WHERE tasks.id = candidate.id) FROM candidate",
            )?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        if !taken {
            return Ok(id);
        }
    }
}

/// A database error with SQLite's result `code`.
fn sql_error(code: std::ffi::c_int, message: String) -> StoreError {
    StoreError::Sql(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(code),
        Some(message),
    ))
}

/// The same error again, for each submit of a batch whose commit failed
/// (errors are not `Clone`).
fn copy_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Sql(rusqlite::Error::SqliteFailure(code, message)) => {
            StoreError::Sql(rusqlite::Error::SqliteFailure(*code, message.clone()))
        }
        other => sql_error(rusqlite::ffi::SQLITE_ERROR, other.to_string()),
    }
}

fn json_column(row: &Row<'_>, index: usize) -> rusqlite::Result<Value> {
    let text: String = row.get(index)?;
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn task_from_row(row: &Row<'_>) -> rusqlite::Result<Task> {
    let state: String = row.get(10)?;
    let result: Option<String> = row.get(18)?;
    Ok(Task {
        id: row.get(0)?,
        tool: row.get(1)?,
        arguments: json_column(row, 2)?,
        priority: row.get(3)?,
        tags: serde_json::from_value(json_column(row, 4)?).unwrap_or_default(),
        metadata: json_column(row, 5)?,
        timeout_ms: row.get::<_, Option<i64>>(6)?.map(|t| t as u64),
        max_attempts: row.get(7)?,
        backoff_ms: row.get::<_, i64>(8)? as u64,
        idempotency_key: row.get(9)?,
        state: TaskState::parse(&state).unwrap_or(TaskState::Failed),
        attempt: row.get(11)?,
        worker: row.get(12)?,
        lease_until_ms: row.get(13)?,
        not_before_ms: row.get(14)?,
        progress: row.get(15)?,
        progress_total: row.get(16)?,
        progress_message: row.get(17)?,
        result: result.and_then(|r| serde_json::from_str(&r).ok()),
        error: row.get(19)?,
        created_ms: row.get(20)?,
        started_ms: row.get(21)?,
        finished_ms: row.get(22)?,
        retries: row.get(23)?,
        remote_peer: row.get(24)?,
        input_requests: row
            .get::<_, Option<String>>(25)?
            .and_then(|r| serde_json::from_str(&r).ok()),
        input_responses: row
            .get::<_, Option<String>>(26)?
            .and_then(|r| serde_json::from_str(&r).ok()),
    })
}

/// The trait is the inherent methods above; `SqliteStore::x(self, ..)`
/// names the inherent one (inherent methods win over trait methods).
impl TaskStore for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }
    fn sqlite(&self) -> Option<&SqliteStore> {
        Some(self)
    }
    fn transaction_dyn(&self, now: i64, body: &mut dyn FnMut(&mut Txn<'_>) -> bool) -> Result<()> {
        SqliteStore::transaction_dyn(self, now, body)
    }
    fn ready_signal(&self) -> &tokio::sync::Notify {
        SqliteStore::ready_signal(self)
    }
    fn change_signal(&self) -> &tokio::sync::Notify {
        SqliteStore::change_signal(self)
    }
    fn set_quotas(&self, quotas: Quotas) {
        SqliteStore::set_quotas(self, quotas)
    }
    fn purge_finished(&self, before: i64) -> Result<u64> {
        SqliteStore::purge_finished(self, before)
    }
    fn submit(&self, new: NewTask, now: i64) -> Result<(Task, bool)> {
        SqliteStore::submit(self, new, now)
    }
    fn submit_batch(&self, tasks: Vec<NewTask>, now: i64) -> Result<Vec<(Task, bool)>> {
        SqliteStore::submit_batch(self, tasks, now)
    }
    fn get(&self, id: &str) -> Result<Task> {
        SqliteStore::get(self, id)
    }
    fn claim_as(
        &self,
        worker: &str,
        remote_peer: Option<&str>,
        tools: Option<&[String]>,
        lease_until: i64,
        now: i64,
    ) -> Result<Option<Claim>> {
        SqliteStore::claim_as(self, worker, remote_peer, tools, lease_until, now)
    }
    fn heartbeat(&self, id: &str, attempt: u32, lease_until: i64) -> Result<Lease> {
        SqliteStore::heartbeat(self, id, attempt, lease_until)
    }
    fn progress(
        &self,
        id: &str,
        attempt: u32,
        progress: f64,
        total: Option<f64>,
        message: Option<&str>,
    ) -> Result<bool> {
        SqliteStore::progress(self, id, attempt, progress, total, message)
    }
    fn settle(
        &self,
        id: &str,
        attempt: u32,
        outcome: &AttemptOutcome,
        now: i64,
    ) -> Result<Settled> {
        SqliteStore::settle(self, id, attempt, outcome, now)
    }
    fn ready_tools(&self, now: i64, limit: u32) -> Result<Vec<String>> {
        SqliteStore::ready_tools(self, now, limit)
    }
    fn backlog(&self, limit: u32) -> Result<Vec<(String, u64)>> {
        SqliteStore::backlog(self, limit)
    }
    fn release(&self, id: &str, attempt: u32) -> Result<bool> {
        SqliteStore::release(self, id, attempt)
    }
    fn expire_leases(&self, now: i64) -> Result<Vec<String>> {
        SqliteStore::expire_leases(self, now)
    }
    fn cancel(&self, id: &str, reason: Option<&str>, now: i64) -> Result<Task> {
        SqliteStore::cancel(self, id, reason, now)
    }
    fn provide_input(&self, id: &str, responses: &serde_json::Map<String, Value>) -> Result<Task> {
        SqliteStore::provide_input(self, id, responses)
    }
    fn retry(&self, id: &str, extra_attempts: u32) -> Result<Task> {
        SqliteStore::retry(self, id, extra_attempts)
    }
    fn set_priority(&self, id: &str, priority: f64) -> Result<f64> {
        SqliteStore::set_priority(self, id, priority)
    }
    fn position(&self, id: &str) -> Result<Option<u64>> {
        SqliteStore::position(self, id)
    }
    fn set_pause(&self, pause: Option<Pause>) -> Result<()> {
        SqliteStore::set_pause(self, pause)
    }
    fn paused(&self) -> Result<Option<Pause>> {
        SqliteStore::paused(self)
    }
    fn timings(&self, since: i64) -> Result<Timings> {
        SqliteStore::timings(self, since)
    }
    fn requeue_interrupted(&self, now: i64) -> Result<Vec<String>> {
        SqliteStore::requeue_interrupted(self, now)
    }
    fn extend_remote_leases(&self, lease_until: i64) -> Result<Vec<String>> {
        SqliteStore::extend_remote_leases(self, lease_until)
    }
    fn outbox_put(
        &self,
        owner: &str,
        id: &str,
        attempt: u32,
        outcome: &AttemptOutcome,
        now: i64,
    ) -> Result<()> {
        SqliteStore::outbox_put(self, owner, id, attempt, outcome, now)
    }
    fn outbox(&self, owner: &str) -> Result<Vec<(AttemptRef, AttemptOutcome)>> {
        SqliteStore::outbox(self, owner)
    }
    fn outbox_get(&self, owner: &str, attempt: &AttemptRef) -> Result<Option<AttemptOutcome>> {
        SqliteStore::outbox_get(self, owner, attempt)
    }
    fn outbox_remove(&self, owner: &str, id: &str, attempt: u32) -> Result<()> {
        SqliteStore::outbox_remove(self, owner, id, attempt)
    }
    fn clear(&self, states: &[TaskState]) -> Result<u64> {
        SqliteStore::clear(self, states)
    }
    fn list(&self, filter: &ListFilter, offset: u64, limit: u64) -> Result<(Vec<Task>, u64)> {
        SqliteStore::list(self, filter, offset, limit)
    }
    fn counts(&self) -> Result<Vec<(TaskState, u64)>> {
        SqliteStore::counts(self)
    }
}
