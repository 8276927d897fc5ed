//! MCP prompts and resources served by components (`mcpplus:host/prompts`,
//! `mcpplus:host/resources`): their lists, gathered once when a component
//! loads, and `get-prompt` / `read-resource`, each run like a tool call (a
//! fresh instance, the same sandbox, limits, admission, metrics and logging;
//! see [`crate::call`]).

use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;
use wasmtime::component::{Component, ComponentExportIndex, Val};

use crate::call::{CallError, Instantiation, Target, call_target};
use crate::observer::CallObserver;
use crate::{LoadedComponent, Runtime};
use mcpplus_schema::ComponentDescription;
use mcpplus_schema::served::{
    ServedError, prompt_arguments_value, prompt_result_json, prompts_json, resource_contents_json,
    resource_templates_json, resources_json,
};
use mcpplus_schema::uri_template::UriTemplate;

/// Most prompts, resources or resource templates one component may list
/// (each list separately); the rest are dropped with a load warning.
pub const MAX_ENTRIES: usize = 1000;

/// Most bytes of JSON one list may take; a larger list is dropped whole with
/// a load warning.
pub const MAX_LIST_BYTES: usize = 1 << 20;

/// Where the functions of the served interfaces are in a component.
#[derive(Default)]
pub(crate) struct ServedExports {
    prompts: Option<PromptsExports>,
    resources: Option<ResourcesExports>,
}

struct PromptsExports {
    list: ComponentExportIndex,
    get: ComponentExportIndex,
}

struct ResourcesExports {
    list: ComponentExportIndex,
    templates: ComponentExportIndex,
    read: ComponentExportIndex,
}

impl ServedExports {
    /// Find the functions; a missing one is a warning and serves nothing.
    pub(crate) fn find(
        component: &Component,
        description: &ComponentDescription,
        warnings: &mut Vec<String>,
    ) -> Self {
        let mut lookup = |iface: &str, names: &[&str]| -> Option<Vec<ComponentExportIndex>> {
            let parent = component.get_export_index(None, iface)?;
            let found: Option<Vec<_>> = names
                .iter()
                .map(|n| component.get_export_index(Some(&parent), n))
                .collect();
            if found.is_none() {
                warnings.push(format!(
                    "`{iface}` lacks one of {}; it serves nothing",
                    names.join(", ")
                ));
            }
            found
        };
        let prompts = description
            .prompts_export
            .as_deref()
            .and_then(|i| lookup(i, &["list-prompts", "get-prompt"]))
            .map(|f| PromptsExports {
                list: f[0],
                get: f[1],
            });
        let resources = description
            .resources_export
            .as_deref()
            .and_then(|i| {
                lookup(
                    i,
                    &["list-resources", "list-resource-templates", "read-resource"],
                )
            })
            .map(|f| ResourcesExports {
                list: f[0],
                templates: f[1],
                read: f[2],
            });
        Self { prompts, resources }
    }

    fn is_empty(&self) -> bool {
        self.prompts.is_none() && self.resources.is_none()
    }
}

/// A resource template a component serves, parsed.
#[derive(Debug, Clone)]
pub struct ServedTemplate {
    pub template: UriTemplate,
    /// The MCP `ResourceTemplate` object.
    pub json: Value,
}

impl ServedTemplate {
    pub fn uri_template(&self) -> &str {
        self.json["uriTemplate"].as_str().unwrap_or_default()
    }
}

/// What a component serves besides tools, as listed when it loaded.
#[derive(Debug, Clone, Default)]
pub struct Served {
    /// MCP `Prompt` objects, in the component's order.
    pub prompts: Vec<Value>,
    /// MCP `Resource` objects.
    pub resources: Vec<Value>,
    pub templates: Vec<ServedTemplate>,
}

impl Served {
    pub fn prompt(&self, name: &str) -> Option<&Value> {
        self.prompts.iter().find(|p| p["name"] == name)
    }

    pub fn is_empty(&self) -> bool {
        self.prompts.is_empty() && self.resources.is_empty() && self.templates.is_empty()
    }
}

/// List what `component` serves, each list in a fresh instance under the
/// component's limits. Failures become `warnings`, never errors. Blocking: runs
/// on its own thread and executor, so it may be called from any context.
pub(crate) fn gather_blocking(
    runtime: &Runtime,
    component: &LoadedComponent,
    warnings: &mut Vec<String>,
) -> Served {
    if component.served_exports().is_empty() {
        return Served::default();
    }
    let (served, more) = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                {
                    Ok(rt) => rt.block_on(gather(runtime, component)),
                    Err(e) => (
                        Served::default(),
                        vec![format!(
                            "cannot list its prompts and resources (no executor: {e})"
                        )],
                    ),
                }
            })
            .join()
            .unwrap_or_else(|_| {
                (
                    Served::default(),
                    vec!["listing its prompts and resources panicked".into()],
                )
            })
    });
    warnings.extend(more);
    served
}

async fn gather(runtime: &Runtime, component: &LoadedComponent) -> (Served, Vec<String>) {
    let mut served = Served::default();
    let mut warnings = Vec::new();
    let exports = component.served_exports();
    if let Some(p) = &exports.prompts {
        let list = list(runtime, component, "list-prompts", &p.list, prompts_json).await;
        served.prompts = bounded(list, "prompts", "name", &mut warnings);
    }
    if let Some(r) = &exports.resources {
        let list = list(
            runtime,
            component,
            "list-resources",
            &r.list,
            resources_json,
        )
        .await;
        served.resources = bounded(list, "resources", "uri", &mut warnings);
        let list = list_templates(runtime, component, &r.templates).await;
        for json in bounded(list, "resource templates", "uriTemplate", &mut warnings) {
            let text = json["uriTemplate"].as_str().unwrap_or_default();
            match UriTemplate::parse(text) {
                Ok(template) => served.templates.push(ServedTemplate { template, json }),
                Err(e) => warnings.push(format!("resource template skipped: {e}")),
            }
        }
    }
    (served, warnings)
}

async fn list_templates(
    runtime: &Runtime,
    component: &LoadedComponent,
    export: &ComponentExportIndex,
) -> Result<Vec<Value>, String> {
    list(
        runtime,
        component,
        "list-resource-templates",
        export,
        resource_templates_json,
    )
    .await
}

async fn list(
    runtime: &Runtime,
    component: &LoadedComponent,
    function: &str,
    export: &ComponentExportIndex,
    convert: fn(&Val) -> Result<Vec<Value>, String>,
) -> Result<Vec<Value>, String> {
    let value = run(runtime, component, function, export, &[], None, None)
        .await
        .map_err(|e| format!("`{function}` failed: {e}"))?
        .ok_or(format!("`{function}` returned nothing"))?;
    convert(&value).map_err(|e| format!("`{function}` returned a malformed value: {e}"))
}

/// At most [`MAX_ENTRIES`], unique by `key`, at most [`MAX_LIST_BYTES`].
fn bounded(
    list: Result<Vec<Value>, String>,
    what: &str,
    key: &str,
    warnings: &mut Vec<String>,
) -> Vec<Value> {
    let mut list = match list {
        Ok(list) => list,
        Err(e) => {
            warnings.push(format!("{e}; it serves no {what}"));
            return Vec::new();
        }
    };
    if list.len() > MAX_ENTRIES {
        warnings.push(format!(
            "it lists {} {what}, over the limit of {MAX_ENTRIES}; only the first {MAX_ENTRIES} are served",
            list.len()
        ));
        list.truncate(MAX_ENTRIES);
    }
    let size = serde_json::to_vec(&list).map_or(0, |b| b.len());
    if size > MAX_LIST_BYTES {
        warnings.push(format!(
            "its list of {what} is {size} bytes of JSON, over the limit of {MAX_LIST_BYTES}; it serves no {what}"
        ));
        return Vec::new();
    }
    let mut seen = std::collections::HashSet::new();
    list.retain(|entry| {
        let id = entry[key].as_str().unwrap_or_default().to_string();
        let fresh = seen.insert(id.clone());
        if !fresh {
            warnings.push(format!("it lists {what} `{id}` twice; the first is served"));
        }
        fresh
    });
    list
}

/// Why a prompt or resource request has no result.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The guest said `not-found`.
    #[error("not found")]
    NotFound,
    /// The guest refused the prompt's arguments.
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    /// The guest said `failed`.
    #[error("{0}")]
    Failed(String),
    /// The call failed (trap, timeout, memory limit, …).
    #[error(transparent)]
    Call(#[from] CallError),
    /// The guest returned something that does not fit the interface.
    #[error("the component returned a malformed value: {0}")]
    Malformed(String),
    /// The result is over the component's `result_kib`.
    #[error(
        "the result is {size} bytes, over its limit of {limit} bytes; raise result_kib for this component"
    )]
    TooLarge { size: usize, limit: usize },
    /// The component does not serve this interface.
    #[error("the component serves no {0}")]
    NotServed(&'static str),
}

impl From<ServedError> for ServeError {
    fn from(e: ServedError) -> Self {
        match e {
            ServedError::NotFound => ServeError::NotFound,
            ServedError::InvalidArguments(t) => ServeError::InvalidArguments(t),
            ServedError::Failed(t) => ServeError::Failed(t),
        }
    }
}

impl ServeError {
    fn label(&self) -> &'static str {
        match self {
            ServeError::NotFound => "not_found",
            ServeError::InvalidArguments(_) => "invalid_arguments",
            ServeError::Failed(_) => "tool_error",
            ServeError::Call(e) => crate::invoke::outcome_label(e),
            ServeError::Malformed(_) => "malformed",
            ServeError::TooLarge { .. } => "result_too_large",
            ServeError::NotServed(_) => "not_found",
        }
    }
}

/// `prompts/get`: render prompt `name` of `component` with `arguments`;
/// answers an MCP `GetPromptResult` (without `resultType`).
pub async fn get_prompt(
    runtime: &Runtime,
    component: &LoadedComponent,
    name: &str,
    arguments: Option<&Map<String, Value>>,
    cancel: &CancellationToken,
    observer: Option<CallObserver>,
) -> Result<Value, ServeError> {
    let exports = component.served_exports();
    let p = exports
        .prompts
        .as_ref()
        .ok_or(ServeError::NotServed("prompts"))?;
    let args = [Val::String(name.into()), prompt_arguments_value(arguments)];
    counted(runtime, component, "prompts/get", async {
        let value = run(
            runtime,
            component,
            "prompts/get",
            &p.get,
            &args,
            Some(cancel),
            observer,
        )
        .await?
        .ok_or(ServeError::Malformed("no result".into()))?;
        let result = prompt_result_json(&value).map_err(ServeError::Malformed)??;
        Ok(result)
    })
    .await
}

/// `resources/read`: read `uri` from `component`; answers MCP `ResourceContents`.
pub async fn read_resource(
    runtime: &Runtime,
    component: &LoadedComponent,
    uri: &str,
    cancel: &CancellationToken,
    observer: Option<CallObserver>,
) -> Result<Vec<Value>, ServeError> {
    let exports = component.served_exports();
    let r = exports
        .resources
        .as_ref()
        .ok_or(ServeError::NotServed("resources"))?;
    let args = [Val::String(uri.into())];
    counted(runtime, component, "resources/read", async {
        let value = run(
            runtime,
            component,
            "resources/read",
            &r.read,
            &args,
            Some(cancel),
            observer,
        )
        .await?
        .ok_or(ServeError::Malformed("no result".into()))?;
        let contents = resource_contents_json(&value).map_err(ServeError::Malformed)??;
        if contents.is_empty() {
            // MCP forbids an empty `contents` for a resource that exists.
            return Err(ServeError::NotFound);
        }
        Ok(contents)
    })
    .await
}

/// Count and time a request as tool calls are (`mcpplus_tool_calls_total`,
/// `mcpplus_tool_call_duration_seconds`), under the method's name; check the
/// result against the component's result limit.
async fn counted<T: serde::Serialize>(
    runtime: &Runtime,
    component: &LoadedComponent,
    method: &str,
    request: impl Future<Output = Result<T, ServeError>>,
) -> Result<T, ServeError> {
    let started = std::time::Instant::now();
    let limit = runtime.limits_for(component, method).result_bytes;
    let outcome = request.await.and_then(|value| {
        let size = serde_json::to_vec(&value).map_or(0, |b| b.len());
        if size > limit {
            tracing::warn!(event = "limit.exceeded", limit = "result", component = %component.name, method,
                size_bytes = size, limit_bytes = limit, "result over the limit was withheld");
            return Err(ServeError::TooLarge { size, limit });
        }
        Ok(value)
    });
    let label = match &outcome {
        Ok(_) => "ok",
        Err(e) => e.label(),
    };
    crate::invoke::record_call(method, &component.name, label, started);
    outcome
}

async fn run(
    runtime: &Runtime,
    component: &LoadedComponent,
    label: &str,
    export: &ComponentExportIndex,
    args: &[Val],
    cancel: Option<&CancellationToken>,
    observer: Option<CallObserver>,
) -> Result<Option<Val>, CallError> {
    let limits = runtime.limits_for(component, label);
    let never = CancellationToken::new();
    let target = Target {
        label,
        export,
        result_count: 1,
    };
    call_target(
        runtime,
        component,
        &target,
        &limits,
        args,
        cancel.unwrap_or(&never),
        Instantiation::Pre,
        observer,
    )
    .await
    .map(|results| results.into_iter().next())
}
