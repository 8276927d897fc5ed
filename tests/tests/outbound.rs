//! Outbound HTTP through the host, end to end: the bundled `fetch` component
//! (standard wasi:http) calls real HTTP servers started here on 127.0.0.1 —
//! one healthy, one that fails on demand, one that never answers, one that
//! redirects — through the real runtime. Checks the allow-list, the address
//! guard after DNS, re-checked redirects, the breaker opening, failing fast,
//! probing and closing, retries, timeouts and the size cap.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::IntoResponse;
use mcpplus_breaker::State as BreakerState;
use mcpplus_policy::config::OperatorConfig;
use mcpplus_runtime::engine::RuntimeOptions;
use mcpplus_runtime::invoke::{ToolOutcome, invoke};
use mcpplus_runtime::{LoadedComponent, Runtime};
use mcpplus_tests::{CapturedLogs, Scratch, artifacts};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------
// Test servers

/// A loopback HTTP server that counts requests and answers `/flaky` with the
/// status and delay the test sets.
#[derive(Clone)]
struct Upstream {
    addr: SocketAddr,
    state: Arc<UpstreamState>,
}

#[derive(Default)]
struct UpstreamState {
    hits: AtomicUsize,
    /// Status `/flaky` answers; 0 means 200.
    flaky_status: AtomicU16,
    /// `/flaky` fails only this many more times, then answers 200 (usize::MAX: always).
    flaky_failures_left: AtomicUsize,
    flaky_delay_ms: AtomicUsize,
}

impl Upstream {
    async fn start() -> Self {
        let state = Arc::new(UpstreamState::default());
        state
            .flaky_failures_left
            .store(usize::MAX, Ordering::SeqCst);
        let app = Router::new()
            .route("/ok", axum::routing::get(ok))
            .route("/echo", axum::routing::any(echo))
            .route("/flaky", axum::routing::any(flaky))
            .route("/big", axum::routing::get(big))
            .route("/redirect", axum::routing::get(redirect))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Upstream { addr, state }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn destination(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// `/flaky` answers `status` (200 = healthy) for the next `times` requests.
    fn set_flaky(&self, status: u16, times: usize) {
        self.state.flaky_status.store(status, Ordering::SeqCst);
        self.state
            .flaky_failures_left
            .store(times, Ordering::SeqCst);
    }

    fn set_delay(&self, ms: usize) {
        self.state.flaky_delay_ms.store(ms, Ordering::SeqCst);
    }
}

async fn ok(State(s): State<Arc<UpstreamState>>) -> &'static str {
    s.hits.fetch_add(1, Ordering::SeqCst);
    "hello from upstream"
}

async fn echo(State(s): State<Arc<UpstreamState>>, method: Method, body: String) -> String {
    s.hits.fetch_add(1, Ordering::SeqCst);
    format!("{method} {body}")
}

async fn flaky(State(s): State<Arc<UpstreamState>>) -> impl IntoResponse {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let delay = s.flaky_delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay as u64)).await;
    }
    let status = s.flaky_status.load(Ordering::SeqCst);
    let failing = status != 0
        && status != 200
        && s.flaky_failures_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
                0 => None,
                usize::MAX => Some(n),
                n => Some(n - 1),
            })
            .is_ok();
    if failing {
        (StatusCode::from_u16(status).unwrap(), "failing on purpose")
    } else {
        (StatusCode::OK, "recovered")
    }
}

async fn big(
    State(s): State<Arc<UpstreamState>>,
    Query(q): Query<std::collections::HashMap<String, usize>>,
) -> Vec<u8> {
    s.hits.fetch_add(1, Ordering::SeqCst);
    vec![b'x'; q.get("bytes").copied().unwrap_or(0)]
}

async fn redirect(
    State(s): State<Arc<UpstreamState>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> impl IntoResponse {
    s.hits.fetch_add(1, Ordering::SeqCst);
    let mut headers = HeaderMap::new();
    headers.insert("location", q["to"].parse().unwrap());
    (StatusCode::FOUND, headers)
}

/// A server that accepts connections and never answers.
async fn hanging_server() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}

// ---------------------------------------------------------------------------
// The host side

/// Host log lines of the whole test binary (tests run in parallel, so each
/// test looks only for lines naming its own servers' ports).
fn logs() -> &'static CapturedLogs {
    static LOGS: OnceLock<CapturedLogs> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = CapturedLogs::default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_target(false)
            .with_max_level(tracing::Level::DEBUG)
            .with_writer(logs.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        logs
    })
}

/// The `event` lines that mention `mentioning` anywhere.
fn events(event: &str, mentioning: &str) -> Vec<Value> {
    logs()
        .events()
        .into_iter()
        .filter(|v| v["event"] == event && v.to_string().contains(mentioning))
        .collect()
}

/// The fetch component with `grants` as its `[network] allow`, under the
/// operator config `config`.
struct Host {
    _scratch: Scratch,
    runtime: Runtime,
    fetch: LoadedComponent,
}

impl Host {
    fn new(name: &str, grants: &[String], config: &str) -> Self {
        logs();
        let scratch = Scratch::new(name);
        let tools = scratch.join("tools");
        std::fs::create_dir_all(&tools).unwrap();
        let wasm = tools.join("fetch.wasm");
        std::fs::copy(artifacts::fetch(), &wasm).unwrap();
        let allow: Vec<String> = grants.iter().map(|g| format!("{g:?}")).collect();
        std::fs::write(
            tools.join("fetch.policy.toml"),
            format!("[network]\nallow = [{}]\n", allow.join(", ")),
        )
        .unwrap();
        let runtime = Runtime::new(RuntimeOptions {
            cache: Some(scratch.compile_cache()),
            config: OperatorConfig::parse(config).unwrap(),
            ..RuntimeOptions::default()
        })
        .unwrap();
        let fetch = runtime.load_file(&wasm).unwrap();
        Host {
            _scratch: scratch,
            runtime,
            fetch,
        }
    }

    async fn fetch(&self, args: Value) -> ToolOutcome {
        let signature = self.fetch.tool("fetch").unwrap();
        let args = args.as_object().cloned().unwrap();
        invoke(
            &self.runtime,
            &self.fetch,
            signature,
            Some(&args),
            &CancellationToken::new(),
            None,
        )
        .await
    }

    /// Fetch `url`; the response record, or the error text.
    async fn get(&self, url: &str) -> Result<Value, String> {
        outcome(self.fetch(json!({"url": url})).await)
    }

    /// Until the open breaker for `destination` lets a probe through (its
    /// cool-down is over), read from the breaker itself.
    async fn wait_for_probe(&self, destination: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self
            .breaker(destination)
            .and_then(|s| s.retry_after_ms)
            .is_some_and(|ms| ms > 0)
        {
            assert!(Instant::now() < deadline, "the cool-down never ended");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn breaker(&self, destination: &str) -> Option<mcpplus_breaker::Snapshot> {
        self.runtime
            .outbound()
            .breakers()
            .list(Instant::now())
            .into_iter()
            .find(|(d, _)| d == destination)
            .map(|(_, s)| s)
    }
}

fn outcome(o: ToolOutcome) -> Result<Value, String> {
    if o.is_error {
        Err(o.content[0]["text"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    } else {
        Ok(o.structured.expect("fetch returns a record"))
    }
}

const QUICK: &str = r#"
[outbound]
retries = 0
connect_timeout_ms = 1000
first_byte_timeout_ms = 400
"#;

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_destination_answers_and_the_request_body_arrives() {
    let up = Upstream::start().await;
    let host = Host::new("outbound-ok", &[up.destination()], QUICK);
    let r = host.get(&up.url("/ok")).await.unwrap();
    assert_eq!(r["status"], 200);
    assert_eq!(r["body"], "hello from upstream");
    assert_eq!(r["redirects"], 0);

    let r = outcome(
        host.fetch(json!({"url": up.url("/echo"), "method": "post", "body": "ping"}))
            .await,
    )
    .unwrap();
    assert_eq!(r["body"], "POST ping");
    let b = host.breaker(&up.destination()).unwrap();
    assert_eq!(b.state, BreakerState::Closed);
    assert_eq!(b.counters.successes, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_outside_the_grants_are_refused_before_any_traffic() {
    let granted = Upstream::start().await;
    let other = Upstream::start().await;
    let host = Host::new("outbound-deny", &[granted.destination()], QUICK);

    let error = host.get(&other.url("/ok")).await.unwrap_err();
    assert!(
        error.contains(&format!(
            "{} is not among the destinations component `fetch` may reach",
            other.destination()
        )) && error.contains("to allow it, add"),
        "{error}"
    );
    assert_eq!(other.hits(), 0, "a refused request must not be sent");
    let audit = events("capability.denied", &other.addr.to_string());
    assert_eq!(audit.len(), 1, "{audit:?}");
    assert_eq!(audit[0]["capability"], "network");
    assert_eq!(audit[0]["target"], format!("{}/ok", other.destination()));

    // Scheme and port are part of the grant.
    let https = format!("https://{}/ok", granted.addr);
    assert!(
        host.get(&https)
            .await
            .unwrap_err()
            .contains("is not among the destinations")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_name_that_resolves_to_loopback_is_refused() {
    let up = Upstream::start().await;
    let by_name = format!("http://localhost:{}", up.addr.port());
    let host = Host::new("outbound-private", std::slice::from_ref(&by_name), QUICK);
    let error = host.get(&format!("{by_name}/ok")).await.unwrap_err();
    assert!(
        error.contains("`localhost` resolves to") && error.contains("a loopback address"),
        "{error}"
    );
    assert_eq!(up.hits(), 0);
    assert_eq!(
        events(
            "capability.denied",
            &format!("localhost:{}", up.addr.port())
        )
        .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_redirect_is_checked_again() {
    let front = Upstream::start().await;
    let inner = Upstream::start().await;
    let host = Host::new(
        "outbound-redirect",
        &[
            front.destination(),
            format!("http://localhost:{}", inner.addr.port()),
        ],
        QUICK,
    );
    let via = |to: &str| format!("{}?to={}", front.url("/redirect"), to);

    // To the cloud metadata service: not granted.
    let error = host
        .get(&via("http://169.254.169.254/latest/meta-data/"))
        .await
        .unwrap_err();
    assert!(
        error.contains("http://169.254.169.254:80 is not among"),
        "{error}"
    );
    // To a loopback server nobody granted.
    let error = host.get(&via(&inner.url("/ok"))).await.unwrap_err();
    assert!(error.contains("is not among"), "{error}");
    // To a granted name that resolves to loopback.
    let error = host
        .get(&via(&format!("http://localhost:{}/ok", inner.addr.port())))
        .await
        .unwrap_err();
    assert!(error.contains("a loopback address"), "{error}");
    assert_eq!(inner.hits(), 0, "no redirect may reach the inner server");

    // A redirect within the grants is followed.
    let r = host.get(&via(&front.url("/ok"))).await.unwrap();
    assert_eq!(
        (r["status"].as_u64(), r["redirects"].as_u64()),
        (Some(200), Some(1))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_fails_fast_probes_and_closes_without_touching_other_destinations() {
    let failing = Upstream::start().await;
    let healthy = Upstream::start().await;
    let config = r#"
[outbound]
retries = 0
first_byte_timeout_ms = 2000
[outbound.breaker]
consecutive_failures = 3
failure_rate = 0
cooldown_ms = 400
half_open_probes = 1
close_after = 2
"#;
    let host = Host::new(
        "outbound-breaker",
        &[failing.destination(), healthy.destination()],
        config,
    );
    let dest = failing.destination();
    failing.set_flaky(503, usize::MAX);
    for _ in 0..3 {
        let r = host.get(&failing.url("/flaky")).await.unwrap();
        assert_eq!(r["status"], 503, "the guest sees the server's answer");
    }
    assert_eq!(host.breaker(&dest).unwrap().state, BreakerState::Open);
    assert_eq!(failing.hits(), 3);

    // Open: fail fast, nothing sent.
    let started = Instant::now();
    let error = host.get(&failing.url("/flaky")).await.unwrap_err();
    assert!(
        error.contains(&format!("the circuit breaker for {dest}:"))
            || error.contains(&format!("the circuit breaker for {dest} is open")),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_millis(300));
    assert_eq!(
        failing.hits(),
        3,
        "an open breaker must not call the destination"
    );

    // Other destinations are unaffected.
    assert_eq!(host.get(&healthy.url("/ok")).await.unwrap()["status"], 200);
    assert_eq!(
        host.breaker(&healthy.destination()).unwrap().state,
        BreakerState::Closed
    );

    // After the cool-down: one slow probe at a time; a second caller is turned away.
    host.wait_for_probe(&dest).await;
    failing.set_flaky(200, 0);
    failing.set_delay(500);
    let flaky = failing.url("/flaky");
    let probes_before = failing.hits();
    let (first, second) = tokio::join!(host.get(&flaky), async {
        // Once the first probe has reached the server, it holds the slot.
        let deadline = Instant::now() + Duration::from_secs(10);
        while failing.hits() == probes_before {
            assert!(Instant::now() < deadline, "the probe never arrived");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        host.get(&flaky).await
    });
    assert_eq!(first.unwrap()["body"], "recovered");
    let busy = second.unwrap_err();
    assert!(
        busy.contains("half-open and its 1 probe slot(s) are taken"),
        "{busy}"
    );
    assert_eq!(host.breaker(&dest).unwrap().state, BreakerState::HalfOpen);
    failing.set_delay(0);
    host.get(&failing.url("/flaky")).await.unwrap();
    assert_eq!(host.breaker(&dest).unwrap().state, BreakerState::Closed);

    // Each transition is a log event.
    let port = failing.addr.port().to_string();
    for event in ["breaker.opened", "breaker.half_opened", "breaker.closed"] {
        assert!(
            !events(event, &port).is_empty(),
            "no {event} event for {dest}"
        );
    }
    let opened = &events("breaker.opened", &port)[0];
    assert_eq!(opened["destination"], dest.as_str());
    assert_eq!(opened["cooldown_ms"], 400);

    // A failed probe re-opens it for twice as long.
    for _ in 0..3 {
        failing.set_flaky(500, usize::MAX);
        let _ = host.get(&failing.url("/flaky")).await;
    }
    host.wait_for_probe(&dest).await;
    let _ = host.get(&failing.url("/flaky")).await; // the probe fails
    let snap = host.breaker(&dest).unwrap();
    assert_eq!(snap.state, BreakerState::Open);
    assert!(snap.retry_after_ms.unwrap() > 600, "{snap:?}");

    // The metrics carry the state and the outcomes.
    let text = mcpplus_telemetry::metrics::metrics().render();
    let state_line = format!("mcpplus_breaker_state{{destination=\"{dest}\"}} 2");
    assert!(text.contains(&state_line), "missing {state_line}");
    assert!(text.contains(&format!(
        "mcpplus_outbound_requests_total{{destination=\"{dest}\",outcome=\"circuit_open\"}}"
    )));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_times_out_and_counts_against_it() {
    let addr = hanging_server().await;
    let dest = format!("http://{addr}");
    let host = Host::new("outbound-hang", std::slice::from_ref(&dest), QUICK);
    let started = Instant::now();
    let error = host.get(&format!("{dest}/")).await.unwrap_err();
    assert!(error.contains("did not answer in time"), "{error}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    let b = host.breaker(&dest).unwrap();
    assert_eq!((b.counters.failures, b.consecutive_failures), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_requests_are_retried_and_others_are_not() {
    let up = Upstream::start().await;
    let config = r#"
[outbound]
retries = 2
retry_backoff_ms = 20
[outbound.breaker]
consecutive_failures = 10
failure_rate = 0
"#;
    let host = Host::new("outbound-retry", &[up.destination()], config);
    up.set_flaky(502, 2);
    let r = host.get(&up.url("/flaky")).await.unwrap();
    assert_eq!(
        r["status"], 200,
        "two failures, then the third attempt succeeds"
    );
    assert_eq!(up.hits(), 3);

    up.set_flaky(502, 2);
    let r = outcome(
        host.fetch(json!({"url": up.url("/flaky"), "method": "post", "body": "x"}))
            .await,
    )
    .unwrap();
    assert_eq!(r["status"], 502, "POST is not retried");
    assert_eq!(up.hits(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_before_the_calls_deadline() {
    let up = Upstream::start().await;
    let config = r#"
[limits]
timeout_ms = 1500
[outbound]
retries = 10
retry_backoff_ms = 400
retry_backoff_max_ms = 400
[outbound.breaker]
consecutive_failures = 100
failure_rate = 0
"#;
    let host = Host::new("outbound-deadline", &[up.destination()], config);
    up.set_flaky(503, usize::MAX);
    let started = Instant::now();
    let r = host.get(&up.url("/flaky")).await.unwrap();
    assert_eq!(r["status"], 503, "the last answer, not a timed-out call");
    assert!(started.elapsed() < Duration::from_millis(1500));
    // Backoff waits 200..=400 ms (equal jitter), so 1.5 s holds at most 8
    // attempts: the deadline, not `retries = 10` (11 attempts), ended them.
    assert!((2..=8).contains(&up.hits()), "{} attempts", up.hits());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_over_the_cap_are_refused_without_blaming_the_destination() {
    let up = Upstream::start().await;
    let config = "[outbound]\nmax_response_bytes = 100000\nretries = 0\n";
    let host = Host::new("outbound-cap", &[up.destination()], config);
    let error = host.get(&up.url("/big?bytes=200000")).await.unwrap_err();
    assert!(
        error.contains("larger than the host's 100000-byte limit"),
        "{error}"
    );
    let r = host.get(&up.url("/big?bytes=1000")).await.unwrap();
    assert_eq!(r["body"].as_str().unwrap().len(), 1000);
    let b = host.breaker(&up.destination()).unwrap();
    assert_eq!((b.counters.failures, b.consecutive_failures), (0, 0));
}
