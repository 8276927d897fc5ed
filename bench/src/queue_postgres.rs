//! The queue on PostgreSQL (`[queue] backend = "postgres"`) beside SQLite, in
//! the same run: submits per second with 1, 4 and 16 submitters, submit to
//! completed for a trivial tool, and throughput with 1, 2 and 3 `mcpplus
//! serve` nodes sharing one database; the workflow benchmark
//! (`crate::workflow`) on it. `scripts/bench.sh` starts a throw-away
//! PostgreSQL on loopback (fsync on) and passes `--postgres-url`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcpplus_queue::postgres_store::{Clock, PostgresOptions, PostgresStore};
use mcpplus_queue::{QueueStore, TaskState};
use serde_json::{Value, json};

use crate::Args;
use crate::queue::{echo, echo_latency, serving, submit_rate};

/// A schema of this run, dropped when the run ends.
struct Schema {
    url: String,
    name: String,
}

impl Schema {
    fn new(url: &str, label: &str) -> Self {
        Self {
            url: url.to_string(),
            name: format!("bench_{label}_{}", std::process::id()),
        }
    }

    fn store(&self) -> anyhow::Result<QueueStore> {
        Ok(QueueStore::with_backend(Box::new(PostgresStore::open(
            PostgresOptions {
                url: self.url.clone(),
                schema: self.name.clone(),
                ca_file: None,
                pool_size: 16,
                clock: Clock::Database,
            },
        )?)))
    }

    async fn drop_now(self) -> anyhow::Result<()> {
        let (client, connection) =
            tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
            .await?;
        Ok(())
    }
}

pub async fn run(args: &Args, scratch: &Path, cache: &Path, url: &str) -> anyhow::Result<Value> {
    let dir = scratch.join("queue-postgres");
    std::fs::create_dir_all(&dir)?;
    let n = ((2_000.0 * args.scale) as usize).max(400);

    let mut submits = Vec::new();
    for submitters in [1, 4, 16] {
        let sqlite = QueueStore::open(&dir.join(format!("submit-{submitters}.sqlite3")))?;
        let sqlite_rate = tokio::task::block_in_place(|| submit_rate(&sqlite, n, submitters))?;
        let schema = Schema::new(url, &format!("submit{submitters}"));
        let pg = schema.store()?;
        let pg_rate = tokio::task::block_in_place(|| submit_rate(&pg, n, submitters))?;
        drop(pg);
        schema.drop_now().await?;
        eprintln!(
            "  submit, {submitters} submitters: sqlite {sqlite_rate:.0}/s, postgres {pg_rate:.0}/s (both fsync'd before the answer)"
        );
        submits.push(json!({"submitters": submitters, "sqlite": sqlite_rate, "postgres": pg_rate}));
    }

    let round_trips = ((300.0 * args.scale) as usize).max(50);
    let sqlite = Arc::new(QueueStore::open(&dir.join("latency.sqlite3"))?);
    let sqlite_latency = echo_latency(args, cache, sqlite, round_trips).await?;
    let schema = Schema::new(url, "latency");
    let pg = Arc::new(schema.store()?);
    let pg_latency = echo_latency(args, cache, pg.clone(), round_trips).await?;
    drop(pg);
    schema.drop_now().await?;
    eprintln!(
        "  submit to completed (echo): sqlite p50 {:.2} ms p99 {:.2} ms, postgres p50 {:.2} ms p99 {:.2} ms",
        sqlite_latency.0, sqlite_latency.1, pg_latency.0, pg_latency.1
    );

    let tasks = ((1_500.0 * args.scale) as usize).max(300);
    let mut nodes = Vec::new();
    for count in [1, 2, 3] {
        let rate = nodes_throughput(args, &dir, url, count, tasks).await?;
        eprintln!(
            "  {tasks} echo tasks, {count} node(s) x 4 slots on one database: {rate:.0} tasks/s"
        );
        nodes.push(json!({"nodes": count, "tasks_per_s": rate}));
    }
    let schema = Schema::new(url, "workflow");
    let store = Arc::new(schema.store()?);
    let workflow = crate::workflow::run(
        args,
        store.clone(),
        serving(args, cache, &["showcase.wasm"])?,
    )
    .await?;
    drop(store);
    schema.drop_now().await?;
    Ok(json!({
        "workflow": workflow,
        "submits": n,
        "submit_per_s": submits,
        "submit_to_complete": {
            "tasks": round_trips,
            "sqlite": {"p50_ms": sqlite_latency.0, "p99_ms": sqlite_latency.1},
            "postgres": {"p50_ms": pg_latency.0, "p99_ms": pg_latency.1},
        },
        "nodes": {"tasks": tasks, "slots_per_node": 4, "rates": nodes},
    }))
}

/// `count` `mcpplus serve` nodes on one fresh schema; `tasks` echo tasks
/// submitted at once: completed per second.
async fn nodes_throughput(
    args: &Args,
    dir: &Path,
    url: &str,
    count: usize,
    tasks: usize,
) -> anyhow::Result<f64> {
    let schema = Schema::new(url, &format!("nodes{count}"));
    let store = schema.store()?;
    let tools = dir.join("node-tools");
    std::fs::create_dir_all(&tools)?;
    std::fs::copy(
        args.tools.join("showcase.wasm"),
        tools.join("showcase.wasm"),
    )?;
    let config = dir.join(format!("node-{count}.toml"));
    std::fs::write(
        &config,
        format!(
            "[queue]\nbackend = \"postgres\"\nurl = \"{url}\"\nschema = \"{}\"\nworkers = 4\n",
            schema.name
        ),
    )?;
    let mut children = Vec::new();
    for i in 0..count {
        let data = dir.join(format!("node-{count}-{i}"));
        let args_owned = [
            "serve".to_string(),
            "--tools".into(),
            tools.display().to_string(),
            "--data-dir".into(),
            data.display().to_string(),
            "--config".into(),
            config.display().to_string(),
            "--no-admin".into(),
            "--no-watch".into(),
            "--log".into(),
            "warn".into(),
            "--http".into(),
            "127.0.0.1:0".into(),
            "--no-auth".into(),
        ];
        let argv: Vec<&str> = args_owned.iter().map(String::as_str).collect();
        let (child, _url) = crate::scenarios::spawn_http(&args.mcpplus, &argv).await?;
        children.push(child);
    }
    let batch: Vec<_> = (0..tasks).map(echo).collect();
    let started = Instant::now();
    tokio::task::block_in_place(|| store.submit_batch(batch, 0))?;
    let deadline = started + Duration::from_secs(300);
    loop {
        let counts = tokio::task::block_in_place(|| store.counts())?;
        let done: u64 = counts
            .iter()
            .filter(|(s, _)| *s == TaskState::Completed)
            .map(|(_, n)| n)
            .sum();
        if done as usize >= tasks {
            break;
        }
        anyhow::ensure!(
            counts
                .iter()
                .all(|(s, n)| *n == 0 || !matches!(s, TaskState::Failed | TaskState::Cancelled)),
            "tasks failed: {counts:?}"
        );
        anyhow::ensure!(Instant::now() < deadline, "not finished: {counts:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = tasks as f64 / started.elapsed().as_secs_f64();
    for mut child in children {
        let _ = child.kill().await;
    }
    drop(store);
    schema.drop_now().await?;
    Ok(rate)
}
