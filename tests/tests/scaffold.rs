//! The authoring commands, as a tool author runs them: `mcpplus new`, `mcpplus
//! build`, then `inspect` and `call` of the new component, and `mcpplus dev`
//! against a running server.
//!
//! The name checks and the project layout are tested on every run. Building a
//! project of each language takes minutes (crates.io, npm, CPython), so those
//! tests run only with `MCPPLUS_SCAFFOLD_TESTS=1` (scripts/test-scaffolds.sh
//! sets it); then a missing toolchain fails the test, saying what to install.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use mcpplus_tests::{HttpServer, Scratch, assert_fails_saying, mcpplus_bin, root};
use serde_json::{Value, json};

const TEXT: &str = "The quick brown fox\njumps over the lazy dog";

fn mcpplus(args: &[&str], cwd: &Path) -> Output {
    Command::new(mcpplus_bin())
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run mcpplus")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({})\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn new_refuses_bad_names_and_non_empty_folders() {
    let dir = Scratch::new("new-refuses");
    for (name, says) in [
        ("word_tools", "contains `_` (write `word-tools`)"),
        ("Word", "contains `W` (write `word`)"),
        ("tools-2", "the word `2` starts with `2`, not a letter"),
        ("a--b", "empty word"),
        ("use", "reserved word"),
    ] {
        let out = mcpplus(&["new", name, "--lang", "rust"], dir.path());
        assert_fails_saying(&out, says);
        if name != "use" {
            assert_fails_saying(&out, "use lowercase letters");
        }
    }
    std::fs::create_dir_all(dir.join("busy")).unwrap();
    std::fs::write(dir.join("busy/notes.txt"), "mine").unwrap();
    let out = mcpplus(
        &["new", "word-tools", "--lang", "js", "--dir", "busy"],
        dir.path(),
    );
    assert_fails_saying(&out, "busy already exists and is not empty");
    assert_eq!(
        std::fs::read_to_string(dir.join("busy/notes.txt")).unwrap(),
        "mine"
    );
    let out = mcpplus(&["build", "busy"], dir.path());
    assert_fails_saying(
        &out,
        "has no Cargo.toml (Rust), package.json (JavaScript) or app.py",
    );
}

#[test]
fn new_writes_a_project_with_the_hosts_wit() {
    let dir = Scratch::new("new-writes");
    let host_wit = std::fs::read_to_string(root().join("wit/host.wit")).unwrap();
    for (lang, files) in [
        (
            "rust",
            &["Cargo.toml", "rust-toolchain.toml", "src/lib.rs"][..],
        ),
        ("python", &["app.py", "requirements.txt"][..]),
        ("js", &["package.json", "build.mjs", "app.js"][..]),
    ] {
        let project = dir.join(lang);
        // An empty folder is fine.
        std::fs::create_dir_all(&project).unwrap();
        let out = mcpplus(
            &["new", "word-tools", "--lang", lang, "--dir", lang],
            dir.path(),
        );
        assert_ok(&out, "mcpplus new");
        for file in files
            .iter()
            .chain(&["README.md", ".gitignore", "wit/world.wit"])
        {
            let content = std::fs::read_to_string(project.join(file))
                .unwrap_or_else(|e| panic!("{lang}: {file}: {e}"));
            assert!(
                !content.contains("{{"),
                "{lang}: {file} has a placeholder left"
            );
        }
        assert_eq!(
            std::fs::read_to_string(project.join("wit/deps/mcpplus-host/host.wit")).unwrap(),
            host_wit,
            "{lang}: the host WIT is this host's"
        );
        let world = std::fs::read_to_string(project.join("wit/world.wit")).unwrap();
        assert!(world.contains("world word-tools {"));
        assert!(world.contains("// import mcpplus:host/log@0.1.0;"));
        let readme = std::fs::read_to_string(project.join("README.md")).unwrap();
        for command in [
            "mcpplus build",
            "mcpplus inspect dist/word_tools.wasm",
            "mcpplus call dist/word_tools.wasm",
        ] {
            assert!(readme.contains(command), "{lang}: README lacks {command}");
        }
    }
    let cargo = std::fs::read_to_string(dir.join("rust/Cargo.toml")).unwrap();
    assert!(cargo.contains(r#"version = "=0.51.0""#), "{cargo}");
    assert!(cargo.contains(r#"crate-type = ["cdylib"]"#), "{cargo}");
    let package: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("js/package.json")).unwrap())
            .unwrap();
    assert_eq!(
        package["devDependencies"]["@bytecodealliance/componentize-js"],
        "0.23.0"
    );
    // Without `npm install`, build says to run it.
    assert_fails_saying(&mcpplus(&["build", "js"], dir.path()), "run `npm install`");
}

// ---- Building and serving each language (MCPPLUS_SCAFFOLD_TESTS=1) ----

fn scaffold_tests_enabled(test: &str) -> bool {
    let on = std::env::var_os("MCPPLUS_SCAFFOLD_TESTS").is_some_and(|v| v != "0");
    if !on {
        eprintln!(
            "{test}: not run (it builds a project, which takes minutes); \
             run scripts/test-scaffolds.sh or set MCPPLUS_SCAFFOLD_TESTS=1"
        );
    }
    on
}

/// Phases of one language's run, printed at the end (see `--nocapture`).
struct Clock {
    lang: &'static str,
    start: Instant,
    last: Instant,
    phases: Vec<(String, f64)>,
}

impl Clock {
    fn new(lang: &'static str) -> Self {
        let now = Instant::now();
        Self {
            lang,
            start: now,
            last: now,
            phases: Vec::new(),
        }
    }
    fn lap(&mut self, phase: &str) {
        let now = Instant::now();
        self.phases
            .push((phase.into(), (now - self.last).as_secs_f64()));
        self.last = now;
    }
}

impl Drop for Clock {
    fn drop(&mut self) {
        let phases: Vec<String> = self
            .phases
            .iter()
            .map(|(p, s)| format!("{p} {s:.1}s"))
            .collect();
        eprintln!(
            "timing {}: {} (total {:.1}s)",
            self.lang,
            phases.join(", "),
            self.start.elapsed().as_secs_f64()
        );
    }
}

/// A child command in `project`.
fn command(program: &str, project: &Path) -> Command {
    let mut command = Command::new(program);
    command.current_dir(project);
    // The project builds into its own target/, not the one of this repository.
    command.env_remove("CARGO_TARGET_DIR");
    command
}

fn run(mut command: Command, what: &str) -> Output {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    assert_ok(&out, what);
    out
}

fn mcpplus_in(project: &Path, cache: &Path) -> Command {
    let mut command = command(mcpplus_bin().to_str().unwrap(), project);
    command.env("MCPPLUS_CACHE_DIR", cache);
    command
}

fn call(project: &Path, cache: &Path, tool: &str, args: Value) -> (bool, Value) {
    let mut command = mcpplus_in(project, cache);
    command.args([
        "call",
        "dist/word_tools.wasm",
        tool,
        "--args",
        &args.to_string(),
    ]);
    let out = command.output().expect("run mcpplus call");
    let result: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "mcpplus call {tool}: not JSON ({e})\nstdout:\n{}\nstderr:\n{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    (out.status.success(), result)
}

/// `mcpplus new`, the language's set-up, `mcpplus build`, `inspect` and calls
/// of both tools; returns the project folder.
fn new_build_inspect_call(
    scratch: &Scratch,
    lang: &'static str,
    setup: impl FnOnce(&Path),
    clock: &mut Clock,
) -> PathBuf {
    let cache = scratch.compile_cache();
    let out = mcpplus(&["new", "word-tools", "--lang", lang], scratch.path());
    assert_ok(&out, "mcpplus new");
    let project = scratch.join("word-tools");
    clock.lap("new");
    setup(&project);
    clock.lap("setup");

    // From the parent folder, as `mcpplus build DIR`.
    let mut build = mcpplus_in(scratch.path(), &cache);
    build.args(["build", "word-tools", "--json"]);
    let out = run(build, "mcpplus build");
    clock.lap("build");
    let component = project.join("dist/word_tools.wasm");
    assert!(component.is_file(), "mcpplus build wrote no {component:?}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("build --json prints JSON");
    assert_eq!(report["component"], "word_tools");
    assert_eq!(report["hasDocs"], true, "the WIT docs are embedded");

    // inspect gives the same, with the docs: descriptions and parameter docs.
    let mut inspect = mcpplus_in(&project, &cache);
    inspect.args(["inspect", "dist/word_tools.wasm", "--json"]);
    let report: Value = serde_json::from_slice(&run(inspect, "mcpplus inspect").stdout).unwrap();
    let tools = report["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["count_words", "summarize_text"]);
    let summarize = &tools[1];
    assert!(
        summarize["description"]
            .as_str()
            .unwrap()
            .starts_with("Summarize a text: how many words and lines it has"),
        "{summarize}"
    );
    assert_eq!(summarize["inputSchema"]["required"], json!(["text"]));
    assert_eq!(
        summarize["inputSchema"]["properties"]["min_length"]["description"],
        "count only words of at least this many characters (default 1)"
    );
    assert_eq!(
        summarize["outputSchema"]["required"],
        json!(["words", "lines"])
    );
    if lang == "js" {
        assert_eq!(
            report["imports"],
            json!([]),
            "every WASI feature is disabled"
        );
    }

    let (ok, result) = call(&project, &cache, "count_words", json!({ "text": TEXT }));
    assert!(ok, "{result}");
    assert_eq!(result["structuredContent"], json!({ "result": 9 }));
    clock.lap("first call (compiles)");
    let (ok, result) = call(&project, &cache, "summarize_text", json!({ "text": TEXT }));
    assert!(ok, "{result}");
    assert_eq!(
        result["structuredContent"],
        json!({ "words": 9, "lines": 2, "longest_word": "quick" })
    );
    clock.lap("second call (cached)");
    let (ok, result) = call(
        &project,
        &cache,
        "summarize_text",
        json!({ "text": TEXT, "min_length": 6 }),
    );
    assert!(ok, "{result}");
    assert_eq!(
        result["structuredContent"],
        json!({ "words": 0, "lines": 2, "longest_word": null })
    );
    let (ok, result) = call(&project, &cache, "summarize_text", json!({ "text": " \n" }));
    assert!(!ok, "an empty text is a tool error: {result}");
    assert_eq!(result["isError"], true);
    assert_eq!(
        result["content"][0]["text"],
        "the text is empty: pass some words to summarize"
    );
    project
}

#[test]
fn a_rust_project_builds_tests_serves_and_reloads() {
    if !scaffold_tests_enabled("rust") {
        return;
    }
    let scratch = Scratch::new("scaffold-rust");
    let mut clock = Clock::new("rust");
    let project = new_build_inspect_call(&scratch, "rust", |_| {}, &mut clock);

    // The unit tests pass on the host.
    let mut test = command("cargo", &project);
    test.arg("test");
    run(test, "cargo test");
    clock.lap("cargo test");

    dev_reloads_a_served_tool(&scratch, &project, &mut clock);
}

/// `mcpplus dev` installs the component in a served folder and replaces it
/// when a source changes; a failed build leaves it and watching goes on.
fn dev_reloads_a_served_tool(scratch: &Scratch, project: &Path, clock: &mut Clock) {
    let tools = scratch.join("tools");
    std::fs::create_dir_all(&tools).unwrap();
    let server = HttpServer::start(&["--tools", tools.to_str().unwrap()]);
    let mut dev = mcpplus_in(project, &scratch.compile_cache());
    dev.args(["dev", "--tools", tools.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let dev = Dev::start(dev);
    clock.lap("serve");
    let waited = |lines: Vec<String>, what: &str| {
        assert!(
            lines.last().is_some_and(|l| l.contains(what)),
            "the server did not log {what}:\n{}",
            lines.join("\n")
        );
    };
    waited(
        server.read_logs_until("\"tool.loaded\"", Duration::from_secs(120)),
        "tool.loaded",
    );
    clock.lap("dev: first install served");

    let lib = project.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).unwrap();
    std::fs::write(
        &lib,
        source.replace(
            "the text is empty: pass some words to summarize",
            "nothing to summarize",
        ),
    )
    .unwrap();
    waited(
        server.read_logs_until("\"tool.replaced\"", Duration::from_secs(120)),
        "tool.replaced",
    );
    clock.lap("dev: edit to reloaded");
    let installed = tools.join("word_tools.wasm");
    let out = mcpplus(
        &[
            "call",
            installed.to_str().unwrap(),
            "summarize_text",
            "--args",
            r#"{"text": ""}"#,
        ],
        project,
    );
    assert!(text(&out.stdout).contains("nothing to summarize"));

    // A build that fails is reported; the served component stays.
    let before = std::fs::read(&installed).unwrap();
    std::fs::write(&lib, format!("{source}\nfn broken( {{\n")).unwrap();
    dev.wait_for("the build failed", Duration::from_secs(120));
    assert_eq!(std::fs::read(&installed).unwrap(), before);
    std::fs::write(&lib, &source).unwrap();
    waited(
        server.read_logs_until("\"tool.replaced\"", Duration::from_secs(120)),
        "tool.replaced",
    );
    clock.lap("dev: failed build, fix, reloaded");
}

/// A running `mcpplus dev`, killed on drop.
struct Dev {
    child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Dev {
    fn start(mut command: Command) -> Self {
        let mut child = command.spawn().expect("start mcpplus dev");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    fn wait_for(&self, fragment: &str, within: Duration) {
        let deadline = Instant::now() + within;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(fragment) => return,
                Ok(line) => seen.push(line),
                Err(_) => break,
            }
        }
        panic!("mcpplus dev did not say `{fragment}`:\n{}", seen.join("\n"));
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_python_project_builds_and_serves() {
    if !scaffold_tests_enabled("python") {
        return;
    }
    // componentize-py from this repository's .venv (scripts/test.sh makes it).
    let venv = root().join(".venv/bin");
    let found = Command::new(venv.join("componentize-py"))
        .arg("--version")
        .output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "componentize-py is needed: run `python3 -m venv .venv && .venv/bin/pip install -r \
         tests/python/requirements.txt` in {} (scripts/test.sh does)",
        root().display()
    );
    let scratch = Scratch::new("scaffold-python");
    let mut clock = Clock::new("python");
    new_build_inspect_call(
        &scratch,
        "python",
        |project| {
            // Where `mcpplus build` looks first: the project's .venv (the README
            // makes one with `pip install -r requirements.txt`; this borrows the
            // repository's).
            let bin = project.join(".venv/bin");
            std::fs::create_dir_all(&bin).unwrap();
            std::os::unix::fs::symlink(venv.join("componentize-py"), bin.join("componentize-py"))
                .unwrap();
        },
        &mut clock,
    );
}

#[test]
fn a_js_project_builds_and_serves() {
    if !scaffold_tests_enabled("js") {
        return;
    }
    let npm = Command::new("npm").arg("--version").output();
    assert!(
        npm.is_ok_and(|o| o.status.success()),
        "Node.js 20 or later with npm is needed (https://nodejs.org, or Debian's nodejs and npm)"
    );
    let scratch = Scratch::new("scaffold-js");
    let mut clock = Clock::new("js");
    new_build_inspect_call(
        &scratch,
        "js",
        |project| {
            let mut install = command("npm", project);
            install.args(["install", "--no-audit", "--no-fund"]);
            run(install, "npm install");
        },
        &mut clock,
    );
}
