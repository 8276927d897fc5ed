//! Capability policy: what each component is granted, deny by default.
//!
//! A component's policy is either the file beside it (`notes.wasm` →
//! `notes.policy.toml`) or a `[policies.notes]` table in the operator config;
//! giving both is an error, giving neither grants nothing. A policy is checked
//! whole before its component loads: a typo, an unknown capability, a directory
//! that does not exist or a digest that does not match refuses the component with
//! the file, line and key, and nothing else changes.

pub mod config;
pub mod doc;
pub mod grants;
pub mod hints;
pub mod imports;
pub mod report;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::Spanned;

use crate::config::{LimitOverrides, OperatorConfig};
pub use doc::{FileAccess, PolicyDoc};
pub use grants::{
    ClientGrants, Destination, EnvGrant, FileGrant, HostPattern, PeerGrants, QueueGrants, Scheme,
    SocketGrants, SocketPattern, WorkflowGrants, destination_key,
};

/// A component's checked grants.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    /// Where the grants came from; `None` when there is no policy (nothing granted).
    pub source: Option<String>,
    /// The pinned sha256, if any (already checked against the component).
    pub sha256: Option<String>,
    pub files: Vec<FileGrant>,
    pub env: Vec<EnvGrant>,
    pub network: Vec<Destination>,
    pub sockets: SocketGrants,
    pub queue: QueueGrants,
    pub peers: PeerGrants,
    pub workflow: WorkflowGrants,
    /// What it may ask the MCP client that made a call (`[client]`).
    pub client: ClientGrants,
    /// Tools whose results workflow steps may reuse (`[cache]`).
    pub cache: CacheRule,
    pub limits: LimitOverrides,
}

/// `[cache]`: which tools' successful results a workflow step may reuse,
/// and for how long (`None`: until the component changes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheRule {
    pub tools: Vec<String>,
    pub ttl_s: Option<u64>,
}

impl CacheRule {
    /// How long `tool`'s results may be reused, if they may: `Some(None)`
    /// for as long as the component is the same.
    pub fn ttl_for(&self, tool: &str) -> Option<Option<u64>> {
        self.tools.iter().any(|t| t == tool).then_some(self.ttl_s)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{path}: cannot read the policy: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// `location` is "file: line N: key" or as much of it as is known.
    #[error("{location}: {message}")]
    Invalid { location: String, message: String },
    #[error(
        "component `{component}` ({path}) has sha256 {actual}, but its policy ({policy}) pins {pinned}; load the build the policy names, or update the pin after review"
    )]
    DigestMismatch {
        component: String,
        path: PathBuf,
        actual: String,
        pinned: String,
        policy: String,
    },
    #[error(
        "component `{component}` has two policies, {first} and {second}; keep one (a policy comes from exactly one place)"
    )]
    Conflict {
        component: String,
        first: String,
        second: String,
    },
}

/// Where a policy's text came from: enough to turn a span into "file: line N".
struct Origin<'a> {
    path: &'a Path,
    text: &'a str,
    /// Relative host paths are resolved against this directory.
    base_dir: PathBuf,
    /// Prefix of every key in error messages (`policies.notes.` in the operator config).
    key_prefix: String,
}

impl Origin<'_> {
    fn describe(&self) -> String {
        if self.key_prefix.is_empty() {
            self.path.display().to_string()
        } else {
            format!(
                "{} [{}]",
                self.path.display(),
                self.key_prefix.trim_end_matches('.')
            )
        }
    }

    fn error<T>(&self, value: &Spanned<T>, key: &str, message: impl Into<String>) -> PolicyError {
        let line = line_of(self.text, value.span().start);
        PolicyError::Invalid {
            location: format!(
                "{}: line {line}: {}{key}",
                self.path.display(),
                self.key_prefix
            ),
            message: message.into(),
        }
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// The policy file that belongs beside `component_path`.
pub fn policy_path_for(component_path: &Path) -> PathBuf {
    let stem = component_path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    component_path.with_file_name(format!("{stem}.policy.toml"))
}

impl Policy {
    /// The policy of component `name` at `component_path` with sha256 `digest`:
    /// its policy file, or its `[policies.NAME]` table, or nothing granted.
    pub fn for_component(
        name: &str,
        component_path: &Path,
        digest: &str,
        config: &OperatorConfig,
    ) -> Result<Policy, PolicyError> {
        let file = policy_path_for(component_path);
        let from_file = match std::fs::read_to_string(&file) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(PolicyError::Read { path: file, source }),
        };
        let from_config = config.policies.get(name);
        let policy = match (from_file, from_config) {
            (Some(_), Some(_)) => {
                let config_path = config
                    .origin
                    .as_ref()
                    .map_or("the operator config".into(), |o| {
                        o.path.display().to_string()
                    });
                return Err(PolicyError::Conflict {
                    component: name.to_string(),
                    first: file.display().to_string(),
                    second: format!("[policies.{name}] in {config_path}"),
                });
            }
            (Some(text), None) => {
                let doc = parse_doc(&file, &text)?;
                let origin = Origin {
                    path: &file,
                    text: &text,
                    base_dir: parent_dir(&file),
                    key_prefix: String::new(),
                };
                resolve(&doc, &origin)?
            }
            (None, Some(doc)) => {
                let (path, text) = match &config.origin {
                    Some(o) => (o.path.clone(), o.text.clone()),
                    None => (PathBuf::from("operator config"), Arc::from("")),
                };
                let origin = Origin {
                    path: &path,
                    text: &text,
                    base_dir: parent_dir(&path),
                    key_prefix: format!("policies.{name}."),
                };
                resolve(doc, &origin)?
            }
            (None, None) => Policy::default(),
        };
        if let Some(pinned) = &policy.sha256
            && pinned != digest
        {
            return Err(PolicyError::DigestMismatch {
                component: name.to_string(),
                path: component_path.to_owned(),
                actual: digest.to_string(),
                pinned: pinned.clone(),
                policy: policy.source.clone().unwrap_or_default(),
            });
        }
        Ok(policy)
    }

    /// Parse and check policy text on its own (for tests and `mcpplus audit`).
    pub fn parse(path: &Path, text: &str) -> Result<Policy, PolicyError> {
        let doc = parse_doc(path, text)?;
        resolve(
            &doc,
            &Origin {
                path,
                text,
                base_dir: parent_dir(path),
                key_prefix: String::new(),
            },
        )
    }

    /// True when no capability beyond the baseline is granted.
    pub fn grants_nothing(&self) -> bool {
        self.files.is_empty()
            && self.env.is_empty()
            && self.network.is_empty()
            && !self.sockets.any()
            && self.queue == QueueGrants::default()
            && self.peers == PeerGrants::default()
            && self.workflow == WorkflowGrants::default()
            && !self.client.any()
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

fn parse_doc(path: &Path, text: &str) -> Result<PolicyDoc, PolicyError> {
    toml::from_str(text).map_err(|e| {
        let line = e
            .span()
            .map(|s| format!(": line {}", line_of(text, s.start)))
            .unwrap_or_default();
        let message = e.message().to_string();
        // serde says "unknown field"; for a policy that is an unknown capability.
        let message = match message.strip_prefix("unknown field") {
            Some(rest) => format!("unknown capability or key{rest}"),
            None => message,
        };
        PolicyError::Invalid {
            location: format!("{}{line}", path.display()),
            message,
        }
    })
}

/// Host directories that are never granted: they expose the host itself.
const FORBIDDEN_ROOTS: [&str; 3] = ["/proc", "/sys", "/dev"];

fn resolve(doc: &PolicyDoc, origin: &Origin<'_>) -> Result<Policy, PolicyError> {
    let section = format!("{}limits", origin.key_prefix);
    doc.limits
        .check(&section)
        .map_err(|message| PolicyError::Invalid {
            location: origin.path.display().to_string(),
            message,
        })?;
    let mut policy = Policy {
        source: Some(origin.describe()),
        limits: doc.limits.clone(),
        queue: QueueGrants {
            submit: doc.queue.submit,
            admin: doc.queue.admin,
        },
        peers: PeerGrants {
            read: doc.peers.read,
            admin: doc.peers.admin,
        },
        workflow: WorkflowGrants {
            submit: doc.workflow.submit,
            admin: doc.workflow.admin,
        },
        client: ClientGrants {
            elicit: doc.client.elicit,
            sample: doc.client.sample,
            roots: doc.client.roots,
        },
        ..Policy::default()
    };
    if let Some(pin) = &doc.sha256 {
        let hex = pin.get_ref().trim().to_ascii_lowercase();
        if hex.len() != 64 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(origin.error(
                pin,
                "sha256",
                "must be 64 hex digits (the output of `sha256sum COMPONENT.wasm` or `mcpplus audit`)",
            ));
        }
        policy.sha256 = Some(hex);
    }

    let mut guest_paths = BTreeSet::new();
    for (i, grant) in doc.files.iter().enumerate() {
        let key = |k: &str| format!("files[{i}].{k}");
        let host = origin.base_dir.join(grant.host.get_ref());
        let host = std::fs::canonicalize(&host).map_err(|e| {
            origin.error(
                &grant.host,
                &key("host"),
                format!(
                    "directory {} cannot be granted: {e}; create it or fix the path",
                    host.display()
                ),
            )
        })?;
        if !host.is_dir() {
            return Err(origin.error(
                &grant.host,
                &key("host"),
                format!(
                    "{} is not a directory; grant the directory that holds it",
                    host.display()
                ),
            ));
        }
        if FORBIDDEN_ROOTS
            .iter()
            .any(|root| host.starts_with(root) || Path::new(root).starts_with(&host))
        {
            return Err(origin.error(
                &grant.host,
                &key("host"),
                format!(
                    "{} is or contains {} which expose the host itself; grant a data directory instead",
                    host.display(),
                    FORBIDDEN_ROOTS.join(", ")
                ),
            ));
        }
        let guest = normalize_guest_path(grant.guest.get_ref())
            .map_err(|m| origin.error(&grant.guest, &key("guest"), m))?;
        if !guest_paths.insert(guest.clone()) {
            return Err(origin.error(
                &grant.guest,
                &key("guest"),
                format!("guest path {guest} is granted twice; give each grant its own path"),
            ));
        }
        policy.files.push(FileGrant {
            host,
            guest,
            access: grant.access,
        });
    }

    let mut names = BTreeSet::new();
    for (i, name) in doc.env.iter().enumerate() {
        let n = name.get_ref();
        let valid = !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
        if !valid {
            return Err(origin.error(
                name,
                &format!("env[{i}]"),
                format!(
                    "`{n}` is not a variable name; name each variable exactly (no wildcards: the host's whole environment is never granted)"
                ),
            ));
        }
        if !names.insert(n.clone()) {
            return Err(origin.error(name, &format!("env[{i}]"), format!("`{n}` is listed twice")));
        }
        policy.env.push(EnvGrant {
            name: n.clone(),
            value: std::env::var(n).ok(),
        });
    }

    for (i, text) in doc.network.allow.iter().enumerate() {
        let destination = Destination::parse(text.get_ref())
            .map_err(|m| origin.error(text, &format!("network.allow[{i}]"), m))?;
        policy.network.push(destination);
    }
    for (list, out, key) in [
        (&doc.sockets.connect, &mut policy.sockets.connect, "connect"),
        (&doc.sockets.bind, &mut policy.sockets.bind, "bind"),
    ] {
        for (i, text) in list.iter().enumerate() {
            let pattern = SocketPattern::parse(text.get_ref())
                .map_err(|m| origin.error(text, &format!("sockets.{key}[{i}]"), m))?;
            out.push(pattern);
        }
    }
    policy.sockets.name_lookup = doc.sockets.name_lookup;
    policy.cache = cache_rule(doc, &policy).map_err(|message| PolicyError::Invalid {
        location: format!("{}: {}cache", origin.path.display(), origin.key_prefix),
        message,
    })?;
    Ok(policy)
}

/// `[cache]`, checked: a component that reaches the outside world gives
/// results that change without the component changing, so it must say how
/// long one stays usable.
fn cache_rule(doc: &PolicyDoc, policy: &Policy) -> Result<CacheRule, String> {
    let rule = CacheRule {
        tools: doc.cache.tools.clone(),
        ttl_s: doc.cache.ttl_s,
    };
    if let Some(tool) = rule.tools.iter().find(|t| t.trim().is_empty()) {
        return Err(format!("tools has an empty name ({tool:?})"));
    }
    if rule.ttl_s == Some(0) {
        return Err("ttl_s must be at least 1 (leave [cache] out to cache nothing)".into());
    }
    if rule.tools.is_empty() || rule.ttl_s.is_some() {
        return Ok(rule);
    }
    let mut outside = Vec::new();
    if !policy.network.is_empty() {
        outside.push("network");
    }
    if policy.sockets.any() {
        outside.push("sockets");
    }
    if policy
        .files
        .iter()
        .any(|f| f.access != doc::FileAccess::ReadOnly)
    {
        outside.push("read-write files");
    }
    if policy.queue != QueueGrants::default() {
        outside.push("queue");
    }
    if policy.peers != PeerGrants::default() {
        outside.push("peers");
    }
    if policy.workflow != WorkflowGrants::default() {
        outside.push("workflow");
    }
    // The user's answers, the client's model and roots change between calls.
    if policy.client.any() {
        outside.push("client");
    }
    if outside.is_empty() {
        return Ok(rule);
    }
    Err(format!(
        "tools {:?} would be cached for ever, but this component is granted {}, so its results can change while it stays the same; set ttl_s (seconds a result stays usable)",
        rule.tools,
        outside.join(", ")
    ))
}

/// An absolute guest path without `.`/`..`/empty segments or a trailing slash.
pub fn normalize_guest_path(path: &str) -> Result<String, String> {
    if !path.starts_with('/') {
        return Err(format!("guest path `{path}` must be absolute, e.g. /data"));
    }
    let mut segments = Vec::new();
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        if segment == "." || segment == ".." {
            return Err(format!("guest path `{path}` must not contain `.` or `..`"));
        }
        segments.push(segment);
    }
    Ok(format!("/{}", segments.join("/")))
}

#[cfg(test)]
mod tests;
