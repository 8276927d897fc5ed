//! Grants after checking: absolute directories, parsed destinations and socket
//! addresses. These are what enforcement and the audit read; nothing here is
//! TOML any more.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use serde::Serialize;

pub use super::doc::FileAccess;

/// A host directory the guest sees at `guest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileGrant {
    /// Canonical host path (symlinks resolved when the policy was read).
    pub host: PathBuf,
    pub guest: String,
    pub access: FileAccess,
}

/// An environment variable the guest may read. The value is taken from the host
/// environment when the policy is loaded, and never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct EnvGrant {
    pub name: String,
    pub value: Option<String>,
}

impl fmt::Debug for EnvGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = if self.value.is_some() {
            "<redacted>"
        } else {
            "<not set>"
        };
        write!(f, "{}={value}", self.name)
    }
}

/// An outbound HTTP destination: scheme, host (exact or `*.suffix`), port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub scheme: Scheme,
    pub host: HostPattern,
    /// `None` means any port.
    pub port: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// One host name or IP address, lower case.
    Exact(String),
    /// `*.example.com`: any name ending in `.example.com` (not the bare domain).
    Subdomains(String),
}

impl Destination {
    /// Parse `scheme://host[:port]`; the port defaults to the scheme's, `*` means any.
    pub fn parse(text: &str) -> Result<Self, String> {
        let hint = "write it as scheme://host[:port], e.g. https://api.example.com or https://*.example.com:8443";
        let (scheme, rest) = text
            .split_once("://")
            .ok_or_else(|| format!("`{text}` has no scheme; {hint}"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => return Err(format!("scheme `{other}` is not http or https")),
        };
        if rest.contains(['/', '?', '#', '@']) {
            return Err(format!(
                "`{text}` has a path, query or user part; grants name a destination only: {hint}"
            ));
        }
        let (host, port) =
            split_host_port(rest).ok_or_else(|| format!("`{text}` has a bad port; {hint}"))?;
        let port = match port {
            None => Some(scheme.default_port()),
            Some(PortSpec::Any) => None,
            Some(PortSpec::Exact(p)) => Some(p),
        };
        let host = host.to_ascii_lowercase();
        let host = if let Some(suffix) = host.strip_prefix("*.") {
            check_host_name(suffix, text)?;
            HostPattern::Subdomains(suffix.to_string())
        } else {
            if host.parse::<IpAddr>().is_err() {
                check_host_name(&host, text)?;
            }
            HostPattern::Exact(host)
        };
        Ok(Destination { scheme, host, port })
    }

    /// Whether a request to `scheme://host:port` is covered by this grant.
    pub fn allows(&self, scheme: Scheme, host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        scheme == self.scheme
            && self.port.is_none_or(|p| p == port)
            && match &self.host {
                HostPattern::Exact(h) => *h == host,
                HostPattern::Subdomains(suffix) => host
                    .strip_suffix(suffix.as_str())
                    .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            }
    }
}

/// The name a destination goes by in breakers, metrics and logs:
/// `scheme://host:port`, the port always written, IPv6 in brackets.
pub fn destination_key(scheme: Scheme, host: &str, port: u16) -> String {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_ascii_lowercase()
    };
    format!("{}://{host}:{port}", scheme.as_str())
}

impl Destination {
    /// The key of the one destination this grant names, if it names one host and port.
    pub fn exact_key(&self) -> Option<String> {
        match (&self.host, self.port) {
            (HostPattern::Exact(h), Some(p)) => Some(destination_key(self.scheme, h, p)),
            _ => None,
        }
    }

    /// Whether this grant names `ip` itself (not a name that may resolve to it).
    pub fn names_ip(&self, ip: IpAddr) -> bool {
        matches!(&self.host, HostPattern::Exact(h) if h.parse::<IpAddr>().ok() == Some(ip))
    }
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = self.scheme.as_str();
        let host = match &self.host {
            HostPattern::Exact(h) if h.contains(':') => format!("[{h}]"),
            HostPattern::Exact(h) => h.clone(),
            HostPattern::Subdomains(s) => format!("*.{s}"),
        };
        match self.port {
            Some(p) if p == self.scheme.default_port() => write!(f, "{scheme}://{host}"),
            Some(p) => write!(f, "{scheme}://{host}:{p}"),
            None => write!(f, "{scheme}://{host}:*"),
        }
    }
}

enum PortSpec {
    Any,
    Exact(u16),
}

/// `host`, `host:port`, `[v6]:port`, `host:*`; `None` when the port is malformed.
fn split_host_port(text: &str) -> Option<(&str, Option<PortSpec>)> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            p => (host, Some(p.strip_prefix(':')?)),
        }
    } else if text.matches(':').count() > 1 {
        (text, None) // a bare IPv6 address
    } else {
        match text.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    let port = match port {
        None => None,
        Some("*") => Some(PortSpec::Any),
        Some(p) => Some(PortSpec::Exact(p.parse().ok().filter(|&p| p != 0)?)),
    };
    Some((host, port))
}

fn check_host_name(name: &str, text: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{text}`: `{name}` is not a host name (wildcards are allowed only as a leading `*.`)"
        ))
    }
}

/// A raw socket address a guest may connect to or bind: an IP and a port or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketPattern {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl SocketPattern {
    pub fn parse(text: &str) -> Result<Self, String> {
        let hint = "write it as IP:PORT or IP:*, e.g. 127.0.0.1:5432 or [::1]:*";
        let (host, port) =
            split_host_port(text).ok_or_else(|| format!("`{text}` has a bad port; {hint}"))?;
        let ip: IpAddr = host
            .parse()
            .map_err(|_| format!("`{text}`: `{host}` is not an IP address; {hint}"))?;
        let port = match port {
            None => return Err(format!("`{text}` has no port; {hint}")),
            Some(PortSpec::Any) => None,
            Some(PortSpec::Exact(p)) => Some(p),
        };
        Ok(SocketPattern { ip, port })
    }

    pub fn allows(&self, addr: SocketAddr) -> bool {
        self.ip == addr.ip() && self.port.is_none_or(|p| p == addr.port())
    }
}

impl fmt::Display for SocketPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ip = match self.ip {
            IpAddr::V6(v6) => format!("[{v6}]"),
            IpAddr::V4(v4) => v4.to_string(),
        };
        match self.port {
            Some(p) => write!(f, "{ip}:{p}"),
            None => write!(f, "{ip}:*"),
        }
    }
}

/// Raw socket grants (wasi:sockets).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SocketGrants {
    pub connect: Vec<SocketPattern>,
    pub bind: Vec<SocketPattern>,
    pub name_lookup: bool,
}

impl SocketGrants {
    pub fn any(&self) -> bool {
        !self.connect.is_empty() || !self.bind.is_empty() || self.name_lookup
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueGrants {
    pub submit: bool,
    pub admin: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PeerGrants {
    /// List peers and what this node measured of them.
    pub read: bool,
    /// Also connect and disconnect them.
    pub admin: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WorkflowGrants {
    /// Submit workflows, and read their status, results, graphs, the list
    /// and the templates.
    pub submit: bool,
    /// Also cancel them.
    pub admin: bool,
}

/// `[client]`: what a component may ask the MCP client that made a call
/// (`mcpplus:host/client`), one grant per request method.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ClientGrants {
    /// `elicitation/create`: ask the user questions.
    pub elicit: bool,
    /// `sampling/createMessage`: use the client's model (which costs the user).
    pub sample: bool,
    /// `roots/list`: read the client's roots (the folders it shares).
    pub roots: bool,
}

impl ClientGrants {
    pub fn any(&self) -> bool {
        self.elicit || self.sample || self.roots
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse_and_match() {
        let d = Destination::parse("https://*.example.com").unwrap();
        assert!(d.allows(Scheme::Https, "api.example.com", 443));
        assert!(d.allows(Scheme::Https, "a.b.EXAMPLE.com", 443));
        assert!(!d.allows(Scheme::Https, "example.com", 443));
        assert!(!d.allows(Scheme::Https, "evilexample.com", 443));
        assert!(!d.allows(Scheme::Http, "api.example.com", 443));
        assert!(!d.allows(Scheme::Https, "api.example.com", 8443));
        assert_eq!(d.to_string(), "https://*.example.com");

        let d = Destination::parse("http://127.0.0.1:*").unwrap();
        assert!(d.allows(Scheme::Http, "127.0.0.1", 9999));
        let d = Destination::parse("http://[::1]:8080").unwrap();
        assert!(d.allows(Scheme::Http, "::1", 8080));
        assert_eq!(d.to_string(), "http://[::1]:8080");

        for bad in [
            "api.example.com",
            "ftp://x.com",
            "https://x.com/path",
            "https://*x.com",
            "https://a.*.com",
            "https://x.com:0",
            "https://x.com:99999",
            "https://user@x.com",
        ] {
            assert!(Destination::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn socket_patterns_parse_and_match() {
        let p = SocketPattern::parse("127.0.0.1:5432").unwrap();
        assert!(p.allows("127.0.0.1:5432".parse().unwrap()));
        assert!(!p.allows("127.0.0.1:5433".parse().unwrap()));
        let p = SocketPattern::parse("[::1]:*").unwrap();
        assert!(p.allows("[::1]:1".parse().unwrap()));
        assert!(SocketPattern::parse("localhost:80").is_err());
        assert!(SocketPattern::parse("127.0.0.1").is_err());
    }
}
