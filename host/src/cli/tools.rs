//! `mcpplus tools list|load|unload|reload`: change the tool set of a running
//! server through its admin socket.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;

use crate::admin::{AdminRequest, client, default_socket};

#[derive(clap::Args)]
pub struct ToolsArgs {
    #[command(subcommand)]
    command: ToolsCommand,
    /// The server's admin socket [default: $XDG_RUNTIME_DIR/mcpplus/admin.sock or ~/.cache/mcpplus/admin.sock]
    #[arg(long, global = true, env = "MCPPLUS_ADMIN_SOCKET", value_name = "PATH")]
    admin_socket: Option<PathBuf>,
    /// Print the server's JSON reply instead of text
    #[arg(long, global = true)]
    json: bool,
}

#[derive(clap::Subcommand)]
enum ToolsCommand {
    /// List the loaded components, their tools and running calls
    List,
    /// Load a component file (.wasm), replacing a loaded one of the same name
    Load { path: PathBuf },
    /// Unload a component: its running calls get the drain time, then are cancelled
    Unload { name: String },
    /// Load a component again from its file (after the file or its policy changed)
    Reload { name: String },
}

pub async fn run(args: ToolsArgs) -> anyhow::Result<ExitCode> {
    let socket = args
        .admin_socket
        .or_else(default_socket)
        .ok_or_else(|| anyhow::anyhow!("no admin socket: pass --admin-socket PATH"))?;
    let request = match args.command {
        ToolsCommand::List => AdminRequest::List,
        ToolsCommand::Load { path } => AdminRequest::Load {
            // The server resolves paths from its own folder; send an absolute one.
            path: std::path::absolute(&path).unwrap_or(path),
        },
        ToolsCommand::Unload { name } => AdminRequest::Unload { name },
        ToolsCommand::Reload { name } => AdminRequest::Reload { name },
    };
    let reply = client::request(&socket, &request).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
    } else if let Some(error) = &reply.error {
        eprintln!("error: {error}");
    } else if let Some(components) = &reply.components {
        print_components(components);
    } else if let Some(change) = &reply.change {
        print_change(change);
    }
    Ok(if reply.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_components(components: &[Value]) {
    for c in components {
        let short = c["sha256"].as_str().unwrap_or("").get(..12).unwrap_or("");
        println!(
            "{}  sha256 {short}…  {} call(s) running  ({})",
            c["name"].as_str().unwrap_or("?"),
            c["callsInFlight"],
            c["path"].as_str().unwrap_or("?")
        );
        let tools: Vec<&str> = c["tools"]
            .as_array()
            .map(|t| t.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        println!("  tools: {}", tools.join(", "));
    }
}

fn print_change(change: &Value) {
    let list = |key: &str| {
        let items: Vec<&str> = change[key]
            .as_array()
            .map(|t| t.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if items.is_empty() {
            "none".to_string()
        } else {
            items.join(", ")
        }
    };
    println!(
        "{} {} in {} ms",
        change["action"].as_str().unwrap_or("?"),
        change["component"].as_str().unwrap_or("?"),
        change["elapsedMs"]
    );
    println!("  added:   {}", list("added"));
    println!("  changed: {}", list("changed"));
    println!("  removed: {}", list("removed"));
    if let Some(n) = change["cancelledCalls"].as_u64().filter(|n| *n > 0) {
        println!("  cancelled {n} call(s) still running after the drain time");
    }
}
