//! `mcpplus:host/workflow` as the bundled `workflow_tools` component sees it:
//! deny by default (a refused call is a `capability.denied` event and a tool
//! error naming the grant), `submit` versus `admin`, the answer when no
//! engine is attached, and the answers of a real engine passed through in
//! the original's shapes (including `workflow_list`'s `peer_filter`).
//!
//! Calls run in-process through the real runtime (the same code `serve`
//! uses), on a current-thread runtime so the test can capture the host's log
//! events.

use std::sync::Arc;

use mcpplus_queue::QueueStore;
use mcpplus_runtime::engine::RuntimeOptions;
use mcpplus_runtime::invoke::{ToolOutcome, invoke};
use mcpplus_runtime::{LoadedComponent, Runtime};
use mcpplus_tests::{CapturedLogs, Scratch, artifacts};
use mcpplus_workflow::{WorkflowOptions, Workflows};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

struct Tools {
    _scratch: Scratch,
    runtime: Runtime,
    component: LoadedComponent,
    logs: CapturedLogs,
}

impl Tools {
    /// The bundled component with `policy` beside it (none: no policy file).
    fn new(name: &str, policy: Option<&str>) -> Self {
        let scratch = Scratch::new(name);
        let tools = scratch.join("tools");
        std::fs::create_dir_all(&tools).unwrap();
        let wasm = tools.join("workflow_tools.wasm");
        std::fs::copy(artifacts::workflow_tools(), &wasm).unwrap();
        if let Some(policy) = policy {
            std::fs::write(tools.join("workflow_tools.policy.toml"), policy).unwrap();
        }
        let runtime = Runtime::new(RuntimeOptions {
            cache: Some(scratch.compile_cache()),
            ..RuntimeOptions::default()
        })
        .unwrap();
        let component = runtime.load_file(&wasm).unwrap();
        Tools {
            _scratch: scratch,
            runtime,
            component,
            logs: CapturedLogs::default(),
        }
    }

    /// Attach a workflow engine over a queue in memory; `echo` is the one tool
    /// a step may call.
    fn with_engine(self) -> Self {
        let store = Arc::new(QueueStore::in_memory().unwrap());
        let engine = Workflows::open(
            store,
            WorkflowOptions {
                tool_exists: Box::new(|tool| tool == "echo"),
                template_dir: None,
                node: "local".into(),
                retention_ms: 0,
            },
        )
        .unwrap();
        assert!(self.runtime.attach_workflows(Arc::new(engine)));
        self
    }

    fn call(&self, tool: &str, args: Value) -> ToolOutcome {
        let signature = self
            .component
            .tool(tool)
            .unwrap_or_else(|| panic!("workflow_tools has no tool {tool}"));
        let args = args.as_object().cloned().unwrap_or_default();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_target(false)
            .with_writer(self.logs.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(invoke(
            &self.runtime,
            &self.component,
            signature,
            Some(&args),
            &CancellationToken::new(),
            None,
        ))
    }

    /// A call that must fail: its error object (the tool error's text).
    fn refused(&self, tool: &str, args: Value) -> Value {
        let outcome = self.call(tool, args.clone());
        assert!(
            outcome.is_error,
            "{tool}({args}) should have failed, got {:?}",
            outcome.structured
        );
        let text = text_of(&outcome);
        let error: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{tool}: the error is not JSON ({e}): {text}"));
        assert_eq!(error["success"], json!(false), "{error}");
        assert!(error["error"].is_string(), "{error}");
        error
    }

    /// A call that must succeed: the host's answer.
    fn ok(&self, tool: &str, args: Value) -> Value {
        let outcome = self.call(tool, args.clone());
        assert!(
            !outcome.is_error,
            "{tool}({args}) failed: {}",
            text_of(&outcome)
        );
        let answer = outcome.structured.expect("a structured result")["result"].clone();
        assert_eq!(answer["success"], json!(true), "{answer}");
        answer
    }

    fn denials(&self) -> Vec<Value> {
        self.logs
            .take_events()
            .into_iter()
            .filter(|e| e["event"] == "capability.denied")
            .collect()
    }
}

fn text_of(outcome: &ToolOutcome) -> String {
    outcome
        .content
        .iter()
        .filter_map(|c| c["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn error_text(error: &Value) -> &str {
    error["error"].as_str().unwrap()
}

#[test]
fn without_a_grant_every_tool_is_refused_naming_the_grant() {
    let tools = Tools::new("workflow-no-grant", None).with_engine();
    let calls = [
        ("workflow_templates", json!({}), "templates"),
        ("workflow_status", json!({"workflow_id": "w"}), "status"),
        ("workflow_list", json!({}), "list"),
        ("workflow_result", json!({"workflow_id": "w"}), "result"),
        (
            "workflow_dependencies",
            json!({"workflow_id": "w"}),
            "dependencies",
        ),
        (
            "workflow_submit",
            json!({"workflow_id": "w", "name": "n", "steps": [{"step_id": "a", "action": "echo"}]}),
            "submit",
        ),
        ("workflow_cancel", json!({"workflow_id": "w"}), "cancel"),
    ];
    for (tool, args, function) in calls {
        let error = tools.refused(tool, args.clone());
        let text = error_text(&error);
        let target = format!("mcpplus:host/workflow.{function}");
        assert!(
            text.contains(&format!("may not call {target}")),
            "{tool}: {text}"
        );
        let grant = if function == "cancel" {
            "add [workflow] admin = true to its policy"
        } else {
            "add [workflow] submit = true (or admin = true) to its policy"
        };
        assert!(text.contains(grant), "{tool}: {text}");
        if let Some(id) = args.get("workflow_id") {
            assert_eq!(&error["workflow_id"], id, "{tool}: {error}");
        } else {
            assert!(error.get("workflow_id").is_none(), "{tool}: {error}");
        }
        let denials = tools.denials();
        assert_eq!(denials.len(), 1, "{tool}: {denials:?}");
        assert_eq!(denials[0]["capability"], "workflow");
        assert_eq!(denials[0]["target"], target.as_str());
        assert_eq!(denials[0]["tool"], tool);
        assert_eq!(denials[0]["component"], "workflow_tools");
    }
}

#[test]
fn submit_may_not_cancel_and_admin_may() {
    let submit =
        Tools::new("workflow-submit-grant", Some("[workflow]\nsubmit = true\n")).with_engine();
    submit.ok(
        "workflow_submit",
        json!({"workflow_id": "w1", "name": "one", "steps": [{"step_id": "a", "action": "echo"}]}),
    );
    let error = submit.refused("workflow_cancel", json!({"workflow_id": "w1"}));
    assert!(
        error_text(&error).contains("add [workflow] admin = true"),
        "{error}"
    );
    assert_eq!(submit.denials().len(), 1);

    let admin =
        Tools::new("workflow-admin-grant", Some("[workflow]\nadmin = true\n")).with_engine();
    admin.ok(
        "workflow_submit",
        json!({"workflow_id": "w1", "name": "one", "steps": [{"step_id": "a", "action": "echo"}]}),
    );
    let cancelled = admin.ok(
        "workflow_cancel",
        json!({"workflow_id": "w1", "reason": "test", "force": true}),
    );
    assert_eq!(cancelled["workflow_id"], "w1");
    assert_eq!(cancelled["force"], json!(true));
    assert!(admin.denials().is_empty());
}

#[test]
fn with_no_engine_attached_the_tools_say_why() {
    let tools = Tools::new("workflow-no-engine", Some("[workflow]\nadmin = true\n"));
    for (tool, args) in [
        ("workflow_templates", json!({})),
        ("workflow_cancel", json!({"workflow_id": "w"})),
    ] {
        let error = tools.refused(tool, args);
        assert!(
            error_text(&error).contains("this server runs no workflow engine"),
            "{tool}: {error}"
        );
    }
    assert!(tools.denials().is_empty());
}

#[test]
fn answers_and_refusals_of_the_engine_pass_through() {
    let tools = Tools::new("workflow-engine", Some("[workflow]\nadmin = true\n")).with_engine();

    let templates = tools.ok("workflow_templates", json!({}));
    assert_eq!(templates["total_count"], json!(0), "{templates}");

    // Only the fields given are sent; steps (or a template) are required.
    let error = tools.refused("workflow_submit", json!({"workflow_id": "w", "name": "n"}));
    assert!(error_text(&error).contains("steps is required"), "{error}");
    assert_eq!(error["workflow_id"], "w");

    // The engine's own refusals: an unknown tool, an unknown workflow, a bad format.
    let error = tools.refused(
        "workflow_submit",
        json!({"workflow_id": "w", "name": "n", "steps": [{"step_id": "a", "action": "nope"}]}),
    );
    assert!(error_text(&error).contains("nope"), "{error}");
    let error = tools.refused("workflow_status", json!({"workflow_id": "missing"}));
    assert!(
        error_text(&error).contains("there is no workflow `missing`"),
        "{error}"
    );
    assert_eq!(error["workflow_id"], "missing");

    let submitted = tools.ok(
        "workflow_submit",
        json!({
            "workflow_id": "w2",
            "name": "two",
            "steps": [
                {"step_id": "a", "action": "echo", "inputs": {"text": "hi"}},
                {"step_id": "b", "action": "echo", "inputs": {"text": "${steps.a.result}"}}
            ],
            "priority": 2.5,
            "tags": ["t1"],
            "metadata": {"owner": "test"},
            "max_parallel": 4
        }),
    );
    assert_eq!(submitted["workflow_id"], "w2");
    assert_eq!(submitted["created"], json!(true));
    assert_eq!(submitted["steps"], json!(2));

    let status = tools.ok("workflow_status", json!({"workflow_id": "w2"}));
    assert_eq!(
        status["steps"].as_array().map(Vec::len),
        Some(2),
        "{status}"
    );
    assert!(status.get("metrics").is_none(), "{status}");
    let status = tools.ok(
        "workflow_status",
        json!({"workflow_id": "w2", "include_steps": false, "include_metrics": true}),
    );
    assert!(
        status.get("steps").is_none() && status["metrics"].is_object(),
        "{status}"
    );

    let graph = tools.ok(
        "workflow_dependencies",
        json!({"workflow_id": "w2", "fmt": "mermaid"}),
    );
    assert_eq!(graph["format"], "mermaid");
    let error = tools.refused(
        "workflow_dependencies",
        json!({"workflow_id": "w2", "fmt": "png"}),
    );
    assert_eq!(error["workflow_id"], "w2");

    let result = tools.ok("workflow_result", json!({"workflow_id": "w2"}));
    assert_eq!(
        result["outputs"].as_array().map(Vec::len),
        Some(2),
        "{result}"
    );
    assert!(result.get("logs").is_none(), "{result}");

    // workflow_list, and its peer_filter: this node (`local`) runs them all.
    let all = tools.ok("workflow_list", json!({"tag_filter": ["t1"]}));
    assert_eq!(all["total_count"], json!(1), "{all}");
    assert_eq!(all["workflows"][0]["peer_id"], "local");
    let mine = tools.ok("workflow_list", json!({"peer_filter": "local"}));
    assert_eq!(mine["total_count"], json!(1), "{mine}");
    for args in [
        json!({"peer_filter": "12D3KooWother"}),
        // Past the end of the listing: the page is empty either way.
        json!({"peer_filter": "12D3KooWother", "offset": 5}),
    ] {
        let other = tools.ok("workflow_list", args.clone());
        assert_eq!(other["total_count"], json!(0), "{args}: {other}");
        assert_eq!(other["returned_count"], json!(0), "{args}: {other}");
        assert_eq!(other["workflows"], json!([]), "{args}: {other}");
        assert_eq!(other["has_more"], json!(false), "{args}: {other}");
    }
    let past = tools.ok(
        "workflow_list",
        json!({"peer_filter": "local", "offset": 5}),
    );
    assert_eq!(past["total_count"], json!(1), "{past}");
    assert_eq!(past["returned_count"], json!(0), "{past}");
    let error = tools.refused("workflow_list", json!({"limit": 0}));
    assert!(error_text(&error).contains("limit"), "{error}");
    assert!(error.get("workflow_id").is_none(), "{error}");
}
