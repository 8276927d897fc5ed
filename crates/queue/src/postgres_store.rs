//! The PostgreSQL backend ([`PostgresStore`]): the same tables and state
//! machine as [`crate::SqliteStore`], in one database that any number of
//! `mcpplus serve` nodes share.
//!
//! - Claims take the next ready task with `FOR UPDATE SKIP LOCKED`, so nodes
//!   claiming at once never wait on each other's rows and never get the same
//!   task. Outcomes are fenced by `(id, attempt, state)` under a row lock.
//! - Times come from the database's clock (`now()`), not the nodes': a
//!   lease is "the caller's lease length from the database's now", so nodes
//!   with skewed clocks still agree when a lease lapsed. Tests can pass their
//!   own clock ([`Clock::Passed`]) to drive the state machine exactly.
//! - A submit (or anything else that makes a task ready) sends
//!   `NOTIFY <schema>_ready` inside its transaction; every node LISTENs and
//!   wakes its idle workers at commit, so there is no poll latency. The
//!   listener reconnects after the database restarts (and wakes everyone
//!   once, since notifications sent meanwhile are lost).
//! - The store's API is synchronous (callers run it on blocking threads, as
//!   with SQLite): each call runs on the store's own small tokio runtime and
//!   the caller waits for it, so it also works from a current-thread runtime.
//! - Connection errors are returned, not retried here: a submit whose commit
//!   answer was lost cannot know whether it committed (use an idempotency
//!   key), and a claim is simply tried again by the worker's next poll.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde_json::{Map, Value};
use tokio_postgres::{GenericClient, Row, Transaction};
use tokio_rustls::rustls;

mod txn;

use crate::sql::{Dialect, SqlValue, postgres_params, postgres_placeholders};

use crate::remote::AttemptRef;
use crate::store::{
    Answered, ListFilter, Pause, Result, StoreError, TaskStore, Timings, Txn, answer,
    check_priority, counts_by_state, ensure, outcome_too_large, pause_from_setting, pause_setting,
    retry_backoff_ms, validate,
};
use crate::{AttemptOutcome, Claim, Lease, NewTask, Settled, Task, TaskState};
use mcpplus_policy::config::queue::Quotas;

/// Which clock the state machine reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// The database's `now()` (production: nodes' clocks may differ).
    Database,
    /// The `now` each call passes (tests driving time by hand).
    Passed,
}

/// How to reach the database.
#[derive(Clone)]
pub struct PostgresOptions {
    /// `postgres://user[:password]@host[:port]/database[?sslmode=...]`.
    pub url: String,
    /// The schema this deployment's tables live in (created if missing).
    pub schema: String,
    /// PEM certificates of the CAs to trust for TLS (default: the web's roots).
    pub ca_file: Option<std::path::PathBuf>,
    /// Connections in the pool.
    pub pool_size: usize,
    pub clock: Clock,
}

/// Schema migrations, applied in order at start-up, each once (the version
/// reached is kept in `schema_version`). Never edit a released one: add the
/// next.
const MIGRATIONS: &[(i32, &str)] = &[(
    1,
    "CREATE TABLE tasks (
        seq              BIGSERIAL PRIMARY KEY,
        id               TEXT NOT NULL UNIQUE,
        tool             TEXT NOT NULL,
        arguments        TEXT NOT NULL,
        priority         DOUBLE PRECISION NOT NULL,
        tags             TEXT NOT NULL,
        metadata         TEXT NOT NULL,
        timeout_ms       BIGINT,
        max_attempts     BIGINT NOT NULL,
        backoff_ms       BIGINT NOT NULL,
        idempotency_key  TEXT UNIQUE,
        state            TEXT NOT NULL,
        attempt          BIGINT NOT NULL DEFAULT 0,
        worker           TEXT,
        lease_until      BIGINT,
        not_before       BIGINT NOT NULL DEFAULT 0,
        progress         DOUBLE PRECISION,
        progress_total   DOUBLE PRECISION,
        progress_message TEXT,
        result           TEXT,
        error            TEXT,
        created_at       BIGINT NOT NULL,
        started_at       BIGINT,
        finished_at      BIGINT,
        retries          BIGINT NOT NULL DEFAULT 0,
        remote_peer      TEXT,
        settled_attempt  BIGINT,
        input_requests   TEXT,
        input_responses  TEXT,
        waiting_since    BIGINT
    );
    CREATE INDEX tasks_ready ON tasks(state, priority DESC, seq);
    CREATE INDEX tasks_lease ON tasks(state, lease_until);
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE outbox (
        owner      TEXT NOT NULL,
        id         TEXT NOT NULL,
        attempt    BIGINT NOT NULL,
        outcome    TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (owner, id, attempt)
    );",
)];

/// Serialises concurrent start-ups' migrations (any constant, ours).
const MIGRATION_LOCK: i64 = 0x6d63_7070_6c75_7301;

const COLUMNS: &str = "id, tool, arguments, priority, tags, metadata, timeout_ms, max_attempts, \
    backoff_ms, idempotency_key, state, attempt, worker, lease_until, not_before, progress, \
    progress_total, progress_message, result, error, created_at, started_at, finished_at, retries, \
    remote_peer, input_requests, input_responses";

/// The database's clock in ms, or the passed one.
const NOW: &str = "COALESCE($1::BIGINT, (EXTRACT(EPOCH FROM now()) * 1000)::BIGINT)";

struct Signals {
    ready: tokio::sync::Notify,
    changed: tokio::sync::Notify,
}

pub struct PostgresStore {
    /// `None` only while dropping (shut down in the background: a runtime
    /// cannot be dropped inside another one).
    runtime: Option<tokio::runtime::Runtime>,
    pool: Pool,
    signals: Arc<Signals>,
    quotas: Mutex<Quotas>,
    clock: Clock,
    /// `<schema>_ready` / `<schema>_changed`.
    ready_channel: String,
    changed_channel: String,
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &redacted(&self.url))
            .field("schema", &self.schema)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

pub use mcpplus_policy::config::queue::redacted;

fn pg_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::Postgres(e.to_string())
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        // The server's message and detail, not only "db error".
        match e.as_db_error() {
            Some(db) => StoreError::Postgres(format!(
                "{}{}",
                db.message(),
                db.detail().map(|d| format!(" ({d})")).unwrap_or_default()
            )),
            None => pg_error(e),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Postgres(format!("cannot get a database connection: {e}"))
    }
}

pub use mcpplus_policy::config::queue::check_schema as check_schema_name;

fn tls_connector(
    ca_file: Option<&std::path::Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                StoreError::Invalid(format!(
                    "cannot read [queue] ca_file {}: {e}",
                    path.display()
                ))
            })?;
            use rustls::pki_types::pem::PemObject as _;
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| {
                    StoreError::Invalid(format!("[queue] ca_file {}: {e}", path.display()))
                })?;
                roots.add(cert).map_err(|e| {
                    StoreError::Invalid(format!("[queue] ca_file {}: {e}", path.display()))
                })?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

impl PostgresStore {
    /// Connect, apply the schema's migrations, and start listening for other
    /// nodes' wake-ups.
    pub fn open(options: PostgresOptions) -> Result<Self> {
        check_schema_name(&options.schema).map_err(StoreError::Invalid)?;
        let mut config: tokio_postgres::Config = options.url.parse().map_err(|e| {
            StoreError::Invalid(format!(
                "[queue] url {} is not a PostgreSQL URL: {e}",
                redacted(&options.url)
            ))
        })?;
        config.connect_timeout(Duration::from_secs(5));
        config.options(format!("-c search_path={}", options.schema));
        config.application_name("mcpplus");
        let tls = tls_connector(options.ca_file.as_deref())?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("mcpplus-postgres")
            .enable_all()
            .build()
            .map_err(pg_error)?;
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                // A test query per checkout: after the server restarted, a
                // closed connection is never handed out.
                recycling_method: RecyclingMethod::Verified,
            },
        );
        let timeout = Some(Duration::from_secs(5));
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(timeout)
            .create_timeout(timeout)
            .recycle_timeout(timeout)
            .build()
            .map_err(pg_error)?;
        let signals = Arc::new(Signals {
            ready: tokio::sync::Notify::new(),
            changed: tokio::sync::Notify::new(),
        });
        let store = Self {
            ready_channel: format!("{}_ready", options.schema),
            changed_channel: format!("{}_changed", options.schema),
            runtime: Some(runtime),
            pool,
            signals,
            quotas: Mutex::new(Quotas::default()),
            clock: options.clock,
        };
        let schema = options.schema.clone();
        let url = redacted(&options.url);
        store
            .run(move |pool| async move { migrate(&pool, &schema).await })
            .map_err(|e| match e {
                StoreError::Postgres(m) => {
                    StoreError::Postgres(format!("cannot set up the queue in {url}: {m}"))
                }
                other => other,
            })?;
        let listener = listen(
            config,
            tls,
            store.signals.clone(),
            [store.ready_channel.clone(), store.changed_channel.clone()],
        );
        store.runtime().spawn(listener);
        Ok(store)
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("set until drop")
    }

    /// Run `body` on the store's runtime and wait for its answer (from any
    /// thread, inside a tokio runtime or not).
    fn run<T, F, Fut>(&self, body: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Pool) -> Fut,
        Fut: Future<Output = Result<T>> + Send + 'static,
    {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let work = body(self.pool.clone());
        self.runtime().spawn(async move {
            let _ = tx.send(work.await);
        });
        rx.recv()
            .map_err(|_| pg_error("the database call was dropped before it answered"))?
    }

    /// One fenced UPDATE in a transaction of its own; `channel` is notified
    /// at commit when it changed the row. Whether it did.
    fn update_notifying(
        &self,
        sql: &'static str,
        params: Vec<SqlValue>,
        channel: &str,
    ) -> Result<bool> {
        let channel = channel.to_string();
        self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let tx = begin(&mut client).await?;
            let changed = tx.execute(sql, &postgres_params(&params)).await? == 1;
            if changed {
                notify(&tx, &channel).await?;
            }
            tx.commit().await?;
            Ok(changed)
        })
    }

    fn passed(&self, now: i64) -> Option<i64> {
        match self.clock {
            Clock::Passed => Some(now),
            Clock::Database => None,
        }
    }

    /// A lease ending at `lease_until` (the caller's clock, no `now` given)
    /// as SQL parameters for `{NOW} + $lease_ms`: the passed clock as is, or
    /// the lease's remaining length applied to the database's clock.
    fn lease_end(&self, lease_until: i64) -> (Option<i64>, i64) {
        match self.clock {
            Clock::Passed => (Some(lease_until), 0),
            Clock::Database => (None, lease_until - Self::node_now()),
        }
    }

    /// `now` of the node's clock (a heartbeat gets no `now` of its own).
    fn node_now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }

    fn quotas(&self) -> Quotas {
        *self.quotas.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake(&self) {
        self.signals.ready.notify_waiters();
    }

    fn changed(&self) {
        self.signals.changed.notify_waiters();
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Apply the migrations this database lacks, one start-up at a time.
async fn migrate(pool: &Pool, schema: &str) -> Result<()> {
    let mut client = pool.get().await?;
    let tx = begin(&mut client).await?;
    tx.batch_execute(&format!("SELECT pg_advisory_xact_lock({MIGRATION_LOCK})"))
        .await?;
    // Only a missing schema needs CREATE on the database (PostgreSQL checks
    // that privilege even for CREATE SCHEMA IF NOT EXISTS).
    let exists = tx
        .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&schema])
        .await?
        .is_some();
    if !exists {
        tx.batch_execute(&format!("CREATE SCHEMA {schema}")).await?;
    }
    tx.batch_execute(&format!(
        "CREATE TABLE IF NOT EXISTS {schema}.schema_version (
             version    INTEGER PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
         );"
    ))
    .await?;
    let current: i32 = tx
        .query_one(
            &format!("SELECT COALESCE(MAX(version), 0) FROM {schema}.schema_version"),
            &[],
        )
        .await?
        .get(0);
    let known = MIGRATIONS.last().map_or(0, |(v, _)| *v);
    if current > known {
        return Err(StoreError::Invalid(format!(
            "the queue schema `{schema}` is at version {current}, newer than this mcpplus knows ({known}); upgrade mcpplus, or point it at another [queue] schema"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
        tx.batch_execute(&format!("SET LOCAL search_path = {schema}; {sql}"))
            .await?;
        tx.execute(
            &format!("INSERT INTO {schema}.schema_version (version) VALUES ($1)"),
            &[version],
        )
        .await?;
        tracing::info!(
            event = "queue.migrated",
            schema,
            version,
            "applied a queue schema migration"
        );
    }
    tx.commit().await?;
    Ok(())
}

/// LISTEN for other nodes' wake-ups on a connection of its own (a pooled
/// connection drops notifications), reconnecting after errors.
async fn listen(
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    signals: Arc<Signals>,
    [ready, changed]: [String; 2],
) {
    use futures::StreamExt as _;
    let mut backoff = Duration::from_millis(100);
    loop {
        match config.connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(64);
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(Ok(message)) = messages.next().await {
                        if let tokio_postgres::AsyncMessage::Notification(n) = message {
                            // Full: wake-ups are pending anyway; dropping one loses nothing.
                            let _ = tx.try_send(n.channel().to_string());
                        }
                    }
                });
                if client
                    .batch_execute(&format!("LISTEN {ready}; LISTEN {changed};"))
                    .await
                    .is_ok()
                {
                    backoff = Duration::from_millis(100);
                    // Notifications sent while we were away are lost: look again.
                    signals.ready.notify_waiters();
                    signals.changed.notify_waiters();
                    while let Some(channel) = rx.recv().await {
                        if channel == ready {
                            signals.ready.notify_waiters();
                        } else {
                            signals.changed.notify_waiters();
                        }
                    }
                }
                driver.abort();
                tracing::warn!(
                    event = "queue.listen_lost",
                    "lost the database's wake-up connection; reconnecting"
                );
            }
            Err(e) => {
                tracing::warn!(event = "queue.listen_failed", error = %e, "cannot open the database's wake-up connection; retrying");
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// A transaction of tokio-postgres itself (not deadpool's wrapper), so the
/// helpers below take one type.
async fn begin(client: &mut deadpool_postgres::Object) -> Result<Transaction<'_>> {
    Ok((***client).transaction().await?)
}

fn json_column(row: &Row, index: usize) -> Value {
    let text: String = row.get(index);
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

fn json_opt(row: &Row, index: usize) -> Option<Value> {
    row.get::<_, Option<String>>(index)
        .and_then(|t| serde_json::from_str(&t).ok())
}

fn task_from_row(row: &Row) -> Task {
    let state: String = row.get(10);
    Task {
        id: row.get(0),
        tool: row.get(1),
        arguments: json_column(row, 2),
        priority: row.get(3),
        tags: serde_json::from_value(json_column(row, 4)).unwrap_or_default(),
        metadata: json_column(row, 5),
        timeout_ms: row.get::<_, Option<i64>>(6).map(|t| t as u64),
        max_attempts: row.get::<_, i64>(7) as u32,
        backoff_ms: row.get::<_, i64>(8) as u64,
        idempotency_key: row.get(9),
        state: TaskState::parse(&state).unwrap_or(TaskState::Failed),
        attempt: row.get::<_, i64>(11) as u32,
        worker: row.get(12),
        lease_until_ms: row.get(13),
        not_before_ms: row.get(14),
        progress: row.get(15),
        progress_total: row.get(16),
        progress_message: row.get(17),
        result: json_opt(row, 18),
        error: row.get(19),
        created_ms: row.get(20),
        started_ms: row.get(21),
        finished_ms: row.get(22),
        retries: row.get::<_, i64>(23) as u32,
        remote_peer: row.get(24),
        input_requests: json_opt(row, 25),
        input_responses: json_opt(row, 26),
    }
}

async fn get(c: &impl GenericClient, id: &str) -> Result<Task> {
    c.query_opt(
        &format!("SELECT {COLUMNS} FROM tasks WHERE id = $1"),
        &[&id],
    )
    .await?
    .map(|r| task_from_row(&r))
    .ok_or_else(|| StoreError::NotFound(id.to_string()))
}

/// [`get`] with the row locked until the transaction ends (outcomes, cancels).
async fn get_for_update(tx: &Transaction<'_>, id: &str) -> Result<Task> {
    tx.query_opt(
        &format!("SELECT {COLUMNS} FROM tasks WHERE id = $1 FOR UPDATE"),
        &[&id],
    )
    .await?
    .map(|r| task_from_row(&r))
    .ok_or_else(|| StoreError::NotFound(id.to_string()))
}

/// The transaction's clock: the passed `now`, or the database's.
async fn clock(tx: &impl GenericClient, passed: Option<i64>) -> Result<i64> {
    Ok(tx
        .query_one(&format!("SELECT {NOW}"), &[&passed])
        .await?
        .get(0))
}

async fn notify(tx: &impl GenericClient, channel: &str) -> Result<()> {
    tx.execute("SELECT pg_notify($1, '')", &[&channel]).await?;
    Ok(())
}

async fn pause_state(c: &impl GenericClient) -> Result<Option<Pause>> {
    let value: Option<String> = c
        .query_opt("SELECT value FROM settings WHERE key = 'paused'", &[])
        .await?
        .map(|r| r.get(0));
    Ok(pause_from_setting(value.as_deref()))
}

/// Insert one task (see [`TaskStore::submit`]); `room` is what the queue
/// still holds under `max_queued`, counted once per transaction.
async fn insert(
    tx: &Transaction<'_>,
    new: NewTask,
    now: i64,
    room: &mut u64,
    quotas: Quotas,
) -> Result<(Task, bool)> {
    validate(&new)?;
    let arguments = new.arguments.to_string();
    let metadata = new.metadata.to_string();
    let payload = arguments.len() + metadata.len();
    if payload as u64 > quotas.max_payload_bytes {
        return Err(StoreError::Invalid(format!(
            "the task's arguments and metadata are {payload} bytes of JSON, over this queue's limit of {} ([queue] max_payload_bytes); pass a reference (a path, a URL) instead of the data",
            quotas.max_payload_bytes
        )));
    }
    if let Some(key) = &new.idempotency_key
        && let Some(existing) = existing_by_key(tx, key).await?
    {
        return same_work(existing, &new);
    }
    if *room == 0 {
        return Err(StoreError::Invalid(format!(
            "the queue already holds {} queued or running tasks, its limit ([queue] max_queued); wait for some to finish, or cancel or clear some",
            quotas.max_queued
        )));
    }
    let tags = serde_json::to_string(&new.tags).unwrap_or_default();
    let timeout = new.timeout_ms.map(|t| t as i64);
    // One round trip: a generated id (122 random bits from the server's
    // strong generator) is drawn in the insert, and the row comes back.
    let inserted = tx
        .query_opt(
            &format!(
                "INSERT INTO tasks (id, tool, arguments, priority, tags, metadata, timeout_ms,
                    max_attempts, backoff_ms, idempotency_key, state, created_at)
                 VALUES (COALESCE($1::TEXT, 'task-' || replace(gen_random_uuid()::text, '-', '')),
                    $2, $3, $4, $5, $6, $7, $8, $9, $10, 'queued', $11)
                 ON CONFLICT DO NOTHING
                 RETURNING {COLUMNS}"
            ),
            &[
                &new.id,
                &new.tool,
                &arguments,
                &new.priority,
                &tags,
                &metadata,
                &timeout,
                &(new.max_attempts as i64),
                &(new.backoff_ms as i64),
                &new.idempotency_key,
                &now,
            ],
        )
        .await?;
    let Some(row) = inserted else {
        // Another node's submit with the same key committed first.
        if let Some(key) = &new.idempotency_key
            && let Some(existing) = existing_by_key(tx, key).await?
        {
            return same_work(existing, &new);
        }
        return Err(match &new.id {
            Some(id) => StoreError::Invalid(format!(
                "a task with id `{id}` already exists; choose another id, or leave it out to get a generated one"
            )),
            None => StoreError::Postgres(
                "a generated task id collided with an existing one; submit again".into(),
            ),
        });
    };
    *room -= 1;
    Ok((task_from_row(&row), true))
}

async fn existing_by_key(tx: &Transaction<'_>, key: &str) -> Result<Option<Task>> {
    Ok(tx
        .query_opt(
            &format!("SELECT {COLUMNS} FROM tasks WHERE idempotency_key = $1"),
            &[&key],
        )
        .await?
        .map(|r| task_from_row(&r)))
}

fn same_work(existing: Task, new: &NewTask) -> Result<(Task, bool)> {
    if existing.tool != new.tool || existing.arguments != new.arguments {
        return Err(StoreError::KeyConflict {
            key: new.idempotency_key.clone().unwrap_or_default(),
            id: existing.id,
        });
    }
    Ok((existing, false))
}

/// The transaction's clock, and how many more tasks fit under `max_queued`
/// (counted once per transaction), in one round trip.
async fn clock_and_room(
    tx: &Transaction<'_>,
    passed: Option<i64>,
    quotas: Quotas,
) -> Result<(i64, u64)> {
    let row = tx
        .query_one(
            &format!(
                "SELECT {NOW}, (SELECT COUNT(*) FROM tasks
                                 WHERE state IN ('queued', 'running', 'waiting_input'))"
            ),
            &[&passed],
        )
        .await?;
    let live: i64 = row.get(1);
    Ok((row.get(0), quotas.max_queued.saturating_sub(live as u64)))
}

/// A failed attempt: back to the queue after the backoff, or failed for good.
async fn settle_failed_attempt(
    tx: &Transaction<'_>,
    task: &Task,
    error: &str,
    result: Option<&Value>,
    retryable: bool,
    now: i64,
) -> Result<TaskState> {
    let result = result.map(Value::to_string);
    if retryable && task.attempt < task.max_attempts {
        tx.execute(
            "UPDATE tasks SET state = 'queued', error = $2, not_before = $3, worker = NULL,
                lease_until = NULL, result = $4
             WHERE id = $1",
            &[&task.id, &error, &(now + retry_backoff_ms(task)), &result],
        )
        .await?;
        Ok(TaskState::Queued)
    } else {
        tx.execute(
            "UPDATE tasks SET state = 'failed', error = $2, finished_at = $3, lease_until = NULL,
                result = $4
             WHERE id = $1",
            &[&task.id, &error, &now, &result],
        )
        .await?;
        Ok(TaskState::Failed)
    }
}

impl TaskStore for PostgresStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn transaction_dyn(&self, now: i64, body: &mut dyn FnMut(&mut Txn<'_>) -> bool) -> Result<()> {
        let opening = txn::Opening {
            pool: self.pool.clone(),
            passed: self.passed(now),
            quotas: self.quotas(),
            ready_channel: self.ready_channel.clone(),
            changed_channel: self.changed_channel.clone(),
        };
        let mut open = txn::PgTxn::open(self.runtime(), opening)?;
        if !body(&mut Txn::new(&mut open)) {
            return Ok(()); // dropped: rolled back
        }
        let (submitted, changed) = open.commit()?;
        if submitted {
            self.wake();
        }
        if changed {
            self.changed();
        }
        Ok(())
    }

    fn ready_signal(&self) -> &tokio::sync::Notify {
        &self.signals.ready
    }

    fn change_signal(&self) -> &tokio::sync::Notify {
        &self.signals.changed
    }

    fn set_quotas(&self, quotas: Quotas) {
        *self.quotas.lock().unwrap_or_else(|e| e.into_inner()) = quotas;
    }

    fn purge_finished(&self, before: i64) -> Result<u64> {
        self.run(move |pool| async move {
            let client = pool.get().await?;
            Ok(client
                .execute(
                    "DELETE FROM tasks WHERE (state IN ('completed', 'failed', 'cancelled')
                       AND finished_at IS NOT NULL AND finished_at < $1)
                       OR (state = 'waiting_input' AND waiting_since IS NOT NULL AND waiting_since < $1)",
                    &[&before],
                )
                .await?)
        })
    }

    fn submit(&self, new: NewTask, now: i64) -> Result<(Task, bool)> {
        let submitted = self.submit_batch(vec![new], now)?;
        Ok(submitted.into_iter().next().expect("one task in, one out"))
    }

    fn submit_batch(&self, tasks: Vec<NewTask>, now: i64) -> Result<Vec<(Task, bool)>> {
        let (passed, quotas, channel) =
            (self.passed(now), self.quotas(), self.ready_channel.clone());
        let submitted = self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let tx = begin(&mut client).await?;
            let (now, mut room) = clock_and_room(&tx, passed, quotas).await?;
            let mut submitted = Vec::with_capacity(tasks.len());
            for task in tasks {
                submitted.push(insert(&tx, task, now, &mut room, quotas).await?);
            }
            if submitted.iter().any(|(_, new)| *new) {
                notify(&tx, &channel).await?;
            }
            tx.commit().await?;
            Ok(submitted)
        })?;
        if submitted.iter().any(|(_, new)| *new) {
            self.wake();
        }
        Ok(submitted)
    }

    fn get(&self, id: &str) -> Result<Task> {
        let id = id.to_string();
        self.run(move |pool| async move { get(&**pool.get().await?, &id).await })
    }

    fn claim_as(
        &self,
        worker: &str,
        remote_peer: Option<&str>,
        tools: Option<&[String]>,
        lease_until: i64,
        now: i64,
    ) -> Result<Option<Claim>> {
        let passed = self.passed(now);
        let lease_ms = lease_until - now;
        let worker = worker.to_string();
        let remote_peer = remote_peer.map(String::from);
        let tools: Option<Vec<String>> = tools.map(<[String]>::to_vec);
        self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let tx = begin(&mut client).await?;
            if pause_state(&tx).await?.is_some() {
                return Ok(None);
            }
            let now = clock(&tx, passed).await?;
            let claimed = tx
                .query_opt(
                    "WITH next AS (
                         SELECT id FROM tasks
                          WHERE state = 'queued' AND not_before <= $1
                            AND ($2::TEXT[] IS NULL OR tool = ANY($2))
                          ORDER BY priority DESC, seq ASC
                          LIMIT 1
                          FOR UPDATE SKIP LOCKED)
                     UPDATE tasks t SET state = 'running', attempt = t.attempt + 1, worker = $3,
                        lease_until = $1 + $4, started_at = $1, progress = NULL,
                        progress_total = NULL, progress_message = NULL, remote_peer = $5
                       FROM next WHERE t.id = next.id
                     RETURNING t.id",
                    &[&now, &tools, &worker, &lease_ms, &remote_peer],
                )
                .await?;
            let Some(row) = claimed else {
                return Ok(None);
            };
            let id: String = row.get(0);
            let task = get(&tx, &id).await?;
            tx.commit().await?;
            Ok(Some(Claim {
                attempt: task.attempt,
                task,
            }))
        })
    }

    fn heartbeat(&self, id: &str, attempt: u32, lease_until: i64) -> Result<Lease> {
        // The lease's length from the caller's clock, applied to the database's.
        let (passed, lease_ms) = self.lease_end(lease_until);
        let id = id.to_string();
        self.run(move |pool| async move {
            let client = pool.get().await?;
            let renewed = client
                .execute(
                    &format!(
                        "UPDATE tasks SET lease_until = {NOW} + $4
                          WHERE id = $2 AND attempt = $3 AND state = 'running'"
                    ),
                    &[&passed, &id, &(attempt as i64), &lease_ms],
                )
                .await?;
            if renewed == 1 {
                return Ok(Lease::Renewed);
            }
            let state = client
                .query_opt("SELECT state, attempt FROM tasks WHERE id = $1", &[&id])
                .await?
                .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1)));
            Ok(match state {
                Some((s, a)) if s == "cancelled" && a == attempt as i64 => Lease::Cancelled,
                _ => Lease::Lost,
            })
        })
    }

    fn progress(
        &self,
        id: &str,
        attempt: u32,
        progress: f64,
        total: Option<f64>,
        message: Option<&str>,
    ) -> Result<bool> {
        let changed = self.update_notifying(
            "UPDATE tasks SET progress = $3, progress_total = $4, progress_message = $5
              WHERE id = $1 AND attempt = $2 AND state = 'running'",
            vec![
                id.into(),
                attempt.into(),
                progress.into(),
                total.into(),
                message.into(),
            ],
            &self.changed_channel,
        )?;
        if changed {
            self.changed();
        }
        Ok(changed)
    }

    fn settle(
        &self,
        id: &str,
        attempt: u32,
        outcome: &AttemptOutcome,
        now: i64,
    ) -> Result<Settled> {
        let passed = self.passed(now);
        let oversized = outcome_too_large(outcome, self.quotas().max_result_bytes);
        let outcome = oversized.unwrap_or_else(|| outcome.clone());
        let id = id.to_string();
        let channels = (self.ready_channel.clone(), self.changed_channel.clone());
        let settled = self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let tx = begin(&mut client).await?;
            let task = match get_for_update(&tx, &id).await {
                Ok(task) => task,
                Err(StoreError::NotFound(_)) => return Ok(Settled::Stale),
                Err(e) => return Err(e),
            };
            if task.state != TaskState::Running || task.attempt != attempt {
                let settled: Option<i64> = tx
                    .query_one("SELECT settled_attempt FROM tasks WHERE id = $1", &[&id])
                    .await?
                    .get(0);
                return Ok(if settled == Some(attempt as i64) {
                    Settled::AlreadyRecorded
                } else {
                    Settled::Stale
                });
            }
            let now = clock(&tx, passed).await?;
            let state = match &outcome {
                AttemptOutcome::Completed(result) => {
                    tx.execute(
                        "UPDATE tasks SET state = 'completed', result = $2, error = NULL,
                            finished_at = $3, lease_until = NULL
                         WHERE id = $1",
                        &[&id, &result.to_string(), &now],
                    )
                    .await?;
                    TaskState::Completed
                }
                AttemptOutcome::Failed {
                    error,
                    retryable,
                    result,
                } => {
                    settle_failed_attempt(&tx, &task, error, result.as_ref(), *retryable, now)
                        .await?
                }
                AttemptOutcome::InputRequired { requests } => {
                    tx.execute(
                        "UPDATE tasks SET state = 'waiting_input', input_requests = $2,
                            worker = NULL, lease_until = NULL, waiting_since = $3,
                            max_attempts = max_attempts + 1
                         WHERE id = $1",
                        &[&id, &requests.to_string(), &now],
                    )
                    .await?;
                    TaskState::WaitingInput
                }
            };
            tx.execute(
                "UPDATE tasks SET settled_attempt = $2 WHERE id = $1",
                &[&id, &(attempt as i64)],
            )
            .await?;
            if state == TaskState::Queued {
                notify(&tx, &channels.0).await?;
            }
            notify(&tx, &channels.1).await?;
            tx.commit().await?;
            Ok(Settled::Recorded(state))
        })?;
        if let Settled::Recorded(state) = settled {
            if state == TaskState::Queued {
                self.wake();
            }
            self.changed();
        }
        Ok(settled)
    }

    fn ready_tools(&self, now: i64, limit: u32) -> Result<Vec<String>> {
        let passed = self.passed(now);
        self.run(move |pool| async move {
            let client = pool.get().await?;
            let rows = client
                .query(
                    &format!(
                        "SELECT DISTINCT tool FROM tasks
                          WHERE state = 'queued' AND not_before <= {NOW} LIMIT $2"
                    ),
                    &[&passed, &(limit as i64)],
                )
                .await?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn backlog(&self, limit: u32) -> Result<Vec<(String, u64)>> {
        self.run(move |pool| async move {
            let client = pool.get().await?;
            let rows = client
                .query(
                    "SELECT tool, COUNT(*) AS n FROM tasks WHERE state = 'queued'
                      GROUP BY tool ORDER BY n DESC LIMIT $1",
                    &[&(limit as i64)],
                )
                .await?;
            Ok(rows
                .iter()
                .map(|r| (r.get(0), r.get::<_, i64>(1) as u64))
                .collect())
        })
    }

    fn release(&self, id: &str, attempt: u32) -> Result<bool> {
        let released = self.update_notifying(
            "UPDATE tasks SET state = 'queued', worker = NULL, lease_until = NULL,
                max_attempts = max_attempts + 1, not_before = 0
              WHERE id = $1 AND attempt = $2 AND state = 'running'",
            vec![id.into(), attempt.into()],
            &self.ready_channel,
        )?;
        if released {
            self.wake();
        }
        Ok(released)
    }

    fn expire_leases(&self, now: i64) -> Result<Vec<String>> {
        let passed = self.passed(now);
        let channels = (self.ready_channel.clone(), self.changed_channel.clone());
        let expired = self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let tx = begin(&mut client).await?;
            let now = clock(&tx, passed).await?;
            // SKIP LOCKED: a task whose owner is settling it right now is not lapsed.
            let running: Vec<Task> = tx
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM tasks
                          WHERE state = 'running' AND lease_until < $1
                          FOR UPDATE SKIP LOCKED"
                    ),
                    &[&now],
                )
                .await?
                .iter()
                .map(task_from_row)
                .collect();
            for task in &running {
                let why = format!(
                    "attempt {} lost its lease (the worker stopped or the server restarted)",
                    task.attempt
                );
                settle_failed_attempt(&tx, task, &why, None, true, now).await?;
            }
            if !running.is_empty() {
                notify(&tx, &channels.0).await?;
                notify(&tx, &channels.1).await?;
            }
            tx.commit().await?;
            Ok(running.into_iter().map(|t| t.id).collect::<Vec<String>>())
        })?;
        if !expired.is_empty() {
            self.wake();
            self.changed();
        }
        Ok(expired)
    }

    fn cancel(&self, id: &str, reason: Option<&str>, now: i64) -> Result<Task> {
        let passed = self.passed(now);
        let (id, reason) = (id.to_string(), reason.unwrap_or("cancelled").to_string());
        let channel = self.changed_channel.clone();
        let task = self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let tx = begin(&mut client).await?;
            let task = get_for_update(&tx, &id).await?;
            ensure(
                &task,
                !task.state.is_terminal(),
                "only queued or running tasks (or tasks waiting for input) can be cancelled",
            )?;
            let now = clock(&tx, passed).await?;
            tx.execute(
                "UPDATE tasks SET state = 'cancelled', error = $2, finished_at = $3,
                    lease_until = NULL
                  WHERE id = $1",
                &[&id, &reason, &now],
            )
            .await?;
            notify(&tx, &channel).await?;
            let task = get(&tx, &id).await?;
            tx.commit().await?;
            Ok(task)
        })?;
        self.changed();
        Ok(task)
    }

    fn provide_input(&self, id: &str, responses: &Map<String, Value>) -> Result<Task> {
        let (id, responses) = (id.to_string(), responses.clone());
        let max = self.quotas().max_payload_bytes;
        let channels = (self.ready_channel.clone(), self.changed_channel.clone());
        let (task, ready) = self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let tx = begin(&mut client).await?;
            let task = get_for_update(&tx, &id).await?;
            let Answered {
                pending,
                answers,
                ready,
            } = answer(&task, &responses, max)?;
            if ready {
                tx.execute(
                    "UPDATE tasks SET state = 'queued', input_requests = NULL,
                        input_responses = $2, waiting_since = NULL, not_before = 0
                      WHERE id = $1",
                    &[&id, &answers],
                )
                .await?;
                notify(&tx, &channels.0).await?;
            } else {
                tx.execute(
                    "UPDATE tasks SET input_requests = $2, input_responses = $3 WHERE id = $1",
                    &[&id, &Value::Object(pending).to_string(), &answers],
                )
                .await?;
            }
            notify(&tx, &channels.1).await?;
            let task = get(&tx, &id).await?;
            tx.commit().await?;
            Ok((task, ready))
        })?;
        if ready {
            self.wake();
        }
        self.changed();
        Ok(task)
    }

    fn retry(&self, id: &str, extra_attempts: u32) -> Result<Task> {
        if extra_attempts == 0 {
            return Err(StoreError::Invalid(
                "a retry needs at least one more attempt".into(),
            ));
        }
        let id = id.to_string();
        let channel = self.ready_channel.clone();
        let task = self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let tx = begin(&mut client).await?;
            let task = get_for_update(&tx, &id).await?;
            ensure(
                &task,
                matches!(task.state, TaskState::Failed | TaskState::Cancelled),
                "only failed or cancelled tasks can be retried",
            )?;
            tx.execute(
                "UPDATE tasks SET state = 'queued', max_attempts = attempt + $2, not_before = 0,
                    worker = NULL, finished_at = NULL, retries = retries + 1,
                    input_requests = NULL, waiting_since = NULL
                  WHERE id = $1",
                &[&id, &(extra_attempts as i64)],
            )
            .await?;
            notify(&tx, &channel).await?;
            let task = get(&tx, &id).await?;
            tx.commit().await?;
            Ok(task)
        })?;
        self.wake();
        Ok(task)
    }

    fn set_priority(&self, id: &str, priority: f64) -> Result<f64> {
        check_priority(priority)?;
        let id = id.to_string();
        self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let tx = begin(&mut client).await?;
            let task = get_for_update(&tx, &id).await?;
            ensure(
                &task,
                !task.state.is_terminal(),
                "its priority no longer matters",
            )?;
            tx.execute(
                "UPDATE tasks SET priority = $2 WHERE id = $1",
                &[&id, &priority],
            )
            .await?;
            tx.commit().await?;
            Ok(task.priority)
        })
    }

    fn position(&self, id: &str) -> Result<Option<u64>> {
        let id = id.to_string();
        self.run(move |pool| async move {
            let client = pool.get().await?;
            let task = get(&**client, &id).await?;
            if task.state != TaskState::Queued {
                return Ok(None);
            }
            let ahead: i64 = client
                .query_one(
                    "SELECT COUNT(*) FROM tasks t, tasks me WHERE me.id = $1 AND t.state = 'queued'
                       AND (t.priority > me.priority OR (t.priority = me.priority AND t.seq < me.seq))",
                    &[&id],
                )
                .await?
                .get(0);
            Ok(Some(ahead as u64))
        })
    }

    fn set_pause(&self, pause: Option<Pause>) -> Result<()> {
        let resumed = pause.is_none();
        let value = pause_setting(pause.as_ref());
        let channel = self.ready_channel.clone();
        self.run(move |pool| async move {
            let mut client = pool.get().await?;
            let tx = begin(&mut client).await?;
            tx.execute(
                "INSERT INTO settings (key, value) VALUES ('paused', $1)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                &[&value],
            )
            .await?;
            if resumed {
                notify(&tx, &channel).await?;
            }
            tx.commit().await?;
            Ok(())
        })?;
        if resumed {
            self.wake();
        }
        Ok(())
    }

    fn paused(&self) -> Result<Option<Pause>> {
        self.run(move |pool| async move { pause_state(&**pool.get().await?).await })
    }

    fn timings(&self, since: i64) -> Result<Timings> {
        self.run(move |pool| async move {
            let client = pool.get().await?;
            let row = client
                .query_one(
                    "SELECT AVG(started_at - created_at)::DOUBLE PRECISION,
                            AVG(finished_at - started_at)::DOUBLE PRECISION FROM (
                         SELECT created_at, started_at, finished_at FROM tasks
                          WHERE finished_at IS NOT NULL AND started_at IS NOT NULL
                          ORDER BY finished_at DESC LIMIT 1000) AS recent",
                    &[],
                )
                .await?;
            let recent: i64 = client
                .query_one(
                    "SELECT COUNT(*) FROM tasks WHERE finished_at >= $1",
                    &[&since],
                )
                .await?
                .get(0);
            Ok(Timings {
                average_wait_ms: row.get(0),
                average_run_ms: row.get(1),
                finished_since: recent as u64,
            })
        })
    }

    /// Nothing: other nodes' attempts are running in this database too, and
    /// this node's interrupted ones are indistinguishable from them. Their
    /// leases lapse and any node's sweeper re-queues them.
    fn requeue_interrupted(&self, _now: i64) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    fn extend_remote_leases(&self, lease_until: i64) -> Result<Vec<String>> {
        let (passed, lease_ms) = self.lease_end(lease_until);
        self.run(move |pool| async move {
            let client = pool.get().await?;
            let rows = client
                .query(
                    &format!(
                        "UPDATE tasks SET lease_until = GREATEST(COALESCE(lease_until, 0), {NOW} + $2)
                          WHERE state = 'running' AND remote_peer IS NOT NULL
                          RETURNING id"
                    ),
                    &[&passed, &lease_ms],
                )
                .await?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
    }

    fn outbox_put(
        &self,
        owner: &str,
        id: &str,
        attempt: u32,
        outcome: &AttemptOutcome,
        now: i64,
    ) -> Result<()> {
        let outcome = serde_json::to_string(outcome)
            .map_err(|e| StoreError::Invalid(format!("an outcome that is not JSON: {e}")))?;
        let (owner, id) = (owner.to_string(), id.to_string());
        self.run(move |pool| async move {
            pool.get()
                .await?
                .execute(
                    "INSERT INTO outbox (owner, id, attempt, outcome, created_at)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                    &[&owner, &id, &(attempt as i64), &outcome, &now],
                )
                .await?;
            Ok(())
        })
    }

    fn outbox(&self, owner: &str) -> Result<Vec<(AttemptRef, AttemptOutcome)>> {
        let owner = owner.to_string();
        self.run(move |pool| async move {
            let rows = pool
                .get()
                .await?
                .query(
                    "SELECT id, attempt, outcome FROM outbox WHERE owner = $1
                      ORDER BY created_at, id",
                    &[&owner],
                )
                .await?;
            Ok(rows
                .iter()
                .filter_map(|r| {
                    let outcome = serde_json::from_str(r.get::<_, &str>(2)).ok()?;
                    let attempt = AttemptRef {
                        id: r.get(0),
                        attempt: r.get::<_, i64>(1) as u32,
                    };
                    Some((attempt, outcome))
                })
                .collect())
        })
    }

    fn outbox_get(&self, owner: &str, attempt: &AttemptRef) -> Result<Option<AttemptOutcome>> {
        let (owner, id, number) = (
            owner.to_string(),
            attempt.id.clone(),
            attempt.attempt as i64,
        );
        self.run(move |pool| async move {
            let text: Option<String> = pool
                .get()
                .await?
                .query_opt(
                    "SELECT outcome FROM outbox WHERE owner = $1 AND id = $2 AND attempt = $3",
                    &[&owner, &id, &number],
                )
                .await?
                .map(|r| r.get(0));
            Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
        })
    }

    fn outbox_remove(&self, owner: &str, id: &str, attempt: u32) -> Result<()> {
        let (owner, id) = (owner.to_string(), id.to_string());
        self.run(move |pool| async move {
            pool.get()
                .await?
                .execute(
                    "DELETE FROM outbox WHERE owner = $1 AND id = $2 AND attempt = $3",
                    &[&owner, &id, &(attempt as i64)],
                )
                .await?;
            Ok(())
        })
    }

    fn clear(&self, states: &[TaskState]) -> Result<u64> {
        if states.contains(&TaskState::Running) {
            return Err(StoreError::Invalid(
                "running tasks cannot be cleared; cancel them first".into(),
            ));
        }
        let names: Vec<String> = states.iter().map(|s| s.as_str().to_string()).collect();
        self.run(move |pool| async move {
            Ok(pool
                .get()
                .await?
                .execute("DELETE FROM tasks WHERE state = ANY($1)", &[&names])
                .await?)
        })
    }

    fn list(&self, filter: &ListFilter, offset: u64, limit: u64) -> Result<(Vec<Task>, u64)> {
        let (count, page, args) = filter.statements(COLUMNS, offset, limit, Dialect::Postgres);
        let (count, page) = (
            postgres_placeholders(&count).into_owned(),
            postgres_placeholders(&page).into_owned(),
        );
        self.run(move |pool| async move {
            let client = pool.get().await?;
            let params = postgres_params(&args);
            let total: i64 = client.query_one(&count, &params).await?.get(0);
            let tasks = client
                .query(&page, &params)
                .await?
                .iter()
                .map(task_from_row)
                .collect();
            Ok((tasks, total as u64))
        })
    }

    fn counts(&self) -> Result<Vec<(TaskState, u64)>> {
        self.run(move |pool| async move {
            let rows = pool
                .get()
                .await?
                .query("SELECT state, COUNT(*) FROM tasks GROUP BY state", &[])
                .await?;
            let rows: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            Ok(counts_by_state(&rows))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_kept_out_of_logs() {
        assert_eq!(
            redacted("postgres://app:s3cret@127.0.0.1:5432/q?sslmode=require"),
            "postgres://app:***@127.0.0.1:5432/q?sslmode=require"
        );
        assert_eq!(
            redacted("postgres://app@127.0.0.1/q"),
            "postgres://app@127.0.0.1/q"
        );
    }

    #[test]
    fn schema_names_are_plain_identifiers() {
        assert!(check_schema_name("mcpplus").is_ok());
        assert!(check_schema_name("_tenant_2").is_ok());
        for bad in [
            "",
            "2fast",
            "Upper",
            "a-b",
            "x; DROP TABLE tasks",
            &"a".repeat(41),
        ] {
            assert!(check_schema_name(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
