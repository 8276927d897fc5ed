//! Who may use `/mcp` over HTTP: a bearer token, compared in constant time,
//! and optionally OAuth access tokens (JWTs signed by an external
//! authorization server, checked against its JWKS with this server as the
//! audience). What a client sees follows the MCP authorization spec: 401 with
//! `WWW-Authenticate: Bearer resource_metadata="…"`, and the metadata at
//! `/.well-known/oauth-protected-resource`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation, decode, decode_header};
use mcpplus_policy::config::http::OAuthConfig;
use subtle::ConstantTimeEq as _;

/// The path of the protected resource metadata (RFC 9728).
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";
/// The token file made in the data directory when none is configured.
pub const TOKEN_FILE: &str = "http.token";
/// The environment variable that can carry the token instead of a file.
pub const TOKEN_ENV: &str = "MCPPLUS_HTTP_TOKEN";
/// The shortest token accepted: shorter ones are guessable.
const MIN_TOKEN_LEN: usize = 16;

/// How requests to `/mcp` are authenticated.
pub struct HttpAuth {
    token: Option<Vec<u8>>,
    oauth: Option<OAuth>,
}

struct OAuth {
    keys: JwkSet,
    audience: String,
    issuer: Option<String>,
    authorization_servers: Vec<String>,
}

/// Who an authenticated request came from: `token` for the static token
/// (everyone holding it is one identity), `oauth:<iss>:<sub>` for an access
/// token. Put in the request's extensions for the MCP handler.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal(pub String);

/// Why a request was refused (what the client is told, nothing more).
#[derive(Debug, PartialEq)]
pub enum Refusal {
    /// No credentials at all.
    Missing,
    /// Credentials that are wrong, expired, or for another audience.
    Invalid,
}

impl HttpAuth {
    /// A static token, optional OAuth.
    pub fn new(token: Option<String>, oauth: Option<&OAuthConfig>) -> anyhow::Result<Self> {
        let oauth = oauth.map(OAuth::load).transpose()?;
        anyhow::ensure!(
            token.is_some() || oauth.is_some(),
            "authentication needs a token or [http.oauth]"
        );
        Ok(Self {
            token: token.map(String::into_bytes),
            oauth,
        })
    }

    /// Check an `Authorization` header.
    pub fn check(&self, authorization: Option<&str>) -> Result<Principal, Refusal> {
        let Some(value) = authorization else {
            return Err(Refusal::Missing);
        };
        let Some(presented) = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
        else {
            return Err(Refusal::Invalid);
        };
        let presented = presented.trim();
        if let Some(token) = &self.token
            && presented.len() == token.len()
            && bool::from(presented.as_bytes().ct_eq(token))
        {
            return Ok(Principal("token".into()));
        }
        self.oauth
            .as_ref()
            .and_then(|oauth| oauth.accepts(presented))
            .ok_or(Refusal::Invalid)
    }

    /// The protected resource metadata for a server reached at `base`.
    pub fn metadata(&self, base: &str) -> serde_json::Value {
        let servers = self
            .oauth
            .as_ref()
            .map(|o| o.authorization_servers.clone())
            .unwrap_or_default();
        serde_json::json!({
            "resource": format!("{base}/mcp"),
            "authorization_servers": servers,
            "bearer_methods_supported": ["header"],
            "resource_name": "mcpplus",
        })
    }
}

impl OAuth {
    fn load(config: &OAuthConfig) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(&config.jwks_file).map_err(|e| {
            anyhow::anyhow!(
                "[http.oauth] jwks_file {}: cannot read it: {e}",
                config.jwks_file.display()
            )
        })?;
        let keys: JwkSet = serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "[http.oauth] jwks_file {} is not a JSON Web Key Set ({e}); it must be {{\"keys\": [...]}}",
                config.jwks_file.display()
            )
        })?;
        anyhow::ensure!(
            !keys.keys.is_empty(),
            "[http.oauth] jwks_file {} has no keys",
            config.jwks_file.display()
        );
        anyhow::ensure!(
            !config.audience.trim().is_empty(),
            "[http.oauth] audience must be this server's URL (tokens for other audiences are refused)"
        );
        Ok(Self {
            keys,
            audience: config.audience.clone(),
            issuer: config.issuer.clone(),
            authorization_servers: config.authorization_servers.clone(),
        })
    }

    /// A JWT signed by one of the keys (by `kid`), unexpired, for our
    /// audience: whose it is.
    fn accepts(&self, token: &str) -> Option<Principal> {
        let header = decode_header(token).ok()?;
        let jwk = match &header.kid {
            Some(kid) => self.keys.find(kid),
            None if self.keys.keys.len() == 1 => self.keys.keys.first(),
            None => None,
        };
        let jwk = jwk?;
        // A key that names its algorithm is only ever used with it (no
        // algorithm confusion between key families).
        if let Some(alg) = jwk.common.key_algorithm
            && format!("{alg:?}") != format!("{:?}", header.alg)
        {
            return None;
        }
        let key = DecodingKey::from_jwk(jwk).ok()?;
        let mut validation = Validation::new(header.alg);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "aud"]);
        if let Some(issuer) = &self.issuer {
            validation.set_issuer(&[issuer]);
        }
        let claims = decode::<serde_json::Value>(token, &key, &validation)
            .ok()?
            .claims;
        let field = |k: &str| claims.get(k).and_then(|v| v.as_str()).unwrap_or("");
        Some(Principal(format!(
            "oauth:{}:{}",
            field("iss"),
            field("sub")
        )))
    }
}

/// What the middleware needs: the checker and how to name this server.
pub struct AuthState {
    pub auth: HttpAuth,
    /// The URL base announced when the request's Host is not one we serve.
    pub fallback_base: String,
    pub allowed_hosts: Vec<String>,
}

impl AuthState {
    /// `http://<host>` for a request, using its Host only when it is allowed.
    pub fn base_for(&self, headers: &HeaderMap) -> String {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| {
                let name = h.rsplit_once(':').map_or(*h, |(n, _)| n);
                self.allowed_hosts.iter().any(|a| a == name || a == *h)
            });
        match host {
            Some(h) => format!("http://{h}"),
            None => self.fallback_base.clone(),
        }
    }
}

/// Refuse requests without valid credentials (401, as the MCP spec says).
pub async fn require_auth(
    State(state): State<Arc<AuthState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match state.auth.check(authorization) {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(refusal) => {
            let base = state.base_for(request.headers());
            let mut challenge = format!("Bearer resource_metadata=\"{base}{METADATA_PATH}\"");
            if refusal == Refusal::Invalid {
                challenge.push_str(", error=\"invalid_token\"");
            }
            tracing::warn!(event = "http.unauthorized", reason = ?refusal,
                path = %request.uri().path(), "refused a request without valid credentials");
            mcpplus_telemetry::metrics::metrics()
                .http_unauthorized
                .inc();
            let mut response = (
                StatusCode::UNAUTHORIZED,
                "authentication required: send Authorization: Bearer <token> (the token is in the server's data directory, http.token)\n",
            )
                .into_response();
            if let Ok(value) = HeaderValue::from_str(&challenge) {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, value);
            }
            response
        }
    }
}

/// `GET /.well-known/oauth-protected-resource`.
pub async fn metadata_endpoint(
    State(state): State<Arc<AuthState>>,
    headers: HeaderMap,
) -> impl IntoResponse {
    axum::Json(state.auth.metadata(&state.base_for(&headers)))
}

/// Where the static token comes from, first match wins: the environment
/// variable, `--token-file`, `[http] token_file`, else `<data-dir>/http.token`
/// (made on first start, 0600, and printed once on stderr).
pub fn load_token(explicit_file: Option<&Path>, data_dir: Option<&Path>) -> anyhow::Result<String> {
    if let Ok(token) = std::env::var(TOKEN_ENV) {
        return checked(token.trim().to_string(), TOKEN_ENV);
    }
    if let Some(file) = explicit_file {
        return read_token_file(file);
    }
    let dir = data_dir.ok_or_else(|| {
        anyhow::anyhow!(
            "HTTP needs an access token and there is no data directory to keep one in: pass --token-file FILE, set {TOKEN_ENV}, or (loopback only) --no-auth"
        )
    })?;
    let path = dir.join(TOKEN_FILE);
    if path.exists() {
        return read_token_file(&path);
    }
    create_token_file(&path)
}

fn checked(token: String, from: &str) -> anyhow::Result<String> {
    anyhow::ensure!(
        token.len() >= MIN_TOKEN_LEN && token.chars().all(|c| c.is_ascii_graphic()),
        "the token from {from} must be at least {MIN_TOKEN_LEN} printable characters without spaces"
    );
    Ok(token)
}

pub fn read_token_file(path: &Path) -> anyhow::Result<String> {
    mcpplus_mesh::identity::ensure_private(path, "it is an access token")?;
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("token file {}: {e}", path.display()))?;
    checked(text.trim().to_string(), &path.display().to_string())
}

fn create_token_file(path: &PathBuf) -> anyhow::Result<String> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("cannot read random bytes from the OS: {e}"))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot create the token file {}: {e}", path.display()))?;
    file.write_all(format!("{token}\n").as_bytes())?;
    file.sync_all()?;
    // Printed once, so the operator can hand it to clients; afterwards it is only in the file.
    eprintln!(
        "mcpplus: created an HTTP access token in {} (clients send `Authorization: Bearer <token>`): {token}",
        path.display()
    );
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_must_match_exactly() {
        let auth = HttpAuth::new(Some("0123456789abcdef0123".into()), None).unwrap();
        assert_eq!(auth.check(None), Err(Refusal::Missing));
        assert_eq!(
            auth.check(Some("Bearer 0123456789abcdef0123")),
            Ok(Principal("token".into()))
        );
        assert_eq!(
            auth.check(Some("Bearer 0123456789abcdef012")),
            Err(Refusal::Invalid)
        );
        assert_eq!(
            auth.check(Some("Bearer 0123456789abcdef01234")),
            Err(Refusal::Invalid)
        );
        assert_eq!(
            auth.check(Some("Basic 0123456789abcdef0123")),
            Err(Refusal::Invalid)
        );
    }
}
