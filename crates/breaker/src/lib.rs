//! A circuit breaker: it stops calling a destination that keeps failing, lets a
//! bounded number of probes through after a cool-down, and closes again once
//! they succeed.
//!
//! It knows nothing of WebAssembly or HTTP. A caller asks [`Breaker::acquire`]
//! for a [`Permit`], does its work only if it got one, and reports the outcome
//! on the permit. The outbound HTTP layer uses it per destination; the queue can
//! use it per peer.
//!
//! States (one documented machine, docs/outbound.md):
//! - `closed`: everything passes. Opens after `consecutive_failures` failures in a
//!   row, or when at least `failure_rate` of the last `window` outcomes failed
//!   (once `min_requests` are in the window).
//! - `open`: everything is rejected without being attempted, until the cool-down
//!   has passed. The cool-down doubles with each re-open without a close in
//!   between, up to `max_cooldown_ms`.
//! - `half_open`: a probe is admitted only while fewer than `half_open_probes`
//!   requests are in flight, counting requests admitted before it opened that
//!   have not finished; the rest are rejected. `close_after` successful probes
//!   close it; any failed probe re-opens it.
//!
//! Outcomes are tied to the state they were admitted in: a request admitted
//! while closed that fails after the breaker already opened counts in the
//! totals but does not move the state again.

mod registry;
#[cfg(test)]
mod tests;

pub use registry::{BreakerRegistry, TransitionListener};

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// When a breaker opens and how it recovers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Open after this many failures in a row; 0 turns this rule off.
    pub consecutive_failures: u32,
    /// Open when at least this share (0..=1) of the last `window` outcomes
    /// failed; 0 turns this rule off.
    pub failure_rate: f64,
    /// How many recent outcomes the failure rate looks at.
    pub window: u32,
    /// The failure rate applies only once the window holds this many outcomes.
    pub min_requests: u32,
    /// How long the first opening lasts; each re-open doubles it.
    pub cooldown_ms: u64,
    /// The cool-down never grows past this.
    pub max_cooldown_ms: u64,
    /// Requests allowed in flight at once while half-open.
    pub half_open_probes: u32,
    /// Successful probes needed to close.
    pub close_after: u32,
}

impl Default for BreakerConfig {
    /// The original MCP++ breaker's thresholds (5 failures, 60 s, 2 successes),
    /// plus a failure-rate rule and an enforced single probe.
    fn default() -> Self {
        Self {
            consecutive_failures: 5,
            failure_rate: 0.5,
            window: 20,
            min_requests: 10,
            cooldown_ms: 60_000,
            max_cooldown_ms: 600_000,
            half_open_probes: 1,
            close_after: 2,
        }
    }
}

impl BreakerConfig {
    /// Check the numbers make a breaker that can open and close again.
    pub fn validate(&self) -> Result<(), String> {
        if self.consecutive_failures == 0 && self.failure_rate == 0.0 {
            return Err("both consecutive_failures and failure_rate are 0, so the breaker could never open; set one of them".into());
        }
        if !(0.0..=1.0).contains(&self.failure_rate) {
            return Err(format!(
                "failure_rate = {} is not a share between 0 and 1 (0.5 means half)",
                self.failure_rate
            ));
        }
        if self.failure_rate > 0.0 && (self.window == 0 || self.min_requests > self.window) {
            return Err(format!(
                "the failure rate needs 1 <= min_requests <= window (got min_requests = {}, window = {})",
                self.min_requests, self.window
            ));
        }
        if self.cooldown_ms == 0 || self.max_cooldown_ms < self.cooldown_ms {
            return Err(format!(
                "cooldown_ms must be at least 1 and max_cooldown_ms at least cooldown_ms (got {} and {})",
                self.cooldown_ms, self.max_cooldown_ms
            ));
        }
        if self.half_open_probes == 0 || self.close_after == 0 {
            return Err("half_open_probes and close_after must be at least 1".into());
        }
        Ok(())
    }

    /// The cool-down after `reopens` re-opens without a close in between.
    pub fn cooldown(&self, reopens: u32) -> Duration {
        let factor = 1u64 << reopens.min(32);
        Duration::from_millis(
            self.cooldown_ms
                .saturating_mul(factor)
                .min(self.max_cooldown_ms),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the state changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    ConsecutiveFailures { failures: u32 },
    FailureRate { failures: u32, of: u32 },
    CooldownElapsed,
    ProbeFailed,
    ProbesSucceeded { successes: u32 },
    Reset,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::ConsecutiveFailures { failures } => write!(f, "{failures} failures in a row"),
            Reason::FailureRate { failures, of } => {
                write!(f, "{failures} of the last {of} requests failed")
            }
            Reason::CooldownElapsed => f.write_str("the cool-down passed; probing"),
            Reason::ProbeFailed => f.write_str("a probe failed"),
            Reason::ProbesSucceeded { successes } => write!(f, "{successes} probes succeeded"),
            Reason::Reset => f.write_str("reset by an operator"),
        }
    }
}

/// One state change, as reported to the listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub from: State,
    pub to: State,
    pub reason: Reason,
    /// How long the breaker stays open (set when `to` is open).
    pub cooldown: Option<Duration>,
    /// Counts the breaker's transitions: consecutive, so a gap would be a lost one.
    pub generation: u64,
}

/// A request the breaker did not let through.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    #[error("the circuit is open; it lets a probe through in {}", fmt_duration(*retry_after))]
    Open { retry_after: Duration },
    #[error("the circuit is half-open and its {limit} probe slot(s) are taken")]
    ProbesBusy { limit: u32 },
}

fn fmt_duration(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Totals since the breaker was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    pub admitted: u64,
    pub rejected: u64,
    pub successes: u64,
    pub failures: u64,
    /// Permits dropped without an outcome (the caller gave up).
    pub abandoned: u64,
    pub opened: u64,
}

/// What an operator sees of one breaker.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    pub state: State,
    pub consecutive_failures: u32,
    pub window_failures: u32,
    pub window_len: u32,
    /// Permits handed out and not yet reported, in any state.
    pub in_flight: u32,
    pub probe_successes: u32,
    /// While open: how long until a probe is let through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    pub reopens: u32,
    #[serde(flatten)]
    pub counters: Counters,
}

struct Inner {
    state: State,
    /// Bumped on every transition; a permit's outcome moves the state only if
    /// it was admitted in the current generation.
    generation: u64,
    consecutive_failures: u32,
    /// Recent outcomes while closed, `true` = failure.
    window: VecDeque<bool>,
    window_failures: u32,
    open_until: Instant,
    reopens: u32,
    /// Permits not yet reported, whatever generation they belong to.
    in_flight: u32,
    probe_successes: u32,
    counters: Counters,
}

/// One circuit breaker. Cheap to consult: one uncontended mutex per call.
pub struct Breaker {
    name: Arc<str>,
    config: BreakerConfig,
    inner: Mutex<Inner>,
    listener: Option<TransitionListener>,
}

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker").field("name", &self.name).finish()
    }
}

/// Permission to make one request. Report how it went with [`Permit::success`]
/// or [`Permit::failure`]; dropping it unreported frees a probe slot without
/// counting either way.
#[must_use = "report the outcome on the permit"]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    generation: u64,
    probe: bool,
    reported: bool,
}

impl Breaker {
    /// A closed breaker. `config` must have passed [`BreakerConfig::validate`].
    pub fn new(
        name: impl Into<Arc<str>>,
        config: BreakerConfig,
        listener: Option<TransitionListener>,
    ) -> Arc<Self> {
        let now = Instant::now();
        Arc::new(Self {
            name: name.into(),
            inner: Mutex::new(Inner {
                state: State::Closed,
                generation: 0,
                consecutive_failures: 0,
                window: VecDeque::with_capacity(config.window as usize),
                window_failures: 0,
                open_until: now,
                reopens: 0,
                in_flight: 0,
                probe_successes: 0,
                counters: Counters::default(),
            }),
            config,
            listener,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// Ask to make a request at `now`.
    pub fn acquire(&self, now: Instant) -> Result<Permit<'_>, Rejected> {
        let mut transition = None;
        let result = {
            let mut inner = self.lock();
            if inner.state == State::Open && now >= inner.open_until {
                transition = Some(self.enter(&mut inner, State::HalfOpen, Reason::CooldownElapsed));
            }
            match inner.state {
                State::Closed => Ok(false),
                State::Open => Err(Rejected::Open {
                    retry_after: inner.open_until.saturating_duration_since(now),
                }),
                State::HalfOpen if inner.in_flight < self.config.half_open_probes => Ok(true),
                State::HalfOpen => Err(Rejected::ProbesBusy {
                    limit: self.config.half_open_probes,
                }),
            }
            .map(|probe| {
                inner.counters.admitted += 1;
                inner.in_flight += 1;
                Permit {
                    breaker: self,
                    generation: inner.generation,
                    probe,
                    reported: false,
                }
            })
            .inspect_err(|_| inner.counters.rejected += 1)
        };
        self.notify(transition);
        result
    }

    /// Close the breaker now and forget its history (the totals stay).
    pub fn reset(&self) {
        let transition = {
            let mut inner = self.lock();
            let from = inner.state;
            let t = self.enter(&mut inner, State::Closed, Reason::Reset);
            (from != State::Closed).then_some(t)
        };
        self.notify(transition);
    }

    /// The state as of `now`.
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let inner = self.lock();
        Snapshot {
            state: inner.state,
            consecutive_failures: inner.consecutive_failures,
            window_failures: inner.window_failures,
            window_len: inner.window.len() as u32,
            in_flight: inner.in_flight,
            probe_successes: inner.probe_successes,
            retry_after_ms: (inner.state == State::Open)
                .then(|| inner.open_until.saturating_duration_since(now).as_millis() as u64),
            reopens: inner.reopens,
            counters: inner.counters,
        }
    }

    pub fn state(&self) -> State {
        self.lock().state
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every update
        // is a few assignments), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn report(&self, permit: &Permit, failed: Option<bool>, now: Instant) {
        let transition = {
            let mut inner = self.lock();
            match failed {
                Some(true) => inner.counters.failures += 1,
                Some(false) => inner.counters.successes += 1,
                None => inner.counters.abandoned += 1,
            }
            inner.in_flight -= 1;
            if permit.generation != inner.generation {
                None
            } else {
                match (inner.state, failed) {
                    (_, None) => None,
                    (State::Closed, Some(failed)) => self.record_closed(&mut inner, failed, now),
                    (State::HalfOpen, Some(true)) => {
                        let reopens = inner.reopens + 1;
                        Some(self.open(&mut inner, Reason::ProbeFailed, reopens, now))
                    }
                    (State::HalfOpen, Some(false)) => {
                        inner.probe_successes += 1;
                        (inner.probe_successes >= self.config.close_after).then(|| {
                            let successes = inner.probe_successes;
                            self.enter(
                                &mut inner,
                                State::Closed,
                                Reason::ProbesSucceeded { successes },
                            )
                        })
                    }
                    // Nothing is admitted while open, so no permit of this generation exists.
                    (State::Open, Some(_)) => None,
                }
            }
        };
        self.notify(transition);
    }

    fn record_closed(&self, inner: &mut Inner, failed: bool, now: Instant) -> Option<Transition> {
        inner.consecutive_failures = if failed {
            inner.consecutive_failures + 1
        } else {
            0
        };
        if self.config.failure_rate > 0.0 {
            if inner.window.len() == self.config.window as usize
                && inner.window.pop_front() == Some(true)
            {
                inner.window_failures -= 1;
            }
            inner.window.push_back(failed);
            inner.window_failures += failed as u32;
        }
        let threshold = self.config.consecutive_failures;
        let reason = if threshold > 0 && inner.consecutive_failures >= threshold {
            Reason::ConsecutiveFailures {
                failures: inner.consecutive_failures,
            }
        } else if self.rate_tripped(inner) {
            Reason::FailureRate {
                failures: inner.window_failures,
                of: inner.window.len() as u32,
            }
        } else {
            return None;
        };
        Some(self.open(inner, reason, 0, now))
    }

    fn rate_tripped(&self, inner: &Inner) -> bool {
        let len = inner.window.len() as u32;
        self.config.failure_rate > 0.0
            && len >= self.config.min_requests.max(1)
            && f64::from(inner.window_failures) >= self.config.failure_rate * f64::from(len)
    }

    fn open(&self, inner: &mut Inner, reason: Reason, reopens: u32, now: Instant) -> Transition {
        let cooldown = self.config.cooldown(reopens);
        let mut transition = self.enter(inner, State::Open, reason);
        inner.reopens = reopens;
        inner.open_until = now + cooldown;
        inner.counters.opened += 1;
        transition.cooldown = Some(cooldown);
        transition
    }

    /// Move to `to`, starting a new generation with fresh per-state counts.
    fn enter(&self, inner: &mut Inner, to: State, reason: Reason) -> Transition {
        let from = inner.state;
        inner.state = to;
        inner.generation += 1;
        inner.consecutive_failures = 0;
        inner.window.clear();
        inner.window_failures = 0;
        inner.probe_successes = 0;
        if to == State::Closed {
            inner.reopens = 0;
        }
        Transition {
            from,
            to,
            reason,
            cooldown: None,
            generation: inner.generation,
        }
    }

    /// Tell the listener, outside the lock.
    fn notify(&self, transition: Option<Transition>) {
        if let (Some(t), Some(listener)) = (transition, &self.listener) {
            listener(&self.name, &t);
        }
    }
}

impl Permit<'_> {
    /// The request succeeded (as far as the breaker is concerned).
    pub fn success(mut self, now: Instant) {
        self.reported = true;
        self.breaker.report(&self, Some(false), now);
    }

    /// The request failed in a way that counts against the destination.
    pub fn failure(mut self, now: Instant) {
        self.reported = true;
        self.breaker.report(&self, Some(true), now);
    }

    /// Whether this permit is one of the half-open probes.
    pub fn is_probe(&self) -> bool {
        self.probe
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.reported {
            self.breaker.report(self, None, Instant::now());
        }
    }
}
