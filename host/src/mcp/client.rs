//! The MCP client that made a call (`tools/call` or `prompts/get`), as a guest
//! reaches it through `mcpplus:host/client` (the runtime's [`ClientLink`]), in
//! both eras:
//!
//! - **2025-11-25** (stdio, HTTP sessions): each `ask` is a real server→client
//!   request through the session's `Peer`; the guest waits for the answer.
//!   If the call ends first (cancelled, timed out), the client is told with
//!   `notifications/cancelled`.
//! - **2026-07-28** (stateless): multi-round-trip results (SEP-2322). An
//!   `ask` whose key the request's `inputResponses` answers gets that answer
//!   (checked to be a result of its method); any other is recorded and
//!   answered `pending`. When the guest returns with requests pending, the
//!   call (or prompt) answers `input_required` with all of them, and with a
//!   `requestState` if the guest kept one (`remember`).
//!
//! Either way a request needs the client capability its method needs
//! (`elicitation`, `sampling`, `roots`), else the guest gets `not-supported`.
//!
//! `requestState` is signed here (HMAC-SHA256 with a key drawn at start-up,
//! rmcp's `RequestStateCodec`), bound to the tool or prompt (each in its own
//! domain: a tool's state is no prompt's) and the requester, and verified
//! before the guest runs: a changed, foreign or stale (from before a restart)
//! state fails the request with -32602.

// Sampling and roots are deprecated by SEP-2577 in rmcp, but 2025-11-25
// clients and multi-round-trip results still use them.
#![allow(deprecated)]

use std::sync::{Arc, Mutex, OnceLock};

use rmcp::model::{
    CallToolRequestParams, CancelledNotificationParam, ClientCapabilities, CreateMessageRequest,
    CreateMessageRequestParams, CreateMessageResult, ElicitRequest, ElicitRequestParams,
    ElicitResult, GetPromptRequestParams, InputRequest, InputRequests, InputRequiredResult,
    InputResponses, ListRootsRequest, ListRootsResult, ProtocolVersion, RequestStateCodec,
    SealOptions, ServerRequest,
};
use rmcp::service::{PeerRequestOptions, RequestContext, ServiceError};
use rmcp::{ErrorData as McpError, Peer, RoleServer};
use serde_json::{Value, json};

use mcpplus_runtime::capabilities::client::{AskError, AskFuture, ClientLink, ClientMethod};

/// The MCP client of one call.
#[derive(Debug)]
pub(super) struct CallerLink {
    /// What the client declared (its `initialize`, or the request's `_meta`).
    capabilities: Option<ClientCapabilities>,
    era: Era,
}

#[derive(Debug)]
enum Era {
    /// A 2025-11-25 session: real requests.
    Session(Peer<RoleServer>),
    /// A 2026-07-28 request: answers come with the request, questions go out
    /// in the result.
    Rounds(Rounds),
}

#[derive(Debug)]
struct Rounds {
    /// The client's answers to the previous round (`inputResponses`).
    answers: InputResponses,
    /// The verified state of the previous round.
    state: Option<String>,
    /// What a state of this call is bound to (tool or prompt, and requester).
    binding: Vec<u8>,
    out: Mutex<RoundOut>,
}

#[derive(Debug, Default)]
struct RoundOut {
    /// Requests for the next round.
    pending: InputRequests,
    /// What the guest kept for the next round.
    state: Option<String>,
    /// Answers that are not a result of their request's method.
    invalid: Vec<String>,
}

/// What asks the client: a tool being called or a prompt being rendered.
/// Each binds its `requestState` in its own domain.
#[derive(Debug, Clone, Copy)]
pub(super) enum Asker<'a> {
    Tool(&'a str),
    Prompt(&'a str),
}

impl CallerLink {
    /// The client of a call of a tool by `requester`. For a 2026-07-28 request
    /// that echoes a `requestState`, the state is verified first: one this
    /// server did not sign for this tool and requester is -32602.
    pub(super) fn for_call(
        request: &CallToolRequestParams,
        context: &RequestContext<RoleServer>,
        requester: &str,
    ) -> Result<Arc<Self>, McpError> {
        Self::new(
            Asker::Tool(&request.name),
            request.input_responses.as_ref(),
            request.request_state.as_deref(),
            context,
            requester,
        )
    }

    /// The client of a `prompts/get` of a prompt by `requester`; its state is
    /// verified as a tool call's is, bound to the prompt.
    pub(super) fn for_prompt(
        request: &GetPromptRequestParams,
        context: &RequestContext<RoleServer>,
        requester: &str,
    ) -> Result<Arc<Self>, McpError> {
        Self::new(
            Asker::Prompt(&request.name),
            request.input_responses.as_ref(),
            request.request_state.as_deref(),
            context,
            requester,
        )
    }

    fn new(
        asker: Asker<'_>,
        input_responses: Option<&InputResponses>,
        request_state: Option<&str>,
        context: &RequestContext<RoleServer>,
        requester: &str,
    ) -> Result<Arc<Self>, McpError> {
        let capabilities = context.client_capabilities();
        let modern = context
            .protocol_version()
            .is_some_and(|v| v >= ProtocolVersion::V_2026_07_28);
        let era = if modern {
            let binding = binding(asker, requester);
            let state = match request_state {
                Some(sealed) => Some(open_state(sealed, &binding)?),
                None => None,
            };
            Era::Rounds(Rounds {
                answers: input_responses.cloned().unwrap_or_default(),
                state,
                binding,
                out: Mutex::default(),
            })
        } else {
            Era::Session(context.peer.clone())
        };
        Ok(Arc::new(Self { capabilities, era }))
    }

    /// What the call answers instead of the guest's result: `input_required`
    /// when the guest asked something still unanswered, an error when an
    /// answer the client sent is not a result of its request's method.
    pub(super) fn finish(&self) -> Result<Option<InputRequiredResult>, McpError> {
        let Era::Rounds(rounds) = &self.era else {
            return Ok(None);
        };
        let out = rounds.out.lock().unwrap_or_else(|e| e.into_inner());
        if !out.invalid.is_empty() {
            return Err(McpError::invalid_params(
                format!("invalid inputResponses: {}", out.invalid.join("; ")),
                None,
            ));
        }
        if out.pending.is_empty() {
            return Ok(None);
        }
        let state = out.state.as_deref().map(|s| seal_state(s, &rounds.binding));
        Ok(Some(InputRequiredResult::new(
            Some(out.pending.clone()),
            state,
        )))
    }

    fn declared(&self, method: ClientMethod, request: &InputRequest) -> Result<(), AskError> {
        declared(self.capabilities.as_ref(), method, request)
    }

    async fn ask_session(
        peer: &Peer<RoleServer>,
        method: ClientMethod,
        request: InputRequest,
    ) -> Result<Value, AskError> {
        let request = match request {
            InputRequest::CreateMessage(r) => ServerRequest::CreateMessageRequest(r),
            InputRequest::Elicitation(r) => ServerRequest::ElicitRequest(r),
            InputRequest::ListRoots(r) => ServerRequest::ListRootsRequest(r),
            _ => return Err(AskError::Failed("an unknown kind of request".into())),
        };
        let sent = peer
            .send_cancellable_request(request, PeerRequestOptions::no_options())
            .await
            .map_err(|e| AskError::Failed(format!("sending {} failed: {e}", method.as_str())))?;
        // Tell the client when the call stops waiting (cancelled, timed out).
        let mut outstanding = Outstanding {
            peer: peer.clone(),
            id: Some(sent.id.clone()),
        };
        let answer = sent.await_response().await;
        outstanding.id = None;
        match answer {
            Ok(result) => {
                let value = serde_json::to_value(result).map_err(|e| {
                    AskError::Failed(format!("the client's answer is not JSON: {e}"))
                })?;
                check_answer(method, &value).map_err(AskError::Failed)?;
                Ok(value)
            }
            Err(ServiceError::McpError(e)) => Err(AskError::Failed(format!(
                "the client answered {} with error {}: {}",
                method.as_str(),
                e.code.0,
                e.message
            ))),
            Err(e) => Err(AskError::Failed(format!(
                "{} got no answer: {e}",
                method.as_str()
            ))),
        }
    }
}

impl ClientLink for CallerLink {
    fn ask(&self, key: &str, method: ClientMethod, params: Value) -> AskFuture<'_> {
        let key = key.to_string();
        Box::pin(async move {
            let request = input_request(method, params).map_err(AskError::Failed)?;
            match &self.era {
                Era::Session(peer) => {
                    self.declared(method, &request)?;
                    Self::ask_session(peer, method, request).await
                }
                Era::Rounds(rounds) => {
                    if let Some(answer) = rounds.answers.get(&key) {
                        return match check_answer(method, answer) {
                            Ok(()) => Ok(answer.clone()),
                            Err(why) => {
                                // The call answers -32602 once the guest returns.
                                let mut out = rounds.out.lock().unwrap_or_else(|e| e.into_inner());
                                out.invalid.push(format!("`{key}`: {why}"));
                                Err(AskError::Pending)
                            }
                        };
                    }
                    self.declared(method, &request)?;
                    let mut out = rounds.out.lock().unwrap_or_else(|e| e.into_inner());
                    out.pending.insert(key, request);
                    Err(AskError::Pending)
                }
            }
        })
    }

    fn state(&self) -> Option<String> {
        match &self.era {
            Era::Rounds(rounds) => rounds.state.clone(),
            Era::Session(_) => None,
        }
    }

    fn remember(&self, state: String) {
        if let Era::Rounds(rounds) = &self.era {
            rounds.out.lock().unwrap_or_else(|e| e.into_inner()).state = Some(state);
        }
    }
}

/// The MCP client of a call that runs as an MCP task (docs/queue.md): the
/// client is not waiting on the call, so an `ask` works like a 2026-07-28
/// round. An ask whose key the task's stored answers (`tasks/update`) cover
/// gets that answer; any other is recorded and answered `pending`. When the
/// guest returns with requests pending, the attempt parks the task in
/// `waiting_input` with them, and `tasks/get` shows them as `inputRequests`.
#[derive(Debug)]
pub struct TaskLink {
    /// What the client that created the task declared.
    capabilities: Option<ClientCapabilities>,
    answers: InputResponses,
    pending: Mutex<InputRequests>,
}

impl TaskLink {
    /// The link of a task the MCP tasks surface created and this node runs;
    /// `None` for other tasks (`task_submit`, workflows, another node's), which
    /// have no client to ask.
    pub fn for_task(task: &mcpplus_queue::Task) -> Option<Arc<Self>> {
        if task.remote_peer.is_some() || task.metadata["origin"] != "mcp-task" {
            return None;
        }
        let capabilities =
            serde_json::from_value(task.metadata["client_capabilities"].clone()).ok();
        let answers = match &task.input_responses {
            Some(Value::Object(map)) => map.clone().into_iter().collect(),
            _ => InputResponses::new(),
        };
        Some(Arc::new(Self {
            capabilities,
            answers,
            pending: Mutex::default(),
        }))
    }

    /// The requests asked and not answered in this run (a JSON object by
    /// key), if any.
    pub fn pending(&self) -> Option<Value> {
        let pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.is_empty() {
            return None;
        }
        serde_json::to_value(&*pending).ok()
    }
}

impl ClientLink for TaskLink {
    fn ask(&self, key: &str, method: ClientMethod, params: Value) -> AskFuture<'_> {
        let key = key.to_string();
        Box::pin(async move {
            let request = input_request(method, params).map_err(AskError::Failed)?;
            if let Some(answer) = self.answers.get(&key) {
                check_answer(method, answer).map_err(|why| {
                    AskError::Failed(format!("the client's answer to `{key}`: {why}"))
                })?;
                return Ok(answer.clone());
            }
            declared(self.capabilities.as_ref(), method, &request)?;
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(key, request);
            Err(AskError::Pending)
        })
    }

    /// A task keeps no state between rounds: its answers are kept instead.
    fn state(&self) -> Option<String> {
        None
    }

    fn remember(&self, _state: String) {}
}

/// A request sent and not yet answered: dropping it unanswered tells the
/// client to stop (`notifications/cancelled`).
struct Outstanding {
    peer: Peer<RoleServer>,
    id: Option<rmcp::model::RequestId>,
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        let (Some(id), Ok(runtime)) = (self.id.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let peer = self.peer.clone();
        runtime.spawn(async move {
            let _ = peer
                .notify_cancelled(CancelledNotificationParam::new(
                    Some(id),
                    Some("the request that asked ended".into()),
                ))
                .await;
        });
    }
}

/// Whether the client declared what `request` needs, else `not-supported`.
fn declared(
    caps: Option<&ClientCapabilities>,
    method: ClientMethod,
    request: &InputRequest,
) -> Result<(), AskError> {
    let declared = match method {
        ClientMethod::Elicit => caps.and_then(|c| c.elicitation.as_ref()).is_some_and(|e| {
            // An empty `elicitation: {}` means forms only.
            match request {
                InputRequest::Elicitation(r) => match r.params {
                    ElicitRequestParams::UrlElicitationParams { .. } => e.url.is_some(),
                    _ => true,
                },
                _ => true,
            }
        }),
        ClientMethod::Sample => caps.and_then(|c| c.sampling.as_ref()).is_some(),
        ClientMethod::Roots => caps.and_then(|c| c.roots.as_ref()).is_some(),
    };
    if declared {
        Ok(())
    } else {
        Err(AskError::NotSupported(format!(
            "the client did not declare the `{}` capability{}, so it cannot answer {}",
            method.capability(),
            if method == ClientMethod::Elicit {
                " (for this mode)"
            } else {
                ""
            },
            method.as_str()
        )))
    }
}

/// `method` with the guest's `params`, as the typed MCP request.
fn input_request(method: ClientMethod, params: Value) -> Result<InputRequest, String> {
    let malformed = |e: serde_json::Error| format!("malformed params for {}: {e}", method.as_str());
    Ok(match method {
        ClientMethod::Elicit => {
            let params: ElicitRequestParams = serde_json::from_value(params).map_err(malformed)?;
            InputRequest::Elicitation(ElicitRequest::new(params))
        }
        ClientMethod::Sample => {
            let params: CreateMessageRequestParams =
                serde_json::from_value(params).map_err(malformed)?;
            params
                .validate()
                .map_err(|e| format!("invalid params for {}: {e}", method.as_str()))?;
            InputRequest::CreateMessage(CreateMessageRequest::new(params))
        }
        // `roots/list` takes no params beyond `_meta`.
        ClientMethod::Roots => InputRequest::ListRoots(ListRootsRequest::default()),
    })
}

/// Whether `answer` is a result of `method`.
fn check_answer(method: ClientMethod, answer: &Value) -> Result<(), String> {
    let checked = match method {
        ClientMethod::Elicit => serde_json::from_value::<ElicitResult>(answer.clone()).map(drop),
        ClientMethod::Sample => {
            serde_json::from_value::<CreateMessageResult>(answer.clone()).map(drop)
        }
        ClientMethod::Roots => serde_json::from_value::<ListRootsResult>(answer.clone()).map(drop),
    };
    checked.map_err(|e| format!("not a result of {}: {e}", method.as_str()))
}

/// What a state is bound to: this tool or prompt (each kind its own domain),
/// this requester.
fn binding(asker: Asker<'_>, requester: &str) -> Vec<u8> {
    let (domain, name) = match asker {
        Asker::Tool(name) => ("mcpplus:host/client tool state", name),
        Asker::Prompt(name) => ("mcpplus:host/client prompt state", name),
    };
    json!([domain, name, requester]).to_string().into_bytes()
}

/// The signing key of this process: 32 random bytes, drawn once.
fn codec() -> &'static RequestStateCodec {
    static CODEC: OnceLock<RequestStateCodec> = OnceLock::new();
    CODEC.get_or_init(|| {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).expect("the operating system's random number generator");
        RequestStateCodec::try_new(key.to_vec()).expect("a 32-byte key is long enough")
    })
}

/// `state`, signed for the client to carry.
fn seal_state(state: &str, binding: &[u8]) -> String {
    codec().seal_with(
        state.as_bytes(),
        &SealOptions::new().associated_data(binding),
    )
}

/// The state in `sealed`, if this process signed it with this `binding`.
fn open_state(sealed: &str, binding: &[u8]) -> Result<String, McpError> {
    let refused = || {
        McpError::invalid_params(
            "invalid requestState: it fails its integrity check (changed, made for another tool, prompt or client, or from before this server restarted); send the request again without requestState and inputResponses",
            None,
        )
    };
    let bytes = codec()
        .open_with(sealed, binding)
        .map_err(|e| {
            tracing::info!(event = "client.state_refused", error = %e, "a requestState failed verification");
            refused()
        })?;
    String::from_utf8(bytes).map_err(|_| refused())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The answers of a round, as the client sends them.
    fn answers(pairs: &[(&str, Value)]) -> InputResponses {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn rounds(answers: InputResponses, capabilities: Value) -> CallerLink {
        CallerLink {
            capabilities: Some(serde_json::from_value(capabilities).unwrap()),
            era: Era::Rounds(Rounds {
                answers,
                state: None,
                binding: binding(Asker::Tool("tool"), "stdio"),
                out: Mutex::default(),
            }),
        }
    }

    fn elicit() -> Value {
        json!({"message": "name?", "requestedSchema": {"type": "object",
            "properties": {"name": {"type": "string"}}, "required": ["name"]}})
    }

    #[test]
    fn a_state_opens_only_unchanged_and_for_its_own_tool_or_prompt_and_requester() {
        let here = binding(Asker::Tool("greet"), "stdio");
        let sealed = seal_state("round-2:Ada", &here);
        assert!(!sealed.contains("round-2"), "encoded, not plain: {sealed}");
        assert_eq!(open_state(&sealed, &here).unwrap(), "round-2:Ada");
        // Changed anywhere: refused, as invalid params.
        let tampered = format!("{sealed}-TAMPERED");
        let err = open_state(&tampered, &here).unwrap_err();
        assert_eq!(err.code.0, -32602);
        assert!(err.message.contains("requestState"), "{}", err.message);
        let mut flipped = sealed.clone().into_bytes();
        let last = flipped.len() - 1;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        assert!(open_state(&String::from_utf8(flipped).unwrap(), &here).is_err());
        // Replayed against another tool, a prompt of the same name or by
        // another requester: refused.
        assert!(open_state(&sealed, &binding(Asker::Tool("other"), "stdio")).is_err());
        assert!(open_state(&sealed, &binding(Asker::Prompt("greet"), "stdio")).is_err());
        assert!(open_state(&sealed, &binding(Asker::Tool("greet"), "session:x")).is_err());
        // And the other way round.
        let prompt = binding(Asker::Prompt("greet"), "stdio");
        let sealed = seal_state("p", &prompt);
        assert_eq!(open_state(&sealed, &prompt).unwrap(), "p");
        assert!(open_state(&sealed, &here).is_err());
        // Made by someone without the key: refused.
        let foreign = RequestStateCodec::try_new(vec![7u8; 32])
            .unwrap()
            .seal_with(b"x", &SealOptions::new().associated_data(&here));
        assert!(open_state(&foreign, &here).is_err());
        assert!(open_state("", &here).is_err());
    }

    #[tokio::test]
    async fn unanswered_asks_become_one_input_required_result_with_the_signed_state() {
        let link = rounds(
            answers(&[]),
            json!({"elicitation": {}, "sampling": {}, "roots": {}}),
        );
        let pending = link.ask("who", ClientMethod::Elicit, elicit()).await;
        assert!(matches!(pending, Err(AskError::Pending)));
        let roots = link.ask("roots", ClientMethod::Roots, json!({})).await;
        assert!(matches!(roots, Err(AskError::Pending)));
        link.remember("step-1".into());
        let result = link.finish().unwrap().expect("input required");
        let wire = serde_json::to_value(&result).unwrap();
        assert_eq!(wire["resultType"], "input_required");
        assert_eq!(wire["inputRequests"]["who"]["method"], "elicitation/create");
        assert_eq!(wire["inputRequests"]["who"]["params"]["message"], "name?");
        assert_eq!(wire["inputRequests"]["roots"]["method"], "roots/list");
        let sealed = wire["requestState"].as_str().unwrap();
        assert_eq!(
            open_state(sealed, &binding(Asker::Tool("tool"), "stdio")).unwrap(),
            "step-1"
        );
    }

    #[tokio::test]
    async fn answers_reach_the_guest_and_wrong_ones_fail_the_call() {
        let accepted = json!({"action": "accept", "content": {"name": "Ada"}});
        let link = rounds(
            answers(&[("who", accepted.clone()), ("extra", json!(1))]),
            json!({"elicitation": {}}),
        );
        let answer = link.ask("who", ClientMethod::Elicit, elicit()).await;
        assert_eq!(answer.unwrap(), accepted);
        assert!(
            link.finish().unwrap().is_none(),
            "complete: nothing pending"
        );

        let link = rounds(
            answers(&[("who", json!(12345))]),
            json!({"elicitation": {}}),
        );
        let answer = link.ask("who", ClientMethod::Elicit, elicit()).await;
        assert!(matches!(answer, Err(AskError::Pending)));
        let err = link.finish().unwrap_err();
        assert_eq!(err.code.0, -32602);
        assert!(err.message.contains("`who`"), "{}", err.message);
    }

    #[tokio::test]
    async fn a_capability_the_client_did_not_declare_is_not_supported() {
        let link = rounds(answers(&[]), json!({"sampling": {}}));
        let answer = link.ask("who", ClientMethod::Elicit, elicit()).await;
        let Err(AskError::NotSupported(why)) = answer else {
            panic!("{answer:?}")
        };
        assert!(why.contains("`elicitation`"), "{why}");
        assert!(link.finish().unwrap().is_none(), "nothing was asked");
        let malformed = link
            .ask("s", ClientMethod::Sample, json!({"messages": "no"}))
            .await;
        assert!(matches!(malformed, Err(AskError::Failed(m)) if m.contains("malformed")));
    }
}
