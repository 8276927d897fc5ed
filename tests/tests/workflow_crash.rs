//! Crash safety of workflows: 40 workflows (a 50-item fan-out, a 5-step chain
//! and a diamond each) submitted through `workflow_submit` over HTTP, the
//! server killed with SIGKILL 8 times at random moments and restarted on the
//! same data directory. Every step calls the `recorder` fixture, which
//! appends its key to a journal, so the test sees every execution in order.
//!
//! Asserted: every workflow completed; every step `completed` once (its task
//! completed at most once across every life, per the server's logs); no task
//! ran more often than it was attempted; re-runs are bounded by kills × slots;
//! and no dependent ran before all its dependencies had completed (its first
//! execution comes after their last in the journal).
//!
//! The same runs on PostgreSQL with two nodes sharing one schema and one
//! journal, either node killed at random.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use mcpplus_queue::pg_test::TestSchema;
use mcpplus_queue::postgres_store::Clock;
use mcpplus_queue::store::ListFilter;
use mcpplus_queue::{QueueStore, TaskState};
use mcpplus_tests::queue::completions_logged;
use mcpplus_tests::{HttpServer, Scratch, artifacts, install_recorder};
use mcpplus_workflow::spec::WorkflowState;
use rmcp::ServiceExt as _;
use rmcp::model::CallToolRequestParams;
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::{Value, json};

const WORKFLOWS: usize = 40;
const ITEMS: usize = 50;
const KILLS: usize = 8;
const SLOTS: usize = 4;

type Client = RunningService<RoleClient, ()>;

/// Steps each workflow has, with what they depend on (the fan-out's items are
/// keyed `fan/0` … `fan/49` and depend on nothing).
const CHAIN: [(&str, &[&str]); 5] = [
    ("c1", &[]),
    ("c2", &["c1"]),
    ("c3", &["c2"]),
    ("c4", &["c3"]),
    ("c5", &["c4"]),
];
const DIAMOND: [(&str, &[&str]); 4] = [
    ("d1", &[]),
    ("d2", &["d1"]),
    ("d3", &["d1"]),
    ("d4", &["d2", "d3"]),
];

fn spec(id: &str) -> Value {
    let retry = json!({"max_attempts": 100, "backoff_ms": 10});
    let note = |key: String| json!({"key": key, "work_ms": 2});
    let mut steps = vec![json!({
        "step_id": "fan", "action": "note_execution", "retry": retry,
        "for_each": (0..ITEMS).collect::<Vec<_>>(), "max_parallel": 8,
        "inputs": note(format!("{id}/fan/${{index}}")),
    })];
    for (step, deps) in CHAIN.iter().chain(DIAMOND.iter()) {
        steps.push(json!({
            "step_id": step, "action": "note_execution", "retry": retry,
            "depends_on": deps, "inputs": note(format!("{id}/{step}")),
        }));
    }
    json!({"workflow_id": id, "name": format!("crash test {id}"), "steps": steps})
}

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

/// Submit each workflow until done or the server dies; the ids accepted
/// (a re-submit of the same spec answers `created: false`, also accepted).
async fn submit(client: &Client, ids: &[String]) -> BTreeSet<String> {
    let mut accepted = BTreeSet::new();
    for id in ids {
        let args = spec(id);
        let params = CallToolRequestParams::new("workflow_submit")
            .with_arguments(args.as_object().cloned().unwrap());
        let answer = tokio::time::timeout(Duration::from_secs(5), client.call_tool(params)).await;
        match answer {
            Ok(Ok(r)) if r.is_error != Some(true) => {
                accepted.insert(id.clone());
            }
            Ok(Ok(r)) => panic!("workflow_submit {id} refused: {:?}", r.content),
            // The server died (or hangs dying): stop this life's submits.
            _ => return accepted,
        }
    }
    accepted
}

fn workflow_states(store: &QueueStore) -> BTreeMap<String, WorkflowState> {
    store
        .transaction(0, |txn| {
            let (rows, _) = mcpplus_workflow::store::list(txn.conn(), None, None, 0, 10_000)?;
            Ok::<_, mcpplus_queue::StoreError>(rows.into_iter().map(|w| (w.id, w.state)).collect())
        })
        .unwrap()
}

/// Where the nodes keep the queue: one node's SQLite file, or a PostgreSQL
/// schema that two nodes share.
enum Backend {
    Sqlite,
    Postgres(TestSchema),
}

/// The nodes of one run, sharing one journal (the recorder appends with
/// O_APPEND, so lines from two processes interleave whole and in time order).
struct Deployment {
    scratch: Scratch,
    nodes: Vec<Node>,
    backend: Backend,
}

impl Deployment {
    fn new(label: &str, backend: Backend) -> Self {
        let scratch = Scratch::new(label);
        let journal = scratch.join("journal");
        std::fs::create_dir_all(&journal).unwrap();
        let count = match backend {
            Backend::Sqlite => 1,
            Backend::Postgres(_) => 2,
        };
        let nodes = (0..count)
            .map(|i| {
                let node = Node {
                    scratch: Scratch::new(&format!("{label}-node-{i}")),
                };
                let tools = node.scratch.join("tools");
                std::fs::create_dir_all(&tools).unwrap();
                install_recorder(&tools, &journal);
                std::fs::copy(
                    artifacts::workflow_tools(),
                    tools.join("workflow_tools.wasm"),
                )
                .unwrap();
                std::fs::write(
                    tools.join("workflow_tools.policy.toml"),
                    "[workflow]\nsubmit = true\n",
                )
                .unwrap();
                let database = match &backend {
                    Backend::Sqlite => String::new(),
                    Backend::Postgres(pg) => format!(
                        "backend = \"postgres\"\nurl = \"{}\"\nschema = \"{}\"\n",
                        pg.url, pg.schema
                    ),
                };
                std::fs::write(
                    node.scratch.join("mcpplus.toml"),
                    format!(
                        "[queue]\n{database}workers = {SLOTS}\nlease_ms = 1500\npoll_ms = 50\n"
                    ),
                )
                .unwrap();
                node
            })
            .collect();
        Self {
            scratch,
            nodes,
            backend,
        }
    }

    /// The queue as the test sees it once the nodes are down.
    fn store(&self) -> std::sync::Arc<QueueStore> {
        match &self.backend {
            Backend::Sqlite => std::sync::Arc::new(
                QueueStore::open(&self.nodes[0].scratch.join("data/queue.sqlite3")).unwrap(),
            ),
            Backend::Postgres(pg) => pg.queue.clone(),
        }
    }

    fn journal(&self) -> std::path::PathBuf {
        self.scratch.join("journal/executions.log")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_survive_kill_9_with_each_step_completed_once_and_in_order() {
    survive_kill_9(Deployment::new("workflow-crash", Backend::Sqlite)).await;
}

/// The same on PostgreSQL (`MCPPLUS_TEST_PG_URL`, which scripts/test.sh
/// sets), with two nodes sharing the schema: both drivers advance the same
/// workflows, and random nodes are killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflows_on_postgres_survive_kill_9_of_either_node() {
    let schema = TestSchema::with_clock(Clock::Database);
    survive_kill_9(Deployment::new(
        "workflow-crash-pg",
        Backend::Postgres(schema),
    ))
    .await;
}

async fn survive_kill_9(deployment: Deployment) {
    let nodes = &deployment.nodes;
    let ids: Vec<String> = (0..WORKFLOWS).map(|i| format!("wf{i:02}")).collect();
    let mut accepted = BTreeSet::new();
    let mut completions = BTreeMap::new();
    let started = Instant::now();
    let mut servers: Vec<Option<HttpServer>> = nodes.iter().map(|n| Some(n.start())).collect();
    for life in 0..=KILLS {
        let pending: Vec<String> = ids
            .iter()
            .filter(|id| !accepted.contains(*id))
            .cloned()
            .collect();
        let via = fastrand::usize(..nodes.len());
        let url = servers[via].as_ref().unwrap().url.clone();
        let submitter = tokio::spawn(async move {
            match connect(&url).await {
                Some(client) => submit(&client, &pending).await,
                None => BTreeSet::new(),
            }
        });
        if life < KILLS {
            tokio::time::sleep(Duration::from_millis(fastrand::u64(200..1_500))).await;
            let victim = fastrand::usize(..nodes.len());
            let killed = servers[victim].take().unwrap();
            completions_logged(&killed.kill_and_collect_logs(), &mut completions);
            accepted.extend(submitter.await.unwrap());
            servers[victim] = Some(nodes[victim].start());
            continue;
        }
        // The last life is never killed: submit the rest, then wait for every
        // workflow to finish.
        accepted.extend(submitter.await.unwrap());
        assert_eq!(
            accepted.len(),
            WORKFLOWS,
            "every workflow was eventually accepted"
        );
        let store = deployment.store();
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let states = workflow_states(&store);
            if states.len() == WORKFLOWS && states.values().all(|s| s.is_terminal()) {
                break;
            }
            assert!(Instant::now() < deadline, "not finished: {states:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for server in servers.iter_mut() {
            completions_logged(
                &server.take().unwrap().kill_and_collect_logs(),
                &mut completions,
            );
        }
    }

    let store = deployment.store();
    let states = workflow_states(&store);
    for (id, state) in &states {
        assert_eq!(*state, WorkflowState::Completed, "workflow {id}");
    }
    let steps_per_workflow = 1 + CHAIN.len() + DIAMOND.len();
    let all_steps: Vec<(String, String)> = store
        .transaction(0, |txn| {
            let mut all = Vec::new();
            for id in &ids {
                for s in mcpplus_workflow::store::steps(txn.conn(), id)? {
                    all.push((id.clone(), s.state.to_string()));
                }
            }
            Ok::<_, mcpplus_queue::StoreError>(all)
        })
        .unwrap();
    assert_eq!(all_steps.len(), WORKFLOWS * steps_per_workflow);
    assert!(
        all_steps.iter().all(|(_, s)| s == "completed"),
        "{all_steps:?}"
    );

    let tasks_per_workflow = ITEMS + CHAIN.len() + DIAMOND.len();
    let (tasks, total) = store.list(&ListFilter::default(), 0, 100_000).unwrap();
    assert_eq!(
        total as usize,
        WORKFLOWS * tasks_per_workflow,
        "one task per step and item"
    );
    let journal_text = std::fs::read_to_string(deployment.journal()).unwrap();
    let lines: Vec<&str> = journal_text.lines().collect();
    let mut executions: BTreeMap<&str, usize> = BTreeMap::new();
    let mut first: BTreeMap<&str, usize> = BTreeMap::new();
    let mut last: BTreeMap<&str, usize> = BTreeMap::new();
    for (at, key) in lines.iter().enumerate() {
        *executions.entry(key).or_default() += 1;
        first.entry(key).or_insert(at);
        last.insert(key, at);
    }
    let mut reruns = 0;
    for task in &tasks {
        assert_eq!(task.state, TaskState::Completed, "{task:?}");
        let key = task.arguments["key"].as_str().unwrap();
        let ran = executions.get(key).copied().unwrap_or(0);
        assert!(ran >= 1, "{key} completed without running");
        assert!(
            ran as u32 <= task.attempt,
            "{key} ran {ran} times in {} attempts",
            task.attempt
        );
        assert!(
            completions.get(&task.id).copied().unwrap_or(0) <= 1,
            "{} completed more than once",
            task.id
        );
        reruns += ran - 1;
    }
    assert!(
        reruns <= KILLS * SLOTS,
        "{reruns} re-runs for {KILLS} kills of {SLOTS} slots"
    );
    for id in &ids {
        for (step, deps) in CHAIN.iter().chain(DIAMOND.iter()) {
            let me = first[format!("{id}/{step}").as_str()];
            for dep in *deps {
                let before = last[format!("{id}/{dep}").as_str()];
                assert!(
                    before < me,
                    "{id}/{step} ran (line {me}) before {id}/{dep} finished (line {before})"
                );
            }
        }
    }
    println!(
        "workflow crash test: {WORKFLOWS} workflows ({} tasks) on {} node(s), {KILLS} kill -9s, \
         all completed; executions {} ({reruns} re-runs of interrupted attempts), {:.1} s",
        tasks.len(),
        nodes.len(),
        lines.len(),
        started.elapsed().as_secs_f64()
    );
}
