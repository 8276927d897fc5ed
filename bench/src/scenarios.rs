//! The measurements. Each returns plain numbers (µs, ms, KiB) in a JSON object;
//! baselines are measured in the same run as what they are compared with.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_util::sync::CancellationToken;
use wasmtime::component::Val;

use crate::Args;
use crate::client::{StdioServer, http_echo_load, process_cpu_ns, rss_kib};
use mcpplus_policy::config::CallLimits;
use mcpplus_runtime::Runtime;
use mcpplus_runtime::call::{Instantiation, call_tool_with};
use mcpplus_runtime::engine::RuntimeOptions;

const CONCURRENCY: [usize; 3] = [1, 16, 64];

pub async fn run_all(args: &Args) -> anyhow::Result<Value> {
    let scratch = std::env::temp_dir().join(format!("mcpplus-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let warm_cache = scratch.join("warm-cache");
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let mut startup = Value::Null;
    if wanted("startup") {
        eprintln!("== start-up (cold and warm)");
        startup = self::startup(args, &scratch, &warm_cache).await?;
    } else {
        // The other scenarios need a warm cache.
        time_to_first_list(args, &args.tools, &warm_cache, &scratch.join("warm.log")).await?;
    }
    let mut latency = Value::Null;
    if wanted("latency") {
        eprintln!("== latency and throughput");
        latency = self::latency(args, &warm_cache).await?;
    }
    let mut in_host = Value::Null;
    if wanted("in_host") {
        eprintln!("== instantiate-and-call inside the host");
        in_host = self::in_host(args, &warm_cache).await?;
    }
    let mut memory = Value::Null;
    if wanted("memory") {
        eprintln!("== resident memory");
        memory = self::memory(args, &scratch, &warm_cache).await?;
    }
    let mut logging = Value::Null;
    if wanted("logging") {
        eprintln!("== logging and metrics");
        logging = crate::logging::run(args, &scratch, &warm_cache).await?;
    }
    let mut outbound = Value::Null;
    if wanted("outbound") {
        eprintln!("== outbound calls and the circuit breaker");
        outbound = crate::outbound::run(args, &scratch, &warm_cache).await?;
    }
    let mut queue = Value::Null;
    if wanted("queue") {
        eprintln!("== the durable task queue");
        queue = crate::queue::run(args, &scratch, &warm_cache).await?;
    }
    let mut queue_postgres = Value::Null;
    if wanted("queue_postgres") {
        match &args.postgres_url {
            Some(url) => {
                eprintln!("== the queue on PostgreSQL, beside SQLite");
                queue_postgres =
                    crate::queue_postgres::run(args, &scratch, &warm_cache, url).await?;
            }
            None if args.only.is_empty() => {
                eprintln!(
                    "== the queue on PostgreSQL: skipped (no --postgres-url; scripts/bench.sh passes one)"
                )
            }
            None => anyhow::bail!(
                "queue_postgres needs --postgres-url (scripts/bench.sh starts a database)"
            ),
        }
    }
    let mut mesh = Value::Null;
    if wanted("mesh") {
        eprintln!("== the mesh (nodes on loopback)");
        mesh = crate::mesh::run(args, &scratch, &warm_cache).await?;
    }
    let mut reload = Value::Null;
    if wanted("reload") {
        eprintln!("== hot loading");
        reload = crate::reload::run(args, &scratch).await?;
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(json!({
        "machine": machine(),
        "command": "scripts/bench.sh",
        "startup": startup,
        "latency": latency,
        "in_host": in_host,
        "memory": memory,
        "reload": reload,
        "logging": logging,
        "outbound": outbound,
        "queue": queue,
        "mesh": mesh,
        "queue_postgres": queue_postgres,
    }))
}

pub(crate) fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let rustc = std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let date = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    json!({"cpu": cpu, "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), "kernel": kernel, "rustc": rustc, "date": date})
}

/// `serve` with `tools`, a shared compile cache, and an empty data dir of its
/// own beside the cache (each server gets a new one): the figures must not
/// depend on what this machine's default data dir holds (a queue file,
/// workflow templates). The bench is a short-lived process, so the leaked
/// path strings are bounded by the number of servers it starts.
fn serve_args<'a>(tools: &'a str, cache: &'a str) -> Vec<&'a str> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let data_dir = Path::new(cache)
        .with_file_name(format!("data-{}-{n}", std::process::id()))
        .to_string_lossy()
        .into_owned();
    vec![
        "serve",
        "--tools",
        tools,
        "--cache-dir",
        cache,
        "--data-dir",
        Box::leak(data_dir.into_boxed_str()),
        "--log",
        "warn",
    ]
}

async fn latency(args: &Args, cache: &Path) -> anyhow::Result<Value> {
    let tools = args.tools.to_str().context("utf-8 path")?;
    let cache = cache.to_str().context("utf-8 path")?;
    let mut rows = Vec::new();
    for c in CONCURRENCY {
        let total = ((if c == 1 { 3000.0 } else { 8000.0 }) * args.scale) as usize / c * c;
        for (name, program, server_args) in [
            ("native", &args.native, vec![]),
            ("mcpplus", &args.mcpplus, serve_args(tools, cache)),
        ] {
            // stdio
            let mut server = StdioServer::spawn(program, &server_args)?;
            server.initialize().await?;
            server.warm_up(200).await?;
            let pid = server.pid();
            let cpu_before = process_cpu_ns(pid);
            let (load, server) = server.echo_load(total, c).await?;
            let cpu_per_call_us = process_cpu_ns(pid).saturating_sub(cpu_before) as f64
                / 1e3
                / load.latencies.len() as f64;
            // Killed here, before the HTTP run.
            drop(server);
            let mut stdio_row = row(name, "stdio", c, &load);
            eprintln!("           server CPU per call {cpu_per_call_us:6.1} µs");
            stdio_row["server_cpu_per_call_us"] = json!(cpu_per_call_us);
            rows.push(stdio_row);
            // HTTP
            let mut http_args: Vec<&str> = server_args.clone();
            // Loopback: the token check is not what this measures.
            http_args.extend(["--http", "127.0.0.1:0", "--no-auth"]);
            let (mut child, url) = spawn_http(program, &http_args).await?;
            http_echo_load(&url, 200, 1).await?;
            let pid = child.id().unwrap_or(0);
            let cpu_before = process_cpu_ns(pid);
            let load = http_echo_load(&url, total, c).await?;
            let cpu_per_call_us = process_cpu_ns(pid).saturating_sub(cpu_before) as f64
                / 1e3
                / load.latencies.len() as f64;
            let mut http_row = row(name, "http", c, &load);
            eprintln!("           server CPU per call {cpu_per_call_us:6.1} µs");
            http_row["server_cpu_per_call_us"] = json!(cpu_per_call_us);
            rows.push(http_row);
            let _ = child.kill().await;
        }
    }
    Ok(Value::Array(rows))
}

fn row(server: &str, transport: &str, concurrency: usize, load: &crate::client::Load) -> Value {
    eprintln!(
        "  {server:8} {transport:5} c={concurrency:<3} p50 {:8.1} µs  p99 {:8.1} µs  {:8.0} calls/s",
        load.percentile_us(0.5),
        load.percentile_us(0.99),
        load.throughput()
    );
    json!({"server": server, "transport": transport, "concurrency": concurrency, "calls": load.latencies.len(),
           "p50_us": load.percentile_us(0.5), "p99_us": load.percentile_us(0.99), "calls_per_s": load.throughput()})
}

pub(crate) async fn spawn_http(
    program: &Path,
    args: &[&str],
) -> anyhow::Result<(tokio::process::Child, String)> {
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
    let url = tokio::time::timeout(Duration::from_secs(120), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(url) = line.split("listening on ").nth(1) {
                return anyhow::Ok(url.trim().to_string());
            }
        }
        anyhow::bail!("server exited before listening")
    })
    .await??;
    // Keep draining stderr so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, url))
}

async fn in_host(args: &Args, cache: &Path) -> anyhow::Result<Value> {
    let mut rows = Vec::new();
    let cases: [(&str, &str, Vec<Val>, usize); 2] = [
        (
            "showcase.wasm",
            "echo",
            vec![Val::String("hello".into())],
            (20000.0 * args.scale) as usize,
        ),
        (
            "py_stats.wasm",
            "percentile",
            vec![
                Val::List(vec![Val::Float64(1.0), Val::Float64(2.0)]),
                Val::Float64(50.0),
            ],
            (300.0 * args.scale) as usize,
        ),
    ];
    for pooling in [true, false] {
        let runtime = Runtime::new(RuntimeOptions {
            cache: Some(cache.to_owned()),
            base_limits: CallLimits::default(),
            no_pooling: !pooling,
            ..RuntimeOptions::default()
        })?;
        for (file, tool, call_args, iterations) in &cases {
            let component = runtime.load_file(&args.tools.join(file))?;
            let limits = runtime.limits_for(&component, tool);
            for how in [Instantiation::Pre, Instantiation::Relink] {
                let cancel = CancellationToken::new();
                for _ in 0..(iterations / 10).max(5) {
                    call_tool_with(
                        &runtime, &component, tool, &limits, call_args, &cancel, how, None,
                    )
                    .await?;
                }
                let mut times = Vec::with_capacity(*iterations);
                for _ in 0..*iterations {
                    let t = Instant::now();
                    call_tool_with(
                        &runtime, &component, tool, &limits, call_args, &cancel, how, None,
                    )
                    .await?;
                    times.push(t.elapsed());
                }
                times.sort();
                let p50 = times[times.len() / 2].as_secs_f64() * 1e6;
                let mean = times.iter().sum::<Duration>().as_secs_f64() * 1e6 / times.len() as f64;
                let allocator = format!("{:?}", runtime.allocator());
                eprintln!(
                    "  {file:14} {allocator:9} {how:?}: p50 {p50:9.1} µs  mean {mean:9.1} µs"
                );
                rows.push(json!({"component": file, "tool": tool, "allocator": allocator, "instantiation": format!("{how:?}"),
                                 "iterations": iterations, "p50_us": p50, "mean_us": mean}));
            }
        }
    }
    Ok(Value::Array(rows))
}

/// Time from spawning `mcpplus serve` to the answer of its first `tools/list`.
async fn time_to_first_list(
    args: &Args,
    tools: &Path,
    cache: &Path,
    log: &Path,
) -> anyhow::Result<(f64, usize)> {
    let log_file = std::fs::File::create(log)?;
    let started = Instant::now();
    let mut child = tokio::process::Command::new(&args.mcpplus)
        .args(["serve", "--log-format", "json", "--tools"])
        .arg(tools)
        .arg("--cache-dir")
        .arg(cache)
        .arg("--data-dir")
        .arg(log.with_extension("data"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut lines = BufReader::new(child.stdout.take().expect("piped")).lines();
    use tokio::io::AsyncWriteExt as _;
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}});
    let list = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}});
    stdin
        .write_all(
            format!(
                "{init}\n{}\n{list}\n",
                json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
            )
            .as_bytes(),
        )
        .await?;
    let mut tools_listed = 0;
    while let Some(line) = lines.next_line().await? {
        let message: Value = serde_json::from_str(&line)?;
        if message["id"] == 2 {
            tools_listed = message["result"]["tools"].as_array().map_or(0, Vec::len);
            break;
        }
    }
    let elapsed = started.elapsed().as_secs_f64() * 1e3;
    drop(stdin);
    let _ = child.wait().await;
    Ok((elapsed, tools_listed))
}

async fn startup(args: &Args, scratch: &Path, warm_cache: &Path) -> anyhow::Result<Value> {
    let python_only = scratch.join("python-only");
    std::fs::create_dir_all(&python_only)?;
    std::fs::copy(
        args.tools.join("py_stats.wasm"),
        python_only.join("py_stats.wasm"),
    )?;
    let mut rows = Vec::new();
    for (label, dir) in [
        ("bundled tools", args.tools.clone()),
        ("python component", python_only),
    ] {
        let cold_cache = scratch.join(format!("cold-{}", rows.len()));
        let log = scratch.join("startup.log");
        let (cold_ms, tools) = time_to_first_list(args, &dir, &cold_cache, &log).await?;
        let compile_ms = compile_times(&log)?;
        let mut warm = Vec::new();
        for _ in 0..7 {
            warm.push(time_to_first_list(args, &dir, &cold_cache, &log).await?.0);
        }
        warm.sort_by(f64::total_cmp);
        let warm_ms = warm[warm.len() / 2];
        eprintln!(
            "  {label:17} cold {cold_ms:8.1} ms  warm {warm_ms:6.1} ms  ({tools} tools)  compile {compile_ms}"
        );
        rows.push(json!({"set": label, "tools": tools, "cold_ms": cold_ms, "warm_ms_median_of_7": warm_ms, "warm_ms_all": warm, "compile_ms": compile_ms}));
    }
    // Warm the cache the later scenarios use.
    time_to_first_list(args, &args.tools, warm_cache, &scratch.join("warm.log")).await?;
    Ok(Value::Array(rows))
}

fn compile_times(log: &Path) -> anyhow::Result<Value> {
    let mut times = serde_json::Map::new();
    for line in std::fs::read_to_string(log)?.lines() {
        if let Ok(event) = serde_json::from_str::<Value>(line)
            && event["event"] == "component.compiled"
        {
            times.insert(
                event["component"].as_str().unwrap_or("?").to_string(),
                event["elapsed_ms"].clone(),
            );
        }
    }
    Ok(Value::Object(times))
}

async fn idle_rss(program: &Path, args: &[&str]) -> anyhow::Result<u64> {
    let mut server = StdioServer::spawn(program, args)?;
    server.initialize().await?;
    server.request(9, "tools/list", json!({})).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    rss_kib(server.pid())
}

async fn memory(args: &Args, scratch: &Path, cache: &Path) -> anyhow::Result<Value> {
    let cache_s = cache.to_str().context("utf-8")?;
    let empty = scratch.join("empty");
    std::fs::create_dir_all(&empty)?;
    let native_kib = idle_rss(&args.native, &[]).await?;
    let empty_kib = idle_rss(&args.mcpplus, &serve_args(empty.to_str().unwrap(), cache_s)).await?;
    let bundled_kib = idle_rss(
        &args.mcpplus,
        &serve_args(args.tools.to_str().unwrap(), cache_s),
    )
    .await?;
    let mut per_component = serde_json::Map::new();
    for file in ["showcase.wasm", "text_utils.wasm", "py_stats.wasm"] {
        let dir: PathBuf = scratch.join(format!("only-{file}"));
        std::fs::create_dir_all(&dir)?;
        std::fs::copy(args.tools.join(file), dir.join(file))?;
        let kib = idle_rss(&args.mcpplus, &serve_args(dir.to_str().unwrap(), cache_s)).await?;
        per_component.insert(file.to_string(), json!(kib as i64 - empty_kib as i64));
    }
    // Per concurrent instance: 16 guests sleeping at once (the per-tool cap,
    // 8 by default, is raised so that all 16 really run).
    let fixtures = args.tools.join("fixtures");
    let config = scratch.join("sixteen.toml");
    std::fs::write(&config, "[limits]\nmax_concurrency = 16\n")?;
    let mut sixteen = serve_args(fixtures.to_str().unwrap(), cache_s);
    sixteen.extend(["--config", config.to_str().unwrap()]);
    let mut server = StdioServer::spawn(&args.mcpplus, &sixteen)?;
    server.initialize().await?;
    server
        .request(
            9,
            "tools/call",
            json!({"name": "echo", "arguments": {"text": "warm"}}),
        )
        .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(server.pid())?;
    for id in 100..116 {
        server.send(&json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "sleep_ms", "arguments": {"ms": 1500}}})).await?;
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let during = rss_kib(server.pid())?;
    let per_instance = (during as f64 - before as f64) / 16.0;
    eprintln!(
        "  idle: native {native_kib} KiB, mcpplus empty {empty_kib} KiB, bundled {bundled_kib} KiB; per instance {per_instance:.0} KiB"
    );
    Ok(json!({
        "native_echo_idle_kib": native_kib,
        "mcpplus_no_tools_idle_kib": empty_kib,
        "mcpplus_bundled_idle_kib": bundled_kib,
        "per_component_kib": per_component,
        "per_concurrent_instance_kib": per_instance,
    }))
}
