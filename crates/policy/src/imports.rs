//! What a component asks for (its imports) against what its policy grants.
//!
//! Every import falls in one of three classes: the baseline every tool gets
//! (clocks, random, I/O streams, captured stdout/stderr, exit, the content types),
//! a capability that needs a grant, or something this host does not provide.

use serde::Serialize;

use super::Policy;

/// A capability a policy can grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// wasi:filesystem, through granted directories.
    Files,
    /// wasi:cli/environment, granted variables only.
    Environment,
    /// wasi:sockets: raw TCP/UDP and name lookup.
    Sockets,
    /// wasi:http outbound requests through the host's allow-list.
    Network,
    /// mcpplus:host/queue.
    Queue,
    /// mcpplus:host/peers.
    Peers,
    /// mcpplus:host/workflow.
    Workflow,
    /// mcpplus:host/client: requests to the MCP client that made the call.
    Client,
}

impl Capability {
    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Files => "files",
            Capability::Environment => "environment",
            Capability::Sockets => "sockets",
            Capability::Network => "network",
            Capability::Queue => "queue",
            Capability::Peers => "peers",
            Capability::Workflow => "workflow",
            Capability::Client => "client",
        }
    }

    /// How an operator grants it, for error messages.
    pub fn how_to_grant(self) -> &'static str {
        match self {
            Capability::Files => {
                "add a [[files]] grant (host, guest, access) to the component's policy"
            }
            Capability::Environment => "list the variable in `env = [...]` in the policy",
            Capability::Sockets => "add [sockets] connect/bind/name_lookup to the policy",
            Capability::Network => "add [network] allow = [\"https://host\"] to the policy",
            Capability::Queue => "add [queue] submit = true (or admin = true) to the policy",
            Capability::Peers => "add [peers] read = true (or admin = true) to the policy",
            Capability::Workflow => "add [workflow] submit = true (or admin = true) to the policy",
            Capability::Client => {
                "add [client] elicit = true, sample = true or roots = true to the policy"
            }
        }
    }

    /// Whether `policy` grants this capability at all.
    pub fn granted_by(self, policy: &Policy) -> bool {
        match self {
            Capability::Files => !policy.files.is_empty(),
            Capability::Environment => !policy.env.is_empty(),
            Capability::Sockets => policy.sockets.any(),
            Capability::Network => !policy.network.is_empty(),
            Capability::Queue => policy.queue.submit || policy.queue.admin,
            Capability::Peers => policy.peers.read || policy.peers.admin,
            Capability::Workflow => policy.workflow.submit || policy.workflow.admin,
            Capability::Client => policy.client.any(),
        }
    }

    /// Whether this host implements the capability's interfaces yet.
    pub fn implemented(self) -> bool {
        matches!(
            self,
            Capability::Files
                | Capability::Environment
                | Capability::Sockets
                | Capability::Network
                | Capability::Queue
                | Capability::Peers
                | Capability::Workflow
                | Capability::Client
        )
    }

    pub const ALL: [Capability; 8] = [
        Capability::Files,
        Capability::Environment,
        Capability::Sockets,
        Capability::Network,
        Capability::Queue,
        Capability::Peers,
        Capability::Workflow,
        Capability::Client,
    ];
}

/// What kind of thing an import is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportClass {
    /// Given to every tool: harmless or already contained by the host.
    Baseline,
    Capability(Capability),
    /// Not something this host offers.
    Unknown,
}

/// `wasi:filesystem/types@0.2.6` → its class.
pub fn classify(import: &str) -> ImportClass {
    let unversioned = import.split('@').next().unwrap_or(import);
    let Some((package, interface)) = unversioned.split_once('/') else {
        return ImportClass::Unknown; // a bare function import
    };
    match (package, interface) {
        ("wasi:filesystem", _) => ImportClass::Capability(Capability::Files),
        ("wasi:cli", "environment") => ImportClass::Capability(Capability::Environment),
        ("wasi:sockets", _) => ImportClass::Capability(Capability::Sockets),
        ("wasi:http", _) => ImportClass::Capability(Capability::Network),
        ("mcpplus:host", "queue") => ImportClass::Capability(Capability::Queue),
        ("mcpplus:host", "peers") => ImportClass::Capability(Capability::Peers),
        ("mcpplus:host", "workflow") => ImportClass::Capability(Capability::Workflow),
        ("mcpplus:host", "client") => ImportClass::Capability(Capability::Client),
        ("wasi:cli" | "wasi:io" | "wasi:clocks" | "wasi:random", _) => ImportClass::Baseline,
        ("mcpplus:host", "types" | "log" | "progress") => ImportClass::Baseline,
        _ => ImportClass::Unknown,
    }
}

/// The outcome for one import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ImportStatus {
    /// Part of every tool's baseline.
    Baseline,
    /// Linked for real, within the grants.
    Granted,
    /// Requested but not granted: linked in its deny form (every use refused
    /// with a permission error and an audit event).
    Denied,
    /// Granted, but this host does not implement the interface yet: calls fail.
    #[serde(rename = "granted-not-implemented")]
    GrantedUnavailable,
    /// This host does not offer the interface at all: calls fail.
    NotProvided,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportEntry {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capability: Option<Capability>,
    pub status: ImportStatus,
}

pub fn import_status(import: &str, policy: &Policy) -> ImportEntry {
    let (capability, status) = match classify(import) {
        ImportClass::Baseline => (None, ImportStatus::Baseline),
        ImportClass::Unknown => (None, ImportStatus::NotProvided),
        ImportClass::Capability(c) => {
            let status = match (c.granted_by(policy), c.implemented()) {
                (false, _) => ImportStatus::Denied,
                (true, true) => ImportStatus::Granted,
                (true, false) => ImportStatus::GrantedUnavailable,
            };
            (Some(c), status)
        }
    };
    ImportEntry {
        name: import.to_string(),
        capability,
        status,
    }
}

/// Capabilities the policy grants that no import of the component uses.
pub fn unused_grants(imports: &[String], policy: &Policy) -> Vec<Capability> {
    Capability::ALL
        .into_iter()
        .filter(|c| c.granted_by(policy))
        .filter(|c| {
            !imports
                .iter()
                .any(|i| classify(i) == ImportClass::Capability(*c))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn imports_are_classified_by_interface() {
        assert_eq!(
            classify("wasi:filesystem/preopens@0.2.9"),
            ImportClass::Capability(Capability::Files)
        );
        assert_eq!(
            classify("wasi:cli/environment@0.2.6"),
            ImportClass::Capability(Capability::Environment)
        );
        assert_eq!(classify("wasi:cli/stdout@0.2.6"), ImportClass::Baseline);
        assert_eq!(
            classify("wasi:http/outgoing-handler@0.2.0"),
            ImportClass::Capability(Capability::Network)
        );
        assert_eq!(classify("mcpplus:host/types@0.1.0"), ImportClass::Baseline);
        assert_eq!(
            classify("mcpplus:host/workflow@0.1.0"),
            ImportClass::Capability(Capability::Workflow)
        );
        assert_eq!(
            classify("mcpplus:host/client@0.1.0"),
            ImportClass::Capability(Capability::Client)
        );
        assert_eq!(classify("acme:thing/x@1.0.0"), ImportClass::Unknown);
        assert_eq!(classify("summary"), ImportClass::Unknown);
    }

    #[test]
    fn status_follows_the_grants() {
        let mut policy = Policy::default();
        let fs = "wasi:filesystem/types@0.2.6";
        assert_eq!(import_status(fs, &policy).status, ImportStatus::Denied);
        policy.files.push(crate::FileGrant {
            host: "/tmp".into(),
            guest: "/data".into(),
            access: crate::FileAccess::ReadOnly,
        });
        assert_eq!(import_status(fs, &policy).status, ImportStatus::Granted);
        let queue = "mcpplus:host/queue@0.1.0";
        assert_eq!(import_status(queue, &policy).status, ImportStatus::Denied);
        policy.queue.submit = true;
        assert_eq!(import_status(queue, &policy).status, ImportStatus::Granted);
        let peers = "mcpplus:host/peers@0.1.0";
        assert_eq!(import_status(peers, &policy).status, ImportStatus::Denied);
        policy.peers.read = true;
        assert_eq!(import_status(peers, &policy).status, ImportStatus::Granted);
        let workflow = "mcpplus:host/workflow@0.1.0";
        assert_eq!(
            import_status(workflow, &policy).status,
            ImportStatus::Denied
        );
        policy.workflow.submit = true;
        assert_eq!(
            import_status(workflow, &policy).status,
            ImportStatus::Granted
        );
        policy.workflow = crate::WorkflowGrants {
            submit: false,
            admin: true,
        };
        assert_eq!(
            import_status(workflow, &policy).status,
            ImportStatus::Granted
        );
        let client = "mcpplus:host/client@0.1.0";
        assert_eq!(import_status(client, &policy).status, ImportStatus::Denied);
        policy.client.roots = true;
        assert_eq!(import_status(client, &policy).status, ImportStatus::Granted);
        assert_eq!(
            unused_grants(&[fs.to_string()], &policy),
            vec![
                Capability::Queue,
                Capability::Peers,
                Capability::Workflow,
                Capability::Client
            ]
        );
    }
}
