//! Keep-alive through [`Outbound::send`] against raw HTTP/1.1 servers on
//! loopback that count the connections they accept, so every test fails if a
//! connection is reused when it must not be, or not reused when it could be.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::pool::{PoolKey, PoolLimits};
use super::{Outbound, OutboundError, Scope};
use crate::capabilities::CallContext;
use mcpplus_policy::Destination;
use mcpplus_policy::config::outbound::OutboundConfig;

/// A loopback server speaking just enough HTTP/1.1. Paths:
/// - `/ok`: 200 `hello`, keep-alive;
/// - `/slow`: the same after 100 ms;
/// - `/close`: 200 with `Connection: close`, then closes;
/// - `/then-drop`: 200 keep-alive, then closes the socket anyway;
/// - `/vanish`: on a connection that already served a request, closes without
///   answering (a server that timed the idle connection out); else like `/ok`;
/// - `/stall`: promises 10 bytes, sends 3 and leaves the socket open;
/// - `/chunked-big`: a chunked body over the tests' 100-byte cap, finished
///   properly, the socket left open;
/// - `/big`: `Content-Length: 1000` (over the cap), sent whole.
struct Server {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    /// Connections the client closed.
    closed_by_peer: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start(ip: &str) -> Self {
        Self::on(TcpListener::bind((ip, 0)).await.unwrap())
    }

    fn on(listener: TcpListener) -> Self {
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed_by_peer = Arc::new(AtomicUsize::new(0));
        let (a, c) = (accepted.clone(), closed_by_peer.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                a.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(socket, c.clone()));
            }
        });
        Self {
            addr,
            accepted,
            closed_by_peer,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn grant(&self) -> Destination {
        Destination::parse(&format!("http://{}", self.addr)).unwrap()
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello";

async fn serve(mut socket: TcpStream, closed_by_peer: Arc<AtomicUsize>) {
    let mut served = 0;
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match socket.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    closed_by_peer.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        buf.drain(..head_end);
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        // Request bodies are not expected beyond what arrived with the head.
        buf.clear();
        let write = |bytes: &'static [u8]| bytes;
        let reply: &[u8] = match path.as_str() {
            "/ok" => write(OK),
            "/slow" => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                OK
            }
            "/close" => b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
            "/then-drop" => {
                let _ = socket.write_all(OK).await;
                return;
            }
            "/vanish" if served > 0 => return,
            "/vanish" => OK,
            "/stall" => {
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhel")
                    .await;
                std::future::pending::<()>().await;
                return;
            }
            "/chunked-big" => {
                let mut out = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
                for _ in 0..3 {
                    out.extend_from_slice(b"40\r\n");
                    out.extend_from_slice(&[b'x'; 64]);
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(b"0\r\n\r\n");
                let _ = socket.write_all(&out).await;
                served += 1;
                continue;
            }
            "/big" => {
                let mut out = b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n".to_vec();
                out.extend_from_slice(&[b'x'; 1000]);
                let _ = socket.write_all(&out).await;
                served += 1;
                continue;
            }
            _ => b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
        };
        if socket.write_all(reply).await.is_err() {
            return;
        }
        served += 1;
        if path == "/close" {
            return;
        }
    }
}

fn outbound(limits: PoolLimits) -> Outbound {
    let config = OutboundConfig {
        // A failure must show, not be papered over by the host's own retries.
        retries: 0,
        max_response_bytes: 100,
        ..OutboundConfig::default()
    };
    Outbound::with_pool(config, limits).unwrap()
}

fn call() -> CallContext {
    CallContext::new("pool-test".into(), "fetch".into(), 1)
}

async fn request(
    outbound: &Outbound,
    grants: &[Destination],
    method: http::Method,
    url: &str,
    headers: &[(&str, &str)],
    within: Duration,
) -> Result<http::Response<Bytes>, OutboundError> {
    let call = call();
    let scope = Scope {
        grants,
        call: &call,
        deadline: Instant::now() + within,
        connect_timeout: None,
        first_byte_timeout: None,
    };
    let mut builder = http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    outbound
        .send(builder.body(Bytes::new()).unwrap(), &scope)
        .await
}

async fn get(outbound: &Outbound, grants: &[Destination], url: &str) -> Result<String, String> {
    let response = request(
        outbound,
        grants,
        http::Method::GET,
        url,
        &[],
        Duration::from_secs(10),
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(response.body()).to_string())
}

async fn settle() {
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn sequential_requests_share_one_connection() {
    let server = Server::start("127.0.0.1").await;
    let out = outbound(PoolLimits::default());
    let grants = [server.grant()];
    for _ in 0..20 {
        assert_eq!(
            get(&out, &grants, &server.url("/ok")).await.unwrap(),
            "hello"
        );
    }
    assert_eq!(server.accepted(), 1);
    assert_eq!(out.pool().idle(), 1);
}

#[tokio::test]
async fn connection_close_from_either_side_is_honoured() {
    let server = Server::start("127.0.0.1").await;
    let out = outbound(PoolLimits::default());
    let grants = [server.grant()];
    get(&out, &grants, &server.url("/ok")).await.unwrap();
    // The server says close: the next request opens a new connection.
    assert_eq!(
        get(&out, &grants, &server.url("/close")).await.unwrap(),
        "hello"
    );
    assert_eq!(out.pool().idle(), 0);
    get(&out, &grants, &server.url("/ok")).await.unwrap();
    assert_eq!(server.accepted(), 2);
    // The request says close: not kept either.
    let r = request(
        &out,
        &grants,
        http::Method::GET,
        &server.url("/ok"),
        &[("connection", "keep-alive, Close")],
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(r.body().as_ref(), b"hello");
    get(&out, &grants, &server.url("/ok")).await.unwrap();
    assert_eq!(server.accepted(), 3);
}

#[tokio::test]
async fn a_connection_the_server_dropped_is_replaced() {
    let server = Server::start("127.0.0.1").await;
    let out = outbound(PoolLimits::default());
    let grants = [server.grant()];
    // The server closes right after answering (no `Connection: close`).
    get(&out, &grants, &server.url("/then-drop")).await.unwrap();
    settle().await;
    assert_eq!(
        get(&out, &grants, &server.url("/ok")).await.unwrap(),
        "hello"
    );
    assert_eq!(server.accepted(), 2);
    // The same with no pause: the close may not have been noticed yet.
    for _ in 0..5 {
        get(&out, &grants, &server.url("/then-drop")).await.unwrap();
        assert_eq!(
            get(&out, &grants, &server.url("/ok")).await.unwrap(),
            "hello"
        );
    }
    assert_eq!(server.accepted(), 7);
}

#[tokio::test]
async fn a_kept_connection_closed_under_a_request_is_retried_on_a_new_one_when_safe() {
    let server = Server::start("127.0.0.1").await;
    let out = outbound(PoolLimits::default());
    let grants = [server.grant()];
    get(&out, &grants, &server.url("/ok")).await.unwrap();
    // The kept connection takes the GET and closes without answering: sent
    // again on a new connection, without counting against the destination.
    assert_eq!(
        get(&out, &grants, &server.url("/vanish")).await.unwrap(),
        "hello"
    );
    assert_eq!(server.accepted(), 2);
    let (breaker, _) = out.breakers().get_new(&format!("http://{}", server.addr));
    let counters = breaker.snapshot(Instant::now()).counters;
    assert_eq!((counters.successes, counters.failures), (2, 0));
    // A POST may have been acted on: not sent twice.
    let err = request(
        &out,
        &grants,
        http::Method::POST,
        &server.url("/vanish"),
        &[],
        Duration::from_secs(10),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, OutboundError::Attempt(_)), "{err}");
    assert_eq!(server.accepted(), 2);
}

#[tokio::test]
async fn other_ports_and_addresses_never_share_a_connection() {
    let a = Server::start("127.0.0.1").await;
    let b = Server::start("127.0.0.1").await;
    // The same port on another loopback address.
    let c = Server::on(
        TcpListener::bind(("127.0.0.2", a.addr.port()))
            .await
            .unwrap(),
    );
    let out = outbound(PoolLimits::default());
    let grants = [a.grant(), b.grant(), c.grant()];
    for _ in 0..3 {
        for server in [&a, &b, &c] {
            get(&out, &grants, &server.url("/ok")).await.unwrap();
        }
    }
    assert_eq!((a.accepted(), b.accepted(), c.accepted()), (1, 1, 1));
    assert_eq!(out.pool().idle(), 3);
}

#[tokio::test]
async fn keys_keep_host_names_and_schemes_apart() {
    // Pure key construction: nothing connects to it.
    let addr: SocketAddr = "127.0.0.1:443".parse().unwrap();
    let key = |url: &str| {
        PoolKey::new(
            &super::guard::Target::of(&url.parse().unwrap()).unwrap(),
            addr,
        )
    };
    assert_eq!(key("https://a.example/x"), key("https://A.example:443/y"));
    assert_ne!(key("https://a.example"), key("https://b.example"));
    assert_ne!(key("https://a.example:443"), key("http://a.example:443"));
}

#[tokio::test]
async fn a_connection_is_reused_only_after_this_requests_own_check() {
    let server = Server::start("127.0.0.1").await;
    let out = outbound(PoolLimits::default());
    get(&out, &[server.grant()], &server.url("/ok"))
        .await
        .unwrap();
    assert_eq!(out.pool().idle(), 1);
    // Another tool, not granted this address: refused, although a connection
    // to it is idle.
    let other = Destination::parse("http://127.0.0.1:1").unwrap();
    let err = get(&out, &[other], &server.url("/ok")).await.unwrap_err();
    assert!(err.contains("not among the destinations"), "{err}");
    // A name that resolves to the same loopback address fails the guard.
    let by_name = format!("http://localhost:{}", server.addr.port());
    let grant = Destination::parse(&by_name).unwrap();
    let err = get(&out, &[grant], &format!("{by_name}/ok"))
        .await
        .unwrap_err();
    assert!(err.contains("loopback"), "{err}");
    assert_eq!(out.pool().idle(), 1);
    // The granted tool still gets its connection.
    get(&out, &[server.grant()], &server.url("/ok"))
        .await
        .unwrap();
    assert_eq!(server.accepted(), 1);
}

#[tokio::test]
async fn a_response_not_read_whole_loses_its_connection() {
    let server = Server::start("127.0.0.1").await;
    let out = outbound(PoolLimits::default());
    let grants = [server.grant()];
    get(&out, &grants, &server.url("/ok")).await.unwrap();
    let paths = ["/stall", "/chunked-big", "/big"];
    for (i, path) in paths.iter().enumerate() {
        // On the kept connection: the body stalls past the deadline, or runs
        // past the cap (while streaming, or as declared).
        let err = request(
            &out,
            &grants,
            http::Method::GET,
            &server.url(path),
            &[],
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, OutboundError::Attempt(_)), "{path}: {err}");
        assert_eq!(out.pool().idle(), 0, "{path}");
        // The next request opens a new connection, which is kept again.
        assert_eq!(
            get(&out, &grants, &server.url("/ok")).await.unwrap(),
            "hello"
        );
        assert_eq!(server.accepted(), i + 2, "{path}");
        assert_eq!(out.pool().idle(), 1, "{path}");
    }
    settle().await;
    // The host closed the connections it gave up on (the stalled server
    // never reads again, so it cannot tell).
    assert_eq!(
        server.closed_by_peer.load(Ordering::SeqCst),
        paths.len() - 1
    );
}

#[tokio::test]
async fn idle_connections_are_bounded_per_destination_and_in_total() {
    let a = Server::start("127.0.0.1").await;
    let b = Server::start("127.0.0.1").await;
    let out = outbound(PoolLimits {
        idle_per_key: 2,
        idle_total: 3,
        ..PoolLimits::default()
    });
    let grants = [a.grant(), b.grant()];
    let four = |s: &Server| {
        let url = s.url("/slow");
        let (out, grants) = (&out, &grants);
        async move {
            let (w, x, y, z) = tokio::join!(
                get(out, grants, &url),
                get(out, grants, &url),
                get(out, grants, &url),
                get(out, grants, &url),
            );
            for r in [w, x, y, z] {
                assert_eq!(r.unwrap(), "hello");
            }
        }
    };
    four(&a).await;
    assert_eq!(a.accepted(), 4);
    assert_eq!(out.pool().idle(), 2);
    four(&b).await;
    assert_eq!(out.pool().idle(), 3);
    settle().await;
    // Two of a's and two of b's were closed (one of a's as the oldest overall).
    assert_eq!(a.closed_by_peer.load(Ordering::SeqCst), 3);
    assert_eq!(b.closed_by_peer.load(Ordering::SeqCst), 2);
    get(&out, &grants, &a.url("/ok")).await.unwrap();
    get(&out, &grants, &b.url("/ok")).await.unwrap();
    get(&out, &grants, &b.url("/ok")).await.unwrap();
    assert_eq!((a.accepted(), b.accepted()), (4, 4));
}

#[tokio::test]
async fn idle_and_old_connections_are_closed() {
    let server = Server::start("127.0.0.1").await;
    let out = outbound(PoolLimits {
        idle_timeout: Duration::from_millis(100),
        ..PoolLimits::default()
    });
    let grants = [server.grant()];
    get(&out, &grants, &server.url("/ok")).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Closed by the host while idle, not just skipped on the next request.
    assert_eq!(out.pool().idle(), 0);
    assert_eq!(server.closed_by_peer.load(Ordering::SeqCst), 1);
    get(&out, &grants, &server.url("/ok")).await.unwrap();
    assert_eq!(server.accepted(), 2);

    let out = outbound(PoolLimits {
        max_lifetime: Duration::from_millis(200),
        ..PoolLimits::default()
    });
    let server = Server::start("127.0.0.1").await;
    let grants = [server.grant()];
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(500) {
        get(&out, &grants, &server.url("/ok")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A new connection about every 200 ms, although it was never idle long.
    assert!(
        (2..=4).contains(&server.accepted()),
        "{}",
        server.accepted()
    );
}

#[tokio::test]
async fn a_pool_with_no_room_keeps_nothing() {
    let server = Server::start("127.0.0.1").await;
    let out = outbound(PoolLimits {
        idle_per_key: 0,
        ..PoolLimits::default()
    });
    let grants = [server.grant()];
    for _ in 0..3 {
        get(&out, &grants, &server.url("/ok")).await.unwrap();
    }
    assert_eq!(server.accepted(), 3);
}
