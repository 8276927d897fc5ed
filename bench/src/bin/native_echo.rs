//! The floor for the latency benchmark: the same `echo` tool as the bundled
//! showcase component, served natively by rmcp (no WebAssembly), with the same
//! result shape (text + `structuredContent: {"result": …}`) and transports.

use std::sync::Arc;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, ServiceExt};
use serde_json::json;

#[derive(Clone)]
struct NativeEcho {
    tool: Tool,
}

impl ServerHandler for NativeEcho {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("native-echo", "0.1.0"))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(vec![self.tool.clone()]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let message = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("message"))
            .and_then(|m| m.as_str())
            .ok_or_else(|| McpError::invalid_params("echo needs a string `message`", None))?
            .to_string();
        let mut result = CallToolResult::success(vec![ContentBlock::text(message.clone())]);
        result.structured_content = Some(json!({ "result": message }));
        Ok(result.into())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let schema = json!({"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]});
    let tool = Tool::new(
        "echo",
        "Echo a message back unchanged.",
        Arc::new(schema.as_object().unwrap().clone()),
    );
    let server = NativeEcho { tool };
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--http") {
        None => server
            .serve(rmcp::transport::stdio_pipes())
            .await?
            .waiting()
            .await
            .map(|_| ())?,
        Some(i) => {
            let addr = args.get(i + 1).map(String::as_str).unwrap_or("127.0.0.1:0");
            let listener = tokio::net::TcpListener::bind(addr).await?;
            eprintln!(
                "native-echo: listening on http://{}/mcp",
                listener.local_addr()?
            );
            let service: StreamableHttpService<NativeEcho, LocalSessionManager> =
                StreamableHttpService::new(
                    move || Ok(server.clone()),
                    Arc::new(LocalSessionManager::default()),
                    StreamableHttpServerConfig::default(),
                );
            // TCP_NODELAY, exactly as mcpplus does, so the comparison is fair.
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, axum::Router::new().nest_service("/mcp", service)).await?;
        }
    }
    Ok(())
}
