//! In-flight calls of one loaded component, so a component being replaced or
//! unloaded can be drained: calls that started on it finish on it, and unloading
//! waits for them (up to a timeout) before cancelling the rest.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
pub struct CallTracker {
    in_flight: AtomicUsize,
    idle: Notify,
    unloaded: CancellationToken,
}

/// Counts one call as in flight until dropped.
pub struct InFlight<'a>(&'a CallTracker);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl CallTracker {
    pub fn enter(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Wait until no call is in flight, or `timeout` passes; true if drained.
    pub async fn drained(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Register before checking, so a call ending in between is not missed.
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return true;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => return self.in_flight() == 0,
            }
        }
    }

    /// Stop every call still running on this component (after it was unloaded).
    pub fn cancel_remaining(&self) {
        self.unloaded.cancel();
    }

    /// Cancelled once the component is unloaded and its drain time is over.
    pub fn unloaded(&self) -> &CancellationToken {
        &self.unloaded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn drains_when_the_last_call_ends() {
        let tracker = Arc::new(CallTracker::default());
        assert!(tracker.drained(Duration::from_millis(1)).await);
        let t = tracker.clone();
        let call = tokio::spawn(async move {
            let _in_flight = t.enter();
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(tracker.in_flight(), 1);
        assert!(!tracker.drained(Duration::from_millis(5)).await);
        assert!(tracker.drained(Duration::from_secs(5)).await);
        call.await.unwrap();
        assert_eq!(tracker.in_flight(), 0);
    }
}
