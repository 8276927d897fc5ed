//! The WebAssembly side: one wasmtime `Engine`, compiled components (with an on-disk
//! precompile cache), per-call execution in a fresh `Store` under limits, the
//! host capabilities guests import (files, sockets, outbound HTTP, logging,
//! progress, the task queue, peers, workflows), and `invoke`, which turns JSON
//! arguments into a call and its result back into a protocol-neutral outcome.
//!
//! Owns: everything that touches wasmtime at run time. Must not depend on the
//! MCP server (`mcpplus`): no rmcp types, no catalog, no transports. It uses
//! the lower crates — `mcpplus-policy` for grants and limits, `mcpplus-schema`
//! for values, `mcpplus-queue` for the `mcpplus:host/queue` interface,
//! `mcpplus-workflow` for `mcpplus:host/workflow`, `mcpplus-breaker` and
//! `mcpplus-telemetry`.

pub mod admission;
pub mod cache;
pub mod call;
pub mod capabilities;
pub mod engine;
pub mod host_state;
pub mod invoke;
pub mod loaded;
pub mod observer;
pub mod outbound;
pub mod output;
pub mod served;
pub mod tracker;

pub use call::CallError;
pub use engine::Runtime;
pub use loaded::{LoadError, LoadedComponent};
