//! The `${…}` placeholders inside step `inputs`, `when`, `for_each` and the
//! workflow `output` (docs/workflows.md, design §3.3).
//!
//! Grammar:
//! - `${steps.<id>.result|output|status|error[<pointer>]}`, where the
//!   pointer is an RFC 6901 JSON Pointer starting with `/`
//!   (`${steps.fetch.result/body/items}`; `~0` is `~`, `~1` is `/`);
//! - `${item[<pointer>]}` and `${index}`, inside a step with `for_each`;
//! - `${workflow.id}`;
//! - `${params.<name>}`: template parameters, substituted when a template is
//!   instantiated (see `template`), so an error at run time;
//! - `$${` is a literal `${`.
//!
//! A placeholder ends at the first `}`, so a key containing `}` cannot be
//! addressed by a pointer.
//!
//! Meaning: a JSON string that is exactly one placeholder becomes the typed
//! JSON value; placeholders embedded in a longer string become text (strings
//! raw, anything else as compact JSON). Resolution works on parsed JSON
//! values and never re-parses what it substituted, so a value containing
//! `${` stays literal. Object keys are never scanned.

use std::collections::BTreeSet;
use std::fmt;

use serde_json::Value;

use crate::spec::is_valid_step_id;

/// What a placeholder may be, quoted in syntax errors.
pub const ALLOWED: &str = "${steps.<id>.result|output|status|error[/json/pointer]}, \
     ${item[/json/pointer]}, ${index}, ${workflow.id}, ${params.<name>} (templates only), \
     and $${ for a literal ${";

/// The longest text quoted in an error message.
const QUOTE_LIMIT: usize = 200;
/// At most this many keys are listed when a path is missing.
const KEYS_LIMIT: usize = 50;

/// Which part of a finished step a placeholder reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StepField {
    /// The CallToolResult's `structuredContent`, or its text when there is none.
    Result,
    /// The whole CallToolResult.
    Output,
    /// The step's state (`completed`, `failed`, …).
    Status,
    /// The step's error.
    Error,
}

impl StepField {
    pub const ALL: [StepField; 4] = [Self::Result, Self::Output, Self::Status, Self::Error];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Result => "result",
            Self::Output => "output",
            Self::Status => "status",
            Self::Error => "error",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.as_str() == text)
    }
}

impl fmt::Display for StepField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One parsed `${…}`. Pointers are kept as written (escaped, RFC 6901), empty for the whole value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Placeholder {
    Step {
        step: String,
        field: StepField,
        pointer: String,
    },
    Item {
        pointer: String,
    },
    Index,
    WorkflowId,
    Param {
        name: String,
    },
}

impl fmt::Display for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Step {
                step,
                field,
                pointer,
            } => write!(f, "${{steps.{step}.{field}{pointer}}}"),
            Self::Item { pointer } => write!(f, "${{item{pointer}}}"),
            Self::Index => f.write_str("${index}"),
            Self::WorkflowId => f.write_str("${workflow.id}"),
            Self::Param { name } => write!(f, "${{params.{name}}}"),
        }
    }
}

impl Placeholder {
    /// Parses the text between `${` and `}`.
    pub fn parse_body(body: &str) -> Result<Self, ReferenceError> {
        parse_body(body).map_err(|reason| ReferenceError::Syntax {
            placeholder: quote(&format!("${{{body}}}")),
            reason,
        })
    }
}

/// Why a reference could not be parsed or resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error(
        "unterminated placeholder in {text}: the `${{` at byte {at} has no closing `}}` \
         (write `$${{` for a literal `${{`)"
    )]
    Unterminated { text: String, at: usize },
    #[error("invalid placeholder `{placeholder}`: {reason}; allowed are {ALLOWED}", ALLOWED = ALLOWED)]
    Syntax { placeholder: String, reason: String },
    #[error(
        "`{placeholder}`: step {step} has no {field} to read \
         (it has not finished, or is not a step of this workflow)"
    )]
    StepUnavailable {
        placeholder: String,
        step: String,
        field: StepField,
    },
    #[error("`{placeholder}`: nothing at path {path}; the deepest existing point is {found}")]
    MissingPath {
        placeholder: String,
        /// The pointer asked for.
        path: String,
        /// The longest prefix of `path` that exists ("" for the whole value).
        reached: String,
        /// What is at `reached`: its keys, or its length, or its type.
        found: String,
    },
    #[error("`{placeholder}` is only available in a step with `for_each`")]
    OutsideForEach { placeholder: String },
    #[error(
        "`{placeholder}` is a template parameter: parameters are substituted when a template \
         is instantiated and cannot be resolved at run time"
    )]
    ParamAtRunTime { placeholder: String },
}

impl ReferenceError {
    /// Whether this is a reference that is well formed but does not resolve
    /// now (a step without that field, or a missing path): what `exists` tests.
    pub fn is_missing(&self) -> bool {
        matches!(
            self,
            Self::StepUnavailable { .. } | Self::MissingPath { .. }
        )
    }
}

/// A piece of a string: literal text or a placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'a> {
    /// Literal text as written: `$${` still stands for `${` (see [`Token::text`]).
    Literal(&'a str),
    /// The text between `${` and `}`.
    Placeholder(&'a str),
}

impl Token<'_> {
    /// The token as written in the source.
    pub fn raw(&self) -> String {
        match self {
            Token::Literal(raw) => (*raw).to_owned(),
            Token::Placeholder(body) => format!("${{{body}}}"),
        }
    }
}

/// Splits a string into literal text and placeholders. `$${` stays in a
/// literal (decode it with [`unescape`]); an unterminated `${` is an error.
pub fn tokenize(text: &str) -> Result<Vec<Token<'_>>, ReferenceError> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut literal_start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
        } else if bytes[i..].starts_with(b"$${") {
            i += 3;
        } else if bytes[i..].starts_with(b"${") {
            let Some(close) = text[i + 2..].find('}') else {
                return Err(ReferenceError::Unterminated {
                    text: quote_json(text),
                    at: i,
                });
            };
            if literal_start < i {
                tokens.push(Token::Literal(&text[literal_start..i]));
            }
            tokens.push(Token::Placeholder(&text[i + 2..i + 2 + close]));
            i += 2 + close + 1;
            literal_start = i;
        } else {
            i += 1;
        }
    }
    if literal_start < text.len() {
        tokens.push(Token::Literal(&text[literal_start..]));
    }
    Ok(tokens)
}

/// Decodes literal text: `$${` becomes `${`.
pub fn unescape(literal: &str) -> String {
    literal.replace("$${", "${")
}

/// Escapes text so that it stays literal when resolved: `${` becomes `$${`.
pub fn escape(text: &str) -> String {
    text.replace("${", "$${")
}

/// Escapes every string inside a value (not object keys, which are never scanned).
pub fn escape_value(value: &Value) -> Value {
    match value {
        Value::String(s) if s.contains("${") => Value::String(escape(s)),
        Value::Array(items) => Value::Array(items.iter().map(escape_value).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), escape_value(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Every placeholder in a JSON value, in document order (object keys are not scanned).
pub fn parse_placeholders(value: &Value) -> Result<Vec<Placeholder>, ReferenceError> {
    let mut found = Vec::new();
    visit_strings(value, &mut |s| {
        for token in tokenize(s)? {
            if let Token::Placeholder(body) = token {
                found.push(Placeholder::parse_body(body)?);
            }
        }
        Ok(())
    })?;
    Ok(found)
}

/// The ids of the steps a value refers to.
pub fn referenced_steps(value: &Value) -> Result<BTreeSet<String>, ReferenceError> {
    Ok(parse_placeholders(value)?
        .into_iter()
        .filter_map(|p| match p {
            Placeholder::Step { step, .. } => Some(step),
            _ => None,
        })
        .collect())
}

fn visit_strings(
    value: &Value,
    f: &mut dyn FnMut(&str) -> Result<(), ReferenceError>,
) -> Result<(), ReferenceError> {
    match value {
        Value::String(s) => f(s),
        Value::Array(items) => items.iter().try_for_each(|v| visit_strings(v, f)),
        Value::Object(map) => map.values().try_for_each(|v| visit_strings(v, f)),
        _ => Ok(()),
    }
}

/// What a placeholder can read at run time.
pub trait Scope {
    /// A field of a step, or `None` when the step has none (not finished, unknown).
    fn step(&self, id: &str, field: StepField) -> Option<Value>;
    /// The current item, inside a step with `for_each`.
    fn item(&self) -> Option<&Value>;
    /// The current item's index, inside a step with `for_each`.
    fn index(&self) -> Option<usize>;
    fn workflow_id(&self) -> &str;
}

/// Resolves every placeholder in a value (see the module docs for the rules).
pub fn resolve(value: &Value, scope: &dyn Scope) -> Result<Value, ReferenceError> {
    match value {
        Value::String(s) => resolve_str(s, scope),
        Value::Array(items) => items
            .iter()
            .map(|v| resolve(v, scope))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| Ok((k.clone(), resolve(v, scope)?)))
            .collect::<Result<serde_json::Map<_, _>, _>>()
            .map(Value::Object),
        other => Ok(other.clone()),
    }
}

/// Resolves one string: a lone placeholder gives its typed value, anything else text.
pub fn resolve_str(text: &str, scope: &dyn Scope) -> Result<Value, ReferenceError> {
    let tokens = tokenize(text)?;
    if let [Token::Placeholder(body)] = tokens.as_slice() {
        return resolve_placeholder(body, scope);
    }
    let mut out = String::with_capacity(text.len());
    for token in tokens {
        match token {
            Token::Literal(raw) => out.push_str(&unescape(raw)),
            Token::Placeholder(body) => match resolve_placeholder(body, scope)? {
                Value::String(s) => out.push_str(&s),
                other => out.push_str(&other.to_string()),
            },
        }
    }
    Ok(Value::String(out))
}

/// Resolves the text between `${` and `}`.
pub fn resolve_placeholder(body: &str, scope: &dyn Scope) -> Result<Value, ReferenceError> {
    let placeholder = Placeholder::parse_body(body)?;
    let shown = || quote(&format!("${{{body}}}"));
    match &placeholder {
        Placeholder::Step {
            step,
            field,
            pointer,
        } => {
            let root = scope
                .step(step, *field)
                .ok_or_else(|| ReferenceError::StepUnavailable {
                    placeholder: shown(),
                    step: step.clone(),
                    field: *field,
                })?;
            lookup(&root, pointer, &shown())
        }
        Placeholder::Item { pointer } => {
            let item = scope.item().ok_or_else(|| ReferenceError::OutsideForEach {
                placeholder: shown(),
            })?;
            lookup(item, pointer, &shown())
        }
        Placeholder::Index => {
            scope
                .index()
                .map(Value::from)
                .ok_or_else(|| ReferenceError::OutsideForEach {
                    placeholder: shown(),
                })
        }
        Placeholder::WorkflowId => Ok(Value::String(scope.workflow_id().to_owned())),
        Placeholder::Param { .. } => Err(ReferenceError::ParamAtRunTime {
            placeholder: shown(),
        }),
    }
}

/// Follows a (validated) RFC 6901 pointer, naming what exists where it stops.
fn lookup(root: &Value, pointer: &str, placeholder: &str) -> Result<Value, ReferenceError> {
    let mut current = root;
    let mut reached = 0; // byte length of the pointer prefix that exists
    if !pointer.is_empty() {
        for raw in pointer[1..].split('/') {
            let token = decode_token(raw);
            let next = match current {
                Value::Object(map) => map.get(&token),
                Value::Array(items) => array_index(&token).and_then(|i| items.get(i)),
                _ => None,
            };
            match next {
                Some(v) => {
                    current = v;
                    reached += 1 + raw.len();
                }
                None => {
                    let reached = &pointer[..reached];
                    return Err(ReferenceError::MissingPath {
                        placeholder: placeholder.to_owned(),
                        path: pointer.to_owned(),
                        reached: reached.to_owned(),
                        found: describe(reached, current),
                    });
                }
            }
        }
    }
    Ok(current.clone())
}

fn array_index(token: &str) -> Option<usize> {
    let digits = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
    if !digits || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    token.parse().ok()
}

fn describe(at: &str, value: &Value) -> String {
    let at = if at.is_empty() {
        "(the whole value)"
    } else {
        at
    };
    match value {
        Value::Object(map) if map.is_empty() => format!("{at}, an empty object"),
        Value::Object(map) => {
            let mut keys: Vec<String> =
                map.keys().take(KEYS_LIMIT).map(|k| quote_json(k)).collect();
            if map.len() > KEYS_LIMIT {
                keys.push(format!("… and {} more", map.len() - KEYS_LIMIT));
            }
            format!("{at}, an object with keys {}", keys.join(", "))
        }
        Value::Array(items) => format!(
            "{at}, an array of length {} (indexes are 0 to {})",
            items.len(),
            items.len().saturating_sub(1)
        ),
        other => format!(
            "{at}, {} {} (which has no members)",
            article(json_type(other)),
            json_type(other)
        ),
    }
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// `~1` is `/`, `~0` is `~` (RFC 6901 §4; the pointer was validated).
fn decode_token(raw: &str) -> String {
    if raw.contains('~') {
        raw.replace("~1", "/").replace("~0", "~")
    } else {
        raw.to_owned()
    }
}

fn validate_pointer(pointer: &str) -> Result<(), String> {
    let bytes = pointer.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'~' && !matches!(bytes.get(i + 1), Some(b'0' | b'1')) {
            return Err(format!(
                "`~` at byte {i} of the JSON pointer {} must be followed by 0 (for `~`) or 1 (for `/`)",
                quote(pointer)
            ));
        }
    }
    Ok(())
}

/// Whether `name` may name a template parameter: `[A-Za-z0-9_-]{1,64}`, the step-id rule.
pub fn is_valid_parameter_name(name: &str) -> bool {
    is_valid_step_id(name)
}

fn parse_body(body: &str) -> Result<Placeholder, String> {
    match body {
        "" => return Err("the placeholder is empty".into()),
        "index" => return Ok(Placeholder::Index),
        "workflow.id" => return Ok(Placeholder::WorkflowId),
        "item" => {
            return Ok(Placeholder::Item {
                pointer: String::new(),
            });
        }
        _ => {}
    }
    if let Some(pointer) = body.strip_prefix("item/") {
        let pointer = format!("/{pointer}");
        validate_pointer(&pointer)?;
        return Ok(Placeholder::Item { pointer });
    }
    if body.starts_with("item.") || body.starts_with("item[") {
        return Err(format!(
            "a path into the item is a JSON pointer, like ${{item/{}}}",
            &body[5..]
        ));
    }
    if let Some(rest) = body.strip_prefix("steps.") {
        let Some((step, rest)) = rest.split_once('.') else {
            return Err(format!(
                "expected steps.<id>.<field>, like ${{steps.{rest}.result}}"
            ));
        };
        if !is_valid_step_id(step) {
            return Err(format!(
                "step id {} must match [A-Za-z0-9_-]{{1,64}}",
                quote_json(step)
            ));
        }
        let (field, pointer) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        let Some(field) = StepField::parse(field) else {
            let hint = match field.split_once('.') {
                Some((head, tail)) if StepField::parse(head).is_some() => format!(
                    " (a path after the field is a JSON pointer: ${{steps.{step}.{head}/{}}})",
                    tail.replace('.', "/")
                ),
                _ => String::new(),
            };
            return Err(format!(
                "unknown step field {} (allowed: result, output, status, error){hint}",
                quote_json(field)
            ));
        };
        validate_pointer(pointer)?;
        return Ok(Placeholder::Step {
            step: step.to_owned(),
            field,
            pointer: pointer.to_owned(),
        });
    }
    if let Some(name) = body.strip_prefix("params.") {
        if !is_valid_parameter_name(name) {
            return Err(format!(
                "parameter name {} must match [A-Za-z0-9_-]{{1,64}}",
                quote_json(name)
            ));
        }
        return Ok(Placeholder::Param {
            name: name.to_owned(),
        });
    }
    if body.trim() != body {
        return Err("spaces are not allowed inside ${…}".into());
    }
    if body == "steps" || body == "workflow" || body == "params" {
        return Err(format!("`{body}` needs a member"));
    }
    Err("unknown placeholder".into())
}

/// A value's JSON type name.
pub fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Text cut to a readable length for an error message.
pub(crate) fn quote(text: &str) -> String {
    if text.len() <= QUOTE_LIMIT {
        return text.to_owned();
    }
    let mut end = QUOTE_LIMIT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// A string as a JSON literal, cut to a readable length.
pub(crate) fn quote_json(text: &str) -> String {
    quote(&Value::String(text.to_owned()).to_string())
}

/// A value as compact JSON, cut to a readable length.
pub(crate) fn show(value: &Value) -> String {
    quote(&value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_keep_escapes_raw() {
        let tokens = tokenize("a $${x} ${index} b").unwrap();
        assert_eq!(
            tokens,
            vec![
                Token::Literal("a $${x} "),
                Token::Placeholder("index"),
                Token::Literal(" b"),
            ]
        );
        assert_eq!(unescape("a $${x} "), "a ${x} ");
    }

    #[test]
    fn pointer_tokens_decode_in_rfc_order() {
        assert_eq!(decode_token("~01"), "~1");
        assert_eq!(decode_token("a~1b"), "a/b");
        assert_eq!(decode_token("~0~1"), "~/");
    }

    #[test]
    fn array_indexes_refuse_leading_zeros_and_signs() {
        assert_eq!(array_index("0"), Some(0));
        assert_eq!(array_index("12"), Some(12));
        assert_eq!(array_index("01"), None);
        assert_eq!(array_index("-"), None);
        assert_eq!(array_index("+1"), None);
        assert_eq!(array_index(""), None);
    }

    #[test]
    fn quote_cuts_on_a_char_boundary() {
        let long = "é".repeat(300);
        let q = quote(&long);
        assert!(q.ends_with('…'));
        assert!(q.len() <= QUOTE_LIMIT + '…'.len_utf8());
    }

    /// Below clippy's `result_large_err` threshold (128 bytes), so callers may return it.
    #[test]
    fn the_error_stays_small() {
        assert!(
            std::mem::size_of::<ReferenceError>() < 128,
            "{}",
            std::mem::size_of::<ReferenceError>()
        );
    }
}
