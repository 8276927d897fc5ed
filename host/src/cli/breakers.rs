//! `mcpplus breakers [list|reset DESTINATION]`: the outbound circuit breakers of
//! a running server, through its admin socket.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;

use crate::admin::{AdminRequest, client, default_socket};

#[derive(clap::Args)]
pub struct BreakersArgs {
    #[command(subcommand)]
    command: Option<BreakersCommand>,
    /// The server's admin socket [default: $XDG_RUNTIME_DIR/mcpplus/admin.sock or ~/.cache/mcpplus/admin.sock]
    #[arg(long, global = true, env = "MCPPLUS_ADMIN_SOCKET", value_name = "PATH")]
    admin_socket: Option<PathBuf>,
    /// Print the server's JSON reply instead of a table
    #[arg(long, global = true)]
    json: bool,
}

#[derive(clap::Subcommand)]
enum BreakersCommand {
    /// List every destination's breaker: state, failures, time until the next probe (the default)
    List,
    /// Close a destination's breaker now, e.g. `reset https://api.example.com`
    Reset { destination: String },
}

pub async fn run(args: BreakersArgs) -> anyhow::Result<ExitCode> {
    let socket = args
        .admin_socket
        .or_else(default_socket)
        .ok_or_else(|| anyhow::anyhow!("no admin socket: pass --admin-socket PATH"))?;
    let request = match args.command.unwrap_or(BreakersCommand::List) {
        BreakersCommand::List => AdminRequest::Breakers,
        BreakersCommand::Reset { destination } => AdminRequest::BreakerReset { destination },
    };
    let reply = client::request(&socket, &request).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
    } else if let Some(error) = &reply.error {
        eprintln!("error: {error}");
    } else if let Some(breakers) = &reply.breakers {
        print_table(breakers);
    }
    Ok(if reply.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_table(breakers: &[Value]) {
    if breakers.is_empty() {
        println!("no breakers yet: no tool has made an outbound request");
        return;
    }
    println!(
        "{:<40} {:<10} {:>8} {:>9} {:>8} {:>8}  next probe",
        "DESTINATION", "STATE", "FAILS", "REJECTED", "OK", "FAILED"
    );
    for b in breakers {
        let next = match b["retryAfterMs"].as_u64() {
            Some(ms) => format!("in {:.1}s", ms as f64 / 1000.0),
            None => "-".into(),
        };
        println!(
            "{:<40} {:<10} {:>8} {:>9} {:>8} {:>8}  {next}",
            b["destination"].as_str().unwrap_or("?"),
            b["state"].as_str().unwrap_or("?"),
            b["consecutiveFailures"],
            b["rejected"],
            b["successes"],
            b["failures"],
        );
    }
}
