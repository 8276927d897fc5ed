//! The controller over a real queue store with a test clock and a
//! synchronous worker: what runs, in what order, with what arguments, and
//! what each failure mode skips. The store is SQLite in memory, or with
//! `MCPPLUS_TEST_QUEUE_BACKEND=postgres` a fresh schema on the test server
//! (`MCPPLUS_TEST_PG_URL`; scripts/test.sh runs this file both ways). The
//! MCP path and crash tests are in tests/ at the workspace root.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use mcpplus_queue::pg_test::TestSchema;
use mcpplus_queue::{QueueStore, TaskState};
use mcpplus_workflow::{WorkflowOptions, Workflows};
use serde_json::{Value, json};

struct Harness {
    store: Arc<QueueStore>,
    engine: Workflows,
    clock: Arc<AtomicI64>,
    /// The PostgreSQL schema, dropped after everything else.
    _postgres: Option<TestSchema>,
}

const TOOLS: [&str; 5] = ["echo", "fail", "flaky", "sum", "hold"];

/// The queue the tests run on: see the module comment.
fn test_store() -> (Arc<QueueStore>, Option<TestSchema>) {
    match std::env::var("MCPPLUS_TEST_QUEUE_BACKEND").as_deref() {
        Ok("postgres") => {
            let schema = TestSchema::new();
            (schema.queue.clone(), Some(schema))
        }
        Ok("sqlite") | Err(_) => (Arc::new(QueueStore::in_memory().unwrap()), None),
        Ok(other) => panic!("MCPPLUS_TEST_QUEUE_BACKEND={other}: use sqlite or postgres"),
    }
}

fn harness() -> Harness {
    let (store, postgres) = test_store();
    let clock = Arc::new(AtomicI64::new(1_000_000));
    let c = clock.clone();
    let engine = Workflows::open(
        store.clone(),
        WorkflowOptions {
            tool_exists: Box::new(|t| TOOLS.contains(&t)),
            template_dir: None,
            node: "local".into(),
            retention_ms: 3_600_000,
        },
    )
    .unwrap()
    .with_clock(move || c.load(Ordering::SeqCst));
    Harness {
        store,
        engine,
        clock,
        _postgres: postgres,
    }
}

/// What a claimed task did.
#[derive(Debug, Clone)]
struct Ran {
    task: String,
    tool: String,
    arguments: Value,
}

impl Harness {
    fn now(&self) -> i64 {
        self.clock.load(Ordering::SeqCst)
    }

    fn tick(&self, ms: i64) {
        self.clock.fetch_add(ms, Ordering::SeqCst);
    }

    fn submit(&self, spec: Value) -> Value {
        self.engine.submit(spec).unwrap()
    }

    fn status(&self, id: &str) -> Value {
        self.engine.status(id, true, true).unwrap()
    }

    fn step(&self, id: &str, step: &str) -> Value {
        let status = self.status(id);
        status["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["step_id"] == step)
            .cloned()
            .unwrap_or_else(|| panic!("no step {step} in {status}"))
    }

    fn states(&self, id: &str) -> BTreeMap<String, String> {
        self.status(id)["steps"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["step_id"].as_str().unwrap().to_string(),
                    s["status"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// Claim one ready task (any tool) without finishing it.
    fn claim(&self) -> Option<(Ran, u32)> {
        let claim = self
            .store
            .claim("test", None, self.now() + 600_000, self.now())
            .unwrap()?;
        Some((
            Ran {
                task: claim.task.id.clone(),
                tool: claim.task.tool.clone(),
                arguments: claim.task.arguments.clone(),
            },
            claim.attempt,
        ))
    }

    /// Finish a claimed task the way its tool does, then let the
    /// controller react (as the driver does after every settled task).
    fn finish(&self, ran: &Ran, attempt: u32) {
        self.tick(10);
        let now = self.now();
        match ran.tool.as_str() {
            "echo" => {
                let result = json!({"content": [{"type": "text", "text": ran.arguments.to_string()}], "structuredContent": {"result": ran.arguments}});
                self.store
                    .complete(&ran.task, attempt, &result, now)
                    .unwrap();
            }
            "sum" => {
                let total: f64 = ran.arguments["values"]
                    .as_array()
                    .map(|v| v.iter().filter_map(Value::as_f64).sum())
                    .unwrap_or(0.0);
                let result = json!({"structuredContent": {"result": total}});
                self.store
                    .complete(&ran.task, attempt, &result, now)
                    .unwrap();
            }
            "fail" => {
                self.store
                    .fail(&ran.task, attempt, "boom", false, now)
                    .unwrap();
            }
            "flaky" => {
                let fails = ran.arguments["fail_times"].as_u64().unwrap_or(1) as u32;
                if attempt <= fails {
                    self.store
                        .fail(&ran.task, attempt, "flaky failure", true, now)
                        .unwrap();
                } else {
                    let result = json!({"structuredContent": {"result": attempt}});
                    self.store
                        .complete(&ran.task, attempt, &result, now)
                        .unwrap();
                }
            }
            other => panic!("no test tool {other}"),
        }
        self.engine.advance_due().unwrap();
    }

    /// Run every ready task until none is left (time moves past backoffs).
    fn run_all(&self) -> Vec<Ran> {
        let mut ran = Vec::new();
        for _ in 0..10_000 {
            match self.claim() {
                Some((r, attempt)) if r.tool != "hold" => {
                    self.finish(&r, attempt);
                    ran.push(r);
                }
                Some(_) => panic!("a `hold` task is meant to be finished by the test"),
                None => {
                    // Waiting for a backoff? Move time on once and look again.
                    self.tick(60_000);
                    self.engine.sweep().unwrap();
                    match self.claim() {
                        Some((r, attempt)) => {
                            self.finish(&r, attempt);
                            ran.push(r);
                        }
                        None => return ran,
                    }
                }
            }
        }
        panic!("the workflow never settled");
    }
}

#[test]
fn a_fan_out_runs_each_item_with_at_most_max_parallel_and_fans_in_in_order() {
    let h = harness();
    let items: Vec<Value> = (0..50).map(|i| json!(format!("item-{i}"))).collect();
    h.submit(json!({
        "workflow_id": "fan", "name": "fan-out",
        "steps": [
            {"step_id": "list", "action": "echo", "inputs": {"items": items}},
            {"step_id": "map", "action": "echo", "for_each": "${steps.list.result/items}",
             "max_parallel": 8, "inputs": {"value": "${item}", "at": "${index}"}},
            {"step_id": "reduce", "action": "echo", "inputs": {"all": "${steps.map.result}"}},
        ],
    }));
    // list first
    let (list, attempt) = h.claim().unwrap();
    assert!(h.claim().is_none(), "map must wait for list");
    h.finish(&list, attempt);
    // Claim everything claimable: never more than 8 items at once.
    let mut peak = 0;
    let mut done = 0;
    loop {
        let mut held = Vec::new();
        while let Some(c) = h.claim() {
            held.push(c);
        }
        if held.is_empty() {
            break;
        }
        peak = peak.max(held.len());
        assert!(held.len() <= 8, "{} items ran at once", held.len());
        for (ran, attempt) in held {
            if ran.task.starts_with("wf:fan:map:") {
                done += 1;
            }
            h.finish(&ran, attempt);
        }
    }
    assert_eq!(peak, 8);
    assert_eq!(done, 50);
    let status = h.status("fan");
    assert_eq!(status["status"], "completed", "{status}");
    let result = h.engine.result("fan", true, false).unwrap();
    let reduce_args = &result["outputs"][2]["result"]["all"];
    let expected: Vec<Value> = (0..50)
        .map(|i| json!({"value": format!("item-{i}"), "at": i}))
        .collect();
    assert_eq!(reduce_args, &Value::Array(expected), "{result}");
}

#[test]
fn continue_skips_only_the_failed_steps_dependents() {
    let h = harness();
    // a→{b,c}→d, a→e→f, g alone; b fails.
    h.submit(json!({
        "workflow_id": "w", "name": "n", "on_failure": "continue",
        "steps": [
            {"step_id": "a", "action": "echo"},
            {"step_id": "b", "action": "fail", "depends_on": ["a"], "retry": {"max_attempts": 2, "backoff_ms": 100}},
            {"step_id": "c", "action": "echo", "depends_on": ["a"]},
            {"step_id": "d", "action": "echo", "depends_on": ["b", "c"]},
            {"step_id": "e", "action": "echo", "depends_on": ["a"]},
            {"step_id": "f", "action": "echo", "depends_on": ["e"]},
            {"step_id": "g", "action": "echo"},
            {"step_id": "cleanup", "action": "echo", "depends_on": ["d"], "trigger": "all_done"},
        ],
    }));
    h.run_all();
    let states = h.states("w");
    let expect = [
        ("a", "completed"),
        ("b", "failed"),
        ("c", "completed"),
        ("d", "skipped"),
        ("e", "completed"),
        ("f", "completed"),
        ("g", "completed"),
        ("cleanup", "completed"),
    ];
    for (step, state) in expect {
        assert_eq!(states[step], state, "{step}: {states:?}");
    }
    assert_eq!(h.step("w", "d")["reason"], "depends on failed step(s): b");
    assert_eq!(h.status("w")["status"], "failed");
}

#[test]
fn stop_skips_what_has_not_started_and_lets_running_steps_finish() {
    let h = harness();
    h.submit(json!({
        "workflow_id": "w", "name": "n",
        "steps": [
            {"step_id": "a", "action": "echo"},
            {"step_id": "b", "action": "fail", "depends_on": ["a"]},
            {"step_id": "c", "action": "echo", "depends_on": ["a"]},
            {"step_id": "d", "action": "echo", "depends_on": ["c"]},
            {"step_id": "cleanup", "action": "echo", "depends_on": ["b", "c"], "trigger": "all_done"},
        ],
    }));
    let (a, at) = h.claim().unwrap();
    h.finish(&a, at);
    let (first, fa) = h.claim().unwrap();
    let (second, sa) = h.claim().unwrap();
    let (b, c) = if first.tool == "fail" {
        ((first, fa), (second, sa))
    } else {
        ((second, sa), (first, fa))
    };
    h.finish(&b.0, b.1); // b fails while c runs
    h.finish(&c.0, c.1); // c still completes
    h.run_all();
    let states = h.states("w");
    assert_eq!(states["c"], "completed", "{states:?}");
    assert_eq!(states["d"], "skipped", "{states:?}");
    assert_eq!(
        h.step("w", "d")["reason"],
        "workflow stopped: step b failed"
    );
    // all_done does not override a stop: nothing new starts.
    assert_eq!(states["cleanup"], "skipped", "{states:?}");
    assert_eq!(h.status("w")["status"], "failed");
}

#[test]
fn continue_on_error_lets_dependents_run_and_the_workflow_complete() {
    let h = harness();
    h.submit(json!({
        "workflow_id": "w", "name": "n",
        "steps": [
            {"step_id": "b", "action": "fail", "continue_on_error": true},
            {"step_id": "d", "action": "echo", "depends_on": ["b"], "inputs": {"why": "${steps.b.error}"}},
        ],
    }));
    let ran = h.run_all();
    assert_eq!(ran.len(), 2);
    assert_eq!(ran[1].arguments, json!({"why": "boom"}));
    let b = h.step("w", "b");
    assert_eq!(b["status"], "failed");
    assert_eq!(b["continued"], true);
    assert_eq!(h.status("w")["status"], "completed");
}

#[test]
fn a_false_condition_skips_the_step_and_its_dependents_but_not_all_done_ones() {
    let h = harness();
    h.submit(json!({
        "workflow_id": "w", "name": "n", "on_failure": "continue",
        "steps": [
            {"step_id": "a", "action": "echo", "inputs": {"n": 3}},
            {"step_id": "big", "action": "echo", "when": {"gt": ["${steps.a.result/n}", 10]}},
            {"step_id": "after", "action": "echo", "depends_on": ["big"]},
            {"step_id": "always", "action": "echo", "depends_on": ["big"], "trigger": "all_done"},
            {"step_id": "bad", "action": "echo", "when": {"lt": ["${steps.a.result/n}", "ten"]}},
        ],
    }));
    h.run_all();
    let states = h.states("w");
    assert_eq!(states["big"], "skipped");
    assert_eq!(h.step("w", "big")["reason"], "condition false");
    assert_eq!(states["after"], "skipped");
    assert_eq!(states["always"], "completed");
    assert_eq!(states["bad"], "failed");
    let error = h.step("w", "bad")["error"].as_str().unwrap().to_string();
    assert!(error.contains('3') && error.contains("ten"), "{error}");
}

#[test]
fn retries_back_off_and_count_attempts() {
    let h = harness();
    h.submit(json!({
        "workflow_id": "w", "name": "n",
        "steps": [{"step_id": "f", "action": "flaky", "inputs": {"fail_times": 2},
                   "retry": {"max_attempts": 3, "backoff_ms": 100}}],
    }));
    let (r, attempt) = h.claim().unwrap();
    h.finish(&r, attempt);
    assert!(
        h.claim().is_none(),
        "the second attempt waits for its backoff"
    );
    h.tick(100);
    let (r, attempt) = h.claim().unwrap();
    assert_eq!(attempt, 2);
    h.finish(&r, attempt);
    h.tick(150);
    assert!(h.claim().is_none(), "the third attempt waits 200 ms");
    h.tick(60);
    let (r, attempt) = h.claim().unwrap();
    h.finish(&r, attempt);
    let f = h.step("w", "f");
    assert_eq!(f["status"], "completed");
    assert_eq!(f["attempts"], 3);
}

#[test]
fn retrying_a_failed_steps_task_resumes_the_workflow_without_rerunning_completed_steps() {
    let h = harness();
    h.submit(json!({
        "workflow_id": "w", "name": "n",
        "steps": [
            {"step_id": "a", "action": "echo"},
            {"step_id": "b", "action": "flaky", "depends_on": ["a"], "inputs": {"fail_times": 1},
             "retry": {"max_attempts": 1}},
            {"step_id": "c", "action": "echo", "depends_on": ["b"]},
        ],
    }));
    let first = h.run_all();
    assert_eq!(first.len(), 2);
    assert_eq!(h.status("w")["status"], "failed");
    assert_eq!(h.states("w")["c"], "skipped");
    h.store.retry("wf:w:b", 1).unwrap();
    h.engine.advance_due().unwrap();
    assert_eq!(h.status("w")["status"], "running");
    let second = h.run_all();
    let tasks: Vec<&str> = second.iter().map(|r| r.task.as_str()).collect();
    assert_eq!(tasks, ["wf:w:b", "wf:w:c"], "a must not run again");
    assert_eq!(h.status("w")["status"], "completed");
}

#[test]
fn a_graceful_cancel_starts_nothing_new_and_a_forced_one_stops_running_steps() {
    let h = harness();
    h.submit(json!({
        "workflow_id": "w", "name": "n",
        "steps": [
            {"step_id": "a", "action": "echo"},
            {"step_id": "b", "action": "echo"},
            {"step_id": "c", "action": "echo", "depends_on": ["a"]},
        ],
    }));
    let (a, at) = h.claim().unwrap(); // a runs; b stays queued
    let answer = h
        .engine
        .cancel("w", Some("no longer needed"), false)
        .unwrap();
    assert_eq!(answer["status"], "cancelling");
    let b = h.store.get("wf:w:b").unwrap();
    assert_eq!(
        b.state,
        TaskState::Cancelled,
        "queued step tasks are cancelled"
    );
    h.finish(&a, at); // the running one finishes
    assert!(h.claim().is_none());
    let states = h.states("w");
    assert_eq!(states["a"], "completed");
    assert_eq!(states["b"], "cancelled");
    assert_eq!(states["c"], "cancelled");
    assert_eq!(h.status("w")["status"], "cancelled");

    let h = harness();
    h.submit(
        json!({"workflow_id": "x", "name": "n", "steps": [{"step_id": "long", "action": "echo"}]}),
    );
    let (_long, _) = h.claim().unwrap();
    h.engine.cancel("x", None, true).unwrap();
    assert_eq!(
        h.store.get("wf:x:long").unwrap().state,
        TaskState::Cancelled
    );
    assert_eq!(h.status("x")["status"], "cancelled");
}

#[test]
fn a_workflow_deadline_fails_it_and_cancels_its_running_steps() {
    let h = harness();
    h.submit(json!({"workflow_id": "w", "name": "n", "timeout_ms": 1000,
                    "steps": [{"step_id": "slow", "action": "echo"}]}));
    let _ = h.claim().unwrap();
    h.tick(1_001);
    h.engine.sweep().unwrap();
    let status = h.status("w");
    assert_eq!(status["status"], "failed", "{status}");
    assert_eq!(status["error"], "timed out after 1000 ms");
    assert_eq!(
        h.store.get("wf:w:slow").unwrap().state,
        TaskState::Cancelled
    );
}

#[test]
fn the_same_id_and_spec_returns_the_workflow_and_a_different_spec_is_refused() {
    let h = harness();
    let spec = json!({"workflow_id": "w", "name": "n", "steps": [{"step_id": "a", "action": "echo", "inputs": {"x": 1, "y": 2}}]});
    assert_eq!(h.submit(spec.clone())["created"], true);
    // Key order does not make it another spec.
    let reordered = json!({"name": "n", "steps": [{"inputs": {"y": 2, "x": 1}, "action": "echo", "step_id": "a"}], "workflow_id": "w"});
    assert_eq!(h.submit(reordered)["created"], false);
    let other = json!({"workflow_id": "w", "name": "n", "steps": [{"step_id": "a", "action": "echo", "inputs": {"x": 2}}]});
    let err = h.engine.submit(other).unwrap_err().to_string();
    assert!(
        err.contains("`w` already exists with a different spec"),
        "{err}"
    );
    assert_eq!(h.run_all().len(), 1);
}

#[test]
fn a_refused_spec_stores_nothing() {
    let h = harness();
    let err = h
        .engine
        .submit(json!({"workflow_id": "w", "name": "n", "steps": [
            {"step_id": "a", "action": "echo", "depends_on": ["c"]},
            {"step_id": "b", "action": "echo", "depends_on": ["a"]},
            {"step_id": "c", "action": "echo", "depends_on": ["b"]},
        ]}))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("cycle: "), "{err}");
    assert_eq!(h.engine.list(None, &[], 50, 0).unwrap()["total_count"], 0);
    assert!(h.claim().is_none());
}

#[test]
fn a_workflow_waits_for_the_workflows_it_depends_on() {
    let h = harness();
    h.submit(
        json!({"workflow_id": "first", "name": "n", "steps": [{"step_id": "a", "action": "echo"}]}),
    );
    h.submit(
        json!({"workflow_id": "second", "name": "n", "dependencies": ["first"],
                    "steps": [{"step_id": "b", "action": "echo"}]}),
    );
    assert_eq!(h.status("second")["status"], "pending");
    // A third one waiting too, cancelled while it waits: it closes at once.
    h.submit(
        json!({"workflow_id": "third", "name": "n", "dependencies": ["first"],
                    "steps": [{"step_id": "c", "action": "echo"}]}),
    );
    h.engine.cancel("third", None, false).unwrap();
    assert_eq!(h.status("third")["status"], "cancelled");
    let (a, at) = h.claim().unwrap();
    assert_eq!(a.task, "wf:first:a");
    assert!(h.claim().is_none());
    h.finish(&a, at);
    assert_eq!(h.status("second")["status"], "running");
    h.run_all();
    assert_eq!(h.status("second")["status"], "completed");
}

#[test]
fn a_step_task_cleared_from_the_queue_before_it_was_seen_runs_again() {
    let h = harness();
    h.submit(
        json!({"workflow_id": "w", "name": "n", "steps": [{"step_id": "a", "action": "echo"}]}),
    );
    let (a, at) = h.claim().unwrap();
    h.tick(10);
    h.store
        .complete(
            &a.task,
            at,
            &json!({"structuredContent": {"result": 1}}),
            h.now(),
        )
        .unwrap();
    h.store.clear(&[TaskState::Completed]).unwrap();
    h.engine.advance_due().unwrap();
    let again = h.run_all();
    assert_eq!(again.len(), 1);
    assert_eq!(h.status("w")["status"], "completed");
    let logs = h.engine.result("w", false, true).unwrap()["logs"].to_string();
    assert!(logs.contains("step.task_lost"), "{logs}");
}

#[test]
fn the_critical_path_of_a_run_equals_its_wall_time() {
    let h = harness();
    // `w` waits for `gate`, so its graph is first drawn before anything ran.
    h.submit(
        json!({"workflow_id": "gate", "name": "n", "steps": [{"step_id": "g", "action": "echo"}]}),
    );
    h.submit(
        json!({"workflow_id": "w", "name": "n", "dependencies": ["gate"], "steps": [
            {"step_id": "a", "action": "echo"},
            {"step_id": "b", "action": "echo", "depends_on": ["a"]},
            {"step_id": "c", "action": "echo", "depends_on": ["b"]},
            {"step_id": "x", "action": "echo", "depends_on": ["a"]},
            {"step_id": "z", "action": "echo", "depends_on": ["c", "x"]},
        ]}),
    );
    let before = h.engine.dependencies("w", "json").unwrap();
    assert_eq!(before["critical_path_basis"], "structure", "{before}");
    assert_eq!(
        before["critical_path"],
        json!(["a", "b", "c", "z"]),
        "{before}"
    );
    let durations = BTreeMap::from([
        ("g", 20),
        ("a", 300),
        ("b", 200),
        ("c", 100),
        ("x", 50),
        ("z", 10),
    ]);
    loop {
        let Some((ran, attempt)) = h.claim() else {
            break;
        };
        let step = ran.task.rsplit(':').next().unwrap().to_string();
        h.tick(durations[step.as_str()] - 10);
        h.finish(&ran, attempt);
    }
    let status = h.status("w");
    assert_eq!(status["status"], "completed");
    let graph = h.engine.dependencies("w", "json").unwrap();
    assert_eq!(
        graph["critical_path"],
        json!(["a", "b", "c", "z"]),
        "{graph}"
    );
    let wall = status["end_time"].as_i64().unwrap() - status["start_time"].as_i64().unwrap();
    assert_eq!(graph["critical_path_ms"], json!(wall), "{graph}");
}

#[test]
fn finished_workflows_are_deleted_after_the_retention() {
    let h = harness();
    h.submit(
        json!({"workflow_id": "old", "name": "n", "steps": [{"step_id": "a", "action": "echo"}]}),
    );
    h.run_all();
    assert_eq!(h.status("old")["status"], "completed");
    h.tick(3_600_001);
    h.engine.sweep().unwrap();
    let err = h.engine.status("old", true, false).unwrap_err().to_string();
    assert!(err.contains("there is no workflow `old`"), "{err}");
}

/// The rule the cached harness answers for `echo`: (component sha256, ttl).
type SharedRule = Arc<std::sync::Mutex<(String, Option<u64>)>>;

/// A harness whose `echo` is cacheable.
fn cached_harness() -> (Harness, SharedRule) {
    let rule = Arc::new(std::sync::Mutex::new(("sha-1".to_string(), None)));
    let mut h = harness();
    let r = rule.clone();
    h.engine = h.engine.with_cache(move |tool| {
        let (sha, ttl) = r.lock().unwrap().clone();
        (tool == "echo").then_some(mcpplus_workflow::CacheRule {
            component_sha256: sha,
            ttl_ms: ttl,
        })
    });
    (h, rule)
}

#[test]
fn the_cache_reuses_a_result_for_the_same_call_whatever_its_key_order() {
    let (h, rule) = cached_harness();
    h.submit(json!({"workflow_id": "one", "name": "n", "steps": [
        {"step_id": "a", "action": "echo", "inputs": {"x": 1, "y": [1, 2]}},
        {"step_id": "s", "action": "sum", "inputs": {"values": [1, 2]}},
    ]}));
    assert_eq!(h.run_all().len(), 2);
    // Same arguments in another order, in another workflow: not run again.
    h.submit(json!({"workflow_id": "two", "name": "n", "steps": [
        {"step_id": "b", "action": "echo", "inputs": {"y": [1, 2], "x": 1}},
        {"step_id": "after", "action": "echo", "depends_on": ["b"], "inputs": {"got": "${steps.b.result/x}"}},
        {"step_id": "s", "action": "sum", "inputs": {"values": [1, 2]}},
    ]}));
    let mut ran: Vec<String> = h.run_all().into_iter().map(|r| r.task).collect();
    ran.sort();
    assert_eq!(
        ran,
        ["wf:two:after", "wf:two:s"],
        "b came from the cache; sum is never cached"
    );
    let b = h.step("two", "b");
    assert_eq!(b["status"], "completed");
    assert!(b["reason"].as_str().unwrap().contains("wf:one:a"), "{b}");
    assert!(
        h.store.get("wf:two:b").is_err(),
        "a cache hit submits no task"
    );
    let result = h.engine.result("two", true, false).unwrap();
    assert_eq!(result["outputs"][1]["result"], json!({"got": 1}));

    // New arguments miss.
    h.submit(json!({"workflow_id": "three", "name": "n", "steps": [
        {"step_id": "c", "action": "echo", "inputs": {"x": 2, "y": [1, 2]}}]}));
    assert_eq!(h.run_all().len(), 1);
    // A new build of the component misses.
    rule.lock().unwrap().0 = "sha-2".into();
    h.submit(json!({"workflow_id": "four", "name": "n", "steps": [
        {"step_id": "d", "action": "echo", "inputs": {"x": 1, "y": [1, 2]}}]}));
    assert_eq!(h.run_all().len(), 1);
}

#[test]
fn a_cached_result_expires_after_its_ttl_and_a_map_reuses_item_by_item() {
    let (h, rule) = cached_harness();
    // run_all moves the clock a minute past its last task (backoffs).
    rule.lock().unwrap().1 = Some(600_000);
    let spec = |id: &str| {
        json!({"workflow_id": id, "name": "n", "steps": [
        {"step_id": "a", "action": "echo", "inputs": {"x": 1}}]})
    };
    h.submit(spec("first"));
    assert_eq!(h.run_all().len(), 1);
    h.submit(spec("hit"));
    assert_eq!(h.run_all().len(), 0, "within the ttl");
    assert_eq!(h.status("hit")["status"], "completed");
    h.tick(600_001);
    h.submit(spec("expired"));
    assert_eq!(h.run_all().len(), 1, "past the ttl");

    // A for_each reuses item by item.
    h.submit(json!({"workflow_id": "map1", "name": "n", "steps": [
        {"step_id": "m", "action": "echo", "for_each": [1, 2], "inputs": {"v": "${item}"}}]}));
    assert_eq!(h.run_all().len(), 2);
    h.submit(json!({"workflow_id": "map2", "name": "n", "steps": [
        {"step_id": "m", "action": "echo", "for_each": [2, 3], "inputs": {"v": "${item}"}}]}));
    let ran: Vec<String> = h.run_all().into_iter().map(|r| r.task).collect();
    assert_eq!(ran, ["wf:map2:m:1"], "item 0 (v=2) came from the cache");
    let result = h.engine.result("map2", true, false).unwrap();
    assert_eq!(result["outputs"][0]["result"], json!([{"v": 2}, {"v": 3}]));
}

#[test]
fn a_stop_ends_a_running_for_each_after_its_running_items() {
    let h = harness();
    h.submit(json!({"workflow_id": "w", "name": "n", "steps": [
        {"step_id": "map", "action": "echo", "for_each": [1, 2, 3, 4, 5], "max_parallel": 1,
         "inputs": {"v": "${item}"}},
        {"step_id": "bad", "action": "fail"},
    ]}));
    let (first, fa) = h.claim().unwrap();
    let (second, sa) = h.claim().unwrap();
    let (item, bad) = if first.tool == "fail" {
        ((second, sa), (first, fa))
    } else {
        ((first, fa), (second, sa))
    };
    h.finish(&bad.0, bad.1); // the workflow stops while item 0 runs
    h.finish(&item.0, item.1);
    assert!(h.claim().is_none(), "no more items start after the stop");
    let status = h.status("w");
    assert_eq!(status["status"], "failed", "{status}");
    let map = h.step("w", "map");
    assert_eq!(map["status"], "cancelled", "{map}");
    assert_eq!(
        map["reason"],
        "1 of 5 items ran before the workflow was cancelled or stopped"
    );
}
