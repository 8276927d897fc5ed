//! The real binary driven by the rmcp client (stdio and Streamable HTTP, both
//! lifecycles): tools listed, schemas valid, calls answered, errors explained.

use mcpplus_tests::{HttpServer, mcpplus_bin};
use rmcp::model::{CallToolRequestParams, ProtocolVersion};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::{ConfigureCommandExt, StreamableHttpClientTransport, TokioChildProcess};
use rmcp::{ClientLifecycleMode, ClientServiceExt, ServiceError};
use serde_json::{Value, json};

type Client = RunningService<RoleClient, ()>;

fn modern() -> ClientLifecycleMode {
    ClientLifecycleMode::Discover {
        preferred_versions: vec![ProtocolVersion::V_2026_07_28],
    }
}

async fn stdio_client(lifecycle: ClientLifecycleMode) -> Client {
    let transport = TokioChildProcess::new(tokio::process::Command::new(mcpplus_bin()).configure(
        |cmd| {
            cmd.arg("serve");
        },
    ))
    .expect("spawn mcpplus");
    ().serve_with_lifecycle(transport, lifecycle)
        .await
        .expect("connect over stdio")
}

async fn http_client(url: &str, lifecycle: ClientLifecycleMode) -> Client {
    let transport = StreamableHttpClientTransport::from_uri(url.to_string());
    ().serve_with_lifecycle(transport, lifecycle)
        .await
        .expect("connect over HTTP")
}

fn args(v: Value) -> serde_json::Map<String, Value> {
    v.as_object().cloned().expect("object")
}

async fn exercise(client: &Client) {
    let tools = client.list_all_tools().await.expect("tools/list");
    let names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    for expected in [
        "echo",
        "word_count",
        "describe_sample",
        "unified_diff",
        "badge",
    ] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    for tool in &tools {
        let schema = Value::Object((*tool.input_schema).clone());
        jsonschema::draft202012::meta::validate(&schema)
            .unwrap_or_else(|e| panic!("{}: {e}", tool.name));
    }

    let echo = client
        .call_tool(
            CallToolRequestParams::new("echo")
                .with_arguments(args(json!({"message": "hi from rmcp"}))),
        )
        .await
        .expect("call echo");
    assert_eq!(echo.is_error, Some(false));
    assert_eq!(
        echo.structured_content,
        Some(json!({"result": "hi from rmcp"}))
    );

    let words = client
        .call_tool(
            CallToolRequestParams::new("word_count").with_arguments(args(json!({"text": "a b c"}))),
        )
        .await
        .expect("call word_count");
    assert_eq!(
        words.structured_content,
        Some(json!({"words": 3, "lines": 1, "characters": 5, "bytes": 5}))
    );

    let failed = client
        .call_tool(
            CallToolRequestParams::new("divide")
                .with_arguments(args(json!({"numerator": 1, "denominator": 0}))),
        )
        .await
        .expect("call divide");
    assert_eq!(failed.is_error, Some(true));
    assert!(failed.structured_content.is_none());

    let unknown = client
        .call_tool(CallToolRequestParams::new("nope"))
        .await
        .expect_err("unknown tool");
    match unknown {
        ServiceError::McpError(e) => {
            assert_eq!(e.code.0, -32602);
            assert!(e.message.contains("Unknown tool: nope"), "{}", e.message);
        }
        other => panic!("expected a JSON-RPC error, got {other:?}"),
    }
}

#[tokio::test]
async fn stdio_legacy_initialize() {
    let client = stdio_client(ClientLifecycleMode::Initialize).await;
    exercise(&client).await;
    client.cancel().await.ok();
}

#[tokio::test]
async fn stdio_modern_discover() {
    let client = stdio_client(modern()).await;
    exercise(&client).await;
    client.cancel().await.ok();
}

#[tokio::test]
async fn http_both_eras() {
    let server = HttpServer::start(&[]);
    for lifecycle in [ClientLifecycleMode::Initialize, modern()] {
        let client = http_client(&server.url, lifecycle).await;
        exercise(&client).await;
        client.cancel().await.ok();
    }
}
