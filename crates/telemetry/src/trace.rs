//! W3C Trace Context: the `traceparent` a client sends in a request's `_meta`
//! (or one we start), carried into every log line of the call.

use std::fmt;

/// `version-traceid-spanid-flags`, e.g.
/// `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: u128,
    /// This call's own span.
    pub span_id: u64,
    /// The caller's span, when the trace came from the client.
    pub parent_span_id: Option<u64>,
    pub sampled: bool,
}

impl TraceContext {
    /// Continue the client's trace (a new span under its span), or start one.
    pub fn for_call(traceparent: Option<&str>) -> Self {
        match traceparent.and_then(parse) {
            Some((trace_id, parent, sampled)) => TraceContext {
                trace_id,
                span_id: random_nonzero_u64(),
                parent_span_id: Some(parent),
                sampled,
            },
            None => TraceContext {
                trace_id: (u128::from(random_nonzero_u64()) << 64)
                    | u128::from(random_nonzero_u64()),
                span_id: random_nonzero_u64(),
                parent_span_id: None,
                sampled: true,
            },
        }
    }

    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    pub fn span_id_hex(&self) -> String {
        format!("{:016x}", self.span_id)
    }
}

/// The `traceparent` for calls this one makes (outbound requests, queued tasks).
impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        )
    }
}

/// (trace id, parent span id, sampled) of a valid version-00 `traceparent`.
fn parse(text: &str) -> Option<(u128, u64, bool)> {
    let mut parts = text.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2
        || version == "ff"
        || trace.len() != 32
        || span.len() != 16
        || flags.len() != 2
    {
        return None;
    }
    // Version 00 has exactly four fields; later versions may add more.
    if version == "00" && parts.next().is_some() {
        return None;
    }
    let hex = |s: &str| {
        s.chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    };
    if !(hex(version) && hex(trace) && hex(span) && hex(flags)) {
        return None;
    }
    let trace_id = u128::from_str_radix(trace, 16).ok().filter(|t| *t != 0)?;
    let span_id = u64::from_str_radix(span, 16).ok().filter(|s| *s != 0)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((trace_id, span_id, flags & 1 == 1))
}

fn random_nonzero_u64() -> u64 {
    loop {
        let mut bytes = [0u8; 8];
        if getrandom(&mut bytes) {
            let n = u64::from_le_bytes(bytes);
            if n != 0 {
                return n;
            }
        }
    }
}

/// Random bytes from the standard library's hasher seeds (no extra dependency;
/// trace ids need uniqueness, not secrecy).
fn getrandom(out: &mut [u8; 8]) -> bool {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    *out = h.finish().to_le_bytes();
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_trace_is_continued() {
        let t = TraceContext::for_call(Some(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ));
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.parent_span_id, Some(0x00f067aa0ba902b7));
        assert_ne!(t.span_id, 0x00f067aa0ba902b7);
        assert!(t.sampled);
        let s = t.to_string();
        assert!(
            s.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && s.ends_with("-01"),
            "{s}"
        );
    }

    #[test]
    fn bad_traceparents_start_a_new_trace() {
        for bad in [
            "",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "garbage",
        ] {
            let t = TraceContext::for_call(Some(bad));
            assert_eq!(t.parent_span_id, None, "{bad}");
            assert_ne!(t.trace_id, 0);
        }
        let a = TraceContext::for_call(None);
        let b = TraceContext::for_call(None);
        assert_ne!(a.trace_id, b.trace_id);
    }
}
