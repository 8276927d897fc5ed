//! One pulling loop per peer: drives an [`OwnerPull`] (the decision logic)
//! with the clock, the peer's answers over the mesh, and the runs of granted
//! tasks through this node's [`TaskRunner`]. A peer that is unreachable just
//! answers nothing: the pull logic fences its attempts and keeps finished
//! outcomes in the outbox until the peer is back.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use libp2p::PeerId;
use mcpplus_queue::pull::{Action, OwnerPull, PullConfig, Purpose};
use mcpplus_queue::remote::{AttemptRef, Grant, OwnerRequest, OwnerResponse};
use mcpplus_queue::worker::{ProgressSink, TaskRunner, now_ms};
use mcpplus_queue::{AttemptOutcome, QueueStore, Task, TaskState};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::node::MeshHandle;
use crate::protocol::{MeshRequest, MeshResponse};

/// The shortest gap between two progress reports sent to an owner.
const PROGRESS_EVERY: Duration = Duration::from_millis(200);

/// The tools this node hosts now (asked before every claim: hot loads change it).
pub type HostedTools = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// How a node pulls from its peers.
#[derive(Clone)]
pub struct DriverOptions {
    pub slots: usize,
    pub lease: Duration,
    pub poll: Duration,
    pub runner: Arc<dyn TaskRunner>,
    /// This node's store, for the outbox.
    pub store: Arc<QueueStore>,
    pub tools: HostedTools,
}

enum Event {
    Answer {
        purpose: Purpose,
        sent_at: i64,
        response: OwnerResponse,
    },
    Finished {
        slot: usize,
        attempt: AttemptRef,
        outcome: AttemptOutcome,
    },
}

/// Pull from `owner` until `stop`.
pub async fn drive(
    owner: PeerId,
    mesh: MeshHandle,
    options: DriverOptions,
    stop: CancellationToken,
) {
    let config = PullConfig {
        worker: mesh.local_peer_id().to_string(),
        tools: (options.tools)(),
        slots: options.slots,
        poll_ms: options.poll.as_millis() as i64,
        retry_ms: (options.lease.as_millis() as i64 / 6).max(50),
        lease_ms: options.lease.as_millis() as u64,
    };
    let store = options.store.clone();
    let owner_text = owner.to_string();
    let made =
        tokio::task::spawn_blocking(move || OwnerPull::new(owner_text, config, store, now_ms()))
            .await;
    let mut pull = match made {
        Ok(Ok(pull)) => pull,
        Ok(Err(e)) => {
            tracing::error!(event = "mesh.pull_failed", peer = %owner, error = %e, "cannot read the outbox");
            return;
        }
        Err(_) => return,
    };
    let (events, mut received) = mpsc::unbounded_channel();
    let mut runs: HashMap<usize, CancellationToken> = HashMap::new();
    let told_denied = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tools_read = tokio::time::Instant::now();
    // Fine enough for fencing: well under a third of any allowed lease (>= 300 ms).
    let mut ticker = tokio::time::interval(Duration::from_millis(50).min(options.poll));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let hint = mesh.ready_hint(owner);
    loop {
        let mut actions = tokio::select! {
            _ = stop.cancelled() => break,
            _ = hint.notified() => {
                pull.poke(now_ms());
                Vec::new()
            }
            _ = ticker.tick() => {
                // Hot loads change what this node hosts; a poll interval of
                // staleness is fine and keeps the catalog off the 50 ms tick.
                if tools_read.elapsed() >= options.poll {
                    pull.set_tools((options.tools)());
                    tools_read = tokio::time::Instant::now();
                }
                pull.tick(now_ms())
            }
            Some(event) = received.recv() => match event {
                Event::Answer { purpose, sent_at, response } => pull.answered(purpose, sent_at, response, now_ms()),
                Event::Finished { slot, attempt, outcome } => {
                    runs.remove(&slot);
                    // One small fsync'd insert: done in place, the loop is this peer's alone.
                    match tokio::task::block_in_place(|| pull.finished(slot, &attempt, outcome, now_ms())) {
                        Ok(actions) => actions,
                        Err(e) => {
                            tracing::error!(event = "mesh.outbox_failed", peer = %owner, task = %attempt.id, error = %e,
                                "cannot keep a finished outcome; the owner will run the task again");
                            Vec::new()
                        }
                    }
                }
            },
        };
        // A slot freed by this event claims again now, not at the next tick.
        actions.extend(pull.tick(now_ms()));
        for action in actions {
            match action {
                Action::Send(out) => {
                    let (mesh, events) = (mesh.clone(), events.clone());
                    let told = told_denied.clone();
                    tokio::spawn(async move {
                        match mesh.request(owner, MeshRequest::Queue(out.request)).await {
                            Ok(MeshResponse::Queue(response)) => {
                                let _ = events.send(Event::Answer {
                                    purpose: out.purpose,
                                    sent_at: out.sent_at,
                                    response,
                                });
                            }
                            // Said once per peer: the slots keep asking at their poll.
                            Ok(MeshResponse::Denied { error }) => {
                                if !told.swap(true, std::sync::atomic::Ordering::Relaxed) {
                                    tracing::warn!(event = "mesh.request_denied", peer = %owner, error = %error,
                                        "a peer refuses this node's requests");
                                }
                            }
                            // Unreachable or timed out: as if lost; the pull logic retries.
                            Ok(
                                MeshResponse::Caps(_)
                                | MeshResponse::Ack
                                | MeshResponse::Submitted { .. }
                                | MeshResponse::Refused { .. },
                            )
                            | Err(_) => {}
                        }
                    });
                }
                Action::Start { slot, grant } => {
                    let cancel = CancellationToken::new();
                    runs.insert(slot, cancel.clone());
                    tracing::info!(event = "queue.remote_started", peer = %owner, task = %grant.id,
                        tool = %grant.tool, attempt = grant.attempt, "running a peer's task");
                    let (runner, events) = (options.runner.clone(), events.clone());
                    let owner_text = owner.to_string();
                    let progress = relay_progress(mesh.clone(), owner, &grant);
                    tokio::spawn(async move {
                        let attempt = AttemptRef {
                            id: grant.id.clone(),
                            attempt: grant.attempt,
                        };
                        let task = task_of(&grant, &owner_text);
                        let run = runner.run(&task, cancel, progress);
                        let outcome = match grant.timeout_ms {
                            Some(ms) => tokio::time::timeout(Duration::from_millis(ms), run)
                                .await
                                .unwrap_or_else(|_| AttemptOutcome::Failed {
                                    error: format!(
                                        "the attempt took longer than the task's timeout of {ms} ms"
                                    ),
                                    retryable: true,
                                    result: None,
                                }),
                            None => run.await,
                        };
                        let _ = events.send(Event::Finished {
                            slot,
                            attempt,
                            outcome,
                        });
                    });
                }
                Action::Stop { slot, attempt, why } => {
                    if let Some(cancel) = runs.remove(&slot) {
                        cancel.cancel();
                    }
                    tracing::warn!(event = "queue.remote_stopped", peer = %owner, task = %attempt.id,
                        attempt = attempt.attempt, why = ?why, "stopped a peer's task");
                }
                Action::Reported { attempt, settled } => {
                    tracing::info!(event = "queue.remote_reported", peer = %owner, task = %attempt.id,
                        attempt = attempt.attempt, settled = ?settled, "the owner answered an outcome");
                }
            }
        }
    }
    for cancel in runs.values() {
        cancel.cancel();
    }
}

/// Progress of a peer's task goes back to its owner, at most every
/// [`PROGRESS_EVERY`] (the last report before the outcome may be skipped: the
/// outcome supersedes it). Lost reports are not sent again.
fn relay_progress(mesh: MeshHandle, owner: PeerId, grant: &Grant) -> ProgressSink {
    let (id, attempt) = (grant.id.clone(), grant.attempt);
    let last_sent = std::sync::Mutex::new(None::<tokio::time::Instant>);
    let runtime = tokio::runtime::Handle::current();
    Arc::new(move |progress, total, message| {
        let now = tokio::time::Instant::now();
        {
            let mut last = last_sent.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|at| now - at < PROGRESS_EVERY) {
                return;
            }
            *last = Some(now);
        }
        let request = MeshRequest::Queue(OwnerRequest::Progress {
            id: id.clone(),
            attempt,
            progress,
            total,
            message,
        });
        let mesh = mesh.clone();
        runtime.spawn(async move {
            let _ = mesh.request(owner, request).await;
        });
    })
}

/// The task as a [`TaskRunner`] sees it: what the grant says.
fn task_of(grant: &Grant, owner: &str) -> Task {
    let now = now_ms();
    Task {
        id: grant.id.clone(),
        tool: grant.tool.clone(),
        arguments: grant.arguments.clone(),
        priority: 1.0,
        tags: Vec::new(),
        metadata: serde_json::Value::Object(Default::default()),
        timeout_ms: grant.timeout_ms,
        max_attempts: grant.attempt,
        backoff_ms: 0,
        idempotency_key: None,
        state: TaskState::Running,
        attempt: grant.attempt,
        worker: None,
        lease_until_ms: None,
        not_before_ms: 0,
        progress: None,
        progress_total: None,
        progress_message: None,
        result: None,
        error: None,
        created_ms: now,
        started_ms: Some(now),
        finished_ms: None,
        retries: 0,
        remote_peer: Some(owner.to_string()),
        input_requests: None,
        input_responses: None,
    }
}
