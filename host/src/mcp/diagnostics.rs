//! Built-in diagnostic tools that the official MCP conformance suite calls
//! (`serve --conformance-fixtures`): they probe host behaviour no guest can
//! show, so they are host code, and off unless asked for.
//!
//! - `test_missing_capability` needs the client capability `sampling`; called
//!   without it, the answer is error -32021 naming it (HTTP 400).
//! - `test_trigger_tool_change` adds or removes `test_dynamic_tool`, so every
//!   client watching the tool list is told it changed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rmcp::ErrorData as McpError;
use rmcp::model::{CallToolResult, ClientCapabilities, ContentBlock, Tool};
use serde_json::json;

use crate::catalog::LiveCatalog;

pub const MISSING_CAPABILITY: &str = "test_missing_capability";
pub const TRIGGER_TOOL_CHANGE: &str = "test_trigger_tool_change";
pub const DYNAMIC_TOOL: &str = "test_dynamic_tool";

pub struct Diagnostics {
    catalog: Arc<LiveCatalog>,
    /// Whether `test_dynamic_tool` is listed; each trigger flips it.
    dynamic_listed: AtomicBool,
}

impl Diagnostics {
    pub fn new(catalog: Arc<LiveCatalog>) -> Self {
        Self {
            catalog,
            dynamic_listed: AtomicBool::new(false),
        }
    }

    pub fn tools(&self) -> Vec<Tool> {
        let mut tools = vec![
            tool(
                MISSING_CAPABILITY,
                "Conformance diagnostic: needs the client capability `sampling`; without it the call fails with -32021",
            ),
            tool(
                TRIGGER_TOOL_CHANGE,
                "Conformance diagnostic: adds or removes `test_dynamic_tool`, so clients are told the tool list changed",
            ),
        ];
        if self.dynamic_listed.load(Ordering::Acquire) {
            tools.push(tool(
                DYNAMIC_TOOL,
                "Conformance diagnostic: listed after every other trigger",
            ));
        }
        tools
    }

    pub fn serves(&self, name: &str) -> bool {
        self.tools().iter().any(|t| t.name == name)
    }

    /// Answer a call of one of [`Diagnostics::tools`].
    pub fn call(
        &self,
        name: &str,
        client: Option<&ClientCapabilities>,
    ) -> Result<CallToolResult, McpError> {
        match name {
            MISSING_CAPABILITY => match client.and_then(|c| c.sampling.as_ref()) {
                Some(_) => Ok(text("the client declared `sampling`")),
                None => Err(McpError::missing_required_client_capability(
                    serde_json::from_value(json!({"sampling": {}}))
                        .expect("a sampling capability object"),
                )),
            },
            TRIGGER_TOOL_CHANGE => {
                let listed = !self.dynamic_listed.fetch_xor(true, Ordering::AcqRel);
                self.catalog.announce_change();
                Ok(text(if listed {
                    "test_dynamic_tool added"
                } else {
                    "test_dynamic_tool removed"
                }))
            }
            _ => Ok(text("a diagnostic tool that does nothing")),
        }
    }
}

fn tool(name: &str, description: &str) -> Tool {
    serde_json::from_value(json!({
        "name": name,
        "description": description,
        "inputSchema": {"type": "object", "properties": {}, "additionalProperties": false},
    }))
    .expect("a valid tool")
}

fn text(message: &str) -> CallToolResult {
    CallToolResult::success(vec![ContentBlock::text(message)])
}
