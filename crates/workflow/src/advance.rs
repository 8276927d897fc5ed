//! `advance(workflow)`: one transaction, a deterministic function of what is
//! on disk, safe to run any number of times. It copies finished step tasks'
//! outcomes into the step rows, finishes steps, skips what can no longer
//! run, makes steps ready whose dependencies are done, submits tasks up to
//! the workflow's `max_parallel`, and closes the workflow when nothing is
//! left. Crash safety rests on the queue: a task's outcome is on disk before
//! an advance reads it, an advance commits whole or not at all, and a repeated
//! advance gets the tasks it submitted before back through their keys.

use std::collections::BTreeSet;

use mcpplus_queue::{NewTask, StoreError, TaskState, Txn};
use serde_json::{Value, json};

use crate::outcome::result_of;
use crate::reference::{self, Scope, StepField};
use crate::spec::{
    MAX_ARGUMENT_BYTES, MAX_ITEMS, OnFailure, StepSpec, StepState, Trigger, WorkflowSpec,
    WorkflowState,
};
use crate::store::{self, CancelMode, OPEN, SkipKind, StepRow, TaskRow, WorkflowRow};
use crate::validate::Plan;
use crate::{WorkflowError, condition};

/// Attempts of a step task when its spec says nothing (the queue's default):
/// more than one, so a worker lost in a crash does not fail the step.
const DEFAULT_ATTEMPTS: u32 = 3;
const DEFAULT_BACKOFF_MS: u64 = 1_000;

/// What an advance did that its caller acts on.
#[derive(Debug, Default)]
pub struct Advanced {
    /// The workflow finished in this advance.
    pub closed: bool,
    /// Workflows waiting for this one (advance them next).
    pub dependents: Vec<String>,
}

/// The task id (and idempotency key) of a step, or of item `i` of a for_each.
pub fn task_id(workflow: &str, step: &str, item: Option<usize>) -> String {
    match item {
        None => format!("wf:{workflow}:{step}"),
        Some(i) => format!("wf:{workflow}:{step}:{i}"),
    }
}

/// Whether a tool's results may be reused, and under which identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRule {
    /// The serving component's sha256: a new build is a new cache.
    pub component_sha256: String,
    /// How long a result stays usable (`None`: while the component is the same).
    pub ttl_ms: Option<u64>,
}

/// Which tools' results may be reused (from their components' policies).
pub type CacheRules<'a> = &'a (dyn Fn(&str) -> Option<CacheRule> + Send + Sync);

/// The cache key of a call: sha256 of the canonical JSON (keys sorted) of
/// `["v1", tool, component sha256, arguments]`.
pub fn cache_key(tool: &str, rule: &CacheRule, arguments: &Value) -> String {
    use sha2::Digest as _;
    let canonical =
        crate::engine::canonical_json(&json!(["v1", tool, rule.component_sha256, arguments]));
    hex::encode(sha2::Sha256::digest(canonical.as_bytes()))
}

pub fn advance(
    txn: &mut Txn<'_>,
    workflow: &str,
    spec: &WorkflowSpec,
    plan: &Plan,
    cache: CacheRules<'_>,
) -> Result<Advanced, WorkflowError> {
    let conn = txn.conn();
    let Some(w) = store::lock_workflow(conn, workflow)? else {
        return Ok(Advanced::default());
    };
    let steps = store::steps(conn, workflow)?;
    let tasks = store::tasks(conn, workflow)?;
    let run = Run {
        now: txn.now(),
        cache,
        txn,
        w,
        spec,
        plan,
        steps,
        tasks,
        dirty_steps: BTreeSet::new(),
        dirty_tasks: BTreeSet::new(),
        events: Vec::new(),
        workflow_dirty: false,
        cache_hits: 0,
    };
    run.advance()
}

struct Run<'a, 't, 'c> {
    txn: &'t mut Txn<'c>,
    cache: CacheRules<'a>,
    now: i64,
    w: WorkflowRow,
    spec: &'a WorkflowSpec,
    plan: &'a Plan,
    steps: Vec<StepRow>,
    tasks: Vec<TaskRow>,
    dirty_steps: BTreeSet<usize>,
    dirty_tasks: BTreeSet<usize>,
    events: Vec<(Option<String>, &'static str, Option<String>)>,
    workflow_dirty: bool,
    /// A step or item completed from the cache in this advance: look again,
    /// since no task will wake the driver for it.
    cache_hits: usize,
}

impl Run<'_, '_, '_> {
    fn advance(mut self) -> Result<Advanced, WorkflowError> {
        let redriven = self.sync_tasks()?;
        if self.w.state.is_terminal() && !redriven {
            return Ok(Advanced::default());
        }
        if redriven {
            self.reopen();
        }
        if self.w.state == WorkflowState::Pending && self.w.cancel.is_some() {
            // Cancelled while waiting for its dependencies: it closes now.
            self.w.state = WorkflowState::Running;
            self.w.started_at = Some(self.now);
            self.workflow_dirty = true;
        }
        if self.w.state == WorkflowState::Pending && !self.start_when_needs_done()? {
            return self.save(false);
        }
        self.check_deadline();
        if self.w.cancel.is_some() {
            // Copy what the cancel settled at once, so the steps finish in
            // this advance rather than the next.
            self.cancel_tasks()?;
            self.sync_tasks()?;
        }
        // Steps completed from the cache finish (and free their dependents)
        // in the same advance; each round starts at least one step more.
        for _ in 0..=self.steps.len() {
            self.cache_hits = 0;
            self.finish_running_steps()?;
            self.settle_pending_steps();
            if self.w.cancel.is_none() && self.stopped_by().is_none() {
                self.start_ready_steps()?;
            }
            if self.cache_hits == 0 {
                break;
            }
        }
        let closed = self.close_if_done();
        self.save(closed)
    }

    fn event(&mut self, step: Option<&str>, kind: &'static str, detail: Option<String>) {
        self.events.push((step.map(str::to_string), kind, detail));
    }

    fn step_index(&self, step_id: &str) -> Option<usize> {
        self.steps.iter().position(|s| s.step_id == step_id)
    }

    /// Copy finished tasks' outcomes; resubmit tasks the queue lost (cleared);
    /// reopen failed ones an operator re-queued. True when something reopened.
    fn sync_tasks(&mut self) -> Result<bool, WorkflowError> {
        let mut redriven = false;
        for i in 0..self.tasks.len() {
            let row = &self.tasks[i];
            // A completed row is final (its step may be redriven only through
            // a failed or cancelled task), and a cached one has no task.
            if row.state == TaskState::Completed.as_str() {
                continue;
            }
            let task = self.txn.get(&row.task_id)?;
            match task {
                None if row.state == OPEN => {
                    // Cleared from the queue before its outcome was copied.
                    let (step_id, item) = (row.step_id.clone(), row.item);
                    if let Some(s) = self.step_index(&step_id) {
                        self.event(
                            Some(&step_id),
                            "step.task_lost",
                            Some(format!(
                                "task {} left the queue unobserved; submitting it again",
                                row.task_id
                            )),
                        );
                        self.submit(s, item)?;
                    }
                }
                None => {}
                Some(task) if row.state == OPEN && task.state.is_terminal() => {
                    if task.state == TaskState::Completed {
                        self.remember_result(&task)?;
                    }
                    let row = &mut self.tasks[i];
                    row.state = task.state.as_str().to_string();
                    row.output = task.result.clone();
                    row.error = task.error.clone();
                    row.attempts = task.attempt;
                    row.started_at = task.started_ms;
                    row.finished_at = task.finished_ms.or(Some(self.now));
                    self.dirty_tasks.insert(i);
                }
                Some(task)
                    if row.state != OPEN
                        && row.state != TaskState::Completed.as_str()
                        && !task.state.is_terminal() =>
                {
                    let step_id = row.step_id.clone();
                    let row = &mut self.tasks[i];
                    row.state = OPEN.to_string();
                    row.error = None;
                    row.finished_at = None;
                    self.dirty_tasks.insert(i);
                    if let Some(s) = self.step_index(&step_id) {
                        let step = &mut self.steps[s];
                        step.state = StepState::Running;
                        step.finished_at = None;
                        step.error = None;
                        step.reason = None;
                        step.continued = false;
                        self.dirty_steps.insert(s);
                    }
                    self.event(
                        Some(&step_id),
                        "step.redriven",
                        Some(format!("task {} re-queued", task.id)),
                    );
                    redriven = true;
                }
                Some(_) => {}
            }
        }
        Ok(redriven)
    }

    /// Keep a completed call's result when its tool is cacheable.
    fn remember_result(&self, task: &mcpplus_queue::Task) -> Result<(), WorkflowError> {
        let Some(rule) = (self.cache)(&task.tool) else {
            return Ok(());
        };
        let Some(output) = &task.result else {
            return Ok(());
        };
        if output.get("isError").and_then(Value::as_bool) == Some(true) {
            return Ok(());
        }
        let key = cache_key(&task.tool, &rule, &task.arguments);
        store::cache_put(
            self.txn.conn(),
            &key,
            &task.tool,
            &rule.component_sha256,
            output,
            &task.id,
            self.now,
            rule.ttl_ms,
        )?;
        Ok(())
    }

    /// A redrive: the workflow runs again, and the steps skipped because of
    /// the failure are looked at again.
    fn reopen(&mut self) {
        if self.w.state.is_terminal() {
            self.w.state = WorkflowState::Running;
            self.w.finished_at = None;
            self.w.error = None;
            self.w.result = None;
            self.workflow_dirty = true;
            self.event(None, "workflow.redriven", None);
        }
        for (i, step) in self.steps.iter_mut().enumerate() {
            if step.state == StepState::Skipped
                && matches!(step.skip_kind, Some(SkipKind::Upstream | SkipKind::Stopped))
            {
                step.state = StepState::Pending;
                step.reason = None;
                step.skip_kind = None;
                step.finished_at = None;
                self.dirty_steps.insert(i);
            }
        }
    }

    /// A pending workflow starts when the workflows it needs completed; one
    /// that failed or was cancelled fails it.
    fn start_when_needs_done(&mut self) -> Result<bool, WorkflowError> {
        let needs = store::needs(self.txn.conn(), &self.w.id)?;
        for need in &needs {
            match store::get_workflow(self.txn.conn(), need)?.map(|w| w.state) {
                Some(WorkflowState::Completed) => {}
                Some(state) if state.is_terminal() => {
                    self.fail_workflow(format!(
                        "workflow `{need}`, which this one depends on, {state}"
                    ));
                    for i in 0..self.steps.len() {
                        self.skip(
                            i,
                            SkipKind::Upstream,
                            format!("depends on workflow `{need}`, which {state}"),
                        );
                    }
                    return Ok(false);
                }
                _ => return Ok(false),
            }
        }
        self.w.state = WorkflowState::Running;
        self.w.started_at = Some(self.now);
        self.w.deadline = self
            .spec
            .timeout_ms
            .map(|t| self.now.saturating_add(t as i64));
        self.workflow_dirty = true;
        self.event(None, "workflow.started", None);
        Ok(true)
    }

    fn fail_workflow(&mut self, error: String) {
        self.w.state = WorkflowState::Failed;
        self.w.error = Some(error.clone());
        self.w.finished_at = Some(self.now);
        self.workflow_dirty = true;
        self.event(None, "workflow.failed", Some(error));
    }

    /// A running step whose tasks are all settled (and, for a for_each, all
    /// items submitted or no more to be) finishes.
    fn finish_running_steps(&mut self) -> Result<(), WorkflowError> {
        for s in 0..self.steps.len() {
            if self.steps[s].state != StepState::Running {
                continue;
            }
            let step_id = self.steps[s].step_id.clone();
            let mine: Vec<&TaskRow> = self.tasks.iter().filter(|t| t.step_id == step_id).collect();
            if mine.iter().any(|t| t.state == OPEN) {
                // Progress of a for_each is visible while it runs.
                let done = mine.iter().filter(|t| t.state != OPEN).count();
                if self.steps[s].items.is_some() && self.steps[s].items_done != done {
                    self.steps[s].items_done = done;
                    self.dirty_steps.insert(s);
                }
                continue;
            }
            let spec = &self.spec.steps[self.steps[s].ord];
            let item_failed = mine
                .iter()
                .any(|t| t.state != TaskState::Completed.as_str());
            let more_items = self.steps[s]
                .items
                .as_ref()
                .is_some_and(|items| self.steps[s].items_submitted < items.len());
            let may_continue = !item_failed || spec.continue_on_error;
            // A cancel or a stop (another step failed) starts no more items:
            // the step ends once the running ones settle.
            let halted = self.w.cancel.is_some() || self.stopped_by().is_some();
            if more_items && may_continue && !halted {
                continue; // more items to submit
            }
            let cached: Vec<&str> = mine
                .iter()
                .filter_map(|t| t.cached_from.as_deref())
                .collect();
            let attempts = mine.iter().map(|t| t.attempts).sum();
            let started = mine.iter().filter_map(|t| t.started_at).min();
            let finished = mine
                .iter()
                .filter_map(|t| t.finished_at)
                .max()
                .unwrap_or(self.now);
            // Outputs are read only now, when the step finishes.
            let stored = store::task_outputs(self.txn.conn(), &self.w.id, &step_id)?;
            let filled: Vec<TaskRow> = mine
                .iter()
                .map(|t| {
                    let mut t = (*t).clone();
                    if t.output.is_none() {
                        t.output = stored.get(&t.task_id).cloned();
                    }
                    t
                })
                .collect();
            let mine: Vec<&TaskRow> = filled.iter().collect();
            let outcome = if self.steps[s].items.is_some() {
                map_outcome(
                    &mine,
                    self.steps[s].items.as_ref().map_or(0, Vec::len),
                    spec.continue_on_error,
                    more_items,
                )
            } else {
                single_outcome(mine.first().copied())
            };
            let step = &mut self.steps[s];
            step.attempts = attempts;
            step.started_at = started.or(step.started_at);
            step.finished_at = Some(finished);
            step.items_done = mine.len();
            step.output = outcome.output;
            step.result = outcome.result;
            step.error = outcome.error.clone();
            step.state = outcome.state;
            step.continued = outcome.state == StepState::Failed && spec.continue_on_error;
            step.reason = outcome.reason.or_else(|| match cached.as_slice() {
                [] => None,
                [one] if mine.len() == 1 => {
                    Some(format!("cached: the result of task {one}, not run again"))
                }
                some => Some(format!(
                    "cached: {} of {} items reused, not run again",
                    some.len(),
                    mine.len()
                )),
            });
            self.dirty_steps.insert(s);
            let kind = match outcome.state {
                StepState::Completed => "step.completed",
                StepState::Cancelled => "step.cancelled",
                _ => "step.failed",
            };
            self.event(Some(&step_id), kind, outcome.error);
        }
        Ok(())
    }

    /// The workflow's deadline passed: it fails, and its running steps are
    /// stopped as a forced cancel would.
    fn check_deadline(&mut self) {
        if let Some(deadline) = self.w.deadline
            && self.now >= deadline
            && !self.w.timed_out
        {
            self.w.timed_out = true;
            self.w.cancel = Some(CancelMode::Force);
            self.w.cancel_reason = Some(format!(
                "timed out after {} ms",
                self.spec.timeout_ms.unwrap_or_default()
            ));
            self.workflow_dirty = true;
            self.event(None, "workflow.timed_out", self.w.cancel_reason.clone());
        }
    }

    /// Cancel the step tasks a cancel covers: queued ones (graceful), and
    /// running ones too (force). Repeated on every advance until none is
    /// left, so a crash mid-cancel resumes cancelling.
    fn cancel_tasks(&mut self) -> Result<(), WorkflowError> {
        let force = self.w.cancel == Some(CancelMode::Force);
        let reason = format!(
            "workflow `{}` cancelled{}",
            self.w.id,
            self.w
                .cancel_reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
        for t in 0..self.tasks.len() {
            if self.tasks[t].state != OPEN {
                continue;
            }
            let id = self.tasks[t].task_id.clone();
            let Some(task) = self.txn.get(&id)? else {
                continue;
            };
            let cancel = match task.state {
                TaskState::Queued => true,
                TaskState::Running => force,
                _ => false,
            };
            if cancel {
                self.txn.cancel(&id, &reason)?;
            }
        }
        Ok(())
    }

    /// Why nothing new may start: the first failed step (not continued) under
    /// `on_failure = stop`.
    fn stopped_by(&self) -> Option<String> {
        if self.spec.on_failure != OnFailure::Stop {
            return None;
        }
        self.steps
            .iter()
            .find(|s| s.state == StepState::Failed && !s.continued)
            .map(|s| s.step_id.clone())
    }

    fn skip(&mut self, s: usize, kind: SkipKind, reason: String) {
        let step = &mut self.steps[s];
        if step.state.is_terminal() || step.state == StepState::Running {
            return;
        }
        step.state = StepState::Skipped;
        step.skip_kind = Some(kind);
        step.reason = Some(reason.clone());
        step.finished_at = Some(self.now);
        let id = step.step_id.clone();
        self.dirty_steps.insert(s);
        self.event(Some(&id), "step.skipped", Some(reason));
    }

    fn cancel_step(&mut self, s: usize) {
        let reason = format!(
            "workflow cancelled{}",
            self.w
                .cancel_reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
        let step = &mut self.steps[s];
        step.state = StepState::Cancelled;
        step.reason = Some(reason.clone());
        step.finished_at = Some(self.now);
        let id = step.step_id.clone();
        self.dirty_steps.insert(s);
        self.event(Some(&id), "step.cancelled", Some(reason));
    }

    /// Decide every pending step whose dependencies are all finished: skip it,
    /// fail it (a condition or reference that cannot be evaluated), or make
    /// it ready. Steps are visited by level, so one pass settles chains of skips.
    fn settle_pending_steps(&mut self) {
        let mut order: Vec<usize> = (0..self.steps.len()).collect();
        order.sort_by_key(|&i| (self.plan.levels[self.steps[i].ord], self.steps[i].ord));
        for s in order {
            if !matches!(self.steps[s].state, StepState::Pending | StepState::Ready) {
                continue;
            }
            if self.w.cancel.is_some() {
                self.cancel_step(s);
                continue;
            }
            let deps = &self.plan.deps[self.steps[s].ord];
            let dep_rows: Vec<&StepRow> =
                // Step rows are stored in spec order, one per step.
                deps.iter().map(|&d| &self.steps[d]).collect();
            if dep_rows.iter().any(|d| !d.state.is_terminal()) {
                continue;
            }
            if let Some(failed) = self.stopped_by() {
                self.skip(
                    s,
                    SkipKind::Stopped,
                    format!("workflow stopped: step {failed} failed"),
                );
                continue;
            }
            if self.steps[s].state == StepState::Ready {
                continue;
            }
            let spec = &self.spec.steps[self.steps[s].ord];
            if spec.trigger == Trigger::AllSuccess {
                let failed: Vec<&str> = dep_rows
                    .iter()
                    .filter(|d| {
                        (d.state == StepState::Failed && !d.continued)
                            || d.state == StepState::Cancelled
                    })
                    .map(|d| d.step_id.as_str())
                    .collect();
                let skipped: Vec<&str> = dep_rows
                    .iter()
                    .filter(|d| d.state == StepState::Skipped)
                    .map(|d| d.step_id.as_str())
                    .collect();
                if !failed.is_empty() {
                    let reason = format!("depends on failed step(s): {}", failed.join(", "));
                    self.skip(s, SkipKind::Upstream, reason);
                    continue;
                }
                if !skipped.is_empty() {
                    let reason = format!("depends on skipped step(s): {}", skipped.join(", "));
                    self.skip(s, SkipKind::Upstream, reason);
                    continue;
                }
            }
            let ready_at = dep_rows
                .iter()
                .filter_map(|d| d.finished_at)
                .max()
                .or(self.w.started_at)
                .unwrap_or(self.now);
            let decided = {
                let scope = self.scope(None, None);
                let when = spec.when.as_ref().map(|w| condition::evaluate(w, &scope));
                let items = spec.for_each.as_ref().map(|f| resolve_items(f, &scope));
                (when, items)
            };
            match decided {
                (Some(Err(e)), _) => self.fail_step(s, format!("when: {e}"), ready_at),
                (Some(Ok(false)), _) => {
                    self.steps[s].ready_at = Some(ready_at);
                    self.skip(s, SkipKind::Condition, "condition false".into());
                }
                (_, Some(Err(e))) => self.fail_step(s, format!("for_each: {e}"), ready_at),
                (_, items) => {
                    let step = &mut self.steps[s];
                    step.state = StepState::Ready;
                    step.ready_at = Some(ready_at);
                    step.items = items.map(Result::unwrap);
                    self.dirty_steps.insert(s);
                }
            }
        }
    }

    fn fail_step(&mut self, s: usize, error: String, ready_at: i64) {
        let spec = &self.spec.steps[self.steps[s].ord];
        let continued = spec.continue_on_error;
        let step = &mut self.steps[s];
        step.state = StepState::Failed;
        step.error = Some(error.clone());
        step.ready_at.get_or_insert(ready_at);
        step.finished_at = Some(self.now);
        step.continued = continued;
        let id = step.step_id.clone();
        self.dirty_steps.insert(s);
        self.event(Some(&id), "step.failed", Some(error));
    }

    fn scope<'s>(&'s self, item: Option<&'s Value>, index: Option<usize>) -> RunScope<'s> {
        RunScope {
            workflow_id: &self.w.id,
            steps: &self.steps,
            item,
            index,
        }
    }

    fn open_tasks(&self) -> usize {
        self.tasks.iter().filter(|t| t.state == OPEN).count()
    }

    /// Submit ready steps (and more items of running for_each steps) while
    /// the workflow's `max_parallel` and the queue have room.
    fn start_ready_steps(&mut self) -> Result<(), WorkflowError> {
        let mut free = (self.spec.max_parallel as usize).saturating_sub(self.open_tasks());
        for s in 0..self.steps.len() {
            if free == 0 || self.txn.room() == 0 {
                break;
            }
            let spec = &self.spec.steps[self.steps[s].ord];
            let total = self.steps[s].items.as_ref().map(Vec::len);
            match (self.steps[s].state, total) {
                (StepState::Ready, None) if self.submit(s, None)? => free -= 1,
                (StepState::Ready | StepState::Running, Some(total)) => {
                    if self.steps[s].state == StepState::Ready {
                        self.steps[s].state = StepState::Running;
                        self.steps[s].started_at = Some(self.now);
                        self.dirty_steps.insert(s);
                        self.event(
                            Some(&spec.step_id.clone()),
                            "step.started",
                            Some(format!("{total} items")),
                        );
                        if total == 0 {
                            let step = &mut self.steps[s];
                            step.state = StepState::Completed;
                            step.result = Some(json!([]));
                            step.output = Some(json!([]));
                            step.finished_at = Some(self.now);
                            let id = step.step_id.clone();
                            self.event(Some(&id), "step.completed", Some("no items".into()));
                            continue;
                        }
                    }
                    let step_id = self.steps[s].step_id.clone();
                    let item_failed = self.tasks.iter().any(|t| {
                        t.step_id == step_id
                            && t.state != OPEN
                            && t.state != TaskState::Completed.as_str()
                    });
                    if item_failed && !spec.continue_on_error {
                        continue;
                    }
                    let step_cap = spec.max_parallel.map_or(usize::MAX, |m| m as usize);
                    while self.steps[s].items_submitted < total && free > 0 && self.txn.room() > 0 {
                        let open_here = self
                            .tasks
                            .iter()
                            .filter(|t| t.step_id == step_id && t.state == OPEN)
                            .count();
                        if open_here >= step_cap {
                            break;
                        }
                        let i = self.steps[s].items_submitted;
                        if !self.submit(s, Some(i))? {
                            break;
                        }
                        self.steps[s].items_submitted = i + 1;
                        free -= 1;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Resolve the step's arguments and submit its task (item `item` of a
    /// for_each). False when the step failed instead (its arguments could not
    /// be resolved, or are too large).
    fn submit(&mut self, s: usize, item: Option<usize>) -> Result<bool, WorkflowError> {
        let spec: &StepSpec = &self.spec.steps[self.steps[s].ord];
        let item_value =
            item.and_then(|i| self.steps[s].items.as_ref().and_then(|v| v.get(i)).cloned());
        let resolved = {
            let scope = self.scope(item_value.as_ref(), item);
            reference::resolve(&Value::Object(spec.inputs.clone()), &scope)
        };
        let ready_at = self.steps[s].ready_at.unwrap_or(self.now);
        let arguments = match resolved {
            Ok(arguments) => arguments,
            Err(e) => {
                let at = item.map(|i| format!(" (item {i})")).unwrap_or_default();
                self.fail_step(s, format!("inputs{at}: {e}"), ready_at);
                return Ok(false);
            }
        };
        let size = arguments.to_string().len();
        if size > MAX_ARGUMENT_BYTES {
            self.fail_step(
                s,
                format!("the resolved arguments are {size} bytes, over the limit of {MAX_ARGUMENT_BYTES}; pass a reference (a path, a URL) instead of the data"),
                ready_at,
            );
            return Ok(false);
        }
        let id = task_id(&self.w.id, &spec.step_id, item);
        if let Some(rule) = (self.cache)(&spec.action) {
            let key = cache_key(&spec.action, &rule, &arguments);
            if let Some((output, source)) = store::cache_get(self.txn.conn(), &key, self.now)? {
                let step_id = spec.step_id.clone();
                self.record_cached(s, item, id, output, source);
                self.cache_hits += 1;
                let at = item.map(|i| format!("item {i}: ")).unwrap_or_default();
                self.event(
                    Some(&step_id),
                    "step.cached",
                    Some(format!("{at}result reused, not run")),
                );
                return Ok(true);
            }
        }
        let new = NewTask {
            id: Some(id.clone()),
            tool: spec.action.clone(),
            arguments,
            priority: self.w.priority,
            tags: vec![
                format!("workflow:{}", self.w.id),
                format!("step:{}", spec.step_id),
            ],
            metadata: json!({"workflow": self.w.id, "step": spec.step_id, "item": item}),
            timeout_ms: spec.timeout_ms,
            max_attempts: spec.retry.map_or(DEFAULT_ATTEMPTS, |r| r.max_attempts),
            backoff_ms: spec.retry.map_or(DEFAULT_BACKOFF_MS, |r| r.backoff_ms),
            idempotency_key: Some(id.clone()),
        };
        match self.txn.submit(new) {
            Ok(_) => {}
            // The same key with other arguments: an earlier run of this step
            // resolved them differently (a redrive of its input); keep that task.
            Err(StoreError::KeyConflict { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        let row = TaskRow {
            task_id: id,
            step_id: spec.step_id.clone(),
            item,
            state: OPEN.to_string(),
            output: None,
            error: None,
            attempts: 0,
            started_at: None,
            finished_at: None,
            cached_from: None,
        };
        self.put_task_row(row);
        self.mark_started(s);
        Ok(true)
    }

    /// A step (or item) completed from the cache: a task row that is already
    /// finished, with no queue task behind it.
    fn record_cached(
        &mut self,
        s: usize,
        item: Option<usize>,
        id: String,
        output: Value,
        source: String,
    ) {
        let row = TaskRow {
            task_id: id,
            step_id: self.steps[s].step_id.clone(),
            item,
            state: TaskState::Completed.as_str().to_string(),
            output: Some(output),
            error: None,
            attempts: 0,
            started_at: Some(self.now),
            finished_at: Some(self.now),
            cached_from: Some(source),
        };
        self.put_task_row(row);
        self.mark_started(s);
    }

    fn put_task_row(&mut self, row: TaskRow) {
        match self.tasks.iter().position(|t| t.task_id == row.task_id) {
            Some(existing) => {
                self.tasks[existing] = row;
                self.dirty_tasks.insert(existing);
            }
            None => {
                self.tasks.push(row);
                self.dirty_tasks.insert(self.tasks.len() - 1);
            }
        }
    }

    fn mark_started(&mut self, s: usize) {
        let step = &mut self.steps[s];
        if step.state == StepState::Ready {
            step.state = StepState::Running;
            step.started_at = Some(self.now);
            let id = step.step_id.clone();
            self.event(Some(&id), "step.started", None);
        }
        self.dirty_steps.insert(s);
    }

    /// Close the workflow when every step is finished and no task is open.
    fn close_if_done(&mut self) -> bool {
        if self.w.state.is_terminal()
            || self.open_tasks() > 0
            || self.steps.iter().any(|s| !s.state.is_terminal())
        {
            return false;
        }
        let failed: Vec<&StepRow> = self
            .steps
            .iter()
            .filter(|s| s.state == StepState::Failed && !s.continued)
            .collect();
        let finished = self
            .steps
            .iter()
            .filter_map(|s| s.finished_at)
            .max()
            .unwrap_or(self.now);
        let (state, error) = if self.w.timed_out {
            (WorkflowState::Failed, self.w.cancel_reason.clone())
        } else if self.w.cancel.is_some() {
            (WorkflowState::Cancelled, self.w.cancel_reason.clone())
        } else if let Some(first) = failed.first() {
            let names: Vec<&str> = failed.iter().map(|s| s.step_id.as_str()).collect();
            (
                WorkflowState::Failed,
                Some(format!(
                    "step(s) failed: {}; first: {}",
                    names.join(", "),
                    first.error.as_deref().unwrap_or("no error given")
                )),
            )
        } else {
            (WorkflowState::Completed, None)
        };
        self.w.state = state;
        self.w.error = error.clone();
        self.w.finished_at = Some(finished.max(self.w.started_at.unwrap_or(finished)));
        self.w.result = Some(self.workflow_result());
        self.workflow_dirty = true;
        let kind = match state {
            WorkflowState::Completed => "workflow.completed",
            WorkflowState::Cancelled => "workflow.cancelled",
            _ => "workflow.failed",
        };
        self.event(None, kind, error);
        true
    }

    /// The workflow's `output` with its references resolved, or the results
    /// of its sink steps by step id.
    fn workflow_result(&self) -> Value {
        let scope = self.scope(None, None);
        if let Some(output) = &self.spec.output {
            return reference::resolve(output, &scope)
                .unwrap_or_else(|e| json!({"error": format!("output: {e}")}));
        }
        let depended: BTreeSet<usize> = self.plan.deps.iter().flatten().copied().collect();
        let sinks: serde_json::Map<String, Value> = self
            .steps
            .iter()
            .filter(|s| !depended.contains(&s.ord))
            .map(|s| (s.step_id.clone(), s.result.clone().unwrap_or(Value::Null)))
            .collect();
        Value::Object(sinks)
    }

    fn save(mut self, closed: bool) -> Result<Advanced, WorkflowError> {
        let conn = self.txn.conn();
        for &s in &self.dirty_steps {
            store::write_step(conn, &self.w.id, &self.steps[s])?;
        }
        for &t in &self.dirty_tasks {
            store::write_task(conn, &self.w.id, &self.tasks[t])?;
        }
        if self.workflow_dirty {
            store::update_workflow(conn, &self.w)?;
        }
        for (step, kind, detail) in std::mem::take(&mut self.events) {
            store::append_event(
                conn,
                &self.w.id,
                self.now,
                step.as_deref(),
                kind,
                detail.as_deref(),
            )?;
        }
        let dependents = if closed {
            store::needed_by(conn, &self.w.id)?
        } else {
            Vec::new()
        };
        Ok(Advanced { closed, dependents })
    }
}

struct StepOutcome {
    state: StepState,
    output: Option<Value>,
    result: Option<Value>,
    error: Option<String>,
    reason: Option<String>,
}

fn single_outcome(task: Option<&TaskRow>) -> StepOutcome {
    let Some(task) = task else {
        return StepOutcome {
            state: StepState::Failed,
            output: None,
            result: None,
            error: Some("the step's task is missing".into()),
            reason: None,
        };
    };
    let state = match TaskState::parse(&task.state) {
        Some(TaskState::Completed) => StepState::Completed,
        Some(TaskState::Cancelled) => StepState::Cancelled,
        _ => StepState::Failed,
    };
    StepOutcome {
        state,
        result: (state == StepState::Completed)
            .then(|| task.output.as_ref().map(result_of))
            .flatten(),
        output: task.output.clone(),
        error: (state != StepState::Completed)
            .then(|| task.error.clone().unwrap_or_else(|| "failed".into())),
        reason: (state == StepState::Cancelled)
            .then(|| task.error.clone())
            .flatten(),
    }
}

/// A for_each: the results in item order; a failed item fails the step (with
/// `continue_on_error` its slot is null and `errors` lists it).
fn map_outcome(
    tasks: &[&TaskRow],
    total: usize,
    continue_on_error: bool,
    unsubmitted: bool,
) -> StepOutcome {
    let mut outputs = vec![Value::Null; total];
    let mut results = vec![Value::Null; total];
    let mut errors = Vec::new();
    let mut cancelled = false;
    for task in tasks {
        let Some(i) = task.item.filter(|i| *i < total) else {
            continue;
        };
        outputs[i] = task.output.clone().unwrap_or(Value::Null);
        match TaskState::parse(&task.state) {
            Some(TaskState::Completed) => {
                results[i] = task.output.as_ref().map(result_of).unwrap_or(Value::Null);
            }
            state => {
                cancelled |= state == Some(TaskState::Cancelled);
                errors.push(json!({"index": i, "error": task.error.clone().unwrap_or_else(|| "failed".into())}));
            }
        }
    }
    let summary = |errors: &[Value]| {
        let first = errors
            .first()
            .and_then(|e| e["error"].as_str())
            .unwrap_or("");
        format!(
            "{} of {total} items failed; first (item {}): {first}",
            errors.len(),
            errors
                .first()
                .map_or(0, |e| e["index"].as_u64().unwrap_or(0))
        )
    };
    if errors.is_empty() && !unsubmitted {
        return StepOutcome {
            state: StepState::Completed,
            output: Some(Value::Array(outputs)),
            result: Some(Value::Array(results)),
            error: None,
            reason: None,
        };
    }
    if errors.is_empty() {
        // Halted by a cancel or a stop before every item ran: not a failure of its own.
        return StepOutcome {
            state: StepState::Cancelled,
            output: Some(json!({"items": outputs, "errors": []})),
            result: None,
            error: None,
            reason: Some(format!(
                "{} of {total} items ran before the workflow was cancelled or stopped",
                tasks.len()
            )),
        };
    }
    let state = if cancelled && !continue_on_error {
        StepState::Cancelled
    } else {
        StepState::Failed
    };
    let result = continue_on_error.then(|| Value::Array(results));
    StepOutcome {
        state,
        output: Some(json!({"items": outputs, "errors": errors})),
        result,
        error: Some(summary(&errors)),
        reason: None,
    }
}

fn resolve_items(for_each: &Value, scope: &dyn Scope) -> Result<Vec<Value>, String> {
    match reference::resolve(for_each, scope).map_err(|e| e.to_string())? {
        Value::Array(items) if items.len() > MAX_ITEMS => {
            Err(format!("{} items; the limit is {MAX_ITEMS}", items.len()))
        }
        Value::Array(items) => Ok(items),
        other => Err(format!(
            "must resolve to an array, got {}",
            match other {
                Value::Null => "null".to_string(),
                Value::Object(_) => "an object".to_string(),
                v => v.to_string(),
            }
        )),
    }
}

/// What `${…}` sees while the workflow runs.
struct RunScope<'a> {
    workflow_id: &'a str,
    steps: &'a [StepRow],
    item: Option<&'a Value>,
    index: Option<usize>,
}

impl Scope for RunScope<'_> {
    fn step(&self, id: &str, field: StepField) -> Option<Value> {
        let row = self.steps.iter().find(|s| s.step_id == id)?;
        match field {
            // A step that finished without a result (failed, skipped) gives null.
            StepField::Result if row.state.is_terminal() => {
                Some(row.result.clone().unwrap_or(Value::Null))
            }
            StepField::Result => row.result.clone(),
            StepField::Output => row.output.clone(),
            StepField::Status => Some(Value::String(row.state.as_str().to_string())),
            StepField::Error => Some(row.error.clone().map_or(Value::Null, Value::String)),
        }
    }

    fn item(&self) -> Option<&Value> {
        self.item
    }

    fn index(&self) -> Option<usize> {
        self.index
    }

    fn workflow_id(&self) -> &str {
        self.workflow_id
    }
}
