//! `mcpplus:host/types.content-block` ⇄ MCP content blocks (JSON).
//!
//! A tool that returns content blocks (or a list of them) is answered with those
//! blocks as the MCP `content` array: text, image, audio and embedded resources.
//! This module only knows the shape of the WIT variant (see wit/host.wit); it has
//! no protocol or runtime logic.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};
use wasmtime::component::Val;

/// Render one `content-block` value as an MCP content block.
pub fn content_block_json(val: &Val) -> Result<Value, String> {
    let Val::Variant(case, Some(payload)) = val else {
        return Err(format!("malformed content-block value {val:?}"));
    };
    match (case.as_str(), payload.as_ref()) {
        ("text", Val::String(text)) => Ok(json!({"type": "text", "text": text})),
        (kind @ ("image" | "audio"), Val::Record(fields)) => Ok(json!({
            "type": kind,
            "data": BASE64.encode(bytes(field(fields, "data")?)?),
            "mimeType": string(field(fields, "mime-type")?)?,
        })),
        ("resource", Val::Record(fields)) => {
            let mut resource = json!({"uri": string(field(fields, "uri")?)?});
            if let Val::Option(Some(mime)) = field(fields, "mime-type")? {
                resource["mimeType"] = json!(string(mime)?);
            }
            match field(fields, "data")? {
                Val::Variant(kind, Some(data)) if kind == "text" => {
                    resource["text"] = json!(string(data)?)
                }
                Val::Variant(kind, Some(data)) if kind == "blob" => {
                    resource["blob"] = json!(BASE64.encode(bytes(data)?))
                }
                other => return Err(format!("malformed resource data {other:?}")),
            }
            Ok(json!({"type": "resource", "resource": resource}))
        }
        _ => Err(format!("malformed content-block value {val:?}")),
    }
}

/// Parse an MCP content block back into a `content-block` value.
pub fn content_block_value(json: &Value) -> Result<Val, String> {
    let kind = json
        .get("type")
        .and_then(Value::as_str)
        .ok_or("expected a content block with a `type`")?;
    let text = |key: &str| {
        json.get(key)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or(format!("content block needs a string `{key}`"))
    };
    let b64 = |v: Option<&Value>, key: &str| {
        let s = v
            .and_then(Value::as_str)
            .ok_or(format!("content block needs a base64 `{key}`"))?;
        let bytes = BASE64
            .decode(s)
            .map_err(|e| format!("`{key}` is not base64: {e}"))?;
        Ok::<_, String>(Val::List(bytes.into_iter().map(Val::U8).collect()))
    };
    let payload = match kind {
        "text" => Val::String(text("text")?),
        "image" | "audio" => Val::Record(vec![
            ("data".into(), b64(json.get("data"), "data")?),
            ("mime-type".into(), Val::String(text("mimeType")?)),
        ]),
        "resource" => {
            let r = json
                .get("resource")
                .ok_or("resource block needs `resource`")?;
            let uri = r
                .get("uri")
                .and_then(Value::as_str)
                .ok_or("resource needs a string `uri`")?;
            let mime = r
                .get("mimeType")
                .and_then(Value::as_str)
                .map(|m| Box::new(Val::String(m.into())));
            let data = match (r.get("text").and_then(Value::as_str), r.get("blob")) {
                (Some(t), _) => Val::Variant("text".into(), Some(Box::new(Val::String(t.into())))),
                (None, Some(b)) => {
                    Val::Variant("blob".into(), Some(Box::new(b64(Some(b), "blob")?)))
                }
                _ => return Err("resource needs `text` or `blob`".into()),
            };
            Val::Record(vec![
                ("uri".into(), Val::String(uri.into())),
                ("mime-type".into(), Val::Option(mime)),
                ("data".into(), data),
            ])
        }
        other => {
            return Err(format!(
                "unknown content block type `{other}`; expected text, image, audio or resource"
            ));
        }
    };
    Ok(Val::Variant(kind.to_string(), Some(Box::new(payload))))
}

fn field<'a>(fields: &'a [(String, Val)], name: &str) -> Result<&'a Val, String> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v)
        .ok_or(format!("content block lacks `{name}`"))
}

fn string(v: &Val) -> Result<&str, String> {
    match v {
        Val::String(s) => Ok(s),
        other => Err(format!("expected a string in content block, got {other:?}")),
    }
}

fn bytes(v: &Val) -> Result<Vec<u8>, String> {
    match v {
        Val::List(items) => items
            .iter()
            .map(|b| {
                if let Val::U8(b) = b {
                    Ok(*b)
                } else {
                    Err(format!("expected bytes, got {b:?}"))
                }
            })
            .collect(),
        other => Err(format!("expected bytes, got {other:?}")),
    }
}
