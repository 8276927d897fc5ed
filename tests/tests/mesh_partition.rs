//! A network partition between real nodes: the owner A and the workers B and
//! C each run in a network namespace this test creates, A joined to B and to
//! C by a veth pair (addresses from 198.18.0.0/15, the benchmarking range,
//! which is never routed off this machine). While B runs A's tasks, B's link
//! is cut (`ip link set … down`) for three leases, then restored.
//!
//! Asserted: B stops its attempts on its own within 2/3 of a lease plus a
//! renewal interval of the cut (`queue.remote_stopped`, `Fenced`); every task
//! completes once (C takes over); outcomes B finished during the cut are
//! answered `stale` once it can reach A again; executions never exceed
//! attempts. Needs root and iproute2; without them the test says so and
//! passes nothing off as tested (it returns early with a message).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mcpplus_queue::{NewTask, QueueStore, TaskState};
use mcpplus_tests::mesh::{check_executions, journal_executions, recorded_completions};
use mcpplus_tests::{Scratch, install_recorder, mcpplus_bin};
use serde_json::{Value, json};

const LEASE_MS: i64 = 3_000;
const TASKS: usize = 40;

fn ip(args: &[&str]) -> bool {
    Command::new("ip")
        .args(args)
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn must(args: &[&str]) {
    assert!(ip(args), "ip {}", args.join(" "));
}

/// The namespaces and links; removed on drop.
struct Net {
    names: Vec<String>,
}

impl Net {
    fn new(tag: &str) -> Self {
        let names: Vec<String> = ["a", "b", "c"]
            .iter()
            .map(|n| format!("mcpp-{tag}-{n}"))
            .collect();
        for n in &names {
            let _ = ip(&["netns", "del", n]);
            must(&["netns", "add", n]);
            must(&["-n", n, "link", "set", "lo", "up"]);
        }
        // a <-> b: 198.18.0.1/30 - .2 ; a <-> c: 198.18.0.5/30 - .6
        for (peer, (a_addr, p_addr), (a_if, p_if)) in [
            (
                &names[1],
                ("198.18.0.1/30", "198.18.0.2/30"),
                ("vab", "vba"),
            ),
            (
                &names[2],
                ("198.18.0.5/30", "198.18.0.6/30"),
                ("vac", "vca"),
            ),
        ] {
            must(&[
                "link", "add", a_if, "netns", &names[0], "type", "veth", "peer", "name", p_if,
                "netns", peer,
            ]);
            must(&["-n", &names[0], "addr", "add", a_addr, "dev", a_if]);
            must(&["-n", peer, "addr", "add", p_addr, "dev", p_if]);
            must(&["-n", &names[0], "link", "set", a_if, "up"]);
            must(&["-n", peer, "link", "set", p_if, "up"]);
        }
        Net { names }
    }

    fn set_b_link(&self, up: bool) {
        must(&[
            "-n",
            &self.names[1],
            "link",
            "set",
            "vba",
            if up { "up" } else { "down" },
        ]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = ip(&["netns", "del", n]);
        }
    }
}

struct Proc(Child, std::path::PathBuf);

impl Proc {
    fn running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }

    fn logs(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.1)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn ts_ms(v: &Value) -> i64 {
    // "2026-11-28T16:51:20.123Z" → ms since the epoch (UTC).
    let s = v["ts"].as_str().unwrap();
    let date: Vec<i64> = s[..10].split('-').map(|x| x.parse().unwrap()).collect();
    let (y, m, d) = (date[0], date[1], date[2]);
    let days = {
        // days from civil (Howard Hinnant)
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    };
    let h: i64 = s[11..13].parse().unwrap();
    let mi: i64 = s[14..16].parse().unwrap();
    let sec: f64 = s[17..s.len() - 1].parse().unwrap();
    days * 86_400_000 + (h * 3600 + mi * 60) * 1000 + (sec * 1000.0) as i64
}

fn peer_id(data: &Path) -> String {
    let out = Command::new(mcpplus_bin())
        .args(["peers", "id", "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn a_cut_worker_fences_itself_and_its_late_results_are_stale() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n");
    if !matches!(root, Ok(true)) || !ip(&["netns", "list"]) {
        eprintln!("SKIPPED: the partition test needs root and iproute2 (ip netns)");
        return;
    }
    let scratch = Scratch::new("mesh-partition");
    let tag = format!("{}", std::process::id() % 100_000);
    let net = Net::new(&tag);
    let dir = |n: &str, p: &str| scratch.join(&format!("{n}/{p}"));
    for n in ["a", "b", "c"] {
        std::fs::create_dir_all(dir(n, "tools")).unwrap();
        std::fs::create_dir_all(dir(n, "journal")).unwrap();
    }
    let ids: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|n| peer_id(&dir(n, "data")))
        .collect();
    for n in ["b", "c"] {
        install_recorder(&dir(n, "tools"), &dir(n, "journal"));
    }
    let base = format!(
        "[queue]\nworkers = 0\nlease_ms = {LEASE_MS}\npoll_ms = 100\n[mesh]\nmdns = false\nslots = 2\n"
    );
    let claim = |id: &str| format!("[mesh.peers.\"{id}\"]\nroles = [\"claim\"]\n");
    let connect = |id: &str| format!("[mesh.peers.\"{id}\"]\nroles = []\n");
    std::fs::write(
        dir("a", "mcpplus.toml"),
        format!("{base}{}{}", claim(&ids[1]), claim(&ids[2])),
    )
    .unwrap();
    std::fs::write(
        dir("b", "mcpplus.toml"),
        format!("{base}{}", connect(&ids[0])),
    )
    .unwrap();
    std::fs::write(
        dir("c", "mcpplus.toml"),
        format!("{base}{}", connect(&ids[0])),
    )
    .unwrap();

    let start = |ns: &str, n: &str, mesh: &[String]| {
        let log = dir(n, "log.jsonl");
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(mcpplus_bin())
            .args([
                "serve",
                "--http",
                "127.0.0.1:0",
                "--no-auth",
                "--no-admin",
                "--no-watch",
            ])
            .args(["--tools", dir(n, "tools").to_str().unwrap()])
            .args(["--data-dir", dir(n, "data").to_str().unwrap()])
            .args(["--config", dir(n, "mcpplus.toml").to_str().unwrap()])
            .args(["--log-file", log.to_str().unwrap()])
            .args(mesh)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Proc(child, log)
    };
    let mut a = start(
        &net.names[0],
        "a",
        &["--mesh-listen".into(), "/ip4/0.0.0.0/tcp/4001".into()],
    );
    let boot = |addr: &str| {
        vec![
            "--bootstrap".to_string(),
            format!("/ip4/{addr}/tcp/4001/p2p/{}", ids[0]),
        ]
    };
    let b = start(&net.names[1], "b", &boot("198.18.0.1"));

    // Submit beside A (its store accepts a second connection). B takes the
    // first two: one long (fenced by the cut), one short (finished during the
    // cut, so its outcome waits in B's outbox). C starts only after the cut
    // and takes over.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !a.logs().iter().any(|e| e["event"] == "mesh.ready") {
        assert!(
            Instant::now() < deadline && a.running(),
            "A did not join the mesh: {:?}",
            a.logs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let store = QueueStore::open(&dir("a", "data/queue.sqlite3")).unwrap();
    let tasks: Vec<NewTask> = (0..TASKS)
        .map(|i| NewTask {
            id: Some(format!("p{i:03}")),
            max_attempts: 50,
            backoff_ms: 10,
            ..NewTask::new(
                "note_execution",
                json!({"key": format!("p{i:03}"), "work_ms": if i % 2 == 0 { 6_000 } else { 800 }}),
            )
        })
        .collect();
    store.submit_batch(tasks, now_ms()).unwrap();

    // Wait until B runs something, then cut B off.
    let deadline = Instant::now() + Duration::from_secs(60);
    let running_on_b = || {
        b.logs()
            .iter()
            .filter(|e| e["event"] == "queue.remote_started")
            .count()
    };
    while running_on_b() < 2 {
        assert!(
            Instant::now() < deadline,
            "B never started a task; B logged: {:#?}\nA logged: {:#?}",
            b.logs().iter().rev().take(15).collect::<Vec<_>>(),
            a.logs().iter().rev().take(15).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(100));
    let cut_at = now_ms();
    net.set_b_link(false);
    let c = start(&net.names[2], "c", &boot("198.18.0.5"));
    std::thread::sleep(Duration::from_millis(3 * LEASE_MS as u64));
    net.set_b_link(true);
    let healed_at = now_ms();

    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let done: u64 = store
            .counts()
            .unwrap()
            .iter()
            .filter(|(s, _)| s.is_terminal())
            .map(|(_, n)| n)
            .sum();
        if done as usize == TASKS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not finished: {:?}",
            store.counts().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Let B deliver its outbox after the heal.
    let deadline = Instant::now() + Duration::from_secs(30);
    while b
        .logs()
        .iter()
        .filter(|e| e["event"] == "queue.remote_reported")
        .count()
        < b.logs()
            .iter()
            .filter(|e| e["event"] == "queue.remote_started")
            .count()
            - b.logs()
                .iter()
                .filter(|e| e["event"] == "queue.remote_stopped")
                .count()
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    // A logs each completion just after its store commits it: wait for the
    // last line before reading them (bounded; a missing one still fails below).
    let deadline = Instant::now() + Duration::from_secs(10);
    while recorded_completions(&a.logs()).len() < TASKS && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let (b_logs, a_logs) = (b.logs(), a.logs());
    drop((a, b, c));

    // Every task completed, once.
    let (all, _) = store.list(&Default::default(), 0, 1_000).unwrap();
    let completions = recorded_completions(&a_logs);
    for task in &all {
        assert_eq!(task.state, TaskState::Completed, "{task:?}");
        assert_eq!(
            completions.get(&task.id),
            Some(&1),
            "{}: {completions:?}",
            task.id
        );
    }
    // Executions never exceed attempts.
    let (journal_b, journal_c) = (
        dir("b", "journal/executions.log"),
        dir("c", "journal/executions.log"),
    );
    let executions = journal_executions(&[&journal_b, &journal_c]);
    check_executions(&executions, all.iter().map(|t| (t.id.as_str(), t.attempt)));
    // What B ran when the link went down: each attempt was either fenced
    // by B itself, in time, or finished during the cut and, delivered after
    // the heal, answered `stale` (C had run it again by then).
    let key = |e: &Value| {
        (
            e["task"].as_str().unwrap().to_string(),
            e["attempt"].as_u64().unwrap(),
        )
    };
    let at_cut: Vec<(String, u64)> = b_logs
        .iter()
        .filter(|e| e["event"] == "queue.remote_started" && ts_ms(e) < cut_at)
        .map(key)
        .collect();
    let fenced: Vec<&Value> = b_logs
        .iter()
        .filter(|e| e["event"] == "queue.remote_stopped" && e["why"] == "Fenced")
        .collect();
    let reported_late: Vec<&Value> = b_logs
        .iter()
        .filter(|e| e["event"] == "queue.remote_reported" && ts_ms(e) >= cut_at)
        .filter(|e| at_cut.contains(&key(e)))
        .collect();
    for e in &fenced {
        let after = ts_ms(e) - cut_at;
        assert!(
            (0..=LEASE_MS * 2 / 3 + LEASE_MS / 6 + 500).contains(&after),
            "B stopped {after} ms after the cut: {e}"
        );
    }
    for e in &reported_late {
        assert_eq!(
            e["settled"], "Stale",
            "an outcome finished during the cut: {e}"
        );
        assert!(ts_ms(e) >= healed_at, "reported while cut off: {e}");
    }
    eprintln!(
        "cut {} ms; B ran {at_cut:?} at the cut, fenced {} (after {:?} ms), {} answered stale after the heal",
        healed_at - cut_at,
        fenced.len(),
        fenced.iter().map(|e| ts_ms(e) - cut_at).collect::<Vec<_>>(),
        reported_late.len()
    );
    assert!(
        !fenced.is_empty(),
        "B fenced nothing; at the cut it ran {at_cut:?}"
    );
    assert!(
        !reported_late.is_empty(),
        "no outcome of B waited out the cut; at the cut it ran {at_cut:?}"
    );
}
