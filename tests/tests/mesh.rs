//! The mesh with real `mcpplus serve` processes on loopback: identities, and
//! three nodes sharing work. Node A accepts every task through `task_submit`
//! but runs none (no worker slots, and it does not host the tool); B and C
//! host the `recorder` fixture, which journals each execution, and pull A's
//! tasks over libp2p.
//!
//! Asserted: every task completes at A exactly once; each completion names
//! the peer that ran it (B or C); executions never exceed attempts; both B and
//! C ran a fair share; an unlisted node is refused and claims nothing, and a
//! listed node without the `claim` role is told why and runs nothing. And the
//! same with `kill -9` of the workers (10 times) and of the owner (5 times)
//! while the tasks run, restarting on the same data directories.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use mcpplus_queue::store::ListFilter;
use mcpplus_queue::{QueueStore, TaskState};
use mcpplus_tests::mesh::{check_executions, journal_executions, recorded_completions};
use mcpplus_tests::{HttpServer, Scratch, install_recorder, install_task_queue, mcpplus_bin};
use rmcp::ServiceExt as _;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::{Value, json};

const TASKS: usize = 2_000;
const LEASE_MS: u64 = 3_000;

/// `mcpplus ARGS…`, which must succeed: its standard output.
fn run_ok(args: &[&str]) -> String {
    let out = Command::new(mcpplus_bin())
        .args(args)
        .output()
        .expect("run mcpplus");
    assert!(
        out.status.success(),
        "mcpplus {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn peer_id(data_dir: &Path) -> String {
    run_ok(&["peers", "id", "--data-dir", data_dir.to_str().unwrap()])
        .trim()
        .to_string()
}

#[test]
fn peers_id_creates_a_private_key_once_and_prints_the_same_id() {
    use std::os::unix::fs::PermissionsExt as _;
    let scratch = Scratch::new("mesh-id");
    let data = scratch.join("data");
    let first = peer_id(&data);
    assert!(first.starts_with("12D3KooW"), "{first}");
    assert_eq!(peer_id(&data), first);
    let mode = std::fs::metadata(data.join("identity.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

/// A node's folder: tools, data, config, journal.
struct Node {
    scratch_dir: std::path::PathBuf,
    id: String,
}

impl Node {
    fn new(scratch: &Scratch, name: &str) -> Self {
        let dir = scratch.join(name);
        std::fs::create_dir_all(dir.join("tools")).unwrap();
        std::fs::create_dir_all(dir.join("journal")).unwrap();
        let id = peer_id(&dir.join("data"));
        Node {
            scratch_dir: dir,
            id,
        }
    }

    fn path(&self, p: &str) -> String {
        self.scratch_dir.join(p).to_str().unwrap().to_string()
    }

    fn host_recorder(&self) {
        install_recorder(
            &self.scratch_dir.join("tools"),
            &self.scratch_dir.join("journal"),
        );
    }

    fn host_task_queue(&self) {
        install_task_queue(&self.scratch_dir.join("tools"));
    }

    /// `peers`: (peer id, roles) allowed here.
    fn configure(&self, workers: u32, peers: &[(&str, &str)]) {
        let mut text = format!(
            "[queue]\nworkers = {workers}\nlease_ms = {LEASE_MS}\npoll_ms = 100\n\n[mesh]\nmdns = false\nslots = 4\n"
        );
        for (id, roles) in peers {
            text.push_str(&format!("\n[mesh.peers.\"{id}\"]\nroles = {roles}\n"));
        }
        std::fs::write(self.scratch_dir.join("mcpplus.toml"), text).unwrap();
    }

    fn start(&self, mesh: &[&str]) -> HttpServer {
        self.start_with_admin(None, mesh)
    }

    /// Started with its admin socket at `socket` (none: `--no-admin`).
    fn start_with_admin(&self, socket: Option<&Path>, mesh: &[&str]) -> HttpServer {
        let (tools, data, config) = (
            self.path("tools"),
            self.path("data"),
            self.path("mcpplus.toml"),
        );
        let socket = socket.map(|s| s.to_str().unwrap().to_string());
        let mut args = vec![
            "--tools",
            &tools,
            "--data-dir",
            &data,
            "--config",
            &config,
            "--no-watch",
        ];
        match &socket {
            Some(path) => args.extend(["--admin-socket", path.as_str()]),
            None => args.push("--no-admin"),
        }
        args.extend_from_slice(mesh);
        HttpServer::start(&args)
    }

    fn journal_path(&self) -> std::path::PathBuf {
        self.scratch_dir.join("journal/executions.log")
    }

    fn journal(&self) -> Vec<String> {
        std::fs::read_to_string(self.journal_path())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// `task_submit` one `note_execution` task per id (the key is the id).
async fn submit_recorder_tasks(
    client: &rmcp::service::RunningService<rmcp::RoleClient, ()>,
    ids: &[String],
    work_ms: u32,
) {
    for id in ids {
        let args = json!({
            "task_id": id, "task_type": "note_execution",
            "payload": {"key": id, "work_ms": work_ms},
            "retry_policy": {"max_retries": 100, "backoff_ms": 10},
        });
        let answer = client
            .call_tool(
                CallToolRequestParams::new("task_submit")
                    .with_arguments(args.as_object().cloned().unwrap()),
            )
            .await
            .expect("task_submit");
        assert_ne!(answer.is_error, Some(true), "{answer:?}");
    }
}

fn mesh_address(server: &HttpServer) -> String {
    server
        .startup
        .iter()
        .find_map(|l| l.strip_prefix("mcpplus: mesh listening on "))
        .expect("the node prints its mesh address")
        .trim()
        .to_string()
}

fn events(lines: &[String], name: &str) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_the_work_of_one_owner() {
    let scratch = Scratch::new("mesh-three");
    let (a, b, c, stranger, no_role) = (
        Node::new(&scratch, "a"),
        Node::new(&scratch, "b"),
        Node::new(&scratch, "c"),
        Node::new(&scratch, "stranger"),
        Node::new(&scratch, "no-role"),
    );
    a.host_task_queue();
    for worker in [&b, &c, &stranger, &no_role] {
        worker.host_recorder();
    }
    let claim = r#"["claim"]"#;
    // `no_role` may connect to A but not run its tasks.
    a.configure(0, &[(&b.id, claim), (&c.id, claim), (&no_role.id, "[]")]);
    for worker in [&b, &c, &no_role] {
        worker.configure(0, &[(&a.id, "[]")]);
    }
    // Lists A, but A does not list it.
    stranger.configure(0, &[(&a.id, "[]")]);

    let server_a = a.start(&["--mesh-listen", "/ip4/127.0.0.1/tcp/0"]);
    let address = mesh_address(&server_a);
    assert!(address.ends_with(&format!("/p2p/{}", a.id)), "{address}");
    let server_b = b.start(&["--bootstrap", &address]);
    let server_c = c.start(&["--bootstrap", &address]);
    let server_stranger = stranger.start(&["--bootstrap", &address]);
    let server_no_role = no_role.start(&["--bootstrap", &address]);

    let client = ()
        .serve(StreamableHttpClientTransport::from_uri(
            server_a.url.clone(),
        ))
        .await
        .expect("connect to A");
    let ids: Vec<String> = (0..TASKS).map(|i| format!("m{i:04}")).collect();
    submit_recorder_tasks(&client, &ids, 5).await;

    // Wait until A's queue says every task finished (read beside the server).
    let store = QueueStore::open(Path::new(&a.path("data/queue.sqlite3"))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let counts: std::collections::HashMap<TaskState, u64> =
            store.counts().unwrap().into_iter().collect();
        let finished = counts[&TaskState::Completed] + counts[&TaskState::Failed];
        if finished as usize == TASKS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not all tasks finished in time: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (tasks, total) = store.list(&ListFilter::default(), 0, 10_000).unwrap();
    assert_eq!(total as usize, TASKS);
    let mut by_peer: BTreeMap<String, usize> = BTreeMap::new();
    for task in &tasks {
        assert_eq!(task.state, TaskState::Completed, "{task:?}");
        let peer = task.remote_peer.clone().expect("run by a peer");
        assert!(peer == b.id || peer == c.id, "run by {peer}");
        assert!(
            task.worker
                .as_deref()
                .unwrap()
                .starts_with(&format!("{peer}/")),
            "the completion names its worker: {task:?}"
        );
        *by_peer.entry(peer).or_default() += 1;
    }
    // Executions, from both journals: every task ran, never more often than it was attempted.
    let executions = journal_executions(&[&b.journal_path(), &c.journal_path()]);
    check_executions(
        &executions,
        tasks.iter().map(|t| (t.id.as_str(), t.attempt)),
    );
    for (peer, n) in &by_peer {
        assert!(
            *n * 4 >= TASKS,
            "{peer} ran only {n} of {TASKS}: {by_peer:?}"
        );
    }
    eprintln!("tasks run per peer: {by_peer:?}");
    assert!(stranger.journal().is_empty(), "an unlisted node ran tasks");
    assert!(
        no_role.journal().is_empty(),
        "a node without `claim` ran tasks"
    );

    // Per-peer counters on A's /metrics (peers are bounded by the allow-list).
    let metrics_url = server_a.url.replace("/mcp", "/metrics");
    let metrics = reqwest::get(&metrics_url)
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (peer, answer) in [
        (&b.id, "granted"),
        (&c.id, "settled"),
        (&no_role.id, "denied"),
    ] {
        let line = format!("mcpplus_mesh_requests_total{{peer=\"{peer}\",answer=\"{answer}\"}}");
        assert!(metrics.contains(&line), "no {line} in:\n{metrics}");
    }
    let logs_a = server_a.kill_and_collect_logs();
    let logged: Vec<Value> = logs_a
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    for (task, n) in recorded_completions(&logged) {
        assert_eq!(n, 1, "{task} was recorded completed {n} times");
    }
    let denied = events(&logs_a, "mesh.peer_denied");
    assert!(
        denied.iter().any(|e| e["peer"] == stranger.id.as_str()),
        "the unlisted node was not reported: {denied:?}"
    );
    // Its one warning may come before it listens on HTTP (the mesh starts
    // first), or still be on its way out when A's work is done.
    let mut no_role_logs = server_no_role.startup.clone();
    if events(&no_role_logs, "mesh.request_denied").is_empty() {
        no_role_logs
            .extend(server_no_role.read_logs_until("mesh.request_denied", Duration::from_secs(30)));
    }
    no_role_logs.extend(server_no_role.kill_and_collect_logs());
    let refused = events(&no_role_logs, "mesh.request_denied");
    assert!(
        refused.len() == 1
            && refused[0]["error"]
                .as_str()
                .unwrap()
                .contains("roles = [\"claim\"]"),
        "the node without `claim` is told once, with what to add: {refused:?}"
    );
    drop((server_b, server_c, server_stranger));
}

/// A free loopback TCP port (so a restarted owner comes back where its
/// workers expect it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn completions(lines: &[String], into: &mut BTreeMap<String, usize>) {
    let logged: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    for (task, n) in recorded_completions(&logged) {
        *into.entry(task).or_default() += n;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_workers_and_owner_loses_nothing_and_completes_nothing_twice() {
    const CRASH_TASKS: usize = 400;
    const WORKER_KILLS: usize = 10;
    const OWNER_KILLS: usize = 5;
    let scratch = Scratch::new("mesh-crash");
    let (a, b, c) = (
        Node::new(&scratch, "a"),
        Node::new(&scratch, "b"),
        Node::new(&scratch, "c"),
    );
    a.host_task_queue();
    b.host_recorder();
    c.host_recorder();
    let claim = r#"["claim"]"#;
    a.configure(0, &[(&b.id, claim), (&c.id, claim)]);
    b.configure(0, &[(&a.id, "[]")]);
    c.configure(0, &[(&a.id, "[]")]);
    let listen = format!("/ip4/127.0.0.1/tcp/{}", free_port());
    let address = format!("{listen}/p2p/{}", a.id);

    let mut owner = Some(a.start(&["--mesh-listen", &listen]));
    let client = ()
        .serve(StreamableHttpClientTransport::from_uri(
            owner.as_ref().unwrap().url.clone(),
        ))
        .await
        .expect("connect to A");
    let ids: Vec<String> = (0..CRASH_TASKS).map(|i| format!("k{i:04}")).collect();
    submit_recorder_tasks(&client, &ids, 250).await;
    drop(client);

    let mut workers = [
        Some(b.start(&["--bootstrap", &address])),
        Some(c.start(&["--bootstrap", &address])),
    ];
    let mut completed = BTreeMap::new();
    // Kills at random moments, workers and owner interleaved.
    let mut kills: Vec<&str> = [vec!["worker"; WORKER_KILLS], vec!["owner"; OWNER_KILLS]].concat();
    fastrand::shuffle(&mut kills);
    for kill in kills {
        tokio::time::sleep(Duration::from_millis(fastrand::u64(200..1_500))).await;
        if kill == "owner" {
            let killed = owner.take().unwrap();
            completions(&killed.kill_and_collect_logs(), &mut completed);
            owner = Some(a.start(&["--mesh-listen", &listen]));
        } else {
            let which = fastrand::usize(..2);
            drop(workers[which].take());
            let node = if which == 0 { &b } else { &c };
            workers[which] = Some(node.start(&["--bootstrap", &address]));
        }
    }

    let store = QueueStore::open(Path::new(&a.path("data/queue.sqlite3"))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let done = store
            .counts()
            .unwrap()
            .into_iter()
            .filter(|(s, _)| s.is_terminal())
            .map(|(_, n)| n)
            .sum::<u64>();
        if done as usize == CRASH_TASKS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tasks still open: {:?}",
            store.counts().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    completions(
        &owner.take().unwrap().kill_and_collect_logs(),
        &mut completed,
    );
    drop(workers);

    let (tasks, total) = store.list(&ListFilter::default(), 0, 10_000).unwrap();
    assert_eq!(total as usize, CRASH_TASKS, "no accepted task is lost");
    let executions = journal_executions(&[&b.journal_path(), &c.journal_path()]);
    for task in &tasks {
        assert_eq!(task.state, TaskState::Completed, "{task:?}");
    }
    let extra = check_executions(
        &executions,
        tasks.iter().map(|t| (t.id.as_str(), t.attempt)),
    );
    for (task, n) in &completed {
        assert_eq!(*n, 1, "{task} was recorded completed {n} times");
    }
    eprintln!(
        "{CRASH_TASKS} tasks, {WORKER_KILLS} worker and {OWNER_KILLS} owner kills: {extra} extra executions"
    );
    // A killed worker loses at most its 4 slots' attempts; a killed owner at
    // most the attempts of both workers that fenced while it was down.
    let bound = WORKER_KILLS as u32 * 4 + OWNER_KILLS as u32 * 8;
    assert!(
        extra <= bound,
        "{extra} extra executions, more than {bound}"
    );
}

#[test]
fn audit_shows_the_node_id_its_addresses_and_every_allowed_peer_with_roles() {
    let scratch = Scratch::new("mesh-audit");
    let (a, b) = (Node::new(&scratch, "a"), Node::new(&scratch, "b"));
    a.host_task_queue();
    a.configure(0, &[(&b.id, r#"["claim", "submit"]"#)]);
    let config = a.path("mcpplus.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "[mesh]\n",
            "[mesh]\nlisten = [\"/ip4/127.0.0.1/tcp/4001\"]\n",
        ),
    )
    .unwrap();
    let (tools, data) = (a.path("tools"), a.path("data"));
    let report: Value = serde_json::from_str(&run_ok(&[
        "audit",
        "--json",
        "--tools",
        &tools,
        "--config",
        &config,
        "--data-dir",
        &data,
    ]))
    .unwrap();
    let mesh = &report["mesh"];
    assert_eq!(mesh["peerId"], a.id.as_str());
    assert_eq!(mesh["listen"], json!(["/ip4/127.0.0.1/tcp/4001"]));
    assert_eq!(mesh["pnet"], "off");
    assert_eq!(mesh["federate"], false);
    assert_eq!(
        mesh["peers"],
        json!([{"peerId": b.id, "roles": ["claim", "submit"]}])
    );

    // A private network: the audit shows the key's fingerprint, never the key.
    let key_file = a.path("swarm.key");
    let made = Command::new(mcpplus_bin())
        .args(["peers", "psk", &key_file])
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let made = String::from_utf8(made.stdout).unwrap();
    let fingerprint = made
        .split("fingerprint ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .expect("the fingerprint is printed")
        .to_string();
    let key_text = std::fs::read_to_string(&key_file).unwrap();
    let hex = key_text.lines().last().unwrap().to_string();
    assert_eq!(hex.len(), 64, "{key_text}");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "[mesh]\n",
            &format!("[mesh]\npsk_file = \"{key_file}\"\nfederate = true\n"),
        ),
    )
    .unwrap();
    let text = Command::new(mcpplus_bin())
        .args(["audit", "--tools", &a.path("tools"), "--config", &config])
        .output()
        .unwrap();
    let text = String::from_utf8(text.stdout).unwrap();
    assert!(
        text.contains(&format!("peer         {}  (claim, submit)", b.id)),
        "{text}"
    );
    assert!(text.contains("unknown (pass --data-dir DIR)"), "{text}");
    assert!(
        text.contains(&format!("pnet         on (fingerprint {fingerprint})")),
        "{text}"
    );
    assert!(text.contains("federate     on"), "{text}");
    assert!(!text.contains(&hex), "the audit must not print the key");
    // A second key never overwrites the first.
    let again = Command::new(mcpplus_bin())
        .args(["peers", "psk", &key_file])
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert_eq!(std::fs::read_to_string(&key_file).unwrap(), key_text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_list_shows_each_allowed_peer_its_state_roles_and_latency() {
    let scratch = Scratch::new("mesh-peers");
    let (a, b, absent) = (
        Node::new(&scratch, "a"),
        Node::new(&scratch, "b"),
        Node::new(&scratch, "absent"),
    );
    b.host_recorder();
    a.configure(0, &[(&b.id, r#"["claim"]"#), (&absent.id, "[]")]);
    b.configure(0, &[(&a.id, "[]")]);
    let socket = scratch.join("a.sock");
    let (tools, data, config) = (a.path("tools"), a.path("data"), a.path("mcpplus.toml"));
    let server_a = HttpServer::start(&[
        "--tools",
        &tools,
        "--data-dir",
        &data,
        "--config",
        &config,
        "--no-watch",
        "--admin-socket",
        socket.to_str().unwrap(),
        "--mesh-listen",
        "/ip4/127.0.0.1/tcp/0",
    ]);
    let _server_b = b.start(&["--bootstrap", &mesh_address(&server_a)]);
    let list = || {
        let socket = socket.to_str().unwrap();
        let reply: Value = serde_json::from_str(&run_ok(&[
            "peers",
            "list",
            "--json",
            "--admin-socket",
            socket,
        ]))
        .unwrap();
        reply["peers"].as_array().unwrap().clone()
    };
    // B connects and is pinged (libp2p pings at once on a new connection).
    let deadline = Instant::now() + Duration::from_secs(30);
    let peers = loop {
        let peers = list();
        let b_seen = peers
            .iter()
            .find(|p| p["peerId"] == b.id.as_str())
            .cloned()
            .unwrap();
        if b_seen["connected"] == true && b_seen["latencyMs"].is_number() {
            break peers;
        }
        assert!(
            Instant::now() < deadline,
            "B never showed connected with a latency: {peers:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(peers.len(), 2, "{peers:?}");
    let b_seen = peers.iter().find(|p| p["peerId"] == b.id.as_str()).unwrap();
    assert_eq!(b_seen["roles"], json!(["claim"]));
    assert!(b_seen["latencyMs"].as_f64().unwrap() > 0.0);
    assert!(
        b_seen["agentVersion"]
            .as_str()
            .unwrap()
            .starts_with("mcpplus/")
    );
    let absent_seen = peers
        .iter()
        .find(|p| p["peerId"] == absent.id.as_str())
        .unwrap();
    assert_eq!(absent_seen["connected"], false);
    assert_eq!(absent_seen["roles"], json!([]));
    // The table form names the same peers.
    let out = Command::new(mcpplus_bin())
        .args(["peers", "--admin-socket", socket.to_str().unwrap()])
        .output()
        .unwrap();
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains(&b.id) && table.contains("connected") && table.contains("claim"),
        "{table}"
    );
    assert!(
        table.contains(&absent.id) && table.contains("known"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_started_before_its_owner_connects_once_the_owner_is_up() {
    let scratch = Scratch::new("mesh-order");
    let (a, b) = (Node::new(&scratch, "a"), Node::new(&scratch, "b"));
    a.host_task_queue();
    b.host_recorder();
    a.configure(0, &[(&b.id, r#"["claim"]"#)]);
    b.configure(0, &[(&a.id, "[]")]);
    let listen = format!("/ip4/127.0.0.1/tcp/{}", free_port());
    let _server_b = b.start(&["--bootstrap", &format!("{listen}/p2p/{}", a.id)]);
    // B's first dial fails: nobody listens yet.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let server_a = a.start(&["--mesh-listen", &listen]);
    let client = ()
        .serve(StreamableHttpClientTransport::from_uri(
            server_a.url.clone(),
        ))
        .await
        .expect("connect to A");
    let ids: Vec<String> = (0..20).map(|i| format!("o{i:02}")).collect();
    submit_recorder_tasks(&client, &ids, 5).await;
    let store = QueueStore::open(Path::new(&a.path("data/queue.sqlite3"))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let completed = store
            .counts()
            .unwrap()
            .into_iter()
            .find(|(s, _)| *s == TaskState::Completed)
            .map_or(0, |(_, n)| n);
        if completed == 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "B did not pull after A came up: {:?}",
            store.counts().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `mcpplus peers submit` through `socket`: (success, stdout, stderr).
fn peers_submit(
    socket: &Path,
    peer: &str,
    tool: &str,
    arguments: &Value,
) -> (bool, String, String) {
    let out = Command::new(mcpplus_bin())
        .args(["peers", "submit", peer, tool, "--arguments"])
        .arg(arguments.to_string())
        .arg("--admin-socket")
        .arg(socket)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_submits_to_another_queue_only_with_the_submit_role() {
    let scratch = Scratch::new("mesh-submit");
    let (a, b) = (Node::new(&scratch, "a"), Node::new(&scratch, "b"));
    b.host_recorder();
    // B lets A submit; A lets B claim but not submit.
    a.configure(0, &[(&b.id, r#"["claim"]"#)]);
    b.configure(2, &[(&a.id, r#"["submit"]"#)]);
    let (socket_a, socket_b) = (scratch.join("a.sock"), scratch.join("b.sock"));
    let server_a = a.start_with_admin(Some(&socket_a), &["--mesh-listen", "/ip4/127.0.0.1/tcp/0"]);
    let address = mesh_address(&server_a);
    let _server_b = b.start_with_admin(Some(&socket_b), &["--bootstrap", &address]);

    // A → B: accepted, owned and run by B.
    let arguments = json!({"key": "pushed", "work_ms": 0});
    let deadline = Instant::now() + Duration::from_secs(30);
    let accepted = loop {
        let (ok, out, err) = peers_submit(&socket_a, &b.id, "note_execution", &arguments);
        if ok {
            break out;
        }
        // Until B has connected, A cannot reach it.
        assert!(err.contains("cannot reach"), "{err}");
        assert!(Instant::now() < deadline, "A never reached B: {err}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        accepted.contains(&format!("{} accepted task", b.id)),
        "{accepted}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !b.journal().contains(&"pushed".to_string()) {
        assert!(Instant::now() < deadline, "B never ran the pushed task");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let store = QueueStore::open(Path::new(&b.path("data/queue.sqlite3"))).unwrap();
    let (tasks, _) = store.list(&ListFilter::default(), 0, 10).unwrap();
    assert_eq!(tasks.len(), 1);
    assert_eq!(tasks[0].metadata["submitted_by"], a.id.as_str());

    // B → A: refused, naming the role to add; nothing queued at A.
    let (ok, _, err) = peers_submit(&socket_b, &a.id, "note_execution", &arguments);
    assert!(!ok);
    assert!(
        err.contains("may not submit tasks") && err.contains("\"submit\""),
        "{err}"
    );
    let store = QueueStore::open(Path::new(&a.path("data/queue.sqlite3"))).unwrap();
    assert_eq!(store.list(&ListFilter::default(), 0, 10).unwrap().1, 0);
    let logs = server_a.kill_and_collect_logs();
    assert!(
        events(&logs, "mesh.request_refused")
            .iter()
            .any(|e| e["peer"] == b.id.as_str()),
        "A logs the refusal"
    );
}
