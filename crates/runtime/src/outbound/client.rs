//! One attempt at one request: on a kept connection to an address that passed
//! the guard for this request, or a new one (TLS when the scheme says so),
//! HTTP/1.1, and read the whole response within the size cap and the timeouts.

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
use super::pool::{Conn, Pool, PoolKey};
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

/// A response, and whether it came over a connection kept from before.
pub struct Sent {
    pub response: http::Response<Bytes>,
    pub reused: bool,
}

/// Send on an idle connection from `pool` to one of the checked addresses if
/// there is one, else on a new connection; give the connection back to the
/// pool only when the response was read whole and nobody asked to close it.
pub async fn send_once(
    attempt: Attempt<'_>,
    tls: &TlsConnector,
    pool: &Pool,
) -> Result<Sent, AttemptError> {
    let keys = attempt
        .addrs
        .iter()
        .map(|a| PoolKey::new(attempt.target, *a));
    if let Some(conn) = pool.checkout(keys) {
        match exchange(conn, &attempt, pool, true).await {
            Ok(response) => {
                return Ok(Sent {
                    response,
                    reused: true,
                });
            }
            // The server had closed the kept connection: a new one, once.
            Err(Failure::Stale(detail)) => tracing::debug!(
                event = "outbound.stale_connection",
                destination = %attempt.target.key,
                error = %detail,
                "a kept connection was closed by the server; sending on a new one"
            ),
            Err(Failure::Final(e)) => return Err(e),
        }
    }
    let conn = open(&attempt, tls).await?;
    match exchange(conn, &attempt, pool, false).await {
        Ok(response) => Ok(Sent {
            response,
            reused: false,
        }),
        Err(Failure::Stale(detail)) => Err(AttemptError::Protocol(detail)),
        Err(Failure::Final(e)) => Err(e),
    }
}

/// Connect to the first checked address that accepts, TLS when the scheme
/// says so, and start HTTP/1.1 on it.
async fn open(attempt: &Attempt<'_>, tls: &TlsConnector) -> Result<Conn, AttemptError> {
    let connect_by = attempt
        .deadline
        .min(Instant::now() + attempt.connect_timeout)
        .into();
    let (stream, addr) = connect(attempt.addrs, connect_by, attempt.connect_timeout).await?;
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
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| AttemptError::Protocol(e.to_string()))?;
    // The connection is driven by its own task, aborted when it is dropped.
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(Conn::new(
        PoolKey::new(attempt.target, addr),
        sender,
        driver,
    ))
}

enum Failure {
    /// A kept connection failed before any response, in a way that means the
    /// server had closed it: safe to send again on a new connection (the
    /// request was not sent, or it is idempotent).
    Stale(String),
    Final(AttemptError),
}

impl From<AttemptError> for Failure {
    fn from(e: AttemptError) -> Self {
        Failure::Final(e)
    }
}

/// One request and its whole response on `conn`.
async fn exchange(
    mut conn: Conn,
    attempt: &Attempt<'_>,
    pool: &Pool,
    reused: bool,
) -> Result<http::Response<Bytes>, Failure> {
    let request = origin_form(attempt.request);
    let close_asked = asks_to_close(request.headers());
    let first_byte_by = attempt
        .deadline
        .min(Instant::now() + attempt.first_byte_timeout)
        .into();
    let response = match timeout_at(first_byte_by, conn.sender.try_send_request(request)).await {
        Err(_) => {
            return Err(Failure::Final(
                if Instant::now() + Duration::from_millis(1) >= attempt.deadline {
                    AttemptError::TotalTimeout
                } else {
                    AttemptError::FirstByteTimeout(attempt.first_byte_timeout)
                },
            ));
        }
        Ok(Ok(response)) => response,
        Ok(Err(mut e)) => {
            let unsent = e.take_message().is_some();
            let error = e.into_error();
            let detail = error.to_string();
            let closed_under_us = error.is_incomplete_message()
                || error.is_canceled()
                || error.is_closed()
                || std::error::Error::source(&error)
                    .is_some_and(|s| s.downcast_ref::<std::io::Error>().is_some());
            return Err(
                if reused
                    && (unsent
                        || (closed_under_us && super::is_idempotent(attempt.request.method())))
                {
                    Failure::Stale(detail)
                } else {
                    Failure::Final(AttemptError::Protocol(detail))
                },
            );
        }
    };

    let (parts, mut body) = response.into_parts();
    let cap = attempt.max_response_bytes;
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > cap) {
        return Err(AttemptError::TooLarge(cap).into());
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
                return Err(AttemptError::TooLarge(cap).into());
            }
            collected.extend_from_slice(&data);
        }
    }
    // Read whole and without an error: keep the connection unless either side
    // asked to close it or it is not plain HTTP/1.1 any more.
    let reusable = !close_asked
        && !asks_to_close(&parts.headers)
        && parts.version == http::Version::HTTP_11
        && parts.status != http::StatusCode::SWITCHING_PROTOCOLS
        && attempt.request.method() != http::Method::CONNECT;
    if reusable {
        pool.checkin(conn);
    }
    Ok(http::Response::from_parts(parts, collected.freeze()))
}

/// Whether `Connection` lists `close`.
fn asks_to_close(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("close"))
}

/// Try each address in turn until one accepts, all within one connect budget.
async fn connect(
    addrs: &[SocketAddr],
    by: tokio::time::Instant,
    limit: Duration,
) -> Result<(TcpStream, SocketAddr), AttemptError> {
    let mut last = None;
    for addr in addrs {
        match timeout_at(by, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok((stream, *addr));
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
