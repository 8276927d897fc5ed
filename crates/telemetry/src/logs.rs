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

use super::json_line::{
    EventFields, RenderVisitor, Rendered, join_fields, masked, write_line_end, write_line_start,
    write_span_fields,
};

/// Bumped when a field is renamed or removed (adding fields keeps the version).
pub const LOG_SCHEMA: u64 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where lines go. A file is buffered and flushed every 100 ms and on exit.
type Sink = Arc<Mutex<Box<dyn Write + Send>>>;

/// A thread's batch is handed to the sink once it holds this many bytes.
pub const BATCH_BYTES: usize = 64 * 1024;
/// ... and at the latest after this long (the flusher's period).
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// The sink, and for a batched layer (log files) each thread's lines not yet
/// handed to it.
///
/// Batching: a thread renders its lines straight into its own batch (a lock
/// only the flusher ever contends), which goes to the sink whole once it holds
/// [`BATCH_BYTES`], on every tick of the flusher ([`FLUSH_EVERY`]), on
/// [`LogHandle::flush`], and when the guard or the last handle is dropped. A
/// batch is taken under the sink's lock, so one thread's lines reach the sink in
/// the order it wrote them, and whole lines only. Lines of threads that have
/// exited are written by the next flush, which then forgets their batch.
struct Output {
    sink: Sink,
    batches: Option<Batches>,
}

struct Batches {
    /// Which output a thread's cached batch belongs to.
    id: u64,
    /// Every thread's batch, to flush them all (one per live thread, plus
    /// exited threads' until the next flush).
    threads: Mutex<Vec<Arc<Mutex<String>>>>,
    /// The buffer a batch is swapped with while it is written (locked with the sink).
    spare: Mutex<String>,
}

/// A thread's batch for one output: the output's id, the output, the batch.
type ThreadBatch = (u64, std::sync::Weak<Output>, Arc<Mutex<String>>);

fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Output {
    fn new(sink: Sink, batched: bool) -> Arc<Self> {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Arc::new(Self {
            sink,
            batches: batched.then(|| Batches {
                id: NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
                threads: Mutex::new(Vec::new()),
                spare: Mutex::new(String::new()),
            }),
        })
    }

    /// Write one line rendered by `render`: into this thread's batch, or (not
    /// batched) straight to the sink.
    fn write_line(self: &Arc<Self>, render: impl FnOnce(&mut String)) {
        thread_local! {
            static LINE: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
            /// This thread's batch for each batched output (normally one).
            static BATCHES: std::cell::RefCell<Vec<ThreadBatch>> =
                const { std::cell::RefCell::new(Vec::new()) };
        }
        let Some(batches) = &self.batches else {
            LINE.with(|line| {
                let mut line = line.borrow_mut();
                line.clear();
                render(&mut line);
                let _ = lock(&self.sink).write_all(line.as_bytes());
                if line.capacity() > BATCH_BYTES {
                    *line = String::new();
                }
            });
            return;
        };
        BATCHES.with(|cached| {
            let mut cached = cached.borrow_mut();
            let index = match cached.iter().position(|(id, _, _)| *id == batches.id) {
                Some(i) => i,
                None => {
                    // Forget batches of outputs that are gone (their lines were
                    // flushed when they were dropped).
                    cached.retain(|(_, output, _)| output.strong_count() > 0);
                    let batch = Arc::new(Mutex::new(String::new()));
                    lock(&batches.threads).push(batch.clone());
                    cached.push((batches.id, Arc::downgrade(self), batch));
                    cached.len() - 1
                }
            };
            let batch = &cached[index].2;
            let mut lines = lock(batch);
            render(&mut lines);
            let full = lines.len() >= BATCH_BYTES;
            drop(lines);
            if full {
                let mut sink = lock(&self.sink);
                self.hand_over(&mut sink, batch);
            }
        });
    }

    /// Write `batch` to the sink (whose lock the caller holds).
    fn hand_over(&self, sink: &mut Box<dyn Write + Send>, batch: &Mutex<String>) {
        let Some(batches) = &self.batches else {
            return;
        };
        let mut spare = lock(&batches.spare);
        std::mem::swap(&mut *lock(batch), &mut *spare);
        if !spare.is_empty() {
            let _ = sink.write_all(spare.as_bytes());
        }
        spare.clear();
        if spare.capacity() > 4 * BATCH_BYTES {
            *spare = String::new();
        }
    }

    /// Every thread's batch to the sink, then the sink to its file.
    fn flush(&self) {
        let mut sink = lock(&self.sink);
        if let Some(batches) = &self.batches {
            let mut threads = lock(&batches.threads);
            for batch in threads.iter() {
                self.hand_over(&mut sink, batch);
            }
            // A thread that exited left its batch to the list only: write what
            // it added since it was handed over above, and forget it.
            threads.retain(|batch| {
                if Arc::strong_count(batch) > 1 {
                    return true;
                }
                // Pairs with the release of the thread's dropped reference.
                std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
                self.hand_over(&mut sink, batch);
                false
            });
        }
        let _ = sink.flush();
    }
}

impl Drop for Output {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Flushes a layer's lines (all threads' batches) to its writer.
#[derive(Clone)]
pub struct LogHandle(Arc<Output>);

impl LogHandle {
    /// Hand every thread's pending lines to the writer and flush it.
    pub fn flush(&self) {
        self.0.flush();
    }
}

/// Flushes the log when dropped (keep it for the life of the process).
pub struct LogGuard {
    output: Arc<Output>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.output.flush();
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
    // A file is written in per-thread batches; stderr line by line, as it is
    // shared with panics and other writers and must show a line at once.
    let output = Output::new(sink, file.is_some());
    if file.is_some() {
        spawn_flusher(Arc::downgrade(&output), stop.clone());
    }
    let layer = LineLayer {
        output: output.clone(),
        format,
    };
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init();
    Ok(LogGuard { output, stop })
}

/// Flush `output` every [`FLUSH_EVERY`] until `stop` or until it is dropped.
fn spawn_flusher(output: std::sync::Weak<Output>, stop: Arc<std::sync::atomic::AtomicBool>) {
    let _ = std::thread::Builder::new()
        .name("mcpplus-log-flush".into())
        .spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(FLUSH_EVERY);
                match output.upgrade() {
                    Some(output) => output.flush(),
                    None => return,
                }
            }
        });
}

/// Formats events as lines and writes them to the sink.
pub struct LineLayer {
    output: Arc<Output>,
    format: LogFormat,
}

impl LineLayer {
    /// A layer writing each line to any `Write` as it is logged (tests).
    pub fn new(writer: Box<dyn Write + Send>, format: LogFormat) -> (Self, Sink) {
        let sink: Sink = Arc::new(Mutex::new(writer));
        (
            Self {
                output: Output::new(sink.clone(), false),
                format,
            },
            sink,
        )
    }

    /// A layer writing to `writer` in per-thread batches, as `--log-file` does:
    /// a thread's lines go to the writer once they fill [`BATCH_BYTES`], every
    /// [`FLUSH_EVERY`] (the writer is flushed then too), on [`LogHandle::flush`],
    /// and when the layer and the handle are dropped.
    pub fn batched(writer: Box<dyn Write + Send>, format: LogFormat) -> (Self, LogHandle) {
        let output = Output::new(Arc::new(Mutex::new(writer)), true);
        spawn_flusher(
            Arc::downgrade(&output),
            Arc::new(std::sync::atomic::AtomicBool::new(false)),
        );
        (
            Self {
                output: output.clone(),
                format,
            },
            LogHandle(output),
        )
    }
}

/// The fields recorded on a span, kept in its extensions: as values (for text
/// lines) and pre-rendered as JSON (for JSON lines), also joined into the text
/// a line carries when no event field overrides them.
struct SpanFields {
    map: Map<String, Value>,
    rendered: Vec<Rendered>,
    joined: String,
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
                joined: join_fields(&rendered.fields),
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
            fields.joined = join_fields(&fields.rendered);
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
        self.output.write_line(|buf| buf.push_str(&text));
    }
}

impl LineLayer {
    /// The JSON hot path: the event's fields into a reused per-thread text,
    /// then the line straight into this thread's batch (or line buffer).
    fn write_json<S>(&self, event: &Event<'_>, ctx: &Context<'_, S>)
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        thread_local! {
            static FIELDS: std::cell::RefCell<EventFields> = std::cell::RefCell::new(EventFields::default());
        }
        let write = |fields: &EventFields| {
            let default_event = if event.metadata().target() == "guest" {
                "guest.output"
            } else {
                "log"
            };
            let level = level_name(*event.metadata().level());
            self.output.write_line(|line| {
                write_line_start(line, push_rfc3339_now, level);
                if let Some(scope) = ctx.event_scope(event) {
                    for span in scope.from_root() {
                        if let Some(f) = span.extensions().get::<SpanFields>() {
                            write_span_fields(line, &f.rendered, &f.joined, fields);
                        }
                    }
                }
                write_line_end(line, fields, default_event, LOG_SCHEMA);
            });
        };
        FIELDS.with(|cell| match cell.try_borrow_mut() {
            Ok(mut fields) => {
                fields.clear();
                event.record(&mut *fields);
                write(&fields);
                fields.trim();
            }
            // Logging from inside a field's formatting: a fresh one.
            Err(_) => {
                let mut fields = EventFields::default();
                event.record(&mut fields);
                write(&fields);
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
    let mut out = String::with_capacity(27);
    push_rfc3339_now(&mut out);
    out
}

/// Append now as [`rfc3339_now`] gives it.
pub fn push_rfc3339_now(out: &mut String) {
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
        out.push_str(&cached.1);
    });
    let micros = now.subsec_micros();
    let mut digits = *b".000000Z";
    for (i, div) in [100_000, 10_000, 1000, 100, 10, 1].into_iter().enumerate() {
        digits[i + 1] = b'0' + (micros / div % 10) as u8;
    }
    // ASCII only.
    out.push_str(std::str::from_utf8(&digits).unwrap_or(".000000Z"));
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

    /// A `Write` into a shared vector, counting flushes.
    #[derive(Clone, Default)]
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
    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    /// The line the layer wrote before the hot path was reworked: `RenderVisitor`
    /// and `write_line`, kept here as the reference the new path must match.
    struct Reference(Shared);
    impl<S> Layer<S> for Reference
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
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
            let mut line = String::new();
            super::super::json_line::write_line(
                &mut line,
                "TS",
                level_name(*event.metadata().level()),
                &visitor.fields,
                &span_fields,
                default_event,
                LOG_SCHEMA,
            );
            let _ = self.0.clone().write_all(line.as_bytes());
        }
    }

    #[derive(Debug)]
    #[allow(dead_code)]
    struct Dump(&'static str);

    #[test]
    fn the_hot_path_writes_what_the_reference_writer_wrote() {
        crate::redact::register_secrets(["granted-secret-value"]);
        let ours = Shared::default();
        let reference = Shared::default();
        let (layer, _) = LineLayer::new(Box::new(ours.clone()), LogFormat::Json);
        let subscriber = tracing_subscriber::registry()
            .with(layer)
            .with(Reference(reference.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!("outside any span");
            let request = tracing::info_span!("request", request_id = "3", client = "mcp");
            let _r = request.enter();
            let call = tracing::info_span!(
                "call",
                call_id = 7u64,
                tool = "echo",
                digest = tracing::field::Empty
            );
            call.record("digest", "abc");
            let _c = call.enter();
            tracing::info!(
                event = "guest.log",
                n = 1u64,
                fields_json = "{\"k\":\"v\"}",
                "counted"
            );
            tracing::warn!(
                call_id = 8u64,
                i = -12i64,
                big = i64::MIN,
                f = 1.5f64,
                nan = f64::NAN,
                ok = true,
                "override"
            );
            tracing::debug!(tool = "other", request_id = "x", "both spans overridden");
            tracing::error!(
                error = &std::io::Error::other("Bearer abcdefghijklmnop")
                    as &(dyn std::error::Error + 'static),
                "failed"
            );
            tracing::info!(dump = ?Dump("sk-abcdefghijklmnopqrstuv"), plain = ?Dump("nothing"), "debug values");
            tracing::info!(target: "guest", "printed granted-secret-value and \"quotes\"\n\u{1}");
            tracing::info!(fields_json = ?"{}", "rendered by debug");
            tracing::info!(u = u64::MAX, z = 0u64, "numbers");
        });
        let strip = |text: String| -> Vec<String> {
            text.lines()
                .map(|l| {
                    let rest = &l["{\"ts\":\"".len()..];
                    rest[rest.find('"').unwrap()..].to_string()
                })
                .collect()
        };
        let (ours, reference) = (strip(ours.text()), strip(reference.text()));
        assert_eq!(ours.len(), 9);
        assert_eq!(ours, reference);
        assert!(ours.iter().all(|l| !l.contains("granted-secret-value")));
    }

    /// Emit `per_thread` numbered lines from each of `threads` threads.
    fn emit_from_threads(threads: usize, per_thread: usize) {
        std::thread::scope(|scope| {
            for t in 0..threads {
                let dispatch = tracing::dispatcher::get_default(Clone::clone);
                scope.spawn(move || {
                    tracing::dispatcher::with_default(&dispatch, || {
                        let span = tracing::info_span!("call", call_id = t as u64, tool = "echo");
                        let _e = span.enter();
                        for n in 0..per_thread {
                            tracing::info!(
                                event = "guest.log",
                                thread = t as u64,
                                n = n as u64,
                                "line {n} of thread {t}"
                            );
                        }
                    });
                });
            }
        });
    }

    #[test]
    fn batched_lines_are_all_written_whole_and_in_order() {
        let (threads, per_thread) = (8, 5_000);
        let out = Shared::default();
        let (layer, handle) = LineLayer::batched(Box::new(out.clone()), LogFormat::Json);
        let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
        tracing::dispatcher::with_default(&dispatch, || emit_from_threads(threads, per_thread));
        // The threads have exited: their batches are written by the flush.
        handle.flush();
        let text = out.text();
        let mut next = vec![0u64; threads];
        let mut count = 0;
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).expect("a whole JSON line");
            let t = v["thread"].as_u64().unwrap() as usize;
            assert_eq!(v["n"], next[t], "thread {t} out of order");
            assert_eq!(v["call_id"], t as u64);
            next[t] += 1;
            count += 1;
        }
        assert_eq!(count, threads * per_thread);
        assert!(next.iter().all(|&n| n == per_thread as u64));
        // Nothing is written twice by a second flush.
        handle.flush();
        assert_eq!(out.text().len(), text.len());
    }

    #[test]
    fn batched_lines_reach_the_file_on_flush_on_the_timer_and_at_the_bound() {
        let path = std::env::temp_dir().join(format!(
            "mcpplus-telemetry-batch-{}.jsonl",
            std::process::id()
        ));
        let file = std::fs::File::create(&path).unwrap();
        let writer = std::io::BufWriter::with_capacity(1 << 16, file);
        let (layer, handle) = LineLayer::batched(Box::new(writer), LogFormat::Json);
        let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(layer));
        let read_lines = || std::fs::read_to_string(&path).unwrap().lines().count();
        let _default = tracing::dispatcher::set_default(&dispatch);
        // An explicit flush writes a line at once.
        tracing::info!(event = "first", "one");
        handle.flush();
        assert_eq!(read_lines(), 1);
        // The flusher writes it within its period.
        tracing::info!(event = "second", "two");
        let deadline = std::time::Instant::now() + FLUSH_EVERY * 20;
        while read_lines() < 2 {
            assert!(std::time::Instant::now() < deadline, "not flushed in time");
            std::thread::sleep(FLUSH_EVERY / 10);
        }
        // A thread keeps at most a batch of lines from the writer, flusher or not.
        #[derive(Clone, Default)]
        struct Counting(Arc<[std::sync::atomic::AtomicUsize; 2]>);
        impl Write for Counting {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                let lines = b.iter().filter(|&&c| c == b'\n').count();
                self.0[0].fetch_add(b.len(), std::sync::atomic::Ordering::SeqCst);
                self.0[1].fetch_add(lines, std::sync::atomic::Ordering::SeqCst);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let counting = Counting::default();
        let (layer, _handle) = LineLayer::batched(Box::new(counting.clone()), LogFormat::Json);
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            let message = "x".repeat(100);
            for emitted in 1..=3 * BATCH_BYTES / 100 {
                tracing::info!("{message}");
                let bytes = counting.0[0].load(std::sync::atomic::Ordering::SeqCst);
                let lines = counting.0[1].load(std::sync::atomic::Ordering::SeqCst);
                let pending = emitted - lines;
                assert!(
                    pending * 100 <= BATCH_BYTES + bytes / lines.max(1),
                    "{pending} lines kept"
                );
            }
            assert!(counting.0[1].load(std::sync::atomic::Ordering::SeqCst) > 0);
        });
        // Dropping the layer and its handle writes the rest.
        drop(_default);
        drop(dispatch);
        tracing::subscriber::with_default(tracing_subscriber::registry(), || {});
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn dropping_a_batched_layer_writes_its_lines() {
        let out = Shared::default();
        let (layer, handle) = LineLayer::batched(Box::new(out.clone()), LogFormat::Json);
        drop(handle);
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            tracing::info!("kept until the layer is dropped");
        });
        assert_eq!(out.text().lines().count(), 1);
    }
}
