//! `mcpplus serve`: load a tools folder and serve it over stdio or HTTP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use tokio_util::sync::CancellationToken;

use super::CommonArgs;
use crate::catalog::{LiveCatalog, load_dir};
use crate::mcp::{HttpOptions, McpServer, serve_http, serve_stdio};

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
    /// Exit with an error if any component fails to load, instead of serving the rest
    #[arg(long)]
    strict: bool,
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
    let runtime = Arc::new(common.runtime()?);
    tracing::info!(event = "runtime.ready", allocator = ?runtime.allocator(), "engine ready");
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
    }
    tracing::info!(folder = %dir.display(), components = catalog.components().len(),
        tools = catalog.tools().count(), elapsed_ms = started.elapsed().as_millis() as u64, "catalog ready");

    let server = McpServer::new(Arc::new(LiveCatalog::new(catalog)), runtime);
    match args.http {
        None => serve_stdio(server).await?,
        Some(addr) => {
            let shutdown = CancellationToken::new();
            let on_signal = shutdown.clone();
            tokio::spawn(async move {
                let _ = tokio::signal::ctrl_c().await;
                on_signal.cancel();
            });
            let options = HttpOptions {
                addr,
                allowed_hosts: args.allow_hosts,
                allowed_origins: args.allow_origins,
            };
            serve_http(server, options, shutdown, |bound| {
                tracing::info!(event = "server.listening", url = %format!("http://{bound}/mcp"), "serving Streamable HTTP");
                // Also on stderr as a plain line, so scripts can find the port.
                eprintln!("mcpplus: listening on http://{bound}/mcp");
            })
            .await?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
