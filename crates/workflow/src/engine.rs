//! The workflow service: what the six MCP++ workflow tools (and the
//! templates listing) do, over the queue's store. Answers are JSON objects
//! in the original's shapes (`success`, `workflow_id`, …) so the bundled
//! component only passes them through; errors are `WorkflowError`s whose
//! text says what to fix.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use mcpplus_queue::{QueueStore, StoreError};
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

use crate::WorkflowError;
use crate::advance::{self, Advanced, CacheRule};
use crate::graph::{self, Format, GraphInput, NodeView};
use crate::spec::{MAX_SPEC_BYTES, StepState, WorkflowSpec, WorkflowState};
use crate::store::{self, CancelMode, StepRow, WorkflowRow};
use crate::template::TemplateRegistry;
use crate::validate::{self, Plan};

/// Parsed specs kept in memory, so an advance does not re-parse and
/// re-validate a large spec on every step completion.
const SPEC_CACHE: usize = 256;
/// Unfinished workflows looked at per sweep.
const SWEEP_BATCH: u32 = 1_000;

type Loaded = Arc<(WorkflowSpec, Plan)>;
type CacheRuleFn = dyn Fn(&str) -> Option<CacheRule> + Send + Sync;

pub struct Workflows {
    store: Arc<QueueStore>,
    tool_exists: Box<dyn Fn(&str) -> bool + Send + Sync>,
    templates: RwLock<TemplateRegistry>,
    template_dir: Option<PathBuf>,
    /// What `peer_assigned` says: the node whose controller runs the workflow.
    node: String,
    retention_ms: u64,
    specs: Mutex<HashMap<String, (String, Loaded)>>,
    clock: Box<dyn Fn() -> i64 + Send + Sync>,
    cache: Box<CacheRuleFn>,
}

/// Where the engine finds what it needs.
pub struct WorkflowOptions {
    /// Whether a tool of that name is served (here or by a peer).
    pub tool_exists: Box<dyn Fn(&str) -> bool + Send + Sync>,
    /// `<data-dir>/workflow-templates`, when there is a data dir.
    pub template_dir: Option<PathBuf>,
    /// This node's name for `peer_assigned` (its PeerId, or `local`).
    pub node: String,
    /// Finished workflows are deleted this long after they end (0: kept for
    /// ever); the queue's `[queue] retention_ms`.
    pub retention_ms: u64,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Workflows {
    /// Create the workflow tables beside the queue's tasks and load the
    /// templates.
    pub fn open(store: Arc<QueueStore>, options: WorkflowOptions) -> Result<Self, WorkflowError> {
        store.transaction(now_ms(), |txn| -> Result<(), WorkflowError> {
            store::ensure_schema(txn.conn())?;
            Ok(())
        })?;
        let engine = Self {
            store,
            tool_exists: options.tool_exists,
            templates: RwLock::new(TemplateRegistry::default()),
            template_dir: options.template_dir,
            node: options.node,
            retention_ms: options.retention_ms,
            specs: Mutex::new(HashMap::new()),
            clock: Box::new(now_ms),
            cache: Box::new(|_| None),
        };
        engine.reload_templates()?;
        Ok(engine)
    }

    /// Reuse the results of the tools `rules` names (their components'
    /// `[cache]` policy); without it nothing is cached.
    pub fn with_cache(
        mut self,
        rules: impl Fn(&str) -> Option<CacheRule> + Send + Sync + 'static,
    ) -> Self {
        self.cache = Box::new(rules);
        self
    }

    /// Use `clock` for time (tests).
    pub fn with_clock(mut self, clock: impl Fn() -> i64 + Send + Sync + 'static) -> Self {
        self.clock = Box::new(clock);
        self
    }

    fn now(&self) -> i64 {
        (self.clock)()
    }

    pub fn store(&self) -> &Arc<QueueStore> {
        &self.store
    }

    /// Read the template folder again; returns the problems found (each
    /// template that failed to load, and why).
    pub fn reload_templates(&self) -> Result<Vec<String>, WorkflowError> {
        let Some(dir) = &self.template_dir else {
            return Ok(Vec::new());
        };
        if !dir.is_dir() {
            return Ok(Vec::new());
        }
        let mut pins = self.store.transaction(self.now(), |txn| {
            store::template_pins(txn.conn()).map_err(WorkflowError::from)
        })?;
        let (registry, errors) = TemplateRegistry::load_dir(dir, &mut pins);
        self.store.transaction(self.now(), |txn| {
            store::save_template_pins(txn.conn(), &pins).map_err(WorkflowError::from)
        })?;
        let errors: Vec<String> = errors.into_iter().map(|e| e.to_string()).collect();
        for e in &errors {
            tracing::warn!(event = "workflow.template_refused", "{e}");
        }
        *self.templates.write().unwrap_or_else(|e| e.into_inner()) = registry;
        Ok(errors)
    }

    /// `workflow_submit`: a spec (`steps`), or a template and its parameters.
    /// The same workflow id with the same spec returns the existing workflow.
    pub fn submit(&self, request: Value) -> Result<Value, WorkflowError> {
        let size = request.to_string().len();
        if size > MAX_SPEC_BYTES {
            return Err(WorkflowError::Invalid(format!(
                "the workflow is {size} bytes of JSON; the limit is {MAX_SPEC_BYTES}"
            )));
        }
        let Value::Object(mut request) = request else {
            return Err(WorkflowError::Invalid("a workflow is a JSON object".into()));
        };
        let (spec, template) = self.spec_of(&mut request)?;
        let plan = validate::validate(&spec, &*self.tool_exists).map_err(WorkflowError::Invalid)?;
        let canonical = canonical_json(&serde_json::to_value(&spec).expect("a spec serializes"));
        let sha = hex::encode(Sha256::digest(canonical.as_bytes()));
        let id = spec.workflow_id.clone();
        let (created, advanced) = self.store.transaction(self.now(), |txn| {
            // The transaction's clock (the database's, on PostgreSQL).
            let now = txn.now();
            let conn = txn.conn();
            if let Some(existing) = store::get_workflow(conn, &id)? {
                if existing.spec_sha256 != sha {
                    return Err(WorkflowError::Conflict(format!(
                        "workflow `{id}` already exists with a different spec; choose a new workflow_id (or submit the same spec to get the existing one)"
                    )));
                }
                return Ok((false, Advanced::default()));
            }
            for need in &spec.dependencies {
                if store::get_workflow(conn, need)?.is_none() {
                    return Err(WorkflowError::Invalid(format!(
                        "dependencies: there is no workflow `{need}` to wait for; submit it first"
                    )));
                }
            }
            let inserted = store::insert_workflow(
                conn,
                &WorkflowRow {
                    seq: 0,
                    id: id.clone(),
                    name: spec.name.clone(),
                    spec: canonical.clone(),
                    spec_sha256: sha.clone(),
                    state: WorkflowState::Pending,
                    priority: spec.priority,
                    max_parallel: spec.max_parallel,
                    tags: spec.tags.clone(),
                    template: template.clone(),
                    cancel: None,
                    cancel_reason: None,
                    timed_out: false,
                    created_at: now,
                    started_at: None,
                    finished_at: None,
                    deadline: None,
                    error: None,
                    result: None,
                },
            )?;
            if !inserted {
                // Another node committed the same id since the check above.
                let existing = store::get_workflow(conn, &id)?;
                if existing.is_some_and(|w| w.spec_sha256 == sha) {
                    return Ok((false, Advanced::default()));
                }
                return Err(WorkflowError::Conflict(format!(
                    "workflow `{id}` already exists with a different spec; choose a new workflow_id (or submit the same spec to get the existing one)"
                )));
            }
            store::insert_needs(conn, &id, &spec.dependencies)?;
            for (i, step) in spec.steps.iter().enumerate() {
                store::write_step(conn, &id, &StepRow::new(&step.step_id, i, plan.levels[i]))?;
            }
            store::append_event(conn, &id, now, None, "workflow.submitted", None)?;
            let advanced = advance::advance(txn, &id, &spec, &plan, &*self.cache)?;
            Ok((true, advanced))
        })?;
        self.remember(&id, &sha, Arc::new((spec.clone(), plan)));
        self.follow_up(advanced);
        let workflow = self.workflow(&id)?;
        Ok(json!({
            "success": true,
            "workflow_id": id,
            "status": workflow.state.as_str(),
            "created": created,
            "steps": spec.steps.len(),
            "peer_assigned": self.node,
            "spec_sha256": sha,
            "template": template,
            "message": if created {
                format!("workflow `{id}` submitted with {} steps", spec.steps.len())
            } else {
                format!("workflow `{id}` already exists with this spec; nothing new was submitted")
            },
        }))
    }

    /// The spec a submit request describes: its own `steps`, or a template
    /// instantiated with `parameters`.
    fn spec_of(
        &self,
        request: &mut Map<String, Value>,
    ) -> Result<(WorkflowSpec, Option<Value>), WorkflowError> {
        let template_id = request.remove("template_id");
        let version = request.remove("template_version");
        let parameters = request.remove("parameters");
        let Some(template_id) = template_id.filter(|v| !v.is_null()) else {
            if parameters.as_ref().is_some_and(|p| !p.is_null()) {
                return Err(WorkflowError::Invalid(
                    "parameters are for a template; pass template_id too, or leave parameters out"
                        .into(),
                ));
            }
            let spec: WorkflowSpec = serde_json::from_value(Value::Object(request.clone()))
                .map_err(|e| WorkflowError::Invalid(format!("the workflow spec: {e}")))?;
            return Ok((spec, None));
        };
        let template_id = template_id
            .as_str()
            .ok_or_else(|| WorkflowError::Invalid("template_id must be a string".into()))?
            .to_string();
        let version = version.filter(|v| !v.is_null()).map(|v| match v {
            Value::String(s) => s,
            other => other.to_string(),
        });
        let parameters = match parameters {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(p)) => p,
            Some(_) => {
                return Err(WorkflowError::Invalid(
                    "parameters must be a JSON object".into(),
                ));
            }
        };
        let workflow_id = request
            .get("workflow_id")
            .and_then(Value::as_str)
            .ok_or_else(|| WorkflowError::Invalid("workflow_id is required".into()))?
            .to_string();
        let templates = self.templates.read().unwrap_or_else(|e| e.into_inner());
        let template = templates
            .get(&template_id, version.as_deref())
            .ok_or_else(|| {
                let known: Vec<String> = templates
                    .list()
                    .iter()
                    .map(|t| format!("{} {}", t.template_id, t.version))
                    .collect();
                WorkflowError::Invalid(format!(
                    "there is no template `{template_id}`{}; templates: {}",
                    version
                        .as_deref()
                        .map(|v| format!(" version {v}"))
                        .unwrap_or_default(),
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ))
            })?;
        let mut spec = crate::template::instantiate(template, &parameters, &workflow_id)
            .map_err(|e| WorkflowError::Invalid(e.to_string()))?;
        // The request's own fields (a name, tags, priority…) win over the template's.
        if let Some(name) = request.get("name").and_then(Value::as_str) {
            spec.name = name.to_string();
        }
        if let Some(priority) = request.get("priority").and_then(Value::as_f64) {
            spec.priority = priority;
        }
        if let Some(Value::Array(tags)) = request.get("tags") {
            spec.tags = tags
                .iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect();
        }
        if let Some(Value::Array(deps)) = request.get("dependencies") {
            spec.dependencies = deps
                .iter()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect();
        }
        let pinned = json!({
            "template_id": template.template_id,
            "template_version": template.version,
            "template_sha256": template.sha256,
            "parameters": parameters,
        });
        Ok((spec, Some(pinned)))
    }

    fn remember(&self, id: &str, sha: &str, loaded: Loaded) {
        let mut specs = self.specs.lock().unwrap_or_else(|e| e.into_inner());
        if specs.len() >= SPEC_CACHE && !specs.contains_key(id) {
            specs.clear();
        }
        specs.insert(id.to_string(), (sha.to_string(), loaded));
    }

    /// The parsed spec and plan of a stored workflow.
    fn loaded(&self, w: &WorkflowRow) -> Result<Loaded, WorkflowError> {
        if let Some((sha, loaded)) = self
            .specs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&w.id)
            && *sha == w.spec_sha256
        {
            return Ok(loaded.clone());
        }
        let spec: WorkflowSpec = serde_json::from_str(&w.spec).map_err(|e| {
            WorkflowError::Invalid(format!("workflow `{}`'s stored spec: {e}", w.id))
        })?;
        // Tools may have been unloaded since: that fails the step when it runs, not the load.
        let plan = validate::validate(&spec, &|_| true).map_err(WorkflowError::Invalid)?;
        let loaded = Arc::new((spec, plan));
        self.remember(&w.id, &w.spec_sha256, loaded.clone());
        Ok(loaded)
    }

    fn workflow(&self, id: &str) -> Result<WorkflowRow, WorkflowError> {
        self.store
            .transaction(self.now(), |txn| {
                store::get_workflow(txn.conn(), id).map_err(WorkflowError::from)
            })?
            .ok_or_else(|| WorkflowError::NotFound(id.to_string()))
    }

    /// Advance one workflow (one transaction), then the workflows that were
    /// waiting for it if it finished.
    pub fn advance(&self, id: &str) -> Result<(), WorkflowError> {
        let w = self.workflow(id)?;
        let loaded = self.loaded(&w)?;
        let advanced = self.store.transaction(self.now(), |txn| {
            advance::advance(txn, id, &loaded.0, &loaded.1, &*self.cache)
        })?;
        self.follow_up(advanced);
        Ok(())
    }

    fn follow_up(&self, advanced: Advanced) {
        for dependent in advanced.dependents {
            if let Err(e) = self.advance(&dependent) {
                tracing::warn!(event = "workflow.advance_failed", workflow = %dependent, error = %e, "advancing a waiting workflow");
            }
        }
    }

    /// Advance every workflow with a step task the queue finished (or lost,
    /// or an operator re-queued). Returns how many were advanced.
    pub fn advance_due(&self) -> Result<usize, WorkflowError> {
        let due = self.store.transaction(self.now(), |txn| {
            store::workflows_to_advance(txn.conn()).map_err(WorkflowError::from)
        })?;
        for id in &due {
            if let Err(e) = self.advance(id) {
                tracing::warn!(event = "workflow.advance_failed", workflow = %id, error = %e, "advancing a workflow");
            }
        }
        Ok(due.len())
    }

    /// Advance every unfinished workflow: deadlines, steps waiting for room
    /// in the queue, start-up after a crash.
    pub fn sweep(&self) -> Result<(), WorkflowError> {
        if self.retention_ms > 0 {
            let purged = self.store.transaction(self.now(), |txn| {
                // The clock that stamped finished_at (the database's, on PostgreSQL).
                let before = txn.now().saturating_sub(self.retention_ms as i64);
                store::purge_finished(txn.conn(), before).map_err(WorkflowError::from)
            })?;
            if purged > 0 {
                tracing::info!(
                    event = "workflow.purged",
                    count = purged,
                    "finished workflows past [queue] retention_ms deleted"
                );
            }
        }
        let unfinished = self.store.transaction(self.now(), |txn| {
            store::unfinished(txn.conn(), SWEEP_BATCH).map_err(WorkflowError::from)
        })?;
        for id in &unfinished {
            if let Err(e) = self.advance(id) {
                tracing::warn!(event = "workflow.advance_failed", workflow = %id, error = %e, "sweeping a workflow");
            }
        }
        Ok(())
    }

    /// `workflow_status`.
    pub fn status(
        &self,
        id: &str,
        include_steps: bool,
        include_metrics: bool,
    ) -> Result<Value, WorkflowError> {
        let (w, steps) = self.read(id)?;
        let done = steps.iter().filter(|s| s.state.is_terminal()).count();
        let running: Vec<&str> = steps
            .iter()
            .filter(|s| s.state == StepState::Running)
            .map(|s| s.step_id.as_str())
            .collect();
        let mut answer = json!({
            "success": true,
            "workflow_id": w.id,
            "name": w.name,
            "status": w.state.as_str(),
            "progress": if steps.is_empty() { 0.0 } else { done as f64 / steps.len() as f64 },
            "current_step": running.first(),
            "running_steps": running,
            "peer_id": self.node,
            "created_time": w.created_at,
            "start_time": w.started_at,
            "end_time": w.finished_at,
            "error": w.error,
            "cancel_requested": w.cancel.map(CancelMode::as_str),
            "template": w.template,
        });
        if include_steps {
            answer["steps"] = Value::Array(steps.iter().map(step_json).collect());
        }
        if include_metrics {
            let count = |state: StepState| steps.iter().filter(|s| s.state == state).count();
            answer["metrics"] = json!({
                "total_steps": steps.len(),
                "steps_completed": count(StepState::Completed),
                "steps_failed": count(StepState::Failed),
                "steps_skipped": count(StepState::Skipped),
                "steps_cancelled": count(StepState::Cancelled),
                "steps_running": count(StepState::Running),
                "steps_pending": count(StepState::Pending) + count(StepState::Ready),
                "attempts": steps.iter().map(|s| s.attempts as u64).sum::<u64>(),
                "execution_time_ms": w.started_at.map(|s| w.finished_at.unwrap_or_else(|| self.now()) - s),
            });
        }
        Ok(answer)
    }

    fn read(&self, id: &str) -> Result<(WorkflowRow, Vec<StepRow>), WorkflowError> {
        self.store.transaction(self.now(), |txn| {
            let conn = txn.conn();
            let w = store::get_workflow(conn, id)?
                .ok_or_else(|| WorkflowError::NotFound(id.to_string()))?;
            let steps = store::steps(conn, id)?;
            Ok((w, steps))
        })
    }

    /// `workflow_list`, newest first.
    pub fn list(
        &self,
        status_filter: Option<&str>,
        tag_filter: &[String],
        limit: u64,
        offset: u64,
    ) -> Result<Value, WorkflowError> {
        if !(1..=1000).contains(&limit) {
            return Err(WorkflowError::Invalid(format!(
                "limit must be between 1 and 1000, got {limit}"
            )));
        }
        let state = match status_filter {
            None | Some("") => None,
            Some(text) => Some(WorkflowState::parse(text).ok_or_else(|| {
                WorkflowError::Invalid(format!(
                    "status_filter must be one of pending, running, completed, failed, cancelled; got `{text}`"
                ))
            })?),
        };
        let tags = (!tag_filter.is_empty()).then_some(tag_filter);
        let (page, total) = self.store.transaction(self.now(), |txn| {
            store::list(txn.conn(), state, tags, offset, limit).map_err(WorkflowError::from)
        })?;
        let workflows: Vec<Value> = page
            .iter()
            .map(|w| {
                json!({
                    "workflow_id": w.id, "name": w.name, "status": w.state.as_str(),
                    "tags": w.tags, "priority": w.priority, "created_time": w.created_at,
                    "start_time": w.started_at, "end_time": w.finished_at, "error": w.error,
                    "peer_id": self.node,
                })
            })
            .collect();
        Ok(json!({
            "success": true,
            "returned_count": workflows.len(),
            "workflows": workflows,
            "total_count": total,
            "has_more": offset + (page.len() as u64) < total,
        }))
    }

    /// `workflow_cancel`: graceful (nothing new starts, queued step tasks are
    /// cancelled, running ones finish) or forced (running ones are stopped at
    /// their next heartbeat). The request is stored, so it survives a crash.
    pub fn cancel(
        &self,
        id: &str,
        reason: Option<&str>,
        force: bool,
    ) -> Result<Value, WorkflowError> {
        let w = self.workflow(id)?;
        if w.state.is_terminal() {
            return Err(WorkflowError::Conflict(format!(
                "workflow `{id}` is already {}; only pending or running workflows can be cancelled",
                w.state
            )));
        }
        let loaded = self.loaded(&w)?;
        let mode = if force {
            CancelMode::Force
        } else {
            CancelMode::Graceful
        };
        let advanced = self.store.transaction(self.now(), |txn| {
            let now = txn.now();
            let conn = txn.conn();
            let mut w = store::lock_workflow(conn, id)?
                .ok_or_else(|| WorkflowError::NotFound(id.to_string()))?;
            // A forced cancel after a graceful one upgrades it; never the reverse.
            if w.cancel != Some(CancelMode::Force) {
                w.cancel = Some(mode);
            }
            if let Some(reason) = reason {
                w.cancel_reason = Some(reason.chars().take(1000).collect());
            }
            store::update_workflow(conn, &w)?;
            store::append_event(
                conn,
                id,
                now,
                None,
                "workflow.cancel_requested",
                Some(mode.as_str()),
            )?;
            advance::advance(txn, id, &loaded.0, &loaded.1, &*self.cache)
        })?;
        self.follow_up(advanced);
        let (w, steps) = self.read(id)?;
        let cancelled = steps
            .iter()
            .filter(|s| s.state == StepState::Cancelled)
            .count();
        let still_running = steps
            .iter()
            .filter(|s| s.state == StepState::Running)
            .count();
        Ok(json!({
            "success": true,
            "workflow_id": id,
            "status": if w.state.is_terminal() { w.state.as_str() } else { "cancelling" },
            "cancelled_steps": cancelled,
            "running_steps": still_running,
            "force": force,
            "message": if still_running > 0 && !force {
                format!("{cancelled} step(s) will not run; {still_running} running step(s) finish first (force=true stops them)")
            } else {
                format!("{cancelled} step(s) will not run")
            },
        }))
    }

    /// `workflow_result`.
    pub fn result(
        &self,
        id: &str,
        include_outputs: bool,
        include_logs: bool,
    ) -> Result<Value, WorkflowError> {
        let (w, steps) = self.read(id)?;
        let mut answer = json!({
            "success": true,
            "workflow_id": id,
            "status": w.state.as_str(),
            "result": w.result,
            "error": w.error,
            "execution_time": w.started_at.map(|s| (w.finished_at.unwrap_or_else(|| self.now()) - s) as f64 / 1000.0),
        });
        if include_outputs {
            answer["outputs"] = Value::Array(
                steps
                    .iter()
                    .map(|s| {
                        let mut out = step_json(s);
                        out["result"] = s.result.clone().unwrap_or(Value::Null);
                        out["output"] = s.output.clone().unwrap_or(Value::Null);
                        out
                    })
                    .collect(),
            );
        }
        if include_logs {
            let events = self.store.transaction(self.now(), |txn| {
                store::events(txn.conn(), id, store::MAX_EVENTS as u32 + 1)
                    .map_err(WorkflowError::from)
            })?;
            answer["logs"] = serde_json::to_value(events).unwrap_or_default();
        }
        Ok(answer)
    }

    /// `workflow_dependencies`: the graph in `json`, `dot` or `mermaid`, with
    /// the critical path.
    pub fn dependencies(&self, id: &str, fmt: &str) -> Result<Value, WorkflowError> {
        let format = Format::parse(fmt).map_err(WorkflowError::Invalid)?;
        let (w, steps) = self.read(id)?;
        let loaded = self.loaded(&w)?;
        let (spec, plan) = (&loaded.0, &loaded.1);
        let input = GraphInput {
            workflow_id: w.id.clone(),
            workflow_name: w.name.clone(),
            started_at_ms: w.started_at,
            finished_at_ms: w.finished_at,
            now_ms: self.now(),
            nodes: steps
                .iter()
                .map(|s| {
                    let step = &spec.steps[s.ord];
                    NodeView {
                        id: s.step_id.clone(),
                        label: step.name.clone().unwrap_or_else(|| s.step_id.clone()),
                        action: step.action.clone(),
                        status: s.state,
                        ready_at_ms: s.ready_at,
                        started_at_ms: s.started_at,
                        finished_at_ms: s.finished_at,
                        attempts: s.attempts,
                        items: s.items.as_ref().map(|i| i.len() as u32),
                    }
                })
                .collect(),
            edges: plan.edges.clone(),
        };
        let rendered = graph::render(&input, format);
        Ok(json!({
            "success": true,
            "workflow_id": id,
            "format": fmt,
            "dag": rendered.dag,
            "nodes": rendered.nodes,
            "edges": rendered.edges,
            "critical_path": rendered.critical_path.steps,
            "critical_path_ms": rendered.critical_path.length_ms,
            "critical_path_basis": rendered.critical_path.basis,
            "warnings": rendered.warnings,
        }))
    }

    /// `workflow_templates`: every template with its parameters' schema.
    pub fn templates(&self) -> Value {
        let templates = self.templates.read().unwrap_or_else(|e| e.into_inner());
        let list: Vec<Value> = templates
            .list()
            .iter()
            .map(|t| {
                json!({
                    "template_id": t.template_id, "version": t.version, "name": t.name,
                    "description": t.description, "parameters": t.parameters_schema,
                    "steps": t.steps.len(), "sha256": t.sha256,
                })
            })
            .collect();
        json!({"success": true, "templates": list, "total_count": list.len()})
    }
}

fn step_json(s: &StepRow) -> Value {
    json!({
        "step_id": s.step_id,
        "status": s.state.as_str(),
        "level": s.level,
        "reason": s.reason,
        "error": s.error,
        "continued": s.continued,
        "attempts": s.attempts,
        "items_total": s.items.as_ref().map(Vec::len),
        "items_done": s.items.as_ref().map(|_| s.items_done),
        "ready_time": s.ready_at,
        "start_time": s.started_at,
        "end_time": s.finished_at,
    })
}

/// JSON with object keys sorted at every level (serde_json keeps insertion
/// order in this workspace), so the same spec always hashes the same.
pub fn canonical_json(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&map[k])))
                        .collect(),
                )
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

/// Advance workflows as the queue changes: after every settled task
/// (without polling), and in a sweep every `sweep` for deadlines and room.
/// The first pass at start-up resumes what a crash interrupted.
pub fn spawn_driver(engine: Arc<Workflows>, sweep: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let store = engine.store.clone();
        let mut next_sweep = tokio::time::Instant::now();
        loop {
            let changed = store.change_signal().notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let engine2 = engine.clone();
            let sweep_now = tokio::time::Instant::now() >= next_sweep;
            let pass = tokio::task::spawn_blocking(move || -> Result<(), WorkflowError> {
                engine2.advance_due()?;
                if sweep_now {
                    engine2.sweep()?;
                }
                Ok(())
            })
            .await;
            match pass {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(event = "workflow.driver_error", error = %e, "advancing workflows")
                }
                Err(e) => {
                    tracing::error!(event = "workflow.driver_error", error = %e, "the workflow driver pass panicked")
                }
            }
            if sweep_now {
                next_sweep = tokio::time::Instant::now() + sweep;
            }
            tokio::select! {
                _ = &mut changed => {}
                _ = tokio::time::sleep_until(next_sweep) => {}
            }
        }
    })
}

impl From<StoreError> for WorkflowError {
    fn from(e: StoreError) -> Self {
        WorkflowError::Store(e)
    }
}
