//! What a running guest exchanges with its caller besides arguments and
//! result: log lines and progress (sent down a channel; the protocol layer
//! decides what reaches the client as MCP `notifications/message` and
//! `notifications/progress`), and requests to the MCP client that made the
//! call (`mcpplus:host/client`, through the [`ClientLink`] the protocol layer
//! gives).

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::capabilities::client::ClientLink;

use mcpplus_policy::config::GuestLogLevel;

#[derive(Debug, Clone, PartialEq)]
pub enum GuestSignal {
    Log {
        level: GuestLogLevel,
        message: String,
        fields: Vec<(String, String)>,
    },
    Progress {
        progress: f64,
        total: Option<f64>,
        message: Option<String>,
    },
}

/// Where a call's signals go, and which of them the client wants.
#[derive(Debug, Clone)]
pub struct CallObserver {
    pub signals: mpsc::UnboundedSender<GuestSignal>,
    /// Forward guest log lines at this level or above (`None`: none).
    pub client_log_level: Option<GuestLogLevel>,
    /// Forward progress (the request carried a progress token).
    pub wants_progress: bool,
    /// The MCP client that made the call, for `mcpplus:host/client`; `None`
    /// when no client did (a queue task): asking then fails.
    pub client: Option<Arc<dyn ClientLink>>,
}
