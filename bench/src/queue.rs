//! The durable task queue: submit throughput (durable against in-memory, the
//! cost of the fsync; one submitter, then 1, 4 and 16 at once, which share
//! commits), submit-to-complete latency of a trivial tool through
//! the workers, and the queue with 100,000 tasks waiting.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcpplus::catalog::{Catalog, LiveCatalog};
use mcpplus::runner::CatalogRunner;
use mcpplus_policy::config::queue::QueueConfig;
use mcpplus_queue::service::QueueService;
use mcpplus_queue::store::ListFilter;
use mcpplus_queue::worker::{WorkerConfig, WorkerPool, now_ms};
use mcpplus_queue::{NewTask, QueueStore, TaskState};
use mcpplus_runtime::Runtime;
use mcpplus_runtime::engine::RuntimeOptions;
use mcpplus_runtime::invoke::invoke;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::Args;
use crate::client::{percentile, sequential};

pub async fn run(args: &Args, scratch: &Path, cache: &Path) -> anyhow::Result<Value> {
    let dir = scratch.join("queue");
    std::fs::create_dir_all(&dir)?;
    let submits = ((1_000.0 * args.scale) as usize).max(200);
    let durable = QueueStore::open(&dir.join("submit.sqlite3"))?;
    let durable_per_s = submit_rate(&durable, submits, 1)?;
    let memory_per_s = submit_rate(&QueueStore::in_memory()?, submits, 1)?;
    eprintln!(
        "  submit, one per transaction: {durable_per_s:.0}/s durable (WAL, fsync), {memory_per_s:.0}/s in memory"
    );
    let concurrent = concurrent_submits(&dir, submits * 2)?;
    let latency = submit_to_complete(args, &dir, cache).await?;
    let tools = through_tools(args, &dir, cache).await?;
    let large = hundred_thousand(&dir)?;
    let workflow = crate::workflow::run(
        args,
        Arc::new(QueueStore::open(&dir.join("workflow.sqlite3"))?),
        serving(args, cache, &["showcase.wasm"])?,
    )
    .await?;
    Ok(json!({
        "workflow": workflow,
        "submits": submits,
        "submit_per_s": {"durable": durable_per_s, "in_memory": memory_per_s},
        "concurrent_submits": concurrent,
        "submit_to_complete": latency,
        "tools": tools,
        "large": large,
    }))
}

pub(crate) fn echo(i: usize) -> NewTask {
    NewTask::new("echo", json!({"message": format!("m{i}")}))
}

/// Submits per second: `n` tasks from `submitters` threads at once, each
/// submitting its share one after the other (the host's callers submit from
/// blocking threads, `spawn_blocking`).
pub(crate) fn submit_rate(store: &QueueStore, n: usize, submitters: usize) -> anyhow::Result<f64> {
    rate(n, submitters, |i| store.submit(echo(i), now_ms()).map(drop))
}

/// `submit` for `n` tasks from `submitters` threads at once: per second.
fn rate(
    n: usize,
    submitters: usize,
    submit: impl Fn(usize) -> Result<(), mcpplus_queue::StoreError> + Sync,
) -> anyhow::Result<f64> {
    let each = n / submitters;
    let submit = &submit;
    let started = Instant::now();
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..submitters)
            .map(|t| {
                s.spawn(move || {
                    for i in 0..each {
                        submit(t * each + i)?;
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        threads
            .into_iter()
            .try_for_each(|t| t.join().expect("a submitter panicked"))
    })?;
    Ok((each * submitters) as f64 / started.elapsed().as_secs_f64())
}

/// Durable and in-memory submits/s with 1, 4 and 16 submitters at once, `n`
/// tasks each, a fresh file each: concurrent submits share one commit (group
/// commit), so the durable rate should grow with the submitters. The baseline
/// beside it is a commit (and fsync) per submit, each a `submit_batch` of one.
fn concurrent_submits(dir: &Path, n: usize) -> anyhow::Result<Value> {
    let mut rates = Vec::new();
    for submitters in [1, 4, 16] {
        let file = |what: &str| dir.join(format!("submit-{what}-{submitters}.sqlite3"));
        let durable = submit_rate(&QueueStore::open(&file("group"))?, n, submitters)?;
        let alone = QueueStore::open(&file("alone"))?;
        let commit_each = rate(n, submitters, |i| {
            alone.submit_batch(vec![echo(i)], now_ms()).map(drop)
        })?;
        let memory = submit_rate(&QueueStore::in_memory()?, n, submitters)?;
        eprintln!(
            "  submit, {submitters} submitters at once: {durable:.0}/s durable, {commit_each:.0}/s durable with a commit each, {memory:.0}/s in memory"
        );
        rates.push(json!({"submitters": submitters, "durable": durable,
            "durable_commit_each": commit_each, "in_memory": memory}));
    }
    Ok(json!({"tasks": n, "rates": rates}))
}

/// Submit one `echo` task, wait until it is completed; sequentially.
async fn submit_to_complete(args: &Args, dir: &Path, cache: &Path) -> anyhow::Result<Value> {
    let store = Arc::new(QueueStore::open(&dir.join("latency.sqlite3"))?);
    let n = ((300.0 * args.scale) as usize).max(50);
    let (p50, p99) = echo_latency(args, cache, store, n).await?;
    eprintln!("  submit to completed (echo, durable): p50 {p50:.2} ms  p99 {p99:.2} ms");
    Ok(json!({"tasks": n, "p50_ms": p50, "p99_ms": p99}))
}

/// [`echo_round_trips`] with two bench worker slots on `store`: (p50, p99) in ms.
pub(crate) async fn echo_latency(
    args: &Args,
    cache: &Path,
    store: Arc<QueueStore>,
    n: usize,
) -> anyhow::Result<(f64, f64)> {
    let pool = echo_workers(store.clone(), serving(args, cache, &["showcase.wasm"])?, 2);
    let latency = echo_round_trips(&store, n).await;
    pool.stop().await;
    latency
}

/// `slots` bench worker slots on `store`, running what `serving` serves.
pub(crate) fn echo_workers(
    store: Arc<QueueStore>,
    (runtime, catalog): (Arc<Runtime>, Arc<LiveCatalog>),
    slots: usize,
) -> WorkerPool {
    WorkerPool::start(
        store,
        Arc::new(CatalogRunner { runtime, catalog }),
        vec![WorkerConfig {
            id: "bench".into(),
            tools: None,
            slots,
            lease: Duration::from_secs(30),
            // Workers are woken by submissions; the poll is only a fallback.
            poll: Duration::from_millis(250),
        }],
    )
}

/// Submit `n` `echo` tasks one after the other, each polled until completed:
/// (p50, p99) in ms.
pub async fn echo_round_trips(store: &Arc<QueueStore>, n: usize) -> anyhow::Result<(f64, f64)> {
    let times = sequential(n, |i| {
        let store = store.clone();
        async move {
            let id = store.submit(echo(i), now_ms())?.0.id;
            loop {
                let task = store.get(&id)?;
                if task.state == TaskState::Completed {
                    return Ok(());
                }
                anyhow::ensure!(
                    !task.state.is_terminal(),
                    "task {id} ended {:?}",
                    task.state
                );
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
    })
    .await?;
    let ms = |p| percentile(&times, p).as_secs_f64() * 1e3;
    Ok((ms(0.5), ms(0.99)))
}

/// The same through the bundled task tools, as an MCP client sees it minus the
/// transport: `task_submit` calls (a fresh sandbox each, the host's queue
/// interface, the fsync), and submit-to-completed polling `task_status`.
async fn through_tools(args: &Args, dir: &Path, cache: &Path) -> anyhow::Result<Value> {
    let (runtime, catalog) = serving(args, cache, &["showcase.wasm", "task_queue.wasm"])?;
    let config = QueueConfig {
        workers: 2,
        poll_ms: 250,
        ..QueueConfig::default()
    };
    let runner = Arc::new(CatalogRunner {
        runtime: runtime.clone(),
        catalog: catalog.clone(),
    });
    let queue = Arc::new(QueueService::open(&dir.join("tools-data"), config, runner)?);
    let _ = runtime.attach_queue(queue.clone());
    let call = |tool: &'static str, args: Value| {
        let (runtime, catalog) = (runtime.clone(), catalog.clone());
        async move {
            let snapshot = catalog.snapshot();
            let entry = snapshot
                .tool(tool)
                .ok_or_else(|| anyhow::anyhow!("{tool} not loaded"))?;
            let outcome = invoke(
                &runtime,
                entry.component,
                entry.signature,
                args.as_object(),
                &CancellationToken::new(),
                None,
            )
            .await;
            anyhow::ensure!(!outcome.is_error, "{tool}: {:?}", outcome.content);
            Ok(outcome.structured.unwrap_or(Value::Null))
        }
    };
    let n = ((300.0 * args.scale) as usize).max(50);
    let started = Instant::now();
    let submit_times = sequential(n, |i| {
        let submitted = call(
            "task_submit",
            json!({"task_id": format!("s{i}"), "task_type": "echo", "payload": {"message": "m"}}),
        );
        async move { submitted.await.map(drop) }
    })
    .await?;
    let submit_per_s = n as f64 / started.elapsed().as_secs_f64();
    let complete_times = sequential(n, |i| async move {
        let id = format!("c{i}");
        call(
            "task_submit",
            json!({"task_id": id, "task_type": "echo", "payload": {"message": "m"}}),
        )
        .await?;
        loop {
            let status = call("task_status", json!({"task_id": id})).await?;
            if status["status"] == "completed" {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
    })
    .await?;
    queue.shutdown(Duration::from_secs(5)).await;
    let ms = |t: &[Duration], p| percentile(t, p).as_secs_f64() * 1e3;
    let result = json!({
        "tasks": n,
        "submit_per_s": submit_per_s,
        "submit_p50_ms": ms(&submit_times, 0.5),
        "submit_p99_ms": ms(&submit_times, 0.99),
        "complete_p50_ms": ms(&complete_times, 0.5),
        "complete_p99_ms": ms(&complete_times, 0.99),
    });
    eprintln!("  through the task tools: {result}");
    Ok(result)
}

/// A runtime serving the bundled `components`.
pub(crate) fn serving(
    args: &Args,
    cache: &Path,
    components: &[&str],
) -> anyhow::Result<(Arc<Runtime>, Arc<LiveCatalog>)> {
    let runtime = Runtime::new(RuntimeOptions {
        cache: Some(cache.to_owned()),
        ..RuntimeOptions::default()
    })?;
    let mut catalog = Catalog::default();
    for file in components {
        catalog.add(runtime.load_file(&args.tools.join(file))?)?;
    }
    Ok((Arc::new(runtime), Arc::new(LiveCatalog::new(catalog))))
}

/// 100,000 queued tasks: how long the common questions take, and reopening.
fn hundred_thousand(dir: &Path) -> anyhow::Result<Value> {
    const N: usize = 100_000;
    let path = dir.join("large.sqlite3");
    let store = QueueStore::open(&path)?;
    let started = Instant::now();
    let mut last_id = String::new();
    for chunk in 0..N / 1_000 {
        let batch = (0..1_000)
            .map(|i| NewTask {
                priority: f64::from(((chunk * 1_000 + i) % 10) as u32 + 1),
                ..echo(chunk * 1_000 + i)
            })
            .collect();
        // Ids are generated (random since issue 16): keep the last one's.
        if let Some((task, _)) = store.submit_batch(batch, now_ms())?.pop() {
            last_id = task.id;
        }
    }
    let batch_per_s = N as f64 / started.elapsed().as_secs_f64();
    let ms = |f: &mut dyn FnMut() -> anyhow::Result<()>| -> anyhow::Result<f64> {
        let started = Instant::now();
        f()?;
        Ok(started.elapsed().as_secs_f64() * 1e3)
    };
    let queued = ListFilter {
        states: vec![TaskState::Queued],
        ..ListFilter::default()
    };
    let first_page = ms(&mut || store.list(&queued, 0, 100).map(|_| ()).map_err(Into::into))?;
    let deep_page = ms(&mut || {
        store
            .list(&queued, 50_000, 100)
            .map(|_| ())
            .map_err(Into::into)
    })?;
    let stats = ms(&mut || store.counts().map(|_| ()).map_err(Into::into))?;
    let position = ms(&mut || store.position(&last_id).map(|_| ()).map_err(Into::into))?;
    let claim = ms(&mut || {
        let now = now_ms();
        let c = store
            .claim("bench", None, now + 30_000, now)?
            .ok_or_else(|| anyhow::anyhow!("nothing to claim"))?;
        store.complete(&c.task.id, c.attempt, &json!("ok"), now_ms())?;
        Ok(())
    })?;
    drop(store);
    let mut reopened = None;
    let reopen = ms(&mut || {
        let store = QueueStore::open(&path)?;
        reopened = Some(store.counts()?);
        Ok(())
    })?;
    let size_mib = std::fs::metadata(&path)?.len() as f64 / (1 << 20) as f64;
    eprintln!(
        "  100k queued: batch submit {batch_per_s:.0}/s; first page {first_page:.1} ms, page at 50k {deep_page:.1} ms, stats {stats:.1} ms, position {position:.1} ms, claim+complete {claim:.1} ms, reopen+stats {reopen:.1} ms, {size_mib:.1} MiB"
    );
    Ok(json!({
        "tasks": N,
        "batch_submit_per_s": batch_per_s,
        "first_page_ms": first_page,
        "page_at_50k_ms": deep_page,
        "stats_ms": stats,
        "position_ms": position,
        "claim_and_complete_ms": claim,
        "reopen_and_stats_ms": reopen,
        "file_mib": size_mib,
    }))
}
