//! `mcpplus:host/peers`: this node's mesh peers, for components whose policy
//! grants `[peers] read` (list, pings, ids) or `[peers] admin` (also connect
//! and disconnect). The mesh itself lives in `mcpplus-mesh`, above which this
//! crate does not reach: the server attaches a [`PeerNetwork`] that answers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::bindings::peers::{Host, Peer, PeersError, PingSample};
use crate::host_state::HostState;
use mcpplus_policy::imports::Capability;

pub type Answer<'a, T> = Pin<Box<dyn Future<Output = Result<T, PeersError>> + Send + 'a>>;

/// The mesh as tools see it; `mcpplus serve` attaches one when it joins a mesh.
pub trait PeerNetwork: Send + Sync + 'static {
    fn local_id(&self) -> String;
    fn list(&self) -> Answer<'_, Vec<Peer>>;
    fn pings(&self, peer_id: String) -> Answer<'_, Vec<PingSample>>;
    fn bootstrap_addresses(&self) -> Vec<String>;
    /// Connect to `address` (ending in `/p2p/<id>`); answers the peer id.
    fn connect(&self, address: String, timeout_ms: u64) -> Answer<'_, String>;
    fn disconnect(&self, peer_id: String) -> Answer<'_, bool>;
    /// Connected peers that announced `tool` and may claim this node's tasks.
    fn hosts(&self, tool: &str) -> Vec<String>;
}

#[derive(Clone, Copy, PartialEq)]
enum Needs {
    Read,
    Admin,
}

impl HostState {
    /// The mesh, if this call may use `function`.
    fn peers_for(&self, function: &str, needs: Needs) -> Result<Arc<dyn PeerNetwork>, PeersError> {
        let grants = self.peer_grants();
        let allowed = match needs {
            Needs::Read => grants.read || grants.admin,
            Needs::Admin => grants.admin,
        };
        if !allowed {
            let grant = match needs {
                Needs::Read => "[peers] read = true (or admin = true)",
                Needs::Admin => "[peers] admin = true",
            };
            return Err(PeersError::Denied(self.call().refuse_function(
                Capability::Peers,
                "mcpplus:host/peers",
                function,
                grant,
            )));
        }
        self.peer_network().cloned().ok_or_else(|| {
            PeersError::Unavailable(
                "this node is not in a mesh: start `mcpplus serve` with [mesh] in its config, or --mesh-listen / --bootstrap (docs/mesh.md)".into(),
            )
        })
    }
}

impl Host for HostState {
    async fn local_id(&mut self) -> Result<String, PeersError> {
        Ok(self.peers_for("local-id", Needs::Read)?.local_id())
    }

    async fn list_peers(&mut self) -> Result<Vec<Peer>, PeersError> {
        self.peers_for("list-peers", Needs::Read)?.list().await
    }

    async fn pings(&mut self, peer_id: String) -> Result<Vec<PingSample>, PeersError> {
        self.peers_for("pings", Needs::Read)?.pings(peer_id).await
    }

    async fn bootstrap_addresses(&mut self) -> Result<Vec<String>, PeersError> {
        Ok(self
            .peers_for("bootstrap-addresses", Needs::Read)?
            .bootstrap_addresses())
    }

    async fn connect(&mut self, address: String, timeout_ms: u64) -> Result<String, PeersError> {
        self.peers_for("connect", Needs::Admin)?
            .connect(address, timeout_ms)
            .await
    }

    async fn disconnect(&mut self, peer_id: String) -> Result<bool, PeersError> {
        self.peers_for("disconnect", Needs::Admin)?
            .disconnect(peer_id)
            .await
    }
}
