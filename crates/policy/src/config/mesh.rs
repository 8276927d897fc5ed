//! `[mesh]` in the operator config: this node's place in a mesh of mcpplus
//! nodes sharing their task queues (docs/mesh.md). Without it (and without
//! `--mesh-listen` / `--bootstrap`) a node runs alone.
//!
//! ```toml
//! [mesh]
//! listen = ["/ip4/0.0.0.0/tcp/4001"]     # where other nodes connect
//! bootstrap = ["/ip4/10.0.0.2/tcp/4001/p2p/12D3KooW..."]  # dialled at start
//! mdns = true                            # find nodes on the local network
//! slots = 4                              # tasks this node runs for each other node at once
//! federate = true                        # list and call tools that only peers host
//! psk_file = "/etc/mcpplus/swarm.key"    # private network: `mcpplus peers psk FILE` makes one
//!
//! [mesh.peers."12D3KooW..."]             # only listed peers may connect
//! roles = ["claim"]                      # claim: run this node's tasks
//! ```

use std::collections::BTreeMap;

use serde::Deserialize;

/// What a peer may do here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerRole {
    /// Claim and run this node's tasks.
    Claim,
    /// Submit tasks to this node's queue.
    Submit,
    /// Change this node's connections through the peer tools.
    Admin,
}

impl PeerRole {
    pub fn as_str(self) -> &'static str {
        match self {
            PeerRole::Claim => "claim",
            PeerRole::Submit => "submit",
            PeerRole::Admin => "admin",
        }
    }
}

/// One allowed peer.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerEntry {
    /// What it may do; empty: it may connect (and be pulled from), nothing more.
    #[serde(default)]
    pub roles: Vec<PeerRole>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MeshConfig {
    /// Multiaddrs to listen on (`/ip4/127.0.0.1/tcp/0` picks a free port).
    pub listen: Vec<String>,
    /// Multiaddrs of nodes to dial at start, each ending in `/p2p/<peer-id>`.
    pub bootstrap: Vec<String>,
    /// Discover nodes on the local network with mDNS (not on loopback).
    pub mdns: bool,
    /// Tasks this node runs at once for each other node it pulls from.
    pub slots: u32,
    /// List tools that only peers host in `tools/list`, and run calls of them
    /// as tasks of this node that those peers pull.
    pub federate: bool,
    /// How long a federated call waits for a peer to run it before it fails
    /// (and its task is cancelled).
    pub call_timeout_ms: u64,
    /// A private network's pre-shared key (go-libp2p `swarm.key` format):
    /// nodes without the same key cannot even complete a handshake.
    pub psk_file: Option<std::path::PathBuf>,
    /// Allowed peers by PeerId; anyone else is refused after the handshake.
    pub peers: BTreeMap<String, PeerEntry>,
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            listen: Vec::new(),
            bootstrap: Vec::new(),
            mdns: true,
            slots: 4,
            federate: false,
            call_timeout_ms: 300_000,
            psk_file: None,
            peers: BTreeMap::new(),
        }
    }
}

impl MeshConfig {
    /// Refuse values that could never work, naming the key.
    pub fn check(&self) -> Result<(), String> {
        if self.slots > super::queue::MAX_SLOTS {
            return Err(format!(
                "[mesh] slots must be at most {}, got {}",
                super::queue::MAX_SLOTS,
                self.slots
            ));
        }
        if self.call_timeout_ms < 100 {
            return Err(format!(
                "[mesh] call_timeout_ms must be at least 100, got {}",
                self.call_timeout_ms
            ));
        }
        Ok(())
    }

    /// Whether this node joins a mesh at all.
    pub fn enabled(&self) -> bool {
        !self.listen.is_empty() || !self.bootstrap.is_empty()
    }

    /// The roles of `peer` (a PeerId in text); `None` when it is not listed.
    pub fn roles(&self, peer: &str) -> Option<&[PeerRole]> {
        self.peers.get(peer).map(|p| p.roles.as_slice())
    }
}
