//! Raw JSON-RPC clients (no MCP SDK), so the client's own overhead does not hide
//! the server's: newline-delimited JSON over a child's stdio, and plain HTTP POSTs.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Semaphore;

/// A server process spoken to over stdio.
pub struct StdioServer {
    pub child: Child,
    stdin: ChildStdin,
    lines: tokio::io::Lines<BufReader<ChildStdout>>,
}

impl StdioServer {
    pub fn spawn(program: &std::path::Path, args: &[&str]) -> anyhow::Result<Self> {
        let mut command = Command::new(program);
        command.args(args);
        Self::spawn_command(command)
    }

    /// Start `command` (its stdio is replaced: piped in and out, stderr discarded).
    pub fn spawn_command(mut command: Command) -> anyhow::Result<Self> {
        let program = command.as_std().get_program().to_owned();
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let stdin = child.stdin.take().expect("piped");
        let lines = BufReader::new(child.stdout.take().expect("piped")).lines();
        Ok(Self {
            child,
            stdin,
            lines,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    pub async fn send(&mut self, message: &Value) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(message)?;
        line.push(b'\n');
        self.stdin.write_all(&line).await?;
        Ok(())
    }

    /// `calls` echo calls, one after another, before anything is measured.
    pub async fn warm_up(&mut self, calls: u64) -> anyhow::Result<()> {
        for i in 0..calls {
            self.request(
                1_000_000 + i,
                "tools/call",
                json!({"name": "echo", "arguments": {"message": "warm"}}),
            )
            .await?;
        }
        Ok(())
    }

    /// Send a request and wait for the response with its id.
    pub async fn request(&mut self, id: u64, method: &str, params: Value) -> anyhow::Result<Value> {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await?;
        while let Some(line) = self.lines.next_line().await? {
            let message: Value = serde_json::from_str(&line)?;
            if message["id"] == id {
                return Ok(message);
            }
        }
        anyhow::bail!("server closed stdout before answering {method}")
    }

    /// The legacy handshake: initialize + initialized.
    pub async fn initialize(&mut self) -> anyhow::Result<()> {
        let init = self
            .request(
                0,
                "initialize",
                json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}}),
            )
            .await?;
        anyhow::ensure!(init.get("result").is_some(), "initialize failed: {init}");
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await
    }

    /// `total` echo calls with up to `concurrency` in flight; per-call latencies,
    /// and the server back (still running) for more requests.
    pub async fn echo_load(self, total: usize, concurrency: usize) -> anyhow::Result<(Load, Self)> {
        let Self {
            child,
            mut stdin,
            lines,
        } = self;
        let sent: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
        let slots = Arc::new(Semaphore::new(concurrency));
        let reader = {
            let sent = sent.clone();
            let slots = slots.clone();
            let mut lines = lines;
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(total);
                while latencies.len() < total {
                    let Some(line) = lines.next_line().await? else {
                        anyhow::bail!("server closed stdout")
                    };
                    let message: Value = serde_json::from_str(&line)?;
                    let Some(id) = message["id"].as_u64() else {
                        continue;
                    };
                    // `isError` may be left out when false (MCP; rmcp 0.2 does, as in Wassette).
                    anyhow::ensure!(
                        message["result"].is_object() && message["result"]["isError"] != true,
                        "echo failed: {message}"
                    );
                    let started = sent.lock().unwrap().remove(&id).context("unknown id")?;
                    latencies.push(started.elapsed());
                    slots.add_permits(1);
                }
                Ok((latencies, lines))
            })
        };
        let started = Instant::now();
        for id in 1..=total as u64 {
            slots.acquire().await?.forget();
            let message = json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"message": "hello, benchmark"}}});
            let mut line = serde_json::to_vec(&message)?;
            line.push(b'\n');
            sent.lock().unwrap().insert(id, Instant::now());
            stdin.write_all(&line).await?;
        }
        let (latencies, lines) = reader.await??;
        let load = Load::new(latencies, started.elapsed());
        Ok((
            load,
            Self {
                child,
                stdin,
                lines,
            },
        ))
    }
}

/// The `p` quantile (0..=1) of `sorted` latencies, nearest rank.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// Run `run` `iterations` times one after another, after a 10% warm-up that is
/// not timed; the latencies, sorted.
pub async fn sequential<F, Fut>(iterations: usize, mut run: F) -> anyhow::Result<Vec<Duration>>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let warm_up = iterations / 10;
    let mut times = Vec::with_capacity(iterations);
    for i in 0..warm_up + iterations {
        let started = Instant::now();
        run(i).await?;
        if i >= warm_up {
            times.push(started.elapsed());
        }
    }
    times.sort();
    Ok(times)
}

/// Latencies of one load run.
pub struct Load {
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
}

impl Load {
    fn new(mut latencies: Vec<Duration>, elapsed: Duration) -> Self {
        latencies.sort();
        Self { latencies, elapsed }
    }

    pub fn percentile_us(&self, p: f64) -> f64 {
        percentile(&self.latencies, p).as_secs_f64() * 1e6
    }

    pub fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// `total` stateless (2026-07-28) echo calls over HTTP with `concurrency` workers.
pub async fn http_echo_load(url: &str, total: usize, concurrency: usize) -> anyhow::Result<Load> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()?;
    let per_worker = total / concurrency;
    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let client = client.clone();
        let url = url.to_string();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_worker);
            for i in 0..per_worker {
                let body = json!({"jsonrpc": "2.0", "id": w * per_worker + i, "method": "tools/call", "params": {
                    "name": "echo", "arguments": {"message": "hello, benchmark"},
                    "_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28",
                              "io.modelcontextprotocol/clientCapabilities": {}}}});
                let t = Instant::now();
                let text = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("accept", "application/json, text/event-stream")
                    .header("mcp-protocol-version", "2026-07-28")
                    .header("mcp-method", "tools/call")
                    .header("mcp-name", "echo")
                    .body(body.to_string())
                    .send()
                    .await?
                    .text()
                    .await?;
                anyhow::ensure!(text.contains("\"isError\":false"), "echo failed: {text}");
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut all = Vec::with_capacity(total);
    for w in workers {
        all.extend(w.await??);
    }
    Ok(Load::new(all, started.elapsed()))
}

/// Resident set size of a process, in KiB (from /proc).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    status_kib(pid, "VmRSS:")
}

/// A `kB` line of /proc/PID/status (e.g. `VmHWM:`), in KiB.
pub fn status_kib(pid: u32, key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {key} in /proc/{pid}/status"))
}

/// CPU time (user + system) all threads of `pid` have used so far, in ns
/// (the scheduler's per-thread accounting, finer than /proc/PID/stat's ticks).
/// Less sensitive to a busy machine than wall-clock latency.
pub fn process_cpu_ns(pid: u32) -> u64 {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    threads
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}
