//! `ServerHandler` for both protocol eras: 2025-11-25 clients (`initialize`,
//! sessions) and 2026-07-28 clients (`server/discover`, per-request `_meta`,
//! `subscriptions/listen`). rmcp does the era negotiation; this file maps the
//! catalog to tools and calls to the invoke layer.

// MCP logging (`logging/setLevel`, `notifications/message`) is deprecated by
// SEP-2577 in rmcp, but it is how 2025-11-25 clients, and 2026-07-28 clients
// sending `logLevel`, receive a tool's log lines today.
#![allow(deprecated)]

use std::sync::Arc;

use rmcp::model::{
    CacheScope, CallToolRequestParams, CallToolResponse, CallToolResult, CancelTaskParams,
    ContentBlock, GetPromptRequestParams, GetPromptResponse, GetPromptResult, GetTaskParams,
    GetTaskResult, Implementation, ListPromptsResult, ListResourceTemplatesResult,
    ListResourcesResult, ListToolsResult, LoggingLevel, LoggingMessageNotificationParam,
    MetaObject, PaginatedRequestParams, ProgressNotificationParam, ProgressToken,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, ServerCapabilities,
    ServerConfig, SetLevelRequestParams, SubscribeRequestParams, SubscriptionFilter, Tool,
    UnsubscribeRequestParams, UpdateTaskParams,
};
use rmcp::model::{
    ResourceUpdatedNotification, ResourceUpdatedNotificationParam, ServerNotification,
};
use rmcp::service::{
    NotificationContext, RequestContext, SubscriptionContext, SubscriptionSendError,
};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler};
use serde_json::{Value, json};

use crate::catalog::{CatalogChange, LiveCatalog, ToolEntry};
use mcpplus_policy::config::GuestLogLevel;
use mcpplus_policy::hints::ToolHints;
use mcpplus_queue::service::QueueService;
use mcpplus_runtime::invoke::{ToolOutcome, invoke};
use mcpplus_runtime::served::{self, ServeError};

use super::client::CallerLink;
use super::diagnostics::Diagnostics;
use super::federation::{self, Federation};
use super::tasks;
use super::tool_cache::ToolCache;
use mcpplus_runtime::Runtime;
use mcpplus_runtime::observer::{CallObserver, GuestSignal};
use mcpplus_telemetry::trace::TraceContext;
use tracing::Instrument as _;

/// How long clients may cache `tools/list`: zero, because tools can be replaced at
/// any moment (clients that asked are also told through list_changed).
const TOOLS_LIST_TTL_MS: u64 = 0;

/// How long clients may cache prompt and resource lists and resource contents:
/// zero, for the same reason (a component can be replaced at any moment).
const SERVED_TTL_MS: u64 = 0;

/// Most resource subscriptions (`resources/subscribe`) one session may hold.
const MAX_SUBSCRIPTIONS: usize = 1000;

/// The URIs a session subscribed to (`resources/subscribe`).
type Subscriptions = Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>;

pub struct McpServer {
    catalog: Arc<LiveCatalog>,
    runtime: Arc<Runtime>,
    /// The level a 2025-11-25 client set with `logging/setLevel` (per session).
    log_level: Arc<std::sync::Mutex<Option<LoggingLevel>>>,
    /// The task queue, which runs long calls as MCP tasks.
    queue: Option<Arc<QueueService>>,
    /// Peers' tools, listed and called through the queue (`[mesh] federate`).
    federation: Option<Arc<Federation>>,
    /// Cancelled when this session's server is dropped (the session ended),
    /// so the tasks it started for the session end with it.
    session: Arc<SessionEnd>,
    /// The conformance suite's diagnostic tools (`serve --conformance-fixtures`).
    diagnostics: Option<Arc<Diagnostics>>,
    /// The resources this session subscribed to (2025-11-25 `resources/subscribe`).
    subscriptions: Subscriptions,
    /// The catalog's tools as rmcp `Tool`s (shared by all sessions).
    tool_cache: Arc<ToolCache>,
}

/// Cancels its token when dropped: one per session (each clone of the
/// server is a new session).
struct SessionEnd(tokio_util::sync::CancellationToken);

impl Drop for SessionEnd {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Each HTTP session is served by its own clone: it shares the catalog and
/// runtime but starts with no log level of its own.
impl Clone for McpServer {
    fn clone(&self) -> Self {
        let mut session = Self::new(self.catalog.clone(), self.runtime.clone())
            .with_queue(self.queue.clone())
            .with_federation(self.federation.clone())
            .with_diagnostics(self.diagnostics.clone());
        session.tool_cache = self.tool_cache.clone();
        session
    }
}

impl McpServer {
    pub fn new(catalog: Arc<LiveCatalog>, runtime: Arc<Runtime>) -> Self {
        Self {
            catalog,
            runtime,
            log_level: Arc::default(),
            queue: None,
            federation: None,
            session: Arc::new(SessionEnd(tokio_util::sync::CancellationToken::new())),
            diagnostics: None,
            subscriptions: Arc::default(),
            tool_cache: Arc::default(),
        }
    }

    /// Also serve the conformance suite's diagnostic tools.
    pub fn with_diagnostics(mut self, diagnostics: Option<Arc<Diagnostics>>) -> Self {
        self.diagnostics = diagnostics;
        self
    }

    /// List and call the tools peers host (needs the queue too).
    pub fn with_federation(mut self, federation: Option<Arc<Federation>>) -> Self {
        self.federation = federation;
        self
    }

    fn task_queue(&self) -> Result<&Arc<QueueService>, McpError> {
        self.queue.as_ref().ok_or_else(|| {
            McpError::invalid_params(
                "this server runs no task queue, so it has no tasks (it was started without a usable --data-dir)",
                None,
            )
        })
    }

    /// Serve long-running tools as MCP tasks through `queue`.
    pub fn with_queue(mut self, queue: Option<Arc<QueueService>>) -> Self {
        self.queue = queue;
        self
    }
}

fn to_tool(entry: &ToolEntry<'_>) -> Tool {
    let sig = entry.signature;
    let mut tool = json!({
        "name": sig.name,
        "description": sig.description,
        "inputSchema": sig.input_schema,
        "_meta": {"mcpplus/component": entry.component.name, "mcpplus/export": sig.export.to_string()},
        // What the sandbox allows, not what the tool claims (see docs/security.md).
        "annotations": ToolHints::from_policy(&entry.component.policy),
    });
    if let Some(output) = &sig.output_schema {
        tool["outputSchema"] = output.clone();
    }
    serde_json::from_value(tool)
        .expect("a tool built from JSON Schema objects is a valid rmcp Tool")
}

/// A content block from its JSON; plain text blocks (nearly every result)
/// are built directly instead of through serde's tagged-enum buffering.
fn content_block(value: Value) -> Result<ContentBlock, serde_json::Error> {
    match value {
        Value::Object(mut block)
            if block.len() == 2 && block.get("type").and_then(Value::as_str) == Some("text") =>
        {
            match block.remove("text") {
                Some(Value::String(text)) => Ok(ContentBlock::text(text)),
                Some(other) => {
                    block.insert("text".into(), other);
                    serde_json::from_value(Value::Object(block))
                }
                None => serde_json::from_value(Value::Object(block)),
            }
        }
        other => serde_json::from_value(other),
    }
}

fn to_result(outcome: ToolOutcome) -> Result<CallToolResult, McpError> {
    let content: Vec<ContentBlock> = outcome
        .content
        .into_iter()
        .map(content_block)
        .collect::<Result<_, _>>()
        .map_err(|e| {
            McpError::internal_error(format!("tool produced an invalid content block: {e}"), None)
        })?;
    let mut result = if outcome.is_error {
        CallToolResult::error(content)
    } else {
        CallToolResult::success(content)
    };
    result.structured_content = outcome.structured;
    Ok(result)
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        // Prompts and resources: served by components that export
        // `mcpplus:host/prompts` / `mcpplus:host/resources` (the lists may be
        // empty), and they change with the components (list_changed). A
        // subscribed resource is announced as updated when the build serving
        // it changes.
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_tool_list_changed()
            .enable_prompts()
            .enable_prompts_list_changed()
            .enable_resources()
            .enable_resources_list_changed()
            .enable_resources_subscribe()
            .enable_logging();
        // Tasks need the durable queue.
        let capabilities = if self.queue.is_some() {
            capabilities.enable_tasks().build()
        } else {
            capabilities.build()
        };
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new("mcpplus", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Tools served by mcpplus: each is a sandboxed WebAssembly component. \
                 The tool list can change while the server runs.",
            )
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        // One page holds every tool; a cursor can only be one we never issued.
        if let Some(cursor) = request.and_then(|r| r.cursor) {
            return Err(McpError::invalid_params(
                format!("invalid cursor `{cursor}`: this server returns all tools in one page"),
                None,
            ));
        }
        let catalog = self.catalog.snapshot();
        let mut tools: Vec<Tool> = catalog
            .tools()
            .map(|e| self.tool_cache.get(&catalog, &e, to_tool))
            .collect();
        if let Some(federation) = &self.federation {
            let remote = federation.remote_tools(|name| catalog.tool(name).is_some());
            tools.extend(
                remote
                    .iter()
                    .filter_map(|(name, r)| federation::to_tool(name, r)),
            );
        }
        if let Some(diagnostics) = &self.diagnostics {
            tools.extend(diagnostics.tools());
        }
        Ok(ListToolsResult::with_all_items(tools)
            .with_ttl_ms(TOOLS_LIST_TTL_MS)
            .with_cache_scope(CacheScope::Public))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        let catalog = self.catalog.snapshot();
        if let Some(entry) = catalog.tool(name) {
            return Some(self.tool_cache.get(&catalog, &entry, to_tool));
        }
        if let Some(diagnostics) = &self.diagnostics
            && let Some(tool) = diagnostics.tools().into_iter().find(|t| t.name == name)
        {
            return Some(tool);
        }
        let federation = self.federation.as_ref()?;
        let remote = federation.remote_tools(|n| catalog.tool(n).is_some());
        remote.get(name).and_then(|r| federation::to_tool(name, r))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let catalog = self.catalog.snapshot();
        let entry = catalog.tool(&request.name);
        if entry.is_none()
            && let Some(diagnostics) = &self.diagnostics
            && diagnostics.serves(&request.name)
        {
            let capabilities = context.client_capabilities();
            return diagnostics
                .call(&request.name, capabilities.as_ref())
                .map(CallToolResponse::from);
        }
        // A tool only peers host runs on one of them (`[mesh] federate`).
        let federation = match (&entry, &self.federation, &self.queue) {
            (None, Some(federation), Some(_)) if federation.hosted_by_peers(&request.name) => {
                Some(federation)
            }
            _ => None,
        };
        if entry.is_none() && federation.is_none() {
            return Err(McpError::invalid_params(
                format!("Unknown tool: {}", request.name),
                Some(
                    json!({"tool": request.name, "hint": "call tools/list for the available tools"}),
                ),
            ));
        }
        let client_has_tasks = context
            .client_capabilities()
            .is_some_and(|c| c.supports_tasks());
        if let Some(queue) = &self.queue
            && !client_has_tasks
            && tasks::is_task_required(queue, &request.name)
        {
            return Err(tasks::extension_required(&request.name));
        }
        if let Some(queue) = &self.queue
            && tasks::is_long_running(queue, &request.name)
            && client_has_tasks
        {
            let client = context.client_info().map(|i| i.name).unwrap_or_default();
            return tasks::start(
                queue,
                &request.name,
                request.arguments.as_ref(),
                &client,
                &requester(&context),
                context.client_capabilities().as_ref(),
            )
            .await;
        }
        let Some(entry) = entry else {
            // Not served here, so federated (checked above): run it on a peer.
            let (Some(federation), Some(queue)) = (federation, &self.queue) else {
                return Err(McpError::internal_error("no route for the tool", None));
            };
            let client = context.client_info().map(|i| i.name).unwrap_or_default();
            let result = federation
                .call(
                    queue,
                    &request.name,
                    request.arguments.as_ref(),
                    &context,
                    &client,
                )
                .await?;
            return Ok(CallToolResponse::from(result));
        };
        #[cfg(feature = "otlp")]
        let started = std::time::SystemTime::now();
        // The client, for guests that ask it (`mcpplus:host/client`); an echoed
        // requestState is verified here, before the guest runs.
        let caller = CallerLink::for_call(&request, &context, &requester(&context))?;
        let call = self.request_context(&context, &request.name, Some(caller.clone()));
        // Boxed: the call's future (store, instance, select) is large, and
        // rmcp moves the handler's future into a task and around while polling.
        let outcome = Box::pin(
            invoke(
                &self.runtime,
                entry.component,
                entry.signature,
                request.arguments.as_ref(),
                &context.ct,
                Some(call.observer),
            )
            .instrument(call.span),
        )
        .await;
        call.forwarded.finish().await;
        #[cfg(feature = "otlp")]
        if mcpplus_telemetry::otlp::enabled() {
            mcpplus_telemetry::otlp::record(mcpplus_telemetry::otlp::CallSpan {
                trace: call.trace,
                name: format!("tools/call {}", request.name),
                start: started,
                end: std::time::SystemTime::now(),
                attributes: vec![
                    ("mcp.tool.name", request.name.to_string()),
                    ("mcp.request.id", context.id.to_string()),
                    ("mcpplus.component", entry.component.name.clone()),
                    ("mcpplus.sha256", entry.component.digest.clone()),
                ],
                error: outcome.is_error,
            });
        }
        // A 2026-07-28 client is asked what the guest wanted to know, and the
        // guest runs again with the answers: its result now is not the answer.
        if let Some(input_required) = caller.finish()? {
            return Ok(CallToolResponse::InputRequired(input_required));
        }
        let mut result = to_result(outcome)?;
        // Which build answered: lets clients and operators follow a hot swap.
        let mut meta = serde_json::Map::new();
        meta.insert("mcpplus/component".into(), json!(entry.component.name));
        meta.insert("mcpplus/sha256".into(), json!(entry.component.digest));
        result.meta = Some(MetaObject(meta));
        Ok(CallToolResponse::from(result))
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, McpError> {
        tasks::get(self.task_queue()?, request.task_id, &requester(&context)).await
    }

    async fn update_task(
        &self,
        request: UpdateTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        tasks::update(
            self.task_queue()?,
            request.task_id,
            request.input_responses,
            &requester(&context),
        )
        .await
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        tasks::cancel(self.task_queue()?, request.task_id, &requester(&context)).await
    }

    async fn list_prompts(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        single_page(request, "prompts")?;
        let catalog = self.catalog.snapshot();
        let diagnostic = self.diagnostics.iter().flat_map(|d| d.prompts());
        let prompts = listed(
            catalog
                .prompts()
                .map(|e| served_meta(e.json.clone(), &e.component.name))
                .chain(diagnostic),
            "prompt",
        )?;
        Ok(ListPromptsResult::with_all_items(prompts)
            .with_ttl_ms(SERVED_TTL_MS)
            .with_cache_scope(CacheScope::Public))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        let catalog = self.catalog.snapshot();
        if let Some(mut result) = self
            .diagnostics
            .as_ref()
            .and_then(|d| d.get_prompt(&request.name))
        {
            result["resultType"] = json!("complete");
            let result: GetPromptResult = serde_json::from_value(result)
                .map_err(|e| McpError::internal_error(e.to_string(), None))?;
            return Ok(GetPromptResponse::Complete(result));
        }
        let Some(entry) = catalog.prompt(&request.name) else {
            let served = if catalog.has_prompts() {
                "call prompts/list for the available prompts"
            } else {
                "no component serves prompts (prompts/list is empty)"
            };
            return Err(McpError::invalid_params(
                format!("there is no prompt `{}`: {served}", request.name),
                Some(json!({"name": request.name})),
            ));
        };
        // Required arguments are checked here, before the guest runs.
        let missing: Vec<&str> = entry.json["arguments"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["required"] == true)
            .filter_map(|a| a["name"].as_str())
            .filter(|n| {
                !request
                    .arguments
                    .as_ref()
                    .is_some_and(|args| args.contains_key(*n))
            })
            .collect();
        if !missing.is_empty() {
            return Err(McpError::invalid_params(
                format!(
                    "prompt `{}` needs the argument(s) {}",
                    request.name,
                    missing.join(", ")
                ),
                Some(json!({"name": request.name, "missing": missing})),
            ));
        }
        // The client, for prompts that ask it (`mcpplus:host/client`), as in a
        // tool call; an echoed requestState is verified before the guest runs.
        let caller = CallerLink::for_prompt(&request, &context, &requester(&context))?;
        let call = self.request_context(&context, &request.name, Some(caller.clone()));
        let outcome = served::get_prompt(
            &self.runtime,
            entry.component,
            &request.name,
            request.arguments.as_ref(),
            &context.ct,
            Some(call.observer),
        )
        .instrument(call.span)
        .await;
        call.forwarded.finish().await;
        // A 2026-07-28 client is asked what the guest wanted to know, and the
        // prompt renders again with the answers: its result now is not the answer.
        if let Some(input_required) = caller.finish()? {
            return Ok(GetPromptResponse::InputRequired(input_required));
        }
        let mut result = match outcome {
            Ok(result) => result,
            Err(ServeError::NotFound) => {
                return Err(McpError::invalid_params(
                    format!("there is no prompt `{}`", request.name),
                    Some(json!({"name": request.name})),
                ));
            }
            Err(ServeError::InvalidArguments(why)) => {
                return Err(McpError::invalid_params(
                    format!("invalid arguments for prompt `{}`: {why}", request.name),
                    Some(json!({"name": request.name})),
                ));
            }
            Err(e) => {
                return Err(McpError::internal_error(
                    format!("prompt `{}` failed: {e}", request.name),
                    Some(json!({"name": request.name, "component": entry.component.name})),
                ));
            }
        };
        result["resultType"] = json!("complete");
        let result = served_meta_with_digest(result, entry.component);
        let result: GetPromptResult = serde_json::from_value(result).map_err(|e| {
            McpError::internal_error(format!("the prompt is not a valid MCP prompt: {e}"), None)
        })?;
        Ok(GetPromptResponse::Complete(result))
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        single_page(request, "resources")?;
        let catalog = self.catalog.snapshot();
        let resources = listed(
            catalog
                .resources()
                .map(|e| served_meta(e.json.clone(), &e.component.name)),
            "resource",
        )?;
        Ok(ListResourcesResult::with_all_items(resources)
            .with_ttl_ms(SERVED_TTL_MS)
            .with_cache_scope(CacheScope::Public))
    }

    async fn list_resource_templates(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        single_page(request, "resource templates")?;
        let catalog = self.catalog.snapshot();
        let templates = listed(
            catalog
                .resource_templates()
                .map(|e| served_meta(e.json.clone(), &e.component.name)),
            "resource template",
        )?;
        Ok(ListResourceTemplatesResult::with_all_items(templates)
            .with_ttl_ms(SERVED_TTL_MS)
            .with_cache_scope(CacheScope::Public))
    }

    /// A URI no component serves (no exact resource, no matching template, or
    /// the component says `not-found`) is -32602 with the URI in `data`
    /// (SEP-2164), never an empty `contents`.
    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let catalog = self.catalog.snapshot();
        let not_found = |uri: &str| {
            let served = if catalog.has_resources() {
                "call resources/list and resources/templates/list for what is served"
            } else {
                "no component serves resources (resources/list is empty)"
            };
            McpError::invalid_params(
                format!("there is no resource `{uri}`: {served}"),
                Some(json!({"uri": uri})),
            )
        };
        let Some(component) = catalog.resolve_uri(&request.uri) else {
            return Err(not_found(&request.uri));
        };
        // Resources cannot ask the client (yet).
        let call = self.request_context(&context, &request.uri, None);
        let outcome = served::read_resource(
            &self.runtime,
            component,
            &request.uri,
            &context.ct,
            Some(call.observer),
        )
        .instrument(call.span)
        .await;
        call.forwarded.finish().await;
        let contents = match outcome {
            Ok(contents) => contents,
            Err(ServeError::NotFound) => return Err(not_found(&request.uri)),
            Err(e) => {
                return Err(McpError::internal_error(
                    format!("reading `{}` failed: {e}", request.uri),
                    Some(json!({"uri": request.uri, "component": component.name})),
                ));
            }
        };
        let result = json!({
            "resultType": "complete",
            "contents": contents,
            "ttlMs": SERVED_TTL_MS,
            "cacheScope": "public",
        });
        let result = served_meta_with_digest(result, component);
        let result: ReadResourceResult = serde_json::from_value(result).map_err(|e| {
            McpError::internal_error(format!("invalid resource contents: {e}"), None)
        })?;
        Ok(ReadResourceResponse::Complete(result))
    }

    /// Remember the subscription (per session, at most [`MAX_SUBSCRIPTIONS`]);
    /// `notifications/resources/updated` follows when the build serving the
    /// URI changes.
    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        if self.catalog.snapshot().resolve_uri(&request.uri).is_none() {
            return Err(McpError::invalid_params(
                format!("there is no resource `{}` to subscribe to", request.uri),
                Some(json!({"uri": request.uri})),
            ));
        }
        let mut subscriptions = self.subscriptions.lock().unwrap_or_else(|e| e.into_inner());
        if subscriptions.len() >= MAX_SUBSCRIPTIONS && !subscriptions.contains(&request.uri) {
            return Err(McpError::invalid_params(
                format!(
                    "this session already holds {MAX_SUBSCRIPTIONS} resource subscriptions, the most it may; unsubscribe from some first"
                ),
                Some(json!({"uri": request.uri})),
            ));
        }
        subscriptions.insert(request.uri);
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        self.subscriptions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&request.uri);
        Ok(())
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        *self.log_level.lock().unwrap_or_else(|e| e.into_inner()) = Some(request.level);
        Ok(())
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        Some(requested.supported_by(&self.get_info().capabilities))
    }

    /// A 2025-11-25 client (stdio, or an HTTP session) is told about every change
    /// of the tool list with `notifications/tools/list_changed` (and of the
    /// prompt and resource lists with theirs, and of the resources it
    /// subscribed to with `notifications/resources/updated`), until its
    /// session ends (the forwarder would otherwise live until the next change,
    /// holding the session's state: a leak per short session).
    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        let peer = context.peer;
        let mut changes = self.catalog.subscribe();
        let ended = self.session.0.clone();
        let subscriptions = self.subscriptions.clone();
        let catalog = self.catalog.clone();
        tokio::spawn(async move {
            loop {
                let change = tokio::select! {
                    _ = ended.cancelled() => return,
                    change = changes.recv() => change,
                };
                let change = match change {
                    Ok(change) => change,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        everything_changed(&catalog)
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                if peer.is_transport_closed() {
                    return;
                }
                let notifications = {
                    let subscribed = subscriptions.lock().unwrap_or_else(|e| e.into_inner());
                    change_notifications(&change, subscribed.iter())
                };
                for notification in notifications {
                    if peer.send_notification(notification).await.is_err() {
                        return;
                    }
                }
            }
        });
    }

    /// A 2026-07-28 `subscriptions/listen`: the notifications its accepted
    /// filter asks for (tools, prompts, resources list changes; updates of
    /// the resources it names), until it is cancelled.
    async fn listen(&self, context: SubscriptionContext) -> Result<(), McpError> {
        let mut changes = self.catalog.subscribe();
        let watched = context
            .accepted()
            .resource_subscriptions
            .clone()
            .unwrap_or_default();
        loop {
            let change = tokio::select! {
                _ = context.cancelled() => return Ok(()),
                change = changes.recv() => match change {
                    Ok(change) => change,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        everything_changed(&self.catalog)
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
                },
            };
            // The sink sends only what the accepted filter asks for.
            for notification in change_notifications(&change, watched.iter()) {
                match context.sink().send(notification).await {
                    Ok(()) | Err(SubscriptionSendError::NotificationNotAccepted(_)) => {}
                    Err(_) => return Ok(()),
                }
            }
        }
    }
}

/// What one request (a tool call, `prompts/get`, `resources/read`) runs with.
struct RequestRun {
    /// The request's context, on every log line of the call.
    span: tracing::Span,
    #[cfg_attr(not(feature = "otlp"), allow(dead_code))]
    trace: TraceContext,
    /// Forwards the guest's log lines and progress the client asked for.
    observer: CallObserver,
    forwarded: Forwarded,
}

/// The task sending a request's notifications, if the client wants any.
struct Forwarded(Option<tokio::task::JoinHandle<()>>);

impl Forwarded {
    /// Wait until every notification is out: they go before the result.
    async fn finish(self) {
        if let Some(forwarder) = self.0 {
            let _ = forwarder.await;
        }
    }
}

impl McpServer {
    /// The span, observer and notification forwarder of one request named
    /// `what` (a tool, prompt or URI); `client` lets the guest ask the client.
    fn request_context(
        &self,
        context: &RequestContext<RoleServer>,
        what: &str,
        client: Option<Arc<CallerLink>>,
    ) -> RequestRun {
        let trace = TraceContext::for_call(context.meta.get_traceparent());
        let client_name = context
            .meta
            .client_info()
            .map(|i| i.name)
            .or_else(|| context.peer.peer_info().map(|p| p.client_info.name.clone()))
            .unwrap_or_default();
        let span = tracing::info_span!(
            "request",
            request_id = %context.id,
            client = %client_name,
            trace_id = %trace.trace_id_hex(),
            span_id = %trace.span_id_hex(),
        );
        let requested_level = context
            .meta
            .log_level()
            .or(*self.log_level.lock().unwrap_or_else(|e| e.into_inner()));
        let progress_token = context.meta.get_progress_token();
        let (signals, received) = tokio::sync::mpsc::unbounded_channel();
        let wants_progress = progress_token.is_some();
        // Signals nobody asked for are never sent, so nothing reads them.
        let forwarder = (requested_level.is_some() || wants_progress).then(|| {
            tokio::spawn(forward_signals(
                received,
                context.peer.clone(),
                progress_token,
                what.to_string(),
            ))
        });
        let observer = CallObserver {
            signals,
            client_log_level: requested_level.map(guest_level),
            wants_progress,
            client: client.map(|c| c as Arc<dyn mcpplus_runtime::capabilities::client::ClientLink>),
        };
        RequestRun {
            span,
            trace,
            observer,
            forwarded: Forwarded(forwarder),
        }
    }
}

/// Every listed prompt, resource or template of `entries`, with the component
/// serving it in `_meta`, as rmcp's type `T`.
fn listed<T: serde::de::DeserializeOwned>(
    entries: impl Iterator<Item = serde_json::Value>,
    what: &str,
) -> Result<Vec<T>, McpError> {
    entries
        .map(serde_json::from_value)
        .collect::<Result<_, _>>()
        .map_err(|e| McpError::internal_error(format!("an invalid {what}: {e}"), None))
}

/// What a change of the catalog tells a client: each list that changed, and
/// `notifications/resources/updated` for each of `subscribed` whose serving
/// build changed.
fn change_notifications<'a>(
    change: &CatalogChange,
    subscribed: impl IntoIterator<Item = &'a String>,
) -> Vec<ServerNotification> {
    let mut out = Vec::new();
    if change.tools {
        out.push(ServerNotification::ToolListChangedNotification(
            Default::default(),
        ));
    }
    if change.prompts {
        out.push(ServerNotification::PromptListChangedNotification(
            Default::default(),
        ));
    }
    if change.resources {
        out.push(ServerNotification::ResourceListChangedNotification(
            Default::default(),
        ));
    }
    for uri in change.updated_uris(subscribed) {
        out.push(ServerNotification::ResourceUpdatedNotification(
            ResourceUpdatedNotification::new(ResourceUpdatedNotificationParam::new(uri)),
        ));
    }
    out
}

/// After a lagged receiver: assume every list changed (a spare notification
/// is harmless; a missed one is not).
fn everything_changed(catalog: &LiveCatalog) -> CatalogChange {
    let now = catalog.snapshot();
    CatalogChange {
        tools: true,
        prompts: true,
        resources: true,
        before: Arc::new(crate::catalog::Catalog::default()),
        after: now,
    }
}

/// One page holds every entry; a cursor can only be one we never issued.
fn single_page(request: Option<PaginatedRequestParams>, what: &str) -> Result<(), McpError> {
    match request.and_then(|r| r.cursor) {
        Some(cursor) => Err(McpError::invalid_params(
            format!("invalid cursor `{cursor}`: this server returns all {what} in one page"),
            None,
        )),
        None => Ok(()),
    }
}

/// A listed prompt or resource, with the component serving it in `_meta`.
fn served_meta(mut json: serde_json::Value, component: &str) -> serde_json::Value {
    json["_meta"] = json!({"mcpplus/component": component});
    json
}

/// A result, with the build that answered in `_meta` (as tool results carry).
fn served_meta_with_digest(
    mut json: serde_json::Value,
    component: &mcpplus_runtime::LoadedComponent,
) -> serde_json::Value {
    json["_meta"] =
        json!({"mcpplus/component": component.name, "mcpplus/sha256": component.digest});
    json
}

/// Who is asking, for binding MCP tasks to their creator: the authenticated
/// principal (an OAuth subject, or the static token's holders as one), else
/// the legacy session, else the transport (stdio has one client; an
/// unauthenticated stateless HTTP client has no identity of its own).
fn requester(context: &RequestContext<RoleServer>) -> String {
    let Some(parts) = context.extensions.get::<http::request::Parts>() else {
        return "stdio".into();
    };
    if let Some(principal) = parts.extensions.get::<super::auth::Principal>()
        && principal.0 != "token"
    {
        return principal.0.clone();
    }
    match parts
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
    {
        Some(session) => format!("session:{session}"),
        None => "http".into(),
    }
}

/// MCP level → the least important guest level the client wants.
fn guest_level(level: LoggingLevel) -> GuestLogLevel {
    match level {
        LoggingLevel::Debug => GuestLogLevel::Debug,
        LoggingLevel::Info | LoggingLevel::Notice => GuestLogLevel::Info,
        LoggingLevel::Warning => GuestLogLevel::Warn,
        _ => GuestLogLevel::Error,
    }
}

fn mcp_level(level: GuestLogLevel) -> &'static str {
    match level {
        GuestLogLevel::Trace | GuestLogLevel::Debug => "debug",
        GuestLogLevel::Info => "info",
        GuestLogLevel::Warn => "warning",
        GuestLogLevel::Error => "error",
    }
}

/// Send a call's guest log lines and progress to the client, in order, until
/// the call ends (its sender is dropped with the call's store).
async fn forward_signals(
    mut signals: tokio::sync::mpsc::UnboundedReceiver<GuestSignal>,
    peer: rmcp::Peer<RoleServer>,
    progress_token: Option<ProgressToken>,
    tool: String,
) {
    while let Some(signal) = signals.recv().await {
        let sent = match signal {
            GuestSignal::Log {
                level,
                message,
                fields,
            } => {
                let fields: serde_json::Map<String, serde_json::Value> =
                    fields.into_iter().map(|(k, v)| (k, json!(v))).collect();
                let param = json!({"level": mcp_level(level), "logger": tool,
                    "data": {"message": message, "fields": fields}});
                match serde_json::from_value::<LoggingMessageNotificationParam>(param) {
                    Ok(p) => peer.notify_logging_message(p).await.is_ok(),
                    Err(_) => true,
                }
            }
            GuestSignal::Progress {
                progress,
                total,
                message,
            } => match &progress_token {
                Some(token) => {
                    let mut param = json!({"progressToken": token, "progress": progress});
                    if let Some(total) = total {
                        param["total"] = json!(total);
                    }
                    if let Some(message) = message {
                        param["message"] = json!(message);
                    }
                    match serde_json::from_value::<ProgressNotificationParam>(param) {
                        Ok(p) => peer.notify_progress(p).await.is_ok(),
                        Err(_) => true,
                    }
                }
                None => true,
            },
        };
        if !sent {
            return; // the client is gone; the call finishes regardless
        }
    }
}
