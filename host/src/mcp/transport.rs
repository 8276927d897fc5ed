//! Transports: stdio (the default; stdout carries only MCP messages) and Streamable
//! HTTP at `/mcp` with Host and Origin checks against DNS rebinding.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::serve::ListenerExt as _;
use rmcp::ServiceExt as _;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use tokio_util::sync::CancellationToken;

use super::handler::McpServer;

/// Serve one client over stdin/stdout until it closes stdin.
pub async fn serve_stdio(server: McpServer) -> anyhow::Result<()> {
    let running = match server.serve(rmcp::transport::stdio_pipes()).await {
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
        Err(e) => return Err(e).context("starting the stdio transport"),
    };
    running.waiting().await.context("serving stdio")?;
    Ok(())
}

/// Who may talk to the HTTP endpoint.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub addr: SocketAddr,
    /// Extra `Host` values accepted besides loopback names (e.g. a public hostname).
    pub allowed_hosts: Vec<String>,
    /// Extra browser origins accepted besides loopback ones.
    pub allowed_origins: Vec<String>,
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

    let mut hosts: Vec<String> = vec![
        "localhost".into(),
        "127.0.0.1".into(),
        "::1".into(),
        "[::1]".into(),
    ];
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
        .with_allowed_hosts(hosts)
        .with_allowed_origins(origins)
        .enforce_origin_validation()
        .with_cancellation_token(shutdown.child_token());
    let service: StreamableHttpService<McpServer, LocalSessionManager> = StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let router = axum::Router::new()
        .nest_service("/mcp", service)
        .route("/metrics", axum::routing::get(metrics_endpoint));

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
    on_ready: impl FnOnce(SocketAddr),
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for metrics on {addr}"))?;
    on_ready(listener.local_addr()?);
    let router = axum::Router::new().route("/metrics", axum::routing::get(metrics_endpoint));
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    }))
}
