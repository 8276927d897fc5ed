//! mcpplus: serve sandboxed WebAssembly components (wasm32-wasip2) as MCP tools.
//!
//! The way of one call: `mcp` (protocol) → `catalog` (name → component) →
//! `invoke` (JSON ⇄ values via `schema`) → `runtime` (fresh Store, limits) → back.

pub mod admin;
pub mod breaker;
pub mod capabilities;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod content;
pub mod invoke;
pub mod mcp;
pub mod outbound;
pub mod policy;
pub mod queue;
pub mod runtime;
pub mod schema;
pub mod telemetry;
pub mod toolset;
