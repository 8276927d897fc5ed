//! The queue as a server runs it: the store in the data directory (locked
//! against a second server), the lease sweeper, the built-in worker `local`,
//! and the workers registered while serving (`worker_register`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::QueueStore;
use super::postgres_store::{Clock, PostgresOptions, PostgresStore, redacted};
use super::store::StoreError;
use super::worker::{TaskRunner, WorkerConfig, WorkerPool, now_ms};
use mcpplus_policy::config::queue::{MAX_SLOTS, QueueBackend, QueueConfig};

/// The queue's file inside the data directory.
pub const QUEUE_FILE: &str = "queue.sqlite3";
const LOCK_FILE: &str = "mcpplus.lock";
/// The built-in worker's id.
pub const LOCAL_WORKER: &str = "local";

/// Why a queue operation was refused; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Unavailable(String),
}

impl From<StoreError> for QueueError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Invalid(m) => QueueError::Invalid(m),
            StoreError::NotFound(_) => QueueError::NotFound(e.to_string()),
            StoreError::WrongState { .. } | StoreError::KeyConflict { .. } => {
                QueueError::Conflict(e.to_string())
            }
            StoreError::Sql(_) | StoreError::Postgres(_) => QueueError::Unavailable(e.to_string()),
        }
    }
}

/// A worker to register.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSpec {
    pub id: String,
    /// Empty: any tool.
    pub tools: Vec<String>,
    pub slots: u32,
    pub metadata: Value,
}

/// A registered worker and its counts.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerInfo {
    pub spec: WorkerSpec,
    /// `active`, or `draining` while it unregisters.
    pub status: &'static str,
    pub registered_at_ms: i64,
    pub running_tasks: Vec<String>,
    pub completed: u64,
    pub failed: u64,
}

/// What unregistering did.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerRemoved {
    pub id: String,
    pub completed: u64,
    pub abandoned: u32,
}

struct Registered {
    spec: WorkerSpec,
    registered_at_ms: i64,
    /// `None` while it drains.
    pool: Option<WorkerPool>,
    stats: Arc<super::worker::WorkerStats>,
}

pub struct QueueService {
    store: Arc<QueueStore>,
    runner: Arc<dyn TaskRunner>,
    config: QueueConfig,
    /// The SQLite file, or the database (password masked) and schema.
    location: String,
    /// The node's data directory (its lock, key and templates live there).
    data_dir: std::path::PathBuf,
    /// Shared with unregistering tasks, which finish even when their caller is gone.
    workers: Arc<Mutex<BTreeMap<String, Registered>>>,
    _sweeper: WorkerPool,
    /// Deletes finished tasks past `[queue] retention_ms`.
    _retention: Option<super::worker::AbortOnDrop>,
    /// Held for the server's life: one server per data directory.
    _lock: std::fs::File,
}

impl QueueService {
    /// Open the queue in `data_dir` (created if missing): lock it, re-queue
    /// the attempts a previous run left running, start the sweeper and, with
    /// `workers > 0`, the worker `local`.
    pub fn open(
        data_dir: &Path,
        config: QueueConfig,
        runner: Arc<dyn TaskRunner>,
    ) -> anyhow::Result<Self> {
        if !data_dir.exists() {
            use std::os::unix::fs::DirBuilderExt as _;
            // Private from the start: it holds the queue, the node key and the HTTP token.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(data_dir)
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot create the data directory {}: {e}; pass --data-dir DIR with a writable folder",
                        data_dir.display()
                    )
                })?;
        }
        let lock = lock_data_dir(data_dir)?;
        let (store, location) = match config.backend {
            QueueBackend::Sqlite => {
                let path = data_dir.join(QUEUE_FILE);
                if !path.exists() {
                    use std::os::unix::fs::OpenOptionsExt as _;
                    // Created 0600 before SQLite opens it (its -wal and -shm files copy the mode).
                    let _ = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&path);
                }
                let store = QueueStore::open(&path).map_err(|e| {
                    anyhow::anyhow!("cannot open the task queue {}: {e}", path.display())
                })?;
                (store, path.display().to_string())
            }
            QueueBackend::Postgres => {
                let url = config
                    .database_url()
                    .map_err(anyhow::Error::msg)?
                    .ok_or_else(|| {
                        anyhow::anyhow!("[queue] backend = \"postgres\" needs url or url_file")
                    })?;
                let location = format!("{} (schema {})", redacted(&url), config.schema);
                let store = PostgresStore::open(PostgresOptions {
                    url,
                    schema: config.schema.clone(),
                    ca_file: config.ca_file.clone(),
                    pool_size: config.pool_size as usize,
                    clock: Clock::Database,
                })
                .map_err(|e| anyhow::anyhow!("cannot open the task queue in PostgreSQL: {e}"))?;
                (QueueStore::with_backend(Box::new(store)), location)
            }
        };
        let store = Arc::new(store);
        let interrupted = store.requeue_interrupted(now_ms())?;
        if !interrupted.is_empty() {
            tracing::warn!(event = "queue.interrupted", count = interrupted.len(), tasks = ?interrupted,
                "tasks that were running when the server stopped go back to the queue");
        }
        let held_remotely =
            store.extend_remote_leases(now_ms() + config.lease().as_millis() as i64)?;
        if !held_remotely.is_empty() {
            tracing::info!(event = "queue.remote_grace", count = held_remotely.len(), tasks = ?held_remotely,
                "tasks held by other nodes' workers get one lease to report back");
        }
        let sweeper = WorkerPool::sweeper(store.clone(), config.lease() / 2);
        store.set_quotas(config.quotas());
        let retention = (config.retention_ms > 0).then(|| {
            super::worker::AbortOnDrop(tokio::spawn(purge_finished(
                store.clone(),
                Duration::from_millis(config.retention_ms),
            )))
        });
        let service = Self {
            store,
            runner,
            location,
            data_dir: data_dir.to_path_buf(),
            workers: Arc::default(),
            _sweeper: sweeper,
            _retention: retention,
            _lock: lock,
            config,
        };
        if service.config.workers > 0 {
            service.register(WorkerSpec {
                id: LOCAL_WORKER.into(),
                tools: Vec::new(),
                slots: service.config.workers,
                metadata: serde_json::json!({"builtIn": true}),
            })?;
        }
        Ok(service)
    }

    pub fn store(&self) -> &Arc<QueueStore> {
        &self.store
    }

    /// Whether this node's runner can run `tool` now (a runner that cannot
    /// tell is taken to run everything).
    pub fn hosts_locally(&self, tool: &str) -> bool {
        self.runner
            .hosted_tools()
            .is_none_or(|tools| tools.iter().any(|t| t == tool))
    }

    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    /// Where the tasks are kept: the SQLite file, or the PostgreSQL
    /// database (password masked) and schema.
    pub fn location(&self) -> &str {
        &self.location
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        self.store.backend()
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Registered>> {
        self.workers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start worker `spec.id` with its slots on this server.
    pub fn register(&self, spec: WorkerSpec) -> Result<WorkerInfo, QueueError> {
        if spec.id.trim().is_empty() {
            return Err(QueueError::Invalid("worker_id must not be empty".into()));
        }
        if spec.id.contains('/') {
            return Err(QueueError::Invalid(format!(
                "worker_id `{}` must not contain `/` (slots are named `worker/N`)",
                spec.id
            )));
        }
        if !(1..=MAX_SLOTS).contains(&spec.slots) {
            return Err(QueueError::Invalid(format!(
                "max_concurrent_tasks must be between 1 and {MAX_SLOTS}, got {}",
                spec.slots
            )));
        }
        if spec.tools.iter().any(|t| t.trim().is_empty()) {
            return Err(QueueError::Invalid(
                "capabilities (the tools the worker may run) must be non-empty tool names".into(),
            ));
        }
        let mut registry = self.registry();
        if registry.contains_key(&spec.id) {
            return Err(QueueError::Conflict(format!(
                "a worker `{}` is already registered; unregister it first or choose another id",
                spec.id
            )));
        }
        let pool = WorkerPool::worker(
            self.store.clone(),
            self.runner.clone(),
            WorkerConfig {
                id: spec.id.clone(),
                tools: (!spec.tools.is_empty()).then(|| spec.tools.clone()),
                slots: spec.slots as usize,
                lease: self.config.lease(),
                poll: self.config.poll(),
            },
        );
        let registered = Registered {
            spec: spec.clone(),
            registered_at_ms: now_ms(),
            stats: pool.stats().clone(),
            pool: Some(pool),
        };
        let info = info(&registered);
        tracing::info!(event = "queue.worker_registered", worker = %spec.id, slots = spec.slots,
            tools = %spec.tools.join(","), "worker registered");
        registry.insert(spec.id, registered);
        Ok(info)
    }

    /// Stop worker `id`. Graceful: stop claiming and wait up to `timeout` for
    /// its running tasks; the rest (all of them when not graceful) are
    /// stopped and go back to the queue.
    pub async fn unregister(
        &self,
        id: &str,
        graceful: bool,
        timeout: Duration,
    ) -> Result<WorkerRemoved, QueueError> {
        let (pool, stats) = {
            let mut registry = self.registry();
            let Some(registered) = registry.get_mut(id) else {
                return Err(unknown_worker(id, &registry));
            };
            let Some(pool) = registered.pool.take() else {
                return Err(QueueError::Conflict(format!(
                    "worker `{id}` is already unregistering"
                )));
            };
            (pool, registered.stats.clone())
        };
        let grace = if graceful { timeout } else { Duration::ZERO };
        // The stop runs on its own task: a caller that gives up (a cancelled
        // call, a tool's time limit) cannot leave a half-unregistered worker.
        let workers = self.workers.clone();
        let name = id.to_string();
        let stopping = tokio::spawn(async move {
            let abandoned = pool
                .stop_within(
                    grace,
                    &format!("worker `{name}` was unregistered while the attempt ran"),
                )
                .await;
            workers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&name);
            tracing::info!(event = "queue.worker_unregistered", worker = %name, abandoned, "worker unregistered");
            abandoned
        });
        let abandoned = stopping
            .await
            .map_err(|e| QueueError::Unavailable(format!("stopping worker `{id}` failed: {e}")))?;
        Ok(WorkerRemoved {
            id: id.to_string(),
            completed: stats.completed.load(Ordering::Relaxed),
            abandoned: abandoned as u32,
        })
    }

    pub fn worker(&self, id: &str) -> Result<WorkerInfo, QueueError> {
        let registry = self.registry();
        registry
            .get(id)
            .map(info)
            .ok_or_else(|| unknown_worker(id, &registry))
    }

    pub fn workers(&self) -> Vec<WorkerInfo> {
        self.registry().values().map(info).collect()
    }

    /// Stop every worker, waiting up to `grace` for running attempts.
    pub async fn shutdown(&self, grace: Duration) {
        let pools: Vec<WorkerPool> = self
            .registry()
            .values_mut()
            .filter_map(|r| r.pool.take())
            .collect();
        for pool in pools {
            pool.stop_within(grace, "the server shut down while the attempt ran")
                .await;
        }
    }
}

/// Every so often (a tenth of the retention, between 1 s and 1 h), delete the
/// tasks that finished more than `retention` ago.
async fn purge_finished(store: Arc<QueueStore>, retention: Duration) {
    let every = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(3600));
    loop {
        let before = now_ms() - retention.as_millis() as i64;
        match super::worker::blocking(&store, move |s| s.purge_finished(before)).await {
            Some(Ok(0)) | None => {}
            Some(Ok(n)) => {
                tracing::info!(
                    event = "queue.purged",
                    tasks = n,
                    retention_ms = retention.as_millis() as u64,
                    "deleted finished tasks past their retention"
                )
            }
            Some(Err(e)) => {
                tracing::error!(event = "queue.error", error = %e, "deleting old finished tasks failed")
            }
        }
        tokio::time::sleep(every).await;
    }
}

fn info(r: &Registered) -> WorkerInfo {
    WorkerInfo {
        spec: r.spec.clone(),
        status: if r.pool.is_some() {
            "active"
        } else {
            "draining"
        },
        registered_at_ms: r.registered_at_ms,
        running_tasks: r.stats.running().into_iter().map(|(id, _)| id).collect(),
        completed: r.stats.completed.load(Ordering::Relaxed),
        failed: r.stats.failed.load(Ordering::Relaxed),
    }
}

fn unknown_worker(id: &str, registry: &BTreeMap<String, Registered>) -> QueueError {
    let known: Vec<&str> = registry.keys().map(String::as_str).collect();
    QueueError::NotFound(format!(
        "there is no worker `{id}`; registered: {}",
        if known.is_empty() {
            "none".to_string()
        } else {
            known.join(", ")
        }
    ))
}

/// One server per data directory: a second one would run the same tasks.
fn lock_data_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {
            use std::io::Write as _;
            let _ = file.set_len(0);
            let _ = (&file).write_all(format!("{}\n", std::process::id()).as_bytes());
            Ok(file)
        }
        Err(std::fs::TryLockError::WouldBlock) => {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            anyhow::bail!(
                "the data directory {} is in use by another mcpplus server (pid {}); give this server its own with --data-dir DIR",
                dir.display(),
                holder.trim()
            )
        }
        Err(std::fs::TryLockError::Error(e)) => {
            anyhow::bail!("cannot lock {}: {e}", path.display())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;

    use super::*;
    use crate::worker::{ProgressSink, TaskRunner};
    use crate::{AttemptOutcome, NewTask, Task};

    /// Runs every task until it is stopped.
    struct Endless;

    impl TaskRunner for Endless {
        fn run<'a>(
            &'a self,
            _task: &'a Task,
            cancel: tokio_util::sync::CancellationToken,
            _progress: ProgressSink,
        ) -> Pin<Box<dyn Future<Output = AttemptOutcome> + Send + 'a>> {
            Box::pin(async move {
                cancel.cancelled().await;
                AttemptOutcome::Failed {
                    error: "stopped".into(),
                    retryable: true,
                    result: None,
                }
            })
        }
    }

    #[tokio::test]
    async fn an_unregister_whose_caller_gives_up_still_removes_the_worker() {
        let dir = std::env::temp_dir().join(format!("mcpplus-unregister-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = QueueConfig {
            workers: 0,
            ..QueueConfig::default()
        };
        let queue = Arc::new(QueueService::open(&dir, config, Arc::new(Endless)).unwrap());
        queue
            .register(WorkerSpec {
                id: "w".into(),
                tools: Vec::new(),
                slots: 1,
                metadata: Value::Null,
            })
            .unwrap();
        queue
            .store()
            .submit(NewTask::new("t", serde_json::json!({})), now_ms())
            .unwrap();
        // Wait until the worker runs the task.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while queue.worker("w").unwrap().running_tasks.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "the worker never started"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // A graceful unregister waiting up to 1 s, whose caller leaves after 50 ms.
        let gave_up = tokio::time::timeout(
            Duration::from_millis(50),
            queue.unregister("w", true, Duration::from_secs(1)),
        )
        .await;
        assert!(
            gave_up.is_err(),
            "the caller gave up before the grace ended"
        );
        // The stop carries on: the worker goes away and its task is queued again.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while queue.worker("w").is_ok() {
            assert!(
                std::time::Instant::now() < deadline,
                "a zombie worker stayed registered"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (tasks, _) = queue
            .store()
            .list(&crate::store::ListFilter::default(), 0, 10)
            .unwrap();
        assert_eq!(tasks[0].state, crate::TaskState::Queued, "{tasks:?}");
        // And the id can be registered again.
        queue
            .register(WorkerSpec {
                id: "w".into(),
                tools: vec!["none".into()],
                slots: 1,
                metadata: Value::Null,
            })
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
