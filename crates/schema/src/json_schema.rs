//! WIT type → JSON Schema (draft 2020-12), for `inputSchema` and `outputSchema`.
//!
//! The schema describes exactly the JSON that `to_value` accepts and `from_value`
//! produces; the encoding rules are documented in docs/type-mapping.md and checked
//! by property tests. Input and output differ only where the input side is more
//! lenient (bytes as an array, floats' non-finite spellings on output).

use serde_json::{Map, Value, json};

use super::wit_type::{WitType, clean_docs};

/// Which side of a call a schema is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Input,
    Output,
}

/// Strings accepted for non-finite floats (produced on output, accepted on input).
pub const NON_FINITE: [&str; 3] = ["NaN", "Infinity", "-Infinity"];

/// Canonical padded standard base64.
pub const BASE64_PATTERN: &str = "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$";

/// The schema of one value of `ty`.
pub fn schema_for(ty: &WitType, dir: Direction) -> Value {
    match ty {
        WitType::Bool => json!({"type": "boolean"}),
        WitType::S8 => int(i8::MIN as i64, i8::MAX as u64),
        WitType::U8 => int(0, u8::MAX as u64),
        WitType::S16 => int(i16::MIN as i64, i16::MAX as u64),
        WitType::U16 => int(0, u16::MAX as u64),
        WitType::S32 => int(i32::MIN as i64, i32::MAX as u64),
        WitType::U32 => int(0, u32::MAX as u64),
        WitType::S64 => int(i64::MIN, i64::MAX as u64),
        WitType::U64 => int(0, u64::MAX),
        WitType::F32 => float(Some(f32::MAX as f64), dir),
        WitType::F64 => float(None, dir),
        WitType::Char => json!({"type": "string", "minLength": 1, "maxLength": 1}),
        WitType::String => json!({"type": "string"}),
        WitType::List(inner) if **inner == WitType::U8 => {
            let b64 =
                json!({"type": "string", "contentEncoding": "base64", "pattern": BASE64_PATTERN});
            match dir {
                Direction::Output => b64,
                Direction::Input => {
                    json!({"anyOf": [b64, {"type": "array", "items": int(0, 255)}]})
                }
            }
        }
        WitType::List(inner) => json!({"type": "array", "items": schema_for(inner, dir)}),
        WitType::FixedList(inner, n) => json!({
            "type": "array", "items": schema_for(inner, dir), "minItems": n, "maxItems": n
        }),
        // `maxItems` alone bounds the length: a bare `items: false` says the same
        // but is not portable (clients that map schemas to OpenAPI reject it).
        WitType::Tuple(items) => json!({
            "type": "array",
            "prefixItems": items.iter().map(|t| schema_for(t, dir)).collect::<Vec<_>>(),
            "minItems": items.len(),
            "maxItems": items.len(),
        }),
        WitType::Record(r) => {
            let keys: Vec<String> = r.fields.iter().map(|f| f.key()).collect();
            let fields = r
                .fields
                .iter()
                .zip(&keys)
                .map(|(f, key)| (key.as_str(), &f.ty, f.docs.as_deref()));
            let mut schema = object_schema(fields, dir);
            describe(&mut schema, r.docs.as_deref());
            schema
        }
        WitType::Variant(v) => {
            let cases: Vec<Value> = v
                .cases
                .iter()
                .map(|c| {
                    let mut s = match &c.ty {
                        None => json!({"const": c.name}),
                        Some(t) => single_key(&c.name, schema_for(t, dir)),
                    };
                    describe(&mut s, c.docs.as_deref());
                    s
                })
                .collect();
            let mut schema = json!({"oneOf": cases});
            describe(&mut schema, v.docs.as_deref());
            schema
        }
        WitType::Enum(e) => {
            let names: Vec<&str> = e.cases.iter().map(|c| c.0.as_str()).collect();
            let mut schema = json!({"type": "string", "enum": names});
            describe(
                &mut schema,
                docs_with_cases(e.docs.as_deref(), &e.cases).as_deref(),
            );
            schema
        }
        WitType::Flags(f) => {
            let names: Vec<&str> = f.flags.iter().map(|c| c.0.as_str()).collect();
            let mut schema = json!({
                "type": "array", "items": {"type": "string", "enum": names}, "uniqueItems": true
            });
            describe(
                &mut schema,
                docs_with_cases(f.docs.as_deref(), &f.flags).as_deref(),
            );
            schema
        }
        WitType::Option(inner) if inner.json_can_be_null() => json!({
            "anyOf": [{"type": "null"}, single_key("some", schema_for(inner, dir))]
        }),
        WitType::Option(inner) => json!({"anyOf": [schema_for(inner, dir), {"type": "null"}]}),
        WitType::Result { ok, err } => {
            let side = |t: &Option<Box<WitType>>| {
                t.as_ref()
                    .map_or(json!({"type": "null"}), |t| schema_for(t, dir))
            };
            json!({"oneOf": [single_key("ok", side(ok)), single_key("err", side(err))]})
        }
        WitType::ContentBlock => content_block_schema(),
        // Any JSON value, spelled as the six JSON types: an empty schema means the
        // same but reads as "forgot to say" to schema linters and some clients.
        WitType::Json => json!({"anyOf": [
            {"type": "object"}, {"type": "array"}, {"type": "string"},
            {"type": "number"}, {"type": "boolean"}, {"type": "null"}
        ]}),
    }
}

/// The schema of an object whose properties are `fields`; `option` fields are not required.
pub fn object_schema<'a>(
    fields: impl IntoIterator<Item = (&'a str, &'a WitType, Option<&'a str>)>,
    dir: Direction,
) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for (name, ty, docs) in fields {
        let mut s = schema_for(ty, dir);
        describe(&mut s, docs);
        properties.insert(name.to_string(), s);
        if !matches!(ty, WitType::Option(_)) {
            required.push(Value::String(name.to_string()));
        }
    }
    let mut schema = Map::new();
    schema.insert("type".into(), json!("object"));
    schema.insert("properties".into(), Value::Object(properties));
    if !required.is_empty() {
        schema.insert("required".into(), Value::Array(required));
    }
    schema.insert("additionalProperties".into(), json!(false));
    Value::Object(schema)
}

fn int(min: i64, max: u64) -> Value {
    json!({"type": "integer", "minimum": min, "maximum": max})
}

fn float(limit: Option<f64>, dir: Direction) -> Value {
    let mut number = json!({"type": "number"});
    if let Some(limit) = limit {
        number["minimum"] = json!(-limit);
        number["maximum"] = json!(limit);
    }
    match dir {
        Direction::Input => number,
        Direction::Output => json!({"anyOf": [number, {"enum": NON_FINITE}]}),
    }
}

fn single_key(key: &str, schema: Value) -> Value {
    json!({
        "type": "object",
        "properties": {key: schema},
        "required": [key],
        "additionalProperties": false,
    })
}

/// Set `description` unless the schema already has one (a field's doc wins over its type's).
pub fn describe(schema: &mut Value, docs: Option<&str>) {
    if let (Some(docs), Value::Object(map)) = (clean_docs(docs), schema) {
        map.entry("description").or_insert(Value::String(docs));
    }
}

fn docs_with_cases(docs: Option<&str>, cases: &[(String, Option<String>)]) -> Option<String> {
    let documented: Vec<String> = cases
        .iter()
        .filter_map(|(name, doc)| doc.as_ref().map(|d| format!("- `{name}`: {d}")))
        .collect();
    match (docs, documented.is_empty()) {
        (None, true) => None,
        (Some(d), true) => Some(d.to_string()),
        (d, false) => Some(format!(
            "{}{}",
            d.map(|d| format!("{d}\n")).unwrap_or_default(),
            documented.join("\n")
        )),
    }
}

/// An MCP content block as it appears inside structured output.
fn content_block_schema() -> Value {
    json!({
        "type": "object",
        "properties": {"type": {"enum": ["text", "image", "audio", "resource"]}},
        "required": ["type"],
    })
}
