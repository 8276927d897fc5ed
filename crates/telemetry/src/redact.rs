//! Secrets never reach the log: values of granted environment variables are
//! masked wherever they appear (a guest printing its API key included), and
//! tool arguments are masked by key name and by the look of their value.

use std::sync::RwLock;

use serde_json::Value;

pub const MASK: &str = "[redacted]";

/// Literal secrets to mask in every log line (granted environment values).
static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());
/// Whether any secret was registered (skips the lock on the common path).
static ANY_SECRETS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Values shorter than this are not masked: too likely to be ordinary words.
pub const MIN_SECRET_LEN: usize = 6;

/// Mask these values from now on.
pub fn register_secrets<'a>(values: impl IntoIterator<Item = &'a str>) {
    let mut secrets = SECRETS.write().unwrap_or_else(|e| e.into_inner());
    for v in values {
        if v.len() >= MIN_SECRET_LEN && !secrets.iter().any(|s| s == v) {
            secrets.push(v.to_string());
        }
    }
    // Longest first, so a secret containing another is masked whole.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    ANY_SECRETS.store(!secrets.is_empty(), std::sync::atomic::Ordering::Release);
}

/// `text` with every registered secret masked.
pub fn mask_secrets(text: &str) -> Option<String> {
    if !ANY_SECRETS.load(std::sync::atomic::Ordering::Acquire) {
        return None;
    }
    let secrets = SECRETS.read().unwrap_or_else(|e| e.into_inner());
    if secrets.is_empty() || !secrets.iter().any(|s| text.contains(s.as_str())) {
        return None;
    }
    let mut out = text.to_string();
    for s in secrets.iter() {
        out = out.replace(s.as_str(), MASK);
    }
    Some(out)
}

/// Markers of credential-shaped text; a line without any is left alone quickly.
/// [`has_marker`] spells them out by first byte; a test holds the two together.
#[cfg(test)]
const SHAPE_MARKERS: [&str; 12] = [
    "Bearer ",
    "Basic ",
    "sk-",
    "sk_",
    "ghp_",
    "gho_",
    "github_pat_",
    "xox",
    "glpat-",
    "AKIA",
    "eyJ",
    "PRIVATE KEY",
];

/// `text` with credential-shaped words masked (a bearer token inside a debug dump
/// of a request, an API key a guest printed), or `None` if there are none.
pub fn mask_shapes(text: &str) -> Option<String> {
    if !has_marker(text) {
        return None;
    }
    if text.contains("PRIVATE KEY") && text.contains("-----BEGIN") {
        return Some(MASK.to_string());
    }
    let is_token = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    let mut previous = "";
    let mut rest = text;
    while !rest.is_empty() {
        let gap = rest.find(is_token).unwrap_or(rest.len());
        out.push_str(&rest[..gap]);
        rest = &rest[gap..];
        let len = rest.find(|c: char| !is_token(c)).unwrap_or(rest.len());
        let word = &rest[..len];
        let after_scheme = matches!(previous, "Bearer" | "Basic") && word.len() >= 8;
        if after_scheme || looks_like_secret(word) {
            out.push_str(MASK);
            changed = true;
        } else {
            out.push_str(word);
        }
        previous = word;
        rest = &rest[len..];
    }
    changed.then_some(out)
}

/// One pass over `text` looking for any of [`SHAPE_MARKERS`] (this runs on
/// every logged string): each byte that starts a marker is tried against the
/// markers it starts only.
fn has_marker(text: &str) -> bool {
    let bytes = text.as_bytes();
    (0..bytes.len()).any(|i| {
        let rest = &bytes[i..];
        match bytes[i] {
            b'B' => rest.starts_with(b"Bearer ") || rest.starts_with(b"Basic "),
            b's' => rest.starts_with(b"sk-") || rest.starts_with(b"sk_"),
            b'g' => {
                rest.starts_with(b"ghp_")
                    || rest.starts_with(b"gho_")
                    || rest.starts_with(b"github_pat_")
                    || rest.starts_with(b"glpat-")
            }
            b'x' => rest.starts_with(b"xox"),
            b'A' => rest.starts_with(b"AKIA"),
            b'e' => rest.starts_with(b"eyJ"),
            b'P' => rest.starts_with(b"PRIVATE KEY"),
            _ => false,
        }
    })
}

/// Argument names whose values are credentials, whatever they look like.
const SECRET_KEYS: [&str; 14] = [
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "api_key",
    "authorization",
    "auth",
    "credential",
    "private_key",
    "privatekey",
    "access_key",
    "cookie",
];

fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase().replace('-', "_");
    SECRET_KEYS
        .iter()
        .any(|s| k == *s || k.ends_with(&format!("_{s}")) || k.contains(s) && s.len() >= 5)
}

/// Whether a string looks like a credential: bearer/basic headers, common API
/// key shapes, JWTs, PEM keys.
pub fn looks_like_secret(value: &str) -> bool {
    let v = value.trim();
    let long_token = |rest: &str| {
        rest.len() >= 16
            && rest
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if let Some(rest) = v
        .strip_prefix("Bearer ")
        .or_else(|| v.strip_prefix("Basic "))
    {
        return !rest.trim().is_empty();
    }
    for prefix in [
        "sk-",
        "sk_live_",
        "sk_test_",
        "ghp_",
        "gho_",
        "github_pat_",
        "xoxb-",
        "xoxp-",
        "glpat-",
        "AKIA",
    ] {
        if let Some(rest) = v.strip_prefix(prefix)
            && long_token(rest)
        {
            return true;
        }
    }
    if v.starts_with("-----BEGIN") && v.contains("PRIVATE KEY") {
        return true;
    }
    // A JWT: three base64url parts, the first a JSON header ("eyJ").
    let parts: Vec<&str> = v.split('.').collect();
    parts.len() == 3
        && v.starts_with("eyJ")
        && parts.iter().all(|p| {
            p.len() >= 4
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        })
}

/// A copy of tool arguments fit for the log.
pub fn redact_arguments(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| {
                    let v = if is_secret_key(k) && !v.is_null() {
                        Value::String(MASK.into())
                    } else {
                        redact_arguments(v)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redact_arguments).collect()),
        Value::String(s) if looks_like_secret(s) => Value::String(MASK.into()),
        Value::String(s) => Value::String(mask_secrets(s).unwrap_or_else(|| s.clone())),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn arguments_are_masked_by_key_and_by_shape() {
        let args = json!({
            "message": "hello",
            "password": "hunter2",
            "api_key": 12345,
            "githubToken": "x",
            "nested": [{"header": "Bearer abc.def.ghi"}, {"key": "sk-abcdefghijklmnopqrstuvwx"}],
            "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
            "count": 3,
        });
        let r = redact_arguments(&args);
        assert_eq!(r["message"], "hello");
        assert_eq!(r["password"], MASK);
        assert_eq!(r["api_key"], MASK);
        assert_eq!(r["githubToken"], MASK);
        assert_eq!(r["nested"][0]["header"], MASK);
        assert_eq!(r["nested"][1]["key"], MASK);
        assert_eq!(r["jwt"], MASK);
        assert_eq!(r["count"], 3);
        assert!(!looks_like_secret("a.b.c"));
        assert!(!looks_like_secret("sk-short"));
    }

    #[test]
    fn credential_shapes_are_masked_inside_text() {
        let dump = r#"params: {"message": String("Bearer abcdefghijklmnop"), "k": "sk-abcdefghijklmnopqrstuv"}"#;
        let masked = mask_shapes(dump).unwrap();
        assert!(!masked.contains("abcdefghijklmnop"), "{masked}");
        assert!(masked.contains("Bearer [redacted]"), "{masked}");
        assert!(masked.contains("\"k\": \"[redacted]\""), "{masked}");
        assert_eq!(mask_shapes("an ordinary line, nothing here"), None);
        assert_eq!(mask_shapes("sk-short is fine"), None);
    }

    #[test]
    fn the_marker_prefilter_finds_every_marker() {
        for marker in SHAPE_MARKERS {
            for text in [
                marker.to_string(),
                format!("xx {marker} yy"),
                format!("é{marker}"),
            ] {
                assert!(has_marker(&text), "{text}");
            }
            assert!(!has_marker(&marker[..marker.len() - 1]), "{marker}");
        }
        assert!(!has_marker(
            "an ordinary line: guest.log counted, Basic, sk, gh_"
        ));
    }

    #[test]
    fn registered_secrets_are_masked_anywhere() {
        register_secrets(["s3cr3t-value-xyz", "abc"]);
        assert_eq!(
            mask_secrets("token=s3cr3t-value-xyz;").as_deref(),
            Some("token=[redacted];")
        );
        // Too short to mask safely.
        assert_eq!(mask_secrets("abc"), None);
    }
}
