//! The tool-author commands (`inspect`, `call`, `embed-docs`) and load errors,
//! run as a user would run them.

use std::process::{Command, Output};

use mcpplus_tests::{Scratch, artifacts, assert_fails_saying, mcpplus_bin, root};
use serde_json::Value;

fn mcpplus(args: &[&str]) -> Output {
    Command::new(mcpplus_bin())
        .args(args)
        .output()
        .expect("run mcpplus")
}

fn json_stdout(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn inspect_json_lists_tools_schemas_and_imports() {
    let out = mcpplus(&["inspect", artifacts::showcase().to_str().unwrap(), "--json"]);
    assert!(out.status.success());
    let report = json_stdout(&out);
    let tools = report["tools"].as_array().unwrap();
    assert_eq!(tools.len(), 14);
    assert_eq!(report["hasDocs"], true);
    assert!(
        report["imports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i == "mcpplus:host/types@0.1.0")
    );
    let echo = tools.iter().find(|t| t["name"] == "echo").unwrap();
    assert_eq!(echo["export"], "mcpplus:examples/showcase@0.1.0#echo");
    assert_eq!(
        echo["inputSchema"]["required"],
        serde_json::json!(["message"])
    );
}

/// Inspect says whether a component serves prompts or resources (which are
/// listed once it is served: listing them runs its code).
#[test]
fn inspect_says_when_a_component_serves_prompts_and_resources() {
    let fixture = mcpplus_tests::dist().join("fixtures/conformance.wasm");
    let serving = json_stdout(&mcpplus(&["inspect", fixture.to_str().unwrap(), "--json"]));
    assert_eq!(serving["servesPrompts"], true);
    assert_eq!(serving["servesResources"], true);
    let tools_only = json_stdout(&mcpplus(&[
        "inspect",
        artifacts::showcase().to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(tools_only["servesPrompts"], false);
    assert_eq!(tools_only["servesResources"], false);
    let text = mcpplus(&["inspect", fixture.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&text.stdout)
            .contains("serves prompts (exports mcpplus:host/prompts@0.1.0")
    );
}

/// `mcpplus inspect … | head`: a reader that stops early ends the output, not
/// the process with a panic.
#[test]
fn inspect_into_a_closed_pipe_exits_quietly() {
    let mut child = Command::new(mcpplus_bin())
        .args(["inspect", artifacts::showcase().to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run mcpplus inspect");
    drop(child.stdout.take()); // the reader is gone before anything is written
    let out = child.wait_with_output().expect("inspect ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn call_runs_one_tool_without_a_client() {
    let out = mcpplus(&[
        "call",
        artifacts::text_utils().to_str().unwrap(),
        "slugify",
        "--args",
        r#"{"text":"Hello, World!"}"#,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        json_stdout(&out)["structuredContent"]["result"],
        "hello-world"
    );
}

#[test]
fn call_reports_bad_arguments_and_unknown_tools() {
    let wasm = artifacts::text_utils();
    let out = mcpplus(&[
        "call",
        wasm.to_str().unwrap(),
        "wrap",
        "--args",
        r#"{"text":"x","width":-1}"#,
    ]);
    assert!(!out.status.success());
    let result = json_stdout(&out);
    assert_eq!(result["isError"], true);
    assert_eq!(
        result["content"][0]["text"],
        "invalid arguments: arguments.width: expected u16 (0..=65535), got -1"
    );

    let out = mcpplus(&["call", wasm.to_str().unwrap(), "nope"]);
    assert_fails_saying(&out, "has no tool `nope`");
    assert_fails_saying(&out, "word_count");

    let out = mcpplus(&["call", wasm.to_str().unwrap(), "wrap", "--args", "[1]"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--args must be a JSON object"));
}

#[test]
fn without_embedded_docs_tools_still_work_and_inspect_says_how_to_fix_it() {
    let raw = root().join("guest-tools/target/wasm32-wasip2/release/text_utils.wasm");
    let out = mcpplus(&["inspect", raw.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("no doc comments embedded"), "{text}");
    assert!(
        text.contains("`word-count` from component `text_utils`."),
        "{text}"
    );

    // embed-docs puts them back.
    let dir = Scratch::new("embed");
    let copy = dir.join("text_utils.wasm");
    std::fs::copy(&raw, &copy).unwrap();
    let wit = root().join("guest-tools/text-utils/wit");
    assert!(
        mcpplus(&[
            "embed-docs",
            copy.to_str().unwrap(),
            "--wit",
            wit.to_str().unwrap()
        ])
        .status
        .success()
    );
    let report = json_stdout(&mcpplus(&["inspect", copy.to_str().unwrap(), "--json"]));
    assert_eq!(report["hasDocs"], true);
}

#[test]
fn a_tool_name_collision_is_a_clear_load_error() {
    let dir = Scratch::new("collide");
    std::fs::copy(artifacts::showcase(), dir.join("a_showcase.wasm")).unwrap();
    std::fs::copy(artifacts::showcase(), dir.join("b_showcase.wasm")).unwrap();
    let out = mcpplus(&[
        "serve",
        "--tools",
        dir.path().to_str().unwrap(),
        "--strict",
        "--log-format",
        "text",
    ]);
    assert_fails_saying(
        &out,
        "tool `area` is already provided by component `a_showcase`",
    );
}

#[test]
fn not_a_component_is_refused_with_a_reason() {
    let dir = Scratch::new("bad");
    let bad = dir.join("broken.wasm");
    std::fs::write(&bad, b"\0asm\x01\0\0\0").unwrap();
    let out = mcpplus(&["inspect", bad.to_str().unwrap()]);
    assert_fails_saying(&out, "not a WebAssembly component");
}

/// Log lines (JSON) of one `serve` start that stops at once (stdin closed).
fn start_and_stop(cache: &std::path::Path, tools: &std::path::Path) -> Vec<Value> {
    let out = Command::new(mcpplus_bin())
        .args([
            "serve",
            "--log-format",
            "json",
            "--tools",
            tools.to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run mcpplus serve");
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn cache_outcomes(logs: &[Value]) -> Vec<String> {
    logs.iter()
        .filter(|l| l["event"] == "tool.loaded")
        .map(|l| l["cache"].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn warm_start_does_not_recompile_and_a_corrupt_entry_is_rebuilt() {
    let base = Scratch::new("cache");
    let (cache, tools) = (base.join("cache"), base.join("tools"));
    std::fs::create_dir_all(&tools).unwrap();
    std::fs::copy(artifacts::showcase(), tools.join("showcase.wasm")).unwrap();
    std::fs::copy(artifacts::text_utils(), tools.join("text_utils.wasm")).unwrap();

    let cold = start_and_stop(&cache, &tools);
    assert_eq!(cache_outcomes(&cold), ["Miss", "Miss"]);
    assert!(
        cold.iter().any(|l| l["event"] == "component.compiling"),
        "cold start shows progress"
    );

    let warm = start_and_stop(&cache, &tools);
    assert_eq!(cache_outcomes(&warm), ["Hit", "Hit"]);
    assert!(
        !warm.iter().any(|l| l["event"] == "component.compiling"),
        "warm start must not compile"
    );

    // Flip one byte in the middle of every cached entry: detected, discarded, rebuilt.
    for entry in walk(&cache)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "cwasm"))
    {
        let mut bytes = std::fs::read(&entry).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&entry, bytes).unwrap();
    }
    let repaired = start_and_stop(&cache, &tools);
    assert_eq!(cache_outcomes(&repaired), ["Miss", "Miss"]);
    assert_eq!(
        repaired
            .iter()
            .filter(|l| l["event"] == "cache.discarded")
            .count(),
        2
    );
    assert_eq!(
        cache_outcomes(&start_and_stop(&cache, &tools)),
        ["Hit", "Hit"]
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path))
        } else {
            out.push(path)
        }
    }
    out
}

#[test]
fn a_bad_config_file_is_refused_with_file_line_and_key() {
    let dir = Scratch::new("config");
    let config = dir.join("mcpplus.toml");
    std::fs::write(&config, "[limits]\ntimeout_ms = 100\nmemroy_mib = 5\n").unwrap();
    let out = mcpplus(&[
        "call",
        artifacts::text_utils().to_str().unwrap(),
        "slugify",
        "--config",
        config.to_str().unwrap(),
    ]);
    assert_fails_saying(&out, "mcpplus.toml: line 3: unknown field `memroy_mib`");
}

#[test]
fn closing_stdin_before_initializing_is_a_clean_exit() {
    let out = Command::new(mcpplus_bin())
        .args([
            "serve",
            "--tools",
            artifacts::text_utils().parent().unwrap().to_str().unwrap(),
        ])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run mcpplus serve");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "nothing but MCP messages on stdout");
}

#[test]
fn cached_facts_are_reused_only_by_the_build_that_wrote_them() {
    let base = Scratch::new("facts");
    let (cache, tools) = (base.join("cache"), base.join("tools"));
    std::fs::create_dir_all(&tools).unwrap();
    std::fs::copy(artifacts::text_utils(), tools.join("text_utils.wasm")).unwrap();
    start_and_stop(&cache, &tools);
    let facts: Vec<_> = walk(&cache)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".facts.json"))
        .collect();
    assert_eq!(facts.len(), 1, "a cold start records the component's facts");

    // Facts claiming another build (and a wrong description) must be ignored.
    let mut forged: Value = serde_json::from_slice(&std::fs::read(&facts[0]).unwrap()).unwrap();
    forged["build"] = "some-other-build".into();
    forged["description"]["tools"] = serde_json::json!([]);
    std::fs::write(&facts[0], forged.to_string()).unwrap();
    let logs = start_and_stop(&cache, &tools);
    let loaded = logs
        .iter()
        .find(|l| l["event"] == "tool.loaded")
        .expect("component loaded");
    assert!(
        loaded["tools"].as_str().unwrap().contains("word_count"),
        "{loaded}"
    );
}

#[test]
fn a_policy_sets_the_component_limits_and_bad_ones_are_refused() {
    let scratch = Scratch::new("policy-limits");
    let wasm = scratch.join("misbehaving.wasm");
    std::fs::copy(artifacts::misbehaving(), &wasm).unwrap();
    let policy = scratch.join("misbehaving.policy.toml");
    std::fs::write(&policy, "[limits]\ntimeout_ms = 300\n").unwrap();
    let spin = || mcpplus(&["call", wasm.to_str().unwrap(), "spin", "--args", "{}"]);
    let out = spin();
    assert!(!out.status.success());
    let text = json_stdout(&out)["content"][0]["text"].to_string();
    assert!(text.contains("time limit of 300ms"), "{text}");

    // A limit that could never work refuses the component, naming the file.
    std::fs::write(&policy, "[limits]\nmemory_mib = 0\n").unwrap();
    let out = spin();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("misbehaving.policy.toml: [limits] memory_mib must be greater than 0"),
        "{stderr}"
    );

    // More memory than the instance pool was sized for: refused, saying where to raise it.
    std::fs::write(&policy, "[limits]\nmemory_mib = 1024\n").unwrap();
    let out = spin();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("memory_mib = 1024, above the server's largest limit of 256 MiB"),
        "{stderr}"
    );
}

#[test]
fn log_file_receives_the_json_lines_instead_of_stderr() {
    let scratch = Scratch::new("log-file");
    let log = scratch.join("mcpplus.log");
    let out = mcpplus(&[
        "--log",
        "debug",
        "--log-format",
        "json",
        "--log-file",
        log.to_str().unwrap(),
        "call",
        artifacts::text_utils().to_str().unwrap(),
        "slugify",
        "--args",
        r#"{"text":"Hello"}"#,
    ]);
    assert!(out.status.success());
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("tool.completed"),
        "the log went to stderr"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let completed: Value = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("each line is JSON"))
        .find(|l| l["event"] == "tool.completed")
        .expect("a tool.completed line in the log file");
    assert_eq!(completed["tool"], "slugify");
    assert_eq!(completed["schema"], 1);
}

#[test]
fn a_data_directory_serves_one_server_at_a_time() {
    let scratch = Scratch::new("data-dir-lock");
    let data = scratch.join("data");
    let first =
        mcpplus_tests::HttpServer::start(&["--data-dir", data.to_str().unwrap(), "--no-admin"]);
    let second = mcpplus(&[
        "serve",
        "--http",
        "127.0.0.1:0",
        "--no-auth",
        "--data-dir",
        data.to_str().unwrap(),
        "--no-admin",
    ]);
    assert_fails_saying(&second, "is in use by another mcpplus server (pid");
    assert_fails_saying(&second, "--data-dir");
    assert!(data.join("queue.sqlite3").is_file());
    drop(first);
}
