//! Built-in diagnostic tools that the official MCP conformance suite calls
//! (`serve --conformance-fixtures`): they probe host behaviour no guest can
//! show, so they are host code, and off unless asked for.
//!
//! - `test_missing_capability` needs the client capability `sampling`; called
//!   without it, the answer is error -32021 naming it (HTTP 400).
//! - `test_trigger_tool_change` adds or removes `test_dynamic_tool`, so every
//!   client watching the tool list is told it changed.
//! - `test_trigger_prompt_change` adds or removes the prompt
//!   `test_dynamic_prompt`, so every client watching the prompt list is told.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rmcp::ErrorData as McpError;
use rmcp::model::{CallToolResult, ClientCapabilities, ContentBlock, Tool};
use serde_json::json;

use crate::catalog::LiveCatalog;

pub const MISSING_CAPABILITY: &str = "test_missing_capability";
pub const TRIGGER_TOOL_CHANGE: &str = "test_trigger_tool_change";
pub const DYNAMIC_TOOL: &str = "test_dynamic_tool";
pub const TRIGGER_PROMPT_CHANGE: &str = "test_trigger_prompt_change";
pub const DYNAMIC_PROMPT: &str = "test_dynamic_prompt";

pub struct Diagnostics {
    catalog: Arc<LiveCatalog>,
    /// Whether `test_dynamic_tool` is listed; each trigger flips it.
    dynamic_listed: AtomicBool,
    /// Whether `test_dynamic_prompt` is listed; each prompt trigger flips it.
    dynamic_prompt_listed: AtomicBool,
}

impl Diagnostics {
    pub fn new(catalog: Arc<LiveCatalog>) -> Self {
        Self {
            catalog,
            dynamic_listed: AtomicBool::new(false),
            dynamic_prompt_listed: AtomicBool::new(false),
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
            tool(
                TRIGGER_PROMPT_CHANGE,
                "Conformance diagnostic: adds or removes the prompt `test_dynamic_prompt`, so clients are told the prompt list changed",
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
            TRIGGER_PROMPT_CHANGE => {
                let listed = !self.dynamic_prompt_listed.fetch_xor(true, Ordering::AcqRel);
                self.catalog.announce_prompt_change();
                Ok(text(if listed {
                    "test_dynamic_prompt added"
                } else {
                    "test_dynamic_prompt removed"
                }))
            }
            _ => Ok(text("a diagnostic tool that does nothing")),
        }
    }
}

impl Diagnostics {
    /// The diagnostic prompts listed now (MCP `Prompt` objects).
    pub fn prompts(&self) -> Vec<serde_json::Value> {
        if self.dynamic_prompt_listed.load(Ordering::Acquire) {
            vec![json!({
                "name": DYNAMIC_PROMPT,
                "description": "Conformance diagnostic: listed after every other prompt trigger",
            })]
        } else {
            Vec::new()
        }
    }

    /// The result of getting a diagnostic prompt, if `name` is one listed now.
    pub fn get_prompt(&self, name: &str) -> Option<serde_json::Value> {
        self.prompts().iter().any(|p| p["name"] == name).then(|| {
            json!({"messages": [{"role": "user", "content": {"type": "text", "text": "A dynamic prompt."}}]})
        })
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
