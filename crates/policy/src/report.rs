//! The audit report of one component: what it asks for, what it was given, what
//! it asked for and was refused, its limits, and a short risk summary. The JSON
//! form is versioned (`auditVersion`) and documented in docs/security.md; fields
//! are only ever added within a version, and nothing in it changes between two
//! runs over the same files, so two reports can be diffed in review.

use std::collections::BTreeMap;

use serde::Serialize;

use super::hints::ToolHints;
use super::imports::{Capability, ImportEntry, ImportStatus, import_status, unused_grants};
use super::{FileAccess, Policy};
use crate::config::CallLimits;

pub const AUDIT_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditReport {
    pub audit_version: u32,
    pub tools_dir: String,
    pub components: Vec<ComponentAudit>,
    /// The node's place in a mesh, when the config puts it in one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mesh: Option<MeshAudit>,
    /// Where the task queue keeps its tasks.
    pub queue: QueueAudit,
}

/// The queue's backend, and what it needs from the database.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueueAudit {
    /// `sqlite` or `postgres`.
    pub backend: &'static str,
    /// The SQLite file under the data directory, or the PostgreSQL URL
    /// (password masked) and schema.
    pub location: String,
    /// What the database user must be allowed (PostgreSQL only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_privileges: Option<String>,
}

impl QueueAudit {
    pub fn of(config: &crate::config::queue::QueueConfig) -> Self {
        use crate::config::queue::{QueueBackend, redacted};
        match config.backend {
            QueueBackend::Sqlite => Self {
                backend: "sqlite",
                location: "<data-dir>/queue.sqlite3 (one node)".into(),
                database_privileges: None,
            },
            QueueBackend::Postgres => {
                let url = match (&config.url, &config.url_file) {
                    (Some(url), _) => redacted(&url.0),
                    (None, Some(file)) => format!("the URL in {}", file.display()),
                    (None, None) => "no url (the server refuses to start)".into(),
                };
                Self {
                    backend: "postgres",
                    location: format!("{url}, schema {}", config.schema),
                    database_privileges: Some(format!(
                        "CONNECT on the database; CREATE on it the first time (to create schema `{0}`), or an existing schema `{0}` owned by the user; then SELECT, INSERT, UPDATE, DELETE on its tables and USAGE on its sequence (the owner has them). No superuser, no extensions (ids come from gen_random_uuid(), built into PostgreSQL 13+).",
                        config.schema
                    )),
                }
            }
        }
    }
}

/// Who may reach this node over the mesh, and what they may do.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshAudit {
    /// This node's PeerId, when its key exists (`--data-dir`).
    pub peer_id: Option<String>,
    pub listen: Vec<String>,
    pub bootstrap: Vec<String>,
    pub mdns: bool,
    /// Tasks run at once for each peer pulled from.
    pub slots: u32,
    /// The private-network key: `off`, or `on (fingerprint …)`; never the key.
    pub pnet: String,
    /// Tools only peers host are listed and called here (`[mesh] federate`).
    pub federate: bool,
    pub peers: Vec<MeshPeerAudit>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshPeerAudit {
    pub peer_id: String,
    pub roles: Vec<&'static str>,
}

impl MeshAudit {
    /// The `[mesh]` section as a reviewer reads it; `None` when the node runs alone.
    /// `pnet`: how the key reads (the host computes its fingerprint).
    pub fn of(
        config: &crate::config::mesh::MeshConfig,
        peer_id: Option<String>,
        pnet: String,
    ) -> Option<Self> {
        config.enabled().then(|| MeshAudit {
            peer_id,
            listen: config.listen.clone(),
            bootstrap: config.bootstrap.clone(),
            mdns: config.mdns,
            slots: config.slots,
            pnet,
            federate: config.federate,
            peers: config
                .peers
                .iter()
                .map(|(id, entry)| MeshPeerAudit {
                    peer_id: id.clone(),
                    roles: entry.roles.iter().map(|r| r.as_str()).collect(),
                })
                .collect(),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentAudit {
    pub name: String,
    pub path: String,
    pub sha256: String,
    /// `loaded` or `refused` (then `error` says why and nothing is served).
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Where the grants come from; `null` when there is no policy.
    pub policy: Option<String>,
    /// Whether the policy pins this exact build's sha256.
    pub pinned: bool,
    pub tools: Vec<String>,
    pub imports: Vec<ImportEntry>,
    pub grants: GrantsView,
    /// Capabilities granted but never imported: candidates for removal.
    pub unused_grants: Vec<Capability>,
    /// Imports the component asks for that the policy refuses.
    pub denied_imports: Vec<String>,
    /// Imports this host does not offer (calls reaching them fail).
    pub unavailable_imports: Vec<String>,
    pub limits: LimitsView,
    /// Tools whose limits differ from the component's.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tool_limits: BTreeMap<String, LimitsView>,
    pub annotations: ToolHints,
    pub risks: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantsView {
    pub files: Vec<FileView>,
    pub env: Vec<EnvView>,
    pub network: Vec<String>,
    pub sockets: SocketsView,
    pub queue: super::QueueGrants,
    pub peers: super::PeerGrants,
    pub workflow: super::WorkflowGrants,
    pub client: super::ClientGrants,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileView {
    pub host: String,
    pub guest: String,
    pub access: FileAccess,
}

/// A granted variable: its name and whether the host has it set (never its value).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EnvView {
    pub name: String,
    pub set_on_host: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SocketsView {
    pub connect: Vec<String>,
    pub bind: Vec<String>,
    pub name_lookup: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LimitsView {
    pub timeout_ms: u64,
    pub memory_mib: u64,
    pub max_concurrency: u32,
    pub max_queued: u32,
    pub output_kib: u64,
    pub result_kib: u64,
}

impl From<&CallLimits> for LimitsView {
    fn from(l: &CallLimits) -> Self {
        LimitsView {
            timeout_ms: l.timeout.as_millis() as u64,
            memory_mib: (l.memory_bytes >> 20) as u64,
            max_concurrency: l.max_concurrency,
            max_queued: l.max_queued,
            output_kib: (l.output_bytes >> 10) as u64,
            result_kib: (l.result_bytes >> 10) as u64,
        }
    }
}

/// What is known about one component file, loaded or not.
pub struct AuditInput<'a> {
    pub name: &'a str,
    pub path: &'a std::path::Path,
    pub sha256: &'a str,
    pub tools: Vec<String>,
    pub imports: &'a [String],
    /// The checked policy (the grants in force) or why it was refused.
    pub policy: Result<&'a Policy, String>,
    /// Any other reason the component is not served.
    pub load_error: Option<String>,
    /// The component's limits and each tool's.
    pub limits: CallLimits,
    pub tool_limits: Vec<(String, CallLimits)>,
}

impl ComponentAudit {
    pub fn build(input: AuditInput<'_>) -> Self {
        let no_policy = Policy::default();
        let (policy, policy_error) = match &input.policy {
            Ok(p) => (*p, None),
            // A refused policy grants nothing; the error says why.
            Err(e) => (&no_policy, Some(e.clone())),
        };
        let imports: Vec<ImportEntry> = input
            .imports
            .iter()
            .map(|i| import_status(i, policy))
            .collect();
        let with_status = |status: ImportStatus| {
            imports
                .iter()
                .filter(|i| i.status == status)
                .map(|i| i.name.clone())
                .collect::<Vec<_>>()
        };
        let denied_imports = with_status(ImportStatus::Denied);
        let mut unavailable_imports = with_status(ImportStatus::NotProvided);
        unavailable_imports.extend(with_status(ImportStatus::GrantedUnavailable));
        let limits = LimitsView::from(&input.limits);
        let tool_limits = input
            .tool_limits
            .iter()
            .map(|(t, l)| (t.clone(), LimitsView::from(l)))
            .filter(|(_, l)| *l != limits)
            .collect();
        let error = policy_error.or(input.load_error);
        ComponentAudit {
            name: input.name.to_string(),
            path: input.path.display().to_string(),
            sha256: input.sha256.to_string(),
            status: if error.is_some() { "refused" } else { "loaded" },
            error,
            policy: policy.source.clone(),
            pinned: policy.sha256.is_some(),
            tools: input.tools,
            grants: grants_view(policy),
            unused_grants: unused_grants(input.imports, policy),
            denied_imports,
            unavailable_imports,
            limits,
            tool_limits,
            annotations: ToolHints::from_policy(policy),
            risks: risks(policy, input.imports),
            imports,
        }
    }
}

fn grants_view(policy: &Policy) -> GrantsView {
    GrantsView {
        files: policy
            .files
            .iter()
            .map(|f| FileView {
                host: f.host.display().to_string(),
                guest: f.guest.clone(),
                access: f.access,
            })
            .collect(),
        env: policy
            .env
            .iter()
            .map(|e| EnvView {
                name: e.name.clone(),
                set_on_host: e.value.is_some(),
            })
            .collect(),
        network: policy.network.iter().map(|d| d.to_string()).collect(),
        sockets: SocketsView {
            connect: policy
                .sockets
                .connect
                .iter()
                .map(|p| p.to_string())
                .collect(),
            bind: policy.sockets.bind.iter().map(|p| p.to_string()).collect(),
            name_lookup: policy.sockets.name_lookup,
        },
        queue: policy.queue,
        peers: policy.peers,
        workflow: policy.workflow,
        client: policy.client,
    }
}

/// One line per thing a reviewer should know, most dangerous first. Grants the
/// component cannot use (it does not import the interface) are not risks.
fn risks(policy: &Policy, imports: &[String]) -> Vec<String> {
    let unused = unused_grants(imports, policy);
    let usable = |c: Capability| c.granted_by(policy) && !unused.contains(&c);
    let mut risks = Vec::new();
    if usable(Capability::Files) {
        for f in &policy.files {
            let verb = match f.access {
                FileAccess::ReadWrite => "can write",
                FileAccess::ReadOnly => "can read",
            };
            risks.push(format!("{verb} {} (as {})", f.host.display(), f.guest));
        }
    }
    if usable(Capability::Network) {
        for d in &policy.network {
            risks.push(format!("can reach {d}"));
        }
    }
    if usable(Capability::Sockets) {
        for p in &policy.sockets.connect {
            risks.push(format!("can open raw connections to {p}"));
        }
        for p in &policy.sockets.bind {
            risks.push(format!("can listen on {p}"));
        }
        if policy.sockets.name_lookup {
            risks.push("can resolve host names (DNS)".into());
        }
    }
    if usable(Capability::Queue) {
        if policy.queue.admin {
            risks.push("can administer the task queue (pause, clear, reprioritise)".into());
        }
        if policy.queue.submit {
            risks.push("can submit tasks to the queue".into());
        }
    }
    if usable(Capability::Peers) {
        risks.push(if policy.peers.admin {
            "can connect and disconnect this node's mesh peers".into()
        } else {
            "can read this node's mesh peers and their measurements".into()
        });
    }
    if usable(Capability::Workflow) {
        risks.push(if policy.workflow.admin {
            "can submit, follow and cancel workflows (each step calls a tool served here)".into()
        } else {
            "can submit and follow workflows (each step calls a tool served here)".into()
        });
    }
    if usable(Capability::Client) {
        if policy.client.sample {
            risks.push("can use the client's model (sampling, which costs the user)".into());
        }
        if policy.client.elicit {
            risks.push("can ask the user questions through the client (elicitation)".into());
        }
        if policy.client.roots {
            risks.push("can list the client's roots (the folders it shares)".into());
        }
    }
    if usable(Capability::Environment) {
        let names: Vec<_> = policy.env.iter().map(|e| e.name.as_str()).collect();
        risks.push(format!(
            "can read environment variables {}",
            names.join(", ")
        ));
    }
    if risks.is_empty() {
        risks.push(
            "no capabilities beyond the baseline (compute, clocks, random, captured output)".into(),
        );
    }
    risks
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflow_grants_are_risks_only_when_imported() {
        let mut policy = Policy::default();
        policy.workflow.submit = true;
        let imports = vec!["mcpplus:host/workflow@0.1.0".to_string()];
        let submit = risks(&policy, &imports);
        assert!(
            submit
                .iter()
                .any(|r| r.starts_with("can submit and follow workflows")),
            "{submit:?}"
        );
        policy.workflow.admin = true;
        let admin = risks(&policy, &imports);
        assert!(
            admin.iter().any(|r| r.contains("cancel workflows")),
            "{admin:?}"
        );
        // Granted but not imported: unused, so not a risk.
        let unused = risks(&policy, &[]);
        assert!(!unused.iter().any(|r| r.contains("workflow")), "{unused:?}");
        assert_eq!(grants_view(&policy).workflow, policy.workflow);
    }

    #[test]
    fn client_grants_are_one_risk_each_when_imported() {
        let mut policy = Policy::default();
        policy.client.elicit = true;
        policy.client.sample = true;
        let imports = vec!["mcpplus:host/client@0.1.0".to_string()];
        let granted = risks(&policy, &imports);
        assert!(
            granted.contains(&"can ask the user questions through the client (elicitation)".into()),
            "{granted:?}"
        );
        assert!(
            granted.contains(&"can use the client's model (sampling, which costs the user)".into()),
            "{granted:?}"
        );
        assert!(!granted.iter().any(|r| r.contains("roots")), "{granted:?}");
        // Granted but not imported: unused, so not a risk.
        let unused = risks(&policy, &[]);
        assert!(!unused.iter().any(|r| r.contains("client")), "{unused:?}");
        assert_eq!(grants_view(&policy).client, policy.client);
    }
}
