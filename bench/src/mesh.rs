//! The mesh: nodes in this process, talking over real libp2p connections on
//! loopback (TCP, Noise, Yamux). An owner node holds the tasks in its durable
//! queue and runs none; worker nodes pull them and run the real components.
//!
//! - Remote `echo`: submit at the owner → completed, sequentially, against
//!   the same through the owner's own workers (measured in the same run).
//! - Throughput: 600 tasks of a tool that sleeps 200 ms (`recorder`), with 1,
//!   2 and 3 worker nodes of 4 slots each.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::identity::Keypair;
use mcpplus::catalog::{Catalog, LiveCatalog};
use mcpplus::runner::CatalogRunner;
use mcpplus_mesh::driver::{DriverOptions, drive};
use mcpplus_mesh::node::{Mesh, MeshOptions};
use mcpplus_mesh::protocol::{Caps, ToolCap};
use mcpplus_policy::config::OperatorConfig;
use mcpplus_policy::config::mesh::PeerRole;
use mcpplus_queue::remote::RemoteOwner;
use mcpplus_queue::worker::{WorkerConfig, WorkerPool, now_ms};
use mcpplus_queue::{NewTask, QueueStore, TaskState};
use mcpplus_runtime::Runtime;
use mcpplus_runtime::engine::RuntimeOptions;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::Args;
use crate::queue::echo_round_trips;

const LEASE: Duration = Duration::from_secs(30);
const SLOTS: usize = 4;
/// Worker nodes in the many-nodes run (as many as this 2-core machine holds
/// comfortably in one process).
const SCALE_NODES: usize = 16;

pub async fn run(args: &Args, scratch: &Path, cache: &Path) -> anyhow::Result<Value> {
    let dir = scratch.join("mesh");
    std::fs::create_dir_all(&dir)?;
    let journal = dir.join("journal");
    std::fs::create_dir_all(&journal)?;
    let tools = dir.join("tools");
    std::fs::create_dir_all(&tools)?;
    std::fs::copy(
        args.tools.join("showcase.wasm"),
        tools.join("showcase.wasm"),
    )?;
    std::fs::copy(
        args.tools.join("fixtures/recorder.wasm"),
        tools.join("recorder.wasm"),
    )?;
    std::fs::write(
        tools.join("recorder.policy.toml"),
        format!(
            "[[files]]\nhost = \"{}\"\nguest = \"/journal\"\naccess = \"read-write\"\n",
            journal.display()
        ),
    )?;
    // The nodes share this process's runtime: lift the per-tool and server
    // caps (8 and 32 by default) so they do not stand in for separate hosts.
    let mut config = OperatorConfig::default();
    config.limits.max_concurrency = Some(64);
    config.server.max_concurrency = 64;
    let runtime = Arc::new(Runtime::new(RuntimeOptions {
        cache: Some(cache.to_owned()),
        config,
        ..RuntimeOptions::default()
    })?);
    let mut catalog = Catalog::default();
    for file in ["showcase.wasm", "recorder.wasm"] {
        catalog.add(runtime.load_file(&tools.join(file))?)?;
    }
    let catalog = Arc::new(LiveCatalog::new(catalog));
    let runner = Arc::new(CatalogRunner {
        runtime: runtime.clone(),
        catalog: catalog.clone(),
    });

    let n = ((300.0 * args.scale) as usize).max(50);
    let local = local_echo(&dir, runner.clone(), n).await?;
    let remote = remote_echo(&dir, runner.clone(), catalog.clone(), n).await?;
    eprintln!(
        "  echo submit to completed: local p50 {:.2} ms p99 {:.2} ms; remote p50 {:.2} ms p99 {:.2} ms",
        local.0, local.1, remote.0, remote.1
    );
    let calls = ((500.0 * args.scale) as usize).max(50);
    let (direct, federated) = federated_echo(args, &dir, cache, calls).await?;
    eprintln!(
        "  tools/call echo over stdio: on the hosting node p50 {:.2} ms p99 {:.2} ms; federated through another node p50 {:.2} ms p99 {:.2} ms",
        direct.0, direct.1, federated.0, federated.1
    );
    let tasks = ((600.0 * args.scale) as usize).max(60);
    let mut throughput = BTreeMap::new();
    for workers in 1..=3 {
        let per_s =
            sleeping_throughput(&dir, runner.clone(), catalog.clone(), workers, tasks).await?;
        eprintln!(
            "  {tasks} tasks of 200 ms, {workers} worker node(s) x {SLOTS} slots: {per_s:.2} tasks/s"
        );
        throughput.insert(workers.to_string(), per_s);
    }
    let scale = many_nodes(&dir, runner.clone(), catalog.clone(), SCALE_NODES, tasks).await?;
    eprintln!(
        "  {SCALE_NODES} worker nodes: owner answers {:.1} requests/s idle; {tasks} tasks of 200 ms at {:.2} tasks/s",
        scale["idle_requests_per_s"].as_f64().unwrap_or(f64::NAN),
        scale["tasks_per_s"].as_f64().unwrap_or(f64::NAN)
    );
    Ok(json!({
        "scale": scale,
        "echo_tasks": n,
        "local_echo": {"p50_ms": local.0, "p99_ms": local.1},
        "remote_echo": {"p50_ms": remote.0, "p99_ms": remote.1},
        "federated_calls": calls,
        "call_on_host": {"p50_ms": direct.0, "p99_ms": direct.1},
        "call_federated": {"p50_ms": federated.0, "p99_ms": federated.1},
        "sleep_tasks": tasks,
        "slots_per_node": SLOTS,
        "tasks_per_s_by_worker_nodes": throughput,
    }))
}

/// The baseline: the owner's own worker slots.
async fn local_echo(
    dir: &Path,
    runner: Arc<CatalogRunner>,
    n: usize,
) -> anyhow::Result<(f64, f64)> {
    let store = Arc::new(QueueStore::open(&dir.join("local.sqlite3"))?);
    let pool = WorkerPool::start(
        store.clone(),
        runner,
        vec![WorkerConfig {
            id: "local".into(),
            tools: None,
            slots: 2,
            lease: LEASE,
            poll: Duration::from_millis(250),
        }],
    );
    let result = echo_round_trips(&store, n).await;
    pool.stop().await;
    result
}

/// An owner with no slots and worker nodes pulling from it.
struct Mesh3 {
    owner_store: Arc<QueueStore>,
    owner: Mesh,
    _workers: Vec<Mesh>,
    stop: CancellationToken,
}

impl Drop for Mesh3 {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn mesh(
    dir: &Path,
    name: &str,
    runner: Arc<CatalogRunner>,
    catalog: Arc<LiveCatalog>,
    workers: usize,
) -> anyhow::Result<Mesh3> {
    let owner_key = Keypair::generate_ed25519();
    let owner_id = owner_key.public().to_peer_id();
    let worker_keys: Vec<Keypair> = (0..workers).map(|_| Keypair::generate_ed25519()).collect();
    let owner_store = Arc::new(QueueStore::open(
        &dir.join(format!("{name}-owner.sqlite3")),
    )?);
    let owner = Mesh::start(MeshOptions {
        keypair: owner_key,
        listen: vec!["/ip4/127.0.0.1/tcp/0".parse()?],
        bootstrap: Vec::new(),
        mdns: false,
        peers: worker_keys
            .iter()
            .map(|k| (k.public().to_peer_id(), vec![PeerRole::Claim]))
            .collect(),
        owner: Arc::new(RemoteOwner::new(owner_store.clone(), LEASE)),
        caps: Caps::default(),
        psk: None,
    })
    .await?;
    let address = owner.listening[0].clone();
    let stop = CancellationToken::new();
    let mut nodes = Vec::new();
    for (i, key) in worker_keys.into_iter().enumerate() {
        let store = Arc::new(QueueStore::open(
            &dir.join(format!("{name}-worker{i}.sqlite3")),
        )?);
        let node = Mesh::start(MeshOptions {
            keypair: key,
            listen: Vec::new(),
            bootstrap: vec![address.clone()],
            mdns: false,
            peers: [(owner_id, Vec::new())].into_iter().collect(),
            // Nobody may claim from a worker; it only pulls.
            owner: Arc::new(RemoteOwner::new(store.clone(), LEASE)),
            caps: hosted(&catalog),
            psk: None,
        })
        .await?;
        let catalog = catalog.clone();
        let options = DriverOptions {
            slots: SLOTS,
            lease: LEASE,
            poll: Duration::from_millis(1_000),
            runner: runner.clone(),
            store,
            tools: Arc::new(move || catalog.snapshot().tool_names()),
        };
        tokio::spawn(drive(owner_id, node.handle.clone(), options, stop.clone()));
        nodes.push(node);
    }
    wait_connected(&owner, workers).await?;
    Ok(Mesh3 {
        owner_store,
        owner,
        _workers: nodes,
        stop,
    })
}

/// What a worker node announces: the tools of its catalog.
fn hosted(catalog: &LiveCatalog) -> Caps {
    let tools = catalog
        .snapshot()
        .tools()
        .map(|e| ToolCap {
            name: e.signature.name.clone(),
            component: e.component.name.clone(),
            sha256: e.component.digest.clone(),
            description: None,
            input_schema: e.signature.input_schema.clone(),
            output_schema: None,
            annotations: None,
        })
        .collect();
    Caps {
        tools,
        slots: SLOTS as u32,
        ..Caps::default()
    }
}

async fn wait_connected(owner: &Mesh, workers: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let connected = owner
            .handle
            .peers()
            .await
            .iter()
            .filter(|p| p.connected)
            .count();
        if connected == workers {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {connected} of {workers} workers connected"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn remote_echo(
    dir: &Path,
    runner: Arc<CatalogRunner>,
    catalog: Arc<LiveCatalog>,
    n: usize,
) -> anyhow::Result<(f64, f64)> {
    let mesh = mesh(dir, "echo", runner, catalog, 1).await?;
    echo_round_trips(&mesh.owner_store, n).await
}

async fn sleeping_throughput(
    dir: &Path,
    runner: Arc<CatalogRunner>,
    catalog: Arc<LiveCatalog>,
    workers: usize,
    tasks: usize,
) -> anyhow::Result<f64> {
    let mesh = mesh(dir, &format!("sleep{workers}"), runner, catalog, workers).await?;
    run_sleeping_tasks(&mesh, &format!("w{workers}"), tasks).await
}

/// Submit `tasks` 200 ms `recorder` tasks at the owner; tasks/s until all completed.
async fn run_sleeping_tasks(mesh: &Mesh3, prefix: &str, tasks: usize) -> anyhow::Result<f64> {
    let batch: Vec<NewTask> = (0..tasks)
        .map(|i| {
            NewTask::new(
                "note_execution",
                json!({"key": format!("{prefix}-{i}"), "work_ms": 200}),
            )
        })
        .collect();
    let started = Instant::now();
    mesh.owner_store.submit_batch(batch, now_ms())?;
    loop {
        let counts = mesh.owner_store.counts()?;
        let done: u64 = counts
            .iter()
            .filter(|(s, _)| s.is_terminal())
            .map(|(_, n)| n)
            .sum();
        if done as usize == tasks {
            let completed = counts
                .iter()
                .find(|(s, _)| *s == TaskState::Completed)
                .map_or(0, |(_, n)| *n);
            anyhow::ensure!(completed as usize == tasks, "not all completed: {counts:?}");
            break;
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(600),
            "too slow: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(tasks as f64 / started.elapsed().as_secs_f64())
}

/// Requests the owner has answered so far (its `mcpplus_mesh_requests_total`).
fn owner_requests() -> f64 {
    mcpplus_telemetry::metrics::metrics()
        .render()
        .lines()
        .filter(|l| l.starts_with("mcpplus_mesh_requests_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One owner and `nodes` workers: the owner's connections and idle request
/// rate (claims that find nothing, held up to lease/10), then throughput.
async fn many_nodes(
    dir: &Path,
    runner: Arc<CatalogRunner>,
    catalog: Arc<LiveCatalog>,
    nodes: usize,
    tasks: usize,
) -> anyhow::Result<Value> {
    let mesh = mesh(dir, "many", runner, catalog, nodes).await?;
    let connected = mesh
        .owner
        .handle
        .peers()
        .await
        .iter()
        .filter(|p| p.connected)
        .count();
    let idle_for = Duration::from_secs(5);
    let before = owner_requests();
    tokio::time::sleep(idle_for).await;
    let idle_per_s = (owner_requests() - before) / idle_for.as_secs_f64();
    let per_s = run_sleeping_tasks(&mesh, "many", tasks).await?;
    Ok(json!({
        "worker_nodes": nodes,
        "owner_connections": connected,
        "idle_requests_per_s": idle_per_s,
        "tasks": tasks,
        "tasks_per_s": per_s,
        "ideal_tasks_per_s": (nodes * SLOTS) as f64 / 0.2,
    }))
}

/// `tools/call echo` on the node that hosts `echo` (the baseline) against the
/// same call on another node that federates it: two real `mcpplus serve`
/// processes over stdio, meshed on loopback.
async fn federated_echo(
    args: &Args,
    dir: &Path,
    cache: &Path,
    calls: usize,
) -> anyhow::Result<((f64, f64), (f64, f64))> {
    let node = |name: &str| -> anyhow::Result<(std::path::PathBuf, String)> {
        let root = dir.join(format!("fed-{name}"));
        std::fs::create_dir_all(root.join("tools"))?;
        let out = std::process::Command::new(&args.mcpplus)
            .args(["peers", "id", "--data-dir"])
            .arg(root.join("data"))
            .output()?;
        anyhow::ensure!(out.status.success(), "mcpplus peers id failed");
        Ok((root, String::from_utf8(out.stdout)?.trim().to_string()))
    };
    let (a, a_id) = node("caller")?;
    let (c, c_id) = node("host")?;
    std::fs::copy(
        args.tools.join("showcase.wasm"),
        c.join("tools/showcase.wasm"),
    )?;
    // A free loopback port for the caller's mesh listener.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    std::fs::write(
        a.join("mcpplus.toml"),
        format!(
            "[queue]\nworkers = 0\n[mesh]\nmdns = false\nfederate = true\nlisten = [\"/ip4/127.0.0.1/tcp/{port}\"]\n[mesh.peers.\"{c_id}\"]\nroles = [\"claim\"]\n"
        ),
    )?;
    std::fs::write(
        c.join("mcpplus.toml"),
        format!(
            "[queue]\nworkers = 0\n[mesh]\nmdns = false\nslots = 4\nbootstrap = [\"/ip4/127.0.0.1/tcp/{port}/p2p/{a_id}\"]\n[mesh.peers.\"{a_id}\"]\nroles = []\n"
        ),
    )?;
    let spawn = |root: &Path| -> anyhow::Result<crate::client::StdioServer> {
        let (tools, data, config) = (
            root.join("tools"),
            root.join("data"),
            root.join("mcpplus.toml"),
        );
        crate::client::StdioServer::spawn(
            &args.mcpplus,
            &[
                "serve",
                "--tools",
                tools.to_str().unwrap_or_default(),
                "--data-dir",
                data.to_str().unwrap_or_default(),
                "--config",
                config.to_str().unwrap_or_default(),
                "--cache-dir",
                cache.to_str().unwrap_or_default(),
                "--no-admin",
                "--no-watch",
                "--log",
                "warn",
            ],
        )
    };
    let mut caller = spawn(&a)?;
    caller.initialize().await?;
    let mut host = spawn(&c)?;
    host.initialize().await?;
    // Wait until the caller lists the host's `echo`.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut id = 1;
    loop {
        id += 1;
        let list = caller.request(id, "tools/list", json!({})).await?;
        let listed = list["result"]["tools"]
            .as_array()
            .is_some_and(|tools| tools.iter().any(|t| t["name"] == "echo"));
        if listed {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the caller never listed the host's echo"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut direct = Vec::with_capacity(calls);
    let mut federated = Vec::with_capacity(calls);
    // Alternate, after a warm-up, so both see the same machine.
    for i in 0..calls + calls / 10 {
        id += 2;
        let d = time_echo(&mut host, id).await?;
        let f = time_echo(&mut caller, id + 1).await?;
        if i >= calls / 10 {
            direct.push(d);
            federated.push(f);
        }
    }
    let stats = |mut v: Vec<Duration>| {
        v.sort();
        (
            crate::client::percentile(&v, 0.5).as_secs_f64() * 1e3,
            crate::client::percentile(&v, 0.99).as_secs_f64() * 1e3,
        )
    };
    Ok((stats(direct), stats(federated)))
}

/// One `tools/call echo`, timed.
async fn time_echo(server: &mut crate::client::StdioServer, id: u64) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let answer = server
        .request(
            id,
            "tools/call",
            json!({"name": "echo", "arguments": {"message": "hi"}}),
        )
        .await?;
    anyhow::ensure!(
        answer["result"]["isError"] != true && answer.get("error").is_none(),
        "echo failed: {answer}"
    );
    Ok(started.elapsed())
}
