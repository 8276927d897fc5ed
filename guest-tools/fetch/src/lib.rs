//! Fetch a URL with standard wasi:http. The host decides what may be reached;
//! this tool only speaks HTTP and follows redirects, each of which the host
//! checks again.

wit_bindgen::generate!({ path: "wit", world: "fetch" });

use exports::mcpplus::fetch::http::{Guest, Header, Method, Response};
use wasip2::http::outgoing_handler::handle;
use wasip2::http::types::{
    ErrorCode, Fields, Method as WasiMethod, OutgoingBody, OutgoingRequest, Scheme,
};
use wasip2::io::streams::StreamError;

struct Fetch;

const DEFAULT_MAX_REDIRECTS: u8 = 5;
const DEFAULT_MAX_BODY: u32 = 64 * 1024;

/// A URL split into what wasi:http asks for.
#[derive(Debug, Clone)]
struct Url {
    https: bool,
    authority: String,
    path: String,
}

impl Url {
    fn parse(text: &str) -> Result<Self, String> {
        let (https, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(format!(
                "`{text}` is not an http:// or https:// URL; write the whole URL, e.g. https://example.com/page"
            ));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        let path = path.split('#').next().unwrap_or("/").to_string();
        if authority.is_empty() || authority.contains('@') {
            return Err(format!(
                "`{text}` has no host (or has a user part, which is not supported)"
            ));
        }
        Ok(Url {
            https,
            authority: authority.to_string(),
            path,
        })
    }

    /// Resolve a redirect's `Location` against this URL.
    fn join(&self, location: &str) -> Result<Url, String> {
        if location.starts_with("http://") || location.starts_with("https://") {
            Url::parse(location)
        } else if let Some(rest) = location.strip_prefix("//") {
            Url::parse(&format!("{}://{rest}", self.scheme()))
        } else if location.starts_with('/') {
            Ok(Url {
                path: location.to_string(),
                ..self.clone()
            })
        } else {
            let dir = &self.path[..=self.path.rfind('/').unwrap_or(0)];
            Ok(Url {
                path: format!("{dir}{location}"),
                ..self.clone()
            })
        }
    }

    fn scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", self.scheme(), self.authority, self.path)
    }
}

/// One exchange: status, headers, body (cut at `max_body`), truncated.
struct Exchange {
    status: u16,
    headers: Vec<Header>,
    body: Vec<u8>,
    truncated: bool,
}

fn method_name(method: Method) -> &'static str {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Patch => "PATCH",
        Method::Options => "OPTIONS",
    }
}

fn wasi_method(method: Method) -> WasiMethod {
    match method {
        Method::Get => WasiMethod::Get,
        Method::Head => WasiMethod::Head,
        Method::Post => WasiMethod::Post,
        Method::Put => WasiMethod::Put,
        Method::Delete => WasiMethod::Delete,
        Method::Patch => WasiMethod::Patch,
        Method::Options => WasiMethod::Options,
    }
}

/// What the host's error code means, in words. The host puts its refusals
/// (not granted, private address, circuit open) in `internal-error` with the
/// whole explanation.
fn explain(error: ErrorCode) -> String {
    match error {
        ErrorCode::InternalError(Some(message)) => message,
        ErrorCode::ConnectionRefused => "the server refused the connection".into(),
        ErrorCode::ConnectionTimeout => "connecting timed out".into(),
        ErrorCode::HttpResponseTimeout => "the server did not answer in time".into(),
        ErrorCode::DnsError(e) => format!(
            "the host name could not be resolved{}",
            e.rcode.map(|r| format!(": {r}")).unwrap_or_default()
        ),
        ErrorCode::HttpResponseBodySize(Some(cap)) => {
            format!("the response is larger than the host's {cap}-byte limit")
        }
        ErrorCode::HttpRequestBodySize(Some(cap)) => {
            format!("the request body is larger than the host's {cap}-byte limit")
        }
        ErrorCode::TlsProtocolError | ErrorCode::TlsCertificateError => {
            "the TLS handshake failed".into()
        }
        other => format!("the request failed: {other:?}"),
    }
}

fn exchange(
    url: &Url,
    method: Method,
    headers: &[Header],
    body: Option<&[u8]>,
    max_body: u32,
) -> Result<Exchange, String> {
    let fields: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|h| (h.name.clone(), h.value.clone().into_bytes()))
        .collect();
    let fields = Fields::from_list(&fields).map_err(|e| format!("bad request header: {e:?}"))?;
    let request = OutgoingRequest::new(fields);
    request
        .set_method(&wasi_method(method))
        .map_err(|()| "bad method")?;
    let scheme = if url.https {
        Scheme::Https
    } else {
        Scheme::Http
    };
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| "bad scheme")?;
    request
        .set_authority(Some(&url.authority))
        .map_err(|()| format!("`{}` is not a valid host", url.authority))?;
    request
        .set_path_with_query(Some(&url.path))
        .map_err(|()| format!("`{}` is not a valid path", url.path))?;
    let outgoing = request
        .body()
        .map_err(|()| "the request body was already taken")?;

    // Send first, then stream the body: the host reads it while we write.
    let pending = handle(request, None).map_err(explain)?;
    {
        let stream = outgoing
            .write()
            .map_err(|()| "the request body stream was already taken")?;
        for chunk in body.unwrap_or_default().chunks(4096) {
            stream
                .blocking_write_and_flush(chunk)
                .map_err(|e| format!("sending the body failed: {e:?}"))?;
        }
    }
    OutgoingBody::finish(outgoing, None).map_err(explain)?;

    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(error))) => return Err(explain(error)),
        _ => return Err("the host returned no response".into()),
    };
    let status = response.status();
    let headers = response
        .headers()
        .entries()
        .into_iter()
        .map(|(name, value)| Header {
            name,
            value: String::from_utf8_lossy(&value).into_owned(),
        })
        .collect();
    let incoming = response
        .consume()
        .map_err(|()| "the response body was already taken")?;
    let mut body = Vec::new();
    let mut truncated = false;
    {
        let stream = incoming
            .stream()
            .map_err(|()| "the response body stream was already taken")?;
        loop {
            match stream.blocking_read(16 * 1024) {
                Ok(bytes) => {
                    let room = (max_body as usize).saturating_sub(body.len());
                    if bytes.len() > room {
                        body.extend_from_slice(&bytes[..room]);
                        truncated = true;
                        break;
                    }
                    body.extend_from_slice(&bytes);
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(format!(
                        "reading the response failed: {}",
                        e.to_debug_string()
                    ));
                }
            }
        }
    }
    Ok(Exchange {
        status,
        headers,
        body,
        truncated,
    })
}

impl Guest for Fetch {
    fn fetch(
        url: String,
        method: Option<Method>,
        headers: Option<Vec<Header>>,
        body: Option<String>,
        max_redirects: Option<u8>,
        max_body_bytes: Option<u32>,
    ) -> Result<Response, String> {
        let mut url = Url::parse(&url)?;
        let mut method = method.unwrap_or(Method::Get);
        let headers = headers.unwrap_or_default();
        let mut body = body.map(String::into_bytes);
        let max_redirects = max_redirects.unwrap_or(DEFAULT_MAX_REDIRECTS);
        let max_body = max_body_bytes.unwrap_or(DEFAULT_MAX_BODY);
        let mut redirects = 0u32;
        loop {
            let answer = exchange(&url, method, &headers, body.as_deref(), max_body)
                .map_err(|e| format!("{} {url}: {e}", method_name(method)))?;
            let location = answer
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("location"))
                .map(|h| h.value.clone());
            let redirect = matches!(answer.status, 301 | 302 | 303 | 307 | 308);
            match location {
                Some(location) if redirect && redirects < u32::from(max_redirects) => {
                    url = url
                        .join(&location)
                        .map_err(|e| format!("redirect from {url}: {e}"))?;
                    // 303 (and, by long practice, 301/302 after a POST) turn into a GET.
                    if answer.status == 303
                        || (matches!(answer.status, 301 | 302) && method == Method::Post)
                    {
                        method = Method::Get;
                        body = None;
                    }
                    redirects += 1;
                }
                _ if redirect && max_redirects > 0 && redirects >= u32::from(max_redirects) => {
                    return Err(format!(
                        "{url} redirected more than {max_redirects} times; raise max_redirects to follow further"
                    ));
                }
                _ => {
                    return Ok(Response {
                        url: url.to_string(),
                        status: answer.status,
                        headers: answer.headers,
                        body: String::from_utf8_lossy(&answer.body).into_owned(),
                        truncated: answer.truncated,
                        redirects,
                    });
                }
            }
        }
    }
}

export!(Fetch);
