//! What a request may reach: its destination must be granted, and every
//! address its name resolves to must be public unless the grant names that
//! very address. The sender connects only to addresses that passed here, so a
//! name cannot be re-resolved to somewhere else (DNS rebinding).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use mcpplus_policy::{Destination, Scheme, destination_key};

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub scheme: Scheme,
    /// Lower case, IPv6 without brackets.
    pub host: String,
    pub port: u16,
    /// `scheme://host:port`: the breaker's and the metrics' name for it.
    pub key: String,
}

impl Target {
    /// The destination of `uri`; an error saying what is missing when it has
    /// no http(s) scheme or no host.
    pub fn of(uri: &http::Uri) -> Result<Self, String> {
        let scheme = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
            Some("http") => Scheme::Http,
            Some("https") => Scheme::Https,
            Some(other) => {
                return Err(format!(
                    "scheme `{other}` is not supported; only http and https"
                ));
            }
            None => return Err("the request has no scheme".into()),
        };
        let host = uri
            .host()
            .filter(|h| !h.is_empty())
            .ok_or("the request has no host")?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(scheme.default_port());
        Ok(Self {
            key: destination_key(scheme, &host, port),
            scheme,
            host,
            port,
        })
    }

    /// The host as an IP address, if it is written as one.
    pub fn ip_literal(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

/// The grant that covers `target`, if any.
pub fn granting<'a>(grants: &'a [Destination], target: &Target) -> Option<&'a Destination> {
    grants
        .iter()
        .find(|g| g.allows(target.scheme, &target.host, target.port))
}

/// What kind of address an IP is, as far as reaching it from a tool goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Public,
    Loopback,
    Private,
    LinkLocal,
    /// A cloud provider's instance metadata service.
    CloudMetadata,
    /// Carrier-grade NAT space (100.64.0.0/10).
    SharedAddressSpace,
    Unspecified,
    Multicast,
    /// Reserved, benchmarking or IETF protocol space: never a real destination.
    Reserved,
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressClass::Public => "a public address",
            AddressClass::Loopback => "a loopback address",
            AddressClass::Private => "a private-network address",
            AddressClass::LinkLocal => "a link-local address",
            AddressClass::CloudMetadata => "a cloud metadata address",
            AddressClass::SharedAddressSpace => "a carrier-grade NAT address",
            AddressClass::Unspecified => "the unspecified address",
            AddressClass::Multicast => "a multicast address",
            AddressClass::Reserved => "a reserved address",
        })
    }
}

pub fn classify(ip: IpAddr) -> AddressClass {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn classify_v4(ip: Ipv4Addr) -> AddressClass {
    let [a, b, c, _] = ip.octets();
    if ip == Ipv4Addr::new(169, 254, 169, 254) || ip == Ipv4Addr::new(100, 100, 100, 200) {
        AddressClass::CloudMetadata
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_private() {
        AddressClass::Private
    } else if ip.is_link_local() {
        AddressClass::LinkLocal
    } else if a == 100 && (64..128).contains(&b) {
        AddressClass::SharedAddressSpace
    } else if a == 0 {
        AddressClass::Unspecified
    } else if ip.is_multicast() {
        AddressClass::Multicast
    } else if a >= 240 || (a == 192 && b == 0 && c == 0) || (a == 198 && (b == 18 || b == 19)) {
        AddressClass::Reserved
    } else {
        AddressClass::Public
    }
}

fn classify_v6(ip: Ipv6Addr) -> AddressClass {
    // An IPv4 address inside IPv6 (mapped ::ffff:a.b.c.d, or NAT64 64:ff9b::a.b.c.d)
    // reaches that IPv4 address.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    let segments = ip.segments();
    let low_v4 = |hi: u16, lo: u16| Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., hi, lo] = segments;
        return classify_v4(low_v4(hi, lo));
    }
    // IPv4-compatible ::a.b.c.d (deprecated, still routed by some stacks).
    if segments[..6] == [0; 6] && !ip.is_loopback() && !ip.is_unspecified() {
        let [.., hi, lo] = segments;
        return classify_v4(low_v4(hi, lo));
    }
    // 6to4: 2002:AABB:CCDD::/48 reaches the IPv4 address AA.BB.CC.DD.
    if segments[0] == 0x2002 {
        return classify_v4(low_v4(segments[1], segments[2]));
    }
    // Local-use NAT64 (RFC 8215): translates into the operator's own networks.
    if segments[..3] == [0x64, 0xff9b, 0x1] {
        return AddressClass::Private;
    }
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        AddressClass::CloudMetadata
    } else if ip.is_loopback() {
        AddressClass::Loopback
    } else if ip.is_unspecified() {
        AddressClass::Unspecified
    } else if (segments[0] & 0xfe00) == 0xfc00 || (segments[0] & 0xffc0) == 0xfec0 {
        // Unique local, and the deprecated site-local fec0::/10.
        AddressClass::Private
    } else if (segments[0] & 0xffc0) == 0xfe80 {
        AddressClass::LinkLocal
    } else if ip.is_multicast() {
        AddressClass::Multicast
    } else {
        AddressClass::Public
    }
}

/// The addresses of `resolved` the request may connect to under `grant`:
/// public ones, and a special one only when the grant names it and the request
/// asked for it by that address. Errors when none is left, naming the first
/// address refused and why.
pub fn permitted(
    grant: &Destination,
    target: &Target,
    resolved: &[SocketAddr],
) -> Result<Vec<SocketAddr>, String> {
    let explicit = |ip: IpAddr| target.ip_literal() == Some(ip) && grant.names_ip(ip);
    let (ok, refused): (Vec<SocketAddr>, Vec<SocketAddr>) = resolved
        .iter()
        .partition(|a| classify(a.ip()) == AddressClass::Public || explicit(a.ip()));
    match (ok.is_empty(), refused.first()) {
        (false, _) => Ok(ok),
        (true, Some(addr)) => {
            let how = match target.ip_literal() {
                Some(_) => format!(
                    "to allow it, grant this exact address: add \"{}\" to [network] allow",
                    target.key
                ),
                None => format!(
                    "a host name is never allowed to reach such an address; if this is intended, request it by address and grant that address (\"{}\")",
                    destination_key(target.scheme, &addr.ip().to_string(), target.port)
                ),
            };
            Err(format!(
                "`{}` resolves to {}, {}; {how}",
                target.host,
                addr.ip(),
                classify(addr.ip())
            ))
        }
        (true, None) => Err(format!("`{}` did not resolve to any address", target.host)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> Target {
        Target::of(&url.parse().unwrap()).unwrap()
    }

    #[test]
    fn address_classes() {
        let cases = [
            ("8.8.8.8", AddressClass::Public),
            ("127.0.0.1", AddressClass::Loopback),
            ("127.8.0.1", AddressClass::Loopback),
            ("10.1.2.3", AddressClass::Private),
            ("172.16.0.1", AddressClass::Private),
            ("192.168.1.1", AddressClass::Private),
            ("169.254.169.254", AddressClass::CloudMetadata),
            ("100.100.100.200", AddressClass::CloudMetadata),
            ("169.254.1.1", AddressClass::LinkLocal),
            ("100.64.0.1", AddressClass::SharedAddressSpace),
            ("0.0.0.0", AddressClass::Unspecified),
            ("224.0.0.1", AddressClass::Multicast),
            ("240.0.0.1", AddressClass::Reserved),
            ("198.18.0.1", AddressClass::Reserved),
            ("::1", AddressClass::Loopback),
            ("::", AddressClass::Unspecified),
            ("fd00:ec2::254", AddressClass::CloudMetadata),
            ("fd12::1", AddressClass::Private),
            ("fe80::1", AddressClass::LinkLocal),
            ("::ffff:169.254.169.254", AddressClass::CloudMetadata),
            ("::ffff:10.0.0.1", AddressClass::Private),
            ("64:ff9b::7f00:1", AddressClass::Loopback),
            ("64:ff9b:1::a00:1", AddressClass::Private),
            ("2002:7f00:1::1", AddressClass::Loopback),
            ("2002:a9fe:a9fe::1", AddressClass::CloudMetadata),
            ("2002:0808:0808::1", AddressClass::Public),
            ("::127.0.0.1", AddressClass::Loopback),
            ("::10.0.0.1", AddressClass::Private),
            ("fec0::1", AddressClass::Private),
            ("2606:4700::1111", AddressClass::Public),
        ];
        for (ip, class) in cases {
            assert_eq!(classify(ip.parse().unwrap()), class, "{ip}");
        }
    }

    #[test]
    fn targets_are_named_with_their_port() {
        assert_eq!(
            target("http://Example.COM/x?y").key,
            "http://example.com:80"
        );
        assert_eq!(target("https://a.b:8443").key, "https://a.b:8443");
        assert_eq!(target("http://[::1]:9/").key, "http://[::1]:9");
        assert!(Target::of(&"ftp://x/".parse().unwrap()).is_err());
    }

    #[test]
    fn special_addresses_need_a_grant_that_names_them() {
        let by_ip = Destination::parse("http://127.0.0.1:8080").unwrap();
        let t = target("http://127.0.0.1:8080/");
        let lo: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(permitted(&by_ip, &t, &[lo]).unwrap(), vec![lo]);

        // An allowed name that resolves to loopback or metadata is refused.
        let by_name = Destination::parse("http://localhost:8080").unwrap();
        let err = permitted(&by_name, &target("http://localhost:8080"), &[lo]).unwrap_err();
        assert!(err.contains("127.0.0.1, a loopback address"), "{err}");
        let meta: SocketAddr = "169.254.169.254:80".parse().unwrap();
        let any = Destination::parse("http://*.example.com").unwrap();
        let err = permitted(&any, &target("http://evil.example.com"), &[meta]).unwrap_err();
        assert!(err.contains("cloud metadata"), "{err}");

        // Mixed answers keep only the public addresses.
        let public: SocketAddr = "93.184.216.34:80".parse().unwrap();
        assert_eq!(
            permitted(&any, &target("http://www.example.com"), &[meta, public]).unwrap(),
            vec![public]
        );
    }
}
