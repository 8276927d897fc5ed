//! Telemetry costs: log throughput (JSON lines to a file) through mcpplus's own
//! layer against tracing-subscriber's stock JSON formatter in the same run, and
//! what logging and metrics add to one in-host call.

use std::io::BufWriter;
use std::path::Path;
use std::time::Instant;

use mcpplus_runtime::Runtime;
use mcpplus_runtime::engine::RuntimeOptions;
use mcpplus_runtime::invoke::invoke;
use mcpplus_telemetry::logs::{LineLayer, LogFormat};
use mcpplus_telemetry::metrics::{GaugeGuard, metrics};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::prelude::*;

use crate::Args;

pub async fn run(args: &Args, scratch: &Path, cache: &Path) -> anyhow::Result<Value> {
    let events = ((1_000_000.0 * args.scale) as usize).max(10_000);
    let ours = throughput(scratch, events, Writer::Ours)?;
    let stock = throughput(scratch, events, Writer::Stock)?;
    eprintln!(
        "  log throughput, JSON to a file: mcpplus {:.0} events/s, tracing-subscriber json {:.0} events/s",
        ours, stock
    );
    let metric_ns = metric_updates_ns();
    eprintln!("  metric updates of one call: {metric_ns:.0} ns");
    let per_call = per_call(args, scratch, cache).await?;
    Ok(json!({
        "events": events,
        "events_per_s": {"mcpplus_json": ours, "tracing_subscriber_json": stock},
        "metric_updates_per_call_ns": metric_ns,
        "per_call": per_call,
    }))
}

#[derive(Clone, Copy)]
enum Writer {
    Ours,
    Stock,
}

/// Events per second written as JSON lines to a file, each inside a call span
/// with the context fields a real call has.
fn throughput(scratch: &Path, events: usize, writer: Writer) -> anyhow::Result<f64> {
    let path = scratch.join("log-throughput.jsonl");
    let file = std::fs::File::create(&path)?;
    let emit = || {
        let span = tracing::info_span!(
            "call",
            call_id = 7u64,
            tool = "echo",
            component = "showcase",
            digest = "9c1711c916ee097a333962ca69b552b2cfe08be566d554eeb6227299c60b9023"
        );
        let _entered = span.enter();
        let started = Instant::now();
        for n in 0..events {
            tracing::info!(
                event = "guest.log",
                n,
                fields_json = "{\"step\":\"1\"}",
                "counted"
            );
        }
        started.elapsed()
    };
    let elapsed = match writer {
        Writer::Ours => {
            // Per-thread batches, as `--log-file` writes; the flush is timed too.
            let (layer, log) = LineLayer::batched(
                Box::new(BufWriter::with_capacity(1 << 16, file)),
                LogFormat::Json,
            );
            let started = Instant::now();
            let _ =
                tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), emit);
            log.flush();
            started.elapsed()
        }
        Writer::Stock => {
            let writer = std::sync::Mutex::new(BufWriter::with_capacity(1 << 16, file));
            let subscriber = tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_writer(writer)
                .finish();
            // Dropping the subscriber drops (and flushes) its writer.
            tracing::subscriber::with_default(subscriber, emit)
        }
    };
    let lines =
        std::io::BufRead::lines(std::io::BufReader::new(std::fs::File::open(&path)?)).count();
    anyhow::ensure!(lines == events, "wrote {lines} lines, expected {events}");
    Ok(events as f64 / elapsed.as_secs_f64())
}

/// The metric updates one call makes (counter, two histograms, gauges), timed.
fn metric_updates_ns() -> f64 {
    let m = metrics();
    let n = 200_000;
    let started = Instant::now();
    for _ in 0..n {
        let waiting = GaugeGuard::hold(&m.calls_queued);
        drop(waiting);
        let _active = GaugeGuard::hold(&m.instances_active);
        m.instantiation.observe(0.000_02);
        m.guest_memory_peak.observe(1_114_112.0);
        m.calls
            .get_or_create(&vec![
                ("tool", "echo".to_string()),
                ("component", "showcase".to_string()),
                ("outcome", "ok".to_string()),
            ])
            .inc();
        m.call_duration
            .get_or_create(&vec![("tool", "echo".to_string())])
            .observe(0.000_05);
    }
    started.elapsed().as_nanos() as f64 / f64::from(n)
}

/// The showcase `echo` through `invoke` (arguments, call, metrics), p50 over many
/// calls: with no log subscriber, with mcpplus's JSON layer at `info` (nothing
/// written for a good call), and at `debug` (two lines per call).
async fn per_call(args: &Args, scratch: &Path, cache: &Path) -> anyhow::Result<Value> {
    let runtime = Runtime::new(RuntimeOptions {
        cache: Some(cache.to_owned()),
        ..RuntimeOptions::default()
    })?;
    let component = runtime.load_file(&args.tools.join("showcase.wasm"))?;
    let signature = component.tool("echo").expect("showcase has echo").clone();
    let arguments = json!({"message": "hello"}).as_object().cloned();
    let iterations = ((20_000.0 * args.scale) as usize).max(1000);
    let mut rows = Vec::new();
    for (label, level) in [
        ("no subscriber", None),
        ("json, info", Some("info")),
        ("json, debug", Some("debug")),
    ] {
        let file = std::fs::File::create(scratch.join("per-call.jsonl"))?;
        let (layer, _log) = LineLayer::batched(Box::new(BufWriter::new(file)), LogFormat::Json);
        let dispatch = match level {
            None => tracing::Dispatch::none(),
            Some(level) => tracing::Dispatch::new(
                tracing_subscriber::registry()
                    .with(tracing_subscriber::EnvFilter::new(level))
                    .with(layer),
            ),
        };
        let _default = tracing::dispatcher::set_default(&dispatch);
        let cancel = CancellationToken::new();
        let mut times = Vec::with_capacity(iterations);
        for i in 0..iterations + iterations / 10 {
            let started = Instant::now();
            let outcome = invoke(
                &runtime,
                &component,
                &signature,
                arguments.as_ref(),
                &cancel,
                None,
            )
            .await;
            anyhow::ensure!(!outcome.is_error, "echo failed");
            if i >= iterations / 10 {
                times.push(started.elapsed());
            }
        }
        times.sort();
        let p50 = times[times.len() / 2].as_secs_f64() * 1e6;
        eprintln!("  in-host echo via invoke, {label:14}: p50 {p50:6.1} µs");
        rows.push(json!({"logging": label, "p50_us": p50}));
    }
    Ok(Value::Array(rows))
}
