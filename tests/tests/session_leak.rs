//! Sessions leave nothing behind: thousands of short MCP sessions (handshake,
//! a few requests, the client hangs up) against one in-process server —
//! the stdio transport's code, `serve_lines`, over in-memory pipes — and the
//! process's resident memory stays flat once warm. Found by the `mcp_request`
//! fuzz target, whose RSS grew with every input.

use std::sync::Arc;

use mcpplus::catalog::{LiveCatalog, load_dir};
use mcpplus::mcp::{McpServer, serve_lines};
use mcpplus::runner::CatalogRunner;
use mcpplus_policy::config::OperatorConfig;
use mcpplus_queue::service::QueueService;
use mcpplus_runtime::Runtime;
use mcpplus_runtime::engine::RuntimeOptions;
use mcpplus_tests::{Scratch, dist};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

async fn session(server: &McpServer, frames: &[u8]) -> Vec<u8> {
    let (client, server_side) = tokio::io::duplex(64 * 1024);
    let (server_in, server_out) = tokio::io::split(server_side);
    let serving = tokio::spawn(serve_lines(server.clone(), server_in, server_out, 1 << 20));
    let (mut client_in, mut client_out) = tokio::io::split(client);
    let send = async {
        let _ = client_out.write_all(frames).await;
        let _ = client_out.shutdown().await;
    };
    let receive = async {
        let mut out = Vec::new();
        let _ = client_in.read_to_end(&mut out).await;
        out
    };
    let (_, out) = tokio::join!(send, receive);
    let _ = serving.await.expect("the session task");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_sessions_leave_memory_flat() {
    let scratch = Scratch::new("session-leak");
    let runtime = Arc::new(
        Runtime::new(RuntimeOptions {
            cache: Some(scratch.compile_cache()),
            config: OperatorConfig::default(),
            ..RuntimeOptions::default()
        })
        .unwrap(),
    );
    let (catalog, errors) = load_dir(&runtime, &dist()).unwrap();
    assert!(errors.is_empty(), "{errors:?}");
    let live = Arc::new(LiveCatalog::new(catalog));
    let runner = Arc::new(CatalogRunner {
        runtime: runtime.clone(),
        catalog: live.clone(),
    });
    let queue = Arc::new(
        QueueService::open(
            &scratch.join("data"),
            runtime.config().queue.clone(),
            runner,
        )
        .unwrap(),
    );
    let _ = runtime.attach_queue(queue.clone());
    let server = McpServer::new(live, runtime).with_queue(Some(queue));
    let frames = concat!(
        r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#,
        "\n",
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        "\n",
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
        "\n",
        r#"{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"echo","arguments":{"message":"x"}}}"#,
        "\n",
        r#"{"jsonrpc":"2.0","id":3,"method":"logging/setLevel","params":{"level":"debug"}}"#,
        "\n",
    )
    .as_bytes();
    // Warm up: allocator arenas, caches, the first instances.
    for _ in 0..300 {
        session(&server, frames).await;
    }
    let warm = rss_kib();
    const SESSIONS: usize = 3_000;
    for _ in 0..SESSIONS {
        let out = session(&server, frames).await;
        assert!(
            String::from_utf8_lossy(&out).contains(r#""id":2"#),
            "the call was answered"
        );
    }
    let after = rss_kib();
    let per_session = (after.saturating_sub(warm) as f64 * 1024.0) / SESSIONS as f64;
    println!(
        "rss warm {warm} KiB, after {SESSIONS} sessions {after} KiB: {per_session:.0} bytes per session"
    );
    // 3,000 sessions at 1 KiB each would be 3 MiB; a leak of the session's
    // state (its tasks, peer, buffers) is tens of KiB each.
    assert!(
        per_session < 1024.0,
        "resident memory grew {per_session:.0} bytes per session"
    );
}
