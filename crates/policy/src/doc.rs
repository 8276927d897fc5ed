//! The policy file as written: TOML, deny by default, every key documented in
//! docs/security.md. Values that are checked after parsing (paths, addresses,
//! patterns) keep their source span so an error can name the line.
//!
//! ```toml
//! # tools/notes.policy.toml, beside tools/notes.wasm
//! sha256 = "9c17…"                  # optional: load only this exact build
//! env = ["NOTES_LANG"]               # variables by name, values from the host
//!
//! [[files]]
//! host = "./notes-data"              # relative to this file
//! guest = "/data"
//! access = "read-write"              # or "read-only" (the default)
//!
//! [network]                          # outbound HTTP through the host
//! allow = ["https://api.example.com", "https://*.example.org:8443"]
//!
//! [sockets]                          # raw wasi:sockets, refused unless listed
//! connect = ["127.0.0.1:5432"]
//! bind = []
//! name_lookup = false
//!
//! [queue]
//! submit = true
//! admin = false
//!
//! [peers]
//! read = true                        # list peers and their measured facts
//! admin = false                      # connect and disconnect peers
//!
//! [workflow]
//! submit = true                      # submit and follow workflows
//! admin = false                      # also cancel them
//!
//! [client]                           # ask the MCP client that made the call
//! elicit = true                      # the user (elicitation/create)
//! sample = false                     # the client's model (sampling/createMessage)
//! roots = false                      # the client's roots (roots/list)
//!
//! [limits]                           # same keys as the operator config's [limits]
//! timeout_ms = 60000
//! ```

use serde::Deserialize;
use toml::Spanned;

use crate::config::LimitOverrides;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDoc {
    pub sha256: Option<Spanned<String>>,
    #[serde(default)]
    pub files: Vec<FileGrantDoc>,
    #[serde(default)]
    pub env: Vec<Spanned<String>>,
    #[serde(default)]
    pub network: NetworkDoc,
    #[serde(default)]
    pub sockets: SocketsDoc,
    #[serde(default)]
    pub queue: QueueDoc,
    #[serde(default)]
    pub peers: PeersDoc,
    #[serde(default)]
    pub workflow: WorkflowDoc,
    #[serde(default)]
    pub client: ClientDoc,
    #[serde(default)]
    pub cache: CacheDoc,
    #[serde(default)]
    pub limits: LimitOverrides,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileGrantDoc {
    pub host: Spanned<String>,
    pub guest: Spanned<String>,
    #[serde(default)]
    pub access: FileAccess,
}

/// What a file grant lets the guest do under its directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum FileAccess {
    /// Read files and list directories; every write, create, rename, delete and
    /// truncate is refused.
    #[default]
    #[serde(rename = "read-only")]
    ReadOnly,
    #[serde(rename = "read-write")]
    ReadWrite,
}

impl FileAccess {
    pub fn as_str(self) -> &'static str {
        match self {
            FileAccess::ReadOnly => "read-only",
            FileAccess::ReadWrite => "read-write",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkDoc {
    #[serde(default)]
    pub allow: Vec<Spanned<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SocketsDoc {
    #[serde(default)]
    pub connect: Vec<Spanned<String>>,
    #[serde(default)]
    pub bind: Vec<Spanned<String>>,
    #[serde(default)]
    pub name_lookup: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueDoc {
    #[serde(default)]
    pub submit: bool,
    #[serde(default)]
    pub admin: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeersDoc {
    #[serde(default)]
    pub read: bool,
    #[serde(default)]
    pub admin: bool,
}

/// `[cache]`: tools whose successful results a workflow step may reuse
/// (docs/workflows.md, "Result cache").
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheDoc {
    #[serde(default)]
    pub tools: Vec<String>,
    /// How long a result stays usable; required when the component is
    /// granted anything of the outside world.
    #[serde(default)]
    pub ttl_s: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowDoc {
    #[serde(default)]
    pub submit: bool,
    #[serde(default)]
    pub admin: bool,
}

/// `[client]`: which requests a component may send the MCP client that made
/// a call (`mcpplus:host/client`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientDoc {
    #[serde(default)]
    pub elicit: bool,
    #[serde(default)]
    pub sample: bool,
    #[serde(default)]
    pub roots: bool,
}
