//! The `mcpplus` command line: `serve`, `inspect`, `call`, `embed-docs`.

mod call;
mod embed_docs;
mod inspect;
mod logging;
mod serve;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::runtime::CallLimits;
use crate::runtime::cache::CompileCache;

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
    /// Time limit for one tool call, in seconds
    #[arg(long, global = true, default_value_t = 30.0, value_name = "SECONDS")]
    call_timeout: f64,
    /// Memory limit for one tool call, in MiB
    #[arg(long, global = true, default_value_t = 256, value_name = "MIB")]
    call_memory: usize,
    /// Log format on stderr [default: text on a terminal, json otherwise]
    #[arg(long, global = true, value_enum)]
    log_format: Option<logging::LogFormat>,
    /// Log filter, e.g. `info`, `debug`, `mcpplus=debug,guest=warn`
    #[arg(long, global = true, env = "MCPPLUS_LOG", default_value = "info")]
    log: String,
}

impl CommonArgs {
    fn cache(&self) -> Option<CompileCache> {
        if self.no_cache {
            return None;
        }
        self.cache_dir
            .clone()
            .or_else(CompileCache::default_dir)
            .map(CompileCache::new)
    }

    fn limits(&self) -> anyhow::Result<CallLimits> {
        anyhow::ensure!(
            self.call_timeout.is_finite() && self.call_timeout > 0.0,
            "--call-timeout must be a positive number of seconds, got {}",
            self.call_timeout
        );
        anyhow::ensure!(self.call_memory > 0, "--call-memory must be at least 1 MiB");
        Ok(CallLimits {
            timeout: std::time::Duration::from_secs_f64(self.call_timeout),
            memory_bytes: self.call_memory << 20,
            ..CallLimits::default()
        })
    }

    fn runtime(&self) -> anyhow::Result<crate::runtime::Runtime> {
        crate::runtime::Runtime::new(self.cache(), self.limits()?)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Serve the tools in a folder over MCP (stdio by default, or Streamable HTTP)
    Serve(serve::ServeArgs),
    /// Show the tools a component exports, their JSON Schemas, and its imports
    Inspect(inspect::InspectArgs),
    /// Call one tool of a component without an MCP client
    Call(call::CallArgs),
    /// Store the doc comments of a WIT package in a component, for tool descriptions
    EmbedDocs(embed_docs::EmbedDocsArgs),
}

/// Entry point of the binary.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    logging::init(&cli.common.log, cli.common.log_format);
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
            Command::Serve(args) => serve::run(args, &cli.common).await,
            Command::Inspect(args) => inspect::run(args, &cli.common),
            Command::Call(args) => call::run(args, &cli.common).await,
            Command::EmbedDocs(args) => embed_docs::run(args),
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
