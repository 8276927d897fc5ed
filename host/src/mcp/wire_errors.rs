//! JSON-RPC answers where rmcp's HTTP transport answers in plain text.
//!
//! rmcp rejects a body that is not JSON, or not a JSON-RPC message, with HTTP
//! 415 and a plain-text line; JSON-RPC clients expect a parse error (-32700) or
//! an invalid request (-32600) they can read. And it answers a legacy session's
//! `DELETE` with 202, which clients read as "termination failed" (the Python
//! SDK accepts 200 and 204). This layer, in front of `/mcp`, fixes both.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};
use serde_json::{Value, json};

/// The largest request body read here (rmcp's own limit applies after it).
#[derive(Clone, Copy)]
pub struct BodyLimit(pub usize);

pub async fn jsonrpc_errors(
    axum::extract::State(limit): axum::extract::State<BodyLimit>,
    request: Request,
    next: Next,
) -> Response {
    match *request.method() {
        Method::DELETE => session_delete(next.run(request).await),
        Method::POST if is_json(&request) => checked_post(request, next, limit.0).await,
        Method::POST => {
            let response = next.run(request).await;
            if response.status() == StatusCode::UNSUPPORTED_MEDIA_TYPE {
                // Keep the status (the Content-Type is what is wrong), say it in JSON-RPC.
                return error_response(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    -32600,
                    "Invalid Request: send the JSON-RPC message with Content-Type: application/json",
                );
            }
            response
        }
        _ => next.run(request).await,
    }
}

/// A successful `DELETE` of a session: 204 instead of rmcp's 202.
fn session_delete(response: Response) -> Response {
    if response.status() != StatusCode::ACCEPTED {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    parts.status = StatusCode::NO_CONTENT;
    parts.headers.remove(header::CONTENT_TYPE);
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::empty())
}

/// Hand the body to rmcp; when it refuses it (415), answer -32700 if it is not
/// JSON at all, else -32600 (JSON, but not a JSON-RPC message).
async fn checked_post(request: Request, next: Next, limit: usize) -> Response {
    let (parts, body) = request.into_parts();
    let bytes: Bytes = match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return error_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                -32600,
                &format!("Invalid Request: the request body is larger than {limit} bytes"),
            );
        }
    };
    let response = next
        .run(Request::from_parts(parts, Body::from(bytes.clone())))
        .await;
    if response.status() != StatusCode::UNSUPPORTED_MEDIA_TYPE {
        return response;
    }
    // Only a body rmcp refused is parsed again, to say which error it is.
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&bytes) {
        return error_response(
            StatusCode::BAD_REQUEST,
            -32700,
            &format!("Parse error: the request body is not valid JSON ({e})"),
        );
    }
    let detail = response_text(response).await;
    error_response(
        StatusCode::BAD_REQUEST,
        -32600,
        &format!(
            "Invalid Request: the body is JSON but not one JSON-RPC 2.0 request, notification or response ({})",
            detail.trim_start_matches("Unsupported Media Type: ")
        ),
    )
}

fn is_json(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim())
        .is_some_and(|essence| essence.eq_ignore_ascii_case("application/json"))
}

async fn response_text(response: Response) -> String {
    let bytes = axum::body::to_bytes(response.into_body(), 4096)
        .await
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A JSON-RPC error with no id (the request could not be read, so it has none).
fn error_response(status: StatusCode, code: i32, message: &str) -> Response {
    let body: Value =
        json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}});
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}
