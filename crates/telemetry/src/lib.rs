//! Observability: structured logs (`logs`), secret masking (`redact`), trace
//! context (`trace`) and Prometheus metrics (`metrics`).

pub mod json_line;
pub mod logs;
pub mod metrics;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod redact;
pub mod trace;
