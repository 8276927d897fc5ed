//! Joining the mesh while serving: this node's identity, the libp2p node
//! answering other nodes' workers from this node's queue, and one pulling
//! loop per allowed peer that runs its tasks here through the served catalog
//! (docs/mesh.md).

use std::collections::BTreeMap;
use std::str::FromStr as _;
use std::sync::Arc;

use libp2p::{Multiaddr, PeerId};
use mcpplus_mesh::driver::{DriverOptions, drive};
use mcpplus_mesh::node::{Mesh, MeshHandle, MeshOptions};
use mcpplus_mesh::protocol::{Caps, MAX_ANNOUNCED_TOOLS, ToolCap};
use mcpplus_policy::config::mesh::MeshConfig;
use mcpplus_policy::hints::ToolHints;
use mcpplus_queue::remote::RemoteOwner;
use mcpplus_queue::service::QueueService;
use mcpplus_queue::worker::TaskRunner;
use tokio_util::sync::CancellationToken;

use crate::catalog::LiveCatalog;

/// A joined mesh; leaving it stops the pulling loops.
pub struct MeshNode {
    pub mesh: Mesh,
    /// The allowed peers and their roles here.
    pub roles: BTreeMap<PeerId, Vec<mcpplus_policy::config::mesh::PeerRole>>,
    stop: CancellationToken,
}

impl MeshNode {
    /// The peers that may claim (and so run) this node's tasks.
    pub fn claimers(&self) -> Vec<PeerId> {
        self.roles
            .iter()
            .filter(|(_, roles)| roles.contains(&mcpplus_policy::config::mesh::PeerRole::Claim))
            .map(|(peer, _)| *peer)
            .collect()
    }
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
    let data_dir = queue.data_dir();
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
    let caps = caps_of(&live, config.slots, queue).await;
    let psk = match &config.psk_file {
        Some(path) => {
            let key = mcpplus_mesh::psk::load(path)?;
            tracing::info!(event = "mesh.pnet", fingerprint = %key.fingerprint(), "private network: only nodes with the same key can connect");
            Some(key)
        }
        None => None,
    };
    let mesh = Mesh::start(MeshOptions {
        keypair,
        listen,
        bootstrap,
        mdns: config.mdns,
        peers: peers.clone(),
        owner,
        caps,
        psk,
    })
    .await?;
    for addr in &mesh.listening {
        tracing::info!(event = "mesh.ready", address = %addr, peers = peers.len(), "joined the mesh");
        // Also on stderr as a plain line, so scripts and other nodes can find it.
        eprintln!("mcpplus: mesh listening on {addr}");
    }
    let stop = CancellationToken::new();
    tokio::spawn(announce_changes(
        live.clone(),
        config.slots,
        queue.clone(),
        mesh.handle.clone(),
        stop.clone(),
    ));
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
    Ok(MeshNode {
        mesh,
        roles: peers,
        stop,
    })
}

/// What this node offers its peers now: every served tool, the slots it
/// lends, and its own backlog per tool.
pub async fn caps_of(live: &LiveCatalog, slots: u32, queue: &Arc<QueueService>) -> Caps {
    let catalog = live.snapshot();
    let mut tools: Vec<ToolCap> = catalog
        .tools()
        .map(|entry| ToolCap {
            name: entry.signature.name.clone(),
            component: entry.component.name.clone(),
            sha256: entry.component.digest.clone(),
            description: Some(entry.signature.description.clone()).filter(|d| !d.is_empty()),
            input_schema: entry.signature.input_schema.clone(),
            output_schema: entry.signature.output_schema.clone(),
            annotations: serde_json::to_value(ToolHints::from_policy(&entry.component.policy)).ok(),
        })
        .collect();
    if tools.len() > MAX_ANNOUNCED_TOOLS {
        tracing::warn!(
            event = "mesh.caps_truncated",
            tools = tools.len(),
            announced = MAX_ANNOUNCED_TOOLS,
            "this node serves more tools than one announcement carries; peers learn of the first ones only"
        );
        tools.truncate(MAX_ANNOUNCED_TOOLS);
    }
    let store = queue.store().clone();
    let backlog = tokio::task::spawn_blocking(move || store.backlog(64))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default()
        .into_iter()
        .collect();
    Caps {
        version: 0,
        tools,
        slots,
        backlog,
    }
}

/// Tell peers after every hot load (add, replace, remove of a component).
async fn announce_changes(
    live: Arc<LiveCatalog>,
    slots: u32,
    queue: Arc<QueueService>,
    mesh: MeshHandle,
    stop: CancellationToken,
) {
    let mut changes = live.subscribe();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            change = changes.recv() => match change {
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    let caps = caps_of(&live, slots, &queue).await;
                    tracing::info!(event = "mesh.caps_announced", tools = caps.tools.len(), "told peers what this node hosts now");
                    mesh.announce(caps).await;
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}
