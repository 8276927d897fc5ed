//! `mcpplus audit`: the report a security review reads, for a folder with a
//! component holding mixed granted, denied and unused grants, one without a
//! policy, and one whose pinned digest does not match.

use std::process::Command;

use mcpplus_tests::{Scratch, artifacts, mcpplus_bin};
use serde_json::{Value, json};

struct Audit {
    code: i32,
    stdout: String,
    stderr: String,
}

fn audit(scratch: &Scratch, extra: &[&str]) -> Audit {
    let out = Command::new(mcpplus_bin())
        .args(["audit", "--tools"])
        .arg(scratch.join("tools"))
        .args(extra)
        .output()
        .expect("run mcpplus audit");
    Audit {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn folder(name: &str) -> Scratch {
    let scratch = Scratch::new(name);
    let tools = scratch.join("tools");
    std::fs::create_dir_all(&tools).unwrap();
    std::fs::create_dir_all(scratch.join("data")).unwrap();
    std::fs::copy(artifacts::hostile(), tools.join("hostile.wasm")).unwrap();
    std::fs::copy(artifacts::text_utils(), tools.join("text_utils.wasm")).unwrap();
    std::fs::copy(artifacts::showcase(), tools.join("showcase.wasm")).unwrap();
    std::fs::write(
        tools.join("hostile.policy.toml"),
        r#"env = ["HOME"]

[[files]]
host = "../data"
guest = "/data"

[network]
allow = ["https://*.example.com"]

[queue]
submit = true

[limits]
timeout_ms = 5000
"#,
    )
    .unwrap();
    std::fs::write(
        tools.join("showcase.policy.toml"),
        format!("sha256 = \"{}\"\n", "ab".repeat(32)),
    )
    .unwrap();
    scratch
}

fn component<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no component {name} in {report}"))
}

#[test]
fn audit_json_reports_requests_grants_denials_and_risks() {
    let scratch = folder("audit-json");
    let run = audit(&scratch, &["--json"]);
    // showcase is refused (pin mismatch), so the audit fails the review.
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["auditVersion"], 1);
    let names: Vec<_> = report["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hostile", "showcase", "text_utils"]);

    let hostile = component(&report, "hostile");
    assert_eq!(hostile["status"], "loaded");
    assert_eq!(hostile["pinned"], false);
    assert!(
        hostile["policy"]
            .as_str()
            .unwrap()
            .ends_with("hostile.policy.toml")
    );
    assert_eq!(hostile["sha256"].as_str().unwrap().len(), 64);
    assert!(
        hostile["tools"]
            .as_array()
            .unwrap()
            .contains(&json!("read_at"))
    );
    let data = std::fs::canonicalize(scratch.join("data")).unwrap();
    assert_eq!(
        hostile["grants"]["files"],
        json!([{"host": data.display().to_string(), "guest": "/data", "access": "read-only"}])
    );
    assert_eq!(
        hostile["grants"]["env"],
        json!([{"name": "HOME", "setOnHost": true}])
    );
    assert_eq!(
        hostile["grants"]["network"],
        json!(["https://*.example.com"])
    );
    // The queue is granted but not imported: unused.
    assert_eq!(hostile["unusedGrants"], json!(["queue"]));
    // Sockets are imported but not granted: denied. Files are granted.
    let denied: Vec<&str> = hostile["deniedImports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(!denied.is_empty());
    assert!(
        denied.iter().all(|d| d.starts_with("wasi:sockets/")),
        "{denied:?}"
    );
    // Network is granted and served: nothing is unavailable.
    assert_eq!(hostile["unavailableImports"], json!([]));
    let imports = hostile["imports"].as_array().unwrap();
    let status_of = |name: &str| {
        imports
            .iter()
            .find(|i| i["name"].as_str().unwrap().starts_with(name))
            .map(|i| (i["capability"].clone(), i["status"].clone()))
            .unwrap()
    };
    assert_eq!(
        status_of("wasi:filesystem/types"),
        (json!("files"), json!("granted"))
    );
    assert_eq!(
        status_of("wasi:cli/environment"),
        (json!("environment"), json!("granted"))
    );
    assert_eq!(
        status_of("wasi:sockets/tcp@"),
        (json!("sockets"), json!("denied"))
    );
    assert_eq!(
        status_of("wasi:http/outgoing-handler"),
        (json!("network"), json!("granted"))
    );
    assert_eq!(
        status_of("wasi:clocks/wall-clock"),
        (Value::Null, json!("baseline"))
    );
    assert_eq!(hostile["limits"]["timeoutMs"], 5000);
    assert_eq!(
        hostile["annotations"],
        json!({"readOnlyHint": false, "destructiveHint": true, "openWorldHint": true})
    );
    let risks: Vec<&str> = hostile["risks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    assert!(
        risks.contains(&format!("can read {} (as /data)", data.display()).as_str()),
        "{risks:?}"
    );
    assert!(
        risks.contains(&"can reach https://*.example.com"),
        "{risks:?}"
    );
    assert!(
        risks.contains(&"can read environment variables HOME"),
        "{risks:?}"
    );
    assert!(
        !risks.iter().any(|r| r.contains("queue")),
        "unused grants are not risks"
    );

    let showcase = component(&report, "showcase");
    assert_eq!(showcase["status"], "refused");
    let error = showcase["error"].as_str().unwrap();
    assert!(
        error.contains(&"ab".repeat(32)) && error.contains(showcase["sha256"].as_str().unwrap()),
        "{error}"
    );

    let text_utils = component(&report, "text_utils");
    assert_eq!(text_utils["status"], "loaded");
    assert_eq!(text_utils["policy"], Value::Null);
    // Rust's std imports the environment; without a policy it is denied.
    assert_eq!(
        text_utils["deniedImports"],
        json!(["wasi:cli/environment@0.2.6"])
    );
    assert_eq!(
        text_utils["annotations"],
        json!({"readOnlyHint": true, "destructiveHint": false, "openWorldHint": false})
    );
    assert_eq!(text_utils["risks"].as_array().unwrap().len(), 1);
    assert!(
        text_utils["risks"][0]
            .as_str()
            .unwrap()
            .starts_with("no capabilities")
    );

    // Stable: the same files give the same report, byte for byte.
    assert_eq!(audit(&scratch, &["--json"]).stdout, run.stdout);
}

#[test]
fn audit_text_is_readable_and_a_matching_pin_passes() {
    let scratch = folder("audit-text");
    let text = audit(&scratch, &[]);
    assert_eq!(text.code, 1);
    assert!(
        text.stdout
            .contains("status       REFUSED: component `showcase`"),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("risks        can read "),
        "{}",
        text.stdout
    );
    assert!(
        text.stdout.contains("unused       queue"),
        "{}",
        text.stdout
    );

    // Pin the real digest: everything loads and the audit passes.
    let report: Value = serde_json::from_str(&audit(&scratch, &["--json"]).stdout).unwrap();
    let digest = component(&report, "showcase")["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    std::fs::write(
        scratch.join("tools/showcase.policy.toml"),
        format!("sha256 = \"{digest}\"\n"),
    )
    .unwrap();
    let run = audit(&scratch, &["--json"]);
    assert_eq!(run.code, 0, "{}", run.stdout);
    let report: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(component(&report, "showcase")["pinned"], true);
    assert_eq!(component(&report, "showcase")["status"], "loaded");
}
