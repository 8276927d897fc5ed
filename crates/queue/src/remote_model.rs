//! The queue across nodes, model-checked: one owner ([`RemoteOwner`] over a
//! real store) and two worker nodes ([`OwnerPull`], with their own stores as
//! outboxes) exchange the real protocol messages over a channel that drops,
//! duplicates and reorders them, while the test injects partitions (a
//! worker's link cut for up to three leases), worker stalls, worker and owner
//! restarts, cancellations and lease sweeps at random.
//!
//! Checked after every step (docs/queue.md, "Across nodes"):
//! - at most one completion is recorded per task, and only from the attempt
//!   that held the task;
//! - no two attempts of a task execute at once, unless the worker running
//!   the older one was stalled for longer than lease/3 minus one tick;
//! - a task never runs more times than it had attempts.
//!
//! Then the network heals and every task must end (completed, failed or
//! cancelled) with every outbox delivered: nothing accepted is lost.
//!
//! `MCPPLUS_MODEL_SEEDS` (default 16) and `MCPPLUS_MODEL_STEPS` (default
//! 10,000) set the size; `scripts/queue-model.sh` runs 256 seeds.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::json;

use crate::pull::{Action, OwnerPull, PullConfig, Purpose};
use crate::remote::{AttemptRef, OwnerRequest, OwnerResponse, RemoteOwner};
use crate::{AttemptOutcome, NewTask, QueueStore, Settled, TaskState};

const LEASE_MS: i64 = 3_000;
/// The largest clock step: workers tick at least this often unless stalled.
const STEP_MS: i64 = LEASE_MS / 100;
/// A stall at least this long may let two attempts overlap (G4's margin).
const LONG_STALL_MS: i64 = LEASE_MS / 3 - STEP_MS;
const WORKERS: usize = 2;
const SLOTS: usize = 2;
const MAX_TASKS: usize = 400;

enum Message {
    Request {
        worker: usize,
        request: OwnerRequest,
        purpose: Purpose,
        sent_at: i64,
    },
    Response {
        worker: usize,
        purpose: Purpose,
        sent_at: i64,
        response: OwnerResponse,
    },
}

#[derive(Debug)]
struct Execution {
    worker: usize,
    attempt: u32,
    start: i64,
    /// When the tool would be done (runs take up to four leases).
    done_at: i64,
    end: Option<i64>,
    /// Its worker stalled for longer than the fencing margin while it ran.
    stalled: bool,
}

struct Worker {
    pull: OwnerPull,
    outbox: Arc<QueueStore>,
    stalled_until: i64,
    /// Its link to the owner is cut until then: everything sent is lost.
    cut_until: i64,
}

struct Model {
    rng: fastrand::Rng,
    now: i64,
    store: Arc<QueueStore>,
    owner: RemoteOwner,
    workers: Vec<Worker>,
    network: Vec<Message>,
    tasks: Vec<String>,
    executions: HashMap<String, Vec<Execution>>,
    completions: HashMap<String, u32>,
    lossy: bool,
}

fn pull_config(worker: usize) -> PullConfig {
    PullConfig {
        worker: format!("w{worker}"),
        tools: vec!["echo".into()],
        slots: SLOTS,
        poll_ms: 200,
        retry_ms: 250,
        lease_ms: LEASE_MS as u64,
    }
}

impl Model {
    fn new(seed: u64) -> Self {
        let store = Arc::new(QueueStore::in_memory().unwrap());
        let workers = (0..WORKERS)
            .map(|w| {
                let outbox = Arc::new(QueueStore::in_memory().unwrap());
                Worker {
                    pull: OwnerPull::new("owner", pull_config(w), outbox.clone(), 0).unwrap(),
                    outbox,
                    stalled_until: 0,
                    cut_until: 0,
                }
            })
            .collect();
        Self {
            rng: fastrand::Rng::with_seed(seed),
            now: 0,
            owner: RemoteOwner::new(
                store.clone(),
                std::time::Duration::from_millis(LEASE_MS as u64),
            ),
            store,
            workers,
            network: Vec::new(),
            tasks: Vec::new(),
            executions: HashMap::new(),
            completions: HashMap::new(),
            lossy: true,
        }
    }

    fn awake(&self, worker: usize) -> bool {
        self.workers[worker].stalled_until <= self.now
    }

    fn apply(&mut self, worker: usize, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Send(out) => self.network.push(Message::Request {
                    worker,
                    request: out.request,
                    purpose: out.purpose,
                    sent_at: out.sent_at,
                }),
                Action::Start { grant, .. } => {
                    let runs = self.executions.entry(grant.id.clone()).or_default();
                    for other in runs.iter().filter(|e| e.end.is_none()) {
                        assert!(
                            other.stalled,
                            "t={}: attempt {} of {} starts on w{worker} while attempt {} runs on w{} since t={} (no long stall)",
                            self.now,
                            grant.attempt,
                            grant.id,
                            other.attempt,
                            other.worker,
                            other.start
                        );
                    }
                    let done_at = self.now + self.rng.i64(0..=4 * LEASE_MS);
                    let runs = self.executions.entry(grant.id.clone()).or_default();
                    runs.push(Execution {
                        worker,
                        attempt: grant.attempt,
                        start: self.now,
                        done_at,
                        end: None,
                        stalled: false,
                    });
                }
                Action::Stop { attempt, .. } => self.end_execution(worker, &attempt),
                Action::Reported { .. } => {}
            }
        }
    }

    fn end_execution(&mut self, worker: usize, attempt: &AttemptRef) {
        let now = self.now;
        if let Some(run) = self.executions.get_mut(&attempt.id).and_then(|runs| {
            runs.iter_mut()
                .find(|e| e.worker == worker && e.attempt == attempt.attempt && e.end.is_none())
        }) {
            run.end = Some(now);
        }
    }

    fn submit(&mut self) {
        let id = format!("t{}", self.tasks.len());
        let task = NewTask {
            id: Some(id.clone()),
            max_attempts: 1_000,
            backoff_ms: 10,
            ..NewTask::new("echo", json!({}))
        };
        self.store.submit(task, self.now).unwrap();
        self.tasks.push(id);
    }

    fn advance(&mut self) {
        self.now += self.rng.i64(1..=STEP_MS);
        for w in 0..WORKERS {
            if self.awake(w) {
                let actions = self.workers[w].pull.tick(self.now);
                self.apply(w, actions);
            }
        }
    }

    /// Deliver message `index`; with `keep`, a copy stays in flight.
    fn deliver(&mut self, index: usize, keep: bool) {
        let message = if keep {
            match &self.network[index] {
                Message::Request {
                    worker,
                    request,
                    purpose,
                    sent_at,
                } => Message::Request {
                    worker: *worker,
                    request: request.clone(),
                    purpose: purpose.clone(),
                    sent_at: *sent_at,
                },
                Message::Response {
                    worker,
                    purpose,
                    sent_at,
                    response,
                } => Message::Response {
                    worker: *worker,
                    purpose: purpose.clone(),
                    sent_at: *sent_at,
                    response: response.clone(),
                },
            }
        } else {
            self.network.swap_remove(index)
        };
        match message {
            Message::Request {
                worker,
                request,
                purpose,
                sent_at,
            } => {
                let completing = match &request {
                    OwnerRequest::Complete { id, attempt, .. } => Some((id.clone(), *attempt)),
                    _ => None,
                };
                let response = self.owner.handle(&format!("w{worker}"), request, self.now);
                if let (Some((id, attempt)), OwnerResponse::Settled { settled }) =
                    (&completing, &response)
                {
                    self.check_settled(id, *attempt, *settled);
                }
                self.network.push(Message::Response {
                    worker,
                    purpose,
                    sent_at,
                    response,
                });
            }
            Message::Response {
                worker,
                purpose,
                sent_at,
                response,
            } => {
                let actions = self.workers[worker]
                    .pull
                    .answered(purpose, sent_at, response, self.now);
                self.apply(worker, actions);
            }
        }
    }

    fn check_settled(&mut self, id: &str, attempt: u32, settled: Settled) {
        if settled != Settled::Recorded(TaskState::Completed) {
            return;
        }
        let count = self.completions.entry(id.to_string()).or_default();
        *count += 1;
        assert_eq!(*count, 1, "t={}: task {id} completed twice", self.now);
        let task = self.store.get(id).unwrap();
        assert_eq!(
            task.attempt, attempt,
            "{id} completed by attempt {attempt}, not the holder"
        );
        assert_eq!(task.result.unwrap()["attempt"], json!(attempt));
    }

    /// A running execution of an awake worker whose tool is done ends with
    /// an outcome.
    fn finish(&mut self, worker: usize, fail: bool) {
        let now = self.now;
        let running: Vec<_> = self.workers[worker]
            .pull
            .running()
            .into_iter()
            .filter(|(_, a)| {
                self.executions[&a.id].iter().any(|e| {
                    e.worker == worker
                        && e.attempt == a.attempt
                        && e.end.is_none()
                        && e.done_at <= now
                })
            })
            .collect();
        if running.is_empty() {
            return;
        }
        let (slot, attempt) = running[self.rng.usize(..running.len())].clone();
        let outcome = if fail {
            AttemptOutcome::Failed {
                error: "tool failed".into(),
                retryable: true,
                result: None,
            }
        } else {
            AttemptOutcome::Completed(json!({"attempt": attempt.attempt}))
        };
        self.end_execution(worker, &attempt);
        let actions = self.workers[worker]
            .pull
            .finished(slot, &attempt, outcome, self.now)
            .unwrap();
        self.apply(worker, actions);
    }

    fn stall(&mut self, worker: usize) {
        let pause = self.rng.i64(0..=LEASE_MS);
        self.workers[worker].stalled_until = self.now + pause;
        if pause >= LONG_STALL_MS {
            for runs in self.executions.values_mut() {
                for run in runs
                    .iter_mut()
                    .filter(|r| r.worker == worker && r.end.is_none())
                {
                    run.stalled = true;
                }
            }
        }
    }

    /// The worker process dies and starts again on the same store: its runs
    /// end, its outbox survives.
    fn restart_worker(&mut self, worker: usize) {
        for (_, attempt) in self.workers[worker].pull.running() {
            self.end_execution(worker, &attempt);
        }
        let outbox = self.workers[worker].outbox.clone();
        self.workers[worker].pull =
            OwnerPull::new("owner", pull_config(worker), outbox, self.now).unwrap();
    }

    /// The owner process dies and starts again on the same store.
    fn restart_owner(&mut self) {
        assert!(self.store.requeue_interrupted(self.now).unwrap().is_empty());
        self.store
            .extend_remote_leases(self.now + LEASE_MS)
            .unwrap();
        self.owner = RemoteOwner::new(
            self.store.clone(),
            std::time::Duration::from_millis(LEASE_MS as u64),
        );
    }

    fn open_tasks(&self) -> u64 {
        let counts = self.store.counts().unwrap();
        counts
            .iter()
            .filter(|(s, _)| !s.is_terminal())
            .map(|(_, n)| n)
            .sum()
    }

    /// One random step; the rates are per ten thousand. A step is ~6 ms of
    /// model time on average, so a lease is ~500 steps.
    fn step(&mut self) {
        let roll = self.rng.u32(0..10_000);
        match roll {
            0..1000 if self.tasks.len() < MAX_TASKS && self.open_tasks() < 6 => self.submit(),
            0..4000 => self.advance(),
            4000..7500 if !self.network.is_empty() => {
                let index = self.rng.usize(..self.network.len());
                let (worker, to_worker) = match &self.network[index] {
                    Message::Response { worker, .. } => (*worker, true),
                    Message::Request { worker, .. } => (*worker, false),
                };
                if to_worker && !self.awake(worker) {
                    return;
                }
                let cut = self.workers[worker].cut_until > self.now;
                if cut || self.lossy && self.rng.u32(0..100) < 10 {
                    self.network.swap_remove(index); // dropped
                } else {
                    let duplicate = self.lossy && self.rng.u32(0..100) < 10;
                    self.deliver(index, duplicate);
                }
            }
            7500..8700 => {
                let worker = self.rng.usize(..WORKERS);
                if self.awake(worker) {
                    let fail = self.rng.u32(0..100) < 20;
                    self.finish(worker, fail);
                }
            }
            8700..9200 => {
                self.store.expire_leases(self.now).unwrap();
            }
            9200..9205 if self.lossy => {
                let worker = self.rng.usize(..WORKERS);
                if self.awake(worker) {
                    self.stall(worker);
                }
            }
            9205..9210 if self.lossy && !self.tasks.is_empty() => {
                let id = self.tasks[self.rng.usize(..self.tasks.len())].clone();
                let _ = self.store.cancel(&id, Some("test"), self.now);
            }
            9210..9212 if self.lossy => {
                let worker = self.rng.usize(..WORKERS);
                self.restart_worker(worker)
            }
            9212..9214 if self.lossy => self.restart_owner(),
            9214..9224 if self.lossy => {
                // A partition of up to three leases.
                let worker = self.rng.usize(..WORKERS);
                self.workers[worker].cut_until = self.now + self.rng.i64(0..=3 * LEASE_MS);
            }
            _ => self.advance(),
        }
    }

    fn check_counts(&self) {
        for (id, runs) in &self.executions {
            let task = self.store.get(id).unwrap();
            assert!(
                runs.len() as u32 <= task.attempt,
                "{id}: {} executions but only {} attempts",
                runs.len(),
                task.attempt
            );
        }
    }

    /// No more losses, stalls or restarts: everything must settle.
    fn heal(&mut self) {
        self.lossy = false;
        for w in 0..WORKERS {
            self.workers[w].stalled_until = 0;
            self.workers[w].cut_until = 0;
        }
        for _ in 0..20_000 {
            let done = self
                .tasks
                .iter()
                .all(|id| self.store.get(id).unwrap().state.is_terminal())
                && self.network.is_empty()
                && self.workers.iter().all(|w| w.pull.unanswered() == 0);
            if done {
                return;
            }
            self.advance();
            while !self.network.is_empty() {
                self.deliver(0, false);
            }
            for w in 0..WORKERS {
                self.finish(w, false);
            }
            self.store.expire_leases(self.now).unwrap();
        }
        let open: Vec<_> = self
            .tasks
            .iter()
            .map(|id| self.store.get(id).unwrap())
            .filter(|t| !t.state.is_terminal())
            .map(|t| (t.id, t.state, t.attempt))
            .collect();
        panic!("after healing, tasks never ended: {open:?}");
    }
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn owner_and_two_workers_over_a_lossy_network_keep_the_guarantees() {
    let seeds = env_or("MCPPLUS_MODEL_SEEDS", 16);
    let steps = env_or("MCPPLUS_MODEL_STEPS", 10_000);
    let first = env_or("MCPPLUS_MODEL_FIRST_SEED", 1);
    let mut completed = 0;
    let mut stale_runs = 0;
    for seed in first..first + seeds {
        let mut model = Model::new(seed);
        for _ in 0..steps {
            model.step();
            model.check_counts();
        }
        model.heal();
        model.check_counts();
        completed += model.completions.len();
        stale_runs += model
            .executions
            .values()
            .map(|runs| runs.len().saturating_sub(1))
            .sum::<usize>();
    }
    // The run must have exercised the protocol, not idled.
    assert!(
        completed as u64 >= seeds * 5,
        "only {completed} tasks completed"
    );
    assert!(
        stale_runs > 0,
        "no task ever ran twice: losses and stalls were not exercised"
    );
}
