//! Log throughput without the benchmark suite's build: the loop of
//! bench/src/logging.rs (JSON lines to a file inside a call span), through
//! `LineLayer::batched` and tracing-subscriber's stock JSON formatter.
//! `cargo run --release -p mcpplus-telemetry --example log_throughput [EVENTS] [ours|stock|both]`;
//! built in a minute, it is what docs/performance.md's profile was taken on.
use std::io::BufWriter;
use std::time::Instant;

use mcpplus_telemetry::logs::{LineLayer, LogFormat};
use tracing_subscriber::prelude::*;

fn main() {
    let events: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let which = std::env::args().nth(2).unwrap_or_else(|| "both".into());
    let path = std::env::temp_dir().join("fl-throughput.jsonl");
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
    if which != "stock" {
        let file = std::fs::File::create(&path).unwrap();
        let (layer, handle) = LineLayer::batched(
            Box::new(BufWriter::with_capacity(1 << 16, file)),
            LogFormat::Json,
        );
        let e = tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), emit);
        handle.flush();
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert_eq!(lines, events);
        println!("ours  {:.0}/s", events as f64 / e.as_secs_f64());
    }
    if which != "ours" {
        let file = std::fs::File::create(&path).unwrap();
        let writer = std::sync::Mutex::new(BufWriter::with_capacity(1 << 16, file));
        let sub = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(writer)
            .finish();
        let e = tracing::subscriber::with_default(sub, emit);
        println!("stock {:.0}/s", events as f64 / e.as_secs_f64());
    }
}
