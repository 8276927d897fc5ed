//! The workflow tables, in the queue's SQLite file beside the tasks so that a
//! workflow's state and the tasks it submits commit in one transaction
//! (`QueueStore::transaction`). Rows are read and written whole; the
//! controller (`advance`) decides what changes.

use rusqlite::{Connection, OptionalExtension, Row, params};
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

pub fn ensure_schema(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(SCHEMA)?;
    for (table, column, declaration) in ADDED_COLUMNS {
        let has: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2")?
            .exists(params![table, column])?;
        if !has {
            conn.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN {column} {declaration}"
            ))?;
        }
    }
    Ok(())
}

fn json_opt(row: &Row<'_>, index: usize) -> rusqlite::Result<Option<Value>> {
    let text: Option<String> = row.get(index)?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
}

fn text_of(value: &Option<Value>) -> Option<String> {
    value.as_ref().map(Value::to_string)
}

const WORKFLOW_COLUMNS: &str = "seq, id, name, spec, spec_sha256, state, priority, tags, template, \
    cancel, cancel_reason, timed_out, created_at, started_at, finished_at, deadline, \
    error, result, max_parallel";

fn workflow_from_row(row: &Row<'_>) -> rusqlite::Result<WorkflowRow> {
    let state: String = row.get(5)?;
    let tags: String = row.get(7)?;
    let cancel: Option<String> = row.get(9)?;
    Ok(WorkflowRow {
        seq: row.get(0)?,
        id: row.get(1)?,
        name: row.get(2)?,
        spec: row.get(3)?,
        spec_sha256: row.get(4)?,
        state: WorkflowState::parse(&state).unwrap_or(WorkflowState::Failed),
        priority: row.get(6)?,
        tags: serde_json::from_str(&tags).unwrap_or_default(),
        template: json_opt(row, 8)?,
        cancel: cancel.as_deref().and_then(CancelMode::parse),
        cancel_reason: row.get(10)?,
        timed_out: row.get(11)?,
        created_at: row.get(12)?,
        started_at: row.get(13)?,
        finished_at: row.get(14)?,
        deadline: row.get(15)?,
        error: row.get(16)?,
        result: json_opt(row, 17)?,
        max_parallel: row.get(18)?,
    })
}

pub fn get_workflow(conn: &Connection, id: &str) -> rusqlite::Result<Option<WorkflowRow>> {
    conn.query_row(
        &format!("SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE id = ?1"),
        [id],
        workflow_from_row,
    )
    .optional()
}

pub fn insert_workflow(conn: &Connection, w: &WorkflowRow) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO workflows (id, name, spec, spec_sha256, state, priority, tags, template,
             created_at, max_parallel) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            w.id,
            w.name,
            w.spec,
            w.spec_sha256,
            w.state.as_str(),
            w.priority,
            serde_json::to_string(&w.tags).unwrap_or_default(),
            text_of(&w.template),
            w.created_at,
            w.max_parallel,
        ],
    )?;
    Ok(())
}

/// Write the fields `advance` and `cancel` change.
pub fn update_workflow(conn: &Connection, w: &WorkflowRow) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE workflows SET state = ?2, cancel = ?3, cancel_reason = ?4, timed_out = ?5,
             started_at = ?6, finished_at = ?7, deadline = ?8, error = ?9, result = ?10
         WHERE id = ?1",
        params![
            w.id,
            w.state.as_str(),
            w.cancel.map(CancelMode::as_str),
            w.cancel_reason,
            w.timed_out,
            w.started_at,
            w.finished_at,
            w.deadline,
            w.error,
            text_of(&w.result),
        ],
    )?;
    Ok(())
}

pub fn insert_needs(conn: &Connection, workflow: &str, needs: &[String]) -> rusqlite::Result<()> {
    let mut insert = conn.prepare_cached(
        "INSERT OR IGNORE INTO workflow_needs (workflow_id, needs) VALUES (?1, ?2)",
    )?;
    for need in needs {
        insert.execute(params![workflow, need])?;
    }
    Ok(())
}

pub fn needs(conn: &Connection, workflow: &str) -> rusqlite::Result<Vec<String>> {
    let mut query =
        conn.prepare_cached("SELECT needs FROM workflow_needs WHERE workflow_id = ?1")?;
    query
        .query_map([workflow], |r| r.get(0))?
        .collect::<Result<_, _>>()
}

/// The unfinished workflows waiting for `workflow`.
pub fn needed_by(conn: &Connection, workflow: &str) -> rusqlite::Result<Vec<String>> {
    let mut query = conn.prepare_cached(
        "SELECT n.workflow_id FROM workflow_needs n JOIN workflows w ON w.id = n.workflow_id
          WHERE n.needs = ?1 AND w.state = 'pending'",
    )?;
    query
        .query_map([workflow], |r| r.get(0))?
        .collect::<Result<_, _>>()
}

const STEP_COLUMNS: &str = "step_id, ord, level, state, reason, skip_kind, items, \
    items_submitted, items_done, ready_at, started_at, finished_at, attempts, output, result, \
    error, continued";

fn step_from_row(row: &Row<'_>) -> rusqlite::Result<StepRow> {
    let state: String = row.get(3)?;
    let skip: Option<String> = row.get(5)?;
    let items: Option<Value> = json_opt(row, 6)?;
    Ok(StepRow {
        step_id: row.get(0)?,
        ord: row.get::<_, i64>(1)? as usize,
        level: row.get(2)?,
        state: StepState::parse(&state).unwrap_or(StepState::Failed),
        reason: row.get(4)?,
        skip_kind: skip.as_deref().and_then(SkipKind::parse),
        items: items.and_then(|v| match v {
            Value::Array(items) => Some(items),
            _ => None,
        }),
        items_submitted: row.get::<_, i64>(7)? as usize,
        items_done: row.get::<_, i64>(8)? as usize,
        ready_at: row.get(9)?,
        started_at: row.get(10)?,
        finished_at: row.get(11)?,
        attempts: row.get(12)?,
        output: json_opt(row, 13)?,
        result: json_opt(row, 14)?,
        error: row.get(15)?,
        continued: row.get(16)?,
    })
}

/// The steps of `workflow`, in spec order.
pub fn steps(conn: &Connection, workflow: &str) -> rusqlite::Result<Vec<StepRow>> {
    let mut query = conn.prepare_cached(&format!(
        "SELECT {STEP_COLUMNS} FROM workflow_steps WHERE workflow_id = ?1 ORDER BY ord"
    ))?;
    query
        .query_map([workflow], step_from_row)?
        .collect::<Result<_, _>>()
}

pub fn write_step(conn: &Connection, workflow: &str, s: &StepRow) -> rusqlite::Result<()> {
    let items = s
        .items
        .as_ref()
        .map(|i| Value::Array(i.clone()).to_string());
    conn.prepare_cached(
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
    )?
    .execute(params![
        workflow,
        s.step_id,
        s.ord as i64,
        s.level,
        s.state.as_str(),
        s.reason,
        s.skip_kind.map(SkipKind::as_str),
        items,
        s.items.as_ref().map(|i| i.len() as i64),
        s.items_submitted as i64,
        s.items_done as i64,
        s.ready_at,
        s.started_at,
        s.finished_at,
        s.attempts,
        text_of(&s.output),
        text_of(&s.result),
        s.error,
        s.continued,
    ])?;
    Ok(())
}

const TASK_COLUMNS: &str =
    "task_id, step_id, item, state, output, error, attempts, started_at, finished_at, cached_from";

fn task_from_row(row: &Row<'_>) -> rusqlite::Result<TaskRow> {
    Ok(TaskRow {
        task_id: row.get(0)?,
        step_id: row.get(1)?,
        item: row.get::<_, Option<i64>>(2)?.map(|i| i as usize),
        state: row.get(3)?,
        output: json_opt(row, 4)?,
        error: row.get(5)?,
        attempts: row.get(6)?,
        started_at: row.get(7)?,
        finished_at: row.get(8)?,
        cached_from: row.get(9)?,
    })
}

/// Every task row of `workflow`, by step and item, without their outputs
/// (an advance runs after every settled task; reading every output each
/// time would make a large for_each quadratic). See [`task_outputs`].
pub fn tasks(conn: &Connection, workflow: &str) -> rusqlite::Result<Vec<TaskRow>> {
    let columns = TASK_COLUMNS.replace("output", "NULL AS output");
    let mut query = conn.prepare_cached(&format!(
        "SELECT {columns} FROM workflow_tasks WHERE workflow_id = ?1 ORDER BY step_id, item"
    ))?;
    query
        .query_map([workflow], task_from_row)?
        .collect::<Result<_, _>>()
}

/// The stored outputs of one step's task rows, by task id.
pub fn task_outputs(
    conn: &Connection,
    workflow: &str,
    step: &str,
) -> rusqlite::Result<std::collections::HashMap<String, Value>> {
    let mut query = conn.prepare_cached(
        "SELECT task_id, output FROM workflow_tasks
          WHERE workflow_id = ?1 AND step_id = ?2 AND output IS NOT NULL",
    )?;
    let rows = query.query_map(params![workflow, step], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut outputs = std::collections::HashMap::new();
    for row in rows {
        let (id, text) = row?;
        if let Ok(value) = serde_json::from_str(&text) {
            outputs.insert(id, value);
        }
    }
    Ok(outputs)
}

/// Insert or update a task row; an output not in memory (`None`, as
/// [`tasks`] reads them) keeps the stored one.
pub fn write_task(conn: &Connection, workflow: &str, t: &TaskRow) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO workflow_tasks (task_id, workflow_id, step_id, item, state, output, error,
             attempts, started_at, finished_at, cached_from)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT(task_id) DO UPDATE SET state = excluded.state,
             output = COALESCE(excluded.output, output),
             error = excluded.error, attempts = excluded.attempts,
             started_at = excluded.started_at, finished_at = excluded.finished_at,
             cached_from = excluded.cached_from",
    )?
    .execute(params![
        t.task_id,
        workflow,
        t.step_id,
        t.item.map(|i| i as i64),
        t.state,
        text_of(&t.output),
        t.error,
        t.attempts,
        t.started_at,
        t.finished_at,
        t.cached_from,
    ])?;
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
pub fn workflows_to_advance(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut due = std::collections::BTreeSet::new();
    let mut redrives = conn.prepare_cached(
        "SELECT DISTINCT w.workflow_id FROM workflow_tasks w JOIN tasks t ON t.id = w.task_id
          WHERE w.state IN ('failed', 'cancelled') AND t.state IN ('queued', 'running')",
    )?;
    for id in redrives.query_map([], |r| r.get::<_, String>(0))? {
        due.insert(id?);
    }
    #[derive(Default)]
    struct Open {
        max_parallel: usize,
        in_flight: usize,
        steps_in_flight: std::collections::BTreeSet<String>,
        finished_items: std::collections::BTreeSet<String>,
        urgent: bool,
    }
    let mut open: std::collections::BTreeMap<String, Open> = std::collections::BTreeMap::new();
    let mut rows = conn.prepare_cached(
        "SELECT w.workflow_id, w.step_id, w.item IS NOT NULL,
                t.id IS NULL OR t.state IN ('completed', 'failed', 'cancelled'),
                t.state = 'completed', f.max_parallel
           FROM workflow_tasks w LEFT JOIN tasks t ON t.id = w.task_id
           JOIN workflows f ON f.id = w.workflow_id
          WHERE w.state = 'open'",
    )?;
    let found = rows.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, bool>(2)?,
            r.get::<_, bool>(3)?,
            r.get::<_, Option<bool>>(4)?.unwrap_or(false),
            r.get::<_, i64>(5)?,
        ))
    })?;
    for row in found {
        let (workflow, step, is_item, finished, completed, max_parallel) = row?;
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
pub fn unfinished(conn: &Connection, limit: u32) -> rusqlite::Result<Vec<String>> {
    let mut query = conn.prepare_cached(
        "SELECT id FROM workflows WHERE state IN ('pending', 'running') ORDER BY seq LIMIT ?1",
    )?;
    query
        .query_map([limit], |r| r.get(0))?
        .collect::<Result<_, _>>()
}

/// The most events kept per workflow (the rest are counted in one last event).
pub const MAX_EVENTS: i64 = 10_000;

pub fn append_event(
    conn: &Connection,
    workflow: &str,
    at: i64,
    step: Option<&str>,
    kind: &str,
    detail: Option<&str>,
) -> rusqlite::Result<()> {
    let next: i64 = conn
        .prepare_cached(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM workflow_events WHERE workflow_id = ?1",
        )?
        .query_row([workflow], |r| r.get(0))?;
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
    conn.prepare_cached(
        "INSERT INTO workflow_events (workflow_id, seq, at, step_id, kind, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![workflow, next, at, step, kind, detail])?;
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

pub fn events(conn: &Connection, workflow: &str, limit: u32) -> rusqlite::Result<Vec<Event>> {
    let mut query = conn.prepare_cached(
        "SELECT seq, at, step_id, kind, detail FROM workflow_events WHERE workflow_id = ?1
          ORDER BY seq LIMIT ?2",
    )?;
    query
        .query_map(params![workflow, limit], |r| {
            Ok(Event {
                seq: r.get(0)?,
                at_ms: r.get(1)?,
                step_id: r.get(2)?,
                kind: r.get(3)?,
                detail: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()
}

/// A page of workflows, newest first, with the total that matched.
pub fn list(
    conn: &Connection,
    state: Option<WorkflowState>,
    tag: Option<&[String]>,
    offset: u64,
    limit: u64,
) -> rusqlite::Result<(Vec<WorkflowRow>, u64)> {
    let mut query = conn.prepare_cached(&format!(
        "SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE (?1 IS NULL OR state = ?1) ORDER BY seq DESC"
    ))?;
    let rows = query.query_map([state.map(WorkflowState::as_str)], workflow_from_row)?;
    let mut page = Vec::new();
    let mut total = 0u64;
    for row in rows {
        let row = row?;
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

pub fn template_pins(conn: &Connection) -> rusqlite::Result<Pins> {
    let mut query =
        conn.prepare_cached("SELECT template_id, version, sha256 FROM workflow_template_pins")?;
    query
        .query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))?
        .collect::<Result<_, _>>()
}

pub fn save_template_pins(conn: &Connection, pins: &Pins) -> rusqlite::Result<()> {
    let mut insert = conn.prepare_cached(
        "INSERT OR IGNORE INTO workflow_template_pins (template_id, version, sha256) VALUES (?1, ?2, ?3)",
    )?;
    for ((id, version), sha) in pins {
        insert.execute(params![id, version, sha])?;
    }
    Ok(())
}

/// Delete workflows that finished before `before`, with their steps, task
/// rows, events and needs; returns how many.
pub fn purge_finished(conn: &Connection, before: i64) -> rusqlite::Result<u64> {
    let old = "SELECT id FROM workflows WHERE state IN ('completed', 'failed', 'cancelled')
                 AND finished_at IS NOT NULL AND finished_at < ?1";
    for table in [
        "workflow_steps",
        "workflow_tasks",
        "workflow_events",
        "workflow_needs",
    ] {
        conn.execute(
            &format!("DELETE FROM {table} WHERE workflow_id IN ({old})"),
            [before],
        )?;
    }
    let n = conn.execute(
        "DELETE FROM workflows WHERE state IN ('completed', 'failed', 'cancelled')
           AND finished_at IS NOT NULL AND finished_at < ?1",
        [before],
    )?;
    Ok(n as u64)
}

/// The most results the cache keeps, and the most bytes of them; past
/// either the least recently used go first.
pub const CACHE_ENTRIES: i64 = 10_000;
pub const CACHE_BYTES: i64 = 64 << 20;

/// A cached result under `key` still usable at `now`: (output, the task
/// that produced it). Counts the hit.
pub fn cache_get(
    conn: &Connection,
    key: &str,
    now: i64,
) -> rusqlite::Result<Option<(Value, String)>> {
    let found: Option<(String, String)> = conn
        .prepare_cached(
            "SELECT output, source FROM step_cache WHERE key = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
        )?
        .query_row(params![key, now], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((output, source)) = found else {
        return Ok(None);
    };
    conn.prepare_cached("UPDATE step_cache SET hits = hits + 1, last_used = ?2 WHERE key = ?1")?
        .execute(params![key, now])?;
    Ok(serde_json::from_str(&output).ok().map(|o| (o, source)))
}

/// Keep `output` under `key`, then evict the least recently used past the bounds.
#[allow(clippy::too_many_arguments)]
pub fn cache_put(
    conn: &Connection,
    key: &str,
    tool: &str,
    component: &str,
    output: &Value,
    source: &str,
    now: i64,
    ttl_ms: Option<u64>,
) -> rusqlite::Result<()> {
    let text = output.to_string();
    if text.len() as i64 > CACHE_BYTES / 16 {
        return Ok(()); // one result may not take a sixteenth of the cache
    }
    conn.prepare_cached(
        "INSERT OR REPLACE INTO step_cache (key, tool, component, output, bytes, source, created_at,
             expires_at, last_used) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?7)",
    )?
    .execute(params![
        key,
        tool,
        component,
        text,
        text.len() as i64,
        source,
        now,
        ttl_ms.map(|t| now.saturating_add(t as i64)),
    ])?;
    conn.execute(
        "DELETE FROM step_cache WHERE expires_at IS NOT NULL AND expires_at <= ?1",
        [now],
    )?;
    loop {
        let (entries, bytes): (i64, i64) = conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(bytes), 0) FROM step_cache",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        if entries <= CACHE_ENTRIES && bytes <= CACHE_BYTES {
            return Ok(());
        }
        conn.execute(
            "DELETE FROM step_cache WHERE key IN (SELECT key FROM step_cache ORDER BY last_used LIMIT ?1)",
            [(entries - CACHE_ENTRIES).clamp(1, 1000)],
        )?;
    }
}

#[cfg(test)]
mod migration_tests {
    use super::*;

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
}
