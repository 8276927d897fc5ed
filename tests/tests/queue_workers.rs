//! Queue workers running tasks through the real runtime: tasks are calls of
//! the bundled showcase component's tools, run in the same sandbox as direct
//! calls. Checks completion, bounded retries of a failing tool, progress,
//! cancellation of a running task, and a dead worker's lease running out.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mcpplus::catalog::{Catalog, LiveCatalog};
use mcpplus::runner::CatalogRunner;
use mcpplus_queue::worker::{WorkerConfig, WorkerPool, now_ms};
use mcpplus_queue::{NewTask, QueueStore, TaskState};
use mcpplus_runtime::Runtime;
use mcpplus_runtime::engine::RuntimeOptions;
use mcpplus_tests::{Scratch, artifacts};
use serde_json::json;

struct Node {
    _scratch: Scratch,
    store: Arc<QueueStore>,
    runner: Arc<CatalogRunner>,
}

impl Node {
    fn new(name: &str) -> Self {
        let scratch = Scratch::new(name);
        let runtime = Runtime::new(RuntimeOptions {
            cache: Some(scratch.compile_cache()),
            ..RuntimeOptions::default()
        })
        .unwrap();
        let mut catalog = Catalog::default();
        catalog
            .add(runtime.load_file(&artifacts::showcase()).unwrap())
            .unwrap();
        let store = Arc::new(QueueStore::open(&scratch.join("queue.sqlite3")).unwrap());
        Node {
            _scratch: scratch,
            store,
            runner: Arc::new(CatalogRunner {
                runtime: Arc::new(runtime),
                catalog: Arc::new(LiveCatalog::new(catalog)),
            }),
        }
    }

    fn start(&self, slots: usize, lease_ms: u64) -> WorkerPool {
        WorkerPool::start(
            self.store.clone(),
            self.runner.clone(),
            vec![WorkerConfig {
                id: "node-1".into(),
                tools: None,
                slots,
                lease: Duration::from_millis(lease_ms),
                poll: Duration::from_millis(20),
            }],
        )
    }

    fn submit(&self, task: NewTask) -> String {
        self.store.submit(task, now_ms()).unwrap().0.id
    }

    /// Wait until `id` is in a terminal state (or `state`), at most `within`.
    async fn wait_for(&self, id: &str, state: TaskState, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let task = self.store.get(id).unwrap();
            if task.state == state {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "task {id} is {:?}, not {state:?}, after {within:?}: {task:?}",
                task.state
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_run_in_the_sandbox_complete_once_and_failures_are_retried_then_failed() {
    let node = Node::new("queue-run");
    let echoes: Vec<String> = (0..40)
        .map(|i| node.submit(NewTask::new("echo", json!({"message": format!("m{i}")}))))
        .collect();
    let failing = node.submit(NewTask {
        max_attempts: 2,
        backoff_ms: 10,
        ..NewTask::new("divide", json!({"numerator": 1, "denominator": 0}))
    });
    let malformed = node.submit(NewTask::new("echo", json!({"mesage": "typo"})));
    let counting = node.submit(NewTask::new("count_to", json!({"to": 5, "pause_ms": 20})));
    let pool = node.start(4, 2_000);

    for (i, id) in echoes.iter().enumerate() {
        node.wait_for(id, TaskState::Completed, Duration::from_secs(30))
            .await;
        let task = node.store.get(id).unwrap();
        assert_eq!(task.attempt, 1);
        assert_eq!(
            task.result.unwrap()["structuredContent"],
            json!({"result": format!("m{i}")}),
            "{id}"
        );
    }
    node.wait_for(&failing, TaskState::Failed, Duration::from_secs(30))
        .await;
    let failed = node.store.get(&failing).unwrap();
    assert_eq!(failed.attempt, 2, "two attempts, then failed");
    assert!(
        failed.error.as_deref().unwrap_or("").contains("zero"),
        "{failed:?}"
    );
    node.wait_for(&malformed, TaskState::Failed, Duration::from_secs(30))
        .await;
    let malformed = node.store.get(&malformed).unwrap();
    assert_eq!(malformed.attempt, 1, "invalid arguments are not retried");
    assert!(malformed.error.unwrap().starts_with("invalid arguments"));
    node.wait_for(&counting, TaskState::Completed, Duration::from_secs(30))
        .await;
    let counted = node.store.get(&counting).unwrap();
    assert_eq!(
        (counted.progress, counted.progress_total),
        (Some(5.0), Some(5.0)),
        "the guest's progress reaches the task"
    );
    pool.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_task_stops_it_and_frees_the_slot() {
    let node = Node::new("queue-cancel");
    let long = node.submit(NewTask::new("count_to", json!({"to": 200, "pause_ms": 50})));
    let pool = node.start(1, 300);
    node.wait_for(&long, TaskState::Running, Duration::from_secs(10))
        .await;
    node.store
        .cancel(&long, Some("no longer needed"), now_ms())
        .unwrap();

    // The slot notices at its next heartbeat (every 100 ms) and stops the call.
    let next = node.submit(NewTask::new("echo", json!({"message": "after"})));
    let started = Instant::now();
    node.wait_for(&next, TaskState::Completed, Duration::from_secs(5))
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let cancelled = node.store.get(&long).unwrap();
    assert_eq!(cancelled.state, TaskState::Cancelled);
    assert_eq!(cancelled.error.as_deref(), Some("no longer needed"));
    pool.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_workers_task_runs_again_when_its_lease_runs_out() {
    let node = Node::new("queue-lease");
    let id = node.submit(NewTask::new("echo", json!({"message": "again"})));
    // A worker that claims and then dies: it never heartbeats or completes.
    let now = now_ms();
    let claim = node
        .store
        .claim("dead-worker/0", None, now + 200, now)
        .unwrap()
        .unwrap();
    assert_eq!((claim.task.id.as_str(), claim.attempt), (id.as_str(), 1));

    let pool = node.start(1, 200);
    node.wait_for(&id, TaskState::Completed, Duration::from_secs(10))
        .await;
    let task = node.store.get(&id).unwrap();
    assert_eq!(task.attempt, 2, "the second attempt completed it");
    assert!(task.worker.as_deref().unwrap().starts_with("node-1/"));
    // The dead worker's late completion is refused: completed exactly once.
    assert!(
        !node
            .store
            .complete(&id, 1, &json!("late"), now_ms())
            .unwrap()
    );
    assert_eq!(
        node.store.get(&id).unwrap().result.unwrap()["structuredContent"],
        json!({"result": "again"})
    );
    pool.stop().await;
}
