//! The 6 workflow tools of the original MCP++ (and `workflow_templates`),
//! with its names and parameters, over this node's durable workflows
//! (`mcpplus:host/workflow`). The host validates, stores and runs the
//! workflows and answers in the original's JSON shapes, so this component
//! builds the requests, passes the answers through, and turns every refusal
//! into the original's error object, `{"success": false, "error": "…",
//! "workflow_id": …}`. The host enforces the policy's `[workflow]` grants:
//! submit for everything but cancel, admin for cancel too.

wit_bindgen::generate!({ path: "wit", world: "workflow-tools", generate_all });

use exports::mcpplus::workflow_tools::tools::Guest;
use mcpplus::host::workflow::{self, WorkflowError};
use serde_json::{Map, Number, Value};

struct WorkflowTools;

const DEFAULT_LIMIT: u32 = 50;
const DEFAULT_FORMAT: &str = "json";

fn explain(e: WorkflowError) -> String {
    match e {
        WorkflowError::Denied(m)
        | WorkflowError::Invalid(m)
        | WorkflowError::NotFound(m)
        | WorkflowError::Conflict(m)
        | WorkflowError::Unavailable(m) => m,
    }
}

/// The original's error object, keys in its order: `success`, `error`, and
/// `workflow_id` when the call named one.
fn failure(error: impl Into<String>, workflow_id: Option<&str>) -> String {
    let quoted = |s: &str| Value::String(s.to_string()).to_string();
    let mut text = format!(r#"{{"success":false,"error":{}"#, quoted(&error.into()));
    if let Some(id) = workflow_id {
        text.push_str(&format!(r#","workflow_id":{}"#, quoted(id)));
    }
    text.push('}');
    text
}

/// A host answer, or the error object for its refusal.
fn answer(
    result: Result<String, WorkflowError>,
    workflow_id: Option<&str>,
) -> Result<String, String> {
    result.map_err(|e| failure(explain(e), workflow_id))
}

/// A JSON argument (the host hands `json` parameters over as JSON text).
fn parse(text: &str, name: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| format!("{name} is not valid JSON: {e}"))
}

/// The `workflow_submit` request: only the fields the caller gave.
#[allow(clippy::too_many_arguments)]
fn submit_request(
    workflow_id: &str,
    name: String,
    steps: Option<Vec<String>>,
    priority: Option<f64>,
    tags: Option<Vec<String>>,
    dependencies: Option<Vec<String>>,
    metadata: Option<String>,
    on_failure: Option<String>,
    max_parallel: Option<u32>,
    timeout_ms: Option<u64>,
    output: Option<String>,
    template_id: Option<String>,
    template_version: Option<String>,
    parameters: Option<String>,
) -> Result<Value, String> {
    if steps.is_none() && template_id.is_none() {
        return Err(
            "steps is required: a list of steps, each {\"step_id\", \"action\", \"inputs\", \"depends_on\"} (or give template_id and parameters to instantiate a template)"
                .into(),
        );
    }
    let strings = |items: Vec<String>| Value::Array(items.into_iter().map(Value::String).collect());
    let mut request = Map::new();
    request.insert("workflow_id".into(), Value::String(workflow_id.to_string()));
    request.insert("name".into(), Value::String(name));
    if let Some(steps) = steps {
        let steps = steps
            .iter()
            .enumerate()
            .map(|(i, step)| parse(step, &format!("steps[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        request.insert("steps".into(), Value::Array(steps));
    }
    if let Some(priority) = priority {
        let number = Number::from_f64(priority)
            .ok_or_else(|| format!("priority must be a finite number, got {priority}"))?;
        request.insert("priority".into(), Value::Number(number));
    }
    if let Some(tags) = tags {
        request.insert("tags".into(), strings(tags));
    }
    if let Some(dependencies) = dependencies {
        request.insert("dependencies".into(), strings(dependencies));
    }
    if let Some(metadata) = metadata {
        request.insert("metadata".into(), parse(&metadata, "metadata")?);
    }
    if let Some(on_failure) = on_failure {
        request.insert("on_failure".into(), Value::String(on_failure));
    }
    if let Some(max_parallel) = max_parallel {
        request.insert("max_parallel".into(), Value::from(max_parallel));
    }
    if let Some(timeout_ms) = timeout_ms {
        request.insert("timeout_ms".into(), Value::from(timeout_ms));
    }
    if let Some(output) = output {
        request.insert("output".into(), parse(&output, "output")?);
    }
    if let Some(template_id) = template_id {
        request.insert("template_id".into(), Value::String(template_id));
    }
    if let Some(version) = template_version {
        request.insert("template_version".into(), Value::String(version));
    }
    if let Some(parameters) = parameters {
        request.insert("parameters".into(), parse(&parameters, "parameters")?);
    }
    Ok(Value::Object(request))
}

/// The `peer_id` of a listed workflow.
fn peer_of(workflow: &Value) -> Option<&str> {
    workflow.get("peer_id").and_then(Value::as_str)
}

/// An empty page of `workflow_list`, in the host's key order.
fn empty_page(peer_filter: &str) -> String {
    format!(
        r#"{{"success":true,"returned_count":0,"workflows":[],"total_count":0,"has_more":false,"peer_filter":{}}}"#,
        Value::String(peer_filter.to_string())
    )
}

/// `page` (the host's listing) narrowed to the workflows `peer_filter` runs.
/// This node's controller runs every workflow it lists (each answers this
/// node's id in `peer_id`), so the filter keeps the whole listing or none
/// of it, and the counts stay exact either way.
fn filter_by_peer(
    page: String,
    peer_filter: &str,
    status_filter: Option<&str>,
    tag_filter: &[String],
) -> Result<String, String> {
    let listing = parse(&page, "the host's answer")?;
    let workflows = listing
        .get("workflows")
        .and_then(Value::as_array)
        .ok_or("the host's answer has no workflows")?;
    let total = listing
        .get("total_count")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let node = match workflows.first() {
        Some(first) => peer_of(first).map(str::to_string),
        // An empty page past the end of a non-empty listing: ask for the
        // first workflow to learn whose the listing is.
        None if total > 0 => {
            let probe = workflow::list(status_filter, tag_filter, 1, 0)
                .map_err(explain)
                .and_then(|text| parse(&text, "the host's answer"))?;
            probe
                .get("workflows")
                .and_then(Value::as_array)
                .and_then(|w| w.first())
                .and_then(peer_of)
                .map(str::to_string)
        }
        None => return Ok(page),
    };
    let whole = workflows.iter().all(|w| peer_of(w) == node.as_deref());
    match (whole, node.as_deref() == Some(peer_filter)) {
        (true, true) => Ok(page),
        (true, false) => Ok(empty_page(peer_filter)),
        // Workflows of several controllers in one listing: not something this
        // node answers today. Keep this page's matches and say the total is
        // not known rather than guess it.
        (false, _) => {
            let mut listing = listing.clone();
            let kept: Vec<Value> = workflows
                .iter()
                .filter(|w| peer_of(w) == Some(peer_filter))
                .cloned()
                .collect();
            listing["returned_count"] = Value::from(kept.len());
            listing["workflows"] = Value::Array(kept);
            listing["total_count"] = Value::Null;
            listing["peer_filter"] = Value::String(peer_filter.to_string());
            Ok(listing.to_string())
        }
    }
}

impl Guest for WorkflowTools {
    fn workflow_submit(
        workflow_id: String,
        name: String,
        steps: Option<Vec<String>>,
        priority: Option<f64>,
        tags: Option<Vec<String>>,
        dependencies: Option<Vec<String>>,
        metadata: Option<String>,
        on_failure: Option<String>,
        max_parallel: Option<u32>,
        timeout_ms: Option<u64>,
        output: Option<String>,
        template_id: Option<String>,
        template_version: Option<String>,
        parameters: Option<String>,
    ) -> Result<String, String> {
        let request = submit_request(
            &workflow_id,
            name,
            steps,
            priority,
            tags,
            dependencies,
            metadata,
            on_failure,
            max_parallel,
            timeout_ms,
            output,
            template_id,
            template_version,
            parameters,
        )
        .map_err(|e| failure(e, Some(&workflow_id)))?;
        answer(workflow::submit(&request.to_string()), Some(&workflow_id))
    }

    fn workflow_status(
        workflow_id: String,
        include_steps: Option<bool>,
        include_metrics: Option<bool>,
    ) -> Result<String, String> {
        answer(
            workflow::status(
                &workflow_id,
                include_steps.unwrap_or(true),
                include_metrics.unwrap_or(false),
            ),
            Some(&workflow_id),
        )
    }

    fn workflow_cancel(
        workflow_id: String,
        reason: Option<String>,
        force: Option<bool>,
    ) -> Result<String, String> {
        answer(
            workflow::cancel(&workflow_id, reason.as_deref(), force.unwrap_or(false)),
            Some(&workflow_id),
        )
    }

    fn workflow_list(
        status_filter: Option<String>,
        peer_filter: Option<String>,
        tag_filter: Option<Vec<String>>,
        limit: Option<u32>,
        offset: Option<u64>,
    ) -> Result<String, String> {
        let tags = tag_filter.unwrap_or_default();
        let page = answer(
            workflow::list(
                status_filter.as_deref(),
                &tags,
                limit.unwrap_or(DEFAULT_LIMIT),
                offset.unwrap_or(0),
            ),
            None,
        )?;
        match peer_filter {
            Some(peer) if !peer.is_empty() => {
                filter_by_peer(page, &peer, status_filter.as_deref(), &tags)
                    .map_err(|e| failure(e, None))
            }
            _ => Ok(page),
        }
    }

    fn workflow_dependencies(workflow_id: String, fmt: Option<String>) -> Result<String, String> {
        answer(
            workflow::dependencies(&workflow_id, fmt.as_deref().unwrap_or(DEFAULT_FORMAT)),
            Some(&workflow_id),
        )
    }

    fn workflow_result(
        workflow_id: String,
        include_outputs: Option<bool>,
        include_logs: Option<bool>,
    ) -> Result<String, String> {
        answer(
            workflow::result(
                &workflow_id,
                include_outputs.unwrap_or(true),
                include_logs.unwrap_or(false),
            ),
            Some(&workflow_id),
        )
    }

    fn workflow_templates() -> Result<String, String> {
        answer(workflow::templates(), None)
    }
}

export!(WorkflowTools);
