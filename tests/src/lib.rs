//! Shared helpers for the integration tests: where the built binary and the
//! bundled components are, a server process that is killed when dropped, and
//! host log lines captured in-process.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `mcpplus` binary under test (`$MCPPLUS_BIN`, else target/debug/mcpplus).
pub fn mcpplus_bin() -> PathBuf {
    std::env::var_os("MCPPLUS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/debug/mcpplus"))
}

/// The bundled components built by scripts/build-guest-tools.sh.
pub fn dist() -> PathBuf {
    std::env::var_os("MCPPLUS_TOOLS_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("guest-tools/dist"))
}

/// Copy the `recorder` fixture into `tools`, granted to append its journal in `journal`.
pub fn install_recorder(tools: &std::path::Path, journal: &std::path::Path) {
    std::fs::copy(artifacts::recorder(), tools.join("recorder.wasm")).unwrap();
    std::fs::write(
        tools.join("recorder.policy.toml"),
        format!(
            "[[files]]\nhost = \"{}\"\nguest = \"/journal\"\naccess = \"read-write\"\n",
            journal.display()
        ),
    )
    .unwrap();
}

/// Copy the bundled `task_queue` component into `tools`, granted `submit`.
pub fn install_task_queue(tools: &std::path::Path) {
    std::fs::copy(artifacts::task_queue(), tools.join("task_queue.wasm")).unwrap();
    std::fs::write(
        tools.join("task_queue.policy.toml"),
        "[queue]\nsubmit = true\n",
    )
    .unwrap();
}

/// The command failed and said `message` on stderr.
pub fn assert_fails_saying(out: &std::process::Output, message: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected a failure; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains(message),
        "expected `{message}` on stderr:\n{stderr}"
    );
}

/// Named test artifacts, so tests say what they use rather than spell paths.
pub mod artifacts {
    use std::path::PathBuf;
    pub fn showcase() -> PathBuf {
        super::dist().join("showcase.wasm")
    }
    pub fn text_utils() -> PathBuf {
        super::dist().join("text_utils.wasm")
    }
    pub fn misbehaving() -> PathBuf {
        super::dist().join("fixtures/misbehaving.wasm")
    }
    pub fn hostile() -> PathBuf {
        super::dist().join("fixtures/hostile.wasm")
    }
    pub fn fetch() -> PathBuf {
        super::dist().join("fetch.wasm")
    }
    /// Records each execution in a journal file (queue crash tests).
    pub fn recorder() -> PathBuf {
        super::dist().join("fixtures/recorder.wasm")
    }
    pub fn task_queue() -> PathBuf {
        super::dist().join("task_queue.wasm")
    }
    pub fn workflow_tools() -> PathBuf {
        super::dist().join("workflow_tools.wasm")
    }
}

/// `mcpplus serve --http 127.0.0.1:0 --no-auth ARGS…` (loopback, so no token
/// is needed; tests of authentication start their own), killed on drop. A
/// server whose arguments name no data directory or admin socket gets its own
/// scratch ones, so no two servers of a test run share state.
pub struct HttpServer {
    child: Child,
    /// The scratch folder given to it, removed on drop.
    own: Option<PathBuf>,
    pub url: String,
    pub stderr: mpsc::Receiver<String>,
    /// What it printed before it listened (e.g. `mcpplus: mesh listening on …`).
    pub startup: Vec<String>,
}

impl HttpServer {
    pub fn start(args: &[&str]) -> Self {
        let has = |flag: &str| args.contains(&flag);
        let own =
            (!has("--data-dir") || !(has("--admin-socket") || has("--no-admin"))).then(|| {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let dir =
                    std::env::temp_dir().join(format!("mcpplus-server-{}-{n}", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                std::fs::create_dir_all(&dir).expect("a scratch folder for the server");
                dir
            });
        let mut own_args: Vec<String> = Vec::new();
        if let Some(dir) = &own {
            if !has("--data-dir") {
                own_args.extend(["--data-dir".into(), dir.join("data").display().to_string()]);
            }
            if !(has("--admin-socket") || has("--no-admin")) {
                own_args.extend([
                    "--admin-socket".into(),
                    dir.join("admin.sock").display().to_string(),
                ]);
            }
        }
        let mut child = Command::new(mcpplus_bin())
            .args(["serve", "--http", "127.0.0.1:0", "--no-auth"])
            .args(args)
            .args(&own_args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start mcpplus");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr piped");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(180)) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("mcpplus: listening on ") {
                        return Self {
                            child,
                            own,
                            url: url.trim().to_string(),
                            stderr: rx,
                            startup: seen,
                        };
                    }
                    seen.push(line);
                }
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("mcpplus did not start listening:\n{}", seen.join("\n"));
                }
            }
        }
    }

    /// A crash tests' node: its `tools/`, `data/` and `mcpplus.toml` under
    /// `dir`, no admin socket, no folder watcher.
    pub fn start_node(dir: &Scratch) -> Self {
        let s = |p: &str| dir.join(p).to_str().unwrap().to_string();
        Self::start(&[
            "--tools",
            &s("tools"),
            "--data-dir",
            &s("data"),
            "--config",
            &s("mcpplus.toml"),
            "--no-admin",
            "--no-watch",
        ])
    }
}

impl HttpServer {
    /// Read its log lines until one contains `fragment` (or `within` passes);
    /// returns the lines read, which later reads do not see again. Wait on
    /// this before a kill when a line must be there: a SIGKILL loses what
    /// the server had not written yet.
    pub fn read_logs_until(&self, fragment: &str, within: Duration) -> Vec<String> {
        let deadline = std::time::Instant::now() + within;
        let mut lines = Vec::new();
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(fragment);
                    lines.push(line);
                    if found {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        lines
    }

    /// `kill -9` the server; returns every log line it wrote that was not
    /// read yet.
    pub fn kill_and_collect_logs(mut self) -> Vec<String> {
        let _ = self.child.kill(); // SIGKILL on Unix
        let _ = self.child.wait();
        // The reader thread ends at EOF, which closes the channel.
        let mut lines = Vec::new();
        while let Ok(line) = self.stderr.recv_timeout(Duration::from_secs(10)) {
            lines.push(line);
        }
        lines
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(dir) = &self.own {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// A temporary folder for one test, removed when dropped (also when the test fails).
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("mcpplus-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch folder");
        Self(dir)
    }

    pub fn join(&self, path: &str) -> PathBuf {
        self.0.join(path)
    }

    /// Where in-process runtimes keep compiled components: `$MCPPLUS_CACHE_DIR`
    /// (shared by a test run), else a `cache` folder in this scratch space.
    pub fn compile_cache(&self) -> PathBuf {
        std::env::var_os("MCPPLUS_CACHE_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.join("cache"))
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// JSON log lines of an in-process host, captured as a tracing writer.
#[derive(Clone, Default)]
pub struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// The lines captured so far, parsed (lines that are not JSON are skipped).
    pub fn events(&self) -> Vec<serde_json::Value> {
        parse(&self.0.lock().unwrap())
    }

    /// [`Self::events`], then forget them.
    pub fn take_events(&self) -> Vec<serde_json::Value> {
        parse(&std::mem::take(&mut *self.0.lock().unwrap()))
    }
}

fn parse(bytes: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedLogs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Helpers for the tests of several nodes sharing work.
pub mod mesh {
    use std::collections::BTreeMap;
    use std::path::Path;

    use serde_json::Value;

    /// How often an owner recorded each task completed, from its
    /// `queue.remote_complete` log events.
    pub fn recorded_completions<'a>(
        events: impl IntoIterator<Item = &'a Value>,
    ) -> BTreeMap<String, usize> {
        let mut recorded = BTreeMap::new();
        for e in events {
            let completed = e["settled"]
                .as_str()
                .is_some_and(|s| s.contains("Completed"));
            if e["event"] == "queue.remote_complete" && completed {
                *recorded
                    .entry(e["task"].as_str().unwrap().to_string())
                    .or_default() += 1;
            }
        }
        recorded
    }

    /// Every task ran at least once and never more often than it was
    /// attempted; `tasks` are (id, attempts). Returns the executions beyond
    /// the first.
    pub fn check_executions<'a>(
        executions: &BTreeMap<String, u32>,
        tasks: impl IntoIterator<Item = (&'a str, u32)>,
    ) -> u32 {
        let mut extra = 0;
        for (id, attempts) in tasks {
            let ran = executions.get(id).copied().unwrap_or(0);
            assert!(
                ran >= 1 && ran <= attempts,
                "{id}: ran {ran}, attempts {attempts}"
            );
            extra += ran - 1;
        }
        extra
    }

    /// Executions per task key, from `recorder` journals (one line each).
    pub fn journal_executions(journals: &[&Path]) -> BTreeMap<String, u32> {
        let mut executions = BTreeMap::new();
        for journal in journals {
            let text = std::fs::read_to_string(journal).unwrap_or_default();
            for line in text.lines() {
                *executions.entry(line.to_string()).or_default() += 1;
            }
        }
        executions
    }
}

/// Helpers for the queue's crash tests.
pub mod queue {
    use std::collections::BTreeMap;

    use serde_json::Value;

    /// Count, per task, the `queue.task_finished` completions in `lines`
    /// (a server's JSON log) into `into`.
    pub fn completions_logged(lines: &[String], into: &mut BTreeMap<String, usize>) {
        for line in lines {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if v["event"] == "queue.task_finished" && v["state"] == "completed" {
                *into
                    .entry(v["task"].as_str().unwrap().to_string())
                    .or_default() += 1;
            }
        }
    }
}
