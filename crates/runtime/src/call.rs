//! One tool call: a fresh `Store` from the component's `InstancePre`, limits armed,
//! the export called, guest output captured into the host log.
//!
//! Every way a guest can fail (trap, panic, missing import, deadline, cancellation,
//! memory limit) comes back as a [`CallError`] with a message meant for the caller;
//! none of them can take the host down.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use wasmtime::component::{ComponentExportIndex, Val};
use wasmtime::{Store, StoreLimitsBuilder, UpdateDeadline};

use super::engine::Runtime;
use super::host_state::{CapturedOutput, HostState, NodeServices};
use super::loaded::LoadedComponent;
use super::observer::CallObserver;
use crate::capabilities::{CallContext, ImportRefused};
use mcpplus_policy::config::CallLimits;
use mcpplus_telemetry::metrics::{GaugeGuard, metrics};

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("the tool did not finish within its time limit of {0:?} and was stopped")]
    Timeout(Duration),
    #[error("the call was cancelled by the client")]
    Cancelled,
    #[error("the tool exceeded its memory limit of {} MiB and was stopped", .0 >> 20)]
    MemoryLimit(usize),
    #[error("the tool crashed: {message}{}", stderr_suffix(.stderr))]
    Trap { message: String, stderr: String },
    #[error("unknown tool `{0}` in this component")]
    UnknownTool(String),
    #[error(transparent)]
    Busy(#[from] super::admission::Busy),
    /// The guest reached an import it may not use (refused by policy, or not
    /// offered by this host); the message says which and what to do.
    #[error("{0}")]
    Refused(String),
    #[error(
        "component `{0}` was unloaded while this call was running and its drain time ran out; call again if the tool is still listed"
    )]
    Unloaded(String),
    /// A grant could not be set up (e.g. a granted directory has disappeared).
    #[error("{0}")]
    Grant(String),
}

/// Call ids, unique within this process, for logs and audit events.
static NEXT_CALL_ID: AtomicU64 = AtomicU64::new(1);

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!("\nguest stderr:\n{stderr}")
    }
}

/// Core instances, memories and tables one call may create (a componentize-py
/// component needs a handful; runaway guests are stopped here).
const MAX_INSTANCES: usize = 100;

/// How a call gets its instance. Only benchmarks use anything but `Pre`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instantiation {
    /// From the component's `InstancePre` (imports resolved once, at load).
    Pre,
    /// Resolve imports through a fresh linker on every call (the slow baseline).
    Relink,
}

/// Call `tool` of `component` with `args` under `limits` (from
/// [`Runtime::limits_for`]); returns the export's results.
pub async fn call_tool(
    runtime: &Runtime,
    component: &LoadedComponent,
    tool: &str,
    limits: &CallLimits,
    args: &[Val],
    cancel: &CancellationToken,
    observer: Option<CallObserver>,
) -> Result<Vec<Val>, CallError> {
    call_tool_with(
        runtime,
        component,
        tool,
        limits,
        args,
        cancel,
        Instantiation::Pre,
        observer,
    )
    .await
}

/// [`call_tool`] with a choice of instantiation path (for benchmarks).
#[allow(clippy::too_many_arguments)]
pub async fn call_tool_with(
    runtime: &Runtime,
    component: &LoadedComponent,
    tool: &str,
    limits: &CallLimits,
    args: &[Val],
    cancel: &CancellationToken,
    how: Instantiation,
    observer: Option<CallObserver>,
) -> Result<Vec<Val>, CallError> {
    let export = component
        .export(tool)
        .ok_or_else(|| CallError::UnknownTool(tool.to_string()))?;
    let result_count = usize::from(
        component
            .tool(tool)
            .is_some_and(|t| t.result != mcpplus_schema::ResultShape::Nothing),
    );
    let target = Target {
        label: tool,
        export,
        result_count,
    };
    call_target(
        runtime, component, &target, limits, args, cancel, how, observer,
    )
    .await
}

/// What a call runs: an export of the component, named `label` in logs,
/// metrics and admission (a tool's name, or `prompts/get`, `resources/read`…).
pub(crate) struct Target<'a> {
    pub label: &'a str,
    pub export: &'a ComponentExportIndex,
    /// How many results the export returns (0 or 1).
    pub result_count: usize,
}

/// Run `target` as a tool call runs: a fresh instance, the same sandbox,
/// limits, admission, logging and cancellation.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn call_target(
    runtime: &Runtime,
    component: &LoadedComponent,
    target: &Target<'_>,
    limits: &CallLimits,
    args: &[Val],
    cancel: &CancellationToken,
    how: Instantiation,
    observer: Option<CallObserver>,
) -> Result<Vec<Val>, CallError> {
    let call_id = NEXT_CALL_ID.fetch_add(1, Ordering::Relaxed);
    let tool = target.label;
    // Every log line of the call (guest output, denials, limits) carries these.
    let span = tracing::info_span!(
        "call",
        call_id,
        component = %component.name,
        tool,
        digest = %component.digest
    );
    run_call(
        runtime, component, target, limits, args, cancel, how, call_id, observer,
    )
    .instrument(span)
    .await
}

#[allow(clippy::too_many_arguments)]
async fn run_call(
    runtime: &Runtime,
    component: &LoadedComponent,
    target: &Target<'_>,
    limits: &CallLimits,
    args: &[Val],
    cancel: &CancellationToken,
    how: Instantiation,
    call_id: u64,
    observer: Option<CallObserver>,
) -> Result<Vec<Val>, CallError> {
    let tool = target.label;
    let export = target.export;
    let result_count = target.result_count;

    let store_limits = StoreLimitsBuilder::new()
        .memory_size(limits.memory_bytes)
        .instances(MAX_INSTANCES)
        .memories(MAX_INSTANCES)
        .tables(MAX_INSTANCES)
        .trap_on_grow_failure(true)
        .build();
    let call = Arc::new(CallContext::new(
        component.name.as_str().into(),
        tool.into(),
        call_id,
    ));
    let (state, output) = HostState::new(
        store_limits,
        limits,
        &component.policy,
        call,
        observer,
        runtime.outbound().clone(),
        NodeServices {
            queue: runtime.queue().cloned(),
            peers: runtime.peers().cloned(),
            workflows: runtime.workflows().cloned(),
        },
    )
    .map_err(CallError::Grant)?;
    let mut store = Store::new(runtime.engine(), state);
    store.limiter(|s| &mut s.limits);
    // Yield to the executor on every epoch tick so a deadline or a cancellation can
    // drop the call even when the guest never returns on its own.
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));

    let started = Instant::now();
    let _in_flight = component.calls.enter();
    let run = async {
        // Waiting for a slot counts against the deadline too.
        let waiting = GaugeGuard::hold(&metrics().calls_queued);
        let _permit = runtime.admission().enter(tool, limits).await?;
        drop(waiting);
        let _active = GaugeGuard::hold(&metrics().instances_active);
        let instantiating = Instant::now();
        let instance = match how {
            Instantiation::Pre => component.instance_pre().instantiate_async(&mut store).await,
            Instantiation::Relink => {
                match runtime.linker_for(component.component(), &component.policy) {
                    Ok(linker) => {
                        linker
                            .instantiate_async(&mut store, component.component())
                            .await
                    }
                    Err(e) => Err(e),
                }
            }
        }
        .map_err(|e| classify(e, &output, limits))?;
        metrics()
            .instantiation
            .observe(instantiating.elapsed().as_secs_f64());
        let func = instance
            .get_func(&mut store, export)
            .ok_or_else(|| CallError::UnknownTool(tool.to_string()))?;
        let mut results = vec![Val::Bool(false); result_count];
        func.call_async(&mut store, args, &mut results)
            .await
            .map_err(|e| classify(e, &output, limits))?;
        Ok(results)
    };
    let outcome = tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(CallError::Cancelled),
        _ = component.calls.unloaded().cancelled() => Err(CallError::Unloaded(component.name.clone())),
        _ = tokio::time::sleep(limits.timeout) => Err(CallError::Timeout(limits.timeout)),
        r = run => r,
    };
    metrics()
        .guest_memory_peak
        .observe(store.data().limits.peak_memory as f64);
    let dropped = store.data_mut().guest_io().budget.dropped;
    if dropped > 0 {
        tracing::warn!(
            event = "limit.exceeded",
            limit = "log_rate",
            dropped_lines = dropped,
            lines_per_second = limits.log_lines_per_second,
            "guest log lines over the rate limit were dropped"
        );
    }
    let suppressed = store.data().call().suppressed_denials();
    if suppressed > 0 {
        tracing::warn!(
            event = "capability.denied_suppressed",
            component = %component.name,
            tool,
            call_id,
            suppressed,
            "more capability refusals in this call than one call may log; they were refused and counted"
        );
    }
    log_guest_output(&component.name, tool, &output);
    let elapsed_ms = started.elapsed().as_millis() as u64;
    match &outcome {
        Ok(_) => {
            tracing::debug!(event = "tool.completed", component = %component.name, tool, call_id, elapsed_ms, "call completed")
        }
        Err(e) => {
            tracing::info!(event = "tool.failed", component = %component.name, tool, call_id, elapsed_ms, error = %e, "call failed")
        }
    }
    outcome
}

fn classify(error: wasmtime::Error, output: &CapturedOutput, limits: &CallLimits) -> CallError {
    let text = format!("{error:#}");
    if text.contains("forcing trap when growing memory")
        || text.contains("forcing a memory growth failure")
    {
        return CallError::MemoryLimit(limits.memory_bytes);
    }
    if let Some(refused) = error.downcast_ref::<ImportRefused>() {
        return CallError::Refused(refused.0.clone());
    }
    // The root cause says what happened; the wasm backtrace goes to the log only.
    let message = match error.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => error.root_cause().to_string(),
    };
    if let Some(backtrace) = error.downcast_ref::<wasmtime::WasmBacktrace>() {
        tracing::warn!(error = %message, "guest failed\n{backtrace}");
    }
    let stderr = String::from_utf8_lossy(&output.stderr.contents())
        .trim_end()
        .to_string();
    CallError::Trap {
        message,
        stderr: tail(&stderr, 2000),
    }
}

fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

/// Guest output goes to the host log (stderr or a file), line by line.
fn log_guest_output(component: &str, tool: &str, output: &CapturedOutput) {
    for (stream, pipe) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
        let bytes = pipe.contents();
        for line in String::from_utf8_lossy(&bytes).lines() {
            tracing::info!(target: "guest", event = "guest.output", component, tool, stream, "{line}");
        }
        let dropped = pipe.dropped();
        if dropped > 0 {
            tracing::warn!(
                event = "limit.exceeded",
                limit = "output",
                component,
                tool,
                stream,
                dropped_bytes = dropped,
                "guest output over the limit was dropped"
            );
        }
    }
}
