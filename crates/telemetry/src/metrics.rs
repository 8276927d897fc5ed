//! Prometheus metrics, served as OpenMetrics text at `/metrics` (on the HTTP
//! listener, and on `--metrics ADDR` for any transport). Names follow Prometheus
//! conventions (`mcpplus_` prefix, units in names, `_total` counters) and are
//! listed in docs/metrics.md.

use std::sync::OnceLock;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

pub type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Registry,
    /// Calls by tool, component and outcome (`ok`, `tool_error`, `invalid_arguments`,
    /// `trap`, `timeout`, `cancelled`, `memory_limit`, `busy`, `refused`, `unloaded`).
    pub calls: Family<Labels, Counter>,
    pub call_duration: Family<Labels, Histogram>,
    pub instantiation: Histogram,
    pub instances_active: Gauge,
    pub calls_queued: Gauge,
    pub guest_memory_peak: Histogram,
    pub capability_denials: Family<Labels, Counter>,
    pub outbound_requests: Family<Labels, Counter>,
    pub breaker_state: Family<Labels, Gauge>,
    /// Breaker state changes by destination and the state entered.
    pub breaker_transitions: Family<Labels, Counter>,
    /// One outbound request (retries included) by destination.
    pub outbound_duration: Family<Labels, Histogram>,
    pub components_loaded: Gauge,
    /// Tasks accepted into the queue, by origin (`tool`, `mcp_task`).
    pub queue_submitted: Family<Labels, Counter>,
    /// Task attempts by outcome (`completed`, `retry`, `failed`, `stale`).
    pub queue_attempts: Family<Labels, Counter>,
    /// Mesh requests this node answered, by peer (allowed peers only: the
    /// allow-list bounds the label set), operation and answer.
    pub mesh_requests: Family<Labels, Counter>,
    pub http_unauthorized: Counter,
    pub compile_cache: Family<Labels, Counter>,
    pub guest_log_lines: Family<Labels, Counter>,
    pub guest_log_dropped: Family<Labels, Counter>,
    pub build_info: Family<Labels, Gauge>,
}

fn latency_histogram() -> Histogram {
    // 50 µs .. ~52 s
    Histogram::new(exponential_buckets(0.000_05, 2.0, 21))
}

/// The series a successful call of one tool updates, resolved once so a call
/// does not build and hash label vectors (see [`Metrics::ok_call_series`]).
#[derive(Clone)]
pub struct OkCallSeries {
    pub calls: Counter,
    pub duration: Histogram,
}

impl Metrics {
    /// Handles on `mcpplus_tool_calls_total{tool, component, outcome="ok"}` and
    /// `mcpplus_tool_call_duration_seconds{tool}`: the same series
    /// `get_or_create` would return.
    pub fn ok_call_series(&self, tool: &str, component: &str) -> OkCallSeries {
        OkCallSeries {
            calls: self
                .calls
                .get_or_create(&vec![
                    ("tool", tool.to_string()),
                    ("component", component.to_string()),
                    ("outcome", "ok".to_string()),
                ])
                .clone(),
            duration: self
                .call_duration
                .get_or_create(&vec![("tool", tool.to_string())])
                .clone(),
        }
    }

    /// Say which build is running (`mcpplus_build_info`); the server calls
    /// this once at start with its build identity.
    pub fn record_build(&self, build_id: &str) {
        self.build_info
            .get_or_create(&vec![
                ("version", env!("CARGO_PKG_VERSION").to_string()),
                ("wasmtime", "48.0.8".to_string()),
                ("build_id", build_id.to_string()),
            ])
            .set(1);
    }

    fn new() -> Self {
        let mut registry = Registry::with_prefix("mcpplus");
        let calls = Family::<Labels, Counter>::default();
        registry.register(
            "tool_calls",
            "Tool calls by tool, component and outcome",
            calls.clone(),
        );
        let call_duration = Family::<Labels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register_with_unit(
            "tool_call_duration",
            "Wall time of a tool call, queue wait included",
            Unit::Seconds,
            call_duration.clone(),
        );
        let instantiation = Histogram::new(exponential_buckets(0.000_005, 2.0, 20));
        registry.register_with_unit(
            "instantiation_duration",
            "Time to instantiate a component for one call",
            Unit::Seconds,
            instantiation.clone(),
        );
        let instances_active = Gauge::default();
        registry.register(
            "instances_active",
            "Component instances running a call now",
            instances_active.clone(),
        );
        let calls_queued = Gauge::default();
        registry.register(
            "calls_queued",
            "Calls waiting for a concurrency slot",
            calls_queued.clone(),
        );
        let guest_memory_peak = Histogram::new(exponential_buckets(65_536.0, 2.0, 16));
        registry.register_with_unit(
            "guest_memory_peak",
            "Largest linear memory a call's instance grew to",
            Unit::Bytes,
            guest_memory_peak.clone(),
        );
        let capability_denials = Family::<Labels, Counter>::default();
        registry.register(
            "capability_denials",
            "Refused capability uses by capability and component",
            capability_denials.clone(),
        );
        let outbound_requests = Family::<Labels, Counter>::default();
        registry.register(
            "outbound_requests",
            "Outbound requests by destination and outcome",
            outbound_requests.clone(),
        );
        let queue_submitted = Family::<Labels, Counter>::default();
        registry.register(
            "queue_tasks_submitted",
            "Tasks accepted into the queue by origin",
            queue_submitted.clone(),
        );
        let mesh_requests = Family::<Labels, Counter>::default();
        registry.register(
            "mesh_requests",
            "Mesh requests answered, by peer, operation and answer",
            mesh_requests.clone(),
        );
        let http_unauthorized = Counter::default();
        registry.register(
            "http_unauthorized_requests",
            "HTTP requests refused for missing or invalid credentials",
            http_unauthorized.clone(),
        );
        let queue_attempts = Family::<Labels, Counter>::default();
        registry.register(
            "queue_attempts",
            "Task attempts by outcome",
            queue_attempts.clone(),
        );
        let breaker_state = Family::<Labels, Gauge>::default();
        registry.register(
            "breaker_state",
            "Circuit breaker state per destination (0 closed, 1 half-open, 2 open)",
            breaker_state.clone(),
        );
        let breaker_transitions = Family::<Labels, Counter>::default();
        registry.register(
            "breaker_transitions",
            "Circuit breaker state changes by destination and the state entered",
            breaker_transitions.clone(),
        );
        let outbound_duration = Family::<Labels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register_with_unit(
            "outbound_request_duration",
            "Wall time of an outbound HTTP request, retries included",
            Unit::Seconds,
            outbound_duration.clone(),
        );
        let components_loaded = Gauge::default();
        registry.register(
            "components_loaded",
            "Components being served",
            components_loaded.clone(),
        );
        let compile_cache = Family::<Labels, Counter>::default();
        registry.register(
            "compile_cache_lookups",
            "Component compile cache lookups by result (hit, miss, disabled)",
            compile_cache.clone(),
        );
        let guest_log_lines = Family::<Labels, Counter>::default();
        registry.register(
            "guest_log_lines",
            "Log lines written by guests, by tool",
            guest_log_lines.clone(),
        );
        let guest_log_dropped = Family::<Labels, Counter>::default();
        registry.register(
            "guest_log_dropped",
            "Guest log lines dropped by the rate limit or level filter, by tool",
            guest_log_dropped.clone(),
        );
        let build_info = Family::<Labels, Gauge>::default();
        registry.register(
            "build_info",
            "Build information (always 1)",
            build_info.clone(),
        );
        Metrics {
            registry,
            calls,
            call_duration,
            instantiation,
            instances_active,
            calls_queued,
            guest_memory_peak,
            capability_denials,
            outbound_requests,
            breaker_state,
            breaker_transitions,
            outbound_duration,
            components_loaded,
            queue_submitted,
            queue_attempts,
            mesh_requests,
            http_unauthorized,
            compile_cache,
            guest_log_lines,
            guest_log_dropped,
            build_info,
        }
    }

    /// The OpenMetrics text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A gauge held up for as long as this lives.
pub struct GaugeGuard(&'static Gauge);

impl GaugeGuard {
    pub fn hold(gauge: &'static Gauge) -> Self {
        gauge.inc();
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Distinct values one label may take before further ones are reported as
/// `other`, for labels whose values a guest or client can choose.
pub const MAX_LABEL_VALUES: usize = 256;

/// `value` if `label` has room for it (or already has it), else `"other"`.
pub fn bounded_label(label: &'static str, value: &str) -> String {
    static SEEN: std::sync::LazyLock<
        std::sync::Mutex<
            std::collections::HashMap<&'static str, std::collections::HashSet<String>>,
        >,
    > = std::sync::LazyLock::new(Default::default);
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    let values = seen.entry(label).or_default();
    if values.contains(value) {
        return value.to_string();
    }
    if values.len() < MAX_LABEL_VALUES {
        values.insert(value.to_string());
        value.to_string()
    } else {
        "other".to_string()
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn a_label_takes_a_bounded_number_of_values() {
        for i in 0..MAX_LABEL_VALUES + 50 {
            let value = format!("v{i}");
            let got = super::bounded_label("test_label", &value);
            if i < MAX_LABEL_VALUES {
                assert_eq!(got, value);
            } else {
                assert_eq!(got, "other");
            }
        }
        assert_eq!(
            super::bounded_label("test_label", "v0"),
            "v0",
            "known values stay"
        );
    }

    use super::*;

    #[test]
    fn renders_openmetrics_with_units_and_totals() {
        let m = metrics();
        m.calls
            .get_or_create(&vec![
                ("tool", "echo".into()),
                ("component", "c".into()),
                ("outcome", "ok".into()),
            ])
            .inc();
        m.call_duration
            .get_or_create(&vec![("tool", "echo".into())])
            .observe(0.001);
        m.record_build("test-build");
        let text = m.render();
        assert!(
            text.contains("mcpplus_tool_calls_total{tool=\"echo\",component=\"c\",outcome=\"ok\"}"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE mcpplus_tool_call_duration_seconds histogram"),
            "{text}"
        );
        assert!(
            text.contains("mcpplus_build_info{") && text.contains("build_id=\"test-build\""),
            "{text}"
        );
        assert!(text.trim_end().ends_with("# EOF"));
    }
}
