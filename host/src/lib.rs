//! mcpplus: serve sandboxed WebAssembly components (wasm32-wasip2) as MCP tools.
//!
//! This crate is the server: the catalog of served tools, changing it while
//! serving (`toolset`), the MCP adapter and MCP tasks (`mcp`), the admin socket,
//! the queue's task runner (`runner`) and the command line. It wires the lower
//! crates together and nothing depends on it but the tests and the bench.
//!
//! The way of one call: `mcp` (protocol) → `catalog` (name → component) →
//! `mcpplus_runtime::invoke` (JSON ⇄ values via `mcpplus_schema`) →
//! `mcpplus_runtime` (fresh Store, limits) → back. docs/architecture.md draws
//! the crates and what each owns.

pub mod admin;
pub mod catalog;
pub mod cli;
pub mod mcp;
pub mod mesh;
pub mod peer_network;
pub mod runner;
pub mod toolset;
pub mod workflow_templates;
