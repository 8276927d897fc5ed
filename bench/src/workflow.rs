//! Workflows against the raw queue, in the same run and on the same workers:
//! a 1,000-item `echo` map against 1,000 `echo` tasks submitted in one batch;
//! a 200-step chain's latency from a step finishing to its dependent
//! starting; `workflow_submit` of 1,000 steps; `workflow_dependencies` on
//! 1,000 steps in each format. Runs on the SQLite queue (`queue`) and again
//! on PostgreSQL (`queue_postgres`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use mcpplus_queue::worker::now_ms;
use mcpplus_queue::{NewTask, QueueStore, TaskState};
use mcpplus_workflow::{WorkflowOptions, Workflows, spawn_driver};
use serde_json::{Value, json};

use crate::Args;
use crate::client::percentile;

const SLOTS: usize = 4;

pub async fn run(
    args: &Args,
    store: Arc<QueueStore>,
    serving: (
        Arc<mcpplus_runtime::Runtime>,
        Arc<mcpplus::catalog::LiveCatalog>,
    ),
) -> anyhow::Result<Value> {
    let items = ((1_000.0 * args.scale) as usize).max(200);
    let chain = ((200.0 * args.scale) as usize).max(50);
    let pool = crate::queue::echo_workers(store.clone(), serving, SLOTS);
    let engine = Arc::new(Workflows::open(
        store.clone(),
        WorkflowOptions {
            tool_exists: Box::new(|_| true),
            template_dir: None,
            node: "bench".into(),
            retention_ms: 0,
        },
    )?);
    let driver = spawn_driver(engine.clone(), Duration::from_millis(500));

    // The raw queue first, then the same work as one for_each.
    let started = Instant::now();
    let batch: Vec<NewTask> = (0..items)
        .map(|i| NewTask::new("echo", json!({"message": format!("m{i}")})))
        .collect();
    let submitting = store.clone();
    tokio::task::spawn_blocking(move || submitting.submit_batch(batch, now_ms())).await??;
    wait(&store, |s| s.counts().map(|c| finished(&c) >= items as u64)).await?;
    let raw_s = started.elapsed().as_secs_f64();

    let started = Instant::now();
    let engine2 = engine.clone();
    tokio::task::spawn_blocking(move || {
        engine2.submit(json!({
            "workflow_id": "map", "name": "map", "max_parallel": 64,
            "steps": [{"step_id": "map", "action": "echo", "for_each": (0..items).collect::<Vec<_>>(),
                       "inputs": {"message": "m${index}"}}],
        }))
    })
    .await??;
    wait_workflow(&engine, "map").await?;
    let map_s = started.elapsed().as_secs_f64();

    // A chain: each step starts once the one before it finished.
    let steps: Vec<Value> = (0..chain)
        .map(|i| {
            let mut step =
                json!({"step_id": format!("s{i}"), "action": "echo", "inputs": {"message": "x"}});
            if i > 0 {
                step["depends_on"] = json!([format!("s{}", i - 1)]);
            }
            step
        })
        .collect();
    let engine2 = engine.clone();
    tokio::task::spawn_blocking(move || {
        engine2.submit(json!({"workflow_id": "chain", "name": "chain", "steps": steps}))
    })
    .await??;
    wait_workflow(&engine, "chain").await?;
    let mut gaps = Vec::new();
    for i in 1..chain {
        let before = store.get(&format!("wf:chain:s{}", i - 1))?;
        let after = store.get(&format!("wf:chain:s{i}"))?;
        let (Some(finished), Some(started)) = (before.finished_ms, after.started_ms) else {
            anyhow::bail!("chain step {i} has no times");
        };
        gaps.push(Duration::from_millis((started - finished).max(0) as u64));
    }
    gaps.sort();
    let gap_ms = |p| percentile(&gaps, p).as_secs_f64() * 1e3;
    driver.abort();
    pool.stop().await;

    // Submitting and drawing a large workflow (validation, rows, the first
    // advance; the graph in each format). Its steps never run: no workers.
    let big: Vec<Value> = (0..1_000usize)
        .map(|i| {
            let deps: Vec<String> = [i / 2, i / 3]
                .iter()
                .filter(|&&d| d < i)
                .map(|d| format!("s{d}"))
                .collect();
            let message = match i {
                0 => "start".to_string(),
                _ => format!("after ${{steps.s{}.result}}", i - 1),
            };
            json!({"step_id": format!("s{i}"), "action": "echo", "depends_on": deps,
                   "inputs": {"message": message}})
        })
        .collect();
    let mut submit_ms = Vec::new();
    for round in 0..5 {
        let spec =
            json!({"workflow_id": format!("big{round}"), "name": "big", "steps": big.clone()});
        let started = Instant::now();
        engine.submit(spec)?;
        submit_ms.push(started.elapsed());
    }
    submit_ms.sort();
    let mut graph = serde_json::Map::new();
    for format in ["json", "dot", "mermaid"] {
        let mut times = Vec::new();
        for _ in 0..5 {
            let started = Instant::now();
            engine.dependencies("big0", format)?;
            times.push(started.elapsed());
        }
        times.sort();
        graph.insert(
            format.into(),
            json!(percentile(&times, 0.5).as_secs_f64() * 1e3),
        );
    }
    let result = json!({
        "slots": SLOTS,
        "items": items,
        "raw_batch_s": raw_s,
        "map_s": map_s,
        "map_over_raw": map_s / raw_s,
        "chain_steps": chain,
        "chain_gap_p50_ms": gap_ms(0.5),
        "chain_gap_p99_ms": gap_ms(0.99),
        "submit_1000_steps_ms": percentile(&submit_ms, 0.5).as_secs_f64() * 1e3,
        "dependencies_1000_steps_ms": graph,
    });
    eprintln!("  workflows ({}): {result}", store.backend());
    Ok(result)
}

fn finished(counts: &[(TaskState, u64)]) -> u64 {
    counts
        .iter()
        .filter(|(s, _)| s.is_terminal())
        .map(|(_, n)| n)
        .sum()
}

async fn wait(
    store: &Arc<QueueStore>,
    done: impl Fn(&QueueStore) -> Result<bool, mcpplus_queue::StoreError>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while !done(store)? {
        anyhow::ensure!(Instant::now() < deadline, "the queue did not finish");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

async fn wait_workflow(engine: &Arc<Workflows>, id: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let status = engine.status(id, false, false)?;
        match status["status"].as_str() {
            Some("completed") => return Ok(()),
            Some("failed" | "cancelled") => anyhow::bail!("workflow {id}: {status}"),
            _ => {}
        }
        anyhow::ensure!(Instant::now() < deadline, "workflow {id} did not finish");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
