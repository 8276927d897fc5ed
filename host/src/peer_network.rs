//! `mcpplus:host/peers` answered from the libp2p node: what tools (the
//! bundled peer tools) see of the mesh. Each field is a snapshot of what the
//! swarm task measured (`mcpplus_mesh::stats`).

use std::str::FromStr as _;
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use mcpplus_mesh::node::MeshHandle;
use mcpplus_mesh::stats::PeerStatus;
use mcpplus_runtime::capabilities::bindings::peers::{Peer, PeersError, PingSample};
use mcpplus_runtime::capabilities::peers::{Answer, PeerNetwork};

/// The longest a `connect` may wait.
const MAX_CONNECT_WAIT: Duration = Duration::from_secs(120);

pub struct MeshPeers {
    pub mesh: MeshHandle,
    pub bootstrap: Vec<String>,
    /// Peers that may claim this node's tasks.
    pub claimers: Vec<PeerId>,
}

fn parse_peer(text: &str) -> Result<PeerId, PeersError> {
    PeerId::from_str(text).map_err(|e| {
        PeersError::Invalid(format!(
            "`{text}` is not a PeerId ({e}); peer ids look like 12D3KooW…"
        ))
    })
}

fn to_wit(status: PeerStatus) -> Peer {
    let caps = status.caps.as_ref();
    Peer {
        peer_id: status.peer_id.to_string(),
        allowed: status.allowed,
        connected: status.connected,
        roles: status
            .roles
            .iter()
            .map(|r| r.as_str().to_string())
            .collect(),
        addresses: status.addresses.iter().map(|a| a.to_string()).collect(),
        tools: caps
            .map(|c| c.tools.iter().map(|t| t.name.clone()).collect())
            .unwrap_or_default(),
        slots: caps.map(|c| c.slots),
        latency_ms: status.latency.map(|l| l.as_secs_f64() * 1e3),
        agent_version: status.agent_version,
        connected_since_ms: status.connected_since_ms,
        last_seen_ms: status.last_seen_ms,
        connected_total_ms: status.connected_total_ms,
        connects: status.connects,
        requests_sent: status.requests_sent,
        requests_failed: status.requests_failed,
        requests_received: status.requests_received,
        bytes_sent: status.bytes_sent,
        bytes_received: status.bytes_received,
    }
}

impl PeerNetwork for MeshPeers {
    fn local_id(&self) -> String {
        self.mesh.local_peer_id().to_string()
    }

    fn list(&self) -> Answer<'_, Vec<Peer>> {
        Box::pin(async move { Ok(self.mesh.peers().await.into_iter().map(to_wit).collect()) })
    }

    fn pings(&self, peer_id: String) -> Answer<'_, Vec<PingSample>> {
        Box::pin(async move {
            let peer = parse_peer(&peer_id)?;
            let status = self
                .mesh
                .peers()
                .await
                .into_iter()
                .find(|p| p.peer_id == peer)
                .ok_or_else(|| {
                    PeersError::NotFound(format!(
                        "peer {peer_id} is not known here: it is neither in [mesh.peers] nor found by mDNS"
                    ))
                })?;
            Ok(status
                .pings
                .iter()
                .map(|p| PingSample {
                    at_ms: p.at_ms,
                    latency_ms: p.rtt.as_secs_f64() * 1e3,
                })
                .collect())
        })
    }

    fn bootstrap_addresses(&self) -> Vec<String> {
        self.bootstrap.clone()
    }

    fn connect(&self, address: String, timeout_ms: u64) -> Answer<'_, String> {
        Box::pin(async move {
            let addr = Multiaddr::from_str(&address).map_err(|e| {
                PeersError::Invalid(format!(
                    "`{address}` is not a multiaddr ({e}); e.g. /ip4/10.0.0.2/tcp/4001/p2p/12D3KooW…"
                ))
            })?;
            let Some(Protocol::P2p(peer)) = addr.iter().last() else {
                return Err(PeersError::Invalid(format!(
                    "`{address}` must end in /p2p/<peer-id>, so the connection can be authenticated"
                )));
            };
            let wait = Duration::from_millis(timeout_ms).min(MAX_CONNECT_WAIT);
            match tokio::time::timeout(wait, self.mesh.connect(peer, vec![addr])).await {
                Ok(Ok(())) => Ok(peer.to_string()),
                Ok(Err(e)) => Err(PeersError::Failed(e)),
                Err(_) => Err(PeersError::Failed(format!(
                    "no connection to {peer} within {} ms",
                    wait.as_millis()
                ))),
            }
        })
    }

    fn hosts(&self, tool: &str) -> Vec<String> {
        let directory = self.mesh.directory();
        self.claimers
            .iter()
            .filter(|p| {
                directory
                    .get(p)
                    .is_some_and(|caps| caps.tools.iter().any(|t| t.name == tool))
            })
            .map(|p| p.to_string())
            .collect()
    }

    fn disconnect(&self, peer_id: String) -> Answer<'_, bool> {
        Box::pin(async move {
            let peer = parse_peer(&peer_id)?;
            Ok(self.mesh.disconnect(peer).await)
        })
    }
}
