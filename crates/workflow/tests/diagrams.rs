//! Generated workflow graphs checked by the real tools (design §4.10): 25 DAGs of
//! 1–300 steps with awkward ids and labels. Graphviz `dot -Tsvg` must accept every
//! DOT text and draw one node per step and one edge per edge; Mermaid's own parser
//! (mermaid 12.3.0 under jsdom, tests/js/parse-mermaid.mjs, all charts in one Node
//! run) must accept every Mermaid text and show every label as written; a 600-edge
//! DAG must carry the `fmt="dot"` warning, and Mermaid must indeed refuse it by
//! default. The tools come from scripts/install-diagram-tools.sh; without them the
//! test fails, it does not skip.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use mcpplus_workflow::graph::{
    Basis, Edge, Format, GraphInput, MERMAID_MAX_EDGES, MERMAID_MAX_TEXT, NodeView, Rendered,
    levels, node_label, render,
};
use mcpplus_workflow::spec::{MAX_STEP_ID, StepState, is_valid_step_id};
use serde_json::{Value, json};

const INSTALL: &str =
    "run scripts/install-diagram-tools.sh (installs Graphviz and tests/js/node_modules)";
const DAGS: usize = 25;
const BIG_EDGES: usize = 600;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the repository root")
}

/// `command -v tool`, or a failure naming the install script.
fn require_tool(tool: &str) -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .expect("run sh");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && !path.is_empty(),
        "`{tool}` is not on PATH: {INSTALL}"
    );
    PathBuf::from(path)
}

/// Step ids Mermaid or DOT might read as syntax, plus a 64-character one.
const SPECIAL_IDS: &[&str] = &[
    "end",
    "graph",
    "subgraph",
    "click",
    "style",
    "class",
    "classDef",
    "linkStyle",
    "default",
    "flowchart",
    "direction",
    "call",
    "href",
    "node",
    "edge",
    "digraph",
    "strict",
    "END",
    "_",
    "-",
    "--",
    "---",
    "0",
    "1e5",
    "o",
    "x",
    "-end-",
    "end_",
];
const ID_CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-";

/// Pieces of labels: quotes, backslashes, Mermaid and DOT syntax, HTML, entities,
/// Unicode, line breaks.
const LABEL_PIECES: &[&str] = &[
    "\"",
    "\\",
    "/",
    "end",
    "graph",
    "subgraph",
    "click",
    "style",
    " ",
    "é",
    "日本語",
    "🚀",
    "👩‍💻",
    "עברית",
    "\n",
    "\r\n",
    "\t",
    "<br>",
    "<br/>",
    "<b>bold</b>",
    "<script>alert(1)</script>",
    "%%",
    "%%{init: {\"theme\": \"dark\"}}%%",
    "#quot;",
    "#35;",
    "&amp;",
    "&lt;",
    "`",
    "```md```",
    "#",
    ";",
    ":::",
    "-->",
    "---",
    "-.->",
    "[",
    "]",
    "(",
    ")",
    "((",
    "{",
    "}",
    "|",
    "'",
    "\\n",
    "\\N",
    "\\l",
    "\\\"",
    "ﬂ°°60¶ß",
    "\u{a0}",
    "\u{2028}",
    "\u{7}",
    "A",
    "step",
    "42",
];

const STATES: [StepState; 7] = [
    StepState::Pending,
    StepState::Ready,
    StepState::Running,
    StepState::Completed,
    StepState::Failed,
    StepState::Skipped,
    StepState::Cancelled,
];

fn step_id(rng: &mut fastrand::Rng, taken: &mut HashSet<String>, i: usize) -> String {
    let roll = rng.u32(0..100);
    let id = if roll < 25 {
        SPECIAL_IDS[rng.usize(0..SPECIAL_IDS.len())].to_string()
    } else if roll < 35 {
        (0..MAX_STEP_ID)
            .map(|_| ID_CHARS[rng.usize(0..ID_CHARS.len())] as char)
            .collect()
    } else {
        let len = rng.usize(1..=20);
        (0..len)
            .map(|_| ID_CHARS[rng.usize(0..ID_CHARS.len())] as char)
            .collect()
    };
    let id = if taken.contains(&id) {
        let suffix = format!("-{i}");
        let keep = id.len().min(MAX_STEP_ID - suffix.len());
        format!("{}{suffix}", &id[..keep])
    } else {
        id
    };
    assert!(is_valid_step_id(&id), "{id}");
    assert!(taken.insert(id.clone()), "duplicate {id}");
    id
}

fn label(rng: &mut fastrand::Rng, id: &str) -> String {
    let roll = rng.u32(0..100);
    let pieces = if roll < 15 {
        return id.to_string();
    } else if roll < 20 {
        rng.usize(100..300)
    } else {
        rng.usize(1..=8)
    };
    (0..pieces)
        .map(|_| LABEL_PIECES[rng.usize(0..LABEL_PIECES.len())])
        .collect()
}

#[derive(Clone, Copy, PartialEq)]
enum Run {
    /// Nothing ran: every step pending.
    NotStarted,
    /// Finished: completed, failed and skipped steps with consistent times.
    Finished,
    /// Under way: some steps running at `now`, later ones pending.
    Running,
}

/// A DAG of `n` steps in a random listing order; with `edges`, exactly that many edges.
fn generate(rng: &mut fastrand::Rng, n: usize, edges: Option<usize>, run: Run) -> GraphInput {
    let mut taken = HashSet::new();
    // Generated in topological order `0..n`, listed shuffled.
    let ids: Vec<String> = (0..n).map(|i| step_id(rng, &mut taken, i)).collect();
    let mut pairs: Vec<(usize, usize)> = Vec::new();
    let mut seen = HashSet::new();
    match edges {
        None => {
            for to in 1..n {
                for _ in 0..rng.usize(0..=3).min(to) {
                    let from = rng.usize(0..to);
                    if seen.insert((from, to)) {
                        pairs.push((from, to));
                    }
                }
            }
        }
        Some(count) => {
            assert!(count <= n * (n - 1) / 2);
            while pairs.len() < count {
                let to = rng.usize(1..n);
                let from = rng.usize(0..to);
                if seen.insert((from, to)) {
                    pairs.push((from, to));
                }
            }
        }
    }
    let mut deps: Vec<Vec<usize>> = vec![Vec::new(); n];
    for &(from, to) in &pairs {
        deps[to].push(from);
    }

    let t0 = 1_700_000_000_000i64 + rng.i64(0..1_000_000);
    let mut now = t0;
    let mut nodes: Vec<NodeView> = Vec::with_capacity(n);
    let mut finish: Vec<Option<i64>> = vec![None; n];
    let mut skipped = vec![false; n];
    let cutoff = t0 + rng.i64(500..3_000);
    for i in 0..n {
        let mut node = NodeView::new(
            ids[i].clone(),
            ["echo", "word_count", "fetch", "sleep"][rng.usize(0..4)],
            StepState::Pending,
        );
        node.label = label(rng, &ids[i]);
        if rng.u32(0..10) == 0 {
            node.items = Some(rng.u32(0..=10_000));
        }
        match run {
            Run::NotStarted => {
                if rng.u32(0..4) == 0 {
                    node.status = STATES[rng.usize(0..2)];
                }
            }
            Run::Finished | Run::Running => {
                let dep_skipped = deps[i].iter().any(|&d| skipped[d]);
                let dep_pending = deps[i].iter().any(|&d| finish[d].is_none() && !skipped[d]);
                let ready = deps[i]
                    .iter()
                    .filter_map(|&d| finish[d])
                    .max()
                    .unwrap_or(t0);
                if (dep_skipped && rng.u32(0..5) != 0) || rng.u32(0..20) == 0 {
                    node.status = StepState::Skipped;
                    skipped[i] = true;
                } else if dep_pending || (run == Run::Running && ready > cutoff) {
                    node.status = if dep_pending {
                        StepState::Pending
                    } else {
                        node.ready_at_ms = Some(ready);
                        StepState::Ready
                    };
                } else {
                    let started = ready + rng.i64(0..5);
                    let finished = started + rng.i64(0..500);
                    node.ready_at_ms = Some(ready);
                    node.started_at_ms = Some(started);
                    node.attempts = rng.u32(1..=3);
                    if run == Run::Running && finished > cutoff {
                        node.status = StepState::Running;
                        now = now.max(started);
                    } else {
                        node.status = if rng.u32(0..10) == 0 {
                            StepState::Failed
                        } else {
                            StepState::Completed
                        };
                        node.finished_at_ms = Some(finished);
                        finish[i] = Some(finished);
                        now = now.max(finished);
                    }
                }
            }
        }
        nodes.push(node);
    }

    // List the steps shuffled, so node order is not a topological order.
    let mut order: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut order);
    let edges = pairs
        .iter()
        .map(|&(from, to)| {
            let edge = Edge::new(ids[from].clone(), ids[to].clone());
            if rng.u32(0..5) == 0 {
                Edge::implicit(edge.from, edge.to)
            } else {
                edge
            }
        })
        .collect();
    let last_finish = finish.iter().flatten().max().copied();
    GraphInput {
        workflow_id: format!("wf-{n}"),
        workflow_name: label(rng, "workflow"),
        started_at_ms: (run != Run::NotStarted).then_some(t0),
        finished_at_ms: if run == Run::Finished {
            last_finish
        } else {
            None
        },
        now_ms: now + 7,
        nodes: order.iter().map(|&i| nodes[i].clone()).collect(),
        edges,
    }
}

/// The start of a long text, for a failure message.
fn head(text: &str) -> &str {
    text.char_indices()
        .nth(4_000)
        .map_or(text, |(i, _)| &text[..i])
}

fn text(rendered: &Rendered) -> &str {
    rendered.dag.as_str().expect("a text format")
}

/// The label as a viewer should read it: line breaks and tabs as DOT and Mermaid
/// write them, runs of spaces as one (HTML collapses them).
fn normalized(label: &str) -> String {
    let label = label.replace("\r\n", "\n").replace('\r', "\n");
    label
        .split('\n')
        .map(|line| {
            line.chars()
                .map(|c| match c {
                    '\t' => ' ',
                    c if c.is_control() => '\u{FFFD}',
                    c => c,
                })
                .collect::<String>()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// XML character and entity references decoded, in one pass.
fn xml_unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let reference = rest.find(';').and_then(|semi| {
            let c = match &rest[1..semi] {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                name => match name.strip_prefix("#x") {
                    Some(hex) => u32::from_str_radix(hex, 16).ok(),
                    None => name.strip_prefix('#').and_then(|d| d.parse().ok()),
                }
                .and_then(char::from_u32),
            };
            c.map(|c| (c, semi + 1))
        });
        match reference {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Each SVG node's title (the step id) and text lines, as Graphviz drew them.
fn svg_nodes(svg: &str) -> Vec<(String, Vec<String>)> {
    svg.split(" class=\"node\">")
        .skip(1)
        .map(|block| {
            let block = block.split("</g>").next().unwrap_or_default();
            let title = block
                .split_once("<title>")
                .and_then(|(_, t)| t.split_once("</title>"))
                .map(|(t, _)| xml_unescape(t))
                .unwrap_or_default();
            let lines = block
                .split("<text ")
                .skip(1)
                .filter_map(|t| t.split_once('>'))
                .filter_map(|(_, t)| t.split_once("</text>"))
                .map(|(t, _)| xml_unescape(t))
                .collect();
            (title, lines)
        })
        .collect()
}

/// The non-blank lines of a label, normalized (Graphviz draws no blank lines).
fn drawn_lines(label: &str) -> Vec<String> {
    normalized(label)
        .split('\n')
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn expected_label(rendered: &Rendered, input: &GraphInput, i: usize) -> String {
    let node = &rendered.nodes[i];
    node_label(
        &input.nodes[i],
        node["run_ms"].as_i64(),
        node["duration_ms"].as_i64(),
    )
}

/// The critical path is a chain of edges; with a run its length is the last finish
/// (or now) minus the start, and before a run it has one step per level.
fn check_critical_path(input: &GraphInput, rendered: &Rendered) {
    let path = &rendered.critical_path;
    let edges: HashSet<(&str, &str)> = input
        .edges
        .iter()
        .map(|e| (e.from.as_str(), e.to.as_str()))
        .collect();
    for pair in path.steps.windows(2) {
        assert!(
            edges.contains(&(pair[0].as_str(), pair[1].as_str())),
            "{pair:?} is not an edge"
        );
    }
    let level = levels(input);
    match path.basis {
        Basis::Run => {
            let end = input
                .nodes
                .iter()
                .filter_map(|n| match n.status {
                    StepState::Running => Some(input.now_ms),
                    StepState::Completed | StepState::Failed => n.finished_at_ms,
                    _ => None,
                })
                .max()
                .expect("something ran");
            assert_eq!(path.length_ms, Some(end - input.started_at_ms.unwrap()));
            if let Some(finished) = input.finished_at_ms {
                assert_eq!(
                    path.length_ms,
                    Some(finished - input.started_at_ms.unwrap()),
                    "wall time"
                );
            }
            for id in &path.steps {
                let node = input.nodes.iter().find(|n| &n.id == id).unwrap();
                assert_ne!(node.status, StepState::Skipped, "{id}");
            }
        }
        Basis::Structure => {
            assert_eq!(path.length_ms, None);
            let depth = level.iter().max().map_or(0, |&l| l as usize + 1);
            assert_eq!(path.steps.len(), depth);
        }
    }
}

struct Case {
    input: GraphInput,
    mermaid: Rendered,
}

#[test]
fn generated_dags_render_in_graphviz_and_mermaid() {
    let root = repo_root();
    let dot = require_tool("dot");
    let node = require_tool("node");
    let js = root.join("tests/js");
    let script = js.join("parse-mermaid.mjs");
    assert!(script.is_file(), "{} is missing", script.display());
    for package in ["mermaid", "jsdom"] {
        assert!(
            js.join("node_modules")
                .join(package)
                .join("package.json")
                .is_file(),
            "tests/js/node_modules/{package} is missing: {INSTALL}"
        );
    }
    let mermaid_package: Value = serde_json::from_slice(
        &std::fs::read(js.join("node_modules/mermaid/package.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        mermaid_package["version"], "12.3.0",
        "tests/js/node_modules is stale: {INSTALL}"
    );

    let mut rng = fastrand::Rng::with_seed(0x5eed_d1a6);
    let mut cases = Vec::new();
    for k in 0..DAGS {
        let (n, edges) = match k {
            0 => (1, None),
            1 => (300, None),
            2 => (2, None),
            _ if k == DAGS - 1 => (300, Some(BIG_EDGES)),
            _ => (rng.usize(1..=300), None),
        };
        let run = [Run::NotStarted, Run::Finished, Run::Running][k % 3];
        let input = generate(&mut rng, n, edges, run);

        // DOT: Graphviz accepts it and draws every step and edge once.
        let rendered = render(&input, Format::Dot);
        assert!(rendered.warnings.is_empty(), "{:?}", rendered.warnings);
        check_critical_path(&input, &rendered);
        let dot_text = text(&rendered);
        assert_eq!(
            dot_text,
            text(&render(&input, Format::Dot)),
            "deterministic"
        );
        let mut child = Command::new(&dot)
            .arg("-Tsvg")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run dot");
        let mut stdin = child.stdin.take().unwrap();
        let input_text = dot_text.to_string();
        let writer = std::thread::spawn(move || stdin.write_all(input_text.as_bytes()));
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        let svg = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "dag {k}: dot -Tsvg failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            head(dot_text)
        );
        assert_eq!(
            svg.matches(" class=\"node\">").count(),
            n,
            "dag {k}: SVG nodes"
        );
        assert_eq!(
            svg.matches(" class=\"edge\">").count(),
            input.edges.len(),
            "dag {k}: SVG edges"
        );
        // Every step drawn once, under its id, with its label as written.
        let drawn = svg_nodes(&svg);
        assert_eq!(drawn.len(), n, "dag {k}: SVG nodes");
        for (title, lines) in &drawn {
            let i = input
                .nodes
                .iter()
                .position(|s| &s.id == title)
                .unwrap_or_else(|| panic!("dag {k}: SVG node {title:?} is no step"));
            let expected = drawn_lines(&expected_label(&rendered, &input, i));
            let shown = drawn_lines(&lines.join("\n"));
            assert_eq!(shown, expected, "dag {k}: DOT label of {title:?}");
        }
        let titles: HashSet<&str> = drawn.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(titles.len(), n, "dag {k}: SVG node titles");

        let mermaid = render(&input, Format::Mermaid);
        assert_eq!(text(&mermaid), text(&render(&input, Format::Mermaid)));
        let too_many = input.edges.len() > MERMAID_MAX_EDGES;
        assert_eq!(
            !mermaid.warnings.is_empty(),
            too_many || text(&mermaid).encode_utf16().count() > MERMAID_MAX_TEXT,
            "dag {k}: {:?}",
            mermaid.warnings
        );
        for warning in &mermaid.warnings {
            assert!(warning.contains("fmt=\"dot\""), "{warning}");
        }
        let json = render(&input, Format::Json);
        assert_eq!(json.dag["nodes"].as_array().unwrap().len(), n);
        assert_eq!(json.critical_path, mermaid.critical_path);
        cases.push(Case { input, mermaid });
    }
    let big = cases.last().unwrap();
    assert_eq!(big.input.edges.len(), BIG_EDGES);
    assert!(
        big.mermaid
            .warnings
            .iter()
            .any(|w| w.contains("600 edges") && w.contains("fmt=\"dot\"")),
        "{:?}",
        big.mermaid.warnings
    );

    // Mermaid: one Node run for every chart. A chart carrying the warning goes in
    // twice: as is (Mermaid must refuse it, so the warning is true) and with the edge
    // limit raised (its syntax must still be right).
    let mut charts = Vec::new();
    let mut expect = Vec::new();
    for (k, case) in cases.iter().enumerate() {
        let warned = !case.mermaid.warnings.is_empty();
        charts.push(json!({"text": text(&case.mermaid), "maxEdges": null}));
        expect.push((k, !warned));
        if warned {
            charts.push(json!({"text": text(&case.mermaid), "maxEdges": 100_000}));
            expect.push((k, true));
        }
    }
    let mut child = Command::new(&node)
        .arg(&script)
        .current_dir(&js)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node");
    let mut stdin = child.stdin.take().unwrap();
    let request = serde_json::to_vec(&json!({ "charts": charts })).unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&request));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "node parse-mermaid.mjs failed ({INSTALL} if a module is missing): {stderr}"
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("MERMAID-RESULTS "))
        .unwrap_or_else(|| panic!("no results from parse-mermaid.mjs: {stdout}\n{stderr}"));
    let results: Vec<Value> = serde_json::from_str(line).unwrap();
    assert_eq!(results.len(), charts.len());

    for (result, &(k, should_parse)) in results.iter().zip(&expect) {
        let case = &cases[k];
        let chart = text(&case.mermaid);
        if !should_parse {
            assert_eq!(result["ok"], false, "dag {k}: Mermaid took a warned chart");
            let error = result["error"].as_str().unwrap_or_default();
            assert!(error.contains("Edge limit exceeded"), "dag {k}: {error}");
            continue;
        }
        assert_eq!(
            result["ok"],
            true,
            "dag {k}: mermaid.parse failed: {}\n{}",
            result["error"],
            head(chart)
        );
        assert_eq!(result["diagramType"], "flowchart-v2");
        assert_eq!(
            result["edges"].as_u64(),
            Some(case.input.edges.len() as u64),
            "dag {k}: edges"
        );
        let labels = result["labels"].as_object().unwrap();
        assert_eq!(labels.len(), case.input.nodes.len(), "dag {k}: nodes");
        for i in 0..case.input.nodes.len() {
            let shown = labels
                .get(&format!("s{i}"))
                .and_then(Value::as_str)
                .unwrap_or_else(|| panic!("dag {k}: no node s{i}"));
            let expected = expected_label(&case.mermaid, &case.input, i);
            assert_eq!(
                normalized(shown),
                normalized(&expected),
                "dag {k}: label of s{i} ({:?})",
                case.input.nodes[i].id
            );
        }
    }
}
