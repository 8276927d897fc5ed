//! `mcpplus peers id [--data-dir DIR]`: this node's PeerId, creating its key
//! if needed, so an operator can write `[mesh.peers."<id>"]` allow-lists on
//! the other nodes before the first start.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct PeersArgs {
    #[command(subcommand)]
    command: PeersCommand,
}

#[derive(clap::Subcommand)]
enum PeersCommand {
    /// Print this node's PeerId (creating its key in the data directory if needed)
    Id {
        /// The node's data directory [default: $XDG_DATA_HOME/mcpplus or ~/.local/share/mcpplus]
        #[arg(long, env = "MCPPLUS_DATA_DIR", value_name = "DIR")]
        data_dir: Option<PathBuf>,
    },
}

pub fn run(args: PeersArgs) -> anyhow::Result<ExitCode> {
    match args.command {
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
    }
}
