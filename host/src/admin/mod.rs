//! The admin endpoint: change the tool set of a running server without a
//! restart (`mcpplus tools list|load|unload|reload`).
//!
//! It is a Unix socket, never a network port: the socket file is created mode
//! 0600 in a 0700 folder, and each connection's peer credentials must match the
//! socket's owner, so only the user running the server can use it. Not reachable
//! through MCP: any connected client could otherwise load code.
//!
//! Protocol: one JSON request per line, one JSON reply per line.

pub mod client;
pub mod server;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::toolset::{ChangeReport, ComponentInfo};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "lowercase")]
pub enum AdminRequest {
    List,
    Load {
        path: PathBuf,
    },
    Unload {
        name: String,
    },
    Reload {
        name: String,
    },
    /// Every circuit breaker's state.
    Breakers,
    /// The mesh peers this node allows, and their state.
    Peers,
    /// Close one destination's breaker now.
    #[serde(rename = "breaker-reset")]
    BreakerReset {
        destination: String,
    },
    /// Enqueue a task in a peer's queue (it must give this node `submit`).
    #[serde(rename = "peer-submit")]
    PeerSubmit {
        peer: String,
        submission: mcpplus_mesh::protocol::Submission,
    },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdminReply {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub components: Option<Vec<serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub breakers: Option<Vec<serde_json::Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<serde_json::Value>>,
    /// A task a peer accepted: `{peer, id, state, new}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted: Option<serde_json::Value>,
}

impl AdminReply {
    pub fn error(message: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(message.into()),
            components: None,
            change: None,
            breakers: None,
            peers: None,
            submitted: None,
        }
    }

    pub fn components(list: Vec<ComponentInfo>) -> Self {
        Self {
            ok: true,
            error: None,
            components: Some(
                list.iter()
                    .map(|c| serde_json::to_value(c).unwrap_or_default())
                    .collect(),
            ),
            change: None,
            breakers: None,
            peers: None,
            submitted: None,
        }
    }

    pub fn change(change: &ChangeReport) -> Self {
        Self {
            ok: true,
            error: None,
            components: None,
            change: Some(serde_json::to_value(change).unwrap_or_default()),
            breakers: None,
            peers: None,
            submitted: None,
        }
    }

    pub fn breakers(list: Vec<serde_json::Value>) -> Self {
        Self {
            ok: true,
            error: None,
            components: None,
            change: None,
            breakers: Some(list),
            peers: None,
            submitted: None,
        }
    }

    pub fn peers(list: Vec<serde_json::Value>) -> Self {
        Self {
            ok: true,
            peers: Some(list),
            ..Self::default()
        }
    }

    pub fn submitted(task: serde_json::Value) -> Self {
        Self {
            ok: true,
            submitted: Some(task),
            ..Self::default()
        }
    }
}

/// `$MCPPLUS_ADMIN_SOCKET` is read by clap; this is the default beneath it:
/// `$XDG_RUNTIME_DIR/mcpplus/admin.sock`, else `~/.cache/mcpplus/admin.sock`.
pub fn default_socket() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("mcpplus/admin.sock"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/mcpplus/admin.sock"))
}
