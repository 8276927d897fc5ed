//! The JSON-RPC/MCP request path: raw newline-delimited frames into the rmcp
//! service with our `ServerHandler` (the stdio transport's code,
//! `serve_lines`), serving the bundled tools with the task queue and
//! workflows, so `tools/call`, MCP tasks, `logging/setLevel` and the rest run
//! for real.
//!
//! Input: the first byte chooses whether a valid handshake (initialize +
//! initialized, in one of both protocol eras) comes before the fuzzed frames
//! or the fuzzed bytes are the whole session. What must hold, beyond never
//! panicking (a panic in any task aborts the process under libFuzzer): the
//! session ends within its time once the client closes its side, and every
//! line the server writes is one JSON-RPC 2.0 message.
#![no_main]

use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use mcpplus::catalog::{LiveCatalog, load_dir};
use mcpplus::mcp::{McpServer, serve_lines};
use mcpplus::runner::CatalogRunner;
use mcpplus_policy::config::{CallLimits, OperatorConfig};
use mcpplus_queue::service::QueueService;
use mcpplus_runtime::Runtime;
use mcpplus_runtime::engine::RuntimeOptions;
use mcpplus_workflow::{WorkflowOptions, Workflows, spawn_driver};
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Longer than any one call may run (see `limits`), so a session that does
/// not end after the client left is a hang, not a slow tool.
const SESSION_DEADLINE: Duration = Duration::from_secs(20);
const MAX_REQUEST_BYTES: usize = 256 * 1024;

struct Server {
    tokio: tokio::runtime::Runtime,
    mcp: McpServer,
    _data_dir: tempfile::TempDir,
}

fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        let tokio = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let data_dir = tempfile::tempdir().expect("a scratch data dir");
        let mcp = tokio.block_on(async { start(data_dir.path()) });
        Server {
            tokio,
            mcp,
            _data_dir: data_dir,
        }
    })
}

fn start(data_dir: &Path) -> McpServer {
    let mut config = OperatorConfig::default();
    config.queue.max_queued = 500;
    let runtime = Arc::new(
        Runtime::new(RuntimeOptions {
            // Compiling the bundled components with an instrumented cranelift
            // takes minutes: keep them compiled between runs (scripts/fuzz.sh
            // puts them beside the instrumented build).
            cache: Some(
                std::env::var_os("MCPPLUS_FUZZ_WASM_CACHE")
                    .map(std::path::PathBuf::from)
                    .unwrap_or_else(|| {
                        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/wasm-cache")
                    }),
            ),
            base_limits: CallLimits {
                // Fuzzed arguments ask showcase.count_to for long pauses.
                timeout: Duration::from_millis(500),
                ..CallLimits::default()
            },
            config,
            no_pooling: false,
        })
        .expect("the runtime starts"),
    );
    let dist = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-tools/dist"));
    let (catalog, errors) = load_dir(&runtime, dist)
        .expect("guest-tools/dist is readable; build it with scripts/build-guest-tools.sh");
    assert!(
        errors.is_empty(),
        "bundled tools failed to load: {errors:?}"
    );
    let live = Arc::new(LiveCatalog::new(catalog));
    let runner = Arc::new(CatalogRunner {
        runtime: runtime.clone(),
        catalog: live.clone(),
    });
    let queue = Arc::new(
        QueueService::open(data_dir, runtime.config().queue.clone(), runner)
            .expect("the queue opens"),
    );
    let _ = runtime.attach_queue(queue.clone());
    let workflows = Arc::new(
        Workflows::open(
            queue.store().clone(),
            WorkflowOptions {
                tool_exists: Box::new(|_| true),
                template_dir: None,
                node: "fuzz".into(),
                retention_ms: 60_000,
            },
        )
        .expect("the workflow tables open"),
    );
    let _ = runtime.attach_workflows(workflows.clone());
    // Runs for the life of the process, like the server's.
    std::mem::forget(spawn_driver(workflows, Duration::from_millis(500)));
    McpServer::new(live, runtime).with_queue(Some(queue))
}

fn handshake(version: &str) -> Vec<u8> {
    let initialize = serde_json::json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {
            "protocolVersion": version,
            "capabilities": {"tasks": {}},
            "clientInfo": {"name": "fuzz", "version": "0"},
        },
    });
    format!("{initialize}\n{{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}}\n")
        .into_bytes()
}

fuzz_target!(
    init: {
        // Start the server before the first input, outside libFuzzer's per-input timeout.
        server();
    },
    |data: &[u8]| {
    let Some((&mode, frames)) = data.split_first() else {
        return;
    };
    let mut input = match mode % 3 {
        0 => handshake("2025-11-25"),
        1 => handshake("2025-03-26"),
        _ => Vec::new(),
    };
    input.extend_from_slice(frames);
    let server = server();
    let output = server.tokio.block_on(async {
        let (client, server_side) = tokio::io::duplex(64 * 1024);
        let (server_in, server_out) = tokio::io::split(server_side);
        let session = tokio::spawn(serve_lines(
            server.mcp.clone(),
            server_in,
            server_out,
            MAX_REQUEST_BYTES,
        ));
        let (mut client_in, mut client_out) = tokio::io::split(client);
        let send = async {
            // The server may end the session early (a bad handshake, an
            // over-long line): then the rest cannot be written, which is fine.
            let _ = client_out.write_all(&input).await;
            let _ = client_out.shutdown().await;
        };
        let receive = async {
            let mut output = Vec::new();
            let _ = client_in.read_to_end(&mut output).await;
            output
        };
        let (_, output) = tokio::time::timeout(SESSION_DEADLINE, async {
            tokio::join!(send, receive)
        })
        .await
        .expect("the session did not end after the client closed its side");
        // Ending with an error (bad handshake, over-long line) is allowed;
        // a panic in the session is not.
        tokio::time::timeout(SESSION_DEADLINE, session)
            .await
            .expect("the session task did not finish")
            .expect("the session task panicked")
            .ok();
        output
    });
    for line in output.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let message: Value = serde_json::from_slice(line).unwrap_or_else(|e| {
            panic!(
                "the server wrote a line that is not JSON ({e}): {}",
                String::from_utf8_lossy(line)
            )
        });
        assert_eq!(
            message.get("jsonrpc"),
            Some(&Value::from("2.0")),
            "not a JSON-RPC 2.0 message: {message}"
        );
    }
    }
);
