//! One task owns the libp2p `Swarm`; the rest of the host talks to it through
//! a cloneable [`MeshHandle`] (commands over a channel, answers over oneshots,
//! the shape of rust-libp2p's file-sharing example).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use libp2p::multiaddr::Protocol;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, allow_block_list, identify, mdns, noise, ping, tcp,
    yamux,
};
use mcpplus_policy::config::mesh::PeerRole;
use mcpplus_queue::remote::{OwnerRequest, OwnerResponse, RemoteOwner};
use tokio::sync::{mpsc, oneshot};

use crate::protocol::{MeshRequest, MeshResponse, PROTOCOL};

/// How long a request may wait for its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often unreachable allowed peers are dialled again.
const REDIAL_EVERY: Duration = Duration::from_secs(2);

#[derive(NetworkBehaviour)]
struct Behaviour {
    allowed: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    queue: request_response::json::Behaviour<MeshRequest, MeshResponse>,
}

/// How this node joins the mesh.
pub struct MeshOptions {
    pub keypair: libp2p::identity::Keypair,
    pub listen: Vec<Multiaddr>,
    pub bootstrap: Vec<Multiaddr>,
    pub mdns: bool,
    /// Allowed peers and what each may do here.
    pub peers: BTreeMap<PeerId, Vec<PeerRole>>,
    /// Answers other nodes' workers from this node's queue.
    pub owner: Arc<RemoteOwner>,
}

/// A peer as this node sees it.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    pub peer_id: PeerId,
    pub connected: bool,
    pub roles: Vec<PeerRole>,
    pub addresses: Vec<Multiaddr>,
    /// The last ping round trip.
    pub latency: Option<Duration>,
    pub agent_version: Option<String>,
}

enum Command {
    Request {
        peer: PeerId,
        request: MeshRequest,
        reply: oneshot::Sender<Result<MeshResponse, String>>,
    },
    Respond {
        channel: ResponseChannel<MeshResponse>,
        response: MeshResponse,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerStatus>>,
    },
}

/// Talk to the mesh task. Cheap to clone.
#[derive(Clone)]
pub struct MeshHandle {
    commands: mpsc::Sender<Command>,
    local: PeerId,
}

impl MeshHandle {
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// Send `request` to `peer` (dialling it if needed) and wait for the answer.
    pub async fn request(
        &self,
        peer: PeerId,
        request: MeshRequest,
    ) -> Result<MeshResponse, String> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Request {
                peer,
                request,
                reply,
            })
            .await
            .map_err(|_| "the mesh has stopped".to_string())?;
        answer
            .await
            .map_err(|_| "the mesh has stopped".to_string())?
    }

    /// Every allowed peer, connected or not.
    pub async fn peers(&self) -> Vec<PeerStatus> {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::Peers { reply }).await.is_err() {
            return Vec::new();
        }
        answer.await.unwrap_or_default()
    }
}

/// A running mesh node.
pub struct Mesh {
    pub handle: MeshHandle,
    /// The addresses it listens on, each ending in `/p2p/<this node>`.
    pub listening: Vec<Multiaddr>,
    _task: tokio::task::JoinHandle<()>,
}

impl Mesh {
    /// Start listening and dialling; returns once every listen address is bound.
    pub async fn start(options: MeshOptions) -> anyhow::Result<Mesh> {
        let local = options.keypair.public().to_peer_id();
        let use_mdns = options.mdns;
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(options.keypair.clone())
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )?
            .with_dns()?
            .with_behaviour(|key| {
                let mdns = if use_mdns {
                    Some(mdns::tokio::Behaviour::new(
                        mdns::Config::default(),
                        key.public().to_peer_id(),
                    )?)
                } else {
                    None
                };
                Ok(Behaviour {
                    allowed: allow_block_list::Behaviour::default(),
                    identify: identify::Behaviour::new(
                        identify::Config::new("/mcpplus/1.0.0".into(), key.public())
                            .with_agent_version(format!("mcpplus/{}", env!("CARGO_PKG_VERSION"))),
                    ),
                    ping: ping::Behaviour::new(ping::Config::new()),
                    mdns: Toggle::from(mdns),
                    queue: request_response::json::Behaviour::new(
                        [(StreamProtocol::new(PROTOCOL), ProtocolSupport::Full)],
                        request_response::Config::default().with_request_timeout(REQUEST_TIMEOUT),
                    ),
                })
            })?
            // Requests keep connections busy; an idle one is closed after this.
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        for peer in options.peers.keys() {
            swarm.behaviour_mut().allowed.allow_peer(*peer);
        }
        for addr in &options.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        }
        // Wait until each listener is bound, so the printed address is real.
        let mut listening = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while listening.len() < options.listen.len() {
            match tokio::time::timeout_at(deadline, swarm.select_next_some()).await {
                Ok(SwarmEvent::NewListenAddr { address, .. }) => {
                    listening.push(address.with(Protocol::P2p(local)))
                }
                Ok(SwarmEvent::ListenerError { error, .. }) => {
                    anyhow::bail!("a mesh listener failed: {error}")
                }
                Ok(_) => {}
                Err(_) => anyhow::bail!("the mesh listeners did not bind within 10 s"),
            }
        }
        let mut state = State {
            roles: options.peers.clone(),
            owner: options.owner,
            pending: HashMap::new(),
            seen: HashMap::new(),
        };
        for addr in &options.bootstrap {
            let Some(Protocol::P2p(peer)) = addr.iter().last() else {
                anyhow::bail!("bootstrap address {addr} must end in /p2p/<peer-id>");
            };
            if !state.roles.contains_key(&peer) {
                tracing::warn!(event = "mesh.bootstrap_unlisted", peer = %peer,
                    "a bootstrap peer is not in [mesh.peers]; its connection will be refused");
            }
            swarm.add_peer_address(peer, addr.clone());
            state
                .seen
                .entry(peer)
                .or_default()
                .addresses
                .push(addr.clone());
            if let Err(e) = swarm.dial(addr.clone()) {
                tracing::warn!(event = "mesh.dial_failed", address = %addr, error = %e, "cannot dial a bootstrap node");
            }
        }
        let (commands, receiver) = mpsc::channel(1024);
        let handle = MeshHandle { commands, local };
        let task = tokio::spawn(run(swarm, receiver, handle.clone(), state));
        Ok(Mesh {
            handle,
            listening,
            _task: task,
        })
    }
}

#[derive(Default)]
struct Seen {
    connected: u32,
    addresses: Vec<Multiaddr>,
    latency: Option<Duration>,
    agent_version: Option<String>,
}

struct State {
    roles: BTreeMap<PeerId, Vec<PeerRole>>,
    owner: Arc<RemoteOwner>,
    pending: HashMap<OutboundRequestId, oneshot::Sender<Result<MeshResponse, String>>>,
    seen: HashMap<PeerId, Seen>,
}

async fn run(
    mut swarm: Swarm<Behaviour>,
    mut commands: mpsc::Receiver<Command>,
    handle: MeshHandle,
    mut state: State,
) {
    // Allowed peers with known addresses are dialled again while they are
    // unreachable (an owner started after its workers, a restarted node).
    let mut redial = tokio::time::interval(REDIAL_EVERY);
    redial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(command) => on_command(&mut swarm, &mut state, command),
                None => return,
            },
            event = swarm.select_next_some() => on_event(&mut swarm, &mut state, &handle, event),
            _ = redial.tick() => {
                let peers: Vec<PeerId> = state.roles.keys().copied().collect();
                for peer in peers {
                    dial_known(&mut swarm, &state, peer);
                }
            }
        }
    }
}

/// Dial `peer` at the addresses we know for it, unless connected or dialling.
fn dial_known(swarm: &mut Swarm<Behaviour>, state: &State, peer: PeerId) {
    let Some(seen) = state.seen.get(&peer) else {
        return;
    };
    if swarm.is_connected(&peer) || seen.addresses.is_empty() {
        return;
    }
    let opts = DialOpts::peer_id(peer)
        .addresses(seen.addresses.clone())
        .condition(PeerCondition::DisconnectedAndNotDialing)
        .build();
    let _ = swarm.dial(opts);
}

fn on_command(swarm: &mut Swarm<Behaviour>, state: &mut State, command: Command) {
    match command {
        Command::Request {
            peer,
            request,
            reply,
        } => {
            dial_known(swarm, state, peer);
            let id = swarm.behaviour_mut().queue.send_request(&peer, request);
            state.pending.insert(id, reply);
        }
        Command::Respond { channel, response } => {
            // Fails only when the connection closed meanwhile; the worker retries.
            let _ = swarm.behaviour_mut().queue.send_response(channel, response);
        }
        Command::Peers { reply } => {
            let peers = state
                .roles
                .iter()
                .map(|(peer, roles)| {
                    let seen = state.seen.get(peer);
                    PeerStatus {
                        peer_id: *peer,
                        connected: swarm.is_connected(peer),
                        roles: roles.clone(),
                        addresses: seen.map(|s| s.addresses.clone()).unwrap_or_default(),
                        latency: seen.and_then(|s| s.latency),
                        agent_version: seen.and_then(|s| s.agent_version.clone()),
                    }
                })
                .collect();
            let _ = reply.send(peers);
        }
    }
}

fn on_event(
    swarm: &mut Swarm<Behaviour>,
    state: &mut State,
    handle: &MeshHandle,
    event: SwarmEvent<BehaviourEvent>,
) {
    match event {
        SwarmEvent::NewListenAddr { address, .. } => {
            tracing::info!(event = "mesh.listening", address = %address, "mesh listening");
        }
        SwarmEvent::ConnectionEstablished {
            peer_id,
            endpoint,
            established_in,
            ..
        } => {
            let seen = state.seen.entry(peer_id).or_default();
            seen.connected += 1;
            tracing::info!(event = "mesh.peer_connected", peer = %peer_id,
                address = %endpoint.get_remote_address(), established_ms = established_in.as_millis() as u64,
                "peer connected");
        }
        SwarmEvent::ConnectionClosed {
            peer_id,
            num_established,
            cause,
            ..
        } => {
            if let Some(seen) = state.seen.get_mut(&peer_id) {
                seen.connected = num_established;
            }
            if num_established == 0 {
                tracing::info!(event = "mesh.peer_disconnected", peer = %peer_id,
                    cause = cause.map(|c| c.to_string()).unwrap_or_default(), "peer disconnected");
            }
        }
        SwarmEvent::IncomingConnectionError {
            send_back_addr,
            error,
            peer_id,
            ..
        } => {
            if matches!(error, libp2p::swarm::ListenError::Denied { .. }) {
                tracing::warn!(event = "mesh.peer_denied", peer = %peer_id.map(|p| p.to_string()).unwrap_or_default(),
                    address = %send_back_addr, "refused a peer that is not in [mesh.peers]");
            } else {
                tracing::debug!(event = "mesh.incoming_failed", address = %send_back_addr, error = %error, "incoming connection failed");
            }
        }
        SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
            tracing::debug!(event = "mesh.dial_failed", peer = %peer_id.map(|p| p.to_string()).unwrap_or_default(),
                error = %error, "could not connect");
        }
        SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
            peer_id,
            info,
            ..
        })) => {
            let seen = state.seen.entry(peer_id).or_default();
            seen.agent_version = Some(info.agent_version);
            for addr in info.listen_addrs {
                if !seen.addresses.contains(&addr) && seen.addresses.len() < 16 {
                    seen.addresses.push(addr.clone());
                }
                swarm.add_peer_address(peer_id, addr);
            }
        }
        SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
            peer,
            result: Ok(rtt),
            ..
        })) => {
            state.seen.entry(peer).or_default().latency = Some(rtt);
        }
        SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
            for (peer, addr) in found {
                if state.roles.contains_key(&peer) && !swarm.is_connected(&peer) {
                    swarm.add_peer_address(peer, addr.clone());
                    let _ = swarm.dial(addr);
                }
            }
        }
        SwarmEvent::Behaviour(BehaviourEvent::Queue(event)) => on_queue_event(state, handle, event),
        _ => {}
    }
}

fn on_queue_event(
    state: &mut State,
    handle: &MeshHandle,
    event: request_response::Event<MeshRequest, MeshResponse>,
) {
    use request_response::{Event, Message};
    match event {
        Event::Message {
            peer,
            message: Message::Request {
                request, channel, ..
            },
            ..
        } => {
            let roles = state.roles.get(&peer).cloned().unwrap_or_default();
            let owner = state.owner.clone();
            let commands = handle.commands.clone();
            tokio::spawn(async move {
                let response = answer_waiting(owner, peer, roles, request).await;
                let _ = commands.send(Command::Respond { channel, response }).await;
            });
        }
        Event::Message {
            message:
                Message::Response {
                    request_id,
                    response,
                },
            ..
        } => {
            if let Some(reply) = state.pending.remove(&request_id) {
                let _ = reply.send(Ok(response));
            }
        }
        Event::OutboundFailure {
            request_id,
            error,
            peer,
            ..
        } => {
            if let Some(reply) = state.pending.remove(&request_id) {
                let _ = reply.send(Err(format!("request to {peer} failed: {error}")));
            }
        }
        Event::InboundFailure { peer, error, .. } => {
            tracing::debug!(event = "mesh.inbound_failed", peer = %peer, error = %error, "an answer was not delivered");
        }
        Event::ResponseSent { .. } => {}
    }
}

/// Answer one request; a claim that finds nothing waits (up to the owner's
/// claim hold) for a task to become ready, so a remote worker picks up new
/// work at once instead of at its next poll.
async fn answer_waiting(
    owner: Arc<RemoteOwner>,
    peer: PeerId,
    roles: Vec<PeerRole>,
    request: MeshRequest,
) -> MeshResponse {
    let deadline = tokio::time::Instant::now() + owner.claim_hold();
    let holds = matches!(&request, MeshRequest::Queue(OwnerRequest::Claim { .. }));
    let store = owner.store().clone();
    loop {
        let woken = store.ready_signal().notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let (o, r, ro) = (owner.clone(), request.clone(), roles.clone());
        let response = tokio::task::spawn_blocking(move || answer(&o, peer, &ro, r))
            .await
            .unwrap_or_else(|e| MeshResponse::Denied {
                error: format!("the request failed: {e}"),
            });
        let empty = matches!(&response, MeshResponse::Queue(OwnerResponse::Granted { grants }) if grants.is_empty());
        if !(holds && empty) || tokio::time::Instant::now() >= deadline {
            return response;
        }
        tokio::select! {
            _ = &mut woken => {}
            _ = tokio::time::sleep_until(deadline) => return response,
        }
    }
}

/// Answer one request of `peer`, re-checking its roles (the allow-list
/// refuses connections only after the handshake).
fn answer(
    owner: &RemoteOwner,
    peer: PeerId,
    roles: &[PeerRole],
    request: MeshRequest,
) -> MeshResponse {
    let MeshRequest::Queue(request) = request;
    let peer = peer.to_string();
    if !roles.contains(&PeerRole::Claim) {
        count_request(&peer, "denied");
        return MeshResponse::Denied {
            error: format!(
                "peer {peer} may not run this node's tasks; its operator must add roles = [\"claim\"] under [mesh.peers.\"{peer}\"]"
            ),
        };
    }
    let completing = match &request {
        OwnerRequest::Complete { id, attempt, .. } => Some((id.clone(), *attempt)),
        _ => None,
    };
    let response = owner.handle(&peer, request, mcpplus_queue::worker::now_ms());
    let answer = match &response {
        OwnerResponse::Granted { grants } if grants.is_empty() => "empty",
        OwnerResponse::Granted { grants } => {
            for grant in grants {
                tracing::info!(event = "queue.remote_claim", peer = %peer, task = %grant.id,
                    tool = %grant.tool, attempt = grant.attempt, "a peer claimed a task");
            }
            "granted"
        }
        OwnerResponse::Leases { .. } => "leases",
        OwnerResponse::Settled { settled } => {
            if let Some((task, attempt)) = &completing {
                tracing::info!(event = "queue.remote_complete", peer = %peer, task = %task,
                    attempt, settled = ?settled, "a peer reported an outcome");
            }
            "settled"
        }
        OwnerResponse::Released { .. } => "released",
        OwnerResponse::Refused { .. } => "refused",
    };
    count_request(&peer, answer);
    MeshResponse::Queue(response)
}

/// `mcpplus_mesh_requests_total{peer, answer}`.
fn count_request(peer: &str, answer: &str) {
    mcpplus_telemetry::metrics::metrics()
        .mesh_requests
        .get_or_create(&vec![
            ("peer", peer.to_string()),
            ("answer", answer.to_string()),
        ])
        .inc();
}
