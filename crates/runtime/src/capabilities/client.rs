//! `mcpplus:host/client`: a guest asks the MCP client that made its call —
//! the user (`elicitation/create`), the client's model
//! (`sampling/createMessage`), its roots (`roots/list`). Deny by default:
//! each method needs its `[client]` grant, and a refusal is an audit event
//! and an `ask-error.failed` naming the grant to add.
//!
//! The runtime checks the grants and the bounds (asks per run, key and
//! sizes); what asking means is the server's [`ClientLink`], which keeps the
//! MCP types out of this crate: a real request to a 2025-11-25 client, or one
//! more `input_required` round for a 2026-07-28 client (the link then answers
//! `pending`). A call no MCP client made (a queue task, a workflow step,
//! `mcpplus call`) has no link, so there is no one to ask.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;

use serde_json::Value;

pub use super::bindings::client::AskError;
use super::bindings::client::Host;
use crate::host_state::HostState;
use mcpplus_policy::ClientGrants;
use mcpplus_policy::imports::Capability;

/// Asks one run of a tool may make.
pub const MAX_ASKS_PER_CALL: usize = 16;
/// The largest `params` of one ask, in bytes of JSON.
pub const MAX_PARAMS_BYTES: usize = 64 * 1024;
/// The largest state `remember` keeps, in bytes.
pub const MAX_STATE_BYTES: usize = 16 * 1024;
/// The longest key, in characters.
pub const MAX_KEY_CHARS: usize = 128;

/// What `ask` says when the call has no client.
const NO_CLIENT: &str = "no MCP client to ask: this call was not made by an MCP client (it runs as a queue task, a workflow step or `mcpplus call`)";

/// A request a guest may send the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientMethod {
    /// `elicitation/create`: ask the user.
    Elicit,
    /// `sampling/createMessage`: the client's model.
    Sample,
    /// `roots/list`: the client's roots.
    Roots,
}

impl ClientMethod {
    pub const ALL: [ClientMethod; 3] = [Self::Elicit, Self::Sample, Self::Roots];

    pub fn parse(method: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == method)
    }

    /// The MCP method name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Elicit => "elicitation/create",
            Self::Sample => "sampling/createMessage",
            Self::Roots => "roots/list",
        }
    }

    /// The client capability it needs (`ClientCapabilities` field).
    pub fn capability(self) -> &'static str {
        match self {
            Self::Elicit => "elicitation",
            Self::Sample => "sampling",
            Self::Roots => "roots",
        }
    }

    /// Whether `grants` allow it.
    pub fn granted_by(self, grants: ClientGrants) -> bool {
        match self {
            Self::Elicit => grants.elicit,
            Self::Sample => grants.sample,
            Self::Roots => grants.roots,
        }
    }

    /// The policy line that grants it.
    pub fn grant(self) -> &'static str {
        match self {
            Self::Elicit => "[client] elicit = true",
            Self::Sample => "[client] sample = true",
            Self::Roots => "[client] roots = true",
        }
    }
}

/// An answer on its way: the client's result (as JSON) or why there is none.
pub type AskFuture<'a> = Pin<Box<dyn Future<Output = Result<Value, AskError>> + Send + 'a>>;

/// The MCP client that made a call, as a guest may reach it. Implemented by
/// the server over its protocol library, per call.
pub trait ClientLink: Send + Sync + std::fmt::Debug {
    /// Send `method` with `params` (a JSON object, checked by the runtime to
    /// be one) under `key`, unique within this run of the tool.
    fn ask(&self, key: &str, method: ClientMethod, params: Value) -> AskFuture<'_>;
    /// The state kept by the previous round of this call (already verified).
    fn state(&self) -> Option<String>;
    /// Keep `state` for the next round (at most [`MAX_STATE_BYTES`]).
    fn remember(&self, state: String);
}

/// What one run has asked so far.
#[derive(Debug, Default)]
pub struct Asked {
    count: usize,
    keys: HashSet<String>,
}

impl HostState {
    /// The checked request: which method, its params, and the client to ask;
    /// or why it may not be asked.
    fn checked_ask(
        &mut self,
        key: &str,
        method: &str,
        params: &str,
    ) -> Result<(ClientMethod, Value, std::sync::Arc<dyn ClientLink>), AskError> {
        let asked = self.client_asked();
        asked.count += 1;
        if asked.count > MAX_ASKS_PER_CALL {
            return Err(AskError::Failed(format!(
                "a tool may ask the client at most {MAX_ASKS_PER_CALL} times in one run; ask for more at once (one elicitation can have several fields)"
            )));
        }
        let chars = key.chars().count();
        if chars == 0 || chars > MAX_KEY_CHARS {
            return Err(AskError::Failed(format!(
                "the key must be 1 to {MAX_KEY_CHARS} characters, not {chars}"
            )));
        }
        if asked.keys.contains(key) {
            return Err(AskError::Failed(format!(
                "the key `{key}` was already asked in this run; give each request its own key"
            )));
        }
        let Some(method) = ClientMethod::parse(method) else {
            return Err(AskError::Failed(format!(
                "unknown method `{}`: ask `elicitation/create`, `sampling/createMessage` or `roots/list`",
                method.chars().take(64).collect::<String>()
            )));
        };
        if !method.granted_by(self.client_grants()) {
            return Err(AskError::Failed(self.call().refuse_function(
                Capability::Client,
                "mcpplus:host/client",
                &format!("ask({})", method.as_str()),
                method.grant(),
            )));
        }
        if params.len() > MAX_PARAMS_BYTES {
            return Err(AskError::Failed(format!(
                "params are {} bytes, over the limit of {MAX_PARAMS_BYTES} bytes",
                params.len()
            )));
        }
        let params: Value = match serde_json::from_str(params) {
            Ok(Value::Null) => Value::Object(Default::default()),
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => {
                return Err(AskError::Failed(format!(
                    "params of {} must be a JSON object",
                    method.as_str()
                )));
            }
            Err(e) => {
                return Err(AskError::Failed(format!("params are not valid JSON: {e}")));
            }
        };
        let Some(link) = self.client_link().cloned() else {
            return Err(AskError::Failed(NO_CLIENT.into()));
        };
        self.client_asked().keys.insert(key.to_string());
        Ok((method, params, link))
    }
}

impl Host for HostState {
    async fn ask(
        &mut self,
        key: String,
        method: String,
        params: String,
    ) -> Result<String, AskError> {
        let (method, params, link) = self.checked_ask(&key, &method, &params)?;
        tracing::debug!(event = "client.ask", key = %key, method = method.as_str(), "asking the client");
        let answer = link.ask(&key, method, params).await;
        match &answer {
            Ok(_) => tracing::debug!(event = "client.answered", key = %key, "the client answered"),
            Err(e) => {
                tracing::debug!(event = "client.unanswered", key = %key, error = ?e, "no answer")
            }
        }
        answer.map(|v| v.to_string())
    }

    async fn state(&mut self) -> Option<String> {
        self.client_link().and_then(|link| link.state())
    }

    async fn remember(&mut self, state: String) -> Result<(), String> {
        if state.len() > MAX_STATE_BYTES {
            return Err(format!(
                "the state is {} bytes, over the limit of {MAX_STATE_BYTES} bytes; keep less (the client carries it)",
                state.len()
            ));
        }
        if let Some(link) = self.client_link() {
            link.remember(state);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_parse_by_their_mcp_names_and_need_their_own_grant() {
        for m in ClientMethod::ALL {
            assert_eq!(ClientMethod::parse(m.as_str()), Some(m));
        }
        assert_eq!(ClientMethod::parse("ping"), None);
        let elicit = ClientGrants {
            elicit: true,
            ..Default::default()
        };
        assert!(ClientMethod::Elicit.granted_by(elicit));
        assert!(!ClientMethod::Sample.granted_by(elicit));
        assert!(!ClientMethod::Roots.granted_by(elicit));
        assert_eq!(ClientMethod::Sample.grant(), "[client] sample = true");
    }
}
