//! `mcpplus serve`: load a tools folder and serve it over stdio or HTTP.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use super::CommonArgs;
use crate::admin::{default_socket, server as admin_server};
use crate::catalog::{LiveCatalog, load_dir};
use crate::mcp::auth::HttpAuth;
use crate::mcp::federation::Federation;
use crate::mcp::{HttpOptions, McpServer, serve_http, serve_metrics, serve_stdio};
use crate::runner::CatalogRunner;
use crate::toolset::{ToolSet, watch::watch};
use mcpplus_queue::service::QueueService;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Folder of tool components (*.wasm) [default: the bundled tools]
    #[arg(long, env = "MCPPLUS_TOOLS", value_name = "DIR")]
    tools: Option<PathBuf>,
    /// Serve Streamable HTTP at http://ADDR/mcp instead of stdio (e.g. 127.0.0.1:8080)
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// Accept this Host header on HTTP besides loopback names (repeatable)
    #[arg(long = "allow-host", value_name = "HOST")]
    allow_hosts: Vec<String>,
    /// Accept this browser Origin on HTTP besides loopback origins (repeatable)
    #[arg(long = "allow-origin", value_name = "ORIGIN")]
    allow_origins: Vec<String>,
    /// The HTTP access token's file [default: [http] token_file, else DATA_DIR/http.token, created on first start]; MCPPLUS_HTTP_TOKEN overrides it
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// Serve HTTP without authentication: anyone who can reach the port runs every tool. Loopback addresses only
    #[arg(long)]
    no_auth: bool,
    /// At most this many HTTP sessions (2025-11-25 clients) at once
    #[arg(long, value_name = "N", default_value_t = 256)]
    max_sessions: usize,
    /// Exit with an error if any component fails to load, instead of serving the rest
    #[arg(long)]
    strict: bool,
    /// Do not watch the tools folder for added, changed and removed components
    #[arg(long)]
    no_watch: bool,
    /// How long a changed file must stay quiet before it is loaded, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 250)]
    watch_settle_ms: u64,
    /// The admin socket for `mcpplus tools` [default: $XDG_RUNTIME_DIR/mcpplus/admin.sock or ~/.cache/mcpplus/admin.sock]
    #[arg(long, env = "MCPPLUS_ADMIN_SOCKET", value_name = "PATH")]
    admin_socket: Option<PathBuf>,
    /// Do not open the admin socket
    #[arg(long)]
    no_admin: bool,
    /// Also serve the diagnostic tools the official MCP conformance suite calls
    /// (test_missing_capability, test_trigger_tool_change); for conformance runs
    #[arg(long)]
    conformance_fixtures: bool,
    /// Also serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464; with --http they are at /metrics too)
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
    /// Export one span per tool call to this OpenTelemetry collector (OTLP/HTTP JSON, http:// only)
    #[cfg(feature = "otlp")]
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// Where the server keeps its state: the task queue (queue.sqlite3) [default: $XDG_DATA_HOME/mcpplus or ~/.local/share/mcpplus]
    #[arg(long, env = "MCPPLUS_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Join a mesh of mcpplus nodes listening on this multiaddr (repeatable; adds to `[mesh] listen`), e.g. /ip4/127.0.0.1/tcp/0
    #[arg(long = "mesh-listen", value_name = "MULTIADDR")]
    mesh_listen: Vec<String>,
    /// Dial this mesh node at start (repeatable; adds to `[mesh] bootstrap`), e.g. /ip4/10.0.0.2/tcp/4001/p2p/12D3KooW…
    #[arg(long = "bootstrap", value_name = "MULTIADDR")]
    bootstrap: Vec<String>,
    /// How long unloading a component waits for its running calls before cancelling them, in seconds
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    drain_timeout: f64,
}

/// The bundled tools built by scripts/build-guest-tools.sh.
pub fn bundled_tools_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-tools/dist"))
}

pub async fn run(args: ServeArgs, common: &CommonArgs) -> anyhow::Result<ExitCode> {
    let dir = args.tools.clone().unwrap_or_else(bundled_tools_dir);
    if !dir.is_dir() {
        anyhow::bail!(
            "tools folder {} does not exist; pass --tools DIR, or build the bundled tools with scripts/build-guest-tools.sh",
            dir.display()
        );
    }
    #[cfg(feature = "otlp")]
    if let Some(endpoint) = &args.otlp_endpoint {
        mcpplus_telemetry::otlp::start(endpoint).map_err(|e| anyhow::anyhow!(e))?;
    }
    let runtime = Arc::new(common.runtime()?);
    tracing::info!(event = "runtime.ready", allocator = ?runtime.allocator(), "engine ready");
    // Decided before anything is served, so a bad setup fails at once.
    let http_config = &runtime.config().http;
    let metrics_token = http_config
        .metrics_token_file
        .as_deref()
        .map(crate::mcp::auth::read_token_file)
        .transpose()?;
    let http_auth = match args.http {
        Some(addr) => http_credentials(&args, addr, http_config)?,
        None => None,
    };
    let started = std::time::Instant::now();
    let (catalog, errors) = {
        let runtime = runtime.clone();
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || load_dir(&runtime, &dir))
            .await
            .context("loading components")??
    };
    for e in &errors {
        tracing::error!(event = "tool.load_failed", error = %e, "component not loaded");
    }
    for name in runtime.config().policies.keys() {
        if !dir.join(format!("{name}.wasm")).is_file() {
            tracing::warn!(
                component = %name,
                "[policies.{name}] in the operator config matches no component in {}",
                dir.display()
            );
        }
    }
    if args.strict && !errors.is_empty() {
        anyhow::bail!(
            "{} component(s) failed to load (see the log above); refusing to serve with --strict",
            errors.len()
        );
    }
    for c in catalog.components() {
        let tools: Vec<&str> = c.tools().iter().map(|t| t.name.as_str()).collect();
        tracing::info!(event = "tool.loaded", component = %c.name, digest = %c.digest, cache = ?c.cache,
            compile_ms = c.compile_time.as_millis() as u64, tools = %tools.join(","),
            policy = c.policy.source.as_deref().unwrap_or("none (nothing granted)"), "component loaded");
        for w in &c.description.warnings {
            tracing::warn!(component = %c.name, "{w}");
        }
        for cached in &c.policy.cache.tools {
            if !c.tools().iter().any(|t| &t.name == cached) {
                tracing::warn!(component = %c.name, tool = %cached,
                    "[cache] names `{cached}`, which this component does not export; nothing of it is cached (tools: {})", tools.join(", "));
            }
        }
    }
    tracing::info!(folder = %dir.display(), components = catalog.components().len(),
        tools = catalog.tools().count(), elapsed_ms = started.elapsed().as_millis() as u64, "catalog ready");

    anyhow::ensure!(
        args.drain_timeout.is_finite() && args.drain_timeout >= 0.0,
        "--drain-timeout must be a number of seconds, got {}",
        args.drain_timeout
    );
    let live = Arc::new(LiveCatalog::new(catalog));
    let toolset = Arc::new(ToolSet::new(
        runtime.clone(),
        live.clone(),
        Duration::from_secs_f64(args.drain_timeout),
    ));
    let _watch = if args.no_watch {
        None
    } else {
        match watch(
            toolset.clone(),
            &dir,
            Duration::from_millis(args.watch_settle_ms),
        ) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the tools folder; changes there need `mcpplus tools reload`");
                None
            }
        }
    };
    let admin_targets = Arc::new(admin_server::AdminTargets {
        toolset: toolset.clone(),
        mesh: std::sync::OnceLock::new(),
    });
    let _admin = match (
        args.no_admin,
        args.admin_socket.clone().or_else(default_socket),
    ) {
        (false, Some(path)) => match admin_server::start(&path, admin_targets.clone()).await {
            Ok(server) => Some(server),
            Err(e) => {
                tracing::warn!(event = "admin.unavailable", "{e}");
                None
            }
        },
        _ => None,
    };

    let _metrics = match args.metrics {
        Some(addr) => Some(
            serve_metrics(addr, &args.allow_hosts, metrics_token.clone(), |bound| {
                tracing::info!(event = "metrics.listening", url = %format!("http://{bound}/metrics"), "serving metrics");
                eprintln!("mcpplus: metrics on http://{bound}/metrics");
            })
            .await?,
        ),
        None => None,
    };
    let queue = open_queue(args.data_dir.as_deref(), &runtime, &live)?;
    let mut mesh_config = runtime.config().mesh.clone();
    mesh_config.listen.extend(args.mesh_listen.iter().cloned());
    mesh_config.bootstrap.extend(args.bootstrap.iter().cloned());
    let _mesh = match (&queue, mesh_config.enabled()) {
        (_, false) => None,
        (None, true) => anyhow::bail!(
            "the mesh shares the task queue, and this server has none; pass --data-dir DIR"
        ),
        (Some(queue), true) => {
            let runner = Arc::new(CatalogRunner {
                runtime: runtime.clone(),
                catalog: live.clone(),
            });
            let node = crate::mesh::join(&mesh_config, queue, runner, live.clone()).await?;
            let _ = admin_targets.mesh.set(node.mesh.handle.clone());
            runtime.attach_peers(Arc::new(crate::peer_network::MeshPeers {
                mesh: node.mesh.handle.clone(),
                bootstrap: mesh_config.bootstrap.clone(),
                claimers: node.claimers(),
            }));
            Some(node)
        }
    };
    let federation = match (&_mesh, mesh_config.federate) {
        (Some(node), true) => Some(Arc::new(Federation::new(
            node.mesh.handle.clone(),
            node.claimers(),
            Duration::from_millis(mesh_config.call_timeout_ms),
        ))),
        _ => None,
    };
    let _workflow_driver = match &queue {
        Some(queue) => Some(start_workflows(queue, &runtime, &live, _mesh.as_ref())?),
        None => None,
    };
    let max_request_bytes = runtime.config().server.max_request_bytes;
    let diagnostics = args
        .conformance_fixtures
        .then(|| Arc::new(crate::mcp::diagnostics::Diagnostics::new(live.clone())));
    let server = McpServer::new(live, runtime)
        .with_queue(queue.clone())
        .with_federation(federation)
        .with_diagnostics(diagnostics);
    match args.http {
        None => {
            tokio::select! {
                served = serve_stdio(server, max_request_bytes) => served?,
                signal = shutdown_signal() => {
                    tracing::info!(event = "server.stopping", signal, "stopping on a signal");
                }
            }
        }
        Some(addr) => {
            let shutdown = CancellationToken::new();
            let on_signal = shutdown.clone();
            tokio::spawn(async move {
                let signal = shutdown_signal().await;
                tracing::info!(
                    event = "server.stopping",
                    signal,
                    "stopping on a signal: draining HTTP"
                );
                on_signal.cancel();
            });
            let options = HttpOptions {
                addr,
                allowed_hosts: args.allow_hosts,
                allowed_origins: args.allow_origins,
                auth: http_auth,
                metrics_token,
                max_sessions: args.max_sessions,
                max_request_bytes,
            };
            serve_http(server, options, shutdown, |bound| {
                tracing::info!(event = "server.listening", url = %format!("http://{bound}/mcp"), "serving Streamable HTTP");
                // Also on stderr as a plain line, so scripts can find the port.
                eprintln!("mcpplus: listening on http://{bound}/mcp");
            })
            .await?;
        }
    }
    if let Some(queue) = queue {
        // Attempts still running go back to the queue at the next start.
        queue.shutdown(Duration::from_secs(2)).await;
    }
    Ok(ExitCode::SUCCESS)
}

/// Workflows over the queue (docs/workflows.md): the controller's tables in
/// the queue's file, templates from `<data-dir>/workflow-templates`, and the
/// driver that advances workflows as their tasks finish. A step may name any
/// tool this node or a claiming peer serves.
fn start_workflows(
    queue: &Arc<QueueService>,
    runtime: &Arc<mcpplus_runtime::Runtime>,
    live: &Arc<LiveCatalog>,
    mesh: Option<&crate::mesh::MeshNode>,
) -> anyhow::Result<mcpplus_queue::worker::AbortOnDrop> {
    let data_dir = queue.data_dir().to_path_buf();
    let template_dir = data_dir.join(mcpplus_workflow::template::TEMPLATES_DIR);
    crate::workflow_templates::install_examples(&template_dir);
    let exists = {
        let queue = queue.clone();
        let runtime = runtime.clone();
        move |tool: &str| {
            queue.hosts_locally(tool)
                || runtime
                    .peers()
                    .is_some_and(|peers| !peers.hosts(tool).is_empty())
        }
    };
    let workflows = mcpplus_workflow::Workflows::open(
        queue.store().clone(),
        mcpplus_workflow::WorkflowOptions {
            tool_exists: Box::new(exists),
            template_dir: Some(template_dir),
            node: mesh.map_or_else(
                || "local".to_string(),
                |m| m.mesh.handle.local_peer_id().to_string(),
            ),
            retention_ms: queue.config().retention_ms,
        },
    )
    .context("opening the workflow tables")?
    .with_cache(cache_rules(live.clone()));
    let workflows = Arc::new(workflows);
    let _ = runtime.attach_workflows(workflows.clone());
    tracing::info!(event = "workflow.ready", "workflows ready");
    Ok(mcpplus_queue::worker::AbortOnDrop(
        mcpplus_workflow::spawn_driver(workflows, Duration::from_millis(500)),
    ))
}

/// Which tools' results workflow steps may reuse: those the serving
/// component's policy lists in `[cache]`, keyed by that component's sha256
/// (so a hot swap starts a new cache). Peers' tools are never cached here.
fn cache_rules(
    live: Arc<LiveCatalog>,
) -> impl Fn(&str) -> Option<mcpplus_workflow::CacheRule> + Send + Sync + 'static {
    move |tool| {
        let catalog = live.snapshot();
        let entry = catalog.tool(tool)?;
        let ttl_s = entry.component.policy.cache.ttl_for(tool)?;
        Some(mcpplus_workflow::CacheRule {
            component_sha256: entry.component.digest.clone(),
            ttl_ms: ttl_s.map(|s| s.saturating_mul(1000)),
        })
    }
}

/// The default data directory: `$XDG_DATA_HOME/mcpplus` or `~/.local/share/mcpplus`.
pub fn default_data_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))?;
    Some(base.join("mcpplus"))
}

/// Open the task queue and give it to the tools. A data directory named on
/// the command line must work; the default one may be taken by another server,
/// and then this one serves without a queue (and says so).
fn open_queue(
    data_dir: Option<&Path>,
    runtime: &Arc<mcpplus_runtime::Runtime>,
    live: &Arc<LiveCatalog>,
) -> anyhow::Result<Option<Arc<QueueService>>> {
    let (dir, explicit) = match data_dir {
        Some(dir) => (dir.to_path_buf(), true),
        None => match default_data_dir() {
            Some(dir) => (dir, false),
            None => {
                tracing::warn!(
                    event = "queue.unavailable",
                    "no data directory (HOME is not set): serving without the task queue; pass --data-dir DIR"
                );
                return Ok(None);
            }
        },
    };
    let runner = Arc::new(CatalogRunner {
        runtime: runtime.clone(),
        catalog: live.clone(),
    });
    match QueueService::open(&dir, runtime.config().queue.clone(), runner) {
        Ok(queue) => {
            let queue = Arc::new(queue);
            tracing::info!(
                event = "queue.ready",
                backend = queue.backend(),
                location = queue.location(),
                workers = queue.config().workers,
                "task queue ready"
            );
            let _ = runtime.attach_queue(queue.clone());
            Ok(Some(queue))
        }
        Err(e) if !explicit => {
            tracing::warn!(event = "queue.unavailable", error = %format!("{e:#}"), "serving without the task queue");
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// What HTTP requires: refuses to serve a non-loopback address without
/// authentication, and loads (or makes) the token.
fn http_credentials(
    args: &ServeArgs,
    addr: SocketAddr,
    config: &mcpplus_policy::config::http::HttpConfig,
) -> anyhow::Result<Option<HttpAuth>> {
    if args.no_auth {
        anyhow::ensure!(
            addr.ip().is_loopback(),
            "refusing to serve http://{addr}/mcp without authentication: anyone who can reach that address could run every tool with this server's grants. Drop --no-auth (a token is then created in the data directory, or pass --token-file), or bind a loopback address such as 127.0.0.1"
        );
        tracing::warn!(event = "http.no_auth", address = %addr,
            "serving HTTP without authentication: any local user or process that can reach the port runs every tool");
        eprintln!(
            "mcpplus: warning: --no-auth: any local user or process that can reach {addr} can call every tool"
        );
        return Ok(None);
    }
    let data_dir = args.data_dir.clone().or_else(default_data_dir);
    let token_file = args.token_file.as_deref().or(config.token_file.as_deref());
    let token = crate::mcp::auth::load_token(token_file, data_dir.as_deref())?;
    let auth = HttpAuth::new(Some(token), config.oauth.as_ref())?;
    Ok(Some(auth))
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM (what service managers send), with
/// the signal's name. Either way the server stops the same way: HTTP drains,
/// running queue attempts go back to the queue, the admin socket is removed,
/// and the log is flushed.
async fn shutdown_signal() -> &'static str {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(stream) => stream,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return "SIGINT";
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
    }
}
