//! Checking a spec before anything is stored: every problem a client can fix
//! is refused with what to fix (a cycle is named step by step), and the
//! result is the plan the controller runs: each step's dependencies,
//! explicit (`depends_on`) and implicit (a `${steps.x…}` reference).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::graph::Edge;
use crate::reference::{self, Placeholder};
use crate::spec::{
    MAX_ITEMS, MAX_STEPS, MAX_WORKFLOW_ID, StepSpec, WorkflowSpec, is_valid_step_id,
};
use crate::{condition, spec};

/// The most tags on one workflow, and the longest tag.
const MAX_TAGS: usize = 64;
const MAX_TAG_CHARS: usize = 128;
/// The most attempts one step may ask for.
const MAX_ATTEMPTS: u32 = 100;
/// The most other workflows one may wait for.
const MAX_WORKFLOW_DEPENDENCIES: usize = 100;

/// A spec that passed: the dependencies of each step, by index in `spec.steps`.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `deps[i]`: the steps step `i` waits for (sorted, no duplicates).
    pub deps: Vec<Vec<usize>>,
    /// Every edge, for graphs (`implicit`: only a reference makes it).
    pub edges: Vec<Edge>,
    /// Each step's level: its longest distance from a root.
    pub levels: Vec<u32>,
}

/// Check `spec`; `tool_exists` says whether a tool of that name is served
/// (here or by a peer).
pub fn validate(spec: &WorkflowSpec, tool_exists: &dyn Fn(&str) -> bool) -> Result<Plan, String> {
    check_workflow_fields(spec)?;
    let index: BTreeMap<&str, usize> = spec
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.step_id.as_str(), i))
        .collect();
    let mut deps = Vec::with_capacity(spec.steps.len());
    let mut edges = Vec::new();
    for step in &spec.steps {
        check_step_fields(step, tool_exists)?;
        let explicit: BTreeSet<&str> = step.depends_on.iter().map(String::as_str).collect();
        for dep in &explicit {
            if *dep == step.step_id {
                return Err(format!(
                    "step `{}` depends on itself; remove it from its depends_on",
                    step.step_id
                ));
            }
            if !index.contains_key(dep) {
                return Err(unknown_step(&step.step_id, "depends_on names", dep, &index));
            }
        }
        let referenced = step_references(step)?;
        for dep in &referenced {
            if dep == &step.step_id {
                return Err(format!(
                    "step `{}` refers to its own result (${{steps.{dep}…}}); a step can only use the results of steps before it",
                    step.step_id
                ));
            }
            if !index.contains_key(dep.as_str()) {
                return Err(unknown_step(&step.step_id, "refers to", dep, &index));
            }
        }
        let mut mine: BTreeSet<usize> = explicit.iter().map(|d| index[d]).collect();
        for dep in &referenced {
            mine.insert(index[dep.as_str()]);
        }
        for dep in &explicit {
            edges.push(Edge {
                from: (*dep).to_string(),
                to: step.step_id.clone(),
                implicit: false,
            });
        }
        for dep in referenced.iter().filter(|d| !explicit.contains(d.as_str())) {
            edges.push(Edge {
                from: dep.clone(),
                to: step.step_id.clone(),
                implicit: true,
            });
        }
        deps.push(mine.into_iter().collect::<Vec<_>>());
    }
    if let Some(output) = &spec.output {
        for dep in reference::referenced_steps(output).map_err(|e| format!("output: {e}"))? {
            if !index.contains_key(dep.as_str()) {
                return Err(
                    unknown_step("(the workflow output)", "refers to", &dep, &index).replacen(
                        "step `(the workflow output)`",
                        "the workflow's output",
                        1,
                    ),
                );
            }
        }
        check_run_time_placeholders(output, "output", false)?;
    }
    let levels = levels_or_cycle(spec, &deps)?;
    Ok(Plan {
        deps,
        edges,
        levels,
    })
}

fn check_workflow_fields(spec: &WorkflowSpec) -> Result<(), String> {
    let id = &spec.workflow_id;
    if id.trim().is_empty() {
        return Err("workflow_id must not be empty".into());
    }
    if id.chars().count() > MAX_WORKFLOW_ID {
        return Err(format!(
            "workflow_id is {} characters; the limit is {MAX_WORKFLOW_ID}",
            id.chars().count()
        ));
    }
    if id.chars().any(char::is_control) {
        return Err("workflow_id must not contain control characters".into());
    }
    if spec.steps.is_empty() {
        return Err("a workflow needs at least one step in `steps`".into());
    }
    if spec.steps.len() > MAX_STEPS {
        return Err(format!(
            "the workflow has {} steps; the limit is {MAX_STEPS}: split it into workflows that depend on each other (`dependencies`)",
            spec.steps.len()
        ));
    }
    if !(spec.priority.is_finite() && spec.priority > 0.0) {
        return Err(format!(
            "priority must be a positive number (higher runs first), got {}",
            spec.priority
        ));
    }
    if spec.max_parallel == 0 || spec.max_parallel > 10_000 {
        return Err(format!(
            "max_parallel must be between 1 and 10000, got {}",
            spec.max_parallel
        ));
    }
    if spec.timeout_ms == Some(0) {
        return Err("timeout_ms must be more than 0 (leave it out for no deadline)".into());
    }
    if spec.tags.len() > MAX_TAGS {
        return Err(format!("{} tags; the limit is {MAX_TAGS}", spec.tags.len()));
    }
    if let Some(tag) = spec
        .tags
        .iter()
        .find(|t| t.is_empty() || t.chars().count() > MAX_TAG_CHARS)
    {
        return Err(format!(
            "tag `{tag}` must be 1 to {MAX_TAG_CHARS} characters"
        ));
    }
    if spec.dependencies.len() > MAX_WORKFLOW_DEPENDENCIES {
        return Err(format!(
            "the workflow depends on {} other workflows; the limit is {MAX_WORKFLOW_DEPENDENCIES}",
            spec.dependencies.len()
        ));
    }
    if spec.dependencies.iter().any(|d| d == id) {
        return Err(format!("workflow `{id}` lists itself in `dependencies`"));
    }
    let mut seen = BTreeSet::new();
    for step in &spec.steps {
        if !is_valid_step_id(&step.step_id) {
            return Err(format!(
                "step_id `{}` is not allowed: use 1 to {} letters, digits, `_` or `-`",
                step.step_id.escape_debug(),
                spec::MAX_STEP_ID
            ));
        }
        if !seen.insert(step.step_id.as_str()) {
            return Err(format!(
                "step_id `{}` is used by two steps; step ids must be unique",
                step.step_id
            ));
        }
    }
    Ok(())
}

fn check_step_fields(step: &StepSpec, tool_exists: &dyn Fn(&str) -> bool) -> Result<(), String> {
    let id = &step.step_id;
    if step.action.trim().is_empty() {
        return Err(format!(
            "step `{id}` has an empty action; name the tool it calls"
        ));
    }
    if !tool_exists(&step.action) {
        return Err(format!(
            "step `{id}` calls `{}`, which no tool of this server (or of its peers) is called; check the name with tools/list",
            step.action
        ));
    }
    if let Some(retry) = &step.retry
        && !(1..=MAX_ATTEMPTS).contains(&retry.max_attempts)
    {
        return Err(format!(
            "step `{id}`: retry.max_attempts must be between 1 and {MAX_ATTEMPTS}, got {}",
            retry.max_attempts
        ));
    }
    if step.timeout_ms == Some(0) {
        return Err(format!(
            "step `{id}`: timeout_ms must be more than 0 (leave it out for the tool's own limit)"
        ));
    }
    if let Some(n) = step.max_parallel {
        if n == 0 {
            return Err(format!("step `{id}`: max_parallel must be at least 1"));
        }
        if step.for_each.is_none() {
            return Err(format!(
                "step `{id}`: max_parallel limits the items of a for_each, and this step has no for_each"
            ));
        }
    }
    if let Some(when) = &step.when {
        condition::check(when).map_err(|e| format!("step `{id}`: when: {e}"))?;
    }
    match &step.for_each {
        None => {}
        Some(Value::Array(items)) if items.len() > MAX_ITEMS => {
            return Err(format!(
                "step `{id}`: for_each has {} items; the limit is {MAX_ITEMS}",
                items.len()
            ));
        }
        Some(Value::Array(_)) => {}
        Some(Value::String(s)) if is_single_placeholder(s) => {}
        Some(other) => {
            return Err(format!(
                "step `{id}`: for_each must be an array or one reference to an array such as \"${{steps.list.result}}\", got {other}"
            ));
        }
    }
    let in_map = step.for_each.is_some();
    for (what, value) in step_values(step) {
        check_run_time_placeholders(value, &format!("step `{id}`: {what}"), in_map)?;
    }
    if let Some(for_each) = &step.for_each {
        // `${item}` in for_each itself would refer to the list being defined.
        check_run_time_placeholders(for_each, &format!("step `{id}`: for_each"), false)?;
    }
    Ok(())
}

/// The values of a step that may hold placeholders, with their names.
fn step_values(step: &StepSpec) -> Vec<(String, &Value)> {
    let mut values: Vec<(String, &Value)> = step
        .inputs
        .iter()
        .map(|(k, v)| (format!("inputs.{k}"), v))
        .collect();
    if let Some(when) = &step.when {
        values.push(("when".into(), when));
    }
    values
}

/// The steps a step refers to in its inputs, `when` and `for_each`.
fn step_references(step: &StepSpec) -> Result<BTreeSet<String>, String> {
    let mut all = BTreeSet::new();
    let mut values = step_values(step);
    if let Some(for_each) = &step.for_each {
        values.push(("for_each".into(), for_each));
    }
    for (what, value) in values {
        let found = reference::referenced_steps(value)
            .map_err(|e| format!("step `{}`: {what}: {e}", step.step_id))?;
        all.extend(found);
    }
    Ok(all)
}

/// `${item}`/`${index}` only inside a for_each step; `${params.…}` only in templates.
fn check_run_time_placeholders(value: &Value, what: &str, in_map: bool) -> Result<(), String> {
    for placeholder in reference::parse_placeholders(value).map_err(|e| format!("{what}: {e}"))? {
        match placeholder {
            Placeholder::Item { .. } | Placeholder::Index if !in_map => {
                return Err(format!(
                    "{what}: ${{item}} and ${{index}} exist only in a step with for_each"
                ));
            }
            Placeholder::Param { name } => {
                return Err(format!(
                    "{what}: ${{params.{name}}} is a template parameter; submit with template_id and parameters, or write the value itself"
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

fn is_single_placeholder(text: &str) -> bool {
    text.starts_with("${") && text.ends_with('}') && text.matches("${").count() == 1
}

fn unknown_step(step: &str, verb: &str, dep: &str, index: &BTreeMap<&str, usize>) -> String {
    let known: Vec<&str> = index.keys().copied().take(20).collect();
    format!(
        "step `{step}` {verb} step `{dep}`, which is not in this workflow (steps: {}{})",
        known.join(", "),
        if index.len() > known.len() {
            ", …"
        } else {
            ""
        }
    )
}

/// Levels by longest path from a root (Kahn's order), or the first cycle
/// found, named step by step: `cycle: a → b → c → a`.
fn levels_or_cycle(spec: &WorkflowSpec, deps: &[Vec<usize>]) -> Result<Vec<u32>, String> {
    let n = deps.len();
    let mut dependents = vec![Vec::new(); n];
    let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
    for (i, ds) in deps.iter().enumerate() {
        for &d in ds {
            dependents[d].push(i);
        }
    }
    let mut levels = vec![0u32; n];
    let mut ready: Vec<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    let mut done = 0;
    while let Some(i) = ready.pop() {
        done += 1;
        for &j in &dependents[i] {
            levels[j] = levels[j].max(levels[i] + 1);
            waiting[j] -= 1;
            if waiting[j] == 0 {
                ready.push(j);
            }
        }
    }
    if done == n {
        return Ok(levels);
    }
    // Every step left has a dependency left: walk dependencies until one repeats.
    let start = (0..n).find(|&i| waiting[i] > 0).expect("a step is left");
    let mut path = vec![start];
    let mut position = BTreeMap::from([(start, 0usize)]);
    let mut at = start;
    loop {
        let next = *deps[at]
            .iter()
            .find(|&&d| waiting[d] > 0)
            .expect("a step in a cycle waits for another step in it");
        if let Some(&first) = position.get(&next) {
            // `path` runs against the edges (step → its dependency); name it forwards.
            let mut cycle: Vec<&str> = path[first..]
                .iter()
                .rev()
                .map(|&i| spec.steps[i].step_id.as_str())
                .collect();
            cycle.push(cycle[0]);
            return Err(format!(
                "cycle: {}; a step cannot (even indirectly) depend on itself",
                cycle.join(" → ")
            ));
        }
        position.insert(next, path.len());
        path.push(next);
        at = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(steps: Value) -> WorkflowSpec {
        serde_json::from_value(json!({"workflow_id": "w", "name": "n", "steps": steps}))
            .expect("a well-formed spec")
    }

    fn check(steps: Value) -> Result<Plan, String> {
        validate(&spec(steps), &|tool| tool != "missing")
    }

    #[test]
    fn a_cycle_is_named_in_edge_order() {
        let err = check(json!([
            {"step_id": "a", "action": "t", "depends_on": ["c"]},
            {"step_id": "b", "action": "t", "depends_on": ["a"]},
            {"step_id": "c", "action": "t", "depends_on": ["b"]},
        ]))
        .unwrap_err();
        assert!(err.starts_with("cycle: "), "{err}");
        // Any rotation of a → b → c → a names the same cycle.
        let named = err.split(';').next().unwrap().trim_start_matches("cycle: ");
        let steps: Vec<&str> = named.split(" → ").collect();
        assert_eq!(steps.len(), 4, "{err}");
        assert_eq!(steps[0], steps[3]);
        let forwards = ["a", "b", "c", "a", "b", "c"];
        let at = forwards.iter().position(|s| *s == steps[0]).unwrap();
        assert_eq!(&steps[..3], &forwards[at..at + 3], "{err}");
    }

    #[test]
    fn a_cycle_through_a_reference_is_found() {
        let err = check(json!([
            {"step_id": "a", "action": "t", "inputs": {"x": "${steps.b.result}"}},
            {"step_id": "b", "action": "t", "depends_on": ["a"]},
        ]))
        .unwrap_err();
        assert!(err.starts_with("cycle: "), "{err}");
    }

    #[test]
    fn each_mistake_is_named() {
        let cases = [
            (
                json!([{"step_id": "a", "action": "t", "depends_on": ["a"]}]),
                "depends on itself",
            ),
            (
                json!([{"step_id": "a", "action": "t", "depends_on": ["z"]}]),
                "step `z`, which is not in this workflow",
            ),
            (
                json!([{"step_id": "a", "action": "t"}, {"step_id": "a", "action": "t"}]),
                "used by two steps",
            ),
            (
                json!([{"step_id": "a", "action": "t", "inputs": {"x": "${steps.nope.result}"}}]),
                "step `nope`",
            ),
            (json!([{"step_id": "a b", "action": "t"}]), "is not allowed"),
            (
                json!([{"step_id": "a", "action": "missing"}]),
                "calls `missing`",
            ),
            (
                json!([{"step_id": "a", "action": "t", "inputs": {"x": "${item}"}}]),
                "only in a step with for_each",
            ),
            (
                json!([{"step_id": "a", "action": "t", "for_each": 3}]),
                "for_each must be an array",
            ),
            (
                json!([{"step_id": "a", "action": "t", "max_parallel": 2}]),
                "has no for_each",
            ),
            (
                json!([{"step_id": "a", "action": "t", "retry": {"max_attempts": 0}}]),
                "retry.max_attempts",
            ),
            (json!([]), "at least one step"),
        ];
        for (steps, expected) in cases {
            let err = check(steps.clone()).unwrap_err();
            assert!(err.contains(expected), "{steps}: {err}");
        }
    }

    #[test]
    fn too_many_steps_quotes_the_limit() {
        let steps: Vec<Value> = (0..=MAX_STEPS)
            .map(|i| json!({"step_id": format!("s{i}"), "action": "t"}))
            .collect();
        let err = check(Value::Array(steps)).unwrap_err();
        assert!(err.contains("1001 steps; the limit is 1000"), "{err}");
    }

    #[test]
    fn implicit_edges_and_levels() {
        let plan = check(json!([
            {"step_id": "a", "action": "t"},
            {"step_id": "b", "action": "t", "depends_on": ["a"]},
            {"step_id": "c", "action": "t", "inputs": {"x": "${steps.b.result}", "y": "${steps.a.result}"}},
        ]))
        .unwrap();
        assert_eq!(plan.deps, vec![vec![], vec![0], vec![0, 1]]);
        assert_eq!(plan.levels, vec![0, 1, 2]);
        assert!(
            plan.edges
                .iter()
                .any(|e| e.from == "b" && e.to == "c" && e.implicit)
        );
        assert!(
            plan.edges
                .iter()
                .any(|e| e.from == "a" && e.to == "b" && !e.implicit)
        );
    }

    #[test]
    fn unknown_fields_are_refused_naming_them() {
        let err = serde_json::from_value::<WorkflowSpec>(json!({
            "workflow_id": "w", "name": "n",
            "steps": [{"step_id": "a", "action": "t", "depend_on": ["b"]}],
        }))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("depend_on") && err.contains("depends_on"),
            "{err}"
        );
    }
}
