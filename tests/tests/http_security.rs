//! Streamable HTTP refuses requests whose Host or Origin is not local (DNS
//! rebinding), and accepts local ones.

use mcpplus_tests::HttpServer;

async fn post(url: &str, host: Option<&str>, origin: Option<&str>) -> u16 {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}"#;
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .body(body);
    if let Some(h) = host {
        req = req.header("host", h);
    }
    if let Some(o) = origin {
        req = req.header("origin", o);
    }
    req.send().await.expect("request").status().as_u16()
}

#[tokio::test]
async fn host_and_origin_are_checked() {
    let server = HttpServer::start(&[]);
    assert_eq!(post(&server.url, None, None).await, 200);
    assert_eq!(
        post(&server.url, None, Some("http://localhost:3000")).await,
        200
    );
    assert_eq!(post(&server.url, Some("evil.example.com"), None).await, 403);
    assert_eq!(
        post(&server.url, None, Some("http://evil.example.com")).await,
        403
    );
}
