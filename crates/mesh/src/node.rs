//! One task owns the libp2p `Swarm`; the rest of the host talks to it through
//! a cloneable [`MeshHandle`] (commands over a channel, answers over oneshots,
//! the shape of rust-libp2p's file-sharing example).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use either::Either;
use futures::StreamExt as _;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, Transport as _};
use libp2p::core::upgrade;
use libp2p::multiaddr::Protocol;
use libp2p::pnet::{PnetConfig, PreSharedKey};
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, allow_block_list, identify, kad, mdns, noise, ping,
    tcp, yamux,
};
use mcpplus_policy::config::mesh::PeerRole;
use mcpplus_queue::remote::{OwnerRequest, OwnerResponse, RemoteOwner};
use mcpplus_queue::worker::now_ms;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::protocol::{Caps, MAX_READY_TOOLS, MeshRequest, MeshResponse, PROTOCOL, Submission};
use crate::stats::{MAX_ADDRESSES, PeerStatus, Seen};

/// How long a request may wait for its answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often unreachable allowed peers are dialled again.
const REDIAL_EVERY: Duration = Duration::from_secs(2);
/// Ready-task hints wait this long to cover a burst of submissions.
const HINT_COALESCE: Duration = Duration::from_millis(20);
/// Kademlia under a private name: it never meets the public IPFS DHT.
pub const KAD_PROTOCOL: &str = "/mcpplus/kad/1.0.0";
/// How often a node asks the mesh for peers it is not connected to.
const LOOKUP_EVERY: Duration = Duration::from_secs(30);
/// Unlisted peers found by mDNS that are remembered for operators.
const MAX_UNLISTED: usize = 64;

#[derive(NetworkBehaviour)]
struct Behaviour {
    allowed: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    kad: kad::Behaviour<kad::store::MemoryStore>,
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
    /// What this node hosts, announced to peers on connect.
    pub caps: Caps,
    /// A private network's pre-shared key: nodes without it fail the handshake.
    pub psk: Option<PreSharedKey>,
}

enum Command {
    Request {
        peer: PeerId,
        request: MeshRequest,
        reply: oneshot::Sender<Result<MeshResponse, String>>,
    },
    Respond {
        peer: PeerId,
        channel: ResponseChannel<MeshResponse>,
        response: MeshResponse,
    },
    Peers {
        reply: oneshot::Sender<Vec<PeerStatus>>,
    },
    /// Announce new caps to every connected peer.
    Announce { caps: Caps },
    /// Tell the peers hosting these tools that tasks of them are ready.
    Hint { tools: Vec<String> },
    Connect {
        peer: PeerId,
        addresses: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    Disconnect {
        peer: PeerId,
        reply: oneshot::Sender<bool>,
    },
}

/// Talk to the mesh task. Cheap to clone.
#[derive(Clone)]
pub struct MeshHandle {
    commands: mpsc::Sender<Command>,
    local: PeerId,
    /// Per owner: woken when it hints that tasks for our tools are ready.
    hints: Arc<Mutex<HashMap<PeerId, Arc<Notify>>>>,
    /// Connected peers' announcements, readable without asking the task.
    directory: Arc<RwLock<HashMap<PeerId, Caps>>>,
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
        self.ask(|reply| Command::Request {
            peer,
            request,
            reply,
        })
        .await?
    }

    /// Send the command `make` builds around a reply channel; its answer.
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, String> {
        let stopped = || "the mesh has stopped".to_string();
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())
    }

    /// Every allowed peer, connected or not, and unlisted peers mDNS found.
    pub async fn peers(&self) -> Vec<PeerStatus> {
        self.ask(|reply| Command::Peers { reply })
            .await
            .unwrap_or_default()
    }

    /// What this node hosts changed (a hot load): tell every connected peer.
    pub async fn announce(&self, caps: Caps) {
        let _ = self.commands.send(Command::Announce { caps }).await;
    }

    /// Connect to `peer` at `addresses` (it must be listed in `[mesh.peers]`);
    /// answers once connected or when the dial failed. Undoes a disconnect.
    pub async fn connect(&self, peer: PeerId, addresses: Vec<Multiaddr>) -> Result<(), String> {
        self.ask(|reply| Command::Connect {
            peer,
            addresses,
            reply,
        })
        .await?
    }

    /// Close every connection to `peer` and stop dialling it until
    /// [`Self::connect`]. `false` if it was not connected.
    pub async fn disconnect(&self, peer: PeerId) -> bool {
        self.ask(|reply| Command::Disconnect { peer, reply })
            .await
            .unwrap_or(false)
    }

    /// Woken when `owner` hints that tasks for this node's tools are ready.
    pub fn ready_hint(&self, owner: PeerId) -> Arc<Notify> {
        self.hints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(owner)
            .or_default()
            .clone()
    }

    /// The latest announcement of every connected peer that sent one.
    pub fn directory(&self) -> HashMap<PeerId, Caps> {
        self.directory
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A running mesh node.
pub struct Mesh {
    pub handle: MeshHandle,
    /// The addresses it listens on, each ending in `/p2p/<this node>`.
    pub listening: Vec<Multiaddr>,
    _task: tokio::task::JoinHandle<()>,
    _hints: tokio::task::JoinHandle<()>,
}

impl Mesh {
    /// Start listening and dialling; returns once every listen address is bound.
    pub async fn start(options: MeshOptions) -> anyhow::Result<Mesh> {
        let local = options.keypair.public().to_peer_id();
        let use_mdns = options.mdns;
        let psk = options.psk;
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(options.keypair.clone())
            .with_tokio()
            .with_other_transport(|key| transport(key, psk))?
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
                    kad: {
                        let id = key.public().to_peer_id();
                        let config = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
                        let mut kad = kad::Behaviour::with_config(
                            id,
                            kad::store::MemoryStore::new(id),
                            config,
                        );
                        // Every node answers: the mesh is private and allow-listed.
                        kad.set_mode(Some(kad::Mode::Server));
                        kad
                    },
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
        let (commands, receiver) = mpsc::channel(1024);
        let handle = MeshHandle {
            commands,
            local,
            hints: Arc::default(),
            directory: Arc::default(),
        };
        let mut state = State {
            roles: options.peers.clone(),
            owner: options.owner,
            pending: HashMap::new(),
            seen: HashMap::new(),
            unlisted: BTreeMap::new(),
            caps: options.caps,
            looked_up: false,
            dialling: HashMap::new(),
            handle: handle.clone(),
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
            state.seen.entry(peer).or_default().add_address(addr);
            if let Err(e) = swarm.dial(addr.clone()) {
                tracing::warn!(event = "mesh.dial_failed", address = %addr, error = %e, "cannot dial a bootstrap node");
            }
        }
        let hints = tokio::spawn(hint_ready_tasks(
            state.owner.store().clone(),
            handle.clone(),
        ));
        let task = tokio::spawn(run(swarm, receiver, state));
        Ok(Mesh {
            handle,
            listening,
            _task: task,
            _hints: hints,
        })
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        self._hints.abort();
    }
}

/// TCP, then (with a pre-shared key) the private-network handshake, then
/// Noise and Yamux: the stack of rust-libp2p's ipfs-private example.
fn transport(
    key: &libp2p::identity::Keypair,
    psk: Option<PreSharedKey>,
) -> Result<Boxed<(PeerId, StreamMuxerBox)>, Box<dyn std::error::Error + Send + Sync>> {
    let tcp = tcp::tokio::Transport::new(tcp::Config::default().nodelay(true));
    let base = match psk {
        Some(psk) => {
            Either::Left(tcp.and_then(move |socket, _| PnetConfig::new(psk).handshake(socket)))
        }
        None => Either::Right(tcp),
    };
    Ok(base
        .upgrade(upgrade::Version::V1Lazy)
        .authenticate(noise::Config::new(key)?)
        .multiplex(yamux::Config::default())
        .timeout(Duration::from_secs(20))
        .boxed())
}

/// Owner side of "pickup does not wait for a poll": whenever tasks may have
/// become ready, find which tools they are for and hint the peers hosting them.
async fn hint_ready_tasks(store: Arc<mcpplus_queue::QueueStore>, handle: MeshHandle) {
    loop {
        let woken = store.ready_signal().notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        woken.await;
        // Submissions come in bursts: one hint per burst is enough.
        tokio::time::sleep(HINT_COALESCE).await;
        let s = store.clone();
        let tools =
            tokio::task::spawn_blocking(move || s.ready_tools(now_ms(), MAX_READY_TOOLS as u32))
                .await;
        if let Ok(Ok(tools)) = tools
            && !tools.is_empty()
            && handle.commands.send(Command::Hint { tools }).await.is_err()
        {
            return;
        }
    }
}

/// What an outbound request is for.
enum Pending {
    /// A caller waits for the answer.
    Reply(oneshot::Sender<Result<MeshResponse, String>>),
    /// Our announcement; the answer is the peer's.
    Announce,
    /// A hint; its acknowledgement is not needed.
    Hint,
}

struct State {
    roles: BTreeMap<PeerId, Vec<PeerRole>>,
    owner: Arc<RemoteOwner>,
    pending: HashMap<OutboundRequestId, (PeerId, Pending)>,
    seen: HashMap<PeerId, Seen>,
    /// Peers mDNS found that are not listed (shown to operators, never dialled).
    unlisted: BTreeMap<PeerId, Vec<Multiaddr>>,
    caps: Caps,
    /// Whether the first peer lookup ran.
    looked_up: bool,
    /// Connect calls waiting for a dial's outcome.
    dialling: HashMap<PeerId, Vec<oneshot::Sender<Result<(), String>>>>,
    handle: MeshHandle,
}

impl State {
    fn set_directory(&self, peer: PeerId, caps: Option<Caps>) {
        let mut directory = self
            .handle
            .directory
            .write()
            .unwrap_or_else(|e| e.into_inner());
        match caps {
            Some(caps) => directory.insert(peer, caps),
            None => directory.remove(&peer),
        };
    }

    /// Keep `caps` from `peer` unless an announcement already seen is newer.
    fn received_caps(&mut self, peer: PeerId, caps: Caps, connected: bool) {
        let seen = self.seen.entry(peer).or_default();
        if seen.caps.as_ref().is_some_and(|c| c.version > caps.version) {
            return;
        }
        seen.caps = Some(caps.clone());
        if connected {
            self.set_directory(peer, Some(caps));
        }
    }

    fn finish_dials(&mut self, peer: PeerId, outcome: Result<(), String>) {
        for reply in self.dialling.remove(&peer).unwrap_or_default() {
            let _ = reply.send(outcome.clone());
        }
    }
}

async fn run(mut swarm: Swarm<Behaviour>, mut commands: mpsc::Receiver<Command>, mut state: State) {
    // Allowed peers with known addresses are dialled again while they are
    // unreachable (an owner started after its workers, a restarted node).
    let mut redial = tokio::time::interval(REDIAL_EVERY);
    redial.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut lookup = tokio::time::interval(LOOKUP_EVERY);
    lookup.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(command) => on_command(&mut swarm, &mut state, command),
                None => return,
            },
            event = swarm.select_next_some() => on_event(&mut swarm, &mut state, event),
            _ = redial.tick() => {
                let peers: Vec<PeerId> = state.roles.keys().copied().collect();
                for peer in peers {
                    dial_known(&mut swarm, &state, peer);
                }
            }
            _ = lookup.tick() => look_up_peers(&mut swarm),

        }
    }
}

/// Ask the mesh (kad) for the peers closest to this node: it learns where
/// the allowed peers it has not met are.
fn look_up_peers(swarm: &mut Swarm<Behaviour>) {
    if swarm.connected_peers().next().is_some() {
        let local = *swarm.local_peer_id();
        swarm.behaviour_mut().kad.get_closest_peers(local);
    }
}

/// Dial `peer` at the addresses we know for it, unless connected, dialling
/// or held off by an operator.
fn dial_known(swarm: &mut Swarm<Behaviour>, state: &State, peer: PeerId) {
    let Some(seen) = state.seen.get(&peer) else {
        return;
    };
    if swarm.is_connected(&peer) || seen.addresses.is_empty() || seen.held_off {
        return;
    }
    let opts = DialOpts::peer_id(peer)
        .addresses(seen.addresses.clone())
        .condition(PeerCondition::DisconnectedAndNotDialing)
        .build();
    let _ = swarm.dial(opts);
}

/// Send a request and remember what it was for; counts it for the peer.
fn send_request(
    swarm: &mut Swarm<Behaviour>,
    state: &mut State,
    peer: PeerId,
    request: MeshRequest,
    pending: Pending,
) {
    let seen = state.seen.entry(peer).or_default();
    seen.requests_sent += 1;
    seen.bytes_sent += json_len(&request);
    let id = swarm.behaviour_mut().queue.send_request(&peer, request);
    state.pending.insert(id, (peer, pending));
}

fn on_command(swarm: &mut Swarm<Behaviour>, state: &mut State, command: Command) {
    match command {
        Command::Request {
            peer,
            request,
            reply,
        } => {
            dial_known(swarm, state, peer);
            send_request(swarm, state, peer, request, Pending::Reply(reply));
        }
        Command::Respond {
            peer,
            channel,
            response,
        } => {
            state.seen.entry(peer).or_default().bytes_sent += json_len(&response);
            // Fails only when the connection closed meanwhile; the worker retries.
            let _ = swarm.behaviour_mut().queue.send_response(channel, response);
        }
        Command::Peers { reply } => {
            let now = now_ms();
            let mut peers: Vec<PeerStatus> = state
                .roles
                .iter()
                .map(|(peer, roles)| {
                    PeerStatus::of(
                        *peer,
                        Some(roles),
                        state.seen.get(peer),
                        swarm.is_connected(peer),
                        now,
                    )
                })
                .collect();
            for (peer, addresses) in &state.unlisted {
                let mut status = PeerStatus::of(*peer, None, None, false, now);
                status.addresses = addresses.clone();
                peers.push(status);
            }
            let _ = reply.send(peers);
        }
        Command::Announce { caps } => {
            state.caps = Caps {
                version: state.caps.version + 1,
                ..caps
            };
            let connected: Vec<PeerId> = state
                .roles
                .keys()
                .filter(|p| swarm.is_connected(p))
                .copied()
                .collect();
            for peer in connected {
                let request = MeshRequest::Caps(state.caps.clone());
                send_request(swarm, state, peer, request, Pending::Announce);
            }
        }
        Command::Hint { tools } => {
            // Only peers that may claim here and announced one of the tools.
            let targets: Vec<(PeerId, Vec<String>)> = state
                .roles
                .iter()
                .filter(|(p, roles)| roles.contains(&PeerRole::Claim) && swarm.is_connected(p))
                .filter_map(|(p, _)| {
                    let caps = state.seen.get(p)?.caps.as_ref()?;
                    let hosted: Vec<String> = tools
                        .iter()
                        .filter(|t| caps.tools.iter().any(|c| &c.name == *t))
                        .cloned()
                        .collect();
                    (!hosted.is_empty()).then_some((*p, hosted))
                })
                .collect();
            for (peer, tools) in targets {
                send_request(
                    swarm,
                    state,
                    peer,
                    MeshRequest::Ready { tools },
                    Pending::Hint,
                );
            }
        }
        Command::Connect {
            peer,
            addresses,
            reply,
        } => {
            if !state.roles.contains_key(&peer) {
                let _ = reply.send(Err(format!(
                    "peer {peer} is not in [mesh.peers]: add [mesh.peers.\"{peer}\"] to the operator config first"
                )));
                return;
            }
            let seen = state.seen.entry(peer).or_default();
            seen.held_off = false;
            for addr in &addresses {
                seen.add_address(addr);
                swarm.add_peer_address(peer, addr.clone());
            }
            if swarm.is_connected(&peer) {
                let _ = reply.send(Ok(()));
                return;
            }
            let addresses = if addresses.is_empty() {
                seen.addresses.clone()
            } else {
                addresses
            };
            if addresses.is_empty() {
                let _ = reply.send(Err(format!(
                    "no address is known for peer {peer}: give one (…/p2p/{peer})"
                )));
                return;
            }
            let opts = DialOpts::peer_id(peer)
                .addresses(addresses)
                .condition(PeerCondition::Always)
                .build();
            match swarm.dial(opts) {
                Ok(()) => state.dialling.entry(peer).or_default().push(reply),
                Err(e) => {
                    let _ = reply.send(Err(format!("cannot dial {peer}: {e}")));
                }
            }
        }
        Command::Disconnect { peer, reply } => {
            let was_connected = swarm.is_connected(&peer);
            if let Some(seen) = state.seen.get_mut(&peer) {
                seen.held_off = true;
            }
            let _ = swarm.disconnect_peer_id(peer);
            let _ = reply.send(was_connected);
        }
    }
}

fn on_event(swarm: &mut Swarm<Behaviour>, state: &mut State, event: SwarmEvent<BehaviourEvent>) {
    match event {
        SwarmEvent::NewListenAddr { address, .. } => {
            tracing::info!(event = "mesh.listening", address = %address, "mesh listening");
        }
        SwarmEvent::ConnectionEstablished {
            peer_id,
            endpoint,
            established_in,
            num_established,
            ..
        } => {
            let seen = state.seen.entry(peer_id).or_default();
            if seen.held_off {
                // An operator disconnected it: its own redials are refused too.
                let _ = swarm.disconnect_peer_id(peer_id);
                return;
            }
            seen.connected(now_ms());
            let known_caps = seen.caps.clone();
            tracing::info!(event = "mesh.peer_connected", peer = %peer_id,
                address = %endpoint.get_remote_address(), established_ms = established_in.as_millis() as u64,
                "peer connected");
            state.finish_dials(peer_id, Ok(()));
            // Each side announces itself once per session; the answer is the peer's.
            if num_established.get() == 1 {
                if let Some(caps) = known_caps {
                    state.set_directory(peer_id, Some(caps));
                }
                let request = MeshRequest::Caps(state.caps.clone());
                send_request(swarm, state, peer_id, request, Pending::Announce);
            }
        }
        SwarmEvent::ConnectionClosed {
            peer_id,
            num_established,
            cause,
            ..
        } => {
            if let Some(seen) = state.seen.get_mut(&peer_id) {
                seen.disconnected(num_established, now_ms());
            }
            if num_established == 0 {
                state.set_directory(peer_id, None);
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
            if let Some(peer) = peer_id
                && !swarm.is_connected(&peer)
            {
                state.finish_dials(peer, Err(format!("could not connect to {peer}: {error}")));
            }
        }
        SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
            peer_id,
            info,
            ..
        })) => {
            let seen = state.seen.entry(peer_id).or_default();
            seen.agent_version = Some(info.agent_version.chars().take(128).collect());
            let allowed = state.roles.contains_key(&peer_id);
            for addr in info.listen_addrs.into_iter().take(MAX_ADDRESSES) {
                seen.add_address(&addr);
                if allowed {
                    swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer_id, addr.clone());
                }
                swarm.add_peer_address(peer_id, addr);
            }
            if allowed && !state.looked_up {
                // The first peer we can route through: find the rest now.
                state.looked_up = true;
                look_up_peers(swarm);
            }
        }
        SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event {
            peer,
            result: Ok(rtt),
            ..
        })) => {
            let seen = state.seen.entry(peer).or_default();
            let now = now_ms();
            seen.record_ping(now, rtt);
            seen.last_seen_ms = Some(now);
        }
        SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
            for (peer, addr) in found {
                if state.roles.contains_key(&peer) {
                    state.seen.entry(peer).or_default().add_address(&addr);
                    if !swarm.is_connected(&peer) {
                        swarm.add_peer_address(peer, addr.clone());
                        dial_known(swarm, state, peer);
                    }
                } else if state.unlisted.len() < MAX_UNLISTED || state.unlisted.contains_key(&peer)
                {
                    let addresses = state.unlisted.entry(peer).or_default();
                    if !addresses.contains(&addr) && addresses.len() < MAX_ADDRESSES {
                        addresses.push(addr);
                    }
                }
            }
        }
        SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
            result: kad::QueryResult::GetClosestPeers(Ok(found)),
            ..
        })) => {
            // Allowed peers the mesh knows and we are not connected to: remember
            // where they are; the redial loop connects. Others are ignored.
            for info in found.peers {
                if state.roles.contains_key(&info.peer_id) && info.peer_id != *swarm.local_peer_id()
                {
                    let seen = state.seen.entry(info.peer_id).or_default();
                    for addr in info.addrs.iter().take(MAX_ADDRESSES) {
                        seen.add_address(addr);
                    }
                    dial_known(swarm, state, info.peer_id);
                }
            }
        }
        SwarmEvent::Behaviour(BehaviourEvent::Queue(event)) => on_queue_event(state, event),
        _ => {}
    }
}

fn on_queue_event(state: &mut State, event: request_response::Event<MeshRequest, MeshResponse>) {
    use request_response::{Event, Message};
    match event {
        Event::Message {
            peer,
            message: Message::Request {
                request, channel, ..
            },
            ..
        } => {
            let seen = state.seen.entry(peer).or_default();
            seen.requests_received += 1;
            seen.bytes_received += json_len(&request);
            seen.last_seen_ms = Some(now_ms());
            let commands = state.handle.commands.clone();
            match request {
                // Announcements and hints need no role: any listed peer may
                // say what it hosts, and a hint only makes us ask sooner.
                MeshRequest::Caps(caps) => {
                    let connected = seen.connections > 0;
                    state.received_caps(peer, caps, connected);
                    let response = MeshResponse::Caps(state.caps.clone());
                    count_request(&peer.to_string(), "caps");
                    respond_later(commands, peer, channel, response);
                }
                MeshRequest::Ready { tools } => {
                    if tools.len() <= MAX_READY_TOOLS {
                        state.handle.ready_hint(peer).notify_one();
                    }
                    count_request(&peer.to_string(), "hint");
                    respond_later(commands, peer, channel, MeshResponse::Ack);
                }
                MeshRequest::Submit(submission) => {
                    let roles = state.roles.get(&peer).cloned().unwrap_or_default();
                    let store = state.owner.store().clone();
                    answer_later(commands, peer, channel, async move {
                        tokio::task::spawn_blocking(move || {
                            accept_submission(&store, peer, &roles, submission)
                        })
                        .await
                        .unwrap_or_else(|e| MeshResponse::Refused {
                            error: format!("the submission failed: {e}"),
                        })
                    });
                }
                MeshRequest::Queue(request) => {
                    let roles = state.roles.get(&peer).cloned().unwrap_or_default();
                    let owner = state.owner.clone();
                    answer_later(commands, peer, channel, async move {
                        answer_waiting(owner, peer, roles, request).await
                    });
                }
            }
        }
        Event::Message {
            peer,
            message:
                Message::Response {
                    request_id,
                    response,
                },
            ..
        } => {
            let seen = state.seen.entry(peer).or_default();
            seen.bytes_received += json_len(&response);
            seen.last_seen_ms = Some(now_ms());
            let connected = seen.connections > 0;
            match state.pending.remove(&request_id) {
                Some((_, Pending::Reply(reply))) => {
                    let _ = reply.send(Ok(response));
                }
                Some((_, Pending::Announce)) => {
                    if let MeshResponse::Caps(caps) = response {
                        state.received_caps(peer, caps, connected);
                    }
                }
                Some((_, Pending::Hint)) | None => {}
            }
        }
        Event::OutboundFailure {
            request_id,
            error,
            peer,
            ..
        } => {
            state.seen.entry(peer).or_default().requests_failed += 1;
            if let Some((_, Pending::Reply(reply))) = state.pending.remove(&request_id) {
                let _ = reply.send(Err(format!("request to {peer} failed: {error}")));
            }
        }
        Event::InboundFailure { peer, error, .. } => {
            tracing::debug!(event = "mesh.inbound_failed", peer = %peer, error = %error, "an answer was not delivered");
        }
        Event::ResponseSent { .. } => {}
    }
}

/// Work out an answer off the swarm task, then hand it back to be sent.
fn answer_later(
    commands: mpsc::Sender<Command>,
    peer: PeerId,
    channel: ResponseChannel<MeshResponse>,
    answer: impl std::future::Future<Output = MeshResponse> + Send + 'static,
) {
    tokio::spawn(async move {
        let response = answer.await;
        let _ = commands
            .send(Command::Respond {
                peer,
                channel,
                response,
            })
            .await;
    });
}

/// Answer through the swarm task (the channel belongs to it).
fn respond_later(
    commands: mpsc::Sender<Command>,
    peer: PeerId,
    channel: ResponseChannel<MeshResponse>,
    response: MeshResponse,
) {
    if let Err(mpsc::error::TrySendError::Full(command)) = commands.try_send(Command::Respond {
        peer,
        channel,
        response,
    }) {
        tokio::spawn(async move {
            let _ = commands.send(command).await;
        });
    }
}

/// The size of a message as JSON (what the codec writes).
fn json_len<T: serde::Serialize>(message: &T) -> u64 {
    serde_json::to_vec(message).map_or(0, |v| v.len() as u64)
}

/// Answer one request; a claim that finds nothing waits (up to the owner's
/// claim hold) for a task to become ready, so a remote worker picks up new
/// work at once instead of at its next poll.
async fn answer_waiting(
    owner: Arc<RemoteOwner>,
    peer: PeerId,
    roles: Vec<PeerRole>,
    request: OwnerRequest,
) -> MeshResponse {
    let deadline = tokio::time::Instant::now() + owner.claim_hold();
    let holds = matches!(&request, OwnerRequest::Claim { .. });
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

/// A peer's task for this node's queue, if its roles here include `submit`.
fn accept_submission(
    store: &mcpplus_queue::QueueStore,
    peer: PeerId,
    roles: &[PeerRole],
    submission: Submission,
) -> MeshResponse {
    let peer = peer.to_string();
    if !roles.contains(&PeerRole::Submit) {
        count_request(&peer, "denied");
        tracing::warn!(event = "mesh.request_refused", peer = %peer, request = "submit",
            "a peer without the submit role tried to submit a task");
        return MeshResponse::Denied {
            error: format!(
                "peer {peer} may not submit tasks to this node; its operator must add \"submit\" to roles under [mesh.peers.\"{peer}\"]"
            ),
        };
    }
    let mut new = mcpplus_queue::NewTask::new(submission.tool, submission.arguments);
    new.priority = submission.priority;
    new.tags = submission.tags;
    new.timeout_ms = submission.timeout_ms;
    new.max_attempts = submission.max_attempts;
    // Keys are the peer's own: two peers can never collide on one.
    new.idempotency_key = submission
        .idempotency_key
        .map(|key| format!("peer:{peer}:{key}"));
    new.metadata = serde_json::json!({"origin": "peer", "submitted_by": peer});
    match store.submit(new, now_ms()) {
        Ok((task, new)) => {
            count_request(&peer, "submitted");
            if new {
                mcpplus_telemetry::metrics::metrics()
                    .queue_submitted
                    .get_or_create(&vec![("origin", "peer".to_string())])
                    .inc();
                tracing::info!(event = "queue.task_submitted", task = %task.id, tool = %task.tool,
                    peer = %peer, "a peer submitted a task");
            }
            MeshResponse::Submitted {
                id: task.id,
                state: task.state,
                new,
            }
        }
        Err(e) => {
            count_request(&peer, "refused");
            MeshResponse::Refused {
                error: e.to_string(),
            }
        }
    }
}

/// Answer one request of `peer`, re-checking its roles (the allow-list
/// refuses connections only after the handshake).
fn answer(
    owner: &RemoteOwner,
    peer: PeerId,
    roles: &[PeerRole],
    request: OwnerRequest,
) -> MeshResponse {
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
        OwnerResponse::Progressed { .. } => "progress",
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
