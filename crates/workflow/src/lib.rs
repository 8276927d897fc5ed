//! Workflows (docs/workflows.md): a workflow is a DAG of steps, each step a
//! call of a tool, run as tasks of the durable queue. This crate owns the
//! spec and its validation (`spec`, `validate`), the `${…}` references
//! between steps (`reference`), `when` conditions (`condition`), templates
//! (`template`), graph output (`graph`), and the controller over the queue's
//! database (`store`, `advance`, `engine`). It depends on the queue and
//! nothing above it.

pub mod advance;
pub mod condition;
pub mod engine;
pub mod graph;
pub mod outcome;
pub mod reference;
pub mod spec;
pub mod store;
pub mod template;
pub mod validate;

pub use advance::CacheRule;
pub use engine::{WorkflowOptions, Workflows, spawn_driver};

/// Why a workflow request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    /// The request itself is wrong; the text says what to fix.
    #[error("{0}")]
    Invalid(String),
    #[error("there is no workflow `{0}`; workflow_list shows the workflows there are")]
    NotFound(String),
    /// It conflicts with what exists (an id reused with another spec, a
    /// workflow already finished).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Store(mcpplus_queue::StoreError),
}
