//! One attempt at one request: connect to an address that passed the guard,
//! TLS when the scheme says so, HTTP/1.1, and read the whole response within
//! the size cap and the timeouts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::timeout_at;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, pki_types::ServerName};
use wasmtime_wasi_http::io::TokioIo;

use super::guard::Target;
use mcpplus_policy::Scheme;

/// What one attempt needs.
pub struct Attempt<'a> {
    pub target: &'a Target,
    pub addrs: &'a [SocketAddr],
    pub request: &'a http::Request<Bytes>,
    pub connect_timeout: Duration,
    pub first_byte_timeout: Duration,
    /// The end of this attempt: its total timeout or the call's deadline.
    pub deadline: Instant,
    pub max_response_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttemptError {
    #[error("cannot connect to {0}")]
    Connect(String),
    #[error("connecting took longer than {0:?}")]
    ConnectTimeout(Duration),
    #[error("TLS failed: {0}")]
    Tls(String),
    #[error("no response within {0:?} of sending the request")]
    FirstByteTimeout(Duration),
    #[error("the response did not finish within the request's time")]
    TotalTimeout,
    #[error("the response is malformed or the connection broke: {0}")]
    Protocol(String),
    #[error("the response body is larger than the {0}-byte cap")]
    TooLarge(u64),
}

/// Make one TLS client config for the process: the Mozilla roots, ring.
pub fn tls_connector() -> TlsConnector {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.into(),
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

pub async fn send_once(
    attempt: Attempt<'_>,
    tls: &TlsConnector,
) -> Result<http::Response<Bytes>, AttemptError> {
    let connect_by = attempt
        .deadline
        .min(Instant::now() + attempt.connect_timeout)
        .into();
    let stream = connect(attempt.addrs, connect_by, attempt.connect_timeout).await?;
    let stream: Box<dyn Stream> = match attempt.target.scheme {
        Scheme::Http => Box::new(stream),
        Scheme::Https => {
            let name = match attempt.target.ip_literal() {
                Some(ip) => ServerName::from(ip),
                None => ServerName::try_from(attempt.target.host.clone())
                    .map_err(|e| AttemptError::Tls(e.to_string()))?,
            };
            let tls = timeout_at(connect_by, tls.connect(name, stream))
                .await
                .map_err(|_| AttemptError::ConnectTimeout(attempt.connect_timeout))?
                .map_err(|e| AttemptError::Tls(e.to_string()))?;
            Box::new(tls)
        }
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| AttemptError::Protocol(e.to_string()))?;
    // The connection is driven by its own task, ended with the attempt.
    let driver = AbortOnDrop(tokio::spawn(connection));

    let request = origin_form(attempt.request);
    let first_byte_by = attempt
        .deadline
        .min(Instant::now() + attempt.first_byte_timeout)
        .into();
    let response = timeout_at(first_byte_by, sender.send_request(request))
        .await
        .map_err(|_| {
            if Instant::now() + Duration::from_millis(1) >= attempt.deadline {
                AttemptError::TotalTimeout
            } else {
                AttemptError::FirstByteTimeout(attempt.first_byte_timeout)
            }
        })?
        .map_err(|e| AttemptError::Protocol(e.to_string()))?;

    let (parts, mut body) = response.into_parts();
    let cap = attempt.max_response_bytes;
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap) {
        return Err(AttemptError::TooLarge(cap));
    }
    let mut collected = BytesMut::new();
    let read_by = attempt.deadline.into();
    while let Some(frame) = timeout_at(read_by, body.frame())
        .await
        .map_err(|_| AttemptError::TotalTimeout)?
    {
        let frame = frame.map_err(|e| AttemptError::Protocol(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if collected.len() as u64 + data.len() as u64 > cap {
                return Err(AttemptError::TooLarge(cap));
            }
            collected.extend_from_slice(&data);
        }
    }
    drop(driver);
    Ok(http::Response::from_parts(parts, collected.freeze()))
}

/// Try each address in turn until one accepts, all within one connect budget.
async fn connect(
    addrs: &[SocketAddr],
    by: tokio::time::Instant,
    limit: Duration,
) -> Result<TcpStream, AttemptError> {
    let mut last = None;
    for addr in addrs {
        match timeout_at(by, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) => last = Some(format!("{addr}: {e}")),
            Err(_) => return Err(AttemptError::ConnectTimeout(limit)),
        }
    }
    Err(AttemptError::Connect(
        last.unwrap_or_else(|| "no address to connect to".into()),
    ))
}

/// The request as sent on the connection: the path and query only (the host
/// travels in the Host header), with a body hyper can send.
fn origin_form(request: &http::Request<Bytes>) -> http::Request<Full<Bytes>> {
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut out = http::Request::new(Full::new(request.body().clone()));
    *out.method_mut() = request.method().clone();
    *out.uri_mut() = path.parse().unwrap_or_else(|_| http::Uri::from_static("/"));
    *out.headers_mut() = request.headers().clone();
    if !out.headers().contains_key(http::header::HOST)
        && let Some(authority) = request.uri().authority()
        && let Ok(value) = authority.as_str().parse()
    {
        out.headers_mut().insert(http::header::HOST, value);
    }
    out
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
