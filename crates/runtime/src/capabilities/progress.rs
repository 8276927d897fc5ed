//! `mcpplus:host/progress`: a guest's progress, forwarded to the client when its
//! request carried a progress token, and logged at debug level. Rate-limited
//! like guest logs: a guest reporting in a tight loop cannot flood the client
//! or the queue; the final report (progress reaching total) always passes.

#[cfg(test)]
use std::time::Duration;
use std::time::Instant;

use super::bindings::progress::Host;
use crate::host_state::HostState;
use crate::observer::GuestSignal;

/// Reports forwarded per second once a burst of as many is spent.
pub const PROGRESS_PER_SECOND: f64 = 20.0;
/// The longest message forwarded, in characters.
pub const MAX_PROGRESS_MESSAGE: usize = 1024;

/// Which progress reports of one call go through: a token bucket of
/// [`PROGRESS_PER_SECOND`] (a burst of as many passes at once).
#[derive(Debug)]
pub struct ProgressGate {
    tokens: f64,
    refilled: Option<Instant>,
    /// Reports held back by the rate limit.
    pub dropped: u64,
}

impl Default for ProgressGate {
    fn default() -> Self {
        Self {
            tokens: PROGRESS_PER_SECOND,
            refilled: None,
            dropped: 0,
        }
    }
}

impl ProgressGate {
    /// Whether a report at `now` goes through; `finished` ones always do.
    pub fn admit(&mut self, now: Instant, finished: bool) -> bool {
        if let Some(at) = self.refilled {
            let earned = now.duration_since(at).as_secs_f64() * PROGRESS_PER_SECOND;
            self.tokens = (self.tokens + earned).min(PROGRESS_PER_SECOND);
        }
        self.refilled = Some(now);
        if finished || self.tokens >= 1.0 {
            self.tokens = (self.tokens - 1.0).max(0.0);
            true
        } else {
            self.dropped += 1;
            false
        }
    }
}

impl Host for HostState {
    fn report(&mut self, progress: f64, total: Option<f64>, message: Option<String>) {
        if !progress.is_finite() || total.is_some_and(|t| !t.is_finite()) {
            tracing::debug!(
                event = "guest.progress",
                "progress report with a non-finite number ignored"
            );
            return;
        }
        let finished = total.is_some_and(|t| progress >= t);
        if !self.guest_io().progress.admit(Instant::now(), finished) {
            return;
        }
        let message = message.map(|m| {
            if m.chars().count() > MAX_PROGRESS_MESSAGE {
                m.chars().take(MAX_PROGRESS_MESSAGE).collect()
            } else {
                m
            }
        });
        tracing::debug!(event = "guest.progress", progress, total = ?total, "{}", message.as_deref().unwrap_or(""));
        if let Some(observer) = &self.guest_io().observer
            && observer.wants_progress
        {
            let _ = observer.signals.send(GuestSignal::Progress {
                progress,
                total,
                message,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_holds_and_the_last_report_always_passes() {
        let mut gate = ProgressGate::default();
        let start = Instant::now();
        let burst = PROGRESS_PER_SECOND as usize;
        let passed = (0..1000).filter(|_| gate.admit(start, false)).count();
        assert_eq!(passed, burst);
        assert!(gate.admit(start, true), "the final report");
        // One second later, one second's worth again.
        let later = start + Duration::from_secs(1);
        let passed = (0..1000).filter(|_| gate.admit(later, false)).count();
        assert_eq!(passed, burst);
        assert_eq!(gate.dropped, 2 * (1000 - burst as u64));
    }
}
