//! Graph output for `workflow_dependencies` (docs/workflows.md): the workflow's
//! DAG as JSON, Graphviz DOT or Mermaid, with each step's level and timings and
//! the critical path.
//!
//! **Critical path.** Once a step has run, a step weighs `finished − ready`,
//! where `ready` is the latest finish among its dependencies (the workflow's
//! start for a root); a running step counts `now − ready`. Walking back from
//! the last step to finish through its last-finishing dependency gives the
//! longest path, and the weights telescope: its length is exactly the last
//! finish minus the workflow's start (`basis: "run"`). Skipped steps, and
//! steps that never ran, weigh nothing and are never on it. Before anything
//! ran, the path with the most steps is given instead (`basis: "structure"`,
//! no length). Ties go to the step listed first.
//!
//! **Text formats.** Labels are user text and may hold anything, so every
//! format escapes them its own way: DOT quotes every id and label (`\` and
//! `"` escaped, line breaks as `\n`, `&` in labels as `&amp;`); Mermaid uses
//! generated node ids `s0…sN` and writes each label as a quoted string in
//! which everything but plain characters is an entity code (`#quot;`, `#35;`),
//! so no step id or label can be read as Mermaid syntax (`end`, `%%`, `:::`,
//! `<br>`). Mermaid refuses to render more than 500 edges or 50,000
//! characters by default (a diagram cannot raise these); past either the text
//! is still returned, with a warning recommending `fmt="dot"`.
//!
//! The input comes validated (acyclic, edges between known steps), but
//! nothing here panics on bad input: unknown ids, self-edges and duplicate
//! edges are dropped with a warning, and a cycle is reported, not followed.
//! The same input always gives the same bytes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::spec::StepState;

/// A label in DOT or Mermaid is cut to this many characters.
pub const MAX_LABEL_CHARS: usize = 200;
/// Mermaid (12.3) refuses to render more edges than this by default.
pub const MERMAID_MAX_EDGES: usize = 500;
/// Mermaid (12.3) refuses to render a longer text (in UTF-16 units) by default.
pub const MERMAID_MAX_TEXT: usize = 50_000;

/// The step's own name in a label is cut to this many characters, its action to
/// `MAX_ACTION_CHARS`, so the state line always fits in `MAX_LABEL_CHARS`.
const MAX_NAME_CHARS: usize = 100;
const MAX_ACTION_CHARS: usize = 64;
/// At most this many warnings about dropped edges or nodes, then a count of the rest.
const MAX_INPUT_WARNINGS: usize = 10;

/// A dependency: `to` runs after `from`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Edge {
    pub from: String,
    pub to: String,
    /// Added by a `${steps.x…}` reference, not by `depends_on`.
    pub implicit: bool,
}

impl Edge {
    /// A `depends_on` edge.
    pub fn new(from: impl Into<String>, to: impl Into<String>) -> Self {
        Self {
            from: from.into(),
            to: to.into(),
            implicit: false,
        }
    }

    /// An edge added by a `${steps.x…}` reference.
    pub fn implicit(from: impl Into<String>, to: impl Into<String>) -> Self {
        Self {
            implicit: true,
            ..Self::new(from, to)
        }
    }
}

/// One step as the graph shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub id: String,
    /// The step's `name`, or its id; may contain any characters.
    pub label: String,
    pub action: String,
    pub status: StepState,
    /// When its dependencies were done (as the controller recorded it).
    pub ready_at_ms: Option<i64>,
    /// When its first attempt started.
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub attempts: u32,
    /// `for_each` steps: the item count.
    pub items: Option<u32>,
}

impl NodeView {
    /// A step that has not run: labelled with its id, no times, no attempts.
    pub fn new(id: impl Into<String>, action: impl Into<String>, status: StepState) -> Self {
        let id = id.into();
        Self {
            label: id.clone(),
            id,
            action: action.into(),
            status,
            ready_at_ms: None,
            started_at_ms: None,
            finished_at_ms: None,
            attempts: 0,
            items: None,
        }
    }
}

/// A workflow's graph and times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphInput {
    pub workflow_id: String,
    pub workflow_name: String,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    /// The time running steps are measured to.
    pub now_ms: i64,
    pub nodes: Vec<NodeView>,
    pub edges: Vec<Edge>,
}

/// An output format of `workflow_dependencies`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Json,
    Dot,
    Mermaid,
}

impl Format {
    /// `json`, `dot` or `mermaid` (any case, surrounding spaces ignored).
    pub fn parse(text: &str) -> Result<Format, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "json" => Ok(Format::Json),
            "dot" => Ok(Format::Dot),
            "mermaid" => Ok(Format::Mermaid),
            _ => Err(format!(
                "format must be one of json, dot, mermaid; got {text:?}"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Dot => "dot",
            Format::Mermaid => "mermaid",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the critical path was computed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// Recorded times: the chain that decided the wall time.
    Run,
    /// Nothing ran yet: the chain with the most steps.
    Structure,
}

impl Basis {
    pub fn as_str(self) -> &'static str {
        match self {
            Basis::Run => "run",
            Basis::Structure => "structure",
        }
    }
}

/// The chain of steps that decided (or, before a run, will likely decide) how
/// long the workflow takes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CriticalPath {
    /// Step ids, first to last.
    pub steps: Vec<String>,
    /// With `Basis::Run`: the last finish (or now) minus the workflow's start.
    pub length_ms: Option<i64>,
    pub basis: Basis,
}

/// The answer of `workflow_dependencies` in one format.
#[derive(Debug, Clone, PartialEq)]
pub struct Rendered {
    /// The JSON object for `Format::Json`, the text (a JSON string) for DOT and Mermaid.
    pub dag: Value,
    /// One object per step, in input order:
    /// `{id, label, status, level, action, duration_ms, wait_ms, run_ms, attempts, items, critical}`.
    pub nodes: Vec<Value>,
    /// `{from, to, implicit, critical}`, in input order, without dropped edges.
    pub edges: Vec<Value>,
    pub critical_path: CriticalPath,
    /// Dropped input and format limits (Mermaid's), for the caller to pass on.
    pub warnings: Vec<String>,
}

/// Each node's level: the longest distance (in edges) from a root; roots are 0.
/// Nodes on a cycle (which validation refuses) get the level reached before it.
pub fn levels(input: &GraphInput) -> Vec<u32> {
    Graph::new(input).levels().0
}

/// The critical path (see the module documentation).
pub fn critical_path(input: &GraphInput) -> CriticalPath {
    let graph = Graph::new(input);
    let (level, _) = graph.levels();
    let timing = graph.timing(input);
    let path = graph.critical_path(&level, &timing);
    path.to_public(input)
}

/// The graph in `format`, with per-step data, the critical path and warnings.
pub fn render(input: &GraphInput, format: Format) -> Rendered {
    let graph = Graph::new(input);
    let (level, acyclic) = graph.levels();
    let mut warnings = graph.warnings.clone();
    if !acyclic {
        warnings.push(
            "the graph has a cycle; levels and the critical path ignore the steps on or after it"
                .to_string(),
        );
    }
    let timing = graph.timing(input);
    let path = graph.critical_path(&level, &timing);
    let on_path = path.node_set(input.nodes.len());
    let critical_edges = path.edge_set();
    let critical_path = path.to_public(input);

    let nodes: Vec<Value> = input
        .nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            json!({
                "id": node.id,
                "label": node.label,
                "status": node.status.as_str(),
                "level": level[i],
                "action": node.action,
                "duration_ms": timing[i].weight,
                "wait_ms": timing[i].wait,
                "run_ms": timing[i].run,
                "attempts": node.attempts,
                "items": node.items,
                "critical": on_path[i],
            })
        })
        .collect();
    let edges: Vec<Value> = graph
        .edges
        .iter()
        .map(|e| {
            json!({
                "from": input.nodes[e.from].id,
                "to": input.nodes[e.to].id,
                "implicit": e.implicit,
                "critical": critical_edges.contains(&(e.from, e.to)),
            })
        })
        .collect();

    let dag = match format {
        Format::Json => json!({
            "nodes": nodes,
            "edges": edges,
            "critical_path": critical_path.steps,
            "critical_path_ms": critical_path.length_ms,
            "critical_path_basis": critical_path.basis.as_str(),
        }),
        Format::Dot => Value::String(dot(input, &graph, &timing, &on_path, &critical_edges)),
        Format::Mermaid => {
            let text = mermaid(input, &graph, &timing, &critical_edges);
            let units = text.encode_utf16().count();
            if graph.edges.len() > MERMAID_MAX_EDGES || units > MERMAID_MAX_TEXT {
                warnings.push(format!(
                    "this Mermaid text has {} edges and {} characters; Mermaid refuses to render \
                     more than {MERMAID_MAX_EDGES} edges or {MERMAID_MAX_TEXT} characters by \
                     default, so it may not render: use fmt=\"dot\" for a graph this large",
                    graph.edges.len(),
                    units,
                ));
            }
            Value::String(text)
        }
    };
    Rendered {
        dag,
        nodes,
        edges,
        critical_path,
        warnings,
    }
}

/// A kept edge, by node index.
#[derive(Debug, Clone, Copy)]
struct IndexEdge {
    from: usize,
    to: usize,
    implicit: bool,
}

/// The input with ids resolved to indices; what was dropped is in `warnings`.
struct Graph {
    edges: Vec<IndexEdge>,
    preds: Vec<Vec<usize>>,
    succs: Vec<Vec<usize>>,
    warnings: Vec<String>,
}

/// A step's times, derived (see `Graph::timing`).
#[derive(Debug, Clone, Copy, Default)]
struct Timing {
    /// When it finished, `now` while it runs; `None` when it did not run (or was skipped).
    end: Option<i64>,
    /// `end − ready`: its weight on the critical path.
    weight: Option<i64>,
    /// Started − ready (the recorded ready time, else the computed one).
    wait: Option<i64>,
    /// Finished (or now) − started.
    run: Option<i64>,
}

/// A critical path by node index.
struct IndexPath {
    steps: Vec<usize>,
    length_ms: Option<i64>,
    basis: Basis,
}

impl IndexPath {
    fn to_public(&self, input: &GraphInput) -> CriticalPath {
        CriticalPath {
            steps: self
                .steps
                .iter()
                .map(|&i| input.nodes[i].id.clone())
                .collect(),
            length_ms: self.length_ms,
            basis: self.basis,
        }
    }

    fn node_set(&self, n: usize) -> Vec<bool> {
        let mut on = vec![false; n];
        for &i in &self.steps {
            on[i] = true;
        }
        on
    }

    fn edge_set(&self) -> HashSet<(usize, usize)> {
        self.steps.windows(2).map(|w| (w[0], w[1])).collect()
    }
}

impl Graph {
    fn new(input: &GraphInput) -> Graph {
        let n = input.nodes.len();
        let mut warnings = Vec::new();
        let mut dropped = 0usize;
        let mut note = |warnings: &mut Vec<String>, message: String| {
            dropped += 1;
            if dropped <= MAX_INPUT_WARNINGS {
                warnings.push(message);
            }
        };

        let mut index: HashMap<&str, usize> = HashMap::with_capacity(n);
        for (i, node) in input.nodes.iter().enumerate() {
            if index.contains_key(node.id.as_str()) {
                note(
                    &mut warnings,
                    format!(
                        "step id {:?} appears more than once; edges use its first occurrence",
                        node.id
                    ),
                );
            } else {
                index.insert(node.id.as_str(), i);
            }
        }

        let mut edges: Vec<IndexEdge> = Vec::with_capacity(input.edges.len());
        let mut seen: HashMap<(usize, usize), usize> = HashMap::with_capacity(input.edges.len());
        for edge in &input.edges {
            let (Some(&from), Some(&to)) =
                (index.get(edge.from.as_str()), index.get(edge.to.as_str()))
            else {
                note(
                    &mut warnings,
                    format!(
                        "edge {:?} -> {:?} names an unknown step; ignored",
                        edge.from, edge.to
                    ),
                );
                continue;
            };
            if from == to {
                note(
                    &mut warnings,
                    format!("edge {:?} -> itself ignored", edge.from),
                );
                continue;
            }
            match seen.get(&(from, to)) {
                // A repeated edge is drawn once; `depends_on` wins over a reference.
                Some(&k) => edges[k].implicit &= edge.implicit,
                None => {
                    seen.insert((from, to), edges.len());
                    edges.push(IndexEdge {
                        from,
                        to,
                        implicit: edge.implicit,
                    });
                }
            }
        }
        if dropped > MAX_INPUT_WARNINGS {
            warnings.push(format!(
                "{} more ignored edges or duplicate steps",
                dropped - MAX_INPUT_WARNINGS
            ));
        }

        let mut preds = vec![Vec::new(); n];
        let mut succs = vec![Vec::new(); n];
        for e in &edges {
            preds[e.to].push(e.from);
            succs[e.from].push(e.to);
        }
        Graph {
            edges,
            preds,
            succs,
            warnings,
        }
    }

    /// Levels (longest distance from a root), and whether every node was reached
    /// (false when there is a cycle).
    fn levels(&self) -> (Vec<u32>, bool) {
        let n = self.preds.len();
        let mut indegree: Vec<usize> = self.preds.iter().map(Vec::len).collect();
        let mut queue: VecDeque<usize> = (0..n).filter(|&i| indegree[i] == 0).collect();
        let mut level = vec![0u32; n];
        let mut reached = 0usize;
        while let Some(v) = queue.pop_front() {
            reached += 1;
            for &s in &self.succs[v] {
                level[s] = level[s].max(level[v].saturating_add(1));
                indegree[s] -= 1;
                if indegree[s] == 0 {
                    queue.push_back(s);
                }
            }
        }
        (level, reached == n)
    }

    fn timing(&self, input: &GraphInput) -> Vec<Timing> {
        let now = input.now_ms;
        let end: Vec<Option<i64>> = input.nodes.iter().map(|node| end_time(node, now)).collect();
        // The workflow's start; without one (not recorded), the earliest time a step
        // that ran was ready or started.
        let start = input.started_at_ms.or_else(|| {
            input
                .nodes
                .iter()
                .zip(&end)
                .filter_map(|(node, end)| {
                    end.map(|end| node.ready_at_ms.or(node.started_at_ms).unwrap_or(end))
                })
                .min()
        });
        input
            .nodes
            .iter()
            .enumerate()
            .map(|(i, node)| {
                let latest_dependency = self.preds[i].iter().filter_map(|&p| end[p]).max();
                let ready = latest_dependency.or(start);
                let run_end = node.finished_at_ms.or((node.status == StepState::Running
                    || (node.started_at_ms.is_some() && !node.status.is_terminal()))
                .then_some(now));
                Timing {
                    end: end[i],
                    weight: match (end[i], ready) {
                        (Some(end), Some(ready)) => Some(end.saturating_sub(ready)),
                        _ => None,
                    },
                    wait: match (node.started_at_ms, node.ready_at_ms.or(ready)) {
                        (Some(started), Some(ready)) => Some(started.saturating_sub(ready)),
                        _ => None,
                    },
                    run: match (node.started_at_ms, run_end) {
                        (Some(started), Some(run_end)) => Some(run_end.saturating_sub(started)),
                        _ => None,
                    },
                }
            })
            .collect()
    }

    fn critical_path(&self, level: &[u32], timing: &[Timing]) -> IndexPath {
        let n = level.len();
        // `max_by_key` keeps the last of equal keys; reversing the candidates makes
        // ties go to the step listed first.
        let last_run = (0..n)
            .rev()
            .filter_map(|i| timing[i].end.map(|end| (i, end)))
            .max_by_key(|&(_, end)| end);
        let mut on = vec![false; n];
        let mut steps = Vec::new();
        if let Some((last, _)) = last_run {
            let mut current = last;
            on[current] = true;
            steps.push(current);
            // Through the last-finishing dependency that ran (`on` guards against a cycle).
            while let Some(next) = self.preds[current]
                .iter()
                .copied()
                .filter(|&p| !on[p] && timing[p].end.is_some())
                .max_by_key(|&p| (timing[p].end, std::cmp::Reverse(p)))
            {
                on[next] = true;
                steps.push(next);
                current = next;
            }
            steps.reverse();
            let length = steps
                .iter()
                .filter_map(|&i| timing[i].weight)
                .fold(0i64, i64::saturating_add);
            return IndexPath {
                steps,
                length_ms: Some(length),
                basis: Basis::Run,
            };
        }
        // Nothing ran: the chain with the most steps, from the deepest step back
        // through the deepest dependency.
        if let Some(deepest) = (0..n).rev().max_by_key(|&i| level[i]) {
            let mut current = deepest;
            on[current] = true;
            steps.push(current);
            while let Some(next) = self.preds[current]
                .iter()
                .copied()
                .filter(|&p| !on[p])
                .max_by_key(|&p| (level[p], std::cmp::Reverse(p)))
            {
                on[next] = true;
                steps.push(next);
                current = next;
            }
            steps.reverse();
        }
        IndexPath {
            steps,
            length_ms: None,
            basis: Basis::Structure,
        }
    }
}

/// When a step stopped counting: its finish if it ran (or completed from the cache),
/// `now` while it runs, `None` when it was skipped or never ran.
fn end_time(node: &NodeView, now: i64) -> Option<i64> {
    match node.status {
        StepState::Skipped => None,
        _ => match node.finished_at_ms {
            Some(finished)
                if node.started_at_ms.is_some()
                    || matches!(node.status, StepState::Completed | StepState::Failed) =>
            {
                Some(finished)
            }
            None if node.status == StepState::Running
                || (node.started_at_ms.is_some() && !node.status.is_terminal()) =>
            {
                Some(now)
            }
            _ => None,
        },
    }
}

/// Fill and border colours per state (DOT and Mermaid alike).
fn colours(state: StepState) -> (&'static str, &'static str) {
    match state {
        StepState::Pending => ("#eeeeee", "#9e9e9e"),
        StepState::Ready => ("#fff9c4", "#f9a825"),
        StepState::Running => ("#bbdefb", "#1565c0"),
        StepState::Completed => ("#c8e6c9", "#2e7d32"),
        StepState::Failed => ("#ffcdd2", "#c62828"),
        StepState::Skipped => ("#f5f5f5", "#bdbdbd"),
        StepState::Cancelled => ("#d7ccc8", "#5d4037"),
    }
}

const ALL_STATES: [StepState; 7] = [
    StepState::Pending,
    StepState::Ready,
    StepState::Running,
    StepState::Completed,
    StepState::Failed,
    StepState::Skipped,
    StepState::Cancelled,
];

const CRITICAL_COLOUR: &str = "#d32f2f";

/// At most `max` characters (an ellipsis marking a cut), on a character boundary.
fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_string(),
        Some(_) => {
            let keep = max.saturating_sub(1);
            let end = text.char_indices().nth(keep).map_or(text.len(), |(i, _)| i);
            let mut cut = text[..end].to_string();
            cut.push('…');
            cut
        }
    }
}

/// `name\naction ×N\nstate · 120 ms · 3 attempts`, at most `MAX_LABEL_CHARS` characters.
/// The shown time is how long it ran (else its critical-path weight).
pub fn node_label(node: &NodeView, run_ms: Option<i64>, duration_ms: Option<i64>) -> String {
    let mut label = truncate_chars(&node.label.replace("\r\n", "\n"), MAX_NAME_CHARS);
    label.push('\n');
    label.push_str(&truncate_chars(&node.action, MAX_ACTION_CHARS));
    if let Some(items) = node.items {
        let _ = write!(label, " ×{items}");
    }
    label.push('\n');
    label.push_str(node.status.as_str());
    if let Some(ms) = run_ms.or(duration_ms) {
        let _ = write!(label, " · {ms} ms");
    }
    if node.attempts > 1 {
        let _ = write!(label, " · {} attempts", node.attempts);
    }
    truncate_chars(&label, MAX_LABEL_CHARS)
}

/// A DOT quoted string: `\` and `"` escaped, line breaks as `\n`, other control
/// characters replaced (SVG output cannot carry them).
pub fn dot_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => {
                if chars.peek() != Some(&'\n') {
                    out.push_str("\\n");
                }
            }
            '\t' => out.push(' '),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A DOT label: `dot_quote`, and `&` as `&amp;`, because Graphviz reads HTML entities
/// (`&lt;`) in labels and would show them as the character.
pub fn dot_label(text: &str) -> String {
    dot_quote(&text.replace('&', "&amp;"))
}

/// The inside of a Mermaid quoted label: letters, digits, spaces and a few safe
/// ASCII marks as they are, line breaks as `<br>`, `"` as `#quot;`, every other
/// ASCII mark as a numeric entity code (`#35;` for `#`), so nothing can close the
/// string, start a comment or markdown string, or be read as HTML. Other Unicode is
/// kept, except control and space characters and Mermaid's internal markers
/// (entity codes too).
pub fn mermaid_label_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            'A'..='Z'
            | 'a'..='z'
            | '0'..='9'
            | ' '
            | '_'
            | '-'
            | '.'
            | ','
            | '/'
            | '('
            | ')'
            | '+'
            | '='
            | '*'
            | '!'
            | '?'
            | '@'
            | '$'
            | '^'
            | '~'
            | '\'' => out.push(c),
            '"' => out.push_str("#quot;"),
            '\n' => out.push_str("<br>"),
            '\r' => {
                if chars.peek() != Some(&'\n') {
                    out.push_str("<br>");
                }
            }
            '\t' => out.push(' '),
            c if c.is_control() => out.push('\u{FFFD}'),
            // 'ﬂ' and '¶' start the markers Mermaid turns entity codes into
            // internally (`ﬂ°…¶ß`); raw, they would decode as entities.
            c if c.is_ascii() || c.is_whitespace() || c == 'ﬂ' || c == '¶' => {
                let _ = write!(out, "#{};", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

fn dot(
    input: &GraphInput,
    graph: &Graph,
    timing: &[Timing],
    on_path: &[bool],
    critical_edges: &HashSet<(usize, usize)>,
) -> String {
    let mut out = String::with_capacity(128 + input.nodes.len() * 120 + graph.edges.len() * 40);
    let _ = writeln!(out, "digraph {} {{", dot_quote(&input.workflow_id));
    let _ = writeln!(
        out,
        "  graph [rankdir=LR, labelloc=t, fontname=\"Helvetica\", label={}];",
        dot_label(&truncate_chars(&input.workflow_name, MAX_LABEL_CHARS))
    );
    out.push_str("  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\"];\n");
    out.push_str("  edge [color=\"#616161\"];\n");
    for (i, node) in input.nodes.iter().enumerate() {
        let (fill, border) = colours(node.status);
        let label = node_label(node, timing[i].run, timing[i].weight);
        let _ = write!(
            out,
            "  {} [label={}, fillcolor=\"{fill}\", color=\"{}\"",
            dot_quote(&node.id),
            dot_label(&label),
            if on_path[i] { CRITICAL_COLOUR } else { border },
        );
        if on_path[i] {
            out.push_str(", penwidth=2");
        }
        if node.items.is_some() {
            out.push_str(", peripheries=2");
        }
        out.push_str("];\n");
    }
    for e in &graph.edges {
        let _ = write!(
            out,
            "  {} -> {}",
            dot_quote(&input.nodes[e.from].id),
            dot_quote(&input.nodes[e.to].id)
        );
        let critical = critical_edges.contains(&(e.from, e.to));
        let mut attributes = Vec::new();
        if critical {
            attributes.push(format!("penwidth=3, color=\"{CRITICAL_COLOUR}\""));
        }
        if e.implicit {
            attributes.push("style=dashed".to_string());
        }
        if !attributes.is_empty() {
            let _ = write!(out, " [{}]", attributes.join(", "));
        }
        out.push_str(";\n");
    }
    out.push_str("}\n");
    out
}

fn mermaid(
    input: &GraphInput,
    graph: &Graph,
    timing: &[Timing],
    critical_edges: &HashSet<(usize, usize)>,
) -> String {
    let mut out = String::with_capacity(256 + input.nodes.len() * 100 + graph.edges.len() * 16);
    out.push_str("flowchart LR\n");
    for state in ALL_STATES {
        let (fill, border) = colours(state);
        let _ = writeln!(
            out,
            "  classDef {} fill:{fill},stroke:{border},color:#000000",
            state.as_str()
        );
    }
    for (i, node) in input.nodes.iter().enumerate() {
        let label = mermaid_label_text(&node_label(node, timing[i].run, timing[i].weight));
        // A map (`for_each`) is drawn as a subroutine box.
        if node.items.is_some() {
            let _ = writeln!(out, "  s{i}[[\"{label}\"]]");
        } else {
            let _ = writeln!(out, "  s{i}[\"{label}\"]");
        }
    }
    let mut critical = Vec::new();
    for (k, e) in graph.edges.iter().enumerate() {
        let arrow = if e.implicit { "-.->" } else { "-->" };
        let _ = writeln!(out, "  s{} {arrow} s{}", e.from, e.to);
        if critical_edges.contains(&(e.from, e.to)) {
            critical.push(k.to_string());
        }
    }
    for state in ALL_STATES {
        let members: Vec<String> = input
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, node)| node.status == state)
            .map(|(i, _)| format!("s{i}"))
            .collect();
        if !members.is_empty() {
            let _ = writeln!(out, "  class {} {}", members.join(","), state.as_str());
        }
    }
    if !critical.is_empty() {
        let _ = writeln!(
            out,
            "  linkStyle {} stroke:{CRITICAL_COLOUR},stroke-width:4px",
            critical.join(",")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str) -> NodeView {
        NodeView::new(id, "echo", StepState::Pending)
    }

    fn input(nodes: Vec<NodeView>, edges: Vec<Edge>) -> GraphInput {
        GraphInput {
            workflow_id: "wf".into(),
            workflow_name: "Workflow".into(),
            started_at_ms: None,
            finished_at_ms: None,
            now_ms: 0,
            nodes,
            edges,
        }
    }

    fn ran(id: &str, ready: i64, started: i64, finished: i64) -> NodeView {
        NodeView {
            ready_at_ms: Some(ready),
            started_at_ms: Some(started),
            finished_at_ms: Some(finished),
            attempts: 1,
            ..NodeView::new(id, "sleep", StepState::Completed)
        }
    }

    /// a 300 ms → b 200 ms → c 100 ms, a → x 50 ms, {c, x} → z 10 ms; the workflow
    /// starts at 1000 and each step starts 1 ms after it is ready.
    fn timed() -> GraphInput {
        let t0 = 1_000;
        let a = t0 + 1 + 300;
        let b = a + 1 + 200;
        let c = b + 1 + 100;
        let x = a + 1 + 50;
        let z = c + 1 + 10;
        GraphInput {
            started_at_ms: Some(t0),
            finished_at_ms: Some(z),
            now_ms: z + 5_000,
            ..input(
                vec![
                    ran("a", t0, t0 + 1, a),
                    ran("x", a, a + 1, x),
                    ran("b", a, a + 1, b),
                    ran("c", b, b + 1, c),
                    ran("z", c, c + 1, z),
                ],
                vec![
                    Edge::new("a", "b"),
                    Edge::new("b", "c"),
                    Edge::new("a", "x"),
                    Edge::new("c", "z"),
                    Edge::implicit("x", "z"),
                ],
            )
        }
    }

    fn text(rendered: &Rendered) -> &str {
        rendered.dag.as_str().expect("a text format")
    }

    #[test]
    fn format_parse() {
        assert_eq!(Format::parse("json"), Ok(Format::Json));
        assert_eq!(Format::parse("DOT"), Ok(Format::Dot));
        assert_eq!(Format::parse(" mermaid "), Ok(Format::Mermaid));
        let err = Format::parse("svg").unwrap_err();
        assert!(
            err.starts_with("format must be one of json, dot, mermaid; got"),
            "{err}"
        );
        assert!(err.contains("svg"), "{err}");
    }

    #[test]
    fn levels_are_longest_distances() {
        // a → b → c → d and a → d: d is at 3, not 1; e alone is a root.
        let g = input(
            vec![node("d"), node("c"), node("b"), node("a"), node("e")],
            vec![
                Edge::new("a", "b"),
                Edge::new("b", "c"),
                Edge::new("c", "d"),
                Edge::new("a", "d"),
            ],
        );
        assert_eq!(levels(&g), vec![3, 2, 1, 0, 0]);
        assert_eq!(levels(&input(vec![], vec![])), Vec::<u32>::new());
        assert_eq!(levels(&input(vec![node("solo")], vec![])), vec![0]);
    }

    #[test]
    fn critical_path_of_a_run_telescopes_to_the_wall_time() {
        let g = timed();
        let path = critical_path(&g);
        assert_eq!(path.steps, ["a", "b", "c", "z"]);
        assert_eq!(path.basis, Basis::Run);
        let wall = g.finished_at_ms.unwrap() - g.started_at_ms.unwrap();
        assert_eq!(path.length_ms, Some(wall));

        let rendered = render(&g, Format::Json);
        assert_eq!(rendered.dag["critical_path"], json!(["a", "b", "c", "z"]));
        assert_eq!(rendered.dag["critical_path_ms"], json!(wall));
        assert_eq!(rendered.dag["critical_path_basis"], json!("run"));
        // The per-step weights on the path add up to the same figure.
        let sum: i64 = rendered
            .nodes
            .iter()
            .filter(|n| n["critical"] == json!(true))
            .map(|n| n["duration_ms"].as_i64().unwrap())
            .sum();
        assert_eq!(sum, wall);
        let x = &rendered.nodes[1];
        assert_eq!(x["id"], "x");
        assert_eq!(x["wait_ms"], json!(1));
        assert_eq!(x["run_ms"], json!(50));
        assert_eq!(x["duration_ms"], json!(51));
        assert_eq!(x["level"], json!(1));
        assert_eq!(rendered.nodes[4]["level"], json!(3));
        assert!(rendered.warnings.is_empty(), "{:?}", rendered.warnings);
    }

    #[test]
    fn critical_path_while_running_counts_to_now() {
        let mut g = timed();
        // z is still running 40 ms after it started; the length is the time so far.
        let z = g.nodes.iter_mut().find(|n| n.id == "z").unwrap();
        z.status = StepState::Running;
        z.finished_at_ms = None;
        let z_started = z.started_at_ms.unwrap();
        g.now_ms = z_started + 40;
        g.finished_at_ms = None;
        let path = critical_path(&g);
        assert_eq!(path.steps, ["a", "b", "c", "z"]);
        assert_eq!(path.length_ms, Some(g.now_ms - g.started_at_ms.unwrap()));
    }

    #[test]
    fn skipped_steps_are_never_on_the_path() {
        let mut g = timed();
        // b, c and z skipped: the run is a → x.
        for n in &mut g.nodes {
            if ["b", "c", "z"].contains(&n.id.as_str()) {
                *n = NodeView::new(n.id.clone(), "sleep", StepState::Skipped);
            }
        }
        let path = critical_path(&g);
        assert_eq!(path.steps, ["a", "x"]);
        assert_eq!(path.basis, Basis::Run);
        let x_finished = g.nodes[1].finished_at_ms.unwrap();
        assert_eq!(path.length_ms, Some(x_finished - 1_000));
        let rendered = render(&g, Format::Json);
        assert_eq!(rendered.nodes[2]["duration_ms"], Value::Null);
    }

    #[test]
    fn critical_path_before_a_run_is_the_longest_chain() {
        // a → b → c → z, a → x → z, y alone; nothing ran.
        let g = input(
            vec![
                node("a"),
                node("x"),
                node("b"),
                node("c"),
                node("z"),
                node("y"),
            ],
            vec![
                Edge::new("a", "x"),
                Edge::new("a", "b"),
                Edge::new("b", "c"),
                Edge::new("c", "z"),
                Edge::new("x", "z"),
            ],
        );
        let path = critical_path(&g);
        assert_eq!(path.steps, ["a", "b", "c", "z"]);
        assert_eq!(path.basis, Basis::Structure);
        assert_eq!(path.length_ms, None);
        let rendered = render(&g, Format::Json);
        assert_eq!(rendered.dag["critical_path_basis"], json!("structure"));
        assert_eq!(rendered.dag["critical_path_ms"], Value::Null);

        // Ties go to the step listed first: two equal chains p → q and r → s.
        let tie = input(
            vec![node("r"), node("p"), node("s"), node("q")],
            vec![Edge::new("p", "q"), Edge::new("r", "s")],
        );
        assert_eq!(critical_path(&tie).steps, ["r", "s"]);
        // Equal finishes: the first listed is the last step.
        let mut same = input(vec![ran("m", 0, 0, 10), ran("n", 0, 0, 10)], vec![]);
        same.started_at_ms = Some(0);
        assert_eq!(critical_path(&same).steps, ["m"]);

        let empty = critical_path(&input(vec![], vec![]));
        assert!(empty.steps.is_empty());
        assert_eq!(empty.basis, Basis::Structure);
    }

    #[test]
    fn json_shape() {
        let mut g = timed();
        g.nodes[2].items = Some(7);
        g.nodes[2].label = "B step".into();
        let rendered = render(&g, Format::Json);
        let dag = &rendered.dag;
        assert_eq!(dag["nodes"].as_array().unwrap().len(), 5);
        let b = &dag["nodes"][2];
        for key in [
            "id",
            "label",
            "status",
            "level",
            "action",
            "duration_ms",
            "wait_ms",
            "run_ms",
            "attempts",
            "items",
        ] {
            assert!(b.get(key).is_some(), "node lacks {key}: {b}");
        }
        assert_eq!(b["label"], "B step");
        assert_eq!(b["status"], "completed");
        assert_eq!(b["items"], 7);
        assert_eq!(
            dag["edges"][4],
            json!({"from": "x", "to": "z", "implicit": true, "critical": false})
        );
        assert_eq!(
            dag["edges"][0],
            json!({"from": "a", "to": "b", "implicit": false, "critical": true})
        );
        assert_eq!(dag["nodes"], json!(rendered.nodes));
        assert_eq!(dag["edges"], json!(rendered.edges));
    }

    #[test]
    fn dot_quotes_and_styles() {
        let mut g = timed();
        g.workflow_name = "nightly \"build\" \\ end\nline".into();
        g.nodes[0].label = "say \"hi\"\\ end\r\nnext\u{1}".into();
        g.nodes[1].items = Some(3);
        let rendered = render(&g, Format::Dot);
        let dot = text(&rendered);
        assert!(dot.starts_with("digraph \"wf\" {\n"), "{dot}");
        assert!(dot.contains("rankdir=LR"));
        assert!(
            dot.contains(r#"label="nightly \"build\" \\ end\nline""#),
            "{dot}"
        );
        let a =
            "\"a\" [label=\"say \\\"hi\\\"\\\\ end\\nnext\u{FFFD}\\nsleep\\ncompleted · 300 ms\"";
        assert!(dot.contains(a), "{a}\n{dot}");
        assert!(dot.contains("sleep ×3\\n"), "{dot}");
        assert!(dot.contains("peripheries=2"));
        assert!(dot.contains("fillcolor=\"#c8e6c9\""));
        assert!(dot.contains("\"a\" -> \"b\" [penwidth=3, color=\"#d32f2f\"];"));
        assert!(dot.contains("\"a\" -> \"x\";"));
        assert!(dot.contains("\"x\" -> \"z\" [style=dashed];"));
        assert!(dot.ends_with("}\n"));

        assert_eq!(dot_quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(dot_quote("trailing\\"), r#""trailing\\""#);
        assert_eq!(dot_label("a &amp; b"), r#""a &amp;amp; b""#);
    }

    #[test]
    fn labels_are_cut_on_character_boundaries() {
        let mut n = NodeView::new("s", "a".repeat(500), StepState::Failed);
        n.label = "é日🚀".repeat(200);
        n.attempts = 3;
        let label = node_label(&n, Some(120), None);
        assert!(label.chars().count() <= MAX_LABEL_CHARS, "{label}");
        assert!(label.ends_with("failed · 120 ms · 3 attempts"), "{label}");
        assert!(label.contains('…'));
        assert_eq!(truncate_chars("héllo", 5), "héllo");
        assert_eq!(truncate_chars("héllo!", 5), "héll…");
        assert_eq!(truncate_chars("", 5), "");

        let mut g = input(vec![n], vec![]);
        g.workflow_name = "🚀".repeat(1_000);
        let dot = render(&g, Format::Dot);
        assert!(text(&dot).chars().count() < 1_000);
    }

    #[test]
    fn mermaid_uses_generated_ids_and_escapes_labels() {
        let tricky = "end graph subgraph click style %% <br> `code` #quot; #x; a;b \"q\" \\ 日本 🚀\nline2 :::x -->";
        let mut g = input(
            vec![
                NodeView {
                    label: tricky.into(),
                    ..node("end")
                },
                node("graph"),
                NodeView {
                    items: Some(4),
                    ..node("subgraph")
                },
            ],
            vec![
                Edge::new("end", "graph"),
                Edge::implicit("graph", "subgraph"),
            ],
        );
        g.nodes[1].status = StepState::Failed;
        let rendered = render(&g, Format::Mermaid);
        let m = text(&rendered);
        assert!(m.starts_with("flowchart LR\n"));
        let node_line = m.lines().find(|l| l.starts_with("  s0[")).unwrap();
        assert_eq!(
            node_line,
            "  s0[\"end graph subgraph click style #37;#37; #60;br#62; #96;code#96; #35;quot#59; \
             #35;x#59; a#59;b #quot;q#quot; #92; 日本 🚀<br>line2 #58;#58;#58;x --#62;<br>echo<br>pending\"]"
        );
        assert!(m.contains("  s1[\"graph<br>echo<br>failed\"]\n"));
        assert!(m.contains("  s2[[\"subgraph<br>echo ×4<br>pending\"]]\n"));
        assert!(m.contains("  s0 --> s1\n  s1 -.-> s2\n"));
        assert!(m.contains("classDef failed fill:#ffcdd2"));
        assert!(m.contains("  class s0,s2 pending\n  class s1 failed\n"));
        // The structure path end → graph → subgraph is highlighted.
        assert!(m.contains("  linkStyle 0,1 stroke:#d32f2f"));
        // No step id is used as a Mermaid node id.
        for line in m.lines().filter(|l| l.contains("-->") && !l.contains('"')) {
            assert!(!line.contains("end") && !line.contains("graph"), "{line}");
        }
        assert!(rendered.warnings.is_empty());
        assert_eq!(
            mermaid_label_text("tab\there\r\nx\ry\u{7}\u{a0}"),
            "tab here<br>x<br>y\u{FFFD}#160;"
        );
        assert_eq!(mermaid_label_text("ﬂ°°60¶ß ß°"), "#64258;°°60#182;ß ß°");
    }

    fn wide(edges: usize) -> GraphInput {
        // Two layers: sources × sinks, `edges` edges.
        let sources = 30;
        let sinks = edges.div_ceil(sources);
        let mut nodes: Vec<NodeView> = (0..sources).map(|i| node(&format!("a{i}"))).collect();
        nodes.extend((0..sinks).map(|j| node(&format!("b{j}"))));
        let edges = (0..edges)
            .map(|k| Edge::new(format!("a{}", k % sources), format!("b{}", k / sources)))
            .collect();
        input(nodes, edges)
    }

    #[test]
    fn mermaid_warns_past_500_edges_or_50000_characters() {
        let at_limit = render(&wide(500), Format::Mermaid);
        assert!(at_limit.warnings.is_empty(), "{:?}", at_limit.warnings);
        let over = render(&wide(501), Format::Mermaid);
        assert_eq!(over.warnings.len(), 1, "{:?}", over.warnings);
        assert!(
            over.warnings[0].contains("501 edges"),
            "{}",
            over.warnings[0]
        );
        assert!(
            over.warnings[0].contains("fmt=\"dot\""),
            "{}",
            over.warnings[0]
        );
        // The text is still there, with every edge.
        assert_eq!(text(&over).matches(" --> ").count(), 501);
        // DOT and JSON carry no such warning.
        assert!(render(&wide(501), Format::Dot).warnings.is_empty());

        // Few edges but long labels.
        let long: Vec<NodeView> = (0..400)
            .map(|i| NodeView {
                label: "\"".repeat(150),
                ..node(&format!("n{i}"))
            })
            .collect();
        let rendered = render(&input(long, vec![]), Format::Mermaid);
        assert!(text(&rendered).encode_utf16().count() > MERMAID_MAX_TEXT);
        assert_eq!(rendered.warnings.len(), 1);
        assert!(rendered.warnings[0].contains("fmt=\"dot\""));
    }

    #[test]
    fn rendering_is_deterministic() {
        let mut g = timed();
        g.nodes[3].label = "日本 \"x\"\n".into();
        for format in [Format::Json, Format::Dot, Format::Mermaid] {
            let first = render(&g, format);
            for _ in 0..5 {
                let again = render(&g.clone(), format);
                assert_eq!(
                    serde_json::to_string(&again.dag).unwrap(),
                    serde_json::to_string(&first.dag).unwrap()
                );
                assert_eq!(again.critical_path, first.critical_path);
            }
        }
    }

    #[test]
    fn bad_input_is_reported_not_panicked_on() {
        let g = input(
            vec![node("a"), node("b"), node("a")],
            vec![
                Edge::new("a", "nope"),
                Edge::new("ghost", "b"),
                Edge::new("a", "a"),
                Edge::new("a", "b"),
                Edge::implicit("a", "b"),
            ],
        );
        for format in [Format::Json, Format::Dot, Format::Mermaid] {
            let r = render(&g, format);
            assert_eq!(r.edges.len(), 1, "{format}");
            assert_eq!(r.edges[0]["implicit"], json!(false));
            assert_eq!(r.warnings.len(), 4, "{format}: {:?}", r.warnings);
        }
        assert_eq!(levels(&g), vec![0, 1, 0]);

        // A cycle (validation refuses these) is reported, not followed.
        let cycle = input(
            vec![node("a"), node("b"), node("c")],
            vec![
                Edge::new("a", "b"),
                Edge::new("b", "c"),
                Edge::new("c", "b"),
            ],
        );
        let r = render(&cycle, Format::Mermaid);
        assert!(
            r.warnings.iter().any(|w| w.contains("cycle")),
            "{:?}",
            r.warnings
        );
        let _ = critical_path(&cycle);
        let mut timed_cycle = cycle.clone();
        for (i, n) in timed_cycle.nodes.iter_mut().enumerate() {
            *n = ran(&n.id, 0, 0, 10 * i as i64);
        }
        let path = critical_path(&timed_cycle);
        assert!(path.steps.len() <= 3);

        // Many unknown edges: a bounded number of warnings.
        let noisy = input(
            vec![node("a")],
            (0..100).map(|i| Edge::new("a", format!("x{i}"))).collect(),
        );
        assert_eq!(
            render(&noisy, Format::Json).warnings.len(),
            MAX_INPUT_WARNINGS + 1
        );

        // Extreme times saturate instead of overflowing.
        let mut extreme = input(vec![ran("a", i64::MIN, i64::MIN, i64::MAX)], vec![]);
        extreme.started_at_ms = Some(i64::MIN);
        let r = render(&extreme, Format::Dot);
        assert_eq!(r.critical_path.length_ms, Some(i64::MAX));
    }
}
