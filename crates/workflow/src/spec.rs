//! What a client submits: a workflow and its steps, as the original MCP++
//! `workflow_submit` took them (`{step_id, action, inputs, depends_on}`),
//! plus the durable-engine fields (docs/workflows.md). Parsing is strict:
//! an unknown field is refused with the fields that exist, because a typo
//! such as `depend_on` would otherwise silently drop an edge.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// At most this many steps in one workflow.
pub const MAX_STEPS: usize = 1_000;
/// At most this many items in one `for_each`.
pub const MAX_ITEMS: usize = 10_000;
/// The longest workflow id.
pub const MAX_WORKFLOW_ID: usize = 128;
/// The longest step id (`[A-Za-z0-9_-]{1,64}`).
pub const MAX_STEP_ID: usize = 64;
/// The largest spec, as JSON text.
pub const MAX_SPEC_BYTES: usize = 4 << 20;
/// The largest resolved arguments of one step task, as JSON text.
pub const MAX_ARGUMENT_BYTES: usize = 1 << 20;
/// Steps running at once in a workflow unless it says otherwise (the original's `max_concurrent`).
pub const DEFAULT_MAX_PARALLEL: u32 = 10;

/// A workflow as submitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkflowSpec {
    pub workflow_id: String,
    pub name: String,
    pub steps: Vec<StepSpec>,
    /// Higher runs first; every step task inherits it (> 0).
    #[serde(default = "default_priority")]
    pub priority: f64,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Other workflows that must complete before this one starts.
    #[serde(default)]
    pub dependencies: Vec<String>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(default)]
    pub on_failure: OnFailure,
    /// Step tasks running (or queued) at once.
    #[serde(default = "default_max_parallel")]
    pub max_parallel: u32,
    /// The whole workflow's deadline from its start.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// What `workflow_result` returns as `result`: a JSON value whose
    /// `${steps.…}` references are resolved at the end. Without it, the
    /// results of the sink steps (those nothing depends on), by step id.
    #[serde(default)]
    pub output: Option<Value>,
}

/// One step: a call of the tool `action` with `inputs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSpec {
    pub step_id: String,
    /// The tool to call (its MCP name).
    pub action: String,
    /// The tool's arguments; strings may hold `${…}` references.
    #[serde(default)]
    pub inputs: Map<String, Value>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Run only when this JSON predicate holds (see `condition`).
    #[serde(default)]
    pub when: Option<Value>,
    /// Run once per item of this array (a literal array or a reference to one).
    #[serde(default)]
    pub for_each: Option<Value>,
    /// Items of this step's `for_each` running at once (within the workflow's `max_parallel`).
    #[serde(default)]
    pub max_parallel: Option<u32>,
    #[serde(default)]
    pub retry: Option<RetrySpec>,
    /// Per-attempt time limit.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    #[serde(default)]
    pub trigger: Trigger,
    /// A failure of this step does not skip its dependents (it stays `failed`, marked `continued`).
    #[serde(default)]
    pub continue_on_error: bool,
    /// A label for graphs; the step id when absent.
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: u32,
    /// Backoff before attempt n+1 is `backoff_ms * 2^(n-1)` (the queue's rule).
    #[serde(default = "default_backoff_ms")]
    pub backoff_ms: u64,
}

/// What happens to the rest of the workflow when a step fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// Nothing new starts; running steps finish; the rest are skipped.
    #[default]
    Stop,
    /// Only the failed step's transitive dependents are skipped.
    Continue,
}

/// When a step with dependencies may run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Every dependency completed (or failed with `continue_on_error`).
    #[default]
    AllSuccess,
    /// Every dependency finished, whatever the outcome (clean-up, partial fan-in).
    AllDone,
}

fn default_priority() -> f64 {
    1.0
}

fn default_max_parallel() -> u32 {
    DEFAULT_MAX_PARALLEL
}

fn default_backoff_ms() -> u64 {
    1_000
}

impl StepSpec {
    /// A bare step (tests, templates).
    pub fn new(step_id: impl Into<String>, action: impl Into<String>) -> Self {
        Self {
            step_id: step_id.into(),
            action: action.into(),
            inputs: Map::new(),
            depends_on: Vec::new(),
            when: None,
            for_each: None,
            max_parallel: None,
            retry: None,
            timeout_ms: None,
            trigger: Trigger::AllSuccess,
            continue_on_error: false,
            name: None,
            description: None,
        }
    }
}

/// Whether `id` may name a step: `[A-Za-z0-9_-]{1,64}`.
pub fn is_valid_step_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_STEP_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Where a workflow is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkflowState {
    /// Waiting for the workflows it depends on.
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
}

/// Where a step is: the original's six states plus `cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Waiting for its dependencies.
    Pending,
    /// Its dependencies are done; waiting for a free slot of `max_parallel`.
    Ready,
    /// Its task (or some of its items' tasks) is in the queue.
    Running,
    Completed,
    Failed,
    /// Will not run (a condition was false, or a dependency failed or was skipped).
    Skipped,
    Cancelled,
}

macro_rules! str_enum {
    ($ty:ty { $($variant:ident => $text:literal),* $(,)? }) => {
        impl $ty {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),* }
            }
            pub fn parse(text: &str) -> Option<Self> {
                match text { $($text => Some(Self::$variant),)* _ => None }
            }
        }
        impl std::fmt::Display for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

str_enum!(WorkflowState {
    Pending => "pending", Running => "running", Completed => "completed",
    Failed => "failed", Cancelled => "cancelled",
});
str_enum!(StepState {
    Pending => "pending", Ready => "ready", Running => "running", Completed => "completed",
    Failed => "failed", Skipped => "skipped", Cancelled => "cancelled",
});

impl WorkflowState {
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

impl StepState {
    /// Finished, one way or another: nothing more will happen to it (unless a redrive).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Failed | Self::Skipped | Self::Cancelled
        )
    }
}
