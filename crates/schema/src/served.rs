//! `mcpplus:host/prompts` and `mcpplus:host/resources` values ⇄ MCP JSON
//! (`Prompt`, `GetPromptResult`, `Resource`, `ResourceTemplate`,
//! `ResourceContents`). The WIT records map 1:1 to the MCP shapes (see
//! wit/host.wit); this module only knows those shapes, no protocol or runtime.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value, json};
use wasmtime::component::Val;

use crate::content::content_block_json;

/// Why a guest's `get-prompt` or `read-resource` gave no result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServedError {
    /// `not-found`: no such prompt or resource.
    NotFound,
    /// `invalid-arguments(text)` (prompts only).
    InvalidArguments(String),
    /// `failed(text)`.
    Failed(String),
}

/// The `arguments` of `get-prompt`: the client's argument object as
/// `list<tuple<string, string>>` (non-string values as their JSON text).
pub fn prompt_arguments_value(arguments: Option<&Map<String, Value>>) -> Val {
    let pairs = arguments
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Val::Tuple(vec![Val::String(k.clone()), Val::String(v)])
        })
        .collect();
    Val::List(pairs)
}

/// `list<prompt>` → MCP `Prompt` objects.
pub fn prompts_json(val: &Val) -> Result<Vec<Value>, String> {
    list(val)?
        .iter()
        .map(|p| {
            let f = record(p)?;
            let mut prompt = json!({"name": string(field(f, "name")?)?});
            optional_string(&mut prompt, f, "title", "title")?;
            optional_string(&mut prompt, f, "description", "description")?;
            let arguments = list(field(f, "arguments")?)?
                .iter()
                .map(|a| {
                    let f = record(a)?;
                    let mut arg = json!({"name": string(field(f, "name")?)?});
                    optional_string(&mut arg, f, "title", "title")?;
                    optional_string(&mut arg, f, "description", "description")?;
                    if let Val::Bool(true) = field(f, "required")? {
                        arg["required"] = json!(true);
                    }
                    Ok(arg)
                })
                .collect::<Result<Vec<_>, String>>()?;
            if !arguments.is_empty() {
                prompt["arguments"] = Value::Array(arguments);
            }
            Ok(prompt)
        })
        .collect()
}

/// `result<prompt-result, prompt-error>` → an MCP `GetPromptResult` (without
/// `resultType`), or the guest's error.
pub fn prompt_result_json(val: &Val) -> Result<Result<Value, ServedError>, String> {
    match result(val)? {
        Ok(ok) => {
            let f = record(ok.ok_or("prompt-result missing")?)?;
            let messages = list(field(f, "messages")?)?
                .iter()
                .map(|m| {
                    let f = record(m)?;
                    let role = match field(f, "role")? {
                        Val::Enum(r) => r.clone(),
                        other => return Err(format!("expected a role, got {other:?}")),
                    };
                    Ok(json!({"role": role, "content": content_block_json(field(f, "content")?)?}))
                })
                .collect::<Result<Vec<_>, String>>()?;
            let mut out = json!({"messages": messages});
            optional_string(&mut out, f, "description", "description")?;
            Ok(Ok(out))
        }
        Err(err) => Ok(Err(served_error(err)?)),
    }
}

/// `list<resource>` → MCP `Resource` objects.
pub fn resources_json(val: &Val) -> Result<Vec<Value>, String> {
    list(val)?
        .iter()
        .map(|r| {
            let f = record(r)?;
            let mut res = json!({
                "uri": string(field(f, "uri")?)?,
                "name": string(field(f, "name")?)?,
            });
            optional_string(&mut res, f, "title", "title")?;
            optional_string(&mut res, f, "description", "description")?;
            optional_string(&mut res, f, "mime-type", "mimeType")?;
            if let Val::Option(Some(size)) = field(f, "size")? {
                match size.as_ref() {
                    Val::U64(n) => res["size"] = json!(n),
                    other => return Err(format!("expected a u64 size, got {other:?}")),
                }
            }
            Ok(res)
        })
        .collect()
}

/// `list<resource-template>` → MCP `ResourceTemplate` objects.
pub fn resource_templates_json(val: &Val) -> Result<Vec<Value>, String> {
    list(val)?
        .iter()
        .map(|t| {
            let f = record(t)?;
            let mut tpl = json!({
                "uriTemplate": string(field(f, "uri-template")?)?,
                "name": string(field(f, "name")?)?,
            });
            optional_string(&mut tpl, f, "title", "title")?;
            optional_string(&mut tpl, f, "description", "description")?;
            optional_string(&mut tpl, f, "mime-type", "mimeType")?;
            Ok(tpl)
        })
        .collect()
}

/// `result<list<resource-contents>, resource-error>` → MCP `ResourceContents`
/// objects (`text` or base64 `blob`), or the guest's error.
pub fn resource_contents_json(val: &Val) -> Result<Result<Vec<Value>, ServedError>, String> {
    match result(val)? {
        Ok(ok) => {
            let contents = list(ok.ok_or("resource contents missing")?)?
                .iter()
                .map(|c| {
                    let f = record(c)?;
                    let mut out = json!({"uri": string(field(f, "uri")?)?});
                    optional_string(&mut out, f, "mime-type", "mimeType")?;
                    match field(f, "data")? {
                        Val::Variant(kind, Some(data)) if kind == "text" => {
                            out["text"] = json!(string(data)?)
                        }
                        Val::Variant(kind, Some(data)) if kind == "blob" => {
                            out["blob"] = json!(BASE64.encode(bytes(data)?))
                        }
                        other => return Err(format!("malformed resource data {other:?}")),
                    }
                    Ok(out)
                })
                .collect::<Result<Vec<_>, String>>()?;
            Ok(Ok(contents))
        }
        Err(err) => Ok(Err(served_error(err)?)),
    }
}

fn served_error(err: Option<&Val>) -> Result<ServedError, String> {
    match err.ok_or("error value missing")? {
        Val::Variant(case, None) if case == "not-found" => Ok(ServedError::NotFound),
        Val::Variant(case, Some(text)) if case == "invalid-arguments" => {
            Ok(ServedError::InvalidArguments(string(text)?.to_string()))
        }
        Val::Variant(case, Some(text)) if case == "failed" => {
            Ok(ServedError::Failed(string(text)?.to_string()))
        }
        other => Err(format!("unexpected error value {other:?}")),
    }
}

type ResultVal<'a> = Result<Option<&'a Val>, Option<&'a Val>>;

fn result(val: &Val) -> Result<ResultVal<'_>, String> {
    match val {
        Val::Result(Ok(v)) => Ok(Ok(v.as_deref())),
        Val::Result(Err(e)) => Ok(Err(e.as_deref())),
        other => Err(format!("expected a result, got {other:?}")),
    }
}

fn list(val: &Val) -> Result<&[Val], String> {
    match val {
        Val::List(items) => Ok(items),
        other => Err(format!("expected a list, got {other:?}")),
    }
}

fn record(val: &Val) -> Result<&[(String, Val)], String> {
    match val {
        Val::Record(fields) => Ok(fields),
        other => Err(format!("expected a record, got {other:?}")),
    }
}

fn field<'a>(fields: &'a [(String, Val)], name: &str) -> Result<&'a Val, String> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .ok_or(format!("record lacks `{name}`"))
}

fn string(v: &Val) -> Result<&str, String> {
    match v {
        Val::String(s) => Ok(s),
        other => Err(format!("expected a string, got {other:?}")),
    }
}

/// Copy `option<string>` field `name` to `out[key]` when it is `some`.
fn optional_string(
    out: &mut Value,
    fields: &[(String, Val)],
    name: &str,
    key: &str,
) -> Result<(), String> {
    match field(fields, name)? {
        Val::Option(Some(v)) => out[key] = json!(string(v)?),
        Val::Option(None) => {}
        other => return Err(format!("expected an option for `{name}`, got {other:?}")),
    }
    Ok(())
}

fn bytes(v: &Val) -> Result<Vec<u8>, String> {
    match v {
        Val::List(items) => items
            .iter()
            .map(|b| match b {
                Val::U8(b) => Ok(*b),
                other => Err(format!("expected bytes, got {other:?}")),
            })
            .collect(),
        other => Err(format!("expected bytes, got {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn some(s: &str) -> Val {
        Val::Option(Some(Box::new(Val::String(s.into()))))
    }

    #[test]
    fn prompts_map_to_mcp_prompts() {
        let val = Val::List(vec![Val::Record(vec![
            ("name".into(), Val::String("p".into())),
            ("title".into(), Val::Option(None)),
            ("description".into(), some("a prompt")),
            (
                "arguments".into(),
                Val::List(vec![Val::Record(vec![
                    ("name".into(), Val::String("a".into())),
                    ("title".into(), Val::Option(None)),
                    ("description".into(), Val::Option(None)),
                    ("required".into(), Val::Bool(true)),
                ])]),
            ),
        ])]);
        assert_eq!(
            prompts_json(&val).unwrap(),
            vec![json!({"name": "p", "description": "a prompt",
                "arguments": [{"name": "a", "required": true}]})]
        );
    }

    #[test]
    fn contents_and_errors() {
        let ok = Val::Result(Ok(Some(Box::new(Val::List(vec![Val::Record(vec![
            ("uri".into(), Val::String("x://b".into())),
            ("mime-type".into(), some("image/png")),
            (
                "data".into(),
                Val::Variant("blob".into(), Some(Box::new(Val::List(vec![Val::U8(1)])))),
            ),
        ])])))));
        assert_eq!(
            resource_contents_json(&ok).unwrap().unwrap(),
            vec![json!({"uri": "x://b", "mimeType": "image/png", "blob": "AQ=="})]
        );
        let missing = Val::Result(Err(Some(Box::new(Val::Variant("not-found".into(), None)))));
        assert_eq!(
            resource_contents_json(&missing).unwrap(),
            Err(ServedError::NotFound)
        );
    }

    #[test]
    fn arguments_become_pairs() {
        let args = json!({"a": "x", "n": 1});
        let Val::List(pairs) = prompt_arguments_value(args.as_object()) else {
            panic!()
        };
        assert_eq!(pairs.len(), 2);
    }
}
