//! Several `mcpplus serve` nodes sharing one PostgreSQL queue
//! (`[queue] backend = "postgres"`), against the test server `scripts/test.sh`
//! starts (`MCPPLUS_TEST_PG_URL`, and `MCPPLUS_TEST_PG_DIR` to restart it).
//!
//! - Three nodes, 2,000 tasks of the `recorder` fixture, random nodes killed
//!   with SIGKILL (at least 10 times) and restarted while the tasks run:
//!   every task completes exactly once, no task runs more often than it was
//!   attempted, and re-runs are bounded by what the kills interrupted.
//! - PostgreSQL itself restarted (fast shutdown) while nodes work: the nodes
//!   stay up, reconnect, and finish everything, nothing lost, nothing
//!   completed twice.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mcpplus_queue::pg_test::TestSchema;
use mcpplus_queue::postgres_store::Clock;
use mcpplus_queue::store::ListFilter;
use mcpplus_queue::{NewTask, QueueStore, TaskState};
use mcpplus_tests::mesh::{check_executions, journal_executions};
use mcpplus_tests::queue::completions_logged;
use mcpplus_tests::{HttpServer, Scratch, install_recorder};
use serde_json::json;

const SLOTS: usize = 4;

/// The restart test stops the shared test server: the tests of this file
/// take turns (cargo runs a file's tests in parallel threads).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// One node: its own tools, data dir and journal; the shared schema.
struct Node {
    scratch: Scratch,
}

impl Node {
    fn new(label: &str, schema: &TestSchema, lease_ms: u64) -> Self {
        let scratch = Scratch::new(label);
        let tools = scratch.join("tools");
        let journal = scratch.join("journal");
        std::fs::create_dir_all(&tools).unwrap();
        std::fs::create_dir_all(&journal).unwrap();
        install_recorder(&tools, &journal);
        std::fs::write(
            scratch.join("mcpplus.toml"),
            format!(
                "[queue]\nbackend = \"postgres\"\nurl = \"{}\"\nschema = \"{}\"\n\
                 workers = {SLOTS}\nlease_ms = {lease_ms}\npoll_ms = 100\n",
                schema.url, schema.schema
            ),
        )
        .unwrap();
        Self { scratch }
    }

    fn start(&self) -> HttpServer {
        HttpServer::start_node(&self.scratch)
    }

    fn journal(&self) -> PathBuf {
        self.scratch.join("journal/executions.log")
    }
}

fn submit_all(store: &QueueStore, n: usize, work_ms: u64) -> Vec<String> {
    submit_range(store, 0..n, work_ms)
}

fn submit_range(store: &QueueStore, range: std::ops::Range<usize>, work_ms: u64) -> Vec<String> {
    let tasks: Vec<NewTask> = range
        .map(|i| NewTask {
            id: Some(format!("t{i:05}")),
            max_attempts: 100,
            backoff_ms: 10,
            ..NewTask::new(
                "note_execution",
                json!({"key": format!("t{i:05}"), "work_ms": work_ms}),
            )
        })
        .collect();
    store
        .submit_batch(tasks, 0)
        .unwrap()
        .into_iter()
        .map(|(t, _)| t.id)
        .collect()
}

fn running(store: &QueueStore) -> u64 {
    store
        .counts()
        .unwrap()
        .iter()
        .filter(|(s, _)| *s == TaskState::Running)
        .map(|(_, n)| n)
        .sum()
}

fn finished(store: &QueueStore) -> u64 {
    store
        .counts()
        .unwrap()
        .iter()
        .filter(|(s, _)| s.is_terminal())
        .map(|(_, n)| n)
        .sum()
}

/// Every task completed, ran at least once and at most as often as it was
/// attempted, and was logged completed at most once. Returns (re-runs,
/// attempts beyond the first).
fn check_outcome(
    store: &QueueStore,
    ids: &[String],
    journals: &[&Path],
    completions: &BTreeMap<String, usize>,
) -> (u32, u32) {
    let (tasks, total) = store
        .list(&ListFilter::default(), 0, (ids.len() * 2) as u64)
        .unwrap();
    assert_eq!(total as usize, ids.len(), "no task lost, none invented");
    for task in &tasks {
        assert_eq!(task.state, TaskState::Completed, "{task:?}");
        assert!(
            completions.get(&task.id).copied().unwrap_or(0) <= 1,
            "{} completed more than once",
            task.id
        );
    }
    let executions = journal_executions(journals);
    let reruns = check_executions(
        &executions,
        tasks.iter().map(|t| (t.id.as_str(), t.attempt)),
    );
    let extra_attempts = tasks.iter().map(|t| t.attempt - 1).sum();
    (reruns, extra_attempts)
}

#[test]
fn three_nodes_share_one_database_through_kill_9s() {
    let _alone = alone();
    const TASKS: usize = 2_000;
    const MIN_KILLS: usize = 10;
    let schema = TestSchema::with_clock(Clock::Database);
    let store = schema.queue.clone();
    let nodes: Vec<Node> = (0..3)
        .map(|i| Node::new(&format!("pg-node-{i}"), &schema, 1_500))
        .collect();
    let mut servers: Vec<Option<HttpServer>> = nodes.iter().map(|n| Some(n.start())).collect();
    let started = Instant::now();
    // The tasks go in as MIN_KILLS waves, and each wave gets one kill once
    // the queue shows tasks running: the kill count does not depend on how
    // fast the machine works through them.
    let mut ids = Vec::new();
    let mut completions = BTreeMap::new();
    let mut kills = 0;
    let deadline = Instant::now() + Duration::from_secs(400);
    let wave = TASKS / MIN_KILLS;
    let mut kill_one = |servers: &mut Vec<Option<HttpServer>>, kills: &mut usize| {
        let victim = fastrand::usize(..nodes.len());
        let killed = servers[victim].take().unwrap();
        completions_logged(&killed.kill_and_collect_logs(), &mut completions);
        *kills += 1;
        servers[victim] = Some(nodes[victim].start());
    };
    for first in (0..TASKS).step_by(wave) {
        ids.extend(submit_range(&store, first..(first + wave).min(TASKS), 5));
        while running(&store) == 0 && (finished(&store) as usize) < ids.len() {
            assert!(Instant::now() < deadline, "wave at {first} never ran");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(fastrand::u64(0..200)));
        kill_one(&mut servers, &mut kills);
    }
    // Then random kills until nine tenths are done.
    while (finished(&store) as usize) < TASKS {
        assert!(
            Instant::now() < deadline,
            "not finished: {:?}",
            store.counts().unwrap()
        );
        std::thread::sleep(Duration::from_millis(fastrand::u64(300..900)));
        if fastrand::bool() && (finished(&store) as usize) < TASKS * 9 / 10 {
            kill_one(&mut servers, &mut kills);
        }
    }
    for server in servers.iter_mut() {
        completions_logged(
            &server.take().unwrap().kill_and_collect_logs(),
            &mut completions,
        );
    }
    let journals: Vec<PathBuf> = nodes.iter().map(Node::journal).collect();
    let journal_refs: Vec<&Path> = journals.iter().map(PathBuf::as_path).collect();
    let (reruns, extra_attempts) = check_outcome(&store, &ids, &journal_refs, &completions);
    // Each task names the node whose slot ran it: `local/<slot>@<host>:<pid>`.
    let (tasks, _) = store.list(&ListFilter::default(), 0, TASKS as u64).unwrap();
    let runners: std::collections::BTreeSet<&str> = tasks
        .iter()
        .filter_map(|t| t.worker.as_deref()?.split_once('@').map(|(_, node)| node))
        .collect();
    assert!(
        runners.len() >= nodes.len(),
        "tasks ran on {} node processes (3 nodes, restarted {kills} times): {runners:?}",
        runners.len()
    );
    // A kill interrupts at most the SLOTS attempts that node was running.
    assert!(
        extra_attempts as usize <= kills * SLOTS,
        "{extra_attempts} attempts beyond the first for {kills} kills of {SLOTS} slots"
    );
    println!(
        "postgres kill test: {TASKS} tasks on 3 nodes, {kills} kill -9s, all completed once; \
         {reruns} re-runs, {extra_attempts} attempts beyond the first, {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn nodes_ride_out_a_database_restart() {
    let _alone = alone();
    const TASKS: usize = 600;
    let dir = std::env::var("MCPPLUS_TEST_PG_DIR").unwrap_or_else(|_| {
        panic!("this test restarts the test database: run scripts/test.sh, or set MCPPLUS_TEST_PG_DIR to the directory given to scripts/postgres.sh start")
    });
    let schema = TestSchema::with_clock(Clock::Database);
    let store = schema.queue.clone();
    let nodes: Vec<Node> = (0..2)
        .map(|i| Node::new(&format!("pg-restart-{i}"), &schema, 3_000))
        .collect();
    let mut servers: Vec<HttpServer> = nodes.iter().map(Node::start).collect();
    let ids = submit_all(&store, TASKS, 10);
    // Let work start, then restart the server under the running nodes.
    let deadline = Instant::now() + Duration::from_secs(60);
    while finished(&store) < 50 {
        assert!(Instant::now() < deadline, "no progress before the restart");
        std::thread::sleep(Duration::from_millis(50));
    }
    let restarted = std::process::Command::new(mcpplus_tests::root().join("scripts/postgres.sh"))
        .args(["restart", &dir])
        .output()
        .expect("scripts/postgres.sh restart");
    assert!(
        restarted.status.success(),
        "restart failed: {}",
        String::from_utf8_lossy(&restarted.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        // The store of the test reconnects too (its pool checks connections).
        match store.counts() {
            Ok(counts) => {
                let done: u64 = counts
                    .iter()
                    .filter(|(s, _)| s.is_terminal())
                    .map(|(_, n)| n)
                    .sum();
                if done as usize >= TASKS {
                    break;
                }
            }
            Err(e) => assert!(e.to_string().contains("PostgreSQL"), "{e}"),
        }
        assert!(
            Instant::now() < deadline,
            "the nodes did not finish after the restart"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut completions = BTreeMap::new();
    let mut errors = 0;
    for server in servers.drain(..) {
        let lines = server.kill_and_collect_logs();
        errors += lines
            .iter()
            .filter(|l| l.contains("\"queue.error\""))
            .count();
        assert!(
            !lines.iter().any(|l| l.contains("panicked")),
            "a node panicked:\n{}",
            lines.join("\n")
        );
        completions_logged(&lines, &mut completions);
    }
    let journals: Vec<PathBuf> = nodes.iter().map(Node::journal).collect();
    let journal_refs: Vec<&Path> = journals.iter().map(PathBuf::as_path).collect();
    let (reruns, extra_attempts) = check_outcome(&store, &ids, &journal_refs, &completions);
    println!(
        "postgres restart test: {TASKS} tasks on 2 nodes across a database restart, all completed once; \
         {errors} logged queue errors while it was down, {reruns} re-runs, {extra_attempts} attempts beyond the first"
    );
}
