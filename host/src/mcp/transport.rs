//! Transports: stdio (the default; stdout carries only MCP messages) and Streamable
//! HTTP at `/mcp` with Host and Origin checks against DNS rebinding.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use rmcp::ServiceExt as _;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use super::auth::{self, AuthState, HttpAuth};
use super::handler::McpServer;
use super::sessions::BoundedSessions;

/// A legacy-era session unused for this long is closed.
const SESSION_IDLE: std::time::Duration = std::time::Duration::from_secs(300);

/// Serve one client over stdin/stdout until it closes stdin. A request line
/// longer than `max_request_bytes` ends the session (it would otherwise be
/// held in memory whole).
pub async fn serve_stdio(server: McpServer, max_request_bytes: usize) -> anyhow::Result<()> {
    let (stdin, stdout) = rmcp::transport::stdio_pipes();
    serve_lines(server, stdin, stdout, max_request_bytes).await
}

/// Serve one client speaking newline-delimited JSON-RPC over `input` and
/// `output` (stdio's framing) until it closes `input`. The stdio transport,
/// and the fuzz target that feeds the request path raw frames (fuzz/).
pub async fn serve_lines<R, W>(
    server: McpServer,
    input: R,
    output: W,
    max_request_bytes: usize,
) -> anyhow::Result<()>
where
    R: tokio::io::AsyncRead + Send + Unpin + 'static,
    W: tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let input = LineCapped::new(input, max_request_bytes);
    let running = match server.serve((input, output)).await {
        Ok(running) => running,
        // A client that closes stdin before the handshake (a probe, a cancelled
        // launch) is a normal end, not a server failure.
        Err(rmcp::service::ServerInitializeError::ConnectionClosed(_)) => {
            tracing::info!(
                event = "server.stopped",
                "client closed stdin before initializing"
            );
            return Ok(());
        }
        Err(e) => return Err(e).context("starting the MCP session"),
    };
    running.waiting().await.context("serving the MCP session")?;
    Ok(())
}

/// A reader that fails once a line (one JSON-RPC message on stdio) grows
/// past `cap` bytes, before the transport has buffered more of it.
struct LineCapped<R> {
    inner: R,
    cap: usize,
    since_newline: usize,
}

impl<R> LineCapped<R> {
    fn new(inner: R, cap: usize) -> Self {
        Self {
            inner,
            cap,
            since_newline: 0,
        }
    }
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for LineCapped<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = &polled {
            let fresh = &buf.filled()[before..];
            match fresh.iter().rposition(|b| *b == b'\n') {
                Some(last) => self.since_newline = fresh.len() - last - 1,
                None => self.since_newline += fresh.len(),
            }
            if self.since_newline > self.cap {
                tracing::warn!(
                    event = "limit.exceeded",
                    limit = "max_request_bytes",
                    cap = self.cap,
                    "a stdio request is larger than [server] max_request_bytes; ending the session"
                );
                return std::task::Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "a request line over {} bytes ([server] max_request_bytes)",
                        self.cap
                    ),
                )));
            }
        }
        polled
    }
}

/// Who may talk to the HTTP endpoint.
pub struct HttpOptions {
    pub addr: SocketAddr,
    /// Extra `Host` values accepted besides loopback names (e.g. a public hostname).
    pub allowed_hosts: Vec<String>,
    /// Extra browser origins accepted besides loopback ones.
    pub allowed_origins: Vec<String>,
    /// Credentials `/mcp` requires; `None` only with `--no-auth` on loopback.
    pub auth: Option<HttpAuth>,
    /// A token `/metrics` requires, when set.
    pub metrics_token: Option<String>,
    /// At most this many legacy-era sessions at once.
    pub max_sessions: usize,
    /// The largest request body accepted (413 above it).
    pub max_request_bytes: usize,
}

/// Serve Streamable HTTP on `options.addr` at `/mcp` until `shutdown` fires.
/// `on_ready` receives the bound address (useful with port 0).
pub async fn serve_http(
    server: McpServer,
    options: HttpOptions,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(options.addr)
        .await
        .with_context(|| format!("cannot listen on {}; is the port free?", options.addr))?;
    let addr = listener.local_addr()?;

    let mut hosts = loopback_hosts();
    if !addr.ip().is_unspecified() {
        hosts.push(addr.ip().to_string());
    }
    hosts.extend(options.allowed_hosts.iter().cloned());
    let mut origins: Vec<String> = vec![
        "http://localhost:*".into(),
        "http://127.0.0.1:*".into(),
        "http://[::1]:*".into(),
    ];
    origins.extend(options.allowed_origins.iter().cloned());

    let config = StreamableHttpServerConfig::default()
        .with_allowed_hosts(hosts.clone())
        .with_allowed_origins(origins)
        .enforce_origin_validation()
        .with_max_request_body_bytes(options.max_request_bytes)
        .with_cancellation_token(shutdown.child_token());
    let service: StreamableHttpService<McpServer, BoundedSessions> = StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(BoundedSessions::new(options.max_sessions, SESSION_IDLE)),
        config,
    );
    let fallback_base = format!("http://{addr}");
    let mut mcp = axum::Router::new().nest_service("/mcp", service).layer(
        axum::middleware::from_fn_with_state(
            super::wire_errors::BodyLimit(options.max_request_bytes),
            super::wire_errors::jsonrpc_errors,
        ),
    );
    let mut open = axum::Router::new();
    if let Some(auth) = options.auth {
        let state = Arc::new(AuthState {
            auth,
            fallback_base: fallback_base.clone(),
            allowed_hosts: hosts.clone(),
        });
        mcp = mcp.layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_auth,
        ));
        open = open.route(
            auth::METADATA_PATH,
            axum::routing::get(auth::metadata_endpoint).with_state(state),
        );
    }
    let guard = Arc::new(MetricsGuard {
        allowed_hosts: hosts,
        token: options.metrics_token.map(String::into_bytes),
    });
    let metrics = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics_endpoint))
        .layer(axum::middleware::from_fn_with_state(guard, guard_metrics));
    let router = mcp.merge(open).merge(metrics);

    on_ready(addr);
    // Small JSON-RPC responses and SSE events must not wait for Nagle's algorithm.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled_owned().await })
        .await
        .context("serving HTTP")
}

/// Host names that always reach this machine's loopback.
fn loopback_hosts() -> Vec<String> {
    ["localhost", "127.0.0.1", "::1", "[::1]"]
        .map(String::from)
        .to_vec()
}

/// Who may read `/metrics` on the MCP port: the same Host check as `/mcp`
/// (against DNS rebinding), and a token when one is configured.
struct MetricsGuard {
    allowed_hosts: Vec<String>,
    token: Option<Vec<u8>>,
}

async fn guard_metrics(
    axum::extract::State(guard): axum::extract::State<Arc<MetricsGuard>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse as _;
    use subtle::ConstantTimeEq as _;
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    let name = if host.starts_with('[') {
        host.split_once(']')
            .map_or(host, |(n, _)| n)
            .trim_start_matches('[')
    } else {
        host.rsplit_once(':').map_or(host, |(n, _)| n)
    };
    let host_ok = guard
        .allowed_hosts
        .iter()
        .any(|a| a == name || a == host || a.trim_matches(['[', ']']) == name);
    if !host_ok {
        return (
            StatusCode::FORBIDDEN,
            "this Host is not served; add it with --allow-host\n",
        )
            .into_response();
    }
    if let Some(token) = &guard.token {
        let presented = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if presented.len() != token.len() || !bool::from(presented.as_bytes().ct_eq(token)) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "/metrics needs the metrics token ([http] metrics_token_file)\n",
            )
                .into_response();
        }
    }
    next.run(request).await
}

/// `GET /metrics`: the Prometheus (OpenMetrics) exposition.
async fn metrics_endpoint() -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            mcpplus_telemetry::metrics::CONTENT_TYPE,
        )],
        mcpplus_telemetry::metrics::metrics().render(),
    )
}

/// Serve only `/metrics` on `addr` (for stdio servers, or to keep metrics off the
/// MCP port). Calls `on_ready` with the bound address.
pub async fn serve_metrics(
    addr: SocketAddr,
    extra_hosts: &[String],
    token: Option<String>,
    on_ready: impl FnOnce(SocketAddr),
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for metrics on {addr}"))?;
    let bound = listener.local_addr()?;
    on_ready(bound);
    let mut allowed_hosts = loopback_hosts();
    if !bound.ip().is_unspecified() {
        allowed_hosts.push(bound.ip().to_string());
    }
    allowed_hosts.extend(extra_hosts.iter().cloned());
    let guard = Arc::new(MetricsGuard {
        allowed_hosts,
        token: token.map(String::into_bytes),
    });
    let router = axum::Router::new()
        .route("/metrics", axum::routing::get(metrics_endpoint))
        .layer(axum::middleware::from_fn_with_state(guard, guard_metrics));
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    }))
}
