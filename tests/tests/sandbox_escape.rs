//! The escape suite: a hostile component (guest-tools/hostile) tries every way out
//! of its grants (`..`, absolute paths, planted symlinks, hard links, /proc,
//! writes under a read-only grant, environment, raw sockets, name lookup, HTTP).
//! Every attempt must fail with a permission error, leave an audit event, and
//! leave the host filesystem exactly as it was.
//!
//! Calls run in-process through the real runtime (the same code `serve` uses), on
//! a current-thread runtime so the test can capture the host's log events.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use mcpplus_runtime::engine::RuntimeOptions;
use mcpplus_runtime::invoke::{ToolOutcome, invoke};
use mcpplus_runtime::{LoadedComponent, Runtime};
use mcpplus_tests::{CapturedLogs, Scratch, artifacts};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "SECRET-OUTSIDE";

/// A granted folder, a folder beside it that must stay untouched, the hostile
/// component, and a policy.
struct Sandbox {
    scratch: Scratch,
    runtime: Runtime,
    component: LoadedComponent,
    logs: CapturedLogs,
}

impl Sandbox {
    /// `policy` is written beside the component; `{granted}` in it is replaced by
    /// the granted folder's path.
    fn new(name: &str, policy: Option<&str>) -> Self {
        let scratch = Scratch::new(name);
        let granted = scratch.join("granted");
        let outside = scratch.join("outside");
        std::fs::create_dir_all(granted.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(granted.join("a.txt"), "inside-a").unwrap();
        std::fs::write(granted.join("sub/b.txt"), "inside-b").unwrap();
        std::fs::write(outside.join("secret.txt"), SECRET).unwrap();
        // Symlinks planted inside the granted folder, pointing out of it.
        std::os::unix::fs::symlink("../outside/secret.txt", granted.join("planted")).unwrap();
        std::os::unix::fs::symlink(outside.join("secret.txt"), granted.join("planted_abs"))
            .unwrap();
        std::os::unix::fs::symlink("../outside", granted.join("escape_dir")).unwrap();
        std::os::unix::fs::symlink("/proc/self", granted.join("proc_link")).unwrap();

        let tools = scratch.join("tools");
        std::fs::create_dir_all(&tools).unwrap();
        let wasm = tools.join("hostile.wasm");
        std::fs::copy(artifacts::hostile(), &wasm).unwrap();
        if let Some(policy) = policy {
            let text = policy.replace("{granted}", &granted.display().to_string());
            std::fs::write(tools.join("hostile.policy.toml"), text).unwrap();
        }
        let runtime = Runtime::new(RuntimeOptions {
            cache: Some(scratch.compile_cache()),
            ..RuntimeOptions::default()
        })
        .unwrap();
        let component = runtime.load_file(&wasm).unwrap();
        Sandbox {
            scratch,
            runtime,
            component,
            logs: CapturedLogs::default(),
        }
    }

    fn granted(&self) -> PathBuf {
        self.scratch.join("granted")
    }

    fn outside(&self) -> PathBuf {
        self.scratch.join("outside")
    }

    /// Call one tool; the host's log events during the call go to `self.logs`.
    fn call(&self, tool: &str, args: Value) -> ToolOutcome {
        let signature = self
            .component
            .tool(tool)
            .unwrap_or_else(|| panic!("hostile has no tool {tool}"));
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

    /// Call a tool that must fail; returns its error text.
    fn refused(&self, tool: &str, args: Value) -> String {
        let outcome = self.call(tool, args.clone());
        assert!(
            outcome.is_error,
            "{tool}({args}) should have been refused, got {:?}",
            outcome.structured
        );
        text_of(&outcome)
    }

    fn ok(&self, tool: &str, args: Value) -> Value {
        let outcome = self.call(tool, args.clone());
        assert!(
            !outcome.is_error,
            "{tool}({args}) failed: {}",
            text_of(&outcome)
        );
        outcome
            .structured
            .map_or(Value::Null, |s| s["result"].clone())
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

/// Every `capability.denied` event so far, then forget them.
fn take_denials(logs: &CapturedLogs) -> Vec<Value> {
    logs.take_events()
        .into_iter()
        .filter(|v| v["event"] == "capability.denied")
        .collect()
}

/// Every file under `dir` (not following symlinks) with its contents, or the
/// symlink's target.
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let key = path.strip_prefix(dir).unwrap().display().to_string();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).unwrap();
                out.insert(key, format!("-> {}", target.display()));
            } else if meta.is_dir() {
                out.insert(key, "<dir>".into());
                stack.push(path);
            } else {
                out.insert(key, std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
    out
}

const READ_WRITE: &str =
    "[[files]]\nhost = \"{granted}\"\nguest = \"/data\"\naccess = \"read-write\"\n";
const READ_ONLY: &str =
    "[[files]]\nhost = \"{granted}\"\nguest = \"/data\"\naccess = \"read-only\"\n";

#[test]
fn path_escapes_are_refused_audited_and_change_nothing() {
    // Read-write, so a refusal can only come from leaving the granted folder.
    let sb = Sandbox::new("escape-paths", Some(READ_WRITE));
    let before_outside = snapshot(&sb.outside());
    assert_eq!(sb.ok("preopens", json!({})), json!(["/data"]));
    assert_eq!(
        sb.ok("read_at", json!({"path": "sub/../a.txt"})),
        "inside-a"
    );

    let reads = [
        "../outside/secret.txt",
        "sub/../../outside/secret.txt",
        "/etc/passwd",
        "/proc/self/environ",
        "planted",
        "planted_abs",
        "escape_dir/secret.txt",
        "proc_link/environ",
        "sub/../../../../../../etc/passwd",
    ];
    for path in reads {
        let error = sb.refused("read_at", json!({"path": path}));
        assert!(!error.contains(SECRET), "{path} leaked the secret");
        assert_eq!(error, "not-permitted", "reading {path}");
        let denials = take_denials(&sb.logs);
        assert_eq!(denials.len(), 1, "one audit event for {path}: {denials:?}");
        let d = &denials[0];
        assert_eq!(d["capability"], "files");
        assert_eq!(d["component"], "hostile");
        assert_eq!(d["tool"], "read_at");
        assert!(d["call_id"].as_u64().is_some_and(|id| id > 0), "{d}");
        assert_eq!(d["target"], format!("open {path}"));
        assert!(
            d["reason"]
                .as_str()
                .unwrap()
                .contains("outside the granted")
        );
    }

    let changes = [
        (
            "write_at",
            json!({"path": "../outside/new.txt", "contents": "x"}),
        ),
        (
            "write_at",
            json!({"path": "../outside/secret.txt", "contents": "x"}),
        ),
        (
            "write_at",
            json!({"path": "planted", "contents": "overwritten"}),
        ),
        (
            "write_at",
            json!({"path": "escape_dir/new.txt", "contents": "x"}),
        ),
        ("truncate_at", json!({"path": "planted"})),
        ("append_at", json!({"path": "planted_abs", "contents": "x"})),
        ("delete_at", json!({"path": "../outside/secret.txt"})),
        ("delete_at", json!({"path": "escape_dir/secret.txt"})),
        (
            "rename_at",
            json!({"source": "a.txt", "destination": "../outside/moved.txt"}),
        ),
        (
            "rename_at",
            json!({"source": "../outside/secret.txt", "destination": "stolen.txt"}),
        ),
        ("mkdir_at", json!({"path": "../outside/newdir"})),
        (
            "hard_link_at",
            json!({"existing": "../outside/secret.txt", "link": "stolen"}),
        ),
        (
            "hard_link_at",
            json!({"existing": "a.txt", "link": "../outside/linked"}),
        ),
        (
            "symlink_at",
            json!({"target": "a.txt", "link": "../outside/link"}),
        ),
        ("list_at", json!({"path": ".."})),
        ("list_at", json!({"path": "escape_dir"})),
    ];
    for (tool, args) in &changes {
        let error = sb.refused(tool, args.clone());
        assert_eq!(error, "not-permitted", "{tool}({args})");
        let denials = take_denials(&sb.logs);
        assert!(!denials.is_empty(), "{tool}({args}) left no audit event");
        assert!(
            denials
                .iter()
                .all(|d| d["tool"] == *tool && d["capability"] == "files")
        );
    }

    // A symlink the guest makes to outside may exist, but never leads anywhere.
    let _ = sb.call(
        "symlink_at",
        json!({"target": "../outside/secret.txt", "link": "mine"}),
    );
    sb.refused("read_at", json!({"path": "mine"}));
    let _ = sb.call(
        "symlink_at",
        json!({"target": "/etc/passwd", "link": "mine_abs"}),
    );
    sb.refused("read_at", json!({"path": "mine_abs"}));

    // Through the standard library (libc maps /data/... to the preopen).
    let error = sb.refused("read_std", json!({"path": "/data/planted"}));
    assert!(error.contains("not permitted"), "{error}");
    assert_eq!(
        sb.ok("read_std", json!({"path": "/data/a.txt"})),
        "inside-a"
    );
    sb.refused("read_std", json!({"path": "/etc/passwd"}));

    assert_eq!(
        snapshot(&sb.outside()),
        before_outside,
        "outside folder changed"
    );
}

#[test]
fn read_only_grants_refuse_every_change() {
    let sb = Sandbox::new("read-only", Some(READ_ONLY));
    let before = snapshot(&sb.granted());
    assert_eq!(sb.ok("read_at", json!({"path": "a.txt"})), "inside-a");
    assert_eq!(
        sb.ok("list_at", json!({"path": "."})),
        json!([
            "a.txt",
            "escape_dir",
            "planted",
            "planted_abs",
            "proc_link",
            "sub"
        ])
    );
    let changes = [
        ("write_at", json!({"path": "a.txt", "contents": "x"})),
        ("write_at", json!({"path": "new.txt", "contents": "x"})),
        ("append_at", json!({"path": "a.txt", "contents": "x"})),
        ("truncate_at", json!({"path": "a.txt"})),
        ("delete_at", json!({"path": "a.txt"})),
        (
            "rename_at",
            json!({"source": "a.txt", "destination": "c.txt"}),
        ),
        ("mkdir_at", json!({"path": "d"})),
        ("symlink_at", json!({"target": "a.txt", "link": "l"})),
        ("hard_link_at", json!({"existing": "a.txt", "link": "h"})),
    ];
    for (tool, args) in &changes {
        let error = sb.refused(tool, args.clone());
        assert_eq!(error, "not-permitted", "{tool}({args})");
        let denials = take_denials(&sb.logs);
        assert_eq!(denials.len(), 1, "{tool}: {denials:?}");
        assert!(
            denials[0]["reason"]
                .as_str()
                .unwrap()
                .contains("read-only grant")
        );
    }
    assert_eq!(
        snapshot(&sb.granted()),
        before,
        "a read-only folder changed"
    );
}

#[test]
fn read_write_grants_allow_changes_inside() {
    let sb = Sandbox::new("read-write", Some(READ_WRITE));
    sb.ok("write_at", json!({"path": "new.txt", "contents": "fresh"}));
    sb.ok("append_at", json!({"path": "new.txt", "contents": "er"}));
    sb.ok(
        "rename_at",
        json!({"source": "new.txt", "destination": "sub/renamed.txt"}),
    );
    sb.ok("mkdir_at", json!({"path": "made"}));
    sb.ok(
        "hard_link_at",
        json!({"existing": "a.txt", "link": "made/linked"}),
    );
    sb.ok("delete_at", json!({"path": "a.txt"}));
    let after = snapshot(&sb.granted());
    assert_eq!(after["sub/renamed.txt"], "fresher");
    assert_eq!(after["made/linked"], "inside-a");
    assert!(!after.contains_key("a.txt"));
    assert!(take_denials(&sb.logs).is_empty());
}

#[test]
fn without_a_policy_nothing_is_reachable() {
    let sb = Sandbox::new("no-policy", None);
    assert_eq!(sb.ok("ping", json!({})), "pong");
    assert_eq!(sb.ok("preopens", json!({})), json!([]));
    sb.refused("read_std", json!({"path": "/etc/passwd"}));
    sb.refused("read_at", json!({"path": "a.txt"}));
    // The host has variables (PATH at least); the guest sees none.
    assert!(std::env::var_os("PATH").is_some());
    assert_eq!(sb.ok("env_names", json!({})), json!([]));
    assert_eq!(sb.ok("env_var", json!({"name": "PATH"})), Value::Null);
    assert!(take_denials(&sb.logs).is_empty());

    // Raw sockets: a real listener on loopback is never reached.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let error = sb.refused("tcp_connect", json!({"address": address}));
    assert!(
        error.to_lowercase().contains("permission denied"),
        "{error}"
    );
    assert!(listener.accept().is_err(), "the guest reached the listener");
    let denials = take_denials(&sb.logs);
    assert_eq!(denials.len(), 1, "{denials:?}");
    assert_eq!(denials[0]["capability"], "sockets");
    assert_eq!(denials[0]["target"], format!("TcpConnect {address}"));

    let error = sb.refused("lookup", json!({"host": "localhost"}));
    assert!(
        error.to_lowercase().contains("permission denied"),
        "{error}"
    );
    let denials = take_denials(&sb.logs);
    assert_eq!(denials[0]["target"], "name lookup localhost");

    // Outbound HTTP: the interface is linked to a refusal that says how to grant it.
    let error = sb.refused("http_get", json!({"authority": address}));
    assert!(
        error.starts_with("permission denied: `wasi:http/"),
        "{error}"
    );
    assert!(error.contains("[network] allow"), "{error}");
    let denials = take_denials(&sb.logs);
    assert_eq!(denials[0]["capability"], "network");

    // The component's other tools still work after all that.
    assert_eq!(sb.ok("ping", json!({})), "pong");
}

#[test]
fn environment_grants_show_only_the_named_variables() {
    let sb = Sandbox::new(
        "env",
        Some("env = [\"HOME\", \"MCPPLUS_TEST_SURELY_UNSET\"]\n"),
    );
    let home = std::env::var("HOME").expect("HOME is set for the tests");
    assert_eq!(sb.ok("env_names", json!({})), json!(["HOME"]));
    assert_eq!(sb.ok("env_var", json!({"name": "HOME"})), json!(home));
    assert_eq!(sb.ok("env_var", json!({"name": "PATH"})), Value::Null);
}

#[test]
fn socket_grants_allow_exactly_the_listed_address() {
    let allowed = TcpListener::bind("127.0.0.1:0").unwrap();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    other.set_nonblocking(true).unwrap();
    let policy = format!(
        "[sockets]\nconnect = [\"{}\"]\n",
        allowed.local_addr().unwrap()
    );
    let sb = Sandbox::new("sockets", Some(&policy));
    sb.ok(
        "tcp_connect",
        json!({"address": allowed.local_addr().unwrap().to_string()}),
    );
    allowed.set_nonblocking(true).unwrap();
    assert!(
        allowed.accept().is_ok(),
        "the granted connection did not arrive"
    );
    sb.refused(
        "tcp_connect",
        json!({"address": other.local_addr().unwrap().to_string()}),
    );
    assert!(other.accept().is_err());
    assert_eq!(take_denials(&sb.logs).len(), 1);
}

mod path_resolution {
    //! Property: whatever path the guest asks for, a read either returns a file
    //! that lies inside the granted folder (reached without symlinks, since every
    //! planted symlink points out) or fails; and every path that stays inside
    //! lexically and names a plain file succeeds.

    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, PartialEq)]
    enum Expect {
        Content(&'static str),
        Refused,
    }

    /// The reference model of resolution against the granted root.
    fn model(segments: &[&str], absolute: bool) -> Expect {
        if absolute {
            return Expect::Refused;
        }
        // The granted tree: dirs "", "sub"; files a.txt, sub/b.txt; the rest are
        // symlinks pointing outside.
        let mut at: Vec<&str> = Vec::new();
        let mut file: Option<&'static str> = None;
        for seg in segments {
            if file.is_some() {
                return Expect::Refused; // anything after a file
            }
            match *seg {
                "" | "." => {}
                ".." => {
                    if at.pop().is_none() {
                        return Expect::Refused;
                    }
                }
                name => {
                    let here = at.join("/");
                    file = match (here.as_str(), name) {
                        ("", "a.txt") => Some("inside-a"),
                        ("sub", "b.txt") => Some("inside-b"),
                        ("", "sub") => {
                            at.push("sub");
                            None
                        }
                        _ => return Expect::Refused, // missing, or a symlink out
                    };
                }
            }
        }
        match file {
            Some(content) => Expect::Content(content),
            None => Expect::Refused, // a directory is not readable as a file
        }
    }

    /// Segments that wander (mostly staying inside), then a target that is a
    /// real file, a missing one, or a planted symlink; so both reads that must
    /// succeed and reads that must fail come up often.
    fn path_segments() -> impl Strategy<Value = Vec<&'static str>> {
        let wander = prop_oneof![
            4 => prop::sample::select(vec![".", "", "sub"]),
            2 => Just(".."),
            1 => prop::sample::select(vec!["planted", "escape_dir", "proc_link", "outside", "etc"]),
        ];
        let target = prop::sample::select(vec![
            "a.txt",
            "sub/b.txt",
            "b.txt",
            "../a.txt",
            "planted",
            "planted_abs",
            "escape_dir/secret.txt",
            "../outside/secret.txt",
            "proc_link/environ",
            "etc/passwd",
            "sub",
        ]);
        (prop::collection::vec(wander, 0..4), target).prop_map(|(mut segments, target)| {
            segments.extend(target.split('/'));
            segments
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
        #[test]
        fn reads_never_leave_the_granted_root(
            segments in path_segments(),
            absolute in prop::bool::weighted(0.1),
        ) {
            let sb = SANDBOX.get_or_init(|| Sandbox::new("path-prop", Some(READ_ONLY)));
            let path = format!("{}{}", if absolute { "/" } else { "" }, segments.join("/"));
            // A leading empty segment makes the path absolute too.
            let absolute = path.starts_with('/');
            let outcome = sb.call("read_at", json!({"path": path}));
            let got = if outcome.is_error {
                Expect::Refused
            } else {
                let text = outcome.structured.unwrap()["result"].as_str().unwrap().to_string();
                prop_assert!(text != SECRET, "{path} read the secret");
                match text.as_str() {
                    "inside-a" => Expect::Content("inside-a"),
                    "inside-b" => Expect::Content("inside-b"),
                    other => panic!("{path} read unexpected content {other:?}"),
                }
            };
            prop_assert_eq!(got, model(&segments, absolute), "path {:?}", path);
        }
    }

    static SANDBOX: std::sync::OnceLock<Sandbox> = std::sync::OnceLock::new();
}
