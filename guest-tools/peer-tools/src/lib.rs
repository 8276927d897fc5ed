//! The 6 peer tools of the original MCP++, with its names and parameters, over
//! this node's mesh (`mcpplus:host/peers`). The original fabricated its
//! answers (`QmPeer1xxxx`, `random.uniform()`); here every value comes from
//! the host's measurements, and what cannot be measured is left out
//! (docs/peers.md lists which and why). The host enforces the policy's
//! `[peers]` grants: read for discover/list/metrics, admin for the rest.

wit_bindgen::generate!({ path: "wit", world: "peer-tools", generate_all });

use exports::mcpplus::peer_tools::tools::*;
use mcpplus::host::peers::{self, Peer, PeersError};

struct PeerTools;

const DEFAULT_MAX_PEERS: u32 = 10;
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;
const DEFAULT_TIMEOUT_S: u32 = 30;
const DEFAULT_RETRIES: u32 = 3;
const MAX_RETRIES: u32 = 10;
const DEFAULT_BOOTSTRAP_TIMEOUT_S: u32 = 60;
const MS_PER_HOUR: f64 = 3_600_000.0;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn elapsed_ms(since: std::time::Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1e3
}

fn explain(e: PeersError) -> String {
    match e {
        PeersError::Invalid(m)
        | PeersError::NotFound(m)
        | PeersError::Denied(m)
        | PeersError::Unavailable(m)
        | PeersError::Failed(m) => m,
    }
}

fn status_of(peer: &Peer) -> &'static str {
    match (peer.allowed, peer.connected) {
        (false, _) => "unlisted",
        (true, true) => "connected",
        (true, false) => "disconnected",
    }
}

fn success_ratio(peer: &Peer) -> Option<f64> {
    (peer.requests_sent > 0).then(|| {
        peer.requests_sent.saturating_sub(peer.requests_failed) as f64 / peer.requests_sent as f64
    })
}

fn hosts_all(peer: &Peer, filter: &[String]) -> bool {
    filter.iter().all(|tool| peer.tools.contains(tool))
}

fn non_empty(value: &str, name: &str) -> Result<(), String> {
    if value.trim().is_empty() {
        Err(format!("{name} must be a non-empty string"))
    } else {
        Ok(())
    }
}

fn find(peer_id: &str) -> Result<Peer, String> {
    peers::list_peers()
        .map_err(explain)?
        .into_iter()
        .find(|p| p.peer_id == peer_id)
        .ok_or_else(|| {
            format!(
                "peer {peer_id} is not known here: list it under [mesh.peers.\"{peer_id}\"] in the operator config; peer_list shows the known ones"
            )
        })
}

/// `multiaddr` with `/p2p/<peer_id>` at its end (added when missing).
fn dial_address(peer_id: &str, multiaddr: &str) -> Result<String, String> {
    let multiaddr = multiaddr.trim_end_matches('/');
    match multiaddr.rsplit_once("/p2p/") {
        Some((_, id)) if id == peer_id => Ok(multiaddr.to_string()),
        Some((_, id)) => Err(format!(
            "multiaddr names peer {id}, but peer_id is {peer_id}: they must be the same node"
        )),
        None => Ok(format!("{multiaddr}/p2p/{peer_id}")),
    }
}

impl Guest for PeerTools {
    fn peer_discover(
        capability_filter: Option<Vec<String>>,
        max_peers: Option<u32>,
        timeout: Option<u32>,
        include_metrics: Option<bool>,
    ) -> Result<Discovery, String> {
        let started = std::time::Instant::now();
        let max_peers = max_peers.unwrap_or(DEFAULT_MAX_PEERS);
        if max_peers == 0 || max_peers > MAX_LIMIT {
            return Err(format!(
                "max_peers must be between 1 and {MAX_LIMIT}, got {max_peers}"
            ));
        }
        if timeout == Some(0) {
            return Err("timeout must be at least 1 second".into());
        }
        let filter = capability_filter.unwrap_or_default();
        let mut found: Vec<Peer> = peers::list_peers()
            .map_err(explain)?
            .into_iter()
            // Discovered: connected now, or reachable at a known address.
            .filter(|p| p.connected || !p.addresses.is_empty())
            .filter(|p| hosts_all(p, &filter))
            .collect();
        found.sort_by_key(|p| (!p.connected, std::cmp::Reverse(p.last_seen_ms)));
        found.truncate(max_peers as usize);
        let metrics = include_metrics.unwrap_or(false);
        let peers: Vec<DiscoveredPeer> = found
            .into_iter()
            .map(|p| DiscoveredPeer {
                multiaddr: p.addresses.first().cloned(),
                capabilities: p.tools.clone(),
                connected: p.connected,
                allowed: p.allowed,
                last_seen_ms: p.last_seen_ms,
                metrics: metrics.then(|| PeerMeasures {
                    latency_ms: p.latency_ms,
                    request_success_ratio: success_ratio(&p),
                    connected_hours: p.connected_total_ms as f64 / MS_PER_HOUR,
                }),
                peer_id: p.peer_id,
            })
            .collect();
        Ok(Discovery {
            discovered_count: peers.len() as u32,
            peers,
            search_time_ms: elapsed_ms(started),
            capability_filter: filter,
            max_peers,
        })
    }

    fn peer_connect(
        peer_id: String,
        multiaddr: String,
        timeout: Option<u32>,
        retry_count: Option<u32>,
        persist: Option<bool>,
    ) -> Result<Connection, String> {
        non_empty(&peer_id, "peer_id")?;
        non_empty(&multiaddr, "multiaddr")?;
        if persist == Some(false) {
            return Err("persist=false is not supported: this node keeps every connection to an allowed peer and redials it while it runs; use peer_disconnect to drop one".into());
        }
        let timeout_s = timeout.unwrap_or(DEFAULT_TIMEOUT_S);
        if timeout_s == 0 {
            return Err("timeout must be at least 1 second".into());
        }
        let retries = retry_count.unwrap_or(DEFAULT_RETRIES);
        if retries == 0 || retries > MAX_RETRIES {
            return Err(format!(
                "retry_count must be between 1 and {MAX_RETRIES}, got {retries}"
            ));
        }
        let address = dial_address(&peer_id, &multiaddr)?;
        let started = std::time::Instant::now();
        let mut attempts = 0;
        let mut last_error = String::new();
        while attempts < retries {
            attempts += 1;
            match peers::connect(&address, u64::from(timeout_s) * 1000) {
                Ok(_) => {
                    let connection_time_ms = elapsed_ms(started);
                    let peer = find(&peer_id)?;
                    return Ok(Connection {
                        success: true,
                        peer_id,
                        multiaddr: address,
                        connection_time_ms,
                        attempts,
                        peer_capabilities: peer.tools,
                        protocol_version: peer.agent_version,
                        persist: true,
                    });
                }
                // Wrong input or no grant: trying again cannot help.
                Err(
                    e @ (PeersError::Invalid(_)
                    | PeersError::Denied(_)
                    | PeersError::Unavailable(_)),
                ) => {
                    return Err(explain(e));
                }
                Err(e) => last_error = explain(e),
            }
        }
        Err(format!(
            "could not connect to {peer_id} after {attempts} attempt(s): {last_error}"
        ))
    }

    fn peer_disconnect(
        peer_id: String,
        reason: Option<String>,
        graceful: Option<bool>,
    ) -> Result<Disconnection, String> {
        non_empty(&peer_id, "peer_id")?;
        let was_connected = peers::disconnect(&peer_id).map_err(explain)?;
        Ok(Disconnection {
            success: true,
            peer_id,
            was_connected,
            graceful: graceful.unwrap_or(true),
            reason,
            disconnection_time_ms: now_ms(),
        })
    }

    fn peer_list(
        status_filter: Option<String>,
        capability_filter: Option<Vec<String>>,
        sort_by: Option<String>,
        limit: Option<u32>,
        offset: Option<u32>,
    ) -> Result<PeerListing, String> {
        if let Some(status) = &status_filter
            && !["connected", "disconnected", "unlisted"].contains(&status.as_str())
        {
            return Err(format!(
                "status_filter must be connected, disconnected or unlisted, got `{status}`"
            ));
        }
        let sort_by = sort_by.unwrap_or_else(|| "last_seen".into());
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(format!(
                "limit must be between 1 and {MAX_LIMIT}, got {limit}"
            ));
        }
        let filter = capability_filter.unwrap_or_default();
        let mut found: Vec<Peer> = peers::list_peers()
            .map_err(explain)?
            .into_iter()
            .filter(|p| status_filter.as_deref().is_none_or(|s| s == status_of(p)))
            .filter(|p| hosts_all(p, &filter))
            .collect();
        match sort_by.as_str() {
            "last_seen" => found.sort_by_key(|p| std::cmp::Reverse(p.last_seen_ms)),
            "latency" => found.sort_by(|a, b| {
                let key = |p: &Peer| p.latency_ms.unwrap_or(f64::INFINITY);
                key(a).total_cmp(&key(b))
            }),
            "peer_id" => found.sort_by(|a, b| a.peer_id.cmp(&b.peer_id)),
            "connected_since" => found.sort_by_key(|p| p.connected_since_ms.unwrap_or(i64::MAX)),
            other => {
                return Err(format!(
                    "sort_by must be last_seen, latency, peer_id or connected_since, got `{other}`"
                ));
            }
        }
        let total = found.len() as u32;
        let offset = offset.unwrap_or(0);
        let page: Vec<ListedPeer> = found
            .into_iter()
            .skip(offset as usize)
            .take(limit as usize)
            .map(|p| ListedPeer {
                multiaddr: p.addresses.first().cloned(),
                status: status_of(&p).into(),
                request_success_ratio: success_ratio(&p),
                roles: p.roles,
                capabilities: p.tools,
                last_seen_ms: p.last_seen_ms,
                connected_since_ms: p.connected_since_ms,
                latency_ms: p.latency_ms,
                peer_id: p.peer_id,
            })
            .collect();
        let returned = page.len() as u32;
        Ok(PeerListing {
            peers: page,
            total_count: total,
            returned_count: returned,
            has_more: offset.saturating_add(returned) < total,
            sort_by,
        })
    }

    fn peer_metrics(
        peer_id: String,
        include_history: Option<bool>,
        history_hours: Option<f64>,
    ) -> Result<PeerReport, String> {
        non_empty(&peer_id, "peer_id")?;
        let hours = history_hours.unwrap_or(24.0);
        if !hours.is_finite() || hours <= 0.0 {
            return Err(format!(
                "history_hours must be a number of hours greater than 0, got {hours}"
            ));
        }
        let peer = find(&peer_id)?;
        let now = now_ms();
        let history = if include_history.unwrap_or(false) {
            let since = now - (hours * MS_PER_HOUR) as i64;
            Some(
                peers::pings(&peer_id)
                    .map_err(explain)?
                    .into_iter()
                    .filter(|s| s.at_ms >= since)
                    .map(|s| LatencySample {
                        at_ms: s.at_ms,
                        latency_ms: s.latency_ms,
                    })
                    .collect(),
            )
        } else {
            None
        };
        Ok(PeerReport {
            current_metrics: CurrentMetrics {
                latency_ms: peer.latency_ms,
                request_success_ratio: success_ratio(&peer),
                connected_hours: peer.connected_total_ms as f64 / MS_PER_HOUR,
                requests_served: peer.requests_received,
                requests_sent: peer.requests_sent,
                requests_failed: peer.requests_failed,
                bytes_sent: peer.bytes_sent,
                bytes_received: peer.bytes_received,
                bytes_transferred: peer.bytes_sent + peer.bytes_received,
                connects: peer.connects,
            },
            connection_info: ConnectionInfo {
                status: status_of(&peer).into(),
                connected_since_ms: peer.connected_since_ms,
                last_active_ms: peer.last_seen_ms,
                protocol_version: peer.agent_version.clone(),
                roles: peer.roles.clone(),
                capabilities: peer.tools.clone(),
                addresses: peer.addresses.clone(),
                slots: peer.slots,
            },
            timestamp_ms: now,
            history_hours: history.is_some().then_some(hours),
            history,
            peer_id,
        })
    }

    fn bootstrap_network(
        bootstrap_nodes: Option<Vec<String>>,
        timeout: Option<u32>,
        min_connections: Option<u32>,
        max_connections: Option<u32>,
    ) -> Result<BootstrapReport, String> {
        let min = min_connections.unwrap_or(3);
        let max = max_connections.unwrap_or(10);
        if max == 0 || min > max {
            return Err(format!(
                "need 1 <= max_connections and min_connections <= max_connections, got min {min}, max {max}"
            ));
        }
        let timeout_s = timeout.unwrap_or(DEFAULT_BOOTSTRAP_TIMEOUT_S);
        if timeout_s == 0 {
            return Err("timeout must be at least 1 second".into());
        }
        let nodes = match bootstrap_nodes {
            Some(nodes) => nodes,
            None => peers::bootstrap_addresses().map_err(explain)?,
        };
        if nodes.is_empty() {
            return Err("no bootstrap nodes: pass bootstrap_nodes, or set [mesh] bootstrap in the operator config".into());
        }
        let started = std::time::Instant::now();
        let budget_ms = u64::from(timeout_s) * 1000;
        let connected_now = || -> Result<Vec<String>, String> {
            Ok(peers::list_peers()
                .map_err(explain)?
                .into_iter()
                .filter(|p| p.connected)
                .map(|p| p.peer_id)
                .collect())
        };
        let mut used = Vec::new();
        let mut failures = Vec::new();
        for address in nodes {
            if connected_now()?.len() as u32 >= max {
                break;
            }
            let left = budget_ms.saturating_sub(started.elapsed().as_millis() as u64);
            if left == 0 {
                failures.push(BootstrapFailure {
                    address,
                    error: format!("not tried: the timeout of {timeout_s} s was used up"),
                });
                continue;
            }
            used.push(address.clone());
            match peers::connect(&address, left) {
                Ok(_) => {}
                Err(e @ PeersError::Denied(_)) => return Err(explain(e)),
                Err(e) => failures.push(BootstrapFailure {
                    address,
                    error: explain(e),
                }),
            }
        }
        let connected = connected_now()?;
        let ready = connected.len() as u32 >= min;
        Ok(BootstrapReport {
            success: ready,
            connected_count: connected.len() as u32,
            failed_count: failures.len() as u32,
            failures,
            bootstrap_nodes_used: used,
            connected_peers: connected,
            network_ready: ready,
            bootstrap_time_ms: elapsed_ms(started),
            min_connections: min,
            max_connections: max,
        })
    }
}

export!(PeerTools);
