//! What this node has measured of each peer: connection times from swarm
//! events, ping round trips, request and byte counters, and what the peer
//! announced it hosts. Every field is observed here; nothing is estimated.

use std::collections::VecDeque;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use mcpplus_policy::config::mesh::PeerRole;

use crate::protocol::Caps;

/// Ping samples kept per peer (ping runs every 15 s: about half an hour).
pub const PING_HISTORY: usize = 128;
/// Addresses remembered per peer.
pub const MAX_ADDRESSES: usize = 16;

/// One ping round trip.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PingSample {
    /// Milliseconds since the Unix epoch.
    pub at_ms: i64,
    pub rtt: Duration,
}

/// Counters and facts of one peer, kept by the swarm task.
#[derive(Debug, Default)]
pub struct Seen {
    /// Open connections now.
    pub connections: u32,
    /// Connections established over this node's life.
    pub connects: u64,
    pub addresses: Vec<Multiaddr>,
    pub agent_version: Option<String>,
    pub pings: VecDeque<PingSample>,
    /// When the current connection began, if connected.
    pub connected_since_ms: Option<i64>,
    /// Time connected before the current connection.
    pub connected_before_ms: i64,
    /// The last time anything arrived from it.
    pub last_seen_ms: Option<i64>,
    pub requests_sent: u64,
    /// Requests sent that got no answer (timeout, closed connection, refused stream).
    pub requests_failed: u64,
    pub requests_received: u64,
    /// JSON payload bytes of requests and answers, each way.
    pub bytes_sent: u64,
    pub bytes_received: u64,
    /// Its latest announcement.
    pub caps: Option<Caps>,
    /// An operator disconnected it (peer tools): not dialled again until asked.
    pub held_off: bool,
}

impl Seen {
    pub fn add_address(&mut self, addr: &Multiaddr) {
        if !self.addresses.contains(addr) && self.addresses.len() < MAX_ADDRESSES {
            self.addresses.push(addr.clone());
        }
    }

    pub fn record_ping(&mut self, at_ms: i64, rtt: Duration) {
        if self.pings.len() == PING_HISTORY {
            self.pings.pop_front();
        }
        self.pings.push_back(PingSample { at_ms, rtt });
    }

    pub fn connected(&mut self, now_ms: i64) {
        self.connections += 1;
        self.connects += 1;
        self.last_seen_ms = Some(now_ms);
        self.connected_since_ms.get_or_insert(now_ms);
    }

    pub fn disconnected(&mut self, remaining: u32, now_ms: i64) {
        self.connections = remaining;
        if remaining == 0
            && let Some(since) = self.connected_since_ms.take()
        {
            self.connected_before_ms += now_ms - since;
        }
    }

    /// Total time connected, the current connection included.
    pub fn connected_ms(&self, now_ms: i64) -> i64 {
        self.connected_before_ms + self.connected_since_ms.map_or(0, |s| now_ms - s)
    }
}

/// A peer as this node sees it: a snapshot of [`Seen`] for callers.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    pub peer_id: PeerId,
    /// Listed in `[mesh.peers]`; an unlisted peer is one mDNS found.
    pub allowed: bool,
    pub connected: bool,
    pub roles: Vec<PeerRole>,
    pub addresses: Vec<Multiaddr>,
    /// The last ping round trip.
    pub latency: Option<Duration>,
    pub pings: Vec<PingSample>,
    pub agent_version: Option<String>,
    pub connected_since_ms: Option<i64>,
    pub connected_total_ms: i64,
    pub connects: u64,
    pub last_seen_ms: Option<i64>,
    pub requests_sent: u64,
    pub requests_failed: u64,
    pub requests_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub caps: Option<Caps>,
}

impl PeerStatus {
    pub fn of(
        peer_id: PeerId,
        roles: Option<&Vec<PeerRole>>,
        seen: Option<&Seen>,
        connected: bool,
        now_ms: i64,
    ) -> Self {
        let empty = Seen::default();
        let seen = seen.unwrap_or(&empty);
        PeerStatus {
            peer_id,
            allowed: roles.is_some(),
            connected,
            roles: roles.cloned().unwrap_or_default(),
            addresses: seen.addresses.clone(),
            latency: seen.pings.back().map(|p| p.rtt),
            pings: seen.pings.iter().copied().collect(),
            agent_version: seen.agent_version.clone(),
            connected_since_ms: seen.connected_since_ms,
            connected_total_ms: seen.connected_ms(now_ms),
            connects: seen.connects,
            last_seen_ms: seen.last_seen_ms,
            requests_sent: seen.requests_sent,
            requests_failed: seen.requests_failed,
            requests_received: seen.requests_received,
            bytes_sent: seen.bytes_sent,
            bytes_received: seen.bytes_received,
            caps: seen.caps.clone(),
        }
    }

    /// Requests answered out of requests sent; `None` before the first.
    pub fn success_ratio(&self) -> Option<f64> {
        (self.requests_sent > 0).then(|| {
            self.requests_sent.saturating_sub(self.requests_failed) as f64
                / self.requests_sent as f64
        })
    }

    /// Whether it announced hosting `tool`.
    pub fn hosts(&self, tool: &str) -> bool {
        self.caps
            .as_ref()
            .is_some_and(|c| c.tools.iter().any(|t| t.name == tool))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connected_time_adds_up_over_reconnects() {
        let mut seen = Seen::default();
        seen.connected(1_000);
        seen.disconnected(0, 3_000);
        seen.connected(10_000);
        assert_eq!(seen.connected_ms(10_500), 2_500);
        assert_eq!(seen.connects, 2);
    }

    #[test]
    fn ping_history_is_bounded() {
        let mut seen = Seen::default();
        for i in 0..(PING_HISTORY as i64 + 10) {
            seen.record_ping(i, Duration::from_millis(1));
        }
        assert_eq!(seen.pings.len(), PING_HISTORY);
        assert_eq!(seen.pings.front().unwrap().at_ms, 10);
    }
}
