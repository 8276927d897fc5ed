//! Render the raw results as the markdown table in docs/benchmarks.md.

use serde_json::Value;

pub fn markdown(r: &Value) -> String {
    let m = &r["machine"];
    let mut out = String::new();
    out.push_str("# Benchmarks\n\n");
    out.push_str("Produced by `scripts/bench.sh` (release build; raw numbers in `bench/results/latest.json`).\n");
    out.push_str(
        "Every ratio compares numbers measured in the same run. These machines are shared and\n",
    );
    out.push_str("noisy: rerun before drawing conclusions from small differences.\n\n");
    out.push_str(&format!(
        "Machine: {} ({} cores), Linux {}, {}; measured {}.\n\n",
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        m["kernel"].as_str().unwrap_or("?"),
        m["rustc"].as_str().unwrap_or("?"),
        m["date"].as_str().unwrap_or("?")
    ));

    out.push_str(&targets(r));
    out.push_str("## Echo latency and throughput (raw JSON-RPC client)\n\n");
    out.push_str("The `echo` tool of the bundled `showcase` component, against the same tool served natively by\n");
    out.push_str("rmcp (`native-echo`, the floor). stdio uses the 2025-11-25 handshake; HTTP sends stateless\n");
    out.push_str(
        "2026-07-28 requests. Server CPU per call: all the server's threads' CPU time during\n",
    );
    out.push_str("the run divided by the calls, less sensitive to a busy machine than wall-clock figures.\n\n");
    out.push_str("| transport | concurrency | native p50 µs | mcpplus p50 µs | ratio p50 | native p99 µs | mcpplus p99 µs | native calls/s | mcpplus calls/s | ratio calls/s | server CPU per call µs, native / mcpplus |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n");
    let rows = r["latency"].as_array().cloned().unwrap_or_default();
    for transport in ["stdio", "http"] {
        for c in [1, 16, 64] {
            let find = |server: &str| {
                rows.iter()
                    .find(|x| {
                        x["server"] == server
                            && x["transport"] == transport
                            && x["concurrency"] == c
                    })
                    .cloned()
            };
            if let (Some(n), Some(w)) = (find("native"), find("mcpplus")) {
                let f = |v: &Value, k: &str| v[k].as_f64().unwrap_or(f64::NAN);
                let cpu = match (
                    n["server_cpu_per_call_us"].as_f64(),
                    w["server_cpu_per_call_us"].as_f64(),
                ) {
                    (Some(a), Some(b)) => format!("{a:.1} / {b:.1}"),
                    _ => "–".into(),
                };
                out.push_str(&format!(
                    "| {transport} | {c} | {:.0} | {:.0} | {:.2}x | {:.0} | {:.0} | {:.0} | {:.0} | {:.2}x | {cpu} |\n",
                    f(&n, "p50_us"), f(&w, "p50_us"), f(&w, "p50_us") / f(&n, "p50_us"),
                    f(&n, "p99_us"), f(&w, "p99_us"), f(&n, "calls_per_s"), f(&w, "calls_per_s"),
                    f(&w, "calls_per_s") / f(&n, "calls_per_s")
                ));
            }
        }
    }

    out.push_str("\n## Instantiate-and-call inside the host (no protocol)\n\n");
    out.push_str(
        "A fresh `Store` and instance per call, as in serving. `Pre` = from the component's\n",
    );
    out.push_str("`InstancePre`; `Relink` = imports resolved through a linker on every call.\n\n");
    out.push_str("| component | tool | allocator | instantiation | p50 µs | mean µs |\n|---|---|---|---|---:|---:|\n");
    for x in r["in_host"].as_array().cloned().unwrap_or_default() {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} | {:.1} |\n",
            x["component"].as_str().unwrap_or(""),
            x["tool"].as_str().unwrap_or(""),
            x["allocator"].as_str().unwrap_or(""),
            x["instantiation"].as_str().unwrap_or(""),
            x["p50_us"].as_f64().unwrap_or(f64::NAN),
            x["mean_us"].as_f64().unwrap_or(f64::NAN)
        ));
    }

    out.push_str("\n## Start-up to the first `tools/list` (stdio, process spawn included)\n\n");
    out.push_str("| tool set | tools | cold (empty cache) ms | warm (cache hit) ms, median of 7 | compile time per component, ms |\n|---|---:|---:|---:|---|\n");
    for x in r["startup"].as_array().cloned().unwrap_or_default() {
        let compile: Vec<String> = x["compile_ms"]
            .as_object()
            .map(|o| o.iter().map(|(k, v)| format!("{k} {v}")).collect())
            .unwrap_or_default();
        out.push_str(&format!(
            "| {} | {} | {:.0} | {:.1} | {} |\n",
            x["set"].as_str().unwrap_or(""),
            x["tools"],
            x["cold_ms"].as_f64().unwrap_or(f64::NAN),
            x["warm_ms_median_of_7"].as_f64().unwrap_or(f64::NAN),
            compile.join(", ")
        ));
    }

    let mem = &r["memory"];
    out.push_str("\n## Resident memory (VmRSS)\n\n| what | KiB |\n|---|---:|\n");
    out.push_str(&format!(
        "| native-echo, idle | {} |\n",
        mem["native_echo_idle_kib"]
    ));
    out.push_str(&format!(
        "| mcpplus, no tools, idle | {} |\n",
        mem["mcpplus_no_tools_idle_kib"]
    ));
    out.push_str(&format!(
        "| mcpplus, bundled tools, idle | {} |\n",
        mem["mcpplus_bundled_idle_kib"]
    ));
    for (k, v) in mem["per_component_kib"]
        .as_object()
        .cloned()
        .unwrap_or_default()
    {
        out.push_str(&format!("| + per loaded component: {k} | {v} |\n"));
    }
    out.push_str(&format!(
        "| + per concurrent instance (16 sleeping guests) | {:.0} |\n",
        mem["per_concurrent_instance_kib"]
            .as_f64()
            .unwrap_or(f64::NAN)
    ));
    out.push_str(&reload(&r["reload"]));
    out.push_str(&logging(&r["logging"]));
    out.push_str(&outbound(&r["outbound"]));
    out.push_str(&queue(&r["queue"]));
    out.push_str(&queue_postgres(
        &r["queue_postgres"],
        &r["queue"]["workflow"],
    ));
    out.push_str(&mesh(&r["mesh"]));
    out
}

/// The queue on PostgreSQL beside SQLite (same run); `sqlite_workflow` is
/// the workflow benchmark on SQLite, when the queue scenario ran too.
fn queue_postgres(r: &Value, sqlite_workflow: &Value) -> String {
    if r.is_null() {
        return String::new();
    }
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let mut out = format!(
        "\n## The queue on PostgreSQL, beside SQLite\n\n\
         `[queue] backend = \"postgres\"` against the default SQLite file, same run: a throw-away\n\
         PostgreSQL 15 on loopback started by `scripts/bench.sh` (fsync on, so both answer a submit\n\
         only once it is durable), on the same 2 cores as the bench. {} submits per row.\n\n\
         | submitters at once | SQLite submits/s | PostgreSQL submits/s | PostgreSQL / SQLite |\n|---:|---:|---:|---:|\n",
        r["submits"]
    );
    for row in r["submit_per_s"].as_array().cloned().unwrap_or_default() {
        out.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.2}x |\n",
            row["submitters"],
            f(&row["sqlite"]),
            f(&row["postgres"]),
            f(&row["postgres"]) / f(&row["sqlite"])
        ));
    }
    let s = &r["submit_to_complete"];
    out.push_str(&format!(
        "\nSubmit to completed, `echo`, two in-process worker slots, one task at a time ({} tasks):\n\n\
         | backend | p50 ms | p99 ms |\n|---|---:|---:|\n\
         | SQLite | {:.2} | {:.2} |\n| PostgreSQL | {:.2} | {:.2} |\n",
        s["tasks"],
        f(&s["sqlite"]["p50_ms"]),
        f(&s["sqlite"]["p99_ms"]),
        f(&s["postgres"]["p50_ms"]),
        f(&s["postgres"]["p99_ms"])
    ));
    let nodes = &r["nodes"];
    out.push_str(&format!(
        "\n{} `echo` tasks submitted at once to nodes (`mcpplus serve`, {} slots each) sharing one\n\
         database; nodes, PostgreSQL and the bench share the 2 cores, so this shows that nodes add up\n\
         without conflicts, not how far they would scale on their own machines:\n\n\
         | nodes | tasks/s | vs one node |\n|---:|---:|---:|\n",
        nodes["tasks"], nodes["slots_per_node"]
    ));
    let rates = nodes["rates"].as_array().cloned().unwrap_or_default();
    let one = rates
        .first()
        .map(|r| f(&r["tasks_per_s"]))
        .unwrap_or(f64::NAN);
    for row in rates {
        out.push_str(&format!(
            "| {} | {:.0} | {:.2}x |\n",
            row["nodes"],
            f(&row["tasks_per_s"]),
            f(&row["tasks_per_s"]) / one
        ));
    }
    out.push_str(&workflows_by_backend(sqlite_workflow, &r["workflow"]));
    out
}

/// The workflow benchmark (see [`workflows`]) on each backend.
fn workflows_by_backend(sqlite: &Value, postgres: &Value) -> String {
    if postgres.is_null() {
        return String::new();
    }
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let cell = |w: &Value, key: &str, digits: usize| {
        if w.is_null() {
            "–".to_string()
        } else {
            format!("{:.digits$}", f(&w[key]))
        }
    };
    let rows = [
        ("raw queue, one batch of `echo` tasks (s)", "raw_batch_s", 2),
        ("workflow map of as many items (s)", "map_s", 2),
        ("map ÷ raw", "map_over_raw", 2),
        (
            "chain: dependency finished → dependent started, p50 (ms)",
            "chain_gap_p50_ms",
            1,
        ),
        ("chain: same, p99 (ms)", "chain_gap_p99_ms", 1),
        (
            "`workflow_submit` of 1,000 steps, p50 of 5 (ms)",
            "submit_1000_steps_ms",
            1,
        ),
    ];
    let mut out = format!(
        "\nWorkflows on each backend (the workflow benchmark below, {} items, {} chain steps, {} slots;\n\
         the PostgreSQL controller sends its statements one at a time to the database):\n\n\
         | measure | SQLite | PostgreSQL |\n|---|---:|---:|\n",
        postgres["items"], postgres["chain_steps"], postgres["slots"]
    );
    for (label, key, digits) in rows {
        out.push_str(&format!(
            "| {label} | {} | {} |\n",
            cell(sqlite, key, digits),
            cell(postgres, key, digits)
        ));
    }
    out
}

/// Hand-written sections of docs/benchmarks.md (authoring times, conformance
/// results: figures other scripts measure), kept like the side-by-side one.
pub const HAND_BEGIN: &str = "<!-- hand-written:begin -->";
pub const HAND_END: &str = "<!-- hand-written:end -->";

/// `report` with the marked sections of `previous` (the file being replaced)
/// appended: the hand-written one, then the side-by-side one (written by
/// scripts/bench-peers.sh). This run does not produce them, so rewriting the
/// file must not drop them.
pub fn keep_marked_sections(mut report: String, previous: &str) -> String {
    for (begin, end) in [
        (HAND_BEGIN, HAND_END),
        (crate::peers::BEGIN, crate::peers::END),
    ] {
        if let Some(start) = previous.find(begin)
            && let Some(len) = previous[start..].find(end)
        {
            report.push('\n');
            report.push_str(&previous[start..start + len + end.len()]);
            report.push('\n');
        }
    }
    report
}

/// The mesh: remote against local pickup, and throughput by worker nodes.
fn mesh(r: &Value) -> String {
    if r.is_null() {
        return String::new();
    }
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let by = &r["tasks_per_s_by_worker_nodes"];
    let one = f(&by["1"]);
    let mut out = format!(
        "\n## The mesh (nodes in one process, libp2p over loopback)\n\n\
         `echo` submitted at an owner and polled until completed, one at a time ({} tasks):\n\n\
         | run by | p50 ms | p99 ms |\n|---|---|---|\n\
         | the owner's own worker (baseline) | {:.2} | {:.2} |\n\
         | a worker node pulling over the mesh | {:.2} | {:.2} |\n\n\
         {} tasks of a tool that sleeps 200 ms (`recorder`), an owner with no slots, worker nodes of {} slots:\n\n\
         | worker nodes | tasks/s | vs one node |\n|---|---|---|\n",
        r["echo_tasks"],
        f(&r["local_echo"]["p50_ms"]),
        f(&r["local_echo"]["p99_ms"]),
        f(&r["remote_echo"]["p50_ms"]),
        f(&r["remote_echo"]["p99_ms"]),
        r["sleep_tasks"],
        r["slots_per_node"],
    );
    for n in ["1", "2", "3"] {
        out.push_str(&format!(
            "| {n} | {:.2} | {:.2}x |\n",
            f(&by[n]),
            f(&by[n]) / one
        ));
    }
    if !r["call_federated"].is_null() {
        let (host, fed) = (
            f(&r["call_on_host"]["p50_ms"]),
            f(&r["call_federated"]["p50_ms"]),
        );
        out.push_str(&format!(
            "\n`tools/call echo` over stdio, {} calls each, alternating (two `mcpplus serve` processes meshed on loopback):\n\n\
             | called on | p50 ms | p99 ms |\n|---|---|---|\n\
             | the node hosting `echo` (baseline) | {:.2} | {:.2} |\n\
             | another node, federated (`[mesh] federate`) | {:.2} | {:.2} |\n\n\
             A federated call costs {:.1}× a direct one at p50: it is a durable task at the caller, \
             claimed, run and reported back by the host.\n",
            r["federated_calls"],
            host,
            f(&r["call_on_host"]["p99_ms"]),
            fed,
            f(&r["call_federated"]["p99_ms"]),
            fed / host,
        ));
    }
    let s = &r["scale"];
    if !s.is_null() {
        out.push_str(&format!(
            "\nMany nodes ({} worker nodes, one owner; docs/scaling.md): the owner holds {} connections \
             and answers {:.1} requests/s while idle (each slot's claim waits up to lease/10 for work); \
             {} tasks of 200 ms ran at {:.1} tasks/s (ideal {:.0}).\n",
            s["worker_nodes"],
            s["owner_connections"],
            f(&s["idle_requests_per_s"]),
            s["tasks"],
            f(&s["tasks_per_s"]),
            f(&s["ideal_tasks_per_s"]),
        ));
    }
    out
}

/// The task queue's durable submits, latency and behaviour with 100k tasks.
fn queue(r: &Value) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let mut out = String::from("\n## The durable task queue\n\n");
    let (durable, memory) = (
        f(&r["submit_per_s"]["durable"]),
        f(&r["submit_per_s"]["in_memory"]),
    );
    out.push_str(&format!(
        "Submits, one task per transaction, {} in a row. Durable is the real store (SQLite WAL,\n\
         `synchronous = FULL`: committed to disk before `submit` returns; this machine's disk is a VM's\n\
         virtual disk, whose fsync may be cached by the host); in memory is the same code without a\n\
         file, the baseline for what durability costs.\n\n\
         | store | submits/s |\n|---|---:|\n| durable | {durable:.0} |\n| in memory | {memory:.0} ({:.0}x) |\n\n",
        r["submits"],
        memory / durable
    ));
    let c = &r["concurrent_submits"];
    if let Some(rates) = c["rates"].as_array() {
        out.push_str(&format!(
            "The same with several submitters at once, each a thread submitting its share one after\n\
             another ({} tasks per row, a fresh file each). Concurrent submits share one transaction and one\n\
             fsync (group commit), each still answered only once its task is on disk. The baseline beside it\n\
             commits each submit alone (a `submit_batch` of one, what `submit` did before group commit):\n\n\
             | submitters at once | durable submits/s | durable, a commit each | in memory submits/s |\n\
             |---:|---:|---:|---:|\n",
            c["tasks"]
        ));
        for row in rates {
            out.push_str(&format!(
                "| {} | {:.0} | {:.0} | {:.0} |\n",
                row["submitters"],
                f(&row["durable"]),
                f(&row["durable_commit_each"]),
                f(&row["in_memory"])
            ));
        }
        out.push('\n');
    }
    let l = &r["submit_to_complete"];
    out.push_str(&format!(
        "Submit to completed for the showcase `echo` through the workers (2 slots, woken by the\n\
         submit), {} tasks one after another, the submitter polling every 0.2 ms: p50 {:.2} ms, p99 {:.2} ms.\n\n",
        l["tasks"],
        f(&l["p50_ms"]),
        f(&l["p99_ms"])
    ));
    let t = &r["tools"];
    out.push_str(&format!(
        "Through the bundled task tools (in-process `invoke`, no MCP transport; each call a fresh\n\
         sandbox), {} tasks each:\n\n\
         | through the tools | p50 ms | p99 ms |\n|---|---:|---:|\n\
         | `task_submit` ({:.0} submits/s) | {:.2} | {:.2} |\n\
         | `task_submit`, then `task_status` every 0.2 ms until completed | {:.2} | {:.2} |\n\n",
        t["tasks"],
        f(&t["submit_per_s"]),
        f(&t["submit_p50_ms"]),
        f(&t["submit_p99_ms"]),
        f(&t["complete_p50_ms"]),
        f(&t["complete_p99_ms"])
    ));
    let g = &r["large"];
    out.push_str(&format!(
        "With {} tasks queued (priorities 1..10), submitted in batches of 1,000 at {:.0} tasks/s:\n\n\
         | question | ms |\n|---|---:|\n\
         | first page of 100, queue order | {:.1} |\n\
         | page of 100 at offset 50,000 | {:.1} |\n\
         | counts per state (queue_stats) | {:.1} |\n\
         | queue position of the last task | {:.1} |\n\
         | claim the next task and complete it | {:.1} |\n\
         | restart: reopen the file and count | {:.1} |\n\n\
         The file holds {:.1} MiB.\n",
        g["tasks"],
        f(&g["batch_submit_per_s"]),
        f(&g["first_page_ms"]),
        f(&g["page_at_50k_ms"]),
        f(&g["stats_ms"]),
        f(&g["position_ms"]),
        f(&g["claim_and_complete_ms"]),
        f(&g["reopen_and_stats_ms"]),
        f(&g["file_mib"])
    ));
    out.push_str(&workflows(&r["workflow"]));
    out
}

/// Workflows against the raw queue, same run, same workers (docs/workflows.md).
fn workflows(w: &Value) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let d = &w["dependencies_1000_steps_ms"];
    format!(
        "\n### Workflows over the queue\n\n\
         Same run, same store and workers ({} slots, showcase `echo`). The raw queue: {} `echo` tasks\n\
         submitted in one batch, until all completed. The workflow: one step with a `for_each` of the\n\
         same {} items (`max_parallel` 64), until the workflow completed. The chain: {} steps, each\n\
         depending on the one before; the gap is the dependent's task start minus its dependency's\n\
         finish (the controller's advance, the submit, a worker's claim).\n\n\
         | measure | value |\n|---|---:|\n\
         | raw queue, {} tasks (s) | {:.2} |\n\
         | workflow map, {} items (s) | {:.2} |\n\
         | map ÷ raw | {:.2}x |\n\
         | chain: dependency finished → dependent started, p50 (ms) | {:.1} |\n\
         | chain: same, p99 (ms) | {:.1} |\n\
         | `workflow_submit` of 1,000 steps, p50 of 5 (ms) | {:.1} |\n\
         | `workflow_dependencies` on 1,000 steps: json / dot / mermaid (ms) | {:.1} / {:.1} / {:.1} |\n",
        w["slots"],
        w["items"],
        w["items"],
        w["chain_steps"],
        w["items"],
        f(&w["raw_batch_s"]),
        w["items"],
        f(&w["map_s"]),
        f(&w["map_over_raw"]),
        f(&w["chain_gap_p50_ms"]),
        f(&w["chain_gap_p99_ms"]),
        f(&w["submit_1000_steps_ms"]),
        f(&d["json"]),
        f(&d["dot"]),
        f(&d["mermaid"]),
    )
}

/// Breaker overhead and an outbound GET through the host against native.
fn outbound(r: &Value) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let mut out = String::from("\n## Outbound calls and the circuit breaker\n\n");
    out.push_str(&format!(
        "Breaker cost per request: `acquire` + reporting success on one shared breaker, both clock reads\n\
         included, {} requests; against a bare `Mutex<u64>` increment in the same run. \"Per request\" is\n\
         what each request waits; with 2 threads both cores hammer the same breaker. The original MCP++\n\
         aimed for under 100 µs; the goal here is well under 1 µs.\n\n",
        r["breaker"]["requests"]
    ));
    out.push_str("| threads | ns per request | bare mutex ns | ratio |\n|---:|---:|---:|---:|\n");
    for row in r["breaker"]["rows"].as_array().cloned().unwrap_or_default() {
        let (ns, base) = (f(&row["ns_per_request"]), f(&row["bare_mutex_ns"]));
        out.push_str(&format!(
            "| {} | {ns:.0} | {base:.0} | {:.1}x |\n",
            row["threads"],
            ns / base
        ));
    }
    let e = &r["end_to_end"];
    let base = f(&e["native_keep_alive"]["p50_us"]);
    out.push_str(&format!(
        "\nA GET of a 5-byte body from an axum server on 127.0.0.1, {} sequential requests each. The host\n\
         keeps connections alive (a pool keyed by the checked address), so the like-for-like baseline is\n\
         native reqwest with keep-alive; the new-connection rows show what a connection costs on both\n\
         sides. \"Host layer\" calls `Outbound::send` directly (allow-list, breaker, address guard, send,\n\
         read): no guest; its new-connection row is the same layer with a pool that keeps nothing.\n\
         \"fetch tool call\" is the whole in-host tool call: instantiate the component, its wasi:http\n\
         request through the same layer, the result back as JSON.\n\n",
        e["requests"]
    ));
    out.push_str("| path | p50 µs | p99 µs | p50 vs native, keep-alive |\n|---|---:|---:|---:|\n");
    for (label, key) in [
        ("native reqwest, new connection", "native_fresh_connection"),
        ("native reqwest, keep-alive", "native_keep_alive"),
        (
            "host layer (no guest), new connection",
            "host_outbound_layer_fresh_connection",
        ),
        ("host layer (no guest), keep-alive", "host_outbound_layer"),
        (
            "fetch tool call (wasm + wasi:http), keep-alive",
            "fetch_tool_call",
        ),
    ] {
        let p50 = f(&e[key]["p50_us"]);
        out.push_str(&format!(
            "| {label} | {p50:.1} | {:.1} | {:.2}x |\n",
            f(&e[key]["p99_us"]),
            p50 / base
        ));
    }
    out
}

/// Log throughput and the per-call cost of logging and metrics.
fn logging(r: &Value) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let mut out = String::from("\n## Logging and metrics\n\n");
    out.push_str(&format!(
        "{} events, each inside a call span (its context fields copied into every line), written as JSON\n\
         lines to a file on one thread, against tracing-subscriber's stock JSON formatter in the same run.\n\
         The original MCP++'s goal was 10,000 events/s.\n\n",
        r["events"]
    ));
    out.push_str("| writer | events/s | vs the 10k/s goal |\n|---|---:|---:|\n");
    for (label, key) in [
        ("mcpplus (docs/log-schema.md)", "mcpplus_json"),
        ("tracing-subscriber json", "tracing_subscriber_json"),
    ] {
        let v = f(&r["events_per_s"][key]);
        out.push_str(&format!("| {label} | {v:.0} | {:.0}x |\n", v / 10_000.0));
    }
    out.push_str(&format!(
        "\nMetric updates one call makes (call counter, duration and instantiation histograms, memory\n\
         histogram, queued/active gauges): {:.0} ns per call.\n\n",
        f(&r["metric_updates_per_call_ns"])
    ));
    out.push_str("The showcase `echo` in-host through `invoke` (argument conversion, call, metrics), p50:\n\n| logging | p50 µs |\n|---|---:|\n");
    for row in r["per_call"].as_array().cloned().unwrap_or_default() {
        out.push_str(&format!(
            "| {} | {:.1} |\n",
            row["logging"].as_str().unwrap_or(""),
            f(&row["p50_us"])
        ));
    }
    out
}

/// Hot loading: swap time and calls during swaps.
fn reload(r: &Value) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let mut out = String::from("\n## Hot loading\n\n");
    out.push_str(&format!(
        "From replacing `versioned.wasm` (write beside, rename) — or sending `mcpplus tools load` — until\n\
         a `tools/call` answers with the new version (stdio client polling). Warm: the build was compiled\n\
         before (cache hit); cold: a build never seen (same code plus a unique custom section), so it is\n\
         compiled. Through the folder the watcher first waits for the file to stay quiet for the settle time\n\
         ({} ms by default, `--watch-settle-ms`).\n\n",
        r["settle_ms"]
    ));
    out.push_str("| via | cache | median ms | all, ms |\n|---|---|---:|---|\n");
    for x in r["swap"].as_array().cloned().unwrap_or_default() {
        let all: Vec<String> = x["all_ms"]
            .as_array()
            .map(|a| a.iter().map(|v| format!("{:.0}", f(v))).collect())
            .unwrap_or_default();
        out.push_str(&format!(
            "| {} | {} | {:.1} | {} |\n",
            x["via"].as_str().unwrap_or(""),
            x["cache"].as_str().unwrap_or(""),
            f(&x["median_ms"]),
            all.join(", ")
        ));
    }
    let calls = &r["calls"];
    out.push_str(&format!(
        "\nOne stdio client calling `version` back to back for {:.0} s in steady state, then for as long while\n\
         the component is replaced every 200 ms ({} swaps, warm cache):\n\n",
        f(&calls["window_s"]),
        calls["swaps"]
    ));
    out.push_str(
        "| phase | calls | failed | p50 µs | p99 µs | max µs |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for p in calls["phases"].as_array().cloned().unwrap_or_default() {
        out.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} |\n",
            p["phase"].as_str().unwrap_or(""),
            p["calls"],
            p["failed"],
            f(&p["p50_us"]),
            f(&p["p99_us"]),
            f(&p["max_us"])
        ));
    }
    out
}

/// The targets against this run's numbers. Why the misses happen, and what
/// would close them, is written by hand in docs/performance.md.
fn targets(r: &Value) -> String {
    let latency = r["latency"].as_array().cloned().unwrap_or_default();
    let cell = |server: &str, transport: &str, c: u64, key: &str| {
        latency
            .iter()
            .find(|x| x["server"] == server && x["transport"] == transport && x["concurrency"] == c)
            .and_then(|x| x[key].as_f64())
            .unwrap_or(f64::NAN)
    };
    let warm = r["startup"]
        .as_array()
        .and_then(|a| a.first())
        .and_then(|x| x["warm_ms_median_of_7"].as_f64())
        .unwrap_or(f64::NAN);
    let in_host = r["in_host"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|x| {
                    x["component"] == "showcase.wasm"
                        && x["allocator"] == "Pooling"
                        && x["instantiation"] == "Pre"
                })
                .cloned()
        })
        .and_then(|x| x["p50_us"].as_f64())
        .unwrap_or(f64::NAN);
    let rss_mib = r["memory"]["mcpplus_bundled_idle_kib"]
        .as_f64()
        .unwrap_or(f64::NAN)
        / 1024.0;
    let durable_16 = r["queue"]["concurrent_submits"]["rates"]
        .as_array()
        .and_then(|rates| rates.iter().find(|x| x["submitters"] == 16))
        .and_then(|x| x["durable"].as_f64())
        .unwrap_or(f64::NAN);
    let log_events = r["logging"]["events_per_s"]["mcpplus_json"]
        .as_f64()
        .unwrap_or(f64::NAN);
    let outbound = &r["outbound"]["end_to_end"];
    let host_get = outbound["host_outbound_layer"]["p50_us"]
        .as_f64()
        .unwrap_or(f64::NAN);
    let native_get = outbound["native_keep_alive"]["p50_us"]
        .as_f64()
        .unwrap_or(f64::NAN);
    let verdict = |ok: bool| {
        if ok {
            "met"
        } else {
            "missed (see performance.md)"
        }
    };
    let p50_ratio = cell("mcpplus", "stdio", 1, "p50_us") / cell("native", "stdio", 1, "p50_us");
    let stdio_16 =
        cell("mcpplus", "stdio", 16, "calls_per_s") / cell("native", "stdio", 16, "calls_per_s");
    let http_16 =
        cell("mcpplus", "http", 16, "calls_per_s") / cell("native", "http", 16, "calls_per_s");
    let get_ratio = host_get / native_get;
    let mut out = String::from(
        "## Targets\n\nThe speed issue's table; ratios are mcpplus over the native baseline of the same run.\n\n\
         | target | this run | |\n|---|---|---|\n",
    );
    let mut row = |target: &str, value: String, ok: bool| {
        out.push_str(&format!("| {target} | {value} | {} |\n", verdict(ok)));
    };
    row(
        "stdio `echo` p50, mcpplus / native rmcp, ≤ 1.3x",
        format!(
            "{p50_ratio:.2}x ({:.0} µs vs {:.0} µs)",
            cell("mcpplus", "stdio", 1, "p50_us"),
            cell("native", "stdio", 1, "p50_us")
        ),
        p50_ratio <= 1.3,
    );
    row(
        "stdio `echo` throughput at 16 in flight, mcpplus / native, ≥ 0.7x",
        format!("{stdio_16:.2}x"),
        stdio_16 >= 0.7,
    );
    row(
        "HTTP `echo` throughput at 16 in flight, mcpplus / native, ≥ 0.8x",
        format!("{http_16:.2}x"),
        http_16 >= 0.8,
    );
    row(
        "in-host instantiate-and-call, showcase `echo`, pooling, ≤ 20 µs",
        format!("{in_host:.1} µs"),
        in_host <= 20.0,
    );
    row(
        "idle RSS with the bundled tools, ≤ 20 MiB",
        format!("{rss_mib:.1} MiB"),
        rss_mib <= 20.0,
    );
    row(
        "durable submits/s (fsync'd before the answer), 16 submitters, ≥ 10,000",
        format!("{durable_16:.0}"),
        durable_16 >= 10_000.0,
    );
    row(
        "JSON log events/s, one thread, call context on every line, ≥ 1M",
        format!("{log_events:.0}"),
        log_events >= 1_000_000.0,
    );
    row(
        "outbound GET through the host vs native reqwest with keep-alive, ≤ 1.3x",
        format!("{get_ratio:.2}x ({host_get:.0} µs vs {native_get:.0} µs)"),
        get_ratio <= 1.3,
    );
    row(
        "warm start to first `tools/list`, bundled tools, < 100 ms",
        format!("{warm:.1} ms"),
        warm < 100.0,
    );
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_marked_sections_survive_a_rewrite() {
        let previous = "# Benchmarks\nold\n<!-- peers:begin -->\n## Side by side\n| a |\n<!-- peers:end -->\nafter\n";
        let kept = super::keep_marked_sections("# Benchmarks\nnew\n".into(), previous);
        assert_eq!(
            kept,
            "# Benchmarks\nnew\n\n<!-- peers:begin -->\n## Side by side\n| a |\n<!-- peers:end -->\n"
        );
        let both = "x\n<!-- peers:begin -->\nP\n<!-- peers:end -->\n<!-- hand-written:begin -->\nH\n<!-- hand-written:end -->\n";
        assert_eq!(
            super::keep_marked_sections("new\n".into(), both),
            "new\n\n<!-- hand-written:begin -->\nH\n<!-- hand-written:end -->\n\n<!-- peers:begin -->\nP\n<!-- peers:end -->\n"
        );
        assert_eq!(
            super::keep_marked_sections("new\n".into(), "no section"),
            "new\n"
        );
    }
}
