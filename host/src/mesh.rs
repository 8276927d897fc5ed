//! Joining the mesh while serving: this node's identity, the libp2p node
//! answering other nodes' workers from this node's queue, and one pulling
//! loop per allowed peer that runs its tasks here through the served catalog
//! (docs/mesh.md).

use std::collections::BTreeMap;
use std::str::FromStr as _;
use std::sync::Arc;

use libp2p::{Multiaddr, PeerId};
use mcpplus_mesh::driver::{DriverOptions, drive};
use mcpplus_mesh::node::{Mesh, MeshOptions};
use mcpplus_policy::config::mesh::MeshConfig;
use mcpplus_queue::remote::RemoteOwner;
use mcpplus_queue::service::QueueService;
use mcpplus_queue::worker::TaskRunner;
use tokio_util::sync::CancellationToken;

use crate::catalog::LiveCatalog;

/// A joined mesh; leaving it stops the pulling loops.
pub struct MeshNode {
    pub mesh: Mesh,
    stop: CancellationToken,
}

impl Drop for MeshNode {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// `[mesh]` with the command-line addresses added.
pub async fn join(
    config: &MeshConfig,
    queue: &Arc<QueueService>,
    runner: Arc<dyn TaskRunner>,
    live: Arc<LiveCatalog>,
) -> anyhow::Result<MeshNode> {
    let data_dir = queue
        .path()
        .parent()
        .ok_or_else(|| anyhow::anyhow!("the queue file has no folder"))?;
    let keypair = mcpplus_mesh::identity::load_or_create(data_dir)?;
    let parse = |what: &str, text: &str| {
        Multiaddr::from_str(text).map_err(|e| {
            anyhow::anyhow!(
                "{what} `{text}` is not a multiaddr ({e}); e.g. /ip4/127.0.0.1/tcp/4001"
            )
        })
    };
    let listen = config
        .listen
        .iter()
        .map(|a| parse("[mesh] listen", a))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let bootstrap = config
        .bootstrap
        .iter()
        .map(|a| parse("[mesh] bootstrap", a))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut peers = BTreeMap::new();
    for (id, entry) in &config.peers {
        let peer = PeerId::from_str(id).map_err(|e| {
            anyhow::anyhow!(
                "[mesh.peers.\"{id}\"]: not a PeerId ({e}); print a node's id with `mcpplus peers id --data-dir DIR`"
            )
        })?;
        peers.insert(peer, entry.roles.clone());
    }
    let queue_config = queue.config();
    let owner = Arc::new(RemoteOwner::new(
        queue.store().clone(),
        queue_config.lease(),
    ));
    let mesh = Mesh::start(MeshOptions {
        keypair,
        listen,
        bootstrap,
        mdns: config.mdns,
        peers: peers.clone(),
        owner,
    })
    .await?;
    for addr in &mesh.listening {
        tracing::info!(event = "mesh.ready", address = %addr, peers = peers.len(), "joined the mesh");
        // Also on stderr as a plain line, so scripts and other nodes can find it.
        eprintln!("mcpplus: mesh listening on {addr}");
    }
    let stop = CancellationToken::new();
    if config.slots > 0 {
        let tools: mcpplus_mesh::driver::HostedTools =
            Arc::new(move || live.snapshot().tool_names());
        let options = DriverOptions {
            slots: config.slots as usize,
            lease: queue_config.lease(),
            poll: queue_config.poll(),
            runner,
            store: queue.store().clone(),
            tools,
        };
        for peer in peers.keys() {
            tokio::spawn(drive(
                *peer,
                mesh.handle.clone(),
                options.clone(),
                stop.clone(),
            ));
        }
    }
    Ok(MeshNode { mesh, stop })
}
