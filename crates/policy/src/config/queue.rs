//! `[queue]` in the operator config: the built-in worker and which tools run as
//! MCP tasks.
//!
//! ```toml
//! [queue]
//! workers = 4                  # slots of the built-in worker `local` (0: none)
//! lease_ms = 30000             # a claim lasts this long without a heartbeat
//! poll_ms = 1000               # idle slots look for work at least this often
//! long_running = ["count_to"]  # tools served as MCP tasks to clients that support them
//! task_required = ["render"]   # tools served only as MCP tasks (others get error -32021)
//! max_queued = 100000          # tasks waiting or running at once; more are refused
//! max_payload_bytes = 1048576  # a task's arguments plus metadata, as JSON
//! max_result_bytes = 10485760  # a task's result, as JSON (larger: the attempt fails)
//! retention_ms = 604800000     # finished tasks are deleted this long after they end (7 days)
//! backend = "sqlite"           # or "postgres": one database shared by many nodes
//! # with backend = "postgres":
//! # url = "postgres://mcpplus@db.internal:5432/mcpplus?sslmode=require"
//! # url_file = "/run/secrets/mcpplus-db-url"   # instead of url, to keep a password out of the config
//! # schema = "mcpplus"          # this deployment's tables (created if missing)
//! # ca_file = "/etc/mcpplus/db-ca.pem"         # CAs for TLS (default: the web's roots)
//! # pool_size = 16             # connections per node
//! ```

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// A database URL; `Debug` (logs, `mcpplus audit`) shows it with the
/// password masked.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(pub String);

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", redacted(&self.0))
    }
}

/// `url` with the password of its user info replaced by `***`.
pub fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Where the queue keeps its tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueBackend {
    /// A SQLite file in the node's data directory (one node).
    #[default]
    Sqlite,
    /// A PostgreSQL database that any number of nodes share.
    Postgres,
}

impl QueueBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueBackend::Sqlite => "sqlite",
            QueueBackend::Postgres => "postgres",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Slots of the worker `local` started with the server; 0 starts none
    /// (tasks then wait for `worker_register`).
    pub workers: u32,
    pub lease_ms: u64,
    pub poll_ms: u64,
    /// Tools whose calls become MCP tasks for clients that declare the
    /// `io.modelcontextprotocol/tasks` extension.
    pub long_running: Vec<String>,
    /// Tools that run only as MCP tasks: a client without the extension gets
    /// error -32021 naming it (the task tools still reach them).
    pub task_required: Vec<String>,
    /// Tasks queued or running at once; a submit beyond it is refused.
    pub max_queued: u64,
    /// A task's arguments plus metadata, as JSON bytes.
    pub max_payload_bytes: u64,
    /// A task's result, as JSON bytes; a larger one fails the attempt.
    pub max_result_bytes: u64,
    /// Finished tasks are deleted this long after they end (0: kept for ever).
    pub retention_ms: u64,
    /// `sqlite` (default) or `postgres`.
    pub backend: QueueBackend,
    /// The PostgreSQL URL (`backend = "postgres"`); shown with its password
    /// masked (see [`Self::database_url`]).
    pub url: Option<DatabaseUrl>,
    /// A file holding the URL instead (for secrets).
    pub url_file: Option<PathBuf>,
    /// The PostgreSQL schema of this deployment's tables.
    pub schema: String,
    /// PEM CA certificates to trust for TLS to the database.
    pub ca_file: Option<PathBuf>,
    /// Connections per node to the database.
    pub pool_size: u32,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            workers: 4,
            lease_ms: 30_000,
            poll_ms: 1_000,
            long_running: Vec::new(),
            task_required: Vec::new(),
            max_queued: 100_000,
            max_payload_bytes: 1 << 20,
            max_result_bytes: 10 << 20,
            retention_ms: 7 * 24 * 3_600_000,
            backend: QueueBackend::Sqlite,
            url: None,
            url_file: None,
            schema: "mcpplus".into(),
            ca_file: None,
            pool_size: 16,
        }
    }
}

impl QueueConfig {
    /// Refuse values that could never work, naming the key.
    pub fn check(&self) -> Result<(), String> {
        if self.workers > MAX_SLOTS {
            return Err(format!(
                "[queue] workers must be at most {MAX_SLOTS}, got {}",
                self.workers
            ));
        }
        if self.lease_ms < 300 {
            return Err(format!(
                "[queue] lease_ms must be at least 300 (workers heartbeat every third of it), got {}",
                self.lease_ms
            ));
        }
        if self.poll_ms == 0 {
            return Err("[queue] poll_ms must be greater than 0".into());
        }
        match self.backend {
            QueueBackend::Sqlite => {
                for (key, set) in [
                    ("url", self.url.is_some()),
                    ("url_file", self.url_file.is_some()),
                    ("ca_file", self.ca_file.is_some()),
                ] {
                    if set {
                        return Err(format!(
                            "[queue] {key} is for backend = \"postgres\"; add that line, or remove {key}"
                        ));
                    }
                }
            }
            QueueBackend::Postgres => {
                match (&self.url, &self.url_file) {
                    (None, None) => {
                        return Err("[queue] backend = \"postgres\" needs url = \"postgres://user@host/db\" or url_file = \"PATH\"".into());
                    }
                    (Some(_), Some(_)) => {
                        return Err("[queue] has both url and url_file; keep one".into());
                    }
                    _ => {}
                }
                check_schema(&self.schema)?;
                if self.pool_size == 0 || self.pool_size > 256 {
                    return Err(format!(
                        "[queue] pool_size must be between 1 and 256, got {}",
                        self.pool_size
                    ));
                }
            }
        }
        for (key, value) in [
            ("max_queued", self.max_queued),
            ("max_payload_bytes", self.max_payload_bytes),
            ("max_result_bytes", self.max_result_bytes),
        ] {
            if value == 0 {
                return Err(format!("[queue] {key} must be greater than 0"));
            }
        }
        Ok(())
    }

    pub fn lease(&self) -> Duration {
        Duration::from_millis(self.lease_ms)
    }

    pub fn poll(&self) -> Duration {
        Duration::from_millis(self.poll_ms)
    }

    /// The PostgreSQL URL: `url`, or the first line of `url_file`
    /// (`None` for the SQLite backend).
    pub fn database_url(&self) -> Result<Option<String>, String> {
        if self.backend != QueueBackend::Postgres {
            return Ok(None);
        }
        if let Some(url) = &self.url {
            return Ok(Some(url.0.clone()));
        }
        let path = self
            .url_file
            .as_ref()
            .ok_or("[queue] backend = \"postgres\" needs url or url_file")?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read [queue] url_file {}: {e}", path.display()))?;
        let url = text.lines().next().unwrap_or("").trim().to_string();
        if url.is_empty() {
            return Err(format!("[queue] url_file {} is empty", path.display()));
        }
        Ok(Some(url))
    }

    /// What the store enforces on every submit and outcome.
    pub fn quotas(&self) -> Quotas {
        Quotas {
            max_queued: self.max_queued,
            max_payload_bytes: self.max_payload_bytes,
            max_result_bytes: self.max_result_bytes,
        }
    }
}

/// Bounds on what submitters and tools can make the queue hold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quotas {
    pub max_queued: u64,
    pub max_payload_bytes: u64,
    pub max_result_bytes: u64,
}

impl Default for Quotas {
    fn default() -> Self {
        QueueConfig::default().quotas()
    }
}

/// The most slots one worker may have.
pub const MAX_SLOTS: u32 = 64;

/// Lower-case letters, digits and `_`, starting with a letter or `_`, at most
/// 40 characters: a schema name safe to use in SQL and channel names.
pub fn check_schema(schema: &str) -> Result<(), String> {
    let first_ok = schema
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    if first_ok
        && schema.len() <= 40
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        Ok(())
    } else {
        Err(format!(
            "[queue] schema must be lower-case letters, digits and `_`, starting with a letter or `_`, at most 40 characters; got {schema:?}"
        ))
    }
}
