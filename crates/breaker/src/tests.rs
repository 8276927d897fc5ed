//! The breaker against a reference model (proptest), plus a 1,000-call
//! concurrency test and a few worked examples.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use proptest::prelude::*;

use super::*;

fn config(consecutive: u32, cooldown_ms: u64, probes: u32, close_after: u32) -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: consecutive,
        failure_rate: 0.0,
        window: 0,
        min_requests: 0,
        cooldown_ms,
        max_cooldown_ms: cooldown_ms * 8,
        half_open_probes: probes,
        close_after,
    }
}

#[test]
fn opens_fails_fast_probes_and_closes() {
    let t0 = Instant::now();
    let at = |ms| t0 + Duration::from_millis(ms);
    let b = Breaker::new("d", config(3, 100, 1, 2), None);
    for _ in 0..2 {
        b.acquire(at(0)).unwrap().failure(at(0));
    }
    assert_eq!(b.state(), State::Closed);
    b.acquire(at(0)).unwrap().failure(at(0));
    assert_eq!(b.state(), State::Open);
    assert_eq!(
        b.acquire(at(40)).err(),
        Some(Rejected::Open {
            retry_after: Duration::from_millis(60)
        })
    );
    // Cool-down over: one probe, the second caller is turned away.
    let probe = b.acquire(at(100)).unwrap();
    assert!(probe.is_probe());
    assert_eq!(
        b.acquire(at(100)).err(),
        Some(Rejected::ProbesBusy { limit: 1 })
    );
    probe.success(at(101));
    assert_eq!(b.state(), State::HalfOpen);
    b.acquire(at(102)).unwrap().success(at(102));
    assert_eq!(b.state(), State::Closed);
}

#[test]
fn cooldown_doubles_on_each_reopen_up_to_the_cap() {
    let t0 = Instant::now();
    let b = Breaker::new("d", config(1, 100, 1, 1), None);
    b.acquire(t0).unwrap().failure(t0);
    let mut now = t0;
    for expected in [200, 400, 800, 800] {
        now += Duration::from_millis(1_000);
        b.acquire(now).unwrap().failure(now);
        assert_eq!(
            b.acquire(now).err(),
            Some(Rejected::Open {
                retry_after: Duration::from_millis(expected)
            })
        );
    }
    // A close forgets the re-opens.
    now += Duration::from_millis(1_000);
    b.acquire(now).unwrap().success(now);
    b.acquire(now).unwrap().failure(now);
    assert_eq!(
        b.acquire(now).err(),
        Some(Rejected::Open {
            retry_after: Duration::from_millis(100)
        })
    );
}

#[test]
fn failure_rate_opens_once_the_window_is_full_enough() {
    let t0 = Instant::now();
    let cfg = BreakerConfig {
        consecutive_failures: 0,
        failure_rate: 0.5,
        window: 4,
        min_requests: 4,
        ..BreakerConfig::default()
    };
    let b = Breaker::new("d", cfg, None);
    for failed in [true, false, true] {
        let p = b.acquire(t0).unwrap();
        if failed { p.failure(t0) } else { p.success(t0) }
    }
    assert_eq!(
        b.state(),
        State::Closed,
        "3 outcomes are fewer than min_requests"
    );
    let seen = Arc::new(Mutex::new(None));
    let sink = seen.clone();
    let b = Breaker::new(
        "d",
        b.config().clone(),
        Some(Arc::new(move |_: &str, t: &Transition| {
            *sink.lock().unwrap() = Some(t.reason.clone())
        })),
    );
    for failed in [true, false, true, false] {
        let p = b.acquire(t0).unwrap();
        if failed { p.failure(t0) } else { p.success(t0) }
    }
    assert_eq!(b.state(), State::Open, "2 of 4 failed: a rate of 0.5");
    assert_eq!(
        *seen.lock().unwrap(),
        Some(Reason::FailureRate { failures: 2, of: 4 })
    );
}

#[test]
fn late_outcomes_from_an_earlier_state_do_not_move_it() {
    let t0 = Instant::now();
    let b = Breaker::new("d", config(1, 100, 1, 1), None);
    let slow = b.acquire(t0).unwrap();
    b.acquire(t0).unwrap().failure(t0);
    assert_eq!(b.state(), State::Open);
    slow.success(t0);
    assert_eq!(b.state(), State::Open);
    assert_eq!(b.snapshot(t0).counters.successes, 1);
}

#[test]
fn reset_closes_and_reports() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    let listener: TransitionListener = Arc::new(move |name: &str, t: &Transition| {
        sink.lock().unwrap().push((name.to_string(), t.clone()));
    });
    let t0 = Instant::now();
    let b = Breaker::new("http://a:1", config(1, 60_000, 1, 1), Some(listener));
    b.acquire(t0).unwrap().failure(t0);
    b.reset();
    assert!(b.acquire(t0).is_ok());
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].0, "http://a:1");
    assert_eq!(seen[0].1.to, State::Open);
    assert_eq!(seen[0].1.cooldown, Some(Duration::from_secs(60)));
    assert_eq!(seen[1].1.reason, Reason::Reset);
}

#[test]
fn validation_names_the_bad_setting() {
    let bad = |f: fn(&mut BreakerConfig)| {
        let mut c = BreakerConfig::default();
        f(&mut c);
        c.validate().unwrap_err()
    };
    assert!(bad(|c| c.half_open_probes = 0).contains("half_open_probes"));
    assert!(bad(|c| c.failure_rate = 1.5).contains("failure_rate"));
    assert!(bad(|c| c.max_cooldown_ms = 1).contains("max_cooldown_ms"));
    assert!(bad(|c| c.min_requests = 50).contains("min_requests"));
    assert!(
        bad(|c| {
            c.consecutive_failures = 0;
            c.failure_rate = 0.0
        })
        .contains("never open")
    );
    assert!(BreakerConfig::default().validate().is_ok());
}

// ---------------------------------------------------------------------------
// Reference model: the documented state machine written as plainly as possible.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModelState {
    Closed,
    Open { until: u64 },
    HalfOpen,
}

struct Model {
    cfg: BreakerConfig,
    state: ModelState,
    generation: u64,
    /// Outcomes while closed in this generation, oldest first.
    history: Vec<bool>,
    reopens: u32,
    probe_successes: u32,
    in_flight: u32,
}

/// A permit the model handed out: its generation and whether it is a probe.
#[derive(Debug, Clone, Copy)]
struct ModelPermit {
    generation: u64,
    probe: bool,
}

impl Model {
    fn new(cfg: BreakerConfig) -> Self {
        Self {
            cfg,
            state: ModelState::Closed,
            generation: 0,
            history: Vec::new(),
            reopens: 0,
            probe_successes: 0,
            in_flight: 0,
        }
    }

    fn go(&mut self, state: ModelState) {
        self.state = state;
        self.generation += 1;
        self.history.clear();
        self.probe_successes = 0;
    }

    fn open(&mut self, now: u64, reopens: u32) {
        let cooldown = (self.cfg.cooldown_ms << reopens.min(32)).min(self.cfg.max_cooldown_ms);
        self.go(ModelState::Open {
            until: now + cooldown,
        });
        self.reopens = reopens;
    }

    fn acquire(&mut self, now: u64) -> Option<ModelPermit> {
        if let ModelState::Open { until } = self.state
            && now >= until
        {
            self.go(ModelState::HalfOpen);
        }
        let probe = match self.state {
            ModelState::Closed => false,
            ModelState::Open { .. } => return None,
            ModelState::HalfOpen if self.in_flight < self.cfg.half_open_probes => true,
            ModelState::HalfOpen => return None,
        };
        self.in_flight += 1;
        Some(ModelPermit {
            generation: self.generation,
            probe,
        })
    }

    fn report(&mut self, permit: ModelPermit, failed: Option<bool>, now: u64) {
        self.in_flight -= 1;
        let Some(failed) = failed else { return };
        if permit.generation != self.generation {
            return;
        }
        match self.state {
            ModelState::Closed => {
                self.history.push(failed);
                let run = self.history.iter().rev().take_while(|f| **f).count() as u32;
                let recent: Vec<bool> = self
                    .history
                    .iter()
                    .rev()
                    .take(self.cfg.window as usize)
                    .copied()
                    .collect();
                let failures = recent.iter().filter(|f| **f).count() as f64;
                let rate_trips = self.cfg.failure_rate > 0.0
                    && recent.len() as u32 >= self.cfg.min_requests.max(1)
                    && failures >= self.cfg.failure_rate * recent.len() as f64;
                let run_trips =
                    self.cfg.consecutive_failures > 0 && run >= self.cfg.consecutive_failures;
                if run_trips || rate_trips {
                    self.open(now, 0);
                }
            }
            ModelState::HalfOpen if failed => self.open(now, self.reopens + 1),
            ModelState::HalfOpen => {
                self.probe_successes += 1;
                if self.probe_successes >= self.cfg.close_after {
                    self.go(ModelState::Closed);
                    self.reopens = 0;
                }
            }
            ModelState::Open { .. } => unreachable!("nothing is admitted while open"),
        }
    }

    fn reset(&mut self) {
        self.go(ModelState::Closed);
        self.reopens = 0;
    }

    fn state(&self) -> State {
        match self.state {
            ModelState::Closed => State::Closed,
            ModelState::Open { .. } => State::Open,
            ModelState::HalfOpen => State::HalfOpen,
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Acquire,
    Succeed(usize),
    Fail(usize),
    /// The request runs into its timeout: the clock moves, then it fails.
    TimeOut(usize, u64),
    Abandon(usize),
    Advance(u64),
    Reset,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Acquire),
        3 => any::<usize>().prop_map(Op::Succeed),
        3 => any::<usize>().prop_map(Op::Fail),
        1 => (any::<usize>(), 1..200u64).prop_map(|(i, ms)| Op::TimeOut(i, ms)),
        1 => any::<usize>().prop_map(Op::Abandon),
        2 => (1..300u64).prop_map(Op::Advance),
        1 => Just(Op::Reset),
    ]
}

fn breaker_config() -> impl Strategy<Value = BreakerConfig> {
    (
        0..5u32,
        prop_oneof![Just(0.0), Just(0.3), Just(0.5), Just(1.0)],
        1..8u32,
        1..100u64,
        1..4u32,
        1..4u32,
        1..10u64,
    )
        .prop_flat_map(
            |(consecutive, rate, window, cooldown, probes, close, cap)| {
                (1..=window).prop_map(move |min| BreakerConfig {
                    consecutive_failures: consecutive,
                    failure_rate: rate,
                    window,
                    min_requests: min,
                    cooldown_ms: cooldown,
                    max_cooldown_ms: cooldown * cap,
                    half_open_probes: probes,
                    close_after: close,
                })
            },
        )
        .prop_filter("a breaker that can open", |c| c.validate().is_ok())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn breaker_matches_the_reference_model(
        cfg in breaker_config(),
        ops in prop::collection::vec(op(), 1..200),
    ) {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let breaker = Breaker::new("model", cfg.clone(), None);
        let mut model = Model::new(cfg.clone());
        let mut now = 0u64;
        let mut live: Vec<(Permit, ModelPermit)> = Vec::new();
        // Requests actually attempted: only ever with a permit.
        let mut attempted = 0u64;

        for op in ops {
            match op {
                Op::Acquire => {
                    let got = breaker.acquire(at(now));
                    let expected = model.acquire(now);
                    prop_assert_eq!(got.is_ok(), expected.is_some(), "admission differs at {}ms", now);
                    match (got, expected) {
                        (Ok(permit), Some(m)) => {
                            prop_assert_eq!(permit.is_probe(), m.probe);
                            attempted += 1;
                            live.push((permit, m));
                        }
                        (Err(Rejected::Open { retry_after }), None) => {
                            let ModelState::Open { until } = model.state else {
                                return Err(TestCaseError::fail("rejected as open but the model is not open"));
                            };
                            prop_assert_eq!(retry_after, Duration::from_millis(until - now));
                        }
                        (Err(Rejected::ProbesBusy { .. }), None) => {
                            prop_assert_eq!(model.state, ModelState::HalfOpen);
                        }
                        _ => unreachable!(),
                    }
                }
                Op::Succeed(i) | Op::Fail(i) | Op::TimeOut(i, _) | Op::Abandon(i) if !live.is_empty() => {
                    let (permit, m) = live.swap_remove(i % live.len());
                    match op {
                        Op::Succeed(_) => { permit.success(at(now)); model.report(m, Some(false), now) }
                        Op::Fail(_) => { permit.failure(at(now)); model.report(m, Some(true), now) }
                        Op::TimeOut(_, ms) => {
                            now += ms;
                            permit.failure(at(now));
                            model.report(m, Some(true), now)
                        }
                        _ => { drop(permit); model.report(m, None, now) }
                    }
                }
                Op::Advance(ms) => now += ms,
                Op::Reset => { breaker.reset(); model.reset() }
                _ => {}
            }
            let snap = breaker.snapshot(at(now));
            prop_assert_eq!(snap.state, model.state(), "state differs at {}ms", now);
            prop_assert_eq!(snap.in_flight as usize, live.len());
            prop_assert_eq!(snap.counters.admitted, attempted, "a request ran without a permit");
            if snap.state == State::HalfOpen {
                let probes = live.iter().filter(|(p, _)| p.is_probe()).count() as u32;
                prop_assert!(probes <= cfg.half_open_probes, "{} probes in flight, limit {}", probes, cfg.half_open_probes);
            }
            if let ModelState::Open { until } = model.state
                && now < until
            {
                // Open rejects without anything being attempted.
                let before = breaker.snapshot(at(now)).counters;
                prop_assert!(breaker.acquire(at(now)).is_err());
                prop_assert!(model.acquire(now).is_none());
                let after = breaker.snapshot(at(now)).counters;
                prop_assert_eq!(after.admitted, before.admitted);
                prop_assert_eq!(after.rejected, before.rejected + 1);
            }
        }
        drop(live);
        prop_assert_eq!(breaker.snapshot(at(now)).in_flight, 0);
    }
}

// ---------------------------------------------------------------------------

/// 1,000 calls at once through one breaker on a 2-thread runtime: every call is
/// admitted or rejected, every admitted call's outcome is counted exactly once,
/// and the transitions the listener saw form one unbroken chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_calls_add_up() {
    const CALLS: usize = 1_000;
    const PROBES: u32 = 3;
    let seen = Arc::new(Mutex::new(Vec::<Transition>::new()));
    let sink = seen.clone();
    let listener: TransitionListener =
        Arc::new(move |_: &str, t: &Transition| sink.lock().unwrap().push(t.clone()));
    let cfg = BreakerConfig {
        consecutive_failures: 4,
        failure_rate: 0.5,
        window: 10,
        min_requests: 6,
        cooldown_ms: 1,
        max_cooldown_ms: 4,
        half_open_probes: PROBES,
        close_after: 2,
    };
    let breaker = Breaker::new("shared", cfg, Some(listener));
    let barrier = Arc::new(tokio::sync::Barrier::new(CALLS));
    let (admitted, rejected, succeeded, failed, abandoned) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let probes_live = Arc::new(AtomicUsize::new(0));
    let probes_peak = Arc::new(AtomicUsize::new(0));

    let mut tasks = Vec::new();
    for i in 0..CALLS {
        let (b, barrier) = (breaker.clone(), barrier.clone());
        let (admitted, rejected, succeeded, failed, abandoned) = (
            admitted.clone(),
            rejected.clone(),
            succeeded.clone(),
            failed.clone(),
            abandoned.clone(),
        );
        let (probes_live, probes_peak) = (probes_live.clone(), probes_peak.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            // Spread the calls over a few milliseconds so cool-downs pass mid-run.
            tokio::time::sleep(Duration::from_micros((i as u64 * 37) % 5_000)).await;
            let Ok(permit) = b.acquire(Instant::now()) else {
                rejected.fetch_add(1, Ordering::Relaxed);
                return;
            };
            admitted.fetch_add(1, Ordering::Relaxed);
            let probe = permit.is_probe();
            if probe {
                let live = probes_live.fetch_add(1, Ordering::SeqCst) + 1;
                probes_peak.fetch_max(live, Ordering::SeqCst);
            }
            tokio::task::yield_now().await;
            if probe {
                probes_live.fetch_sub(1, Ordering::SeqCst);
            }
            match i % 7 {
                0 => {
                    abandoned.fetch_add(1, Ordering::Relaxed);
                    drop(permit)
                }
                1..=3 => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    permit.failure(Instant::now())
                }
                _ => {
                    succeeded.fetch_add(1, Ordering::Relaxed);
                    permit.success(Instant::now())
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }

    let c = breaker.snapshot(Instant::now()).counters;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    assert_eq!(c.admitted + c.rejected, CALLS as u64);
    assert_eq!(c.admitted, load(&admitted));
    assert_eq!(c.rejected, load(&rejected));
    assert_eq!(c.successes, load(&succeeded));
    assert_eq!(c.failures, load(&failed));
    assert_eq!(c.abandoned, load(&abandoned));
    assert_eq!(c.successes + c.failures + c.abandoned, c.admitted);
    assert_eq!(breaker.snapshot(Instant::now()).in_flight, 0);
    assert!(probes_peak.load(Ordering::SeqCst) <= PROBES as usize);

    let mut seen = seen.lock().unwrap().clone();
    seen.sort_by_key(|t| t.generation);
    assert!(c.opened > 0, "the run should have opened the breaker");
    assert!(
        c.rejected > 0,
        "an open breaker should have turned calls away"
    );
    let mut state = State::Closed;
    for (i, t) in seen.iter().enumerate() {
        assert_eq!(t.generation, i as u64 + 1, "a transition went missing");
        assert_eq!(
            t.from, state,
            "transition {i} does not start where the last ended"
        );
        state = t.to;
    }
    assert_eq!(state, breaker.state());
    let opens = seen.iter().filter(|t| t.to == State::Open).count() as u64;
    assert_eq!(opens, c.opened);
}
