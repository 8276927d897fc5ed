//! OpenTelemetry export (cargo feature `otlp`, flag `--otlp-endpoint`): one span
//! per tool call, in the client's trace when it sent a `traceparent`, posted as
//! OTLP/HTTP JSON to `ENDPOINT/v1/traces` in batches.
//!
//! Export never slows a call: spans go into a bounded queue drained by one
//! background thread; when the queue is full, spans are dropped and counted.
//! Plain `http://` collectors only (no TLS client is linked in).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::trace::TraceContext;

/// One finished tool call.
#[derive(Debug, Clone)]
pub struct CallSpan {
    pub trace: TraceContext,
    pub name: String,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(&'static str, String)>,
    pub error: bool,
}

struct Exporter {
    queue: SyncSender<CallSpan>,
    dropped: AtomicU64,
}

static EXPORTER: OnceLock<Exporter> = OnceLock::new();

const QUEUE: usize = 4096;
const BATCH: usize = 256;
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Start exporting to `endpoint` (e.g. `http://127.0.0.1:4318`).
pub fn start(endpoint: &str) -> Result<(), String> {
    let endpoint = endpoint.trim_end_matches('/');
    if !endpoint.starts_with("http://") {
        return Err(format!(
            "--otlp-endpoint {endpoint}: only http:// collectors are supported (run a local collector and let it forward over TLS)"
        ));
    }
    let url = format!("{endpoint}/v1/traces");
    let (queue, spans) = sync_channel(QUEUE);
    EXPORTER
        .set(Exporter {
            queue,
            dropped: AtomicU64::new(0),
        })
        .map_err(|_| "OTLP export is already running".to_string())?;
    std::thread::Builder::new()
        .name("mcpplus-otlp".into())
        .spawn(move || export_loop(&url, spans))
        .map_err(|e| e.to_string())?;
    tracing::info!(event = "otlp.started", url = %format!("{endpoint}/v1/traces"), "exporting call spans");
    Ok(())
}

/// Queue a span for export (no-op when export is off).
pub fn record(span: CallSpan) {
    if let Some(exporter) = EXPORTER.get()
        && let Err(TrySendError::Full(_)) = exporter.queue.try_send(span)
    {
        exporter.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

pub fn enabled() -> bool {
    EXPORTER.get().is_some()
}

fn export_loop(url: &str, spans: Receiver<CallSpan>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut batch = Vec::new();
    let mut last_flush = Instant::now();
    loop {
        match spans.recv_timeout(FLUSH_EVERY) {
            Ok(span) => batch.push(span),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if !batch.is_empty() && (batch.len() >= BATCH || last_flush.elapsed() >= FLUSH_EVERY) {
            let body = encode(&batch).to_string();
            if let Err(e) = agent
                .post(url)
                .header("content-type", "application/json")
                .send(body.as_str())
            {
                tracing::warn!(event = "otlp.failed", error = %e, spans = batch.len(), "could not export spans");
            }
            batch.clear();
            last_flush = Instant::now();
        }
    }
}

fn nanos(t: SystemTime) -> String {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
        .to_string()
}

/// The OTLP/HTTP JSON body for `spans`.
pub fn encode(spans: &[CallSpan]) -> Value {
    let spans: Vec<Value> = spans
        .iter()
        .map(|s| {
            let mut span = json!({
                "traceId": s.trace.trace_id_hex(),
                "spanId": s.trace.span_id_hex(),
                "name": s.name,
                "kind": 2,
                "startTimeUnixNano": nanos(s.start),
                "endTimeUnixNano": nanos(s.end),
                "attributes": s.attributes.iter().map(|(k, v)| json!({"key": k, "value": {"stringValue": v}})).collect::<Vec<_>>(),
                "status": {"code": if s.error { 2 } else { 1 }},
            });
            if let Some(parent) = s.trace.parent_span_id {
                span["parentSpanId"] = json!(format!("{parent:016x}"));
            }
            span
        })
        .collect();
    json!({"resourceSpans": [{
        "resource": {"attributes": [
            {"key": "service.name", "value": {"stringValue": "mcpplus"}},
            {"key": "service.version", "value": {"stringValue": env!("CARGO_PKG_VERSION")}},
        ]},
        "scopeSpans": [{"scope": {"name": "mcpplus"}, "spans": spans}],
    }]})
}
