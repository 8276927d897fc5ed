//! Enforcement of the grants, one file per host interface. Every refusal the host
//! makes goes through [`CallContext::deny`], which writes the structured audit
//! event (`capability.denied`: component, tool, call id, capability, target,
//! reason).

pub mod bindings;
pub mod client;
pub mod filesystem;
pub mod logging;
pub mod peers;
pub mod progress;
pub mod queue;
pub mod sockets;
pub mod stubs;
pub mod workflow;

use std::sync::Arc;

use mcpplus_policy::imports::Capability;

/// The error a stand-in fails a call with: a refused capability or an import the
/// host does not offer. The message says what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ImportRefused(pub String);

/// `capability.denied` events one call may write; further refusals are still
/// refused and counted, and reported once when the call ends.
pub const DENIAL_EVENTS_PER_CALL: u32 = 16;
/// The longest guest-chosen target kept in an event, in characters.
const MAX_TARGET_CHARS: usize = 256;

/// Who is calling: what every audit event of one call carries.
#[derive(Debug)]
pub struct CallContext {
    pub component: Arc<str>,
    pub tool: Arc<str>,
    pub call_id: u64,
    /// Refusals so far in this call.
    pub denials: std::sync::atomic::AtomicU32,
}

impl CallContext {
    pub fn new(component: Arc<str>, tool: Arc<str>, call_id: u64) -> Self {
        Self {
            component,
            tool,
            call_id,
            denials: Default::default(),
        }
    }

    /// Refusals beyond the per-call event budget (logged once at the end).
    pub fn suppressed_denials(&self) -> u32 {
        self.denials
            .load(std::sync::atomic::Ordering::Relaxed)
            .saturating_sub(DENIAL_EVENTS_PER_CALL)
    }

    /// Refuse a call of `interface`.`function` that the policy's grants do not
    /// cover: records the refusal and returns what to tell the guest, naming
    /// the `grant` to add.
    pub fn refuse_function(
        &self,
        capability: Capability,
        interface: &str,
        function: &str,
        grant: &str,
    ) -> String {
        let target = format!("{interface}.{function}");
        let reason = format!(
            "component `{}` may not call {target}: add {grant} to its policy",
            self.component
        );
        self.deny(capability, &target, &reason);
        reason
    }

    /// Record a refusal. `target` is what was asked for (a path, an address, an
    /// interface function); `reason` says why it was refused.
    pub fn deny(&self, capability: Capability, target: &str, reason: &str) {
        mcpplus_telemetry::metrics::metrics()
            .capability_denials
            .get_or_create(&vec![
                ("capability", capability.as_str().to_string()),
                ("component", self.component.to_string()),
            ])
            .inc();
        let n = self
            .denials
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        if n > DENIAL_EVENTS_PER_CALL {
            return;
        }
        // The guest chooses the target: keep the event one bounded line.
        let target: String = target
            .chars()
            .take(MAX_TARGET_CHARS)
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        let target = target.as_str();
        tracing::warn!(
            event = "capability.denied",
            component = %self.component,
            tool = %self.tool,
            call_id = self.call_id,
            capability = capability.as_str(),
            target,
            reason,
            "capability denied"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_logs_a_bounded_number_of_refusals_and_counts_the_rest() {
        let call = CallContext::new("c".into(), "t".into(), 1);
        for i in 0..40 {
            call.deny(Capability::Files, &format!("/x/{i}"), "not granted");
        }
        assert_eq!(call.suppressed_denials(), 40 - DENIAL_EVENTS_PER_CALL);
        let quiet = CallContext::new("c".into(), "t".into(), 2);
        quiet.deny(Capability::Files, "/y", "not granted");
        assert_eq!(quiet.suppressed_denials(), 0);
    }
}
