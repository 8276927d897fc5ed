//! The workflow tables, in the queue's database beside the tasks (the
//! SQLite file, or the PostgreSQL schema) so that a workflow's state and the
//! tasks it submits commit in one transaction (`QueueStore::transaction`).
//! Rows are read and written whole; the controller (`advance`) decides what
//! changes. The SQL is written once for both databases (`mcpplus_queue::sql`).

use mcpplus_queue::StoreError;
use mcpplus_queue::sql::{Dialect, Sql, SqlRow};
use mcpplus_queue::sql_params;
use mcpplus_queue::store::Result;
use serde_json::Value;

use crate::spec::{StepState, WorkflowState};

pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS workflows (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    id            TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    spec          TEXT NOT NULL,
    spec_sha256   TEXT NOT NULL,
    state         TEXT NOT NULL,
    priority      REAL NOT NULL,
    max_parallel  INTEGER NOT NULL DEFAULT 10,
    tags          TEXT NOT NULL,
    template      TEXT,
    cancel        TEXT,
    cancel_reason TEXT,
    timed_out     INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    started_at    INTEGER,
    finished_at   INTEGER,
    deadline      INTEGER,
    error         TEXT,
    result        TEXT
);
CREATE INDEX IF NOT EXISTS workflows_state ON workflows(state, seq);
-- Other workflows a workflow waits for (`dependencies`).
CREATE TABLE IF NOT EXISTS workflow_needs (
    workflow_id TEXT NOT NULL,
    needs       TEXT NOT NULL,
    PRIMARY KEY (workflow_id, needs)
);
CREATE INDEX IF NOT EXISTS workflow_needs_by_need ON workflow_needs(needs);
CREATE TABLE IF NOT EXISTS workflow_steps (
    workflow_id     TEXT NOT NULL,
    step_id         TEXT NOT NULL,
    ord             INTEGER NOT NULL,
    level           INTEGER NOT NULL,
    state           TEXT NOT NULL,
    reason          TEXT,
    skip_kind       TEXT,
    items           TEXT,
    items_total     INTEGER,
    items_submitted INTEGER NOT NULL DEFAULT 0,
    items_done      INTEGER NOT NULL DEFAULT 0,
    ready_at        INTEGER,
    started_at      INTEGER,
    finished_at     INTEGER,
    attempts        INTEGER NOT NULL DEFAULT 0,
    output          TEXT,
    result          TEXT,
    error           TEXT,
    continued       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (workflow_id, step_id)
);
-- One row per task a step submitted (one per item of a for_each).
CREATE TABLE IF NOT EXISTS workflow_tasks (
    task_id     TEXT PRIMARY KEY,
    workflow_id TEXT NOT NULL,
    step_id     TEXT NOT NULL,
    item        INTEGER,
    state       TEXT NOT NULL,
    output      TEXT,
    error       TEXT,
    attempts    INTEGER NOT NULL DEFAULT 0,
    started_at  INTEGER,
    finished_at INTEGER
);
CREATE INDEX IF NOT EXISTS workflow_tasks_by_state ON workflow_tasks(state, workflow_id);
CREATE INDEX IF NOT EXISTS workflow_tasks_by_step ON workflow_tasks(workflow_id, step_id, item);
-- Successful results of tools a component's policy marks cacheable, keyed by
-- sha256 of the canonical JSON of (tool, component sha256, arguments).
CREATE TABLE IF NOT EXISTS step_cache (
    key        TEXT PRIMARY KEY,
    tool       TEXT NOT NULL,
    component  TEXT NOT NULL,
    output     TEXT NOT NULL,
    bytes      INTEGER NOT NULL,
    source     TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    last_used  INTEGER NOT NULL,
    hits       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS step_cache_lru ON step_cache(last_used);
-- The sha256 each template (id, version) had when first loaded: a file
-- changed without a new version is refused.
CREATE TABLE IF NOT EXISTS workflow_template_pins (
    template_id TEXT NOT NULL,
    version     TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    PRIMARY KEY (template_id, version)
);
CREATE TABLE IF NOT EXISTS workflow_events (
    workflow_id TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    at          INTEGER NOT NULL,
    step_id     TEXT,
    kind        TEXT NOT NULL,
    detail      TEXT,
    PRIMARY KEY (workflow_id, seq)
);
";

/// A workflow task row's state before its outcome is copied.
pub const OPEN: &str = "open";

/// Why a step was skipped, so a redrive knows which skips to undo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipKind {
    /// Its `when` was false: final.
    Condition,
    /// A dependency failed or was skipped.
    Upstream,
    /// The workflow stopped after a failure (`on_failure = stop`).
    Stopped,
}

impl SkipKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Condition => "condition",
            Self::Upstream => "upstream",
            Self::Stopped => "stopped",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "condition" => Some(Self::Condition),
            "upstream" => Some(Self::Upstream),
            "stopped" => Some(Self::Stopped),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelMode {
    /// Nothing new starts; queued step tasks are cancelled; running ones finish.
    Graceful,
    /// Running step tasks are cancelled too (they stop at their next heartbeat).
    Force,
}

impl CancelMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Graceful => "graceful",
            Self::Force => "force",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "graceful" => Some(Self::Graceful),
            "force" => Some(Self::Force),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowRow {
    pub seq: i64,
    pub id: String,
    pub name: String,
    pub spec: String,
    pub spec_sha256: String,
    pub state: WorkflowState,
    pub priority: f64,
    /// The spec's `max_parallel` (the driver's refill threshold reads it).
    pub max_parallel: u32,
    pub tags: Vec<String>,
    pub template: Option<Value>,
    pub cancel: Option<CancelMode>,
    pub cancel_reason: Option<String>,
    pub timed_out: bool,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub deadline: Option<i64>,
    pub error: Option<String>,
    pub result: Option<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepRow {
    pub step_id: String,
    pub ord: usize,
    pub level: u32,
    pub state: StepState,
    pub reason: Option<String>,
    pub skip_kind: Option<SkipKind>,
    /// A for_each step's items, resolved when it became ready.
    pub items: Option<Vec<Value>>,
    pub items_submitted: usize,
    pub items_done: usize,
    pub ready_at: Option<i64>,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub attempts: u32,
    /// The CallToolResult (an array of them, in item order, for a for_each).
    pub output: Option<Value>,
    /// The tool's return value (see `outcome::result_of`); an array for a for_each.
    pub result: Option<Value>,
    pub error: Option<String>,
    /// Failed, but `continue_on_error` let its dependents run.
    pub continued: bool,
}

impl StepRow {
    pub fn new(step_id: &str, ord: usize, level: u32) -> Self {
        Self {
            step_id: step_id.to_string(),
            ord,
            level,
            state: StepState::Pending,
            reason: None,
            skip_kind: None,
            items: None,
            items_submitted: 0,
            items_done: 0,
            ready_at: None,
            started_at: None,
            finished_at: None,
            attempts: 0,
            output: None,
            result: None,
            error: None,
            continued: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct TaskRow {
    pub task_id: String,
    pub step_id: String,
    pub item: Option<usize>,
    /// `open`, or the queue task's terminal state once copied.
    pub state: String,
    pub output: Option<Value>,
    pub error: Option<String>,
    pub attempts: u32,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// A result reused from the cache: the task that produced it.
    pub cached_from: Option<String>,
}

/// Columns added after the first release, for files an older mcpplus made:
/// `CREATE TABLE IF NOT EXISTS` leaves an existing table as it was.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    ("workflow_tasks", "cached_from", "TEXT"),
    ("workflows", "max_parallel", "INTEGER NOT NULL DEFAULT 10"),
];

/// Serialises nodes creating the tables in one PostgreSQL schema at once
/// (any constant, ours).
const POSTGRES_SCHEMA_LOCK: i64 = 0x6d63_7070_6c75_7302;

/// [`SCHEMA`] in PostgreSQL's types (one schema text, so the two cannot
/// drift): 64-bit integers, doubles, a sequence for `seq`.
fn postgres_types(sqlite: &str) -> String {
    sqlite
        .replace("INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY")
        .replace("INTEGER", "BIGINT")
        .replace("REAL", "DOUBLE PRECISION")
}

/// Create the workflow tables beside the tasks (and the columns an older
/// release lacked).
pub fn ensure_schema(db: &dyn Sql) -> Result<()> {
    match db.dialect() {
        Dialect::Sqlite => {
            db.batch(SCHEMA)?;
            for (table, column, declaration) in ADDED_COLUMNS {
                let has = db
                    .query_opt(
                        "SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2",
                        sql_params![*table, *column],
                    )?
                    .is_some();
                if !has {
                    db.batch(&format!(
                        "ALTER TABLE {table} ADD COLUMN {column} {declaration}"
                    ))?;
                }
            }
        }
        Dialect::Postgres => {
            // DDL locks its tables exclusively even when it changes nothing,
            // and would deadlock with the other nodes' work: only a schema
            // that lacks something gets any.
            if postgres_schema_complete(db)? {
                return Ok(());
            }
            let mut sql = format!(
                "SELECT pg_advisory_xact_lock({POSTGRES_SCHEMA_LOCK});\n{}",
                postgres_types(SCHEMA)
            );
            for (table, column, declaration) in ADDED_COLUMNS {
                sql.push_str(&format!(
                    "\nALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {};",
                    postgres_types(declaration)
                ));
            }
            db.batch(&sql)?;
        }
    }
    Ok(())
}

/// The tables [`SCHEMA`] creates.
fn schema_tables() -> impl Iterator<Item = &'static str> {
    SCHEMA
        .split("CREATE TABLE IF NOT EXISTS ")
        .skip(1)
        .filter_map(|rest| rest.split_whitespace().next())
}

/// Whether every table and every added column is there already.
fn postgres_schema_complete(db: &dyn Sql) -> Result<bool> {
    let found: std::collections::BTreeSet<(String, String)> = db
        .query(
            "SELECT table_name::TEXT, column_name::TEXT FROM information_schema.columns
              WHERE table_schema = current_schema()",
            &[],
        )?
        .iter()
        .map(|r| Ok((r.text(0)?, r.text(1)?)))
        .collect::<Result<_>>()?;
    let tables: std::collections::BTreeSet<&str> = found.iter().map(|(t, _)| t.as_str()).collect();
    Ok(schema_tables().all(|t| tables.contains(t))
        && ADDED_COLUMNS
            .iter()
            .all(|(t, c, _)| found.contains(&(t.to_string(), c.to_string()))))
}

fn json_opt(row: &SqlRow, index: usize) -> Result<Option<Value>> {
    Ok(row
        .opt_text(index)?
        .and_then(|t| serde_json::from_str(&t).ok()))
}

fn text_of(value: &Option<Value>) -> Option<String> {
    value.as_ref().map(Value::to_string)
}

fn u32_of(value: i64) -> u32 {
    value.clamp(0, u32::MAX as i64) as u32
}

fn usize_of(value: i64) -> usize {
    value.max(0) as usize
}

const WORKFLOW_COLUMNS: &str = "seq, id, name, spec, spec_sha256, state, priority, tags, template, \
    cancel, cancel_reason, timed_out, created_at, started_at, finished_at, deadline, \
    error, result, max_parallel";

fn workflow_from_row(row: &SqlRow) -> Result<WorkflowRow> {
    let state = row.text(5)?;
    let tags = row.text(7)?;
    let cancel = row.opt_text(9)?;
    Ok(WorkflowRow {
        seq: row.i64(0)?,
        id: row.text(1)?,
        name: row.text(2)?,
        spec: row.text(3)?,
        spec_sha256: row.text(4)?,
        state: WorkflowState::parse(&state).unwrap_or(WorkflowState::Failed),
        priority: row.f64(6)?,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        template: json_opt(row, 8)?,
        cancel: cancel.as_deref().and_then(CancelMode::parse),
        cancel_reason: row.opt_text(10)?,
        timed_out: row.bool(11)?,
        created_at: row.i64(12)?,
        started_at: row.opt_i64(13)?,
        finished_at: row.opt_i64(14)?,
        deadline: row.opt_i64(15)?,
        error: row.opt_text(16)?,
        result: json_opt(row, 17)?,
        max_parallel: u32_of(row.i64(18)?),
    })
}

pub fn get_workflow(db: &dyn Sql, id: &str) -> Result<Option<WorkflowRow>> {
    select_workflow(db, id, "")
}

/// [`get_workflow`], holding the workflow until the transaction ends: what
/// changes a workflow reads it this way, so nodes sharing a PostgreSQL
/// database change one workflow one at a time. (A SQLite transaction holds
/// the whole file already.)
pub fn lock_workflow(db: &dyn Sql, id: &str) -> Result<Option<WorkflowRow>> {
    let lock = match db.dialect() {
        Dialect::Sqlite => "",
        Dialect::Postgres => " FOR UPDATE",
    };
    select_workflow(db, id, lock)
}

fn select_workflow(db: &dyn Sql, id: &str, lock: &str) -> Result<Option<WorkflowRow>> {
    db.query_opt(
        &format!("SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id = ?1{lock}"),
        sql_params![id],
    )?
    .map(|row| workflow_from_row(&row))
    .transpose()
}

/// Insert a new workflow; false when one with its id exists already
/// (perhaps just committed by another node).
pub fn insert_workflow(db: &dyn Sql, w: &WorkflowRow) -> Result<bool> {
    let inserted = db.execute(
        "INSERT INTO workflows (id, name, spec, spec_sha256, state, priority, tags, template,
             created_at, max_parallel) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT (id) DO NOTHING",
        sql_params![
            &w.id,
            &w.name,
            &w.spec,
            &w.spec_sha256,
            w.state.as_str(),
            w.priority,
            serde_json::to_string(&w.tags).unwrap_or_default(),
            text_of(&w.template),
            w.created_at,
            w.max_parallel,
        ],
    )?;
    Ok(inserted == 1)
}

/// Write the fields `advance` and `cancel` change.
pub fn update_workflow(db: &dyn Sql, w: &WorkflowRow) -> Result<()> {
    db.execute(
        "UPDATE workflows SET state = ?2, cancel = ?3, cancel_reason = ?4, timed_out = ?5,
             started_at = ?6, finished_at = ?7, deadline = ?8, error = ?9, result = ?10
         WHERE id = ?1",
        sql_params![
            &w.id,
            w.state.as_str(),
            w.cancel.map(CancelMode::as_str),
            &w.cancel_reason,
            w.timed_out,
            w.started_at,
            w.finished_at,
            w.deadline,
            &w.error,
            text_of(&w.result),
        ],
    )?;
    Ok(())
}

pub fn insert_needs(db: &dyn Sql, workflow: &str, needs: &[String]) -> Result<()> {
    for need in needs {
        db.execute(
            "INSERT INTO workflow_needs (workflow_id, needs) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
            sql_params![workflow, need],
        )?;
    }
    Ok(())
}

fn texts(rows: Vec<SqlRow>) -> Result<Vec<String>> {
    rows.iter().map(|r| r.text(0)).collect()
}

pub fn needs(db: &dyn Sql, workflow: &str) -> Result<Vec<String>> {
    texts(db.query(
        "SELECT needs FROM workflow_needs WHERE workflow_id = ?1",
        sql_params![workflow],
    )?)
}

/// The unfinished workflows waiting for `workflow`.
pub fn needed_by(db: &dyn Sql, workflow: &str) -> Result<Vec<String>> {
    texts(db.query(
        "SELECT n.workflow_id FROM workflow_needs n JOIN workflows w ON w.id = n.workflow_id
          WHERE n.needs = ?1 AND w.state = 'pending'",
        sql_params![workflow],
    )?)
}

const STEP_COLUMNS: &str = "step_id, ord, level, state, reason, skip_kind, items, \
    items_submitted, items_done, ready_at, started_at, finished_at, attempts, output, result, \
    error, continued";

fn step_from_row(row: &SqlRow) -> Result<StepRow> {
    let state = row.text(3)?;
    let skip = row.opt_text(5)?;
    let items = json_opt(row, 6)?;
    Ok(StepRow {
        step_id: row.text(0)?,
        ord: usize_of(row.i64(1)?),
        level: u32_of(row.i64(2)?),
        state: StepState::parse(&state).unwrap_or(StepState::Failed),
        reason: row.opt_text(4)?,
        skip_kind: skip.as_deref().and_then(SkipKind::parse),
        items: items.and_then(|v| match v {
            Value::Array(items) => Some(items),
            _ => None,
        }),
        items_submitted: usize_of(row.i64(7)?),
        items_done: usize_of(row.i64(8)?),
        ready_at: row.opt_i64(9)?,
        started_at: row.opt_i64(10)?,
        finished_at: row.opt_i64(11)?,
        attempts: u32_of(row.i64(12)?),
        output: json_opt(row, 13)?,
        result: json_opt(row, 14)?,
        error: row.opt_text(15)?,
        continued: row.bool(16)?,
    })
}

/// The steps of `workflow`, in spec order.
pub fn steps(db: &dyn Sql, workflow: &str) -> Result<Vec<StepRow>> {
    db.query(
        &format!("SELECT {STEP_COLUMNS} FROM workflow_steps WHERE workflow_id = ?1 ORDER BY ord"),
        sql_params![workflow],
    )?
    .iter()
    .map(step_from_row)
    .collect()
}

pub fn write_step(db: &dyn Sql, workflow: &str, s: &StepRow) -> Result<()> {
    let items = s
        .items
        .as_ref()
        .map(|i| Value::Array(i.clone()).to_string());
    db.execute(
        "INSERT INTO workflow_steps (workflow_id, step_id, ord, level, state, reason, skip_kind,
             items, items_total, items_submitted, items_done, ready_at, started_at, finished_at,
             attempts, output, result, error, continued)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)
         ON CONFLICT(workflow_id, step_id) DO UPDATE SET state = excluded.state,
             reason = excluded.reason, skip_kind = excluded.skip_kind, items = excluded.items,
             items_total = excluded.items_total, items_submitted = excluded.items_submitted,
             items_done = excluded.items_done, ready_at = excluded.ready_at,
             started_at = excluded.started_at, finished_at = excluded.finished_at,
             attempts = excluded.attempts, output = excluded.output, result = excluded.result,
             error = excluded.error, continued = excluded.continued",
        sql_params![
            workflow,
            &s.step_id,
            s.ord,
            s.level,
            s.state.as_str(),
            &s.reason,
            s.skip_kind.map(SkipKind::as_str),
            items,
            s.items.as_ref().map(Vec::len),
            s.items_submitted,
            s.items_done,
            s.ready_at,
            s.started_at,
            s.finished_at,
            s.attempts,
            text_of(&s.output),
            text_of(&s.result),
            &s.error,
            s.continued,
        ],
    )?;
    Ok(())
}

const TASK_COLUMNS: &str =
    "task_id, step_id, item, state, output, error, attempts, started_at, finished_at, cached_from";

fn task_from_row(row: &SqlRow) -> Result<TaskRow> {
    Ok(TaskRow {
        task_id: row.text(0)?,
        step_id: row.text(1)?,
        item: row.opt_i64(2)?.map(usize_of),
        state: row.text(3)?,
        output: json_opt(row, 4)?,
        error: row.opt_text(5)?,
        attempts: u32_of(row.i64(6)?),
        started_at: row.opt_i64(7)?,
        finished_at: row.opt_i64(8)?,
        cached_from: row.opt_text(9)?,
    })
}

/// Every task row of `workflow`, by step and item, without their outputs
/// (an advance runs after every settled task; reading every output each
/// time would make a large for_each quadratic). See [`task_outputs`].
pub fn tasks(db: &dyn Sql, workflow: &str) -> Result<Vec<TaskRow>> {
    let columns = TASK_COLUMNS.replace("output", "NULL AS output");
    db.query(
        &format!(
            "SELECT {columns} FROM workflow_tasks WHERE workflow_id = ?1 ORDER BY step_id, item"
        ),
        sql_params![workflow],
    )?
    .iter()
    .map(task_from_row)
    .collect()
}

/// The stored outputs of one step's task rows, by task id.
pub fn task_outputs(
    db: &dyn Sql,
    workflow: &str,
    step: &str,
) -> Result<std::collections::HashMap<String, Value>> {
    let rows = db.query(
        "SELECT task_id, output FROM workflow_tasks
          WHERE workflow_id = ?1 AND step_id = ?2 AND output IS NOT NULL",
        sql_params![workflow, step],
    )?;
    let mut outputs = std::collections::HashMap::new();
    for row in rows {
        if let Ok(value) = serde_json::from_str(&row.text(1)?) {
            outputs.insert(row.text(0)?, value);
        }
    }
    Ok(outputs)
}

/// Insert or update a task row; an output not in memory (`None`, as
/// [`tasks`] reads them) keeps the stored one.
pub fn write_task(db: &dyn Sql, workflow: &str, t: &TaskRow) -> Result<()> {
    db.execute(
        "INSERT INTO workflow_tasks (task_id, workflow_id, step_id, item, state, output, error,
             attempts, started_at, finished_at, cached_from)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT(task_id) DO UPDATE SET state = excluded.state,
             output = COALESCE(excluded.output, workflow_tasks.output),
             error = excluded.error, attempts = excluded.attempts,
             started_at = excluded.started_at, finished_at = excluded.finished_at,
             cached_from = excluded.cached_from",
        sql_params![
            &t.task_id,
            workflow,
            &t.step_id,
            t.item,
            &t.state,
            text_of(&t.output),
            &t.error,
            t.attempts,
            t.started_at,
            t.finished_at,
            &t.cached_from,
        ],
    )?;
    Ok(())
}

/// Workflows with a step task whose outcome is not copied yet although the
/// queue finished it (or lost it), and workflows whose failed step task an
/// operator re-queued (`task_retry`: a redrive). What the driver advances
/// after the queue changed.
///
/// A finished item of a for_each whose other items still run changes
/// nothing an advance acts on but the refill, so such workflows wait until
/// fewer than half their `max_parallel` tasks are in flight: one advance per
/// half-window of items instead of one per item.
pub fn workflows_to_advance(db: &dyn Sql) -> Result<Vec<String>> {
    let mut due = std::collections::BTreeSet::new();
    let redrives = db.query(
        "SELECT DISTINCT w.workflow_id FROM workflow_tasks w JOIN tasks t ON t.id = w.task_id
          WHERE w.state IN ('failed', 'cancelled') AND t.state IN ('queued', 'running')",
        &[],
    )?;
    due.extend(texts(redrives)?);
    #[derive(Default)]
    struct Open {
        max_parallel: usize,
        in_flight: usize,
        steps_in_flight: std::collections::BTreeSet<String>,
        finished_items: std::collections::BTreeSet<String>,
        urgent: bool,
    }
    let mut open: std::collections::BTreeMap<String, Open> = std::collections::BTreeMap::new();
    let rows = db.query(
        "SELECT w.workflow_id, w.step_id, w.item IS NOT NULL,
                t.id IS NULL OR t.state IN ('completed', 'failed', 'cancelled'),
                t.state = 'completed', f.max_parallel
           FROM workflow_tasks w LEFT JOIN tasks t ON t.id = w.task_id
           JOIN workflows f ON f.id = w.workflow_id
          WHERE w.state = 'open'",
        &[],
    )?;
    for row in rows {
        let (workflow, step) = (row.text(0)?, row.text(1)?);
        let (is_item, finished) = (row.bool(2)?, row.bool(3)?);
        let completed = row.opt_bool(4)?.unwrap_or(false);
        let max_parallel = row.i64(5)?;
        let entry = open.entry(workflow).or_default();
        entry.max_parallel = max_parallel.max(1) as usize;
        match (finished, is_item && completed) {
            (false, _) => {
                entry.in_flight += 1;
                entry.steps_in_flight.insert(step);
            }
            (true, true) => {
                entry.finished_items.insert(step);
            }
            // A single step finished, an item failed, a task was lost.
            (true, false) => entry.urgent = true,
        }
    }
    for (workflow, o) in open {
        let finished_something = o.urgent || !o.finished_items.is_empty();
        let step_may_finish = o
            .finished_items
            .iter()
            .any(|step| !o.steps_in_flight.contains(step));
        let refill = o.in_flight * 2 < o.max_parallel;
        if finished_something && (o.urgent || step_may_finish || refill) {
            due.insert(workflow);
        }
    }
    Ok(due.into_iter().collect())
}

/// Unfinished workflows (the sweep: deadlines, room in the queue, start-up).
pub fn unfinished(db: &dyn Sql, limit: u32) -> Result<Vec<String>> {
    texts(db.query(
        "SELECT id FROM workflows WHERE state IN ('pending', 'running') ORDER BY seq LIMIT ?1",
        sql_params![limit],
    )?)
}

/// The most events kept per workflow (the rest are counted in one last event).
pub const MAX_EVENTS: i64 = 10_000;

pub fn append_event(
    db: &dyn Sql,
    workflow: &str,
    at: i64,
    step: Option<&str>,
    kind: &str,
    detail: Option<&str>,
) -> Result<()> {
    let next = db
        .query_opt(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM workflow_events WHERE workflow_id = ?1",
            sql_params![workflow],
        )?
        .map_or(Ok(1), |row| row.i64(0))?;
    if next > MAX_EVENTS + 1 {
        return Ok(());
    }
    let (kind, detail) = if next == MAX_EVENTS + 1 {
        (
            "events.truncated",
            Some("later events of this workflow are not kept"),
        )
    } else {
        (kind, detail)
    };
    db.execute(
        "INSERT INTO workflow_events (workflow_id, seq, at, step_id, kind, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        sql_params![workflow, next, at, step, kind, detail],
    )?;
    Ok(())
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Event {
    pub seq: i64,
    pub at_ms: i64,
    pub step_id: Option<String>,
    pub kind: String,
    pub detail: Option<String>,
}

pub fn events(db: &dyn Sql, workflow: &str, limit: u32) -> Result<Vec<Event>> {
    db.query(
        "SELECT seq, at, step_id, kind, detail FROM workflow_events WHERE workflow_id = ?1
          ORDER BY seq LIMIT ?2",
        sql_params![workflow, limit],
    )?
    .iter()
    .map(|r| {
        Ok(Event {
            seq: r.i64(0)?,
            at_ms: r.i64(1)?,
            step_id: r.opt_text(2)?,
            kind: r.text(3)?,
            detail: r.opt_text(4)?,
        })
    })
    .collect()
}

/// A page of workflows, newest first, with the total that matched.
pub fn list(
    db: &dyn Sql,
    state: Option<WorkflowState>,
    tag: Option<&[String]>,
    offset: u64,
    limit: u64,
) -> Result<(Vec<WorkflowRow>, u64)> {
    let rows = db.query(
        &format!(
            "SELECT {WORKFLOW_COLUMNS} FROM workflows
              WHERE (CAST(?1 AS TEXT) IS NULL OR state = ?1) ORDER BY seq DESC"
        ),
        sql_params![state.map(WorkflowState::as_str)],
    )?;
    let mut page = Vec::new();
    let mut total = 0u64;
    for row in rows {
        let row = workflow_from_row(&row)?;
        if let Some(tags) = tag
            && !tags.iter().all(|t| row.tags.contains(t))
        {
            continue;
        }
        if total >= offset && (page.len() as u64) < limit {
            page.push(row);
        }
        total += 1;
    }
    Ok((page, total))
}

pub type Pins = std::collections::BTreeMap<(String, String), String>;

pub fn template_pins(db: &dyn Sql) -> Result<Pins> {
    db.query(
        "SELECT template_id, version, sha256 FROM workflow_template_pins",
        &[],
    )?
    .iter()
    .map(|r| Ok(((r.text(0)?, r.text(1)?), r.text(2)?)))
    .collect()
}

pub fn save_template_pins(db: &dyn Sql, pins: &Pins) -> Result<()> {
    for ((id, version), sha) in pins {
        db.execute(
            "INSERT INTO workflow_template_pins (template_id, version, sha256) VALUES (?1, ?2, ?3)
             ON CONFLICT DO NOTHING",
            sql_params![id, version, sha],
        )?;
    }
    Ok(())
}

/// Delete workflows that finished before `before`, with their steps, task
/// rows, events and needs; returns how many.
pub fn purge_finished(db: &dyn Sql, before: i64) -> Result<u64> {
    let old = "SELECT id FROM workflows WHERE state IN ('completed', 'failed', 'cancelled')
                 AND finished_at IS NOT NULL AND finished_at < ?1";
    for table in [
        "workflow_steps",
        "workflow_tasks",
        "workflow_events",
        "workflow_needs",
    ] {
        db.execute(
            &format!("DELETE FROM {table} WHERE workflow_id IN ({old})"),
            sql_params![before],
        )?;
    }
    db.execute(
        "DELETE FROM workflows WHERE state IN ('completed', 'failed', 'cancelled')
           AND finished_at IS NOT NULL AND finished_at < ?1",
        sql_params![before],
    )
}

/// The most results the cache keeps, and the most bytes of them; past
/// either the least recently used go first.
pub const CACHE_ENTRIES: i64 = 10_000;
pub const CACHE_BYTES: i64 = 64 << 20;

/// A cached result under `key` still usable at `now`: (output, the task
/// that produced it). Counts the hit.
pub fn cache_get(db: &dyn Sql, key: &str, now: i64) -> Result<Option<(Value, String)>> {
    let Some(found) = db.query_opt(
        "SELECT output, source FROM step_cache
          WHERE key = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
        sql_params![key, now],
    )?
    else {
        return Ok(None);
    };
    db.execute(
        "UPDATE step_cache SET hits = hits + 1, last_used = ?2 WHERE key = ?1",
        sql_params![key, now],
    )?;
    let source = found.text(1)?;
    Ok(serde_json::from_str(&found.text(0)?)
        .ok()
        .map(|o| (o, source)))
}

/// Keep `output` under `key`, then evict the least recently used past the bounds.
#[allow(clippy::too_many_arguments)]
pub fn cache_put(
    db: &dyn Sql,
    key: &str,
    tool: &str,
    component: &str,
    output: &Value,
    source: &str,
    now: i64,
    ttl_ms: Option<u64>,
) -> Result<()> {
    let text = output.to_string();
    if text.len() as i64 > CACHE_BYTES / 16 {
        return Ok(()); // one result may not take a sixteenth of the cache
    }
    let bytes = text.len();
    db.execute(
        "INSERT INTO step_cache (key, tool, component, output, bytes, source, created_at,
             expires_at, last_used) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?7)
         ON CONFLICT (key) DO UPDATE SET tool = excluded.tool, component = excluded.component,
             output = excluded.output, bytes = excluded.bytes, source = excluded.source,
             created_at = excluded.created_at, expires_at = excluded.expires_at,
             last_used = excluded.last_used, hits = 0",
        sql_params![
            key,
            tool,
            component,
            text,
            bytes,
            source,
            now,
            ttl_ms.map(|t| now.saturating_add(t as i64)),
        ],
    )?;
    db.execute(
        "DELETE FROM step_cache WHERE expires_at IS NOT NULL AND expires_at <= ?1",
        sql_params![now],
    )?;
    loop {
        let counted = db
            .query_opt(
                "SELECT COUNT(*), CAST(COALESCE(SUM(bytes), 0) AS BIGINT) FROM step_cache",
                &[],
            )?
            .ok_or_else(|| StoreError::Invalid("COUNT(*) returned no row".into()))?;
        let (entries, bytes) = (counted.i64(0)?, counted.i64(1)?);
        if entries <= CACHE_ENTRIES && bytes <= CACHE_BYTES {
            return Ok(());
        }
        db.execute(
            "DELETE FROM step_cache WHERE key IN
                 (SELECT key FROM step_cache ORDER BY last_used LIMIT ?1)",
            sql_params![(entries - CACHE_ENTRIES).clamp(1, 1000)],
        )?;
    }
}

#[cfg(test)]
mod migration_tests {
    use super::*;
    use rusqlite::Connection;

    /// A file written before `max_parallel` and `cached_from` existed: the
    /// driver's queries must work on it after `ensure_schema`.
    #[test]
    fn an_older_file_gains_the_added_columns() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE tasks (id TEXT PRIMARY KEY, state TEXT NOT NULL);
             INSERT INTO tasks VALUES ('t1', 'running');",
        )
        .unwrap();
        // SCHEMA never had cached_from (it is added by ALTER); drop max_parallel too.
        let old = SCHEMA.replace("    max_parallel  INTEGER NOT NULL DEFAULT 10,\n", "");
        assert_ne!(
            old, SCHEMA,
            "the test must drop max_parallel from the schema"
        );
        conn.execute_batch(&old).unwrap();
        conn.execute_batch(
            "INSERT INTO workflows (id, name, spec, spec_sha256, state, priority, tags, created_at)
                  VALUES ('w1', 'old', '{}', '', 'running', 0.5, '[]', 0);
             INSERT INTO workflow_tasks (task_id, workflow_id, step_id, state)
                  VALUES ('t1', 'w1', 's', 'open');",
        )
        .unwrap();
        assert!(
            workflows_to_advance(&conn).is_err(),
            "the old file lacks max_parallel"
        );

        ensure_schema(&conn).unwrap();
        ensure_schema(&conn).unwrap(); // twice: a second start changes nothing
        assert_eq!(workflows_to_advance(&conn).unwrap(), Vec::<String>::new());
        let parallel: i64 = conn
            .query_row(
                "SELECT max_parallel FROM workflows WHERE id = 'w1'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(parallel, 10);
    }

    #[test]
    fn every_table_of_the_schema_is_checked_for() {
        let tables: Vec<&str> = schema_tables().collect();
        assert_eq!(
            tables,
            [
                "workflows",
                "workflow_needs",
                "workflow_steps",
                "workflow_tasks",
                "step_cache",
                "workflow_template_pins",
                "workflow_events"
            ]
        );
    }
}
