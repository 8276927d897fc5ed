//! The 2026-07-28 era on the wire, as a raw HTTP client sends it: `server/discover`
//! and a stateless `tools/list` carrying `_meta`, with the caching hints and
//! `resultType` the revision requires.

use mcpplus_tests::HttpServer;
use serde_json::{Value, json};

const MODERN: &str = "2026-07-28";

async fn modern_request(url: &str, method: &str, params: Value) -> Value {
    let mut params = params;
    params["_meta"] = json!({
        "io.modelcontextprotocol/protocolVersion": MODERN,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "raw-test", "version": "0"},
    });
    let body = json!({"jsonrpc": "2.0", "id": 7, "method": method, "params": params});
    let response = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", MODERN)
        .header("mcp-method", method)
        .body(body.to_string())
        .send()
        .await
        .expect("request");
    assert_eq!(response.status().as_u16(), 200, "{method}");
    let is_sse = response.headers().get("content-type").is_some_and(|v| {
        v.to_str()
            .unwrap_or_default()
            .starts_with("text/event-stream")
    });
    let text = response.text().await.expect("body");
    let message = if is_sse {
        // The response is the last `data:` event carrying our id.
        text.lines()
            .filter_map(|l| l.strip_prefix("data:"))
            .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
            .find(|m| m["id"] == 7)
            .unwrap_or_else(|| panic!("no response in SSE body: {text}"))
    } else {
        serde_json::from_str(&text).expect("JSON body")
    };
    assert!(message.get("error").is_none(), "{message}");
    message["result"].clone()
}

#[tokio::test]
async fn discover_and_stateless_tools_list() {
    let server = HttpServer::start(&[]);

    let discover = modern_request(&server.url, "server/discover", json!({})).await;
    let versions = discover["supportedVersions"]
        .as_array()
        .expect("supportedVersions");
    assert!(
        versions.contains(&json!(MODERN)) && versions.contains(&json!("2025-11-25")),
        "{discover}"
    );
    assert_eq!(discover["capabilities"]["tools"]["listChanged"], true);
    assert_eq!(discover["resultType"], "complete");

    let list = modern_request(&server.url, "tools/list", json!({})).await;
    assert_eq!(list["resultType"], "complete");
    assert_eq!(list["ttlMs"], 0, "the tool list can change at any time");
    assert_eq!(list["cacheScope"], "public");
    assert!(list.get("nextCursor").is_none(), "one page, no cursor");
    assert!(
        list["tools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "echo")
    );
}
