//! `mcpplus-bench peers` (run by scripts/bench-peers.sh; optional, not in CI):
//! mcpplus, the native rmcp baseline (`native-echo`) and Microsoft Wassette serving
//! the same `echo` tool, measured side by side in one run with the raw client of
//! client.rs. mcpplus and Wassette serve the very same component file.
//!
//! Each repetition starts a fresh server process and measures, in this order: the
//! time from spawn to the answer of the first `tools/list`, sequential echo calls
//! (p50), echo calls with 16 in flight (calls/s), the server's CPU time over both
//! loads (all threads' scheduler CPU time, divided by the calls) and its peak
//! resident memory (VmHWM). Repetitions are interleaved (native, mcpplus, Wassette,
//! native, …) so that the machine's noise spreads over all three; the table shows
//! the median of the repetitions, the JSON keeps every one.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;
use serde_json::{Value, json};
use tokio::process::Command;

use crate::client::{StdioServer, process_cpu_ns, status_kib};

/// Where the section starts and ends in docs/benchmarks.md (report.rs keeps it).
pub const BEGIN: &str = "<!-- peers:begin -->";
pub const END: &str = "<!-- peers:end -->";

#[derive(Parser)]
#[command(
    name = "mcpplus-bench peers",
    about = "mcpplus, native rmcp and Wassette side by side on one echo component"
)]
pub struct PeersArgs {
    /// The mcpplus binary (a release build)
    #[arg(long)]
    mcpplus: PathBuf,
    /// The native rmcp echo server (a release build)
    #[arg(long)]
    native: PathBuf,
    /// The Wassette binary (a release build)
    #[arg(long)]
    wassette: PathBuf,
    /// What the Wassette binary was built from, for the report (e.g. `v0.2.0 (7b0053b)`)
    #[arg(long, default_value = "(unknown version)")]
    wassette_version: String,
    /// The component both hosts serve: one top-level export `echo(message: string) -> string`
    #[arg(long)]
    component: PathBuf,
    /// Repetitions per server (interleaved)
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Scale the number of calls (1.0 = the documented run)
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Where to write the markdown section (markers included)
    #[arg(long)]
    markdown: PathBuf,
    /// Where to write the raw numbers (JSON)
    #[arg(long)]
    json: PathBuf,
    /// Measure nothing: write the markdown section from the JSON of an earlier run
    /// (after editing the section's text)
    #[arg(long)]
    render_only: bool,
}

/// One server under test and how to start it on stdio.
struct Server {
    key: &'static str,
    label: String,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(&'static str, &'static str)>,
}

impl Server {
    fn command(&self) -> Command {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        for (k, v) in &self.env {
            command.env(k, v);
        }
        command
    }
}

pub async fn run(args: PeersArgs) -> anyhow::Result<()> {
    if args.render_only {
        let results: Value = serde_json::from_str(&std::fs::read_to_string(&args.json)?)?;
        std::fs::write(&args.markdown, markdown(&results))?;
        return Ok(());
    }
    let scratch = std::env::temp_dir().join(format!("mcpplus-bench-peers-{}", std::process::id()));
    let result = run_in(&args, &scratch).await;
    let _ = std::fs::remove_dir_all(&scratch);
    let results = result?;
    std::fs::write(&args.json, serde_json::to_string_pretty(&results)?)?;
    std::fs::write(&args.markdown, markdown(&results))?;
    eprintln!(
        "wrote {} and {}",
        args.markdown.display(),
        args.json.display()
    );
    Ok(())
}

async fn run_in(args: &PeersArgs, scratch: &Path) -> anyhow::Result<Value> {
    let bytes = std::fs::read(&args.component)
        .with_context(|| format!("reading {}", args.component.display()))?;
    let file_name = args
        .component
        .file_name()
        .context("component path has no file name")?;
    // Each host gets a folder holding only this file (copies: Wassette skips
    // symbolic links when it reads its plugin folder).
    let mcpplus_tools = scratch.join("mcpplus-tools");
    let wassette_plugins = scratch.join("wassette-plugins");
    for dir in [&mcpplus_tools, &wassette_plugins] {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join(file_name), &bytes)?;
    }
    let warm_cache = scratch.join("mcpplus-cache");
    // Its own data dir: the default one may hold a queue file and templates.
    let data_dir = scratch.join("mcpplus-data");
    let path = |p: &Path| p.to_string_lossy().into_owned();
    let servers = [
        Server {
            key: "native",
            label: "native rmcp (`native-echo`)".into(),
            program: args.native.clone(),
            args: vec![],
            env: vec![],
        },
        Server {
            key: "mcpplus",
            label: "mcpplus".into(),
            program: args.mcpplus.clone(),
            args: [
                "serve",
                "--tools",
                &path(&mcpplus_tools),
                "--cache-dir",
                &path(&warm_cache),
                "--data-dir",
                &path(&data_dir),
                "--log",
                "warn",
            ]
            .map(String::from)
            .to_vec(),
            env: vec![],
        },
        Server {
            key: "wassette",
            label: format!("Wassette {}", args.wassette_version),
            program: args.wassette.clone(),
            args: ["serve", "--stdio", "--plugin-dir", &path(&wassette_plugins)]
                .map(String::from)
                .to_vec(),
            // Its default filter is `info`, a few lines per call; mcpplus runs with
            // `--log warn`, so Wassette gets the same level.
            env: vec![("RUST_LOG", "warn")],
        },
    ];
    let sequential = ((3000.0 * args.scale) as usize).max(10);
    let parallel = ((8000.0 * args.scale) as usize / 16 * 16).max(16);
    let load_before = loadavg();

    // One start of each, not recorded: binaries into the page cache, and the
    // compiled component into mcpplus's cache (its repetitions are warm starts).
    for server in &servers {
        start(server)
            .await
            .with_context(|| format!("starting {}", server.label))?;
    }

    let mut reps: Vec<Vec<Value>> = vec![Vec::new(); servers.len()];
    let mut mcpplus_cold_ms = Vec::new();
    for rep in 0..args.reps {
        for (i, server) in servers.iter().enumerate() {
            let row = measure(server, sequential, parallel)
                .await
                .with_context(|| format!("{} (repetition {})", server.label, rep + 1))?;
            eprintln!(
                "  rep {} {:9} start {:7.1} ms  p50 {:8.1} µs  c=16 {:7.0} calls/s  cpu {:7.1} µs/call  peak {:6.1} MiB",
                rep + 1,
                server.key,
                f(&row["start_ms"]),
                f(&row["p50_us"]),
                f(&row["calls_per_s_16"]),
                f(&row["cpu_us_per_call"]),
                f(&row["peak_rss_kib"]) / 1024.0
            );
            reps[i].push(row);
        }
        // mcpplus's first start ever, with an empty compile cache.
        let cold = scratch.join(format!("cold-cache-{rep}"));
        let mut cold_server = Server {
            key: "mcpplus",
            label: "mcpplus, empty cache".into(),
            program: args.mcpplus.clone(),
            args: servers[1].args.clone(),
            env: vec![],
        };
        cold_server.args[4] = path(&cold);
        let (ms, _) = start(&cold_server).await?;
        eprintln!(
            "  rep {} mcpplus start with an empty compile cache {ms:7.1} ms",
            rep + 1
        );
        mcpplus_cold_ms.push(ms);
    }

    let mut per_server = serde_json::Map::new();
    for (server, rows) in servers.iter().zip(&reps) {
        let median_of = |key: &str| median(rows.iter().map(|r| f(&r[key])).collect());
        per_server.insert(
            server.key.into(),
            json!({
                "label": server.label,
                "command": format!("{} {}", server.program.display(), server.args.join(" ")),
                "env": server.env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
                "start_ms": median_of("start_ms"),
                "p50_us": median_of("p50_us"),
                "p99_us": median_of("p99_us"),
                "calls_per_s_16": median_of("calls_per_s_16"),
                "cpu_us_per_call": median_of("cpu_us_per_call"),
                "peak_rss_kib": median_of("peak_rss_kib"),
                "tools_listed": rows[0]["tools_listed"],
                "structured_content": rows[0]["structured_content"],
                "reps": rows,
            }),
        );
    }
    Ok(json!({
        "machine": crate::scenarios::machine(),
        "command": "scripts/bench-peers.sh",
        "component": {
            "file": file_name.to_string_lossy(),
            "bytes": bytes.len(),
            "sha256": sha256_hex(&args.component),
        },
        "wassette_version": args.wassette_version,
        "reps": args.reps,
        "sequential_calls": sequential,
        "parallel_calls": parallel,
        "loadavg_before": load_before,
        "loadavg_after": loadavg(),
        "mcpplus_cold_start_ms": mcpplus_cold_ms,
        "mcpplus_cold_start_ms_median": median(mcpplus_cold_ms.clone()),
        "servers": per_server,
    }))
}

/// Spawn, initialize and list the tools: the time to the `tools/list` answer
/// (spawn included), and the server still running.
async fn start(server: &Server) -> anyhow::Result<(f64, StdioServer)> {
    let started = Instant::now();
    let mut process = StdioServer::spawn_command(server.command())?;
    process.initialize().await?;
    let list = process.request(1, "tools/list", json!({})).await?;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let tools = list["result"]["tools"]
        .as_array()
        .with_context(|| format!("tools/list failed: {list}"))?;
    anyhow::ensure!(
        tools.iter().any(|t| t["name"] == "echo"),
        "no `echo` among the tools listed: {list}"
    );
    Ok((ms, process))
}

async fn measure(server: &Server, sequential: usize, parallel: usize) -> anyhow::Result<Value> {
    let (start_ms, mut process) = start(server).await?;
    let list = process.request(2, "tools/list", json!({})).await?;
    let tools_listed = list["result"]["tools"].as_array().map_or(0, Vec::len);
    let message = "hello, peers";
    let answer = process
        .request(
            3,
            "tools/call",
            json!({"name": "echo", "arguments": {"message": message}}),
        )
        .await?;
    anyhow::ensure!(
        answer["result"]["content"][0]["text"] == message,
        "echo did not answer its message as text: {answer}"
    );
    process.warm_up(200).await?;
    let pid = process.pid();
    let cpu_before = process_cpu_ns(pid);
    let (seq, process) = process.echo_load(sequential, 1).await?;
    let (par, process) = process.echo_load(parallel, 16).await?;
    let cpu_after = process_cpu_ns(pid);
    let peak_rss_kib = status_kib(pid, "VmHWM:")?;
    drop(process);
    let cpu_us_per_call =
        cpu_after.saturating_sub(cpu_before) as f64 / 1e3 / (sequential + parallel) as f64;
    Ok(json!({
        "start_ms": start_ms,
        "p50_us": seq.percentile_us(0.5),
        "p99_us": seq.percentile_us(0.99),
        "calls_per_s_16": par.throughput(),
        "p50_us_16": par.percentile_us(0.5),
        "cpu_us_per_call": cpu_us_per_call,
        "peak_rss_kib": peak_rss_kib,
        "tools_listed": tools_listed,
        "structured_content": answer["result"].get("structuredContent").is_some(),
    }))
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn sha256_hex(path: &Path) -> String {
    std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .next()
                .map(String::from)
        })
        .unwrap_or_default()
}

fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// The section of docs/benchmarks.md, markers included.
pub fn markdown(r: &Value) -> String {
    let m = &r["machine"];
    let s = &r["servers"];
    let keys = ["native", "mcpplus", "wassette"];
    let native = &s["native"];
    let sha = r["component"]["sha256"].as_str().unwrap_or("?");
    let mut out = format!("{BEGIN}\n## Side by side with Wassette\n\n");
    out.push_str(&format!(
        "Produced by `scripts/bench-peers.sh` (optional, not in CI; `scripts/bench.sh` keeps\n\
         this section as it is; raw numbers in `bench/results/peers.json`). One run, {}\n\
         interleaved repetitions per server (native, mcpplus, Wassette, native, …; the median\n\
         is shown), each a fresh process spoken to over stdio by the raw JSON-RPC client.\n\
         mcpplus and Wassette serve the same file, built from `guest-tools/echo-min`: one\n\
         top-level export `echo(message: string) -> string` that imports nothing\n\
         (`{}`, {} bytes, sha256 `{}`…). `native-echo` serves the same tool in Rust.\n\
         Wassette {} was built from source (`cargo build --release --locked`).\n\n",
        r["reps"],
        r["component"]["file"].as_str().unwrap_or("?"),
        r["component"]["bytes"],
        &sha[..12.min(sha.len())],
        r["wassette_version"].as_str().unwrap_or("?"),
    ));
    out.push_str(&format!(
        "Machine: {} ({} cores), Linux {}; measured {}.\n\
         Load average {} before, {} after: a shared machine with other builds\n\
         running, so treat small differences as noise.\n\n",
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        m["kernel"].as_str().unwrap_or("?"),
        m["date"].as_str().unwrap_or("?"),
        r["loadavg_before"].as_str().unwrap_or("?"),
        r["loadavg_after"].as_str().unwrap_or("?"),
    ));
    out.push_str("| per server |");
    for k in keys {
        out.push_str(&format!(" {} |", s[k]["label"].as_str().unwrap_or(k)));
    }
    out.push_str("\n|---|---:|---:|---:|\n");
    let ratio = |k: &str, key: &str| f(&s[k][key]) / f(&native[key]);
    let mut row = |name: &str, cell: &dyn Fn(&str) -> String| {
        out.push_str(&format!("| {name} |"));
        for k in keys {
            out.push_str(&format!(" {} |", cell(k)));
        }
        out.push('\n');
    };
    let with_ratio = |key: &'static str, digits: usize| {
        move |k: &str| {
            if k == "native" {
                format!("{:.*}", digits, f(&s[k][key]))
            } else {
                format!("{:.*} ({:.2}x)", digits, f(&s[k][key]), ratio(k, key))
            }
        }
    };
    row(
        &format!(
            "stdio echo p50, µs ({} sequential calls; ratio vs native)",
            r["sequential_calls"]
        ),
        &with_ratio("p50_us", 0),
    );
    row(
        &format!(
            "16 in flight, calls/s ({} calls; ratio)",
            r["parallel_calls"]
        ),
        &with_ratio("calls_per_s_16", 0),
    );
    row(
        "server CPU per call, µs (all threads' CPU time over both loads / calls; ratio)",
        &with_ratio("cpu_us_per_call", 1),
    );
    row("start to first `tools/list`, ms (spawn included)", &|k| {
        format!("{:.1}", f(&s[k]["start_ms"]))
    });
    row("peak RSS (VmHWM), MiB", &|k| {
        format!("{:.1}", f(&s[k]["peak_rss_kib"]) / 1024.0)
    });
    let wassette_answers = if s["wassette"]["structured_content"] == true {
        "text and `structuredContent`"
    } else {
        "text only (no `structuredContent`)"
    };
    let notes = [
        "How each was run (same client, same calls):".to_string(),
        String::new(),
        "- `native-echo`: no WebAssembly; answers text and `structuredContent`.".to_string(),
        format!(
            "- mcpplus: `mcpplus serve --tools DIR --log warn`, DIR holding only the component.\n  \
             Its start is warm: its compile cache was filled by an earlier start (with an\n  \
             empty cache, the first start took {:.1} ms, median). Lists {} tool(s);\n  \
             answers text and `structuredContent`. Each call instantiates the component from\n  \
             its pre-linked `InstancePre` out of the pooling allocator. Most of its peak RSS is\n  \
             the host itself (see \"mcpplus, no tools, idle\" under Resident memory above).",
            f(&r["mcpplus_cold_start_ms_median"]),
            s["mcpplus"]["tools_listed"],
        ),
        format!(
            "- Wassette: `RUST_LOG=warn wassette serve --stdio --plugin-dir DIR`, DIR holding\n  \
             only the component, which Wassette loads at start (compiling it: it keeps no\n  \
             compile cache), so no `load-component` call is needed; the tool is named `echo`\n  \
             as in mcpplus. Lists {} tools (its built-in management tools besides `echo`);\n  \
             answers {wassette_answers}, and leaves `isError` out when\n  \
             false (the client accepts either). `RUST_LOG=warn` matches mcpplus's `--log\n  \
             warn`: Wassette's default, `info`, writes lines for every call. In the v0.2.0\n  \
             source, each call builds a new `Linker` (WASI, WASI HTTP, WASI config) and\n  \
             instantiates the component through it, with wasmtime's default on-demand\n  \
             allocator (not profiled here).",
            s["wassette"]["tools_listed"],
        ),
    ];
    out.push('\n');
    out.push_str(&notes.join("\n"));
    out.push('\n');
    out.push_str(&format!("{END}\n"));
    out
}
