//! Outbound calls: the circuit breaker's cost per request (alone and with both
//! cores contending, against a bare mutex in the same run), and a GET to a
//! loopback server through the host (its connection pool on, and off) against
//! the same request made natively with keep-alive and without.

use std::path::Path;
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

use mcpplus_breaker::{Breaker, BreakerConfig};
use mcpplus_policy::Destination;
use mcpplus_runtime::Runtime;
use mcpplus_runtime::capabilities::CallContext;
use mcpplus_runtime::engine::RuntimeOptions;
use mcpplus_runtime::invoke::invoke;
use mcpplus_runtime::outbound::pool::PoolLimits;
use mcpplus_runtime::outbound::{Outbound, Scope};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::Args;
use crate::client::{percentile, sequential};

pub async fn run(args: &Args, scratch: &Path, cache: &Path) -> anyhow::Result<Value> {
    let breaker = breaker_overhead(args);
    let end_to_end = end_to_end(args, scratch, cache).await?;
    Ok(json!({"breaker": breaker, "end_to_end": end_to_end}))
}

/// ns per operation for `threads` threads each doing `per_thread` operations:
/// (wall time per operation overall, time each operation took its thread).
fn timed(threads: usize, per_thread: usize, op: impl Fn() + Sync) -> (f64, f64) {
    let barrier = Barrier::new(threads);
    let wall = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let started = Instant::now();
                    for _ in 0..per_thread {
                        op();
                    }
                    started.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .max()
            .unwrap()
    });
    let ns = wall.as_nanos() as f64;
    let total = (threads * per_thread) as f64;
    (ns / total, ns / per_thread as f64)
}

fn breaker_overhead(args: &Args) -> Value {
    let n = ((2_000_000.0 * args.scale) as usize).max(100_000);
    let config = BreakerConfig {
        // Never opens during the run: every acquire is admitted.
        consecutive_failures: u32::MAX,
        failure_rate: 0.0,
        ..BreakerConfig::default()
    };
    let breaker = Breaker::new("http://127.0.0.1:1", config, None);
    let acquire_and_report = || {
        let permit = breaker.acquire(Instant::now()).expect("closed");
        permit.success(Instant::now());
    };
    let mutex = Mutex::new(0u64);
    let bare_mutex = || {
        *mutex.lock().unwrap() += 1;
    };
    let mut rows = Vec::new();
    for threads in [1usize, 2] {
        let (_, baseline) = timed(threads, n / threads, bare_mutex);
        let (wall, per_call) = timed(threads, n / threads, acquire_and_report);
        eprintln!(
            "  breaker, {threads} thread(s): {per_call:.0} ns per request ({wall:.0} ns of wall time per request); a bare mutex: {baseline:.0} ns"
        );
        rows.push(json!({
            "threads": threads,
            "ns_per_request": per_call,
            "wall_ns_per_request": wall,
            "bare_mutex_ns": baseline,
        }));
    }
    json!({"requests": n, "rows": rows})
}

async fn end_to_end(args: &Args, scratch: &Path, cache: &Path) -> anyhow::Result<Value> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route("/ok", axum::routing::get(|| async { "hello" }));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let url = format!("http://{addr}/ok");
    let destination = format!("http://{addr}");
    let iterations = ((3_000.0 * args.scale) as usize).max(300);

    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let pooled = reqwest::Client::builder().build()?;
    let native_fresh = sample(iterations, || async {
        let body = fresh.get(&url).send().await?.text().await?;
        anyhow::ensure!(body == "hello");
        Ok(())
    })
    .await?;
    let native_pooled = sample(iterations, || async {
        let body = pooled.get(&url).send().await?.text().await?;
        anyhow::ensure!(body == "hello");
        Ok(())
    })
    .await?;

    // The host, with fetch allowed to reach the server.
    let tools = scratch.join("outbound-tools");
    std::fs::create_dir_all(&tools)?;
    let wasm = tools.join("fetch.wasm");
    std::fs::copy(args.tools.join("fetch.wasm"), &wasm)?;
    std::fs::write(
        tools.join("fetch.policy.toml"),
        format!("[network]\nallow = [\"{destination}\"]\n"),
    )?;
    let runtime = Runtime::new(RuntimeOptions {
        cache: Some(cache.to_owned()),
        ..RuntimeOptions::default()
    })?;
    let component = runtime.load_file(&wasm)?;

    // The host's outbound layer alone (allow-list, breaker, guard, send), no
    // guest: the runtime's own (connections kept alive), and one whose pool
    // keeps nothing (a new connection per request, as before the pool).
    let grants = vec![Destination::parse(&destination).map_err(anyhow::Error::msg)?];
    let call = CallContext::new("bench".into(), "bench".into(), 1);
    let no_pool = Outbound::with_pool(
        runtime.outbound().config().clone(),
        PoolLimits {
            idle_per_key: 0,
            ..PoolLimits::default()
        },
    )
    .map_err(anyhow::Error::msg)?;
    let host_fresh = sample(iterations, || through_layer(&no_pool, &grants, &call, &url)).await?;
    let outbound = runtime.outbound().clone();
    let host_layer = sample(iterations, || {
        through_layer(&outbound, &grants, &call, &url)
    })
    .await?;

    // The whole tool call: instantiate fetch, wasi:http out, result back.
    let signature = component.tool("fetch").expect("fetch has fetch").clone();
    let arguments = json!({"url": url}).as_object().cloned();
    let cancel = CancellationToken::new();
    let through_tool = sample(iterations, || async {
        let outcome = invoke(
            &runtime,
            &component,
            &signature,
            arguments.as_ref(),
            &cancel,
            None,
        )
        .await;
        anyhow::ensure!(!outcome.is_error, "fetch failed: {:?}", outcome.content);
        Ok(())
    })
    .await?;
    server.abort();

    let report = |label: &str, v: &Value| {
        eprintln!(
            "  GET loopback, {label:36}: p50 {:7.1} µs  p99 {:7.1} µs",
            v["p50_us"].as_f64().unwrap_or(f64::NAN),
            v["p99_us"].as_f64().unwrap_or(f64::NAN)
        );
    };
    report("native reqwest, new connection", &native_fresh);
    report("native reqwest, keep-alive", &native_pooled);
    report("host layer, no guest, new connection", &host_fresh);
    report("host layer, no guest, keep-alive", &host_layer);
    report("fetch tool call, keep-alive", &through_tool);
    Ok(json!({
        "requests": iterations,
        "native_fresh_connection": native_fresh,
        "native_keep_alive": native_pooled,
        "host_outbound_layer_fresh_connection": host_fresh,
        "host_outbound_layer": host_layer,
        "fetch_tool_call": through_tool,
    }))
}

/// One GET through `outbound`, as a tool granted `grants` would make it.
async fn through_layer(
    outbound: &Outbound,
    grants: &[Destination],
    call: &CallContext,
    url: &str,
) -> anyhow::Result<()> {
    let scope = Scope {
        grants,
        call,
        deadline: Instant::now() + Duration::from_secs(30),
        connect_timeout: None,
        first_byte_timeout: None,
    };
    let request = http::Request::get(url).body(bytes::Bytes::new())?;
    let response = outbound.send(request, &scope).await?;
    anyhow::ensure!(response.body().as_ref() == b"hello");
    Ok(())
}

/// p50/p99 in µs of `iterations` sequential runs (after a 10% warm-up).
async fn sample<F, Fut>(iterations: usize, mut run: F) -> anyhow::Result<Value>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let times = sequential(iterations, |_| run()).await?;
    Ok(json!({
        "p50_us": percentile(&times, 0.5).as_secs_f64() * 1e6,
        "p99_us": percentile(&times, 0.99).as_secs_f64() * 1e6,
    }))
}
