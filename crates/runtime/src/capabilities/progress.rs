//! `mcpplus:host/progress`: a guest's progress, forwarded to the client when its
//! request carried a progress token, and logged at debug level.

use super::bindings::progress::Host;
use crate::host_state::HostState;
use crate::observer::GuestSignal;

impl Host for HostState {
    fn report(&mut self, progress: f64, total: Option<f64>, message: Option<String>) {
        if !progress.is_finite() || total.is_some_and(|t| !t.is_finite()) {
            tracing::debug!(
                event = "guest.progress",
                "progress report with a non-finite number ignored"
            );
            return;
        }
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
