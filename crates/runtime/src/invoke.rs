//! One tool call from JSON arguments to a protocol-neutral outcome: convert the
//! arguments, run the export, and present the result (structured value + text,
//! MCP content blocks, or a tool error). Used by the MCP adapter and `mcpplus call`.

use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;
use wasmtime::component::Val;

use crate::call::{CallError, call_tool};
use crate::observer::CallObserver;
use crate::{LoadedComponent, Runtime};
use mcpplus_schema::signature::{is_content, structured_output};
use mcpplus_schema::{ResultShape, ToolSignature, WitType, arguments_to_values, from_value};
use mcpplus_telemetry::metrics::metrics;
use mcpplus_telemetry::redact::redact_arguments;

/// What a tool call produced, ready to become an MCP `CallToolResult`.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutcome {
    /// MCP content blocks (JSON objects with a `type`).
    pub content: Vec<Value>,
    /// `structuredContent`, present exactly when the tool declares an `outputSchema`
    /// and succeeded.
    pub structured: Option<Value>,
    pub is_error: bool,
}

impl ToolOutcome {
    /// Bytes of JSON this outcome sends (content + structured content).
    pub fn encoded_size(&self) -> usize {
        let json_len = |v: &Value| {
            let mut counter = ByteCounter(0);
            serde_json::to_writer(&mut counter, v).map_or(0, |()| counter.0)
        };
        self.content.iter().map(json_len).sum::<usize>()
            + self.structured.as_ref().map_or(0, json_len)
    }

    pub fn error(message: impl Into<String>) -> Self {
        Self {
            content: vec![text_block(message.into())],
            structured: None,
            is_error: true,
        }
    }
}

/// Counts what is written to it (sizes without building the bytes).
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Run `tool` with `arguments`. Every failure is a tool error the caller can read.
/// Counted in `mcpplus_tool_calls_total` and timed in
/// `mcpplus_tool_call_duration_seconds`.
pub async fn invoke(
    runtime: &Runtime,
    component: &LoadedComponent,
    tool: &ToolSignature,
    arguments: Option<&Map<String, Value>>,
    cancel: &CancellationToken,
    observer: Option<CallObserver>,
) -> ToolOutcome {
    invoke_labelled(runtime, component, tool, arguments, cancel, observer)
        .await
        .0
}

/// [`invoke`], also returning the outcome's label as counted in the metrics
/// (`ok`, `tool_error`, `invalid_arguments`, `trap`, `timeout`, …), for callers
/// that decide what to do next by it (the queue's retries).
pub async fn invoke_labelled(
    runtime: &Runtime,
    component: &LoadedComponent,
    tool: &ToolSignature,
    arguments: Option<&Map<String, Value>>,
    cancel: &CancellationToken,
    observer: Option<CallObserver>,
) -> (ToolOutcome, &'static str) {
    let started = std::time::Instant::now();
    let (outcome, label) = run(runtime, component, tool, arguments, cancel, observer).await;
    // Resolved only for a success: creating the `ok` series on a failed call
    // would list an outcome that never happened.
    let ok_series = (label == "ok")
        .then(|| component.ok_series(&tool.name))
        .flatten();
    match ok_series {
        Some(series) => {
            series.calls.inc();
            series.duration.observe(started.elapsed().as_secs_f64());
        }
        None => record_call(&tool.name, &component.name, label, started),
    }
    (outcome, label)
}

/// Count one call of `tool` (or a method such as `prompts/get`) and its
/// duration: `mcpplus_tool_calls_total`, `mcpplus_tool_call_duration_seconds`.
pub(crate) fn record_call(tool: &str, component: &str, outcome: &str, started: std::time::Instant) {
    let m = metrics();
    m.calls
        .get_or_create(&vec![
            ("tool", tool.to_string()),
            ("component", component.to_string()),
            ("outcome", outcome.to_string()),
        ])
        .inc();
    m.call_duration
        .get_or_create(&vec![("tool", tool.to_string())])
        .observe(started.elapsed().as_secs_f64());
}

/// The outcome label of a failed call.
pub(crate) fn outcome_label(e: &CallError) -> &'static str {
    match e {
        CallError::Timeout(_) => "timeout",
        CallError::Cancelled => "cancelled",
        CallError::MemoryLimit(_) => "memory_limit",
        CallError::Trap { .. } | CallError::UnknownTool(_) => "trap",
        CallError::Busy(_) => "busy",
        CallError::Refused(_) | CallError::Grant(_) => "refused",
        CallError::Unloaded(_) => "unloaded",
    }
}

async fn run(
    runtime: &Runtime,
    component: &LoadedComponent,
    tool: &ToolSignature,
    arguments: Option<&Map<String, Value>>,
    cancel: &CancellationToken,
    observer: Option<CallObserver>,
) -> (ToolOutcome, &'static str) {
    if tracing::enabled!(tracing::Level::DEBUG) {
        let shown = arguments.map_or(Value::Null, |a| redact_arguments(&Value::Object(a.clone())));
        tracing::debug!(event = "tool.invoked", arguments = %shown, "call started");
    }
    let args = match arguments_to_values(arguments, &tool.params) {
        Ok(args) => args,
        Err(e) => {
            return (
                ToolOutcome::error(format!("invalid arguments: {e}")),
                "invalid_arguments",
            );
        }
    };
    let limits = runtime.limits_for(component, &tool.name);
    let results = match call_tool(
        runtime, component, &tool.name, &limits, &args, cancel, observer,
    )
    .await
    {
        Ok(results) => results,
        Err(e) => return (ToolOutcome::error(e.to_string()), outcome_label(&e)),
    };
    let outcome = present(tool, results.first()).unwrap_or_else(|e| {
        ToolOutcome::error(format!("the tool returned a malformed value: {e}"))
    });
    let limit = limits.result_bytes;
    let size = outcome.encoded_size();
    if size > limit {
        tracing::warn!(event = "limit.exceeded", limit = "result", component = %component.name, tool = %tool.name,
            size_bytes = size, limit_bytes = limit, "result over the limit was withheld");
        return (
            ToolOutcome::error(format!(
                "the tool's result is {size} bytes, over its limit of {limit} bytes; ask for less, or raise result_kib for this tool"
            )),
            "result_too_large",
        );
    }
    let label = if outcome.is_error { "tool_error" } else { "ok" };
    (outcome, label)
}

fn present(tool: &ToolSignature, result: Option<&Val>) -> Result<ToolOutcome, String> {
    match (&tool.result, result) {
        (ResultShape::Nothing, _) => Ok(success(None, None)),
        (ResultShape::Value(ty), Some(v)) => success_value(ty, v),
        (ResultShape::Fallible { ok, err }, Some(Val::Result(r))) => match (r, ok, err) {
            (Ok(Some(v)), Some(ty), _) => success_value(ty, v),
            (Ok(None), None, _) => Ok(success(None, None)),
            (Err(Some(v)), _, Some(ty)) => Ok(ToolOutcome::error(render_text(&from_value(v, ty)?))),
            (Err(None), _, None) => Ok(ToolOutcome::error(
                "the tool reported an error without details",
            )),
            _ => Err(format!("result does not match the declared type: {r:?}")),
        },
        (_, other) => Err(format!("unexpected result {other:?}")),
    }
}

fn success_value(ty: &WitType, value: &Val) -> Result<ToolOutcome, String> {
    if is_content(ty) {
        let blocks = match from_value(value, ty)? {
            Value::Array(blocks) => blocks,
            block => vec![block],
        };
        return Ok(ToolOutcome {
            content: blocks,
            structured: None,
            is_error: false,
        });
    }
    let json = from_value(value, ty)?;
    let text = render_text(&json);
    Ok(success(Some(structured_output(ty, json)), Some(text)))
}

fn success(structured: Option<Value>, text: Option<String>) -> ToolOutcome {
    let text = text.unwrap_or_else(|| "done".into());
    ToolOutcome {
        content: vec![text_block(text)],
        structured,
        is_error: false,
    }
}

/// Strings as they are; anything else as compact JSON.
fn render_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn text_block(text: String) -> Value {
    json!({"type": "text", "text": text})
}
