//! What a running guest tells its caller besides its result: log lines and
//! progress. The runtime only sends these down a channel; the protocol layer
//! decides what reaches the client (MCP `notifications/message` and
//! `notifications/progress`).

use tokio::sync::mpsc;

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
}
