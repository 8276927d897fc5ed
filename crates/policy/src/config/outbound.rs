//! `[outbound]` in the operator config: timeouts, retries and size caps for
//! every outbound request, and the circuit breakers' settings.
//!
//! ```toml
//! [outbound]
//! connect_timeout_ms = 5000
//! first_byte_timeout_ms = 30000
//! total_timeout_ms = 60000
//! max_response_bytes = 10485760
//! retries = 2                      # extra attempts, idempotent methods only
//! fail_on = ["connect", "timeout", "5xx"]
//!
//! [outbound.breaker]               # every destination
//! consecutive_failures = 5
//! cooldown_ms = 60000
//!
//! [outbound.breakers."https://api.example.com"]   # one destination
//! cooldown_ms = 5000
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::Destination;
use mcpplus_breaker::BreakerConfig;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundConfig {
    pub connect_timeout_ms: u64,
    /// From sending the request to the response's status line.
    pub first_byte_timeout_ms: u64,
    /// One attempt from connecting to the last body byte.
    pub total_timeout_ms: u64,
    pub max_response_bytes: u64,
    pub max_request_bytes: u64,
    /// Extra attempts after a failure, for idempotent methods only.
    pub retries: u32,
    /// Backoff before retry n is about `retry_backoff_ms * 2^(n-1)`, jittered,
    /// at most `retry_backoff_max_ms`.
    pub retry_backoff_ms: u64,
    pub retry_backoff_max_ms: u64,
    /// What counts against a destination: opens its breaker and is retried.
    pub fail_on: Vec<FailureKind>,
    pub breaker: BreakerConfig,
    /// Breaker settings for particular destinations (`scheme://host[:port]`),
    /// over `breaker`.
    pub breakers: BTreeMap<String, toml::Table>,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            connect_timeout_ms: 5_000,
            first_byte_timeout_ms: 30_000,
            total_timeout_ms: 60_000,
            max_response_bytes: 10 << 20,
            max_request_bytes: 10 << 20,
            retries: 2,
            retry_backoff_ms: 100,
            retry_backoff_max_ms: 2_000,
            fail_on: vec![
                FailureKind::Connect,
                FailureKind::Timeout,
                FailureKind::Status5xx,
            ],
            breaker: BreakerConfig::default(),
            breakers: BTreeMap::new(),
        }
    }
}

/// A kind of outcome that can count as the destination failing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum FailureKind {
    /// No usable connection: DNS, refused, reset, TLS, a malformed response.
    #[serde(rename = "connect")]
    Connect,
    /// Connect, first-byte or total timeout.
    #[serde(rename = "timeout")]
    Timeout,
    #[serde(rename = "5xx")]
    Status5xx,
    #[serde(rename = "4xx")]
    Status4xx,
    /// 429 Too Many Requests (also covered by "4xx").
    #[serde(rename = "429")]
    Status429,
}

impl OutboundConfig {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }

    pub fn first_byte_timeout(&self) -> Duration {
        Duration::from_millis(self.first_byte_timeout_ms)
    }

    pub fn total_timeout(&self) -> Duration {
        Duration::from_millis(self.total_timeout_ms)
    }

    /// Whether a response with `status` counts as a failure.
    pub fn status_fails(&self, status: u16) -> bool {
        let has = |k| self.fail_on.contains(&k);
        match status {
            500..=599 => has(FailureKind::Status5xx),
            429 => has(FailureKind::Status429) || has(FailureKind::Status4xx),
            400..=499 => has(FailureKind::Status4xx),
            _ => false,
        }
    }

    pub fn counts(&self, kind: FailureKind) -> bool {
        self.fail_on.contains(&kind)
    }

    /// Check every number and resolve the per-destination breakers, keyed by
    /// the canonical destination (`scheme://host:port`).
    pub fn check(&self) -> Result<BTreeMap<String, BreakerConfig>, String> {
        for (key, value) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("first_byte_timeout_ms", self.first_byte_timeout_ms),
            ("total_timeout_ms", self.total_timeout_ms),
            ("max_response_bytes", self.max_response_bytes),
            ("max_request_bytes", self.max_request_bytes),
        ] {
            if value == 0 {
                return Err(format!("[outbound] {key} must be greater than 0"));
            }
        }
        if self.retry_backoff_max_ms < self.retry_backoff_ms {
            return Err("[outbound] retry_backoff_max_ms must be at least retry_backoff_ms".into());
        }
        if self.retries > 10 {
            return Err(format!(
                "[outbound] retries = {} is more than 10; retries multiply the load on a failing destination",
                self.retries
            ));
        }
        self.breaker
            .validate()
            .map_err(|e| format!("[outbound.breaker]: {e}"))?;
        let mut resolved = BTreeMap::new();
        for (name, table) in &self.breakers {
            let section = format!("[outbound.breakers.\"{name}\"]");
            let destination = Destination::parse(name).map_err(|e| format!("{section}: {e}"))?;
            let Some(key) = destination.exact_key() else {
                return Err(format!(
                    "{section}: a breaker belongs to one destination; name one host and port, without wildcards"
                ));
            };
            let mut merged =
                toml::Table::try_from(&self.breaker).map_err(|e| format!("{section}: {e}"))?;
            merged.extend(table.clone());
            let config: BreakerConfig = merged
                .try_into()
                .map_err(|e: toml::de::Error| format!("{section}: {}", e.message()))?;
            config.validate().map_err(|e| format!("{section}: {e}"))?;
            resolved.insert(key, config);
        }
        Ok(resolved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::OperatorConfig;

    #[test]
    fn per_destination_breakers_inherit_the_defaults() {
        let config = OperatorConfig::parse(
            r#"
[outbound.breaker]
consecutive_failures = 7
cooldown_ms = 1000
[outbound.breakers."http://127.0.0.1:8080"]
cooldown_ms = 50
[outbound.breakers."https://api.example.com"]
close_after = 3
"#,
        )
        .unwrap();
        let resolved = config.outbound.check().unwrap();
        let local = &resolved["http://127.0.0.1:8080"];
        assert_eq!((local.consecutive_failures, local.cooldown_ms), (7, 50));
        let api = &resolved["https://api.example.com:443"];
        assert_eq!((api.close_after, api.cooldown_ms), (3, 1000));
    }

    #[test]
    fn bad_settings_are_refused_naming_the_section() {
        let error = |text: &str| OperatorConfig::parse(text).unwrap_err();
        let e = error("[outbound.breakers.\"https://*.example.com\"]\ncooldown_ms = 5\n");
        assert!(e.contains("without wildcards"), "{e}");
        let e = error("[outbound.breakers.\"http://a:1\"]\nhalf_open_probes = 0\n");
        assert!(
            e.contains("[outbound.breakers.\"http://a:1\"]") && e.contains("half_open_probes"),
            "{e}"
        );
        let e = error("[outbound.breakers.\"http://a:1\"]\nprobes = 2\n");
        assert!(e.contains("probes"), "{e}");
        let e = error("[outbound]\ntotal_timeout_ms = 0\n");
        assert!(e.contains("total_timeout_ms must be greater than 0"), "{e}");
        let e = error("[outbound]\nfail_on = [\"5xx\", \"teapot\"]\n");
        assert!(e.contains("teapot"), "{e}");
        let e = error("[outbound.breaker]\nfailure_rate = 2.0\n");
        assert!(
            e.contains("[outbound.breaker]") && e.contains("failure_rate"),
            "{e}"
        );
        let e = error("[outbound]\nretries = 50\n");
        assert!(e.contains("retries"), "{e}");
    }

    #[test]
    fn what_counts_as_a_failure() {
        let c = OutboundConfig::default();
        assert!(c.status_fails(503) && !c.status_fails(404) && !c.status_fails(429));
        let c = OutboundConfig {
            fail_on: vec![FailureKind::Status429],
            ..OutboundConfig::default()
        };
        assert!(c.status_fails(429) && !c.status_fails(404) && !c.status_fails(500));
    }
}
