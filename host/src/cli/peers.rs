//! `mcpplus peers id [--data-dir DIR]`: this node's PeerId, creating its key
//! if needed, so an operator can write `[mesh.peers."<id>"]` allow-lists on
//! the other nodes before the first start. `mcpplus peers [list]`: a running
//! server's allowed peers and their state, through its admin socket.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct PeersArgs {
    #[command(subcommand)]
    command: Option<PeersCommand>,
    /// The server's admin socket [default: $XDG_RUNTIME_DIR/mcpplus/admin.sock or ~/.cache/mcpplus/admin.sock]
    #[arg(long, global = true, env = "MCPPLUS_ADMIN_SOCKET", value_name = "PATH")]
    admin_socket: Option<PathBuf>,
    /// Print the server's JSON reply instead of a table
    #[arg(long, global = true)]
    json: bool,
}

#[derive(clap::Subcommand)]
enum PeersCommand {
    /// A running server's allowed peers: connected or not, latency, roles (the default)
    List,
    /// Print this node's PeerId (creating its key in the data directory if needed)
    Id {
        /// The node's data directory [default: $XDG_DATA_HOME/mcpplus or ~/.local/share/mcpplus]
        #[arg(long, env = "MCPPLUS_DATA_DIR", value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
    /// Enqueue a task in a peer's queue; the peer must list this node with roles = ["submit"]
    Submit {
        /// The peer's PeerId
        peer: String,
        /// The tool to run there
        tool: String,
        /// The tool's arguments, a JSON object
        #[arg(long, default_value = "{}", value_name = "JSON")]
        arguments: String,
        /// Higher runs first
        #[arg(long, default_value_t = 1.0)]
        priority: f64,
        /// Attempts in all
        #[arg(long, default_value_t = 1)]
        max_attempts: u32,
        /// Submitting the same key again returns the first task
        #[arg(long, value_name = "KEY")]
        idempotency_key: Option<String>,
    },
    /// Create a private-network key for `[mesh] psk_file` (mode 0600; give every node the same file)
    Psk {
        /// Where to write it; an existing file is never overwritten
        file: PathBuf,
    },
}

pub async fn run(args: PeersArgs) -> anyhow::Result<ExitCode> {
    match args.command.unwrap_or(PeersCommand::List) {
        PeersCommand::List => list(args.admin_socket, args.json).await,
        PeersCommand::Id { data_dir } => {
            let dir = data_dir
                .or_else(super::serve::default_data_dir)
                .ok_or_else(|| {
                    anyhow::anyhow!("no data directory (HOME is not set): pass --data-dir DIR")
                })?;
            let key = mcpplus_mesh::identity::load_or_create(&dir)?;
            println!("{}", key.public().to_peer_id());
            Ok(ExitCode::SUCCESS)
        }
        PeersCommand::Submit {
            peer,
            tool,
            arguments,
            priority,
            max_attempts,
            idempotency_key,
        } => {
            let arguments: serde_json::Value = serde_json::from_str(&arguments)
                .map_err(|e| anyhow::anyhow!("--arguments is not JSON: {e}"))?;
            anyhow::ensure!(arguments.is_object(), "--arguments must be a JSON object");
            let request = crate::admin::AdminRequest::PeerSubmit {
                peer,
                submission: mcpplus_mesh::protocol::Submission {
                    tool,
                    arguments,
                    priority,
                    tags: Vec::new(),
                    timeout_ms: None,
                    max_attempts,
                    idempotency_key,
                },
            };
            let socket = args
                .admin_socket
                .or_else(crate::admin::default_socket)
                .ok_or_else(|| anyhow::anyhow!("no admin socket: pass --admin-socket PATH"))?;
            let reply = crate::admin::client::request(&socket, &request).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&reply)?);
            }
            match (&reply.error, &reply.submitted) {
                (Some(error), _) => {
                    eprintln!("error: {error}");
                    Ok(ExitCode::FAILURE)
                }
                (None, Some(task)) => {
                    if !args.json {
                        println!(
                            "{} accepted task {} ({})",
                            task["peer"].as_str().unwrap_or(""),
                            task["id"].as_str().unwrap_or(""),
                            task["state"].as_str().unwrap_or("")
                        );
                    }
                    Ok(ExitCode::SUCCESS)
                }
                (None, None) => anyhow::bail!("the server answered neither a task nor an error"),
            }
        }
        PeersCommand::Psk { file } => {
            let key = mcpplus_mesh::psk::create(&file)?;
            println!(
                "wrote {} (fingerprint {}); copy it to every node and set [mesh] psk_file",
                file.display(),
                key.fingerprint()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn list(socket: Option<PathBuf>, json: bool) -> anyhow::Result<ExitCode> {
    let socket = socket
        .or_else(crate::admin::default_socket)
        .ok_or_else(|| anyhow::anyhow!("no admin socket: pass --admin-socket PATH"))?;
    let reply = crate::admin::client::request(&socket, &crate::admin::AdminRequest::Peers).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&reply)?);
    } else if let Some(error) = &reply.error {
        eprintln!("error: {error}");
    } else {
        println!(
            "{:<54} {:<10} {:>10}  {:<16} AGENT",
            "PEER", "STATE", "LATENCY", "ROLES"
        );
        for p in reply.peers.iter().flatten() {
            let latency = p["latencyMs"]
                .as_f64()
                .map_or("-".to_string(), |ms| format!("{ms:.1} ms"));
            let roles: Vec<&str> = p["roles"]
                .as_array()
                .map(|r| r.iter().filter_map(|v| v.as_str()).collect())
                .unwrap_or_default();
            println!(
                "{:<54} {:<10} {:>10}  {:<16} {}",
                p["peerId"].as_str().unwrap_or_default(),
                if p["connected"] == true {
                    "connected"
                } else {
                    "known"
                },
                latency,
                if roles.is_empty() {
                    "-".to_string()
                } else {
                    roles.join(",")
                },
                p["agentVersion"].as_str().unwrap_or("-"),
            );
        }
    }
    Ok(if reply.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
