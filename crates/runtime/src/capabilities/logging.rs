//! `mcpplus:host/log`: guest log lines, with the call's context added by the
//! call span, filtered by the tool's level and rate-limited per call. Dropped
//! lines are counted (`mcpplus_guest_log_dropped_total`, and one
//! `limit.exceeded` event when the call ends).

use std::time::Instant;

use super::bindings::log::{Host, Level};
use crate::host_state::HostState;
use crate::observer::GuestSignal;
use mcpplus_policy::config::GuestLogLevel;
use mcpplus_telemetry::json_line::render_fields;
use mcpplus_telemetry::metrics::metrics;

/// The longest message or field kept; longer ones are cut (and say so).
const MAX_TEXT: usize = 4096;
/// Fields kept per line.
const MAX_FIELDS: usize = 32;

/// A token bucket: `rate` lines per second, bursts up to `rate`.
#[derive(Debug)]
pub struct LogBudget {
    rate: f64,
    tokens: f64,
    last: Instant,
    pub kept: u64,
    pub dropped: u64,
}

impl LogBudget {
    pub fn new(rate: u32) -> Self {
        Self {
            rate: f64::from(rate),
            tokens: f64::from(rate),
            last: Instant::now(),
            kept: 0,
            dropped: 0,
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens =
            (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate).min(self.rate);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.kept += 1;
            true
        } else {
            self.dropped += 1;
            false
        }
    }
}

fn level_of(level: Level) -> GuestLogLevel {
    match level {
        Level::Trace => GuestLogLevel::Trace,
        Level::Debug => GuestLogLevel::Debug,
        Level::Info => GuestLogLevel::Info,
        Level::Warn => GuestLogLevel::Warn,
        Level::Error => GuestLogLevel::Error,
    }
}

fn cut(mut s: String) -> String {
    if s.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("…[cut]");
    }
    s
}

impl Host for HostState {
    fn log(&mut self, level: Level, message: String, fields: Vec<(String, String)>) {
        let level = level_of(level);
        let tool = self.call().tool.clone();
        let guest = self.guest_io();
        if level < guest.min_level || !guest.budget.take() {
            if level >= guest.min_level {
                metrics()
                    .guest_log_dropped
                    .get_or_create(&vec![("tool", tool.to_string())])
                    .inc();
            }
            return;
        }
        metrics()
            .guest_log_lines
            .get_or_create(&vec![("tool", tool.to_string())])
            .inc();
        let message = cut(message);
        let fields: Vec<(String, String)> = fields
            .into_iter()
            .take(MAX_FIELDS)
            .map(|(k, v)| (cut(k), cut(v)))
            .collect();
        // Rendered (and masked) here once; written as the line's `fields` object.
        let fields_json = render_fields(&fields);
        match level {
            GuestLogLevel::Trace => {
                tracing::trace!(target: "guest", event = "guest.log", fields_json = %fields_json, "{message}")
            }
            GuestLogLevel::Debug => {
                tracing::debug!(target: "guest", event = "guest.log", fields_json = %fields_json, "{message}")
            }
            GuestLogLevel::Info => {
                tracing::info!(target: "guest", event = "guest.log", fields_json = %fields_json, "{message}")
            }
            GuestLogLevel::Warn => {
                tracing::warn!(target: "guest", event = "guest.log", fields_json = %fields_json, "{message}")
            }
            GuestLogLevel::Error => {
                tracing::error!(target: "guest", event = "guest.log", fields_json = %fields_json, "{message}")
            }
        }
        if let Some(observer) = &guest.observer
            && observer.client_log_level.is_some_and(|min| level >= min)
        {
            let _ = observer.signals.send(GuestSignal::Log {
                level,
                message,
                fields,
            });
        }
    }
}
