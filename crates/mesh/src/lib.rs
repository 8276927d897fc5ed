//! The P2P mesh (docs/mesh.md): mcpplus nodes connect over libp2p (TCP +
//! Noise + Yamux), only to the peers an operator listed, and share their task
//! queues. A task stays in the queue of the node that accepted it; idle slots
//! on other nodes pull it (`mcpplus_queue::pull`), the owner answers from its
//! store (`mcpplus_queue::remote`). This crate is only the transport and the
//! drivers: `node` owns the libp2p swarm, `driver` runs one pulling loop per
//! peer, `identity` keeps this node's key.
//!
//! Owns: libp2p. Must not depend on the WebAssembly runtime or the server;
//! running a task is the `TaskRunner` it is given.

pub mod driver;
pub mod identity;
pub mod node;
pub mod protocol;
pub mod psk;
pub mod stats;
