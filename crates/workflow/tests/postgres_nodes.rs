//! Two nodes' controllers on one PostgreSQL schema (`MCPPLUS_TEST_PG_URL`,
//! which scripts/test.sh sets) advancing the same workflows at the same
//! time, as their drivers do after every settled task: each advance holds
//! its workflow (`store::lock_workflow`), so the second sees what the first
//! did instead of doing it again: none fails, no task runs twice, nothing is
//! logged twice, and every workflow ends as a lone node's would.

use std::collections::BTreeMap;
use std::sync::Arc;

use mcpplus_queue::pg_test::TestSchema;
use mcpplus_queue::postgres_store::Clock;
use mcpplus_queue::{QueueStore, TaskState};
use mcpplus_workflow::{WorkflowOptions, Workflows};
use serde_json::json;

const NOW: i64 = 1_000_000;
const WORKFLOWS: usize = 12;
const ITEMS: usize = 16;

fn engine(store: Arc<QueueStore>) -> Arc<Workflows> {
    Arc::new(
        Workflows::open(
            store,
            WorkflowOptions {
                tool_exists: Box::new(|t| t == "echo"),
                template_dir: None,
                node: "test".into(),
                retention_ms: 0,
            },
        )
        .unwrap()
        .with_clock(|| NOW),
    )
}

fn spec(id: &str) -> serde_json::Value {
    json!({"workflow_id": id, "name": "two nodes", "steps": [
        {"step_id": "fan", "action": "echo", "for_each": (0..ITEMS).collect::<Vec<_>>(),
         "max_parallel": 4, "inputs": {"i": "${item}"}},
        {"step_id": "after", "action": "echo", "depends_on": ["fan"], "inputs": {"all": "${steps.fan.result}"}},
        {"step_id": "last", "action": "echo", "depends_on": ["after"]},
    ]})
}

#[test]
fn two_nodes_advancing_the_same_workflows_at_once_do_each_thing_once() {
    let pg = TestSchema::new();
    let stores = [pg.queue.clone(), Arc::new(pg.another_node(Clock::Passed))];
    let engines = [engine(stores[0].clone()), engine(stores[1].clone())];
    let ids: Vec<String> = (0..WORKFLOWS).map(|i| format!("w{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        engines[i % 2].submit(spec(id)).unwrap();
    }
    let mut completed: BTreeMap<String, usize> = BTreeMap::new();
    for round in 0.. {
        assert!(round < 1_000, "the workflows never finished");
        // Run what is ready, half on each node.
        let mut ran = 0;
        for (n, store) in stores.iter().cycle().take(2 * WORKFLOWS * 4).enumerate() {
            let Some(claim) = store
                .claim(&format!("node{}", n % 2), None, NOW + 60_000, NOW)
                .unwrap()
            else {
                continue;
            };
            let result = json!({"structuredContent": {"result": claim.task.arguments}});
            store
                .complete(&claim.task.id, claim.attempt, &result, NOW)
                .unwrap();
            *completed.entry(claim.task.id).or_default() += 1;
            ran += 1;
        }
        // Both nodes advance each workflow at the same moment, twice each.
        let mut failures = Vec::new();
        for id in &ids {
            let start = std::sync::Barrier::new(4);
            std::thread::scope(|s| {
                let workers: Vec<_> = engines
                    .iter()
                    .chain(engines.iter())
                    .map(|engine| {
                        let start = &start;
                        s.spawn(move || {
                            start.wait();
                            engine.advance(id).err().map(|e| format!("{id}: {e}"))
                        })
                    })
                    .collect();
                failures.extend(workers.into_iter().filter_map(|w| w.join().unwrap()));
            });
        }
        assert!(failures.is_empty(), "advances failed: {failures:?}");
        if ran == 0 {
            break;
        }
    }
    for id in &ids {
        let status = engines[0].status(id, true, false).unwrap();
        assert_eq!(status["status"], "completed", "{status}");
        // Each thing happened once: two advances of the same state would
        // both have logged it.
        let result = engines[1].result(id, false, true).unwrap();
        let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
        for event in result["logs"].as_array().unwrap() {
            let step = event["step_id"].as_str().unwrap_or("").to_string();
            *seen
                .entry((step, event["kind"].as_str().unwrap().to_string()))
                .or_default() += 1;
        }
        assert!(
            seen.values().all(|&n| n == 1),
            "{id} logged something twice: {seen:?}"
        );
        assert_eq!(
            seen.get(&(String::new(), "workflow.completed".into())),
            Some(&1)
        );
    }
    let tasks_per_workflow = ITEMS + 2;
    assert_eq!(completed.len(), WORKFLOWS * tasks_per_workflow);
    assert!(
        completed.values().all(|&n| n == 1),
        "a task ran twice: {completed:?}"
    );
    let completed_in_queue = stores[1]
        .counts()
        .unwrap()
        .into_iter()
        .find(|(state, _)| *state == TaskState::Completed)
        .map(|(_, n)| n);
    assert_eq!(
        completed_in_queue,
        Some((WORKFLOWS * tasks_per_workflow) as u64)
    );
}

/// With the database's clock (production), a node's own clock does not
/// stamp the workflow: one far in the past changes nothing.
#[test]
fn workflow_times_come_from_the_database_clock() {
    let pg = TestSchema::with_clock(Clock::Database);
    let engine = Arc::new(
        Workflows::open(
            pg.queue.clone(),
            WorkflowOptions {
                tool_exists: Box::new(|t| t == "echo"),
                template_dir: None,
                node: "skewed".into(),
                retention_ms: 0,
            },
        )
        .unwrap()
        .with_clock(|| 1_000), // this node thinks it is 1970
    );
    engine
        .submit(json!({"workflow_id": "w", "name": "clock", "steps": [
            {"step_id": "a", "action": "echo"}]}))
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let status = engine.status("w", true, false).unwrap();
    let near_now = |v: &serde_json::Value| (v.as_i64().unwrap() - now).abs() < 600_000;
    assert!(near_now(&status["created_time"]), "{status}");
    assert!(near_now(&status["start_time"]), "{status}");
    assert!(near_now(&status["steps"][0]["ready_time"]), "{status}");
}

/// Retention is measured on the clock that stamped the workflow finished:
/// a node whose own clock runs years ahead purges nothing early.
#[test]
fn a_node_clock_ahead_does_not_purge_finished_workflows_early() {
    let pg = TestSchema::with_clock(Clock::Database);
    let ten_years_ahead = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
        + 10 * 365 * 86_400_000;
    let engine = Workflows::open(
        pg.queue.clone(),
        WorkflowOptions {
            tool_exists: Box::new(|t| t == "echo"),
            template_dir: None,
            node: "fast".into(),
            retention_ms: 3_600_000,
        },
    )
    .unwrap()
    .with_clock(move || ten_years_ahead);
    engine
        .submit(json!({"workflow_id": "w", "name": "retention", "steps": [
            {"step_id": "a", "action": "echo"}]}))
        .unwrap();
    engine.cancel("w", None, true).unwrap();
    assert_eq!(
        engine.status("w", false, false).unwrap()["status"],
        "cancelled"
    );
    engine.sweep().unwrap();
    let status = engine.status("w", false, false).unwrap();
    assert_eq!(status["status"], "cancelled", "{status}");
}
