//! The operator config file (TOML): default call limits, per-component and per-tool
//! overrides, and server-wide caps. Every setting has a default that works on a
//! laptop, so the file is optional; see docs/operators.md for the reference.
//!
//! ```toml
//! [limits]                 # defaults for every tool
//! timeout_ms = 30000
//! memory_mib = 256
//! max_concurrency = 8      # simultaneous instances of one tool
//! max_queued = 64          # calls waiting for a slot before "busy"
//! output_kib = 64          # guest stdout/stderr kept per call and stream
//! result_kib = 4096        # largest result sent to a client
//!
//! [server]
//! max_concurrency = 32     # simultaneous calls over all tools
//! max_queued = 256
//!
//! [components.py_stats]    # every tool of one component
//! timeout_ms = 60000
//!
//! [tools.echo]             # one tool (its MCP name); wins over its component
//! max_concurrency = 64
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

pub mod http;
pub mod mesh;
pub mod outbound;
pub mod queue;

use crate::PolicyDoc;

/// The whole operator config.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorConfig {
    #[serde(default)]
    pub limits: LimitOverrides,
    #[serde(default)]
    pub server: ServerLimits,
    #[serde(default)]
    pub components: BTreeMap<String, LimitOverrides>,
    #[serde(default)]
    pub tools: BTreeMap<String, LimitOverrides>,
    /// Capability policies by component name, for components without a policy
    /// file beside them (same format as that file; see docs/security.md).
    #[serde(default)]
    pub policies: BTreeMap<String, PolicyDoc>,
    /// Outbound HTTP: timeouts, retries, size caps, circuit breakers.
    #[serde(default)]
    pub outbound: crate::config::outbound::OutboundConfig,
    /// The task queue: the built-in worker, long-running tools.
    #[serde(default)]
    pub queue: crate::config::queue::QueueConfig,
    /// The mesh of nodes sharing their queues (docs/mesh.md).
    #[serde(default)]
    pub mesh: crate::config::mesh::MeshConfig,
    /// Who may use the HTTP endpoint (tokens, OAuth).
    #[serde(default)]
    pub http: crate::config::http::HttpConfig,
    /// Where the config came from, so a policy error can name the file and line.
    #[serde(skip)]
    pub origin: Option<ConfigOrigin>,
}

/// The config file's path and text.
#[derive(Debug, Clone)]
pub struct ConfigOrigin {
    pub path: std::path::PathBuf,
    pub text: std::sync::Arc<str>,
}

/// Limits as written in the file: anything left out is inherited.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    pub timeout_ms: Option<u64>,
    pub memory_mib: Option<u64>,
    pub max_concurrency: Option<u32>,
    pub max_queued: Option<u32>,
    pub output_kib: Option<u64>,
    pub result_kib: Option<u64>,
    /// Least important guest log level kept (`trace` … `error`).
    pub log_level: Option<GuestLogLevel>,
    /// Guest log lines kept per second per call (bursts up to the same number).
    pub log_lines_per_second: Option<u32>,
    /// Only as `[limits.max]` in the operator config: ceilings that a policy
    /// beside a component cannot exceed (its values are lowered to them).
    pub max: Option<Box<LimitOverrides>>,
}

/// The level of a guest log line (the `mcpplus:host/log` levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GuestLogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Server-wide caps over all tools.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerLimits {
    #[serde(default = "default_global_concurrency")]
    pub max_concurrency: u32,
    #[serde(default = "default_global_queue")]
    pub max_queued: u32,
    /// The largest request a client may send (an HTTP body, a stdio line), in
    /// bytes: it bounds what one call's arguments can make the host hold.
    #[serde(default = "default_max_request_bytes")]
    pub max_request_bytes: usize,
}

fn default_max_request_bytes() -> usize {
    4 << 20
}

fn default_global_concurrency() -> u32 {
    32
}
fn default_global_queue() -> u32 {
    256
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            max_concurrency: default_global_concurrency(),
            max_queued: default_global_queue(),
            max_request_bytes: default_max_request_bytes(),
        }
    }
}

/// The limits one call runs under, fully resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct CallLimits {
    /// Wall-clock time a call may run, waiting for a slot included.
    pub timeout: Duration,
    /// Linear memory one call's instance may grow to, in bytes.
    pub memory_bytes: usize,
    /// Simultaneous instances of this tool.
    pub max_concurrency: u32,
    /// Calls of this tool that may wait for a slot; more are refused as busy.
    pub max_queued: u32,
    /// Bytes kept of each of the guest's stdout and stderr.
    pub output_bytes: usize,
    /// Largest result (content + structured content, as JSON) sent to the client.
    pub result_bytes: usize,
    /// Guest log lines below this level are dropped.
    pub log_level: GuestLogLevel,
    /// Guest log lines kept per second of one call.
    pub log_lines_per_second: u32,
}

impl Default for CallLimits {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            memory_bytes: 256 << 20,
            max_concurrency: 8,
            max_queued: 64,
            output_bytes: 64 << 10,
            result_bytes: 4 << 20,
            log_level: GuestLogLevel::Info,
            log_lines_per_second: 100,
        }
    }
}

impl LimitOverrides {
    /// Refuse settings that could never work, naming the `[section]` and key.
    pub fn check(&self, section: &str) -> Result<(), String> {
        let zero = [
            ("timeout_ms", self.timeout_ms == Some(0)),
            ("memory_mib", self.memory_mib == Some(0)),
            ("max_concurrency", self.max_concurrency == Some(0)),
            ("result_kib", self.result_kib == Some(0)),
        ];
        if let Some((key, _)) = zero.iter().find(|(_, z)| *z) {
            return Err(format!("[{section}] {key} must be greater than 0"));
        }
        if self.memory_mib.is_some_and(|m| m > 64 * 1024) {
            return Err(format!(
                "[{section}] memory_mib must be at most 65536 (64 GiB)"
            ));
        }
        if let Some(max) = &self.max {
            if section != "limits" {
                return Err(format!(
                    "[{section}.max] is not allowed: ceilings belong in the operator config's [limits.max]"
                ));
            }
            if max.max.is_some() {
                return Err("[limits.max.max] is not allowed".into());
            }
            max.check("limits.max")?;
        }
        Ok(())
    }

    /// These settings lowered to the ceilings in `max` (a setting above its
    /// ceiling becomes the ceiling; one left out stays inherited).
    pub fn capped(&self, max: &LimitOverrides) -> LimitOverrides {
        fn cap<T: Ord + Copy>(value: Option<T>, ceiling: Option<T>) -> Option<T> {
            match (value, ceiling) {
                (Some(v), Some(c)) => Some(v.min(c)),
                (v, _) => v,
            }
        }
        LimitOverrides {
            timeout_ms: cap(self.timeout_ms, max.timeout_ms),
            memory_mib: cap(self.memory_mib, max.memory_mib),
            max_concurrency: cap(self.max_concurrency, max.max_concurrency),
            max_queued: cap(self.max_queued, max.max_queued),
            output_kib: cap(self.output_kib, max.output_kib),
            result_kib: cap(self.result_kib, max.result_kib),
            log_level: self.log_level,
            log_lines_per_second: cap(self.log_lines_per_second, max.log_lines_per_second),
            max: None,
        }
    }
}

impl CallLimits {
    /// These limits with `o`'s settings applied on top.
    pub fn with(&self, o: &LimitOverrides) -> CallLimits {
        CallLimits {
            timeout: o.timeout_ms.map_or(self.timeout, Duration::from_millis),
            memory_bytes: o
                .memory_mib
                .map_or(self.memory_bytes, |m| (m as usize) << 20),
            max_concurrency: o.max_concurrency.unwrap_or(self.max_concurrency),
            max_queued: o.max_queued.unwrap_or(self.max_queued),
            output_bytes: o
                .output_kib
                .map_or(self.output_bytes, |k| (k as usize) << 10),
            result_bytes: o
                .result_kib
                .map_or(self.result_bytes, |k| (k as usize) << 10),
            log_level: o.log_level.unwrap_or(self.log_level),
            log_lines_per_second: o.log_lines_per_second.unwrap_or(self.log_lines_per_second),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the config file: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl OperatorConfig {
    /// Read and check a config file. Errors name the file, the line and the key.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let mut config = Self::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        })?;
        config.origin = Some(ConfigOrigin {
            path: path.to_owned(),
            text: text.into(),
        });
        Ok(config)
    }

    /// Parse config text; the error says where and what to fix.
    pub fn parse(text: &str) -> Result<Self, String> {
        let config: OperatorConfig = toml::from_str(text).map_err(|e| {
            let location = e
                .span()
                .map(|span| {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    format!("line {line}: ")
                })
                .unwrap_or_default();
            format!("{location}{}", e.message())
        })?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        let sections = std::iter::once(("limits".to_string(), &self.limits))
            .chain(
                self.components
                    .iter()
                    .map(|(k, v)| (format!("components.{k}"), v)),
            )
            .chain(self.tools.iter().map(|(k, v)| (format!("tools.{k}"), v)));
        for (name, o) in sections {
            o.check(&name)?;
        }
        for (name, policy) in &self.policies {
            policy.limits.check(&format!("policies.{name}.limits"))?;
        }
        self.outbound.check()?;
        self.queue.check()?;
        self.mesh.check()?;
        if self.server.max_concurrency == 0 {
            return Err("[server] max_concurrency must be greater than 0".into());
        }
        Ok(())
    }

    /// The limits for `tool` of `component`: defaults, then `[limits]`, then the
    /// component policy's `[limits]`, then the component's section, then the tool's.
    pub fn limits_for(
        &self,
        base: &CallLimits,
        component: &str,
        policy: &LimitOverrides,
        tool: &str,
    ) -> CallLimits {
        let capped;
        let policy = match &self.limits.max {
            Some(max) => {
                capped = policy.capped(max);
                &capped
            }
            None => policy,
        };
        let mut limits = base.with(&self.limits).with(policy);
        if let Some(o) = self.components.get(component) {
            limits = limits.with(o);
        }
        if let Some(o) = self.tools.get(tool) {
            limits = limits.with(o);
        }
        limits
    }

    /// The largest memory limit any tool may get (sizes the pooling allocator).
    pub fn max_memory_bytes(&self, base: &CallLimits) -> usize {
        std::iter::once(&self.limits)
            .chain(self.components.values())
            .chain(self.tools.values())
            .chain(self.policies.values().map(|p| &p.limits))
            .map(|o| base.with(&self.limits).with(o).memory_bytes)
            .max()
            .unwrap_or(base.memory_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_policy_cannot_exceed_the_operator_ceiling() {
        let config = OperatorConfig::parse(
            "[limits]\ntimeout_ms = 2000\n[limits.max]\ntimeout_ms = 10000\nmemory_mib = 64\n",
        )
        .unwrap();
        let base = CallLimits::default();
        let greedy = LimitOverrides {
            timeout_ms: Some(600_000),
            memory_mib: Some(4096),
            ..LimitOverrides::default()
        };
        let limits = config.limits_for(&base, "c", &greedy, "t");
        assert_eq!(limits.timeout, Duration::from_secs(10));
        assert_eq!(limits.memory_bytes, 64 << 20);
        // Below the ceiling, the policy's own value stands.
        let modest = LimitOverrides {
            timeout_ms: Some(5_000),
            ..LimitOverrides::default()
        };
        assert_eq!(
            config.limits_for(&base, "c", &modest, "t").timeout,
            Duration::from_secs(5)
        );
        let e = OperatorConfig::parse(
            "[components.x]\ntimeout_ms = 1\n[components.x.max]\ntimeout_ms = 2\n",
        )
        .unwrap_err();
        assert!(e.contains("[limits.max]"), "{e}");
    }

    #[test]
    fn overrides_apply_in_order() {
        let config = OperatorConfig::parse(
            "[limits]\ntimeout_ms = 1000\n[components.c]\ntimeout_ms = 2000\nmemory_mib = 32\n[tools.t]\nmemory_mib = 16\n",
        )
        .unwrap();
        let base = CallLimits::default();
        let t = config.limits_for(&base, "c", &LimitOverrides::default(), "t");
        assert_eq!(
            (t.timeout, t.memory_bytes),
            (Duration::from_millis(2000), 16 << 20)
        );
        let other = config.limits_for(&base, "c", &LimitOverrides::default(), "other");
        assert_eq!(
            (other.timeout, other.memory_bytes),
            (Duration::from_millis(2000), 32 << 20)
        );
        let elsewhere = config.limits_for(&base, "d", &LimitOverrides::default(), "x");
        assert_eq!(elsewhere.timeout, Duration::from_millis(1000));
        assert_eq!(config.max_memory_bytes(&base), 256 << 20);
    }

    #[test]
    fn errors_say_where_and_what() {
        let err = OperatorConfig::parse("[limits]\ntimeout_ms = 5\ntimeuot = 3\n").unwrap_err();
        assert!(
            err.starts_with("line 3: ") && err.contains("unknown field `timeuot`"),
            "{err}"
        );
        let err = OperatorConfig::parse("[tools.echo]\nmax_concurrency = 0\n").unwrap_err();
        assert_eq!(err, "[tools.echo] max_concurrency must be greater than 0");
        let err = OperatorConfig::parse("[limits]\nmemory_mib = \"lots\"\n").unwrap_err();
        assert!(err.starts_with("line 2: "), "{err}");
    }
}
