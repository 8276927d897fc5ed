//! Execution slots on this node: each slot claims the next task it may run,
//! keeps the lease alive while the task runs, and records the outcome. What
//! running a task means is the [`TaskRunner`] the pool is given; the server's
//! runs the named tool through the sandbox (`mcpplus::runner`), tests use
//! plain closures.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{AttemptOutcome, Claim, Lease, QueueStore, Task};

/// Milliseconds since the Unix epoch: the queue's clock.
///
/// Read from the monotonic clock, anchored once to the wall clock when the
/// process starts: leases, backoffs and heartbeats measured within one
/// process cannot be cut short or stretched by a wall-clock step (NTP, an
/// operator). Times written to the store stay comparable across restarts,
/// since each process anchors to the wall clock again.
pub fn now_ms() -> i64 {
    static ANCHOR: std::sync::LazyLock<(std::time::Instant, i64)> =
        std::sync::LazyLock::new(|| {
            let wall = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64);
            (std::time::Instant::now(), wall)
        });
    let (started, wall) = *ANCHOR;
    wall + started.elapsed().as_millis() as i64
}

/// The shortest gap between two progress writes of one attempt.
const PROGRESS_WRITE_EVERY: Duration = Duration::from_millis(250);

/// Progress writes of one attempt waiting to be written, at most.
const PROGRESS_BACKLOG: usize = 16;

/// What an attempt's progress writer does next.
enum Write {
    Progress(f64, Option<f64>, Option<String>),
    /// Everything before it is written: answer.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Progress reported by a running task: (progress, total, message).
pub type ProgressSink = Arc<dyn Fn(f64, Option<f64>, Option<String>) + Send + Sync>;

/// Runs one attempt of a task.
pub trait TaskRunner: Send + Sync + 'static {
    fn run<'a>(
        &'a self,
        task: &'a Task,
        cancel: CancellationToken,
        progress: ProgressSink,
    ) -> Pin<Box<dyn Future<Output = AttemptOutcome> + Send + 'a>>;

    /// The tools this runner can run now, when it knows (a served catalog):
    /// a worker for "any tool" then claims only these.
    fn hosted_tools(&self) -> Option<Vec<String>> {
        None
    }
}

/// One worker: `slots` tasks at once, of the tools it may run.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub id: String,
    /// `None`: any tool.
    pub tools: Option<Vec<String>>,
    pub slots: usize,
    /// How long a claim lasts without a heartbeat.
    pub lease: Duration,
    /// How often an idle slot looks for work.
    pub poll: Duration,
}

/// What a pool's slots are doing and have done.
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Task id → the attempt running it.
    running: std::sync::Mutex<std::collections::BTreeMap<String, u32>>,
    pub completed: AtomicU64,
    /// Attempts that failed (the task may have been re-queued).
    pub failed: AtomicU64,
}

impl WorkerStats {
    /// The tasks running now, by id, with their attempt.
    pub fn running(&self) -> Vec<(String, u32)> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    fn set_running(&self, id: &str, attempt: Option<u32>) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        match attempt {
            Some(a) => running.insert(id.to_string(), a),
            None => running.remove(id),
        };
    }
}

/// Running workers (and, from [`Self::start`], the lease sweeper); dropping
/// it (or [`Self::stop`]) stops claiming. Attempts still running are
/// abandoned and, their leases lapsing, run again elsewhere: at-least-once
/// execution.
pub struct WorkerPool {
    store: Arc<QueueStore>,
    stop: CancellationToken,
    tasks: JoinSet<()>,
    stats: Arc<WorkerStats>,
}

impl WorkerPool {
    /// `workers` and a lease sweeper.
    pub fn start(
        store: Arc<QueueStore>,
        runner: Arc<dyn TaskRunner>,
        workers: Vec<WorkerConfig>,
    ) -> Self {
        let sweep_every = workers
            .iter()
            .map(|w| w.lease / 2)
            .min()
            .unwrap_or(Duration::from_secs(1));
        let mut pool = Self::empty(store);
        pool.tasks
            .spawn(sweep(pool.store.clone(), sweep_every, pool.stop.clone()));
        for worker in workers {
            pool.add(&runner, worker);
        }
        pool
    }

    /// One worker's slots, no sweeper.
    pub fn worker(
        store: Arc<QueueStore>,
        runner: Arc<dyn TaskRunner>,
        worker: WorkerConfig,
    ) -> Self {
        let mut pool = Self::empty(store);
        pool.add(&runner, worker);
        pool
    }

    /// Only the lease sweeper, checking every `every`.
    pub fn sweeper(store: Arc<QueueStore>, every: Duration) -> Self {
        let mut pool = Self::empty(store);
        pool.tasks
            .spawn(sweep(pool.store.clone(), every, pool.stop.clone()));
        pool
    }

    fn empty(store: Arc<QueueStore>) -> Self {
        Self {
            store,
            stop: CancellationToken::new(),
            tasks: JoinSet::new(),
            stats: Arc::default(),
        }
    }

    fn add(&mut self, runner: &Arc<dyn TaskRunner>, worker: WorkerConfig) {
        let worker = Arc::new(worker);
        for slot in 0..worker.slots {
            self.tasks.spawn(run_slot(
                self.store.clone(),
                runner.clone(),
                worker.clone(),
                slot,
                self.stop.clone(),
                self.stats.clone(),
            ));
        }
    }

    pub fn stats(&self) -> &Arc<WorkerStats> {
        &self.stats
    }

    /// Stop claiming and wait for the slots to finish what they run.
    pub async fn stop(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }

    /// Stop claiming, give running attempts up to `grace` to finish, then stop
    /// the rest: each is recorded as a failed attempt (`why`) and goes back to
    /// the queue at once. Returns how many were stopped.
    pub async fn stop_within(mut self, grace: Duration, why: &str) -> usize {
        self.stop.cancel();
        let drained = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await
        .is_ok();
        if drained {
            return 0;
        }
        let abandoned = self.stats.running();
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
        for (id, attempt) in &abandoned {
            let (id, attempt, why) = (id.clone(), *attempt, why.to_string());
            blocking(&self.store, move |s| {
                s.fail(&id, attempt, &why, true, now_ms())
            })
            .await;
        }
        abandoned.len()
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Run a blocking store operation off the async threads (commits fsync).
/// `None` when the blocking task panicked or was cancelled.
pub async fn blocking<T: Send + 'static>(
    store: &Arc<QueueStore>,
    f: impl FnOnce(&QueueStore) -> T + Send + 'static,
) -> Option<T> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store)).await.ok()
}

async fn sweep(store: Arc<QueueStore>, every: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match blocking(&store, |s| s.expire_leases(now_ms())).await {
            Some(Ok(ids)) if !ids.is_empty() => tracing::warn!(
                event = "queue.lease_expired",
                tasks = ?ids,
                "tasks whose worker stopped heartbeating go back to the queue"
            ),
            Some(Err(e)) => {
                tracing::error!(event = "queue.error", error = %e, "lease sweep failed")
            }
            _ => {}
        }
    }
}

/// What a slot's claims are recorded as (`worker` of a task, `worker_id` of
/// task_status): `<worker>/<slot>`, and on a database that several nodes
/// share `<worker>/<slot>@<host>:<pid>`, so an operator sees which node runs
/// a task. The `<worker>/` prefix is what worker filters match.
fn slot_name(store: &QueueStore, worker: &str, slot: usize) -> String {
    if store.backend() == "sqlite" {
        return format!("{worker}/{slot}");
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    format!("{worker}/{slot}@{host}:{}", std::process::id())
}

async fn run_slot(
    store: Arc<QueueStore>,
    runner: Arc<dyn TaskRunner>,
    worker: Arc<WorkerConfig>,
    slot: usize,
    stop: CancellationToken,
    stats: Arc<WorkerStats>,
) {
    let name = slot_name(&store, &worker.id, slot);
    while !stop.is_cancelled() {
        // A worker for any tool claims only what this node hosts now: in a
        // mesh, other tasks are for peers to pull.
        let tools = worker.tools.clone().or_else(|| runner.hosted_tools());
        let (who, lease) = (name.clone(), worker.lease);
        let claimed = blocking(&store, move |s| {
            let now = now_ms();
            s.claim(&who, tools.as_deref(), now + lease.as_millis() as i64, now)
        })
        .await;
        match claimed {
            Some(Ok(Some(claim))) => {
                run_claim(&store, runner.as_ref(), &worker, claim, &stats).await
            }
            Some(Err(e)) => {
                tracing::error!(event = "queue.error", worker = %name, error = %e, "claiming failed");
                idle(&store, &stop, worker.poll).await;
            }
            _ => idle(&store, &stop, worker.poll).await,
        }
    }
}

/// Wait for a task to become ready, the poll interval (for backoffs that end
/// without a wake-up), or the stop.
async fn idle(store: &QueueStore, stop: &CancellationToken, poll: Duration) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = store.ready() => {}
        _ = tokio::time::sleep(poll) => {}
    }
}

/// Run one attempt: heartbeat while it runs, stop it if the task is cancelled
/// or the lease lost, and record the outcome (refused if the attempt no
/// longer owns the task).
async fn run_claim(
    store: &Arc<QueueStore>,
    runner: &dyn TaskRunner,
    worker: &WorkerConfig,
    claim: Claim,
    stats: &WorkerStats,
) {
    let Claim { task, attempt } = claim;
    stats.set_running(&task.id, Some(attempt));
    let _finished = Finished(stats, &task.id);
    let cancel = CancellationToken::new();
    // Aborted also when this attempt is dropped (its worker stopped).
    let _heartbeat = AbortOnDrop(tokio::spawn(keep_lease(
        store.clone(),
        task.id.clone(),
        attempt,
        worker.lease,
        cancel.clone(),
    )));
    // Progress is written in order by one task per attempt, and every write
    // sent before the outcome is recorded first (`Write::Flush` below): on a
    // backend where each write is a round trip, a fire-and-forget final
    // report could otherwise land after the outcome and be refused.
    let (writes, mut pending_writes) = tokio::sync::mpsc::channel::<Write>(PROGRESS_BACKLOG);
    let _writer = AbortOnDrop(tokio::spawn({
        let (store, id) = (store.clone(), task.id.clone());
        async move {
            while let Some(write) = pending_writes.recv().await {
                match write {
                    Write::Progress(done, total, message) => {
                        let id = id.clone();
                        // Best effort: progress is advisory.
                        let _ = blocking(&store, move |s| {
                            s.progress(&id, attempt, done, total, message.as_deref())
                        })
                        .await;
                    }
                    Write::Flush(done) => {
                        let _ = done.send(());
                    }
                }
            }
        }
    }));
    let progress: ProgressSink = {
        let writes = writes.clone();
        let last_write = std::sync::Mutex::new(None::<std::time::Instant>);
        Arc::new(move |done, total, message| {
            // Each write is a commit: at most one per PROGRESS_WRITE_EVERY,
            // and the final report always.
            let finished = total.is_some_and(|t| done >= t);
            {
                let mut last = last_write.lock().unwrap_or_else(|e| e.into_inner());
                let now = std::time::Instant::now();
                if !finished && last.is_some_and(|at| now - at < PROGRESS_WRITE_EVERY) {
                    return;
                }
                *last = Some(now);
            }
            // Full (a tool repeating "finished" reports faster than they are
            // written): this one is dropped; progress is advisory.
            let _ = writes.try_send(Write::Progress(done, total, message));
        })
    };
    tracing::debug!(event = "queue.task_started", task = %task.id, tool = %task.tool, attempt, "task attempt started");
    let run = runner.run(&task, cancel.clone(), progress);
    let outcome = match task.timeout_ms {
        Some(ms) => tokio::time::timeout(Duration::from_millis(ms), run)
            .await
            .unwrap_or_else(|_| AttemptOutcome::Failed {
                error: format!("the attempt took longer than the task's timeout of {ms} ms"),
                retryable: true,
                result: None,
            }),
        None => run.await,
    };
    drop(_heartbeat);
    // The progress sent so far is written before the outcome.
    let (flushed, written) = tokio::sync::oneshot::channel();
    if writes.send(Write::Flush(flushed)).await.is_ok() {
        let _ = written.await;
    }
    let id = task.id.clone();
    let recorded = blocking(store, move |s| match outcome {
        AttemptOutcome::Completed(result) => s
            .complete(&id, attempt, &result, now_ms())
            .map(|ok| ok.then_some("completed")),
        AttemptOutcome::Failed {
            error,
            retryable,
            result,
        } => s
            .fail_with_result(&id, attempt, &error, result.as_ref(), retryable, now_ms())
            .map(|next| next.map(|state| state.as_str())),
        outcome @ AttemptOutcome::InputRequired { .. } => s
            .settle(&id, attempt, &outcome, now_ms())
            .map(|settled| match settled {
                crate::Settled::Recorded(state) => Some(state.as_str()),
                crate::Settled::AlreadyRecorded | crate::Settled::Stale => None,
            }),
    })
    .await;
    let outcome = match &recorded {
        Some(Ok(Some("completed"))) => Some("completed"),
        Some(Ok(Some("queued"))) => Some("retry"),
        Some(Ok(Some("waiting_input"))) => Some("waiting_input"),
        Some(Ok(Some(_))) => Some("failed"),
        Some(Ok(None)) => Some("stale"),
        _ => None,
    };
    match outcome {
        Some("completed") => stats.completed.fetch_add(1, Ordering::Relaxed),
        Some("retry" | "failed") => stats.failed.fetch_add(1, Ordering::Relaxed),
        _ => 0,
    };
    if let Some(outcome) = outcome {
        mcpplus_telemetry::metrics::metrics()
            .queue_attempts
            .get_or_create(&vec![("outcome", outcome.to_string())])
            .inc();
    }
    match recorded {
        Some(Ok(Some(state))) => {
            tracing::info!(event = "queue.task_finished", task = %task.id, tool = %task.tool, attempt, state, "task attempt finished")
        }
        Some(Ok(None)) => {
            tracing::warn!(event = "queue.task_stale", task = %task.id, attempt, "the attempt finished after losing the task (cancelled or lease expired); its outcome is discarded")
        }
        Some(Err(e)) => {
            tracing::error!(event = "queue.error", task = %task.id, error = %e, "recording the outcome failed")
        }
        None => {}
    }
}

/// Takes a task off its worker's running list however the attempt ends.
struct Finished<'a>(&'a WorkerStats, &'a str);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.0.set_running(self.1, None);
    }
}

/// A background task that ends with its owner.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn keep_lease(
    store: Arc<QueueStore>,
    id: String,
    attempt: u32,
    lease: Duration,
    cancel: CancellationToken,
) {
    loop {
        tokio::time::sleep(lease / 3).await;
        let id = id.clone();
        let renewed = blocking(&store, move |s| {
            s.heartbeat(&id, attempt, now_ms() + lease.as_millis() as i64)
        })
        .await;
        match renewed {
            Some(Ok(Lease::Renewed)) => {}
            Some(Ok(Lease::Cancelled | Lease::Lost)) => {
                cancel.cancel();
                return;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod clock_tests {
    #[test]
    fn the_queue_clock_never_goes_back_and_starts_at_the_wall_clock() {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let mut last = super::now_ms();
        assert!((last - wall).abs() < 60_000, "anchored to the wall clock");
        for _ in 0..100_000 {
            let now = super::now_ms();
            assert!(now >= last);
            last = now;
        }
    }
}
