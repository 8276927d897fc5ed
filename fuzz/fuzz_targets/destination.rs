//! The outbound grant matcher: a grant (`scheme://host[:port]`, wildcards)
//! and a request's scheme, host and port, both from the input. Parsing never
//! panics, and a grant for an exact host allows that host and port.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mcpplus_policy::{Destination, HostPattern, Scheme};

fuzz_target!(|input: (&str, &str, u16, bool)| {
    let (grant, host, port, https) = input;
    let scheme = if https { Scheme::Https } else { Scheme::Http };
    if let Ok(destination) = Destination::parse(grant) {
        let _ = destination.allows(scheme, host, port);
        if let HostPattern::Exact(name) = &destination.host
            && let Some(granted_port) = destination.port
        {
            assert!(
                destination.allows(destination.scheme, name, granted_port),
                "{grant} does not allow its own host"
            );
        }
    }
});
