//! The store against a reference model of the documented state machine
//! (proptest), plus worked examples of validation and idempotency.

use std::collections::HashMap;

use proptest::prelude::*;
use serde_json::json;

use super::store::ListFilter;
use super::*;

const LEASE_MS: i64 = 100;

fn task(tool: &str) -> NewTask {
    NewTask::new(tool, json!({"n": 1}))
}

#[test]
fn quotas_bound_what_submitters_and_tools_can_make_the_queue_hold() {
    use mcpplus_policy::config::queue::Quotas;
    let q = QueueStore::in_memory().unwrap();
    q.set_quotas(Quotas {
        max_queued: 2,
        max_payload_bytes: 64,
        max_result_bytes: 32,
    });
    let big = NewTask::new("t", json!({"data": "x".repeat(100)}));
    let e = q.submit(big, 0).unwrap_err().to_string();
    assert!(e.contains("max_payload_bytes") && e.contains("64"), "{e}");
    let first = q.submit(task("t"), 0).unwrap().0;
    q.submit(task("t"), 0).unwrap();
    let e = q.submit(task("t"), 0).unwrap_err().to_string();
    assert!(e.contains("max_queued") && e.contains('2'), "{e}");
    // A batch cannot slip past the limit either.
    assert!(q.submit_batch(vec![task("t")], 0).is_err());

    // A result over the limit fails the attempt, naming the limit; a small one is kept.
    let claim = q.claim("w", None, 1_000, 0).unwrap().unwrap();
    assert_eq!(claim.task.id, first.id);
    let settled = q
        .settle(
            &first.id,
            claim.attempt,
            &AttemptOutcome::Completed(json!({"r": "y".repeat(64)})),
            1,
        )
        .unwrap();
    assert_eq!(settled, Settled::Recorded(TaskState::Failed));
    let failed = q.get(&first.id).unwrap();
    assert!(failed.error.unwrap().contains("max_result_bytes"));
    assert_eq!(failed.result, None);
    let claim = q.claim("w", None, 1_000, 2).unwrap().unwrap();
    q.settle(
        &claim.task.id,
        claim.attempt,
        &AttemptOutcome::Completed(json!({"ok": 1})),
        3,
    )
    .unwrap();
    assert_eq!(
        q.get(&claim.task.id).unwrap().result,
        Some(json!({"ok": 1}))
    );

    // Room again now that both finished; retention deletes finished tasks only.
    let waiting = q.submit(task("t"), 4).unwrap().0;
    assert_eq!(
        q.purge_finished(3).unwrap(),
        1,
        "only the task finished at 1"
    );
    assert_eq!(q.purge_finished(10).unwrap(), 1);
    assert_eq!(q.get(&waiting.id).unwrap().state, TaskState::Queued);
}

#[test]
fn validation_says_what_to_fix() {
    let q = QueueStore::in_memory().unwrap();
    let err = |t: NewTask| q.submit(t, 0).unwrap_err().to_string();
    assert!(
        err(NewTask {
            priority: 0.0,
            ..task("t")
        })
        .contains("positive number")
    );
    assert!(
        err(NewTask {
            id: Some(" ".into()),
            ..task("t")
        })
        .contains("task_id must not be empty")
    );
    assert!(err(NewTask::new("t", json!([1]))).contains("must be a JSON object"));
    assert!(
        err(NewTask {
            tags: vec!["".into()],
            ..task("t")
        })
        .contains("tags")
    );
    assert!(
        err(NewTask {
            max_attempts: 0,
            ..task("t")
        })
        .contains("max_attempts")
    );
    q.submit(
        NewTask {
            id: Some("a".into()),
            ..task("t")
        },
        0,
    )
    .unwrap();
    assert!(
        err(NewTask {
            id: Some("a".into()),
            ..task("t")
        })
        .contains("already exists")
    );
}

#[test]
fn idempotency_keys_return_the_first_task_or_refuse_different_work() {
    let q = QueueStore::in_memory().unwrap();
    let keyed = |args| NewTask {
        idempotency_key: Some("k1".into()),
        ..NewTask::new("t", args)
    };
    let (first, new) = q.submit(keyed(json!({"a": 1})), 0).unwrap();
    assert!(new);
    let (again, new) = q.submit(keyed(json!({"a": 1})), 5).unwrap();
    assert!(!new);
    assert_eq!(again.id, first.id);
    let e = q.submit(keyed(json!({"a": 2})), 5).unwrap_err().to_string();
    assert!(e.contains("already used for task"), "{e}");
}

#[test]
fn a_task_survives_reopening_the_file() {
    let dir = std::env::temp_dir().join(format!("mcpplus-queue-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("queue.sqlite3");
    let _ = std::fs::remove_file(&path);
    {
        let q = QueueStore::open(&path).unwrap();
        q.submit(
            NewTask {
                id: Some("kept".into()),
                ..task("t")
            },
            1,
        )
        .unwrap();
    }
    let q = QueueStore::open(&path).unwrap();
    assert_eq!(q.get("kept").unwrap().state, TaskState::Queued);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn attempts_interrupted_by_a_stop_go_back_at_once_or_fail_when_out_of_attempts() {
    let q = QueueStore::in_memory().unwrap();
    let again = q.submit(task("t"), 1).unwrap().0.id;
    let last = q
        .submit(
            NewTask {
                max_attempts: 1,
                ..task("t")
            },
            1,
        )
        .unwrap()
        .0
        .id;
    let waiting = q.submit(task("t"), 1).unwrap().0.id;
    // Leases far in the future: only the restart can free these claims.
    q.claim("w/0", None, 1_000_000, 2).unwrap().unwrap();
    q.claim("w/1", None, 1_000_000, 2).unwrap().unwrap();
    let mut requeued = q.requeue_interrupted(3).unwrap();
    requeued.sort();
    let mut expected = vec![again.clone(), last.clone()];
    expected.sort();
    assert_eq!(requeued, expected);
    let again = q.get(&again).unwrap();
    assert_eq!(again.state, TaskState::Queued);
    assert!(again.error.unwrap().contains("interrupted"));
    assert_eq!(q.get(&last).unwrap().state, TaskState::Failed);
    assert_eq!(q.get(&waiting).unwrap().state, TaskState::Queued);
    assert!(q.requeue_interrupted(4).unwrap().is_empty());
}

// ---------------------------------------------------------------------------
// Reference model

#[derive(Debug, Clone)]
struct ModelTask {
    id: String,
    seq: u64,
    priority: f64,
    state: TaskState,
    attempt: u32,
    max_attempts: u32,
    backoff_ms: i64,
    not_before: i64,
    lease_until: Option<i64>,
    retries: u32,
}

#[derive(Default)]
struct Model {
    tasks: Vec<ModelTask>,
    next_seq: u64,
    paused: bool,
}

impl Model {
    fn find(&mut self, id: &str) -> Option<&mut ModelTask> {
        self.tasks.iter_mut().find(|t| t.id == id)
    }

    /// A task the store accepted as `id` (generated or chosen by the client).
    fn submit(&mut self, id: String, priority: f64, max_attempts: u32, backoff_ms: i64) -> String {
        self.next_seq += 1;
        self.tasks.push(ModelTask {
            id: id.clone(),
            seq: self.next_seq,
            priority,
            state: TaskState::Queued,
            attempt: 0,
            max_attempts,
            backoff_ms,
            not_before: 0,
            lease_until: None,
            retries: 0,
        });
        id
    }

    fn claim(&mut self, now: i64) -> Option<(String, u32)> {
        if self.paused {
            return None;
        }
        let next = self
            .tasks
            .iter_mut()
            .filter(|t| t.state == TaskState::Queued && t.not_before <= now)
            .max_by(|a, b| a.priority.total_cmp(&b.priority).then(b.seq.cmp(&a.seq)))?;
        next.state = TaskState::Running;
        next.attempt += 1;
        next.lease_until = Some(now + LEASE_MS);
        Some((next.id.clone(), next.attempt))
    }

    fn owns(&mut self, id: &str, attempt: u32) -> Option<&mut ModelTask> {
        self.find(id)
            .filter(|t| t.state == TaskState::Running && t.attempt == attempt)
    }

    fn settle_failure(t: &mut ModelTask, retryable: bool, now: i64) {
        t.lease_until = None;
        if retryable && t.attempt < t.max_attempts {
            t.state = TaskState::Queued;
            t.not_before = now + t.backoff_ms * (1 << (t.attempt - 1).min(20));
        } else {
            t.state = TaskState::Failed;
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Submit { priority: f64, max_attempts: u32 },
    SubmitNamed(u8),
    Claim,
    Heartbeat(usize),
    Complete(usize),
    Fail(usize, bool),
    Advance(i64),
    Expire,
    Cancel(usize),
    Retry(usize),
    SetPriority(usize, f64),
    Pause(bool),
    Clear(Vec<TaskState>),
}

fn priority() -> impl Strategy<Value = f64> {
    prop_oneof![Just(0.5), Just(1.0), Just(2.0), Just(5.0)]
}

fn op() -> impl Strategy<Value = Op> {
    let clearable = prop::sample::subsequence(
        vec![
            TaskState::Queued,
            TaskState::Completed,
            TaskState::Failed,
            TaskState::Cancelled,
        ],
        1..=2,
    );
    prop_oneof![
        4 => (priority(), 1..4u32).prop_map(|(priority, max_attempts)| Op::Submit { priority, max_attempts }),
        1 => (0..8u8).prop_map(Op::SubmitNamed),
        4 => Just(Op::Claim),
        2 => any::<usize>().prop_map(Op::Heartbeat),
        3 => any::<usize>().prop_map(Op::Complete),
        2 => (any::<usize>(), any::<bool>()).prop_map(|(i, r)| Op::Fail(i, r)),
        3 => (1..150i64).prop_map(Op::Advance),
        2 => Just(Op::Expire),
        1 => any::<usize>().prop_map(Op::Cancel),
        1 => any::<usize>().prop_map(Op::Retry),
        1 => (any::<usize>(), priority()).prop_map(|(i, p)| Op::SetPriority(i, p)),
        1 => any::<bool>().prop_map(Op::Pause),
        1 => clearable.prop_map(Op::Clear),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_store_matches_the_reference_model(ops in prop::collection::vec(op(), 1..120)) {
        let q = QueueStore::in_memory().unwrap();
        check_against_model(&q, ops)?;
    }
}

proptest! {
    // Each step is a few round trips to the server: fewer, shorter cases.
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn the_postgres_store_matches_the_reference_model(ops in prop::collection::vec(op(), 1..80)) {
        let pg = crate::pg_test::TestSchema::new();
        check_against_model(&pg.queue, ops)?;
    }
}

/// Run `ops` against `q` and the reference model side by side; after every
/// step the whole queue must agree with the model.
fn check_against_model(q: &QueueStore, ops: Vec<Op>) -> Result<(), TestCaseError> {
    {
        let mut model = Model::default();
        let mut now = 1_000i64;
        // Every claim ever handed out, current or stale.
        let mut claims: Vec<(String, u32)> = Vec::new();
        let mut completions: HashMap<String, u32> = HashMap::new();
        let pick = |i: usize, len: usize| (len > 0).then(|| i % len);

        for op in ops {
            match op {
                Op::Submit {
                    priority,
                    max_attempts,
                } => {
                    let new = NewTask {
                        priority,
                        max_attempts,
                        backoff_ms: 10,
                        ..task("t")
                    };
                    // Generated ids never collide, whatever ids clients chose.
                    let (t, fresh) = q.submit(new, now).unwrap();
                    prop_assert!(fresh);
                    prop_assert!(
                        t.id.starts_with("task-") && t.id.len() == 5 + 32,
                        "{}",
                        t.id
                    );
                    model.submit(t.id, priority, max_attempts, 10);
                }
                Op::SubmitNamed(n) => {
                    // A client-chosen id in the shape generated ids have.
                    let id = format!("task-{n}");
                    let new = NewTask {
                        id: Some(id.clone()),
                        backoff_ms: 10,
                        ..task("t")
                    };
                    let (p, m) = (new.priority, new.max_attempts);
                    let taken = model.tasks.iter().any(|t| t.id == id);
                    match q.submit(new, now) {
                        Ok((t, fresh)) => {
                            prop_assert!(!taken && fresh);
                            model.submit(t.id, p, m, 10);
                        }
                        Err(e) => prop_assert!(taken, "{e}"),
                    }
                }
                Op::Claim => {
                    let got = q.claim("w", None, now + LEASE_MS, now).unwrap();
                    let expected = model.claim(now);
                    prop_assert_eq!(
                        got.as_ref().map(|c| (c.task.id.clone(), c.attempt)),
                        expected.clone()
                    );
                    claims.extend(expected);
                }
                Op::Heartbeat(i) => {
                    if let Some(i) = pick(i, claims.len()) {
                        let (id, attempt) = claims[i].clone();
                        let lease = q.heartbeat(&id, attempt, now + LEASE_MS).unwrap();
                        let expected = match model.owns(&id, attempt) {
                            Some(t) => {
                                t.lease_until = Some(now + LEASE_MS);
                                Lease::Renewed
                            }
                            None => match model.find(&id) {
                                Some(t)
                                    if t.state == TaskState::Cancelled && t.attempt == attempt =>
                                {
                                    Lease::Cancelled
                                }
                                _ => Lease::Lost,
                            },
                        };
                        prop_assert_eq!(lease, expected);
                    }
                }
                Op::Complete(i) => {
                    if let Some(i) = pick(i, claims.len()) {
                        let (id, attempt) = claims[i].clone();
                        let done = q.complete(&id, attempt, &json!({"ok": true}), now).unwrap();
                        let expected = match model.owns(&id, attempt) {
                            Some(t) => {
                                t.state = TaskState::Completed;
                                t.lease_until = None;
                                true
                            }
                            None => false,
                        };
                        prop_assert_eq!(done, expected);
                        if done {
                            let n = completions.entry(id).or_default();
                            *n += 1;
                            prop_assert_eq!(*n, 1, "a task completed twice");
                        }
                    }
                }
                Op::Fail(i, retryable) => {
                    if let Some(i) = pick(i, claims.len()) {
                        let (id, attempt) = claims[i].clone();
                        let next = q.fail(&id, attempt, "boom", retryable, now).unwrap();
                        let expected = model.owns(&id, attempt).map(|t| {
                            Model::settle_failure(t, retryable, now);
                            t.state
                        });
                        prop_assert_eq!(next, expected);
                    }
                }
                Op::Advance(ms) => now += ms,
                Op::Expire => {
                    let mut expired = q.expire_leases(now).unwrap();
                    let mut expected = Vec::new();
                    for t in model.tasks.iter_mut() {
                        if t.state == TaskState::Running && t.lease_until.is_some_and(|l| l < now) {
                            Model::settle_failure(t, true, now);
                            expected.push(t.id.clone());
                        }
                    }
                    expired.sort();
                    expected.sort();
                    prop_assert_eq!(expired, expected);
                }
                Op::Cancel(i) => {
                    if let Some(i) = pick(i, model.tasks.len()) {
                        let id = model.tasks[i].id.clone();
                        let result = q.cancel(&id, None, now);
                        let t = &mut model.tasks[i];
                        prop_assert_eq!(result.is_ok(), !t.state.is_terminal());
                        if !t.state.is_terminal() {
                            t.state = TaskState::Cancelled;
                            t.lease_until = None;
                        }
                    }
                }
                Op::Retry(i) => {
                    if let Some(i) = pick(i, model.tasks.len()) {
                        let id = model.tasks[i].id.clone();
                        let result = q.retry(&id, 1);
                        let t = &mut model.tasks[i];
                        let allowed = matches!(t.state, TaskState::Failed | TaskState::Cancelled);
                        prop_assert_eq!(result.is_ok(), allowed);
                        if allowed {
                            t.state = TaskState::Queued;
                            t.max_attempts = t.attempt + 1;
                            t.not_before = 0;
                            t.retries += 1;
                        }
                    }
                }
                Op::SetPriority(i, p) => {
                    if let Some(i) = pick(i, model.tasks.len()) {
                        let id = model.tasks[i].id.clone();
                        let result = q.set_priority(&id, p);
                        let t = &mut model.tasks[i];
                        prop_assert_eq!(result.is_ok(), !t.state.is_terminal());
                        if let Ok(old) = result {
                            prop_assert_eq!(old, t.priority);
                            t.priority = p;
                        }
                    }
                }
                Op::Pause(p) => {
                    q.pause(p).unwrap();
                    model.paused = p;
                }
                Op::Clear(states) => {
                    let n = q.clear(&states).unwrap();
                    let before = model.tasks.len();
                    let cleared: Vec<String> = model
                        .tasks
                        .iter()
                        .filter(|t| states.contains(&t.state))
                        .map(|t| t.id.clone())
                        .collect();
                    model.tasks.retain(|t| !states.contains(&t.state));
                    prop_assert_eq!(n as usize, before - model.tasks.len());
                    // A cleared id may be chosen again by a client: what is
                    // known of the old task does not carry over to the new one.
                    claims.retain(|(id, _)| !cleared.contains(id));
                    for id in &cleared {
                        completions.remove(id);
                    }
                }
            }

            // The whole queue agrees with the model after every step.
            for t in &model.tasks {
                let stored = q.get(&t.id).unwrap();
                prop_assert_eq!(stored.state, t.state, "task {}", t.id);
                prop_assert_eq!(stored.attempt, t.attempt, "task {}", t.id);
                prop_assert_eq!(stored.priority, t.priority);
                prop_assert_eq!(stored.retries, t.retries);
                prop_assert!(
                    stored.attempt <= stored.max_attempts,
                    "more attempts than allowed"
                );
            }
            let counts = q.counts().unwrap();
            for (state, n) in counts {
                prop_assert_eq!(
                    n as usize,
                    model.tasks.iter().filter(|t| t.state == state).count()
                );
            }
            // Queue order: priority first, then submission.
            let (queued, total) = q
                .list(
                    &ListFilter {
                        states: vec![TaskState::Queued],
                        ..ListFilter::default()
                    },
                    0,
                    1_000,
                )
                .unwrap();
            let mut expected: Vec<&ModelTask> = model
                .tasks
                .iter()
                .filter(|t| t.state == TaskState::Queued)
                .collect();
            expected.sort_by(|a, b| b.priority.total_cmp(&a.priority).then(a.seq.cmp(&b.seq)));
            prop_assert_eq!(total as usize, expected.len());
            let ids: Vec<&str> = queued.iter().map(|t| t.id.as_str()).collect();
            let expected_ids: Vec<&str> = expected.iter().map(|t| t.id.as_str()).collect();
            prop_assert_eq!(ids, expected_ids);
        }
    }
    Ok(())
}

#[test]
fn a_repeated_report_of_the_same_attempt_is_already_recorded_any_other_is_stale() {
    let q = QueueStore::in_memory().unwrap();
    q.submit(
        NewTask {
            id: Some("a".into()),
            backoff_ms: 0,
            ..task("t")
        },
        0,
    )
    .unwrap();
    let first = q
        .claim_as("peer/w/0", Some("peer"), None, LEASE_MS, 0)
        .unwrap()
        .unwrap();
    assert_eq!(first.task.remote_peer.as_deref(), Some("peer"));
    // The lease lapses; a second attempt takes the task.
    q.expire_leases(LEASE_MS + 1).unwrap();
    let second = q
        .claim("local/0", None, 10 * LEASE_MS, LEASE_MS + 2)
        .unwrap()
        .unwrap();
    assert_eq!(second.attempt, first.attempt + 1);
    let done = AttemptOutcome::Completed(json!({"by": 2}));
    assert_eq!(
        q.settle("a", first.attempt, &done, 5).unwrap(),
        Settled::Stale
    );
    assert_eq!(
        q.settle("a", second.attempt, &done, 6).unwrap(),
        Settled::Recorded(TaskState::Completed)
    );
    assert_eq!(
        q.settle("a", second.attempt, &done, 7).unwrap(),
        Settled::AlreadyRecorded
    );
    assert_eq!(
        q.settle("a", first.attempt, &done, 8).unwrap(),
        Settled::Stale
    );
    assert_eq!(q.settle("nope", 1, &done, 8).unwrap(), Settled::Stale);
    assert_eq!(q.get("a").unwrap().result, Some(json!({"by": 2})));
}

#[test]
fn a_released_attempt_does_not_count_and_remote_leases_survive_a_restart() {
    let q = QueueStore::in_memory().unwrap();
    q.submit(
        NewTask {
            id: Some("r".into()),
            max_attempts: 1,
            ..task("t")
        },
        0,
    )
    .unwrap();
    let claim = q
        .claim_as("peer/w/0", Some("peer"), None, LEASE_MS, 0)
        .unwrap()
        .unwrap();
    assert!(q.release("r", claim.attempt).unwrap());
    assert!(
        !q.release("r", claim.attempt).unwrap(),
        "a second release changes nothing"
    );
    // Out of attempts had the release counted; it did not.
    let again = q
        .claim_as("peer/w/0", Some("peer"), None, LEASE_MS, 1)
        .unwrap()
        .unwrap();
    assert_eq!(again.attempt, claim.attempt + 1);
    // A restart re-queues local attempts at once but gives remote ones a lease.
    assert!(q.requeue_interrupted(2).unwrap().is_empty());
    assert_eq!(
        q.extend_remote_leases(2 + 5 * LEASE_MS).unwrap(),
        vec!["r".to_string()]
    );
    assert!(q.expire_leases(3 * LEASE_MS).unwrap().is_empty());
    assert_eq!(q.get("r").unwrap().state, TaskState::Running);
}

#[test]
fn a_task_that_asks_for_input_waits_until_every_request_is_answered() {
    let q = QueueStore::in_memory().unwrap();
    q.submit(
        NewTask {
            id: Some("w".into()),
            max_attempts: 1,
            ..task("t")
        },
        0,
    )
    .unwrap();
    // Not waiting yet: it takes no answers.
    let early = q.provide_input("w", &json!({"a": 1}).as_object().cloned().unwrap());
    assert!(
        matches!(early, Err(StoreError::WrongState { .. })),
        "{early:?}"
    );
    let claim = q.claim("w/0", None, LEASE_MS, 0).unwrap().unwrap();
    let asked = AttemptOutcome::InputRequired {
        requests: json!({"a": {"method": "elicitation/create"}, "b": {"method": "roots/list"}}),
    };
    assert_eq!(
        q.settle("w", claim.attempt, &asked, 1).unwrap(),
        Settled::Recorded(TaskState::WaitingInput)
    );
    // Parked: not claimable, no lease to lose, its attempt not counted, and a
    // repeated report of the attempt is already recorded.
    assert!(q.claim("w/0", None, LEASE_MS, 2).unwrap().is_none());
    assert!(q.expire_leases(10 * LEASE_MS).unwrap().is_empty());
    assert_eq!(
        q.settle("w", claim.attempt, &asked, 3).unwrap(),
        Settled::AlreadyRecorded
    );
    assert_eq!(
        q.heartbeat("w", claim.attempt, LEASE_MS).unwrap(),
        Lease::Lost
    );
    let parked = q.get("w").unwrap();
    assert_eq!(parked.state, TaskState::WaitingInput);
    assert_eq!(parked.max_attempts, 2);
    // Part of the answers (and one for nothing pending, ignored): still waiting.
    let part = q
        .provide_input(
            "w",
            &json!({"a": {"x": 1}, "zzz": 0})
                .as_object()
                .cloned()
                .unwrap(),
        )
        .unwrap();
    assert_eq!(part.state, TaskState::WaitingInput);
    assert_eq!(
        part.input_requests,
        Some(json!({"b": {"method": "roots/list"}}))
    );
    assert_eq!(part.input_responses, Some(json!({"a": {"x": 1}})));
    // The rest: queued again, and the next attempt sees every answer.
    let ready = q
        .provide_input(
            "w",
            &json!({"b": {"roots": []}}).as_object().cloned().unwrap(),
        )
        .unwrap();
    assert_eq!(ready.state, TaskState::Queued);
    assert_eq!(ready.input_requests, None);
    let again = q.claim("w/0", None, LEASE_MS, 4).unwrap().unwrap();
    assert_eq!(again.attempt, claim.attempt + 1);
    assert_eq!(
        again.task.input_responses,
        Some(json!({"a": {"x": 1}, "b": {"roots": []}}))
    );
    assert!(
        q.complete("w", again.attempt, &json!({"ok": true}), 5)
            .unwrap()
    );

    // A waiting task can be cancelled; answers are then refused.
    q.submit(
        NewTask {
            id: Some("c".into()),
            ..task("t")
        },
        10,
    )
    .unwrap();
    let claim = q.claim("w/0", None, LEASE_MS, 10).unwrap().unwrap();
    q.settle("c", claim.attempt, &asked, 11).unwrap();
    assert_eq!(q.cancel("c", None, 12).unwrap().state, TaskState::Cancelled);
    let late = q.provide_input("c", &json!({"a": 1, "b": 2}).as_object().cloned().unwrap());
    assert!(
        matches!(late, Err(StoreError::WrongState { .. })),
        "{late:?}"
    );

    // A waiting task expires with the retention, counted from when it parked.
    q.submit(
        NewTask {
            id: Some("e".into()),
            ..task("t")
        },
        20,
    )
    .unwrap();
    let claim = q.claim("w/0", None, LEASE_MS, 20).unwrap().unwrap();
    q.settle("e", claim.attempt, &asked, 21).unwrap();
    // Before: only the finished two go; after: the waiting one too.
    assert_eq!(q.purge_finished(21).unwrap(), 2);
    assert_eq!(q.get("e").unwrap().state, TaskState::WaitingInput);
    assert_eq!(q.purge_finished(22).unwrap(), 1);
    assert!(matches!(q.get("e"), Err(StoreError::NotFound(_))));
}

#[test]
fn outboxes_and_the_new_columns_survive_reopening_an_older_file() {
    let dir = std::env::temp_dir().join(format!("mcpplus-outbox-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("queue.sqlite3");
    let _ = std::fs::remove_file(&path);
    {
        // A file from before the mesh: no remote_peer, no settled_attempt.
        let db = rusqlite::Connection::open(&path).unwrap();
        db.execute_batch(
            "CREATE TABLE tasks (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE,
                tool TEXT NOT NULL, arguments TEXT NOT NULL, priority REAL NOT NULL, tags TEXT NOT NULL,
                metadata TEXT NOT NULL, timeout_ms INTEGER, max_attempts INTEGER NOT NULL,
                backoff_ms INTEGER NOT NULL, idempotency_key TEXT UNIQUE, state TEXT NOT NULL,
                attempt INTEGER NOT NULL DEFAULT 0, worker TEXT, lease_until INTEGER,
                not_before INTEGER NOT NULL DEFAULT 0, progress REAL, progress_total REAL,
                progress_message TEXT, result TEXT, error TEXT, created_at INTEGER NOT NULL,
                started_at INTEGER, finished_at INTEGER, retries INTEGER NOT NULL DEFAULT 0);
             INSERT INTO tasks (id, tool, arguments, priority, tags, metadata, max_attempts,
                backoff_ms, state, created_at) VALUES ('old', 't', '{}', 1.0, '[]', '{}', 3, 0, 'queued', 0);",
        )
        .unwrap();
    }
    let outcome = AttemptOutcome::Failed {
        error: "e".into(),
        retryable: false,
        result: None,
    };
    {
        let q = QueueStore::open(&path).unwrap();
        assert_eq!(q.get("old").unwrap().remote_peer, None);
        assert_eq!(q.get("old").unwrap().input_requests, None);
        q.outbox_put("owner", "x", 3, &outcome, 1).unwrap();
    }
    let q = QueueStore::open(&path).unwrap();
    let waiting = q.outbox("owner").unwrap();
    assert_eq!(waiting.len(), 1);
    assert_eq!((waiting[0].0.id.as_str(), waiting[0].0.attempt), ("x", 3));
    assert_eq!(waiting[0].1, outcome);
    q.outbox_remove("owner", "x", 3).unwrap();
    assert!(q.outbox("owner").unwrap().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

// Group commit: concurrent submits share one transaction (crate::group_commit).

/// A submit's outcome, comparable across stores: the task's id and whether it
/// is new, or the error's message.
fn outcome(r: &Result<(Task, bool), StoreError>) -> Result<(String, bool), String> {
    match r {
        Ok((task, new)) => Ok((task.id.clone(), *new)),
        Err(e) => Err(e.to_string()),
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Submit `tasks`, each from a thread of its own, so that they share one
/// commit, in this order: while this thread holds the database, a first
/// submit (`lead`) takes the lead and waits for it, the others queue up behind
/// it one after the other; then the database is let go, `lead` commits alone
/// and the next leader takes all of `tasks` as one batch.
fn submit_in_one_batch(
    q: &QueueStore,
    lead: NewTask,
    tasks: Vec<NewTask>,
) -> Vec<Result<(Task, bool), StoreError>> {
    std::thread::scope(|s| {
        let mut submitted = Vec::new();
        // `transaction` holds the database while its body runs.
        q.transaction(0, |_| {
            submitted.push(s.spawn(move || q.submit(lead, 0)));
            wait_until("a leader", || {
                q.sqlite().expect("sqlite").submits_waiting() == (true, 0)
            });
            for (i, task) in tasks.into_iter().enumerate() {
                submitted.push(s.spawn(move || q.submit(task, 0)));
                wait_until("the submit to queue up", || {
                    q.sqlite().expect("sqlite").submits_waiting() == (true, i + 1)
                });
            }
            Ok::<_, StoreError>(())
        })
        .unwrap();
        let mut results: Vec<_> = submitted.into_iter().map(|h| h.join().unwrap()).collect();
        results.remove(0).unwrap();
        results
    })
}

fn with_id(id: &str, new: NewTask) -> NewTask {
    NewTask {
        id: Some(id.into()),
        ..new
    }
}

fn keyed(key: &str, new: NewTask) -> NewTask {
    NewTask {
        idempotency_key: Some(key.into()),
        ..new
    }
}

fn temp_file(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("mcpplus-queue-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("queue.sqlite3");
    (dir, path)
}

#[test]
fn concurrent_submits_each_get_their_own_task_once_and_all_survive_reopening() {
    const THREADS: usize = 16;
    const EACH: usize = 40;
    let (dir, path) = temp_file("group");
    let q = QueueStore::open(&path).unwrap();
    let submitted: Vec<(String, serde_json::Value)> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..THREADS)
            .map(|t| {
                let q = &q;
                s.spawn(move || {
                    (0..EACH)
                        .map(|i| {
                            let arguments = json!({"thread": t, "i": i});
                            // Every other one keyed, so keys are looked up mid-batch too.
                            let mut new = NewTask::new("t", arguments.clone());
                            if i % 2 == 0 {
                                new = keyed(&format!("k-{t}-{i}"), new);
                            }
                            let (task, fresh) = q.submit(new, 1).unwrap();
                            assert!(fresh, "{task:?}");
                            assert_eq!(task.arguments, arguments);
                            (task.id, arguments)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        threads
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let ids: std::collections::HashSet<&String> = submitted.iter().map(|(id, _)| id).collect();
    assert_eq!(
        ids.len(),
        THREADS * EACH,
        "every submit got a task of its own"
    );
    drop(q);
    let q = QueueStore::open(&path).unwrap();
    let (all, total) = q.list(&ListFilter::default(), 0, 10_000).unwrap();
    assert_eq!(
        total as usize,
        THREADS * EACH,
        "each task is in the file once"
    );
    let stored: HashMap<String, serde_json::Value> =
        all.into_iter().map(|t| (t.id, t.arguments)).collect();
    for (id, arguments) in &submitted {
        assert_eq!(stored.get(id), Some(arguments), "task {id} after reopening");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Refusals in the middle of a shared commit, each exactly as it would be
/// alone: a key conflict, a quota, invalid input, a taken id; the submits
/// around them commit, and the refused ones leave nothing behind.
#[test]
fn a_refused_submit_in_a_shared_commit_fails_alone_while_the_rest_commit() {
    use mcpplus_policy::config::queue::Quotas;
    let quotas = Quotas {
        max_queued: 4,
        ..Quotas::default()
    };
    let first = || keyed("k", with_id("first", task("t")));
    let batch = || {
        vec![
            with_id("a", task("t")),
            keyed("k", NewTask::new("t", json!({"other": "work"}))),
            with_id("a", task("t")),
            with_id("b", task("t")),
            // The queue holds 4 now (first, lead, a, b): refused.
            with_id("c", task("t")),
            // The same work under a used key: the first task, even when full.
            first(),
            NewTask {
                priority: 0.0,
                ..task("t")
            },
        ]
    };
    // Alone: one after the other on a store of its own.
    let alone = QueueStore::in_memory().unwrap();
    alone.set_quotas(quotas);
    alone.submit(first(), 0).unwrap();
    alone.submit(with_id("lead", task("t")), 0).unwrap();
    let expected: Vec<_> = batch()
        .into_iter()
        .map(|t| outcome(&alone.submit(t, 0)))
        .collect();
    assert!(
        matches!(&expected[..], [Ok(_), Err(conflict), Err(taken), Ok(_), Err(full), Ok((id, false)), Err(invalid)]
            if conflict.contains("idempotency key") && taken.contains("already exists")
                && full.contains("max_queued") && id == "first" && invalid.contains("priority")),
        "{expected:?}"
    );

    let (dir, path) = temp_file("refused");
    let q = QueueStore::open(&path).unwrap();
    q.set_quotas(quotas);
    q.submit(first(), 0).unwrap();
    let together = submit_in_one_batch(&q, with_id("lead", task("t")), batch());
    assert_eq!(
        together.iter().map(outcome).collect::<Vec<_>>(),
        expected,
        "each submit in the shared commit has its outcome alone"
    );
    drop(q);
    let q = QueueStore::open(&path).unwrap();
    let (all, _) = q.list(&ListFilter::default(), 0, 100).unwrap();
    let mut ids: Vec<String> = all.into_iter().map(|t| t.id).collect();
    ids.sort();
    assert_eq!(ids, ["a", "b", "first", "lead"]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_key_used_twice_in_one_shared_commit_returns_the_first_task_as_it_would_one_after_the_other() {
    let batch = || {
        vec![
            keyed("dup", task("t")),
            keyed("dup", task("t")),
            keyed("dup", NewTask::new("t", json!({"n": 2}))),
            keyed("other", task("t")),
        ]
    };
    let q = QueueStore::in_memory().unwrap();
    let together = submit_in_one_batch(&q, task("lead"), batch());
    let (first, new) = together[0].as_ref().unwrap();
    assert!(new);
    assert_eq!(together[1].as_ref().unwrap(), &(first.clone(), false));
    assert!(matches!(together[2], Err(StoreError::KeyConflict { ref id, .. }) if *id == first.id));
    assert!(together[3].as_ref().unwrap().1);
    assert_eq!(
        q.list(&ListFilter::default(), 0, 100).unwrap().1,
        3,
        "lead, dup, other"
    );
    // The same as one after the other (ids are generated, so compare the rest).
    let alone = QueueStore::in_memory().unwrap();
    let sequential: Vec<_> = batch().into_iter().map(|t| alone.submit(t, 0)).collect();
    let shape = |r: &Result<(Task, bool), StoreError>| match r {
        Ok((t, new)) => Ok((t.idempotency_key.clone(), t.arguments.clone(), *new)),
        Err(e) => Err(e.to_string().replace(&first.id, "?")),
    };
    let first_alone = sequential[0].as_ref().unwrap().0.id.clone();
    assert_eq!(
        together.iter().map(shape).collect::<Vec<_>>(),
        sequential
            .iter()
            .map(|r| shape(r).map_err(|e| e.replace(&first_alone, "?")))
            .collect::<Vec<_>>()
    );
}

/// `QueueStore::transaction` on both backends: a body that fails leaves
/// nothing behind (neither its submits nor its own tables' rows); one that
/// succeeds commits both together.
#[test]
fn a_transaction_commits_whole_or_not_at_all_on_both_backends() {
    let pg = crate::pg_test::TestSchema::new();
    let sqlite = std::sync::Arc::new(QueueStore::in_memory().unwrap());
    for q in [sqlite, pg.queue.clone()] {
        q.transaction(0, |txn| {
            txn.conn()
                .batch("CREATE TABLE IF NOT EXISTS notes (note TEXT NOT NULL)")
        })
        .unwrap();
        let body = |fail: bool| {
            move |txn: &mut Txn<'_>| {
                let id = if fail { "dropped" } else { "kept" };
                txn.submit(NewTask {
                    id: Some(id.into()),
                    ..task("t")
                })?;
                txn.conn()
                    .execute("INSERT INTO notes (note) VALUES (?1)", sql_params![id])?;
                if fail {
                    return Err(StoreError::Invalid("the body failed".into()));
                }
                Ok(())
            }
        };
        let failed = q.transaction(0, body(true)).unwrap_err();
        assert!(failed.to_string().contains("the body failed"), "{failed}");
        q.transaction(0, body(false)).unwrap();
        let notes = q
            .transaction(0, |txn| txn.conn().query("SELECT note FROM notes", &[]))
            .unwrap();
        let notes: Vec<String> = notes.iter().map(|r| r.text(0).unwrap()).collect();
        assert_eq!(notes, ["kept"], "{}", q.backend());
        assert!(q.get("kept").is_ok(), "{}", q.backend());
        assert!(
            matches!(q.get("dropped"), Err(StoreError::NotFound(_))),
            "{}",
            q.backend()
        );
    }
}
