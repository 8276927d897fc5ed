//! The benchmark suite: latency and throughput against a native rmcp baseline,
//! in-host instantiate-and-call cost, cold and warm start, resident memory, and
//! hot loading (swap time, calls during swaps).
//! Run by `scripts/bench.sh`, which writes docs/benchmarks.md and
//! bench/results/latest.json. Every comparison is measured in the same run.
//! `mcpplus-bench peers …` is the side-by-side run with Wassette (peers.rs,
//! scripts/bench-peers.sh).

mod client;
mod logging;
mod mesh;
mod outbound;
mod peers;
mod queue;
mod queue_postgres;
mod reload;
mod report;
mod scenarios;
mod workflow;

use std::path::PathBuf;

use clap::Parser;

#[derive(Parser)]
#[command(about = "mcpplus benchmark suite")]
pub struct Args {
    /// The mcpplus binary (a release build)
    #[arg(long)]
    mcpplus: PathBuf,
    /// The native rmcp echo server (a release build)
    #[arg(long)]
    native: PathBuf,
    /// The bundled tools folder (guest-tools/dist)
    #[arg(long)]
    tools: PathBuf,
    /// Where to write the markdown report
    #[arg(long)]
    report: PathBuf,
    /// Where to write the raw numbers (JSON)
    #[arg(long)]
    json: PathBuf,
    /// Run only these scenarios (startup, latency, in_host, memory, reload, logging, outbound, queue, queue_postgres, mesh); results are
    /// printed but the report is not rewritten
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Scale the number of requests (1.0 = the documented run)
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// A PostgreSQL database for the queue's PostgreSQL backend
    /// (`queue_postgres`; scripts/bench.sh starts a throw-away one)
    #[arg(long)]
    postgres_url: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `mcpplus-bench peers …`: the side-by-side run of scripts/bench-peers.sh.
    if std::env::args().nth(1).as_deref() == Some("peers") {
        return peers::run(peers::PeersArgs::parse_from(std::env::args().skip(1))).await;
    }
    let args = Args::parse();
    let results = scenarios::run_all(&args).await?;
    if !args.only.is_empty() {
        println!("{}", serde_json::to_string_pretty(&results)?);
        return Ok(());
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&results)?)?;
    // The side-by-side section (scripts/bench-peers.sh) is not this run's: keep it.
    let previous = std::fs::read_to_string(&args.report).unwrap_or_default();
    std::fs::write(
        &args.report,
        report::keep_marked_sections(report::markdown(&results), &previous),
    )?;
    eprintln!(
        "wrote {} and {}",
        args.report.display(),
        args.json.display()
    );
    Ok(())
}
