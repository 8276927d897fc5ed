//! The MCP protocol adapter: rmcp's `ServerHandler` over the live catalog, and the
//! stdio and Streamable HTTP transports. rmcp types stop at this module's edge.

pub mod auth;
mod client;
pub mod diagnostics;
pub mod federation;
mod handler;
mod sessions;
mod tasks;
mod tool_cache;
mod transport;
mod wire_errors;

pub use client::TaskLink;
pub use handler::McpServer;
pub use transport::{HttpOptions, serve_http, serve_lines, serve_metrics, serve_stdio};
