//! Crash safety of the task queue: thousands of tasks submitted through the
//! `task_submit` tool, the server killed with SIGKILL at random moments (while
//! tasks are submitted and while they run) and restarted on the same data
//! directory. The executing tool (fixture `recorder`) appends each execution to
//! a journal, so the test counts executions per task.
//!
//! Asserted: every accepted task exists and ends `completed`; no task is
//! completed twice (one `completed` outcome logged at most per task, across
//! every life of the server); a task ran more than once only if an attempt of
//! it was interrupted (its attempt count says so), and never more often than
//! it was attempted; the extra executions are bounded by kills × slots.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use mcpplus_queue::store::ListFilter;
use mcpplus_queue::{QueueStore, TaskState};
use mcpplus_tests::queue::completions_logged;
use mcpplus_tests::{HttpServer, Scratch, install_recorder, install_task_queue};
use rmcp::ServiceExt as _;
use rmcp::model::CallToolRequestParams;
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::json;

const TASKS: usize = 2_000;
const KILLS: usize = 8;
const SLOTS: usize = 4;
const SUBMITTERS: usize = 4;

type Client = RunningService<RoleClient, ()>;

struct Node {
    scratch: Scratch,
}

impl Node {
    fn start(&self) -> HttpServer {
        HttpServer::start_node(&self.scratch)
    }
}

async fn connect(url: &str) -> Option<Client> {
    let connecting = ().serve(StreamableHttpClientTransport::from_uri(url.to_string()));
    tokio::time::timeout(Duration::from_secs(10), connecting)
        .await
        .ok()?
        .ok()
}

/// Submit `ids` through task_submit until done or the server dies. Returns the
/// ids accepted: answered with success, or found to exist already when
/// re-submitted after a kill interrupted the first try.
async fn submit(client: &Client, ids: &[String]) -> (BTreeSet<String>, Option<String>) {
    let mut accepted = BTreeSet::new();
    for id in ids {
        let args = json!({
            "task_id": id, "task_type": "note_execution",
            "payload": {"key": id, "work_ms": 2},
            "retry_policy": {"max_retries": 100, "backoff_ms": 10},
        });
        let params = CallToolRequestParams::new("task_submit")
            .with_arguments(args.as_object().cloned().unwrap());
        // A killed server can leave the client waiting: give up on it.
        let answer = tokio::time::timeout(Duration::from_secs(3), client.call_tool(params)).await;
        match answer.unwrap_or_else(|_| {
            Err(rmcp::ServiceError::Timeout {
                timeout: Duration::from_secs(10),
            })
        }) {
            Ok(r) if r.is_error != Some(true) => {
                accepted.insert(id.clone());
            }
            Ok(r) => {
                let text = serde_json::to_string(&r.content).unwrap();
                assert!(text.contains("already exists"), "submit {id}: {text}");
                accepted.insert(id.clone());
            }
            // The server died: this id is not accepted (yet).
            Err(_) => return (accepted, Some(id.clone())),
        }
    }
    (accepted, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_survive_kill_9_without_loss_or_double_completion() {
    let node = Node {
        scratch: Scratch::new("queue-crash"),
    };
    let tools = node.scratch.join("tools");
    let journal = node.scratch.join("journal");
    std::fs::create_dir_all(&tools).unwrap();
    std::fs::create_dir_all(&journal).unwrap();
    install_recorder(&tools, &journal);
    install_task_queue(&tools);
    std::fs::write(
        node.scratch.join("mcpplus.toml"),
        format!("[queue]\nworkers = {SLOTS}\nlease_ms = 1500\npoll_ms = 50\n"),
    )
    .unwrap();

    let ids: Vec<String> = (0..TASKS).map(|i| format!("t{i:05}")).collect();
    let mut pending: Vec<String> = ids.clone();
    let mut accepted = BTreeSet::new();
    let mut completions = BTreeMap::new();
    let mut kills = 0;
    let started = Instant::now();
    loop {
        let mut server = Some(node.start());
        let url = server.as_ref().unwrap().url.clone();
        // Submitters share the pending ids; a kill (if this life has one)
        // comes at a random moment.
        let chunks: Vec<Vec<String>> = pending
            .chunks(pending.len().div_ceil(SUBMITTERS).max(1))
            .map(<[String]>::to_vec)
            .collect();
        let mut submitters = tokio::task::JoinSet::new();
        for chunk in chunks {
            let url = url.clone();
            submitters.spawn(async move {
                let outcome = match connect(&url).await {
                    Some(client) => submit(&client, &chunk).await,
                    // Killed before we connected: nothing accepted.
                    None => (BTreeSet::new(), chunk.first().cloned()),
                };
                (chunk, outcome)
            });
        }
        let kill_after = Duration::from_millis(fastrand::u64(200..1_500));
        let kill_this_life_skipped = kills == KILLS;
        if !kill_this_life_skipped {
            tokio::time::sleep(kill_after).await;
            let killed = server.take().unwrap();
            completions_logged(&killed.kill_and_collect_logs(), &mut completions);
            kills += 1;
        }
        let mut still_pending = Vec::new();
        while let Some(joined) = submitters.join_next().await {
            let (chunk, (done, stopped_at)) = joined.expect("submitter");
            accepted.extend(done.iter().cloned());
            if let Some(first) = stopped_at {
                let from = chunk.iter().position(|id| *id == first).unwrap();
                still_pending.extend(chunk[from..].iter().cloned());
            }
        }
        pending = still_pending;
        if kill_this_life_skipped {
            // The last life, never killed: every id is in; wait until every
            // task is finished.
            assert!(
                pending.is_empty(),
                "unsubmitted after the last life: {pending:?}"
            );
            wait_until_finished(&node, TASKS).await;
            let last = server.take().unwrap();
            completions_logged(&last.kill_and_collect_logs(), &mut completions);
            break;
        }
    }
    assert_eq!(accepted.len(), TASKS, "every id was eventually accepted");

    // The store, read after the last server stopped.
    let store = QueueStore::open(&node.scratch.join("data/queue.sqlite3")).unwrap();
    let (tasks, total) = store
        .list(&ListFilter::default(), 0, (TASKS * 2) as u64)
        .unwrap();
    assert_eq!(total as usize, TASKS, "no task lost, none invented");
    let journal_text = std::fs::read_to_string(journal.join("executions.log")).unwrap();
    let mut executions: BTreeMap<&str, usize> = BTreeMap::new();
    for line in journal_text.lines() {
        *executions.entry(line).or_default() += 1;
    }
    let mut reruns = 0;
    let mut interrupted_attempts = 0;
    for task in &tasks {
        assert!(accepted.contains(&task.id));
        assert_eq!(task.state, TaskState::Completed, "{task:?}");
        let ran = executions.get(task.id.as_str()).copied().unwrap_or(0);
        assert!(ran >= 1, "{} completed without running", task.id);
        assert!(
            ran as u32 <= task.attempt,
            "{} ran {ran} times in {} attempts",
            task.id,
            task.attempt
        );
        assert!(
            completions.get(&task.id).copied().unwrap_or(0) <= 1,
            "{} completed more than once",
            task.id
        );
        reruns += ran - 1;
        interrupted_attempts += task.attempt as usize - 1;
    }
    // Each kill interrupts at most SLOTS running attempts.
    assert!(
        interrupted_attempts <= KILLS * SLOTS,
        "{interrupted_attempts} interrupted attempts for {KILLS} kills of {SLOTS} slots"
    );
    let logged: usize = completions.values().sum();
    println!(
        "crash test: {TASKS} tasks accepted, {KILLS} kill -9s, {total} completed exactly once; \
         executions {} ({reruns} re-runs of interrupted attempts), attempts beyond the first {interrupted_attempts}, \
         completions logged {logged} (a kill between commit and log loses the line), {:.1} s",
        journal_text.lines().count(),
        started.elapsed().as_secs_f64()
    );
}

/// Poll the store file (WAL: readable while the server writes) until `n`
/// tasks are finished.
async fn wait_until_finished(node: &Node, n: usize) {
    let store = QueueStore::open(&node.scratch.join("data/queue.sqlite3")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let counts = store.counts().unwrap();
        let finished: u64 = counts
            .iter()
            .filter(|(s, _)| s.is_terminal())
            .map(|(_, c)| c)
            .sum();
        if finished as usize >= n {
            return;
        }
        assert!(Instant::now() < deadline, "not finished: {counts:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
