//! Enforcement of the grants, one file per host interface. Every refusal the host
//! makes goes through [`CallContext::deny`], which writes the structured audit
//! event (`capability.denied`: component, tool, call id, capability, target,
//! reason).

pub mod bindings;
pub mod filesystem;
pub mod logging;
pub mod peers;
pub mod progress;
pub mod queue;
pub mod sockets;
pub mod stubs;

use std::sync::Arc;

use mcpplus_policy::imports::Capability;

/// The error a stand-in fails a call with: a refused capability or an import the
/// host does not offer. The message says what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ImportRefused(pub String);

/// Who is calling: what every audit event of one call carries.
#[derive(Debug, Clone)]
pub struct CallContext {
    pub component: Arc<str>,
    pub tool: Arc<str>,
    pub call_id: u64,
}

impl CallContext {
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
