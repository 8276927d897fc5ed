//! `[http]` in the operator config: who may use the Streamable HTTP endpoint
//! (docs/security.md, "HTTP authentication").
//!
//! ```toml
//! [http]
//! token_file = "/etc/mcpplus/http.token"   # default: <data-dir>/http.token, made on first start
//! metrics_token_file = "/etc/mcpplus/metrics.token"  # optional: /metrics needs this token
//!
//! [http.oauth]                              # also accept OAuth access tokens (JWT)
//! authorization_servers = ["https://auth.example.com"]
//! jwks_file = "/etc/mcpplus/jwks.json"      # the authorization server's signing keys
//! audience = "https://mcp.example.com/mcp"  # tokens must be issued for this server
//! issuer = "https://auth.example.com"       # optional: and by this issuer
//! ```

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// The static bearer token's file; `None`: `<data-dir>/http.token`.
    pub token_file: Option<PathBuf>,
    /// A separate token for `/metrics`; `None`: metrics need no token (they
    /// still get the Host check).
    pub metrics_token_file: Option<PathBuf>,
    pub oauth: Option<OAuthConfig>,
}

/// OAuth 2.1 resource-server settings: access tokens are JWTs signed by an
/// external authorization server.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OAuthConfig {
    /// Listed in the protected resource metadata, so clients know where to get tokens.
    #[serde(default)]
    pub authorization_servers: Vec<String>,
    /// The JSON Web Key Set that verifies the tokens' signatures.
    pub jwks_file: PathBuf,
    /// The `aud` every token must carry: this server's resource URL.
    pub audience: String,
    /// The `iss` every token must carry, when set.
    #[serde(default)]
    pub issuer: Option<String>,
}
