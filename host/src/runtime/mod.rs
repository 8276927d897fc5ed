//! The WebAssembly side: one wasmtime `Engine`, compiled components (with an on-disk
//! precompile cache), and per-call execution in a fresh `Store` under limits.
//! Nothing here knows about MCP.

pub mod admission;
pub mod cache;
pub mod call;
pub mod engine;
pub mod host_state;
pub mod loaded;
pub mod observer;
pub mod output;
pub mod tracker;

pub use crate::config::CallLimits;
pub use call::CallError;
pub use engine::Runtime;
pub use loaded::{LoadError, LoadedComponent};
