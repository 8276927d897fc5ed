//! Hot loading: how long from a changed file (or an admin `load`) until the new
//! version answers, with a warm and a cold compile cache; and what calls see
//! while versions are being swapped, against the same client in steady state.
//!
//! Uses the `versioned` fixture (guest-tools/versioned, built as versions 1 and
//! 2). A "cold" swap gets a build nobody compiled yet: the same code with a
//! unique custom section appended, so the cache cannot have it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::Args;
use crate::client::StdioServer;

/// The settle time `serve` uses by default (the folder watcher's debounce).
const DEFAULT_SETTLE_MS: u64 = 250;

pub async fn run(args: &Args, scratch: &Path) -> anyhow::Result<Value> {
    let v1 = std::fs::read(args.tools.join("fixtures/versioned-1.wasm"))
        .context("the versioned fixture (run scripts/build-guest-tools.sh)")?;
    let v2 = std::fs::read(args.tools.join("fixtures/versioned-2.wasm"))?;
    let dir = scratch.join("reload");
    let rounds = ((10.0 * args.scale).round() as usize).max(3);
    let mut rows = Vec::new();

    // Through the watched folder (includes the settle time).
    let tools = dir.join("tools");
    let target = tools.join("versioned.wasm");
    let (mut server, mut ids) = start(args, &tools, &dir.join("cache"), &v1, &v2, &[]).await?;
    for cache_state in ["warm", "cold"] {
        rows.push(
            measure(
                "folder",
                cache_state,
                rounds,
                &v1,
                &v2,
                &mut server,
                &mut ids,
                async |bytes: &[u8]| install(&target, bytes),
            )
            .await?,
        );
    }
    let during = calls_during_swaps(&mut server, &mut ids, &target, &v1, &v2, args.scale).await?;
    drop(server);

    // Through the admin socket (no watcher, so no settle time).
    let socket = dir.join("admin.sock");
    let staged = dir.join("staged/versioned.wasm");
    let admin_args = [
        "--no-watch",
        "--admin-socket",
        socket.to_str().context("utf-8 path")?,
    ];
    let (mut server, mut ids) = start(
        args,
        &dir.join("admin-tools"),
        &dir.join("cache"),
        &v1,
        &v2,
        &admin_args,
    )
    .await?;
    for cache_state in ["warm", "cold"] {
        rows.push(
            measure(
                "admin",
                cache_state,
                rounds,
                &v1,
                &v2,
                &mut server,
                &mut ids,
                async |bytes: &[u8]| {
                    std::fs::create_dir_all(staged.parent().expect("has a folder"))?;
                    std::fs::write(&staged, bytes)?;
                    // The timer includes the admin call's reply.
                    admin(&socket, &json!({"command": "load", "path": staged})).await?;
                    Ok(())
                },
            )
            .await?,
        );
    }
    Ok(json!({"settle_ms": DEFAULT_SETTLE_MS, "swap": rows, "calls": during}))
}

/// A server over `tools` holding version 1, with both versions compiled into
/// `cache` so warm swaps hit it.
async fn start(
    args: &Args,
    tools: &Path,
    cache: &Path,
    v1: &[u8],
    v2: &[u8],
    extra: &[&str],
) -> anyhow::Result<(StdioServer, std::ops::RangeFrom<u64>)> {
    std::fs::create_dir_all(tools)?;
    let target = tools.join("versioned.wasm");
    install(&target, v1)?;
    let data_dir = tools.with_extension("data");
    let mut server_args = vec![
        "serve",
        "--tools",
        tools.to_str().context("utf-8 path")?,
        "--cache-dir",
        cache.to_str().context("utf-8 path")?,
        "--data-dir",
        data_dir.to_str().context("utf-8 path")?,
        "--log",
        "warn",
    ];
    server_args.extend_from_slice(extra);
    let mut server = StdioServer::spawn(&args.mcpplus, &server_args)?;
    server.initialize().await?;
    let mut ids = 10u64..;
    // Compile version 2 once (version 1 was compiled at start).
    let warmup = tools.with_file_name("warmup");
    std::fs::create_dir_all(&warmup)?;
    let probe = warmup.join("versioned.wasm");
    install(&probe, v2)?;
    let runtime = tokio::process::Command::new(&args.mcpplus)
        .args([
            "call",
            probe.to_str().context("utf-8 path")?,
            "version",
            "--cache-dir",
        ])
        .arg(cache)
        .output()
        .await?;
    anyhow::ensure!(runtime.status.success(), "warming the cache failed");
    wait_for_version(&mut server, &mut ids, "1").await?;
    Ok((server, ids))
}

/// Swap between versions `rounds` times with `swap`, timing each from the swap
/// until the new version answers.
#[allow(clippy::too_many_arguments)]
async fn measure(
    how: &str,
    cache_state: &str,
    rounds: usize,
    v1: &[u8],
    v2: &[u8],
    server: &mut StdioServer,
    ids: &mut std::ops::RangeFrom<u64>,
    swap: impl AsyncFn(&[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<Value> {
    let mut times = Vec::new();
    for round in 0..rounds {
        let (base, version) = if round % 2 == 0 { (v2, "2") } else { (v1, "1") };
        let bytes = match cache_state {
            "warm" => base.to_vec(),
            _ => with_marker(base, &format!("{how}-{round}-{}", std::process::id())),
        };
        let started = Instant::now();
        swap(&bytes).await?;
        wait_for_version(server, ids, version).await?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
        // Let the folder settle before the next round.
        tokio::time::sleep(Duration::from_millis(DEFAULT_SETTLE_MS + 100)).await;
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    eprintln!("  swap via {how:6} {cache_state} cache: median {median:7.1} ms  (n={rounds})");
    Ok(json!({"via": how, "cache": cache_state, "median_ms": median, "all_ms": times}))
}

/// Sequential calls for a while in steady state, then for as long while the
/// component is swapped every 200 ms (warm cache); latency percentiles of both.
async fn calls_during_swaps(
    server: &mut StdioServer,
    ids: &mut std::ops::RangeFrom<u64>,
    target: &Path,
    v1: &[u8],
    v2: &[u8],
    scale: f64,
) -> anyhow::Result<Value> {
    let window = Duration::from_secs_f64((4.0 * scale).max(1.0));
    let steady = timed_calls(server, ids, window).await?;
    let swapper = {
        let target = target.to_owned();
        let (v1, v2) = (v1.to_vec(), v2.to_vec());
        tokio::spawn(async move {
            let mut n = 0usize;
            let until = Instant::now() + window;
            while Instant::now() < until {
                install(&target, if n.is_multiple_of(2) { &v2 } else { &v1 })?;
                n += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            anyhow::Ok(n)
        })
    };
    let swapping = timed_calls(server, ids, window).await?;
    let swaps = swapper.await??;
    let summary = |label: &str, l: &Latencies| {
        json!({"phase": label, "calls": l.all.len(), "failed": l.failed,
               "p50_us": l.percentile(0.5), "p99_us": l.percentile(0.99), "max_us": l.percentile(1.0)})
    };
    eprintln!(
        "  calls steady p50 {:.0} µs p99 {:.0} µs | during {swaps} swaps p50 {:.0} µs p99 {:.0} µs max {:.0} µs, failed {}",
        steady.percentile(0.5),
        steady.percentile(0.99),
        swapping.percentile(0.5),
        swapping.percentile(0.99),
        swapping.percentile(1.0),
        swapping.failed
    );
    Ok(json!({"swaps": swaps, "window_s": window.as_secs_f64(),
              "phases": [summary("steady", &steady), summary("during swaps", &swapping)]}))
}

struct Latencies {
    all: Vec<Duration>,
    failed: usize,
}

impl Latencies {
    fn percentile(&self, p: f64) -> f64 {
        if self.all.is_empty() {
            return f64::NAN;
        }
        crate::client::percentile(&self.all, p).as_secs_f64() * 1e6
    }
}

async fn timed_calls(
    server: &mut StdioServer,
    ids: &mut std::ops::RangeFrom<u64>,
    window: Duration,
) -> anyhow::Result<Latencies> {
    let until = Instant::now() + window;
    let mut all = Vec::new();
    let mut failed = 0;
    while Instant::now() < until {
        let started = Instant::now();
        let reply = call_version(server, ids).await?;
        all.push(started.elapsed());
        if reply.1 {
            failed += 1;
        }
    }
    all.sort();
    Ok(Latencies { all, failed })
}

/// Call `version`: (its answer, whether it failed).
async fn call_version(
    server: &mut StdioServer,
    ids: &mut std::ops::RangeFrom<u64>,
) -> anyhow::Result<(String, bool)> {
    let id = ids.next().expect("endless");
    let reply = server
        .request(
            id,
            "tools/call",
            json!({"name": "version", "arguments": {}}),
        )
        .await?;
    let result = &reply["result"];
    let failed = result["isError"] != false;
    let text = result["content"][0]["text"]
        .as_str()
        .unwrap_or("")
        .to_string();
    Ok((text, failed))
}

async fn wait_for_version(
    server: &mut StdioServer,
    ids: &mut std::ops::RangeFrom<u64>,
    version: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (text, failed) = call_version(server, ids).await?;
        anyhow::ensure!(!failed, "a call failed during a swap: {text}");
        if text == version {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "version {version} never served");
    }
}

/// Replace a file the way operators should: write beside it, then rename.
fn install(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp: PathBuf = path.with_extension("wasm.tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// `bytes` with a custom section carrying `marker`: same code, new content hash.
fn with_marker(bytes: &[u8], marker: &str) -> Vec<u8> {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            out.push(if n == 0 { byte } else { byte | 0x80 });
            if n == 0 {
                return;
            }
        }
    }
    let name = b"mcpplus-bench";
    let mut payload = Vec::new();
    leb(name.len(), &mut payload);
    payload.extend_from_slice(name);
    payload.extend_from_slice(marker.as_bytes());
    let mut out = bytes.to_vec();
    out.push(0);
    leb(payload.len(), &mut out);
    out.extend_from_slice(&payload);
    out
}

/// One admin request over the Unix socket; fails unless the reply is ok.
async fn admin(socket: &Path, request: &Value) -> anyhow::Result<Value> {
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let (read, mut write) = stream.into_split();
    write.write_all(format!("{request}\n").as_bytes()).await?;
    let mut line = String::new();
    BufReader::new(read).read_line(&mut line).await?;
    let reply: Value = serde_json::from_str(&line)?;
    anyhow::ensure!(reply["ok"] == true, "admin request failed: {reply}");
    Ok(reply)
}
