//! Outbound HTTP for guests: every request a tool makes through wasi:http goes
//! through [`Outbound::send`], which
//! 1. refuses destinations the component's policy does not grant,
//! 2. fails fast while the destination's circuit breaker is open,
//! 3. resolves the name and refuses loopback, private, link-local and metadata
//!    addresses unless the grant names that address,
//! 4. sends with connect, first-byte and total timeouts and a response-size cap,
//!    on a kept-alive connection to an address that passed step 3 if one is
//!    idle ([`pool`]), else on a new one,
//! 5. retries idempotent requests that failed, with jittered exponential
//!    backoff, never past the call's deadline.
//!
//! The host never follows redirects itself: a 3xx goes back to the guest, and
//! the request it makes next is checked like any other. See docs/outbound.md.

pub mod client;
pub mod guard;
pub mod pool;
#[cfg(test)]
mod pool_tests;
pub mod wasi;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_rustls::TlsConnector;

use mcpplus_policy::config::outbound::{FailureKind, OutboundConfig};

use crate::capabilities::CallContext;
use client::{Attempt, AttemptError};
use guard::Target;
use mcpplus_breaker::{BreakerRegistry, State, Transition, TransitionListener};
use mcpplus_policy::Destination;
use mcpplus_policy::imports::Capability;
use mcpplus_telemetry::metrics::metrics;
use pool::{Pool, PoolLimits};

/// The outbound HTTP service shared by every call of every tool.
pub struct Outbound {
    config: OutboundConfig,
    breakers: BreakerRegistry,
    tls: TlsConnector,
    pool: Pool,
}

/// Who is asking and within what: the grants of the calling component, its
/// call (for audit events) and the call's deadline.
pub struct Scope<'a> {
    pub grants: &'a [Destination],
    pub call: &'a CallContext,
    pub deadline: Instant,
    /// Tighter timeouts the guest asked for (wasi:http request-options).
    pub connect_timeout: Option<Duration>,
    pub first_byte_timeout: Option<Duration>,
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutboundError {
    #[error("mcpplus denied the request: {0}")]
    Denied(String),
    #[error("mcpplus did not send the request: the circuit breaker for {destination} is open ({detail}){}", last.as_ref().map(|l| format!("; the last attempt failed: {l}")).unwrap_or_default())]
    CircuitOpen {
        destination: String,
        detail: String,
        last: Option<String>,
    },
    #[error("cannot resolve `{host}`: {detail}")]
    Dns { host: String, detail: String },
    #[error("the call's deadline leaves no time for this request")]
    NoTimeLeft,
    #[error("{0}")]
    Attempt(#[from] AttemptError),
}

impl OutboundError {
    /// The wasi:http error code the guest sees. Refusals carry the whole
    /// message (in `internal-error`), so any guest that prints the error says
    /// why and what to grant.
    pub fn to_wasi(&self) -> wasmtime_wasi_http::Error {
        use wasmtime_wasi_http::Error as E;
        match self {
            OutboundError::Denied(_) | OutboundError::CircuitOpen { .. } => {
                E::InternalError(Some(self.to_string()))
            }
            OutboundError::Dns { detail, .. } => E::DnsError {
                rcode: Some(detail.clone()),
                info_code: None,
            },
            OutboundError::NoTimeLeft => E::ConnectionTimeout,
            OutboundError::Attempt(a) => match a {
                AttemptError::Connect(_) => E::ConnectionRefused,
                AttemptError::ConnectTimeout(_) => E::ConnectionTimeout,
                AttemptError::Tls(_) => E::TlsProtocolError,
                AttemptError::FirstByteTimeout(_) | AttemptError::TotalTimeout => {
                    E::HttpResponseTimeout
                }
                AttemptError::Protocol(_) => E::HttpProtocolError,
                AttemptError::TooLarge(cap) => E::HttpResponseBodySize(Some(*cap)),
            },
        }
    }
}

/// How one attempt went, for the breaker, retries and metrics.
enum Verdict {
    Failed(&'static str),
    Fine(&'static str),
    /// Says nothing about the destination (the response was too large for us).
    Neutral(&'static str),
}

impl Outbound {
    /// The service under `config`, whose [`OutboundConfig::check`] must pass.
    pub fn new(config: OutboundConfig) -> Result<Self, String> {
        Self::with_pool(config, PoolLimits::default())
    }

    /// The service, keeping idle connections within `limits`.
    pub fn with_pool(config: OutboundConfig, limits: PoolLimits) -> Result<Self, String> {
        let overrides = config.check()?;
        let listener: TransitionListener = Arc::new(report_transition);
        Ok(Self {
            breakers: BreakerRegistry::new(config.breaker.clone(), overrides, Some(listener)),
            config,
            tls: client::tls_connector(),
            pool: Pool::new(limits),
        })
    }

    pub fn config(&self) -> &OutboundConfig {
        &self.config
    }

    pub fn breakers(&self) -> &BreakerRegistry {
        &self.breakers
    }

    /// The idle connections kept for reuse.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Send `request` for the call in `scope`. A response of any status is
    /// `Ok`; the error cases are the request not being sent or not answered.
    pub async fn send(
        &self,
        request: http::Request<Bytes>,
        scope: &Scope<'_>,
    ) -> Result<http::Response<Bytes>, OutboundError> {
        let started = Instant::now();
        let target = Target::of(request.uri())
            .map_err(|e| deny(scope, &request.uri().to_string(), None, &e))?;
        let url = format!("{}{}", target.key, request.uri().path());
        let Some(grant) = guard::granting(scope.grants, &target) else {
            let granted: Vec<String> = scope.grants.iter().map(|g| g.to_string()).collect();
            return Err(deny(
                scope,
                &url,
                Some(&target.key),
                &format!(
                    "{} is not among the destinations component `{}` may reach ({}); to allow it, add \"{}\" to [network] allow in its policy",
                    target.key,
                    scope.call.component,
                    if granted.is_empty() {
                        "none".into()
                    } else {
                        granted.join(", ")
                    },
                    target.key
                ),
            ));
        };
        let (breaker, created) = self.breakers.get_new(&target.key);
        if created {
            set_state_gauge(&target.key, State::Closed);
        }
        let idempotent = is_idempotent(request.method());
        let mut addrs: Option<Vec<SocketAddr>> = None;
        let mut attempt = 0u32;
        let mut last_failure: Option<String> = None;
        let mut reused = false;
        let result = loop {
            let permit = match breaker.acquire(Instant::now()) {
                Ok(p) => p,
                Err(rejected) => {
                    count(&target.key, "circuit_open");
                    break Err(OutboundError::CircuitOpen {
                        destination: target.key.clone(),
                        detail: rejected.to_string(),
                        last: last_failure.take(),
                    });
                }
            };
            if addrs.is_none() {
                match self.resolve(&target, scope.deadline).await {
                    Ok(resolved) => match guard::permitted(grant, &target, &resolved) {
                        Ok(ok) => addrs = Some(ok),
                        Err(reason) => {
                            drop(permit);
                            break Err(deny(scope, &url, Some(&target.key), &reason));
                        }
                    },
                    Err(e) => {
                        if self.config.counts(FailureKind::Connect) {
                            permit.failure(Instant::now());
                        }
                        count(&target.key, "dns_error");
                        break Err(e);
                    }
                }
            }
            let now = Instant::now();
            if now >= scope.deadline {
                break Err(OutboundError::NoTimeLeft);
            }
            let outcome = client::send_once(
                Attempt {
                    target: &target,
                    addrs: addrs.as_deref().unwrap_or_default(),
                    request: &request,
                    connect_timeout: tighter(self.config.connect_timeout(), scope.connect_timeout),
                    first_byte_timeout: tighter(
                        self.config.first_byte_timeout(),
                        scope.first_byte_timeout,
                    ),
                    deadline: scope.deadline.min(now + self.config.total_timeout()),
                    max_response_bytes: self.config.max_response_bytes,
                },
                &self.tls,
                &self.pool,
            )
            .await
            .map(|sent| {
                reused = sent.reused;
                sent.response
            });
            let verdict = self.judge(&outcome);
            let failed = match verdict {
                Verdict::Failed(label) => {
                    permit.failure(Instant::now());
                    count(&target.key, label);
                    true
                }
                Verdict::Fine(label) => {
                    permit.success(Instant::now());
                    count(&target.key, label);
                    false
                }
                Verdict::Neutral(label) => {
                    drop(permit);
                    count(&target.key, label);
                    false
                }
            };
            if failed && idempotent && attempt < self.config.retries {
                let wait = self.backoff(attempt);
                if Instant::now() + wait < scope.deadline {
                    last_failure = Some(describe(&outcome));
                    tracing::debug!(
                        event = "outbound.retry",
                        destination = %target.key,
                        attempt = attempt + 1,
                        wait_ms = wait.as_millis() as u64,
                        reason = %describe(&outcome),
                        "retrying an outbound request"
                    );
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                    continue;
                }
            }
            break outcome.map_err(OutboundError::from);
        };
        metrics()
            .outbound_duration
            .get_or_create(&vec![("destination", target.key.clone())])
            .observe(started.elapsed().as_secs_f64());
        match &result {
            Ok(response) => tracing::debug!(
                event = "outbound.request",
                destination = %target.key,
                method = %request.method(),
                status = response.status().as_u16(),
                attempts = attempt + 1,
                connection = if reused { "reused" } else { "new" },
                duration_ms = started.elapsed().as_millis() as u64,
                "outbound request answered"
            ),
            Err(e) => tracing::info!(
                event = "outbound.failed",
                destination = %target.key,
                method = %request.method(),
                attempts = attempt + 1,
                duration_ms = started.elapsed().as_millis() as u64,
                error = %e,
                "outbound request failed"
            ),
        }
        result
    }

    fn judge(&self, outcome: &Result<http::Response<Bytes>, AttemptError>) -> Verdict {
        let counted = |kind, label| {
            if self.config.counts(kind) {
                Verdict::Failed(label)
            } else {
                Verdict::Neutral(label)
            }
        };
        match outcome {
            Ok(r) => {
                let status = r.status().as_u16();
                let label = match status {
                    500..=599 => "http_5xx",
                    400..=499 => "http_4xx",
                    _ => "ok",
                };
                if self.config.status_fails(status) {
                    Verdict::Failed(label)
                } else {
                    Verdict::Fine(label)
                }
            }
            Err(AttemptError::TooLarge(_)) => Verdict::Neutral("too_large"),
            Err(
                AttemptError::ConnectTimeout(_)
                | AttemptError::FirstByteTimeout(_)
                | AttemptError::TotalTimeout,
            ) => counted(FailureKind::Timeout, "timeout"),
            Err(AttemptError::Connect(_) | AttemptError::Tls(_) | AttemptError::Protocol(_)) => {
                counted(FailureKind::Connect, "connect_error")
            }
        }
    }

    /// Equal jitter: half the exponential step fixed, half random.
    fn backoff(&self, attempt: u32) -> Duration {
        let step = self
            .config
            .retry_backoff_ms
            .saturating_mul(1 << attempt.min(20))
            .min(self.config.retry_backoff_max_ms);
        let half = step / 2;
        Duration::from_millis(half + fastrand::u64(0..=step - half))
    }

    async fn resolve(
        &self,
        target: &Target,
        deadline: Instant,
    ) -> Result<Vec<SocketAddr>, OutboundError> {
        if let Some(ip) = target.ip_literal() {
            return Ok(vec![SocketAddr::new(ip, target.port)]);
        }
        let by = deadline.min(Instant::now() + self.config.connect_timeout());
        let lookup = tokio::net::lookup_host((target.host.as_str(), target.port));
        match tokio::time::timeout_at(by.into(), lookup).await {
            Ok(Ok(addrs)) => Ok(addrs.collect()),
            Ok(Err(e)) => Err(OutboundError::Dns {
                host: target.host.clone(),
                detail: e.to_string(),
            }),
            Err(_) => Err(OutboundError::Dns {
                host: target.host.clone(),
                detail: "the lookup timed out".into(),
            }),
        }
    }
}

/// Record a refusal (audit event, metric) and make the guest's error.
fn deny(scope: &Scope<'_>, url: &str, destination: Option<&str>, reason: &str) -> OutboundError {
    scope.call.deny(Capability::Network, url, reason);
    // The guest chose this destination and was refused: one label for all of
    // them, so refusals cannot grow the metric.
    if destination.is_some() {
        count("not_granted", "denied");
    }
    OutboundError::Denied(reason.to_string())
}

fn is_idempotent(method: &http::Method) -> bool {
    use http::Method;
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::PUT,
        Method::DELETE,
        Method::TRACE,
    ]
    .contains(method)
}

fn tighter(ours: Duration, guest: Option<Duration>) -> Duration {
    guest.map_or(ours, |g| g.min(ours))
}

fn describe(outcome: &Result<http::Response<Bytes>, AttemptError>) -> String {
    match outcome {
        Ok(r) => format!("status {}", r.status()),
        Err(e) => e.to_string(),
    }
}

fn count(destination: &str, outcome: &str) {
    metrics()
        .outbound_requests
        .get_or_create(&vec![
            (
                "destination",
                mcpplus_telemetry::metrics::bounded_label("destination", destination),
            ),
            ("outcome", outcome.to_string()),
        ])
        .inc();
}

fn set_state_gauge(destination: &str, state: State) {
    let value = match state {
        State::Closed => 0,
        State::HalfOpen => 1,
        State::Open => 2,
    };
    metrics()
        .breaker_state
        .get_or_create(&vec![(
            "destination",
            mcpplus_telemetry::metrics::bounded_label("destination", destination),
        )])
        .set(value);
}

/// Breaker transitions become log events and metrics.
fn report_transition(destination: &str, t: &Transition) {
    set_state_gauge(destination, t.to);
    metrics()
        .breaker_transitions
        .get_or_create(&vec![
            ("destination", destination.to_string()),
            ("to", t.to.as_str().to_string()),
        ])
        .inc();
    let cooldown_ms = t.cooldown.map(|c| c.as_millis() as u64);
    let reason = t.reason.to_string();
    match t.to {
        State::Open => tracing::warn!(
            event = "breaker.opened",
            destination,
            from = t.from.as_str(),
            reason,
            cooldown_ms,
            "circuit breaker opened: requests to this destination fail fast"
        ),
        State::HalfOpen => tracing::info!(
            event = "breaker.half_opened",
            destination,
            reason,
            "circuit breaker half-open: probing the destination"
        ),
        State::Closed => tracing::info!(
            event = "breaker.closed",
            destination,
            from = t.from.as_str(),
            reason,
            "circuit breaker closed: requests flow again"
        ),
    }
}
