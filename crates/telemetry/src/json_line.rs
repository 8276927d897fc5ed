//! The JSON line writer: builds each line straight into a reused buffer (no
//! intermediate map), with span context pre-rendered once per span. This is the
//! hot path of logging; docs/benchmarks.md has its throughput.

use std::fmt::Write as _;

use tracing::field::{Field, Visit};

use super::redact::{mask_secrets, mask_shapes};

/// Append `s` as a JSON string literal.
pub fn push_json_str(buf: &mut String, s: &str) {
    buf.push('"');
    push_json_escaped(buf, s);
    buf.push('"');
}

/// Append `s` escaped for the inside of a JSON string literal.
fn push_json_escaped(buf: &mut String, s: &str) {
    if !s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        buf.push_str(s);
        return;
    }
    for c in s.chars() {
        match c {
            '"' => buf.push_str("\\\""),
            '\\' => buf.push_str("\\\\"),
            '\n' => buf.push_str("\\n"),
            '\r' => buf.push_str("\\r"),
            '\t' => buf.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(buf, "\\u{:04x}", c as u32);
            }
            c => buf.push(c),
        }
    }
}

/// `s` with secrets and credential shapes masked.
pub fn masked(s: &str) -> std::borrow::Cow<'_, str> {
    let s = match mask_secrets(s) {
        Some(m) => std::borrow::Cow::Owned(m),
        None => std::borrow::Cow::Borrowed(s),
    };
    match mask_shapes(&s) {
        Some(m) => std::borrow::Cow::Owned(m),
        None => s,
    }
}

/// A field rendered as JSON: (name, value text).
pub type Rendered = (&'static str, String);

/// Collects fields as rendered JSON values, masked.
#[derive(Default)]
pub struct RenderVisitor {
    pub fields: Vec<Rendered>,
}

/// The field through which the host hands over a JSON object it rendered (and
/// masked) itself; it is written as `fields`, unquoted. Only host code emits it.
pub const RENDERED_FIELDS: &str = "fields_json";

/// Render `pairs` as a JSON object of strings, masked (for [`RENDERED_FIELDS`]).
pub fn render_fields(pairs: &[(String, String)]) -> String {
    let mut out = String::from("{");
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(&mut out, &masked(k));
        out.push(':');
        push_json_str(&mut out, &masked(v));
    }
    out.push('}');
    out
}

impl RenderVisitor {
    fn put_str(&mut self, field: &Field, value: &str) {
        let mut out = String::with_capacity(value.len() + 2);
        push_json_str(&mut out, &masked(value));
        self.fields.push((field.name(), out));
    }
}

/// Escapes as it is written to, so a formatted value needs no second copy.
struct Escaping<'a>(&'a mut String);

impl std::fmt::Write for Escaping<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        push_json_escaped(self.0, s);
        Ok(())
    }
}

impl Visit for RenderVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == RENDERED_FIELDS {
            self.fields.push(("fields", value.to_string()));
        } else {
            self.put_str(field, value);
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.push((field.name(), value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.push((field.name(), value.to_string()));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        let text = if value.is_finite() {
            serde_json::Value::from(value).to_string()
        } else {
            "null".into()
        };
        self.fields.push((field.name(), text));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.push((field.name(), value.to_string()));
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put_str(field, &value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == RENDERED_FIELDS {
            let mut text = String::new();
            let _ = write!(text, "{value:?}");
            self.fields.push(("fields", text));
            return;
        }
        // Format straight into the escaped output; fall back to masking the raw
        // text only when something there may need it (escaping never creates a
        // marker or a secret, so the escaped text tells).
        let mut out = String::from("\"");
        let _ = write!(Escaping(&mut out), "{value:?}");
        out.push('"');
        if mask_secrets(&out).is_some() || mask_shapes(&out).is_some() {
            let mut text = String::new();
            let _ = write!(text, "{value:?}");
            self.put_str(field, &text);
        } else {
            self.fields.push((field.name(), out));
        }
    }
}

/// An event's fields rendered as JSON into one reused text (no allocation per
/// field once warm): the same values, masked the same way, as [`RenderVisitor`].
#[derive(Default)]
pub struct EventFields {
    text: String,
    /// (name, start, end) of each value in `text`.
    spans: Vec<(&'static str, usize, usize)>,
}

impl EventFields {
    pub fn clear(&mut self) {
        self.text.clear();
        self.spans.clear();
    }

    /// Forget the text if one huge value left it large (keeps the reuse bounded).
    pub fn trim(&mut self) {
        if self.text.capacity() > 64 * 1024 {
            self.text = String::new();
        }
        if self.spans.capacity() > 256 {
            self.spans = Vec::new();
        }
    }

    /// Whether the event set a field of this name.
    pub fn has(&self, name: &str) -> bool {
        self.spans.iter().any(|(n, _, _)| *n == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.spans
            .iter()
            .map(|&(n, start, end)| (n, &self.text[start..end]))
    }

    fn push_with(&mut self, name: &'static str, render: impl FnOnce(&mut String)) {
        let start = self.text.len();
        render(&mut self.text);
        self.spans.push((name, start, self.text.len()));
    }

    fn put_str(&mut self, name: &'static str, value: &str) {
        self.push_with(name, |out| push_json_str(out, &masked(value)));
    }
}

impl Visit for EventFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == RENDERED_FIELDS {
            self.push_with("fields", |out| out.push_str(value));
        } else {
            self.put_str(field.name(), value);
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.push_with(field.name(), |out| push_u64(out, value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.push_with(field.name(), |out| {
            if value < 0 {
                out.push('-');
            }
            push_u64(out, value.unsigned_abs());
        });
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.push_with(field.name(), |out| {
            if value.is_finite() {
                let _ = write!(out, "{}", serde_json::Value::from(value));
            } else {
                out.push_str("null");
            }
        });
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.push_with(field.name(), |out| {
            out.push_str(if value { "true" } else { "false" })
        });
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put_str(field.name(), &value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == RENDERED_FIELDS {
            self.push_with("fields", |out| {
                let _ = write!(out, "{value:?}");
            });
            return;
        }
        // As RenderVisitor: format straight into the escaped output, and redo it
        // from the raw text, masked, only when the prefilter fires.
        let start = self.text.len();
        self.text.push('"');
        let _ = write!(Escaping(&mut self.text), "{value:?}");
        self.text.push('"');
        let out = &self.text[start..];
        if mask_secrets(out).is_some() || mask_shapes(out).is_some() {
            self.text.truncate(start);
            let mut raw = String::new();
            let _ = write!(raw, "{value:?}");
            self.put_str(field.name(), &raw);
        } else {
            self.spans.push((field.name(), start, self.text.len()));
        }
    }
}

/// Append a number in decimal (what `to_string` gives, without the allocation).
pub fn push_u64(buf: &mut String, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    buf.push_str(std::str::from_utf8(&digits[i..]).unwrap_or("0"));
}

/// A span's fields pre-rendered once as `,"name":value` for every field.
pub fn join_fields(fields: &[Rendered]) -> String {
    let mut out = String::new();
    for (name, value) in fields {
        push_field(&mut out, name, value);
    }
    out
}

/// The hot path of [`write_line`], in three parts so spans' fields can be
/// written while their span is borrowed: `ts`, `level` and the opening.
pub fn write_line_start(buf: &mut String, ts: impl FnOnce(&mut String), level: &str) {
    buf.push_str("{\"ts\":\"");
    ts(buf);
    buf.push_str("\",\"level\":\"");
    buf.push_str(level);
    buf.push('"');
}

/// One span's fields (`joined` is [`join_fields`] of `fields`), outermost span
/// first, but not those the event set itself.
pub fn write_span_fields(buf: &mut String, fields: &[Rendered], joined: &str, event: &EventFields) {
    if fields.iter().any(|(name, _)| event.has(name)) {
        for (name, value) in fields {
            if !event.has(name) {
                push_field(buf, name, value);
            }
        }
    } else {
        buf.push_str(joined);
    }
}

/// The event's fields, defaults for `event` and `message`, the schema, the end.
pub fn write_line_end(buf: &mut String, event: &EventFields, default_event: &str, schema: u64) {
    for (name, value) in event.iter() {
        push_field(buf, name, value);
    }
    if !event.has("event") {
        buf.push_str(",\"event\":");
        push_json_str(buf, default_event);
    }
    if !event.has("message") {
        buf.push_str(",\"message\":\"\"");
    }
    buf.push_str(",\"schema\":");
    push_u64(buf, schema);
    buf.push_str("}\n");
}

/// Write one line: fixed fields, the event's fields, then the spans' fields the
/// event did not set itself, then defaults for `event` and `message`.
pub fn write_line(
    buf: &mut String,
    ts: &str,
    level: &str,
    event_fields: &[Rendered],
    span_fields: &[&[Rendered]],
    default_event: &str,
    schema: u64,
) {
    buf.push_str("{\"ts\":\"");
    buf.push_str(ts);
    buf.push_str("\",\"level\":\"");
    buf.push_str(level);
    buf.push('"');
    let set = |name: &str| event_fields.iter().any(|(n, _)| *n == name);
    for fields in span_fields {
        for (name, value) in fields.iter() {
            if !set(name) {
                push_field(buf, name, value);
            }
        }
    }
    for (name, value) in event_fields {
        push_field(buf, name, value);
    }
    if !set("event") {
        buf.push_str(",\"event\":");
        push_json_str(buf, default_event);
    }
    if !set("message") {
        buf.push_str(",\"message\":\"\"");
    }
    let _ = writeln!(buf, ",\"schema\":{schema}}}");
}

fn push_field(buf: &mut String, name: &str, value: &str) {
    buf.push(',');
    push_json_str(buf, name);
    buf.push(':');
    buf.push_str(value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped() {
        let mut b = String::new();
        push_json_str(&mut b, "a\"b\\c\nd\u{1}");
        assert_eq!(b, r#""a\"b\\c\nd\u0001""#);
        let parsed: String = serde_json::from_str(&b).unwrap();
        assert_eq!(parsed, "a\"b\\c\nd\u{1}");
    }

    #[test]
    fn event_fields_win_over_span_fields() {
        let mut b = String::new();
        let span: Vec<Rendered> = vec![("tool", "\"echo\"".into()), ("call_id", "7".into())];
        let event: Vec<Rendered> = vec![("call_id", "8".into()), ("message", "\"hi\"".into())];
        write_line(&mut b, "T", "info", &event, &[&span], "log", 1);
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["call_id"], 8);
        assert_eq!(v["tool"], "echo");
        assert_eq!(v["event"], "log");
        assert_eq!(b.matches("call_id").count(), 1);
    }
}
