//! `mcpplus:host/workflow`: workflows (durable DAGs of tool calls run as
//! tasks of the queue), for components whose policy grants `[workflow]
//! submit` (submit, status, list, result, dependencies, templates) or
//! `[workflow] admin` (also cancel). Refusals are audit events and
//! `workflow-error.denied` values that name the grant to add. The engine is
//! `mcpplus-workflow`'s, attached by the server; its answers are JSON objects
//! in the original MCP++ shapes and cross to the guest as JSON text.

use std::sync::Arc;

use serde_json::Value;

use super::bindings::workflow::{Host, WorkflowError};
use crate::host_state::HostState;
use mcpplus_policy::imports::Capability;
use mcpplus_workflow::{WorkflowError as EngineError, Workflows};

/// What `unavailable` says when this process runs no workflow engine.
const NO_ENGINE: &str = "this server runs no workflow engine: workflows need the task queue on its SQLite backend ([queue] backend = \"sqlite\", the default; the PostgreSQL backend does not run workflows yet) and a usable --data-dir";

#[derive(Clone, Copy, PartialEq)]
enum Needs {
    /// `[workflow] submit` or `admin`.
    Submit,
    Admin,
}

impl HostState {
    /// The workflow engine, if this call may use `function`.
    fn workflows_for(&self, function: &str, needs: Needs) -> Result<Arc<Workflows>, WorkflowError> {
        let grants = self.workflow_grants();
        let allowed = match needs {
            Needs::Submit => grants.submit || grants.admin,
            Needs::Admin => grants.admin,
        };
        if !allowed {
            let grant = match needs {
                Needs::Submit => "[workflow] submit = true (or admin = true)",
                Needs::Admin => "[workflow] admin = true",
            };
            return Err(WorkflowError::Denied(self.call().refuse_function(
                Capability::Workflow,
                "mcpplus:host/workflow",
                function,
                grant,
            )));
        }
        self.workflow_engine()
            .cloned()
            .ok_or_else(|| WorkflowError::Unavailable(NO_ENGINE.into()))
    }
}

fn to_wit_error(e: EngineError) -> WorkflowError {
    match e {
        EngineError::Invalid(m) => WorkflowError::Invalid(m),
        e @ EngineError::NotFound(_) => WorkflowError::NotFound(e.to_string()),
        EngineError::Conflict(m) => WorkflowError::Conflict(m),
        e @ EngineError::Store(_) => WorkflowError::Unavailable(e.to_string()),
    }
}

/// An engine answer: every method answers `Result<Value, _>`, except those
/// that cannot fail, which answer the `Value` itself.
trait Answer {
    fn into_answer(self) -> Result<Value, EngineError>;
}

impl Answer for Value {
    fn into_answer(self) -> Result<Value, EngineError> {
        Ok(self)
    }
}

impl Answer for Result<Value, EngineError> {
    fn into_answer(self) -> Result<Value, EngineError> {
        self
    }
}

/// Run an engine call off the async threads (it does SQLite work, and a
/// commit fsyncs), and hand its answer to the guest as JSON text.
async fn on_engine<A: Answer + Send + 'static>(
    engine: Arc<Workflows>,
    f: impl FnOnce(&Workflows) -> A + Send + 'static,
) -> Result<String, WorkflowError> {
    match tokio::task::spawn_blocking(move || f(&engine).into_answer()).await {
        Ok(answer) => answer.map(|v| v.to_string()).map_err(to_wit_error),
        Err(e) => Err(WorkflowError::Unavailable(format!(
            "the workflow operation did not finish: {e}"
        ))),
    }
}

impl Host for HostState {
    async fn submit(&mut self, request: String) -> Result<String, WorkflowError> {
        let engine = self.workflows_for("submit", Needs::Submit)?;
        let request: Value = serde_json::from_str(&request).map_err(|e| {
            WorkflowError::Invalid(format!("the workflow request is not valid JSON: {e}"))
        })?;
        on_engine(engine, move |w| w.submit(request)).await
    }

    async fn status(
        &mut self,
        workflow_id: String,
        include_steps: bool,
        include_metrics: bool,
    ) -> Result<String, WorkflowError> {
        let engine = self.workflows_for("status", Needs::Submit)?;
        on_engine(engine, move |w| {
            w.status(&workflow_id, include_steps, include_metrics)
        })
        .await
    }

    async fn cancel(
        &mut self,
        workflow_id: String,
        reason: Option<String>,
        force: bool,
    ) -> Result<String, WorkflowError> {
        let engine = self.workflows_for("cancel", Needs::Admin)?;
        on_engine(engine, move |w| {
            w.cancel(&workflow_id, reason.as_deref(), force)
        })
        .await
    }

    async fn list(
        &mut self,
        status_filter: Option<String>,
        tag_filter: Vec<String>,
        limit: u32,
        offset: u64,
    ) -> Result<String, WorkflowError> {
        let engine = self.workflows_for("list", Needs::Submit)?;
        on_engine(engine, move |w| {
            w.list(
                status_filter.as_deref(),
                &tag_filter,
                u64::from(limit),
                offset,
            )
        })
        .await
    }

    async fn dependencies(
        &mut self,
        workflow_id: String,
        format: String,
    ) -> Result<String, WorkflowError> {
        let engine = self.workflows_for("dependencies", Needs::Submit)?;
        on_engine(engine, move |w| w.dependencies(&workflow_id, &format)).await
    }

    async fn result(
        &mut self,
        workflow_id: String,
        include_outputs: bool,
        include_logs: bool,
    ) -> Result<String, WorkflowError> {
        let engine = self.workflows_for("result", Needs::Submit)?;
        on_engine(engine, move |w| {
            w.result(&workflow_id, include_outputs, include_logs)
        })
        .await
    }

    async fn templates(&mut self) -> Result<String, WorkflowError> {
        let engine = self.workflows_for("templates", Needs::Submit)?;
        on_engine(engine, |w| w.templates()).await
    }
}
