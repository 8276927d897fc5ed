//! The `mcpplus` command line: `serve`, `tools`, `inspect`, `audit`, `call`, `embed-docs`.

mod audit;
mod breakers;
mod build_project;
mod call;
mod dev;
mod embed_docs;
mod inspect;
mod new;
mod peers;
mod serve;
mod tools;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use mcpplus_policy::config::{CallLimits, OperatorConfig};
use mcpplus_runtime::cache::CompileCache;
use mcpplus_runtime::engine::RuntimeOptions;
use mcpplus_telemetry::logs::{self, LogFormat};

#[derive(Parser)]
#[command(name = "mcpplus", version, about = "Serve sandboxed WebAssembly component tools over MCP", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    common: CommonArgs,
}

#[derive(clap::Args, Clone)]
pub struct CommonArgs {
    /// Where precompiled components are cached [default: $MCPPLUS_CACHE_DIR or ~/.cache/mcpplus]
    #[arg(long, global = true, env = "MCPPLUS_CACHE_DIR", value_name = "DIR")]
    cache_dir: Option<PathBuf>,
    /// Compile every component from scratch instead of using the cache
    #[arg(long, global = true)]
    no_cache: bool,
    /// Operator config (TOML): limits per tool and component, server caps, policies
    #[arg(long, global = true, env = "MCPPLUS_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Time limit for one tool call, in seconds [default: 30, or the config's]
    #[arg(long, global = true, value_name = "SECONDS")]
    call_timeout: Option<f64>,
    /// Memory limit for one tool call, in MiB [default: 256, or the config's]
    #[arg(long, global = true, value_name = "MIB")]
    call_memory: Option<u64>,
    /// Allocate instances on demand instead of from a preallocated pool
    #[arg(long, global = true)]
    no_pooling: bool,
    /// Log format [default: text on a terminal, json otherwise] (schema: docs/log-schema.md)
    #[arg(long, global = true, value_enum)]
    log_format: Option<LogFormat>,
    /// Append the log to this file instead of stderr
    #[arg(long, global = true, env = "MCPPLUS_LOG_FILE", value_name = "PATH")]
    log_file: Option<PathBuf>,
    /// Log filter, e.g. `info`, `debug`, `mcpplus=debug,guest=warn`
    #[arg(long, global = true, env = "MCPPLUS_LOG", default_value = "info")]
    log: String,
}

impl CommonArgs {
    fn cache_location(&self) -> Option<PathBuf> {
        if self.no_cache {
            return None;
        }
        self.cache_dir.clone().or_else(CompileCache::default_dir)
    }

    /// The operator config with the command-line limit flags applied over its
    /// `[limits]` (flags win over the file's defaults, not over per-tool sections).
    fn operator_config(&self) -> anyhow::Result<OperatorConfig> {
        let mut config = match &self.config {
            Some(path) => OperatorConfig::load(path)?,
            None => OperatorConfig::default(),
        };
        if let Some(seconds) = self.call_timeout {
            anyhow::ensure!(
                seconds.is_finite() && seconds > 0.0,
                "--call-timeout must be a positive number of seconds, got {seconds}"
            );
            config.limits.timeout_ms = Some((seconds * 1000.0).ceil() as u64);
        }
        if let Some(mib) = self.call_memory {
            anyhow::ensure!(mib > 0, "--call-memory must be at least 1 MiB");
            config.limits.memory_mib = Some(mib);
        }
        Ok(config)
    }

    fn runtime(&self) -> anyhow::Result<mcpplus_runtime::Runtime> {
        mcpplus_runtime::Runtime::new(RuntimeOptions {
            cache: self.cache_location(),
            base_limits: CallLimits::default(),
            config: self.operator_config()?,
            no_pooling: self.no_pooling,
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Serve the tools in a folder over MCP (stdio by default, or Streamable HTTP)
    Serve(Box<serve::ServeArgs>),
    /// Show the tools a component exports, their JSON Schemas, and its imports
    Inspect(inspect::InspectArgs),
    /// Change the tools of a running server: list, load, unload, reload
    Tools(tools::ToolsArgs),
    /// Show the outbound circuit breakers of a running server, or reset one
    Breakers(breakers::BreakersArgs),
    /// A running server's mesh peers (`peers list`), or this node's identity (`peers id`)
    Peers(peers::PeersArgs),
    /// Report, per component, what it asks for, what its policy grants, what is refused, and the risks
    Audit(audit::AuditArgs),
    /// Call one tool of a component without an MCP client
    Call(call::CallArgs),
    /// Store the doc comments of a WIT package in a component, for tool descriptions
    EmbedDocs(embed_docs::EmbedDocsArgs),
    /// Create a tool project in Rust, Python or JavaScript
    New(new::NewArgs),
    /// Build a tool project into DIR/dist/NAME.wasm and list its tools
    Build(build_project::BuildArgs),
    /// Build a tool project into a tools folder, and again on every change
    Dev(dev::DevArgs),
}

/// Entry point of the binary.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    mcpplus_telemetry::metrics::metrics().record_build(env!("MCPPLUS_BUILD_ID"));
    let _log = match logs::init(
        &cli.common.log,
        cli.common.log_format,
        cli.common.log_file.as_deref(),
    ) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: cannot open the log file: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => serve::run(*args, &cli.common).await,
            Command::Inspect(args) => inspect::run(args),
            Command::Audit(args) => audit::run(args, &cli.common),
            Command::Tools(args) => tools::run(args).await,
            Command::Breakers(args) => breakers::run(args).await,
            Command::Peers(args) => peers::run(args).await,
            Command::Call(args) => call::run(args, &cli.common).await,
            Command::EmbedDocs(args) => embed_docs::run(args),
            Command::New(args) => new::run(args),
            Command::Build(args) => build_project::run(args),
            Command::Dev(args) => dev::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
