//! Host logging: one line per event, JSON (schema in docs/log-schema.md, version
//! [`LOG_SCHEMA`]) or text, to stderr or a file (never stdout, which may carry
//! the protocol).
//!
//! Context fields (request id, call id, tool, component, digest, client, trace
//! id, span id) are recorded once on the call's span and copied into every line
//! written inside it, so guest logs, capability denials and limit events all
//! carry them without repeating them at each call site. Every string is passed
//! through [`super::redact`] before it is written.

use std::io::{LineWriter, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::LookupSpan;

use super::json_line::{RenderVisitor, Rendered, masked, write_line};

/// Bumped when a field is renamed or removed (adding fields keeps the version).
pub const LOG_SCHEMA: u64 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where lines go. A file is buffered and flushed every 100 ms and on exit.
type Sink = Arc<Mutex<Box<dyn Write + Send>>>;

/// Flushes the log when dropped (keep it for the life of the process).
pub struct LogGuard {
    sink: Sink,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Ok(mut s) = self.sink.lock() {
            let _ = s.flush();
        }
    }
}

/// Install the process-wide subscriber. `filter` is an `EnvFilter` directive
/// (`info`, `mcpplus=debug,guest=warn`); `file` appends to a file instead of stderr.
pub fn init(
    filter: &str,
    format: Option<LogFormat>,
    file: Option<&Path>,
) -> std::io::Result<LogGuard> {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("warning: ignoring invalid log filter `{filter}` ({e}); using `info`");
        EnvFilter::new("info")
    });
    let (sink, terminal): (Sink, bool) = match file {
        Some(path) => {
            use std::os::unix::fs::OpenOptionsExt as _;
            // Logs can name paths, tools and clients: readable by the operator only.
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(path)?;
            (
                Arc::new(Mutex::new(Box::new(std::io::BufWriter::with_capacity(
                    1 << 16,
                    f,
                )))),
                false,
            )
        }
        None => {
            use std::io::IsTerminal as _;
            let terminal = std::io::stderr().is_terminal();
            (
                Arc::new(Mutex::new(Box::new(LineWriter::new(std::io::stderr())))),
                terminal,
            )
        }
    };
    let format = format.unwrap_or(if terminal {
        LogFormat::Text
    } else {
        LogFormat::Json
    });
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if file.is_some() {
        spawn_flusher(sink.clone(), stop.clone());
    }
    let layer = LineLayer {
        sink: sink.clone(),
        format,
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init();
    Ok(LogGuard { sink, stop })
}

fn spawn_flusher(sink: Sink, stop: Arc<std::sync::atomic::AtomicBool>) {
    let _ = std::thread::Builder::new()
        .name("mcpplus-log-flush".into())
        .spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
                if let Ok(mut s) = sink.lock() {
                    let _ = s.flush();
                }
            }
        });
}

/// Formats events as lines and writes them to the sink.
pub struct LineLayer {
    sink: Sink,
    format: LogFormat,
}

impl LineLayer {
    /// A layer writing to any `Write` (benchmarks and tests).
    pub fn new(writer: Box<dyn Write + Send>, format: LogFormat) -> (Self, Sink) {
        let sink: Sink = Arc::new(Mutex::new(writer));
        (
            Self {
                sink: sink.clone(),
                format,
            },
            sink,
        )
    }
}

/// The fields recorded on a span, kept in its extensions: as values (for text
/// lines) and pre-rendered as JSON (for JSON lines).
struct SpanFields {
    map: Map<String, Value>,
    rendered: Vec<Rendered>,
}

impl<S> Layer<S> for LineLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut map = Map::new();
        attrs.record(&mut JsonVisitor(&mut map));
        let mut rendered = RenderVisitor::default();
        attrs.record(&mut rendered);
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(SpanFields {
                map,
                rendered: rendered.fields,
            });
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(fields) = span.extensions_mut().get_mut::<SpanFields>()
        {
            values.record(&mut JsonVisitor(&mut fields.map));
            let mut rendered = RenderVisitor::default();
            values.record(&mut rendered);
            for (name, value) in rendered.fields {
                fields.rendered.retain(|(n, _)| *n != name);
                fields.rendered.push((name, value));
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if self.format == LogFormat::Json {
            self.write_json(event, &ctx);
            return;
        }
        let mut line = Map::new();
        line.insert("ts".into(), Value::String(rfc3339_now()));
        line.insert(
            "level".into(),
            Value::String(level_name(*event.metadata().level()).into()),
        );
        // Context from the enclosing spans, outermost first.
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(fields) = span.extensions().get::<SpanFields>() {
                    for (k, v) in &fields.map {
                        line.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        let mut fields = Map::new();
        event.record(&mut JsonVisitor(&mut fields));
        if !fields.contains_key("event") {
            // Events without a name are named for where they come from.
            let target = event.metadata().target();
            let name = if target == "guest" {
                "guest.output"
            } else {
                "log"
            };
            line.insert("event".into(), Value::String(name.into()));
        }
        line.extend(fields);
        // A guest's key-value fields arrive as one JSON text; log them as an object.
        if let Some(Value::String(text)) = line.remove("fields_json")
            && let Ok(object @ Value::Object(_)) = serde_json::from_str::<Value>(&text)
        {
            line.insert("fields".into(), object);
        }
        if !line.contains_key("message") {
            line.insert("message".into(), Value::String(String::new()));
        }
        mask_in_place(&mut line);
        let text = text_line(&line);
        if let Ok(mut sink) = self.sink.lock() {
            let _ = sink.write_all(text.as_bytes());
        }
    }
}

impl LineLayer {
    /// The JSON hot path: render straight into a reused per-thread buffer.
    fn write_json<S>(&self, event: &Event<'_>, ctx: &Context<'_, S>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        thread_local! {
            static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        let mut visitor = RenderVisitor::default();
        event.record(&mut visitor);
        let spans: Vec<_> = ctx
            .event_scope(event)
            .map(|scope| scope.from_root().collect())
            .unwrap_or_default();
        let extensions: Vec<_> = spans.iter().map(|s| s.extensions()).collect();
        let span_fields: Vec<&[Rendered]> = extensions
            .iter()
            .filter_map(|e| e.get::<SpanFields>().map(|f| f.rendered.as_slice()))
            .collect();
        let default_event = if event.metadata().target() == "guest" {
            "guest.output"
        } else {
            "log"
        };
        LINE.with(|line| {
            let mut line = line.borrow_mut();
            line.clear();
            write_line(
                &mut line,
                &rfc3339_now(),
                level_name(*event.metadata().level()),
                &visitor.fields,
                &span_fields,
                default_event,
                LOG_SCHEMA,
            );
            if let Ok(mut sink) = self.sink.lock() {
                let _ = sink.write_all(line.as_bytes());
            }
        });
    }
}

fn mask_in_place(line: &mut Map<String, Value>) {
    for v in line.values_mut() {
        mask_value(v);
    }
}

fn mask_value(v: &mut Value) {
    match v {
        Value::String(s) => {
            if let std::borrow::Cow::Owned(m) = masked(s) {
                *s = m;
            }
        }
        Value::Object(map) => map.values_mut().for_each(mask_value),
        Value::Array(items) => items.iter_mut().for_each(mask_value),
        _ => {}
    }
}

/// One text line. Values a guest or client chose can hold newlines, escape
/// sequences and other control characters: they are escaped (`\n`, `\u{1b}`),
/// so one event is always one line and cannot forge another or drive a terminal.
fn text_line(line: &Map<String, Value>) -> String {
    let get = |k: &str| line.get(k).and_then(Value::as_str).unwrap_or("");
    let mut out = format!(
        "{} {:>5} {} {}",
        get("ts"),
        get("level").to_uppercase(),
        escape_controls(get("event")),
        escape_controls(get("message"))
    );
    for (k, v) in line {
        if matches!(k.as_str(), "ts" | "level" | "event" | "message") {
            continue;
        }
        match v {
            Value::String(s) => out.push_str(&format!(" {k}={}", escape_controls(s))),
            other => out.push_str(&format!(" {k}={}", escape_controls(&other.to_string()))),
        }
    }
    out.push('\n');
    out
}

fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    std::borrow::Cow::Owned(
        text.chars()
            .map(|c| match c {
                '\n' => "\\n".to_string(),
                '\r' => "\\r".to_string(),
                '\t' => "\\t".to_string(),
                c if c.is_control() => c.escape_unicode().to_string(),
                c => c.to_string(),
            })
            .collect(),
    )
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

struct JsonVisitor<'a>(&'a mut Map<String, Value>);

impl Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().into(), Value::String(value.into()));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), Value::from(value));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .insert(field.name().into(), Value::String(value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().into(), Value::String(format!("{value:?}")));
    }
}

/// Now as RFC 3339 UTC with microseconds: `2026-11-21T18:28:36.581051Z`.
pub fn rfc3339_now() -> String {
    thread_local! {
        /// The date and time to the second, reused while the second lasts.
        static SECOND: std::cell::RefCell<(u64, String)> =
            const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    SECOND.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != now.as_secs() {
            *cached = (now.as_secs(), date_time(now.as_secs()));
        }
        format!("{}.{:06}Z", cached.1, now.subsec_micros())
    })
}

/// RFC 3339 (UTC, milliseconds) for milliseconds since the Unix epoch.
pub fn rfc3339_ms(ms: i64) -> String {
    let ms = ms.max(0) as u64;
    format!("{}.{:03}Z", date_time(ms / 1000), ms % 1000)
}

/// `YYYY-MM-DDTHH:MM:SS` for seconds since the epoch (UTC).
fn date_time(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {

    #[test]
    fn text_lines_escape_control_characters() {
        let mut line = Map::new();
        line.insert("ts".into(), Value::from("t"));
        line.insert("level".into(), Value::from("info"));
        line.insert("event".into(), Value::from("guest.log"));
        line.insert(
            "message".into(),
            Value::from("a\nFAKE  INFO forged\u{1b}[31m"),
        );
        line.insert("field".into(), Value::from("x\ry"));
        let text = text_line(&line);
        assert_eq!(text.matches('\n').count(), 1, "{text}");
        assert!(text.ends_with('\n'));
        assert!(
            text.contains("a\\nFAKE") && text.contains("\\u{1b}[31m") && text.contains("x\\ry"),
            "{text}"
        );
    }

    use super::*;

    #[test]
    fn lines_carry_span_context_and_schema() {
        let buffer = Arc::new(Mutex::new(Vec::<u8>::new()));
        struct Shared(Arc<Mutex<Vec<u8>>>);
        impl Write for Shared {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let (layer, _) = LineLayer::new(Box::new(Shared(buffer.clone())), LogFormat::Json);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("call", call_id = 7u64, tool = "echo");
            let _e = span.enter();
            tracing::info!(
                event = "tool.completed",
                elapsed_ms = 3u64,
                "call completed"
            );
            tracing::warn!("no name");
            tracing::info!("header was Bearer abcdefghijklmnop, quote \" and newline \n");
        });
        let text = String::from_utf8(buffer.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["event"], "tool.completed");
        assert_eq!(lines[0]["call_id"], 7);
        assert_eq!(lines[0]["tool"], "echo");
        assert_eq!(lines[0]["elapsed_ms"], 3);
        assert_eq!(lines[0]["message"], "call completed");
        assert_eq!(lines[0]["schema"], LOG_SCHEMA);
        assert_eq!(lines[0]["level"], "info");
        assert_eq!(lines[1]["event"], "log");
        assert_eq!(
            lines[2]["message"],
            "header was Bearer [redacted], quote \" and newline \n"
        );
        assert!(lines[0]["ts"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn timestamps_are_rfc3339() {
        let ts = rfc3339_now();
        assert_eq!(ts.len(), "2026-11-21T18:28:36.581051Z".len(), "{ts}");
        assert!(ts.starts_with("20"), "{ts}");
    }
}
