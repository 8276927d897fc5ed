//! JSON ⇄ component values, driven by the tool's WIT types.
//!
//! `to_value` turns a client's JSON arguments into `wasmtime` values and reports the
//! first problem with its path (`arguments.items[2].count: expected u8 (0..=255),
//! got 300`). `from_value` renders a guest's result as JSON following the same
//! encoding, so a value survives the round trip (checked by property tests).

use base64::Engine as _;
use serde_json::{Map, Value, json};
use wasmtime::component::Val;

use super::json_schema::NON_FINITE;
use super::wit_type::WitType;
use crate::content;

/// A JSON value that does not fit the WIT type at `path`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct ConvertError {
    pub path: String,
    pub problem: String,
}

impl ConvertError {
    fn expected(path: &str, ty: &WitType, got: &Value) -> Self {
        Self {
            path: path.to_string(),
            problem: format!("expected {}, got {}", ty.describe(), short(got)),
        }
    }
    fn new(path: &str, problem: impl Into<String>) -> Self {
        Self {
            path: path.to_string(),
            problem: problem.into(),
        }
    }
}

/// Lenient base64: accepts non-canonical trailing bits, requires padding.
const BASE64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// Convert the `arguments` object of a tool call into one value per parameter.
pub fn arguments_to_values(
    arguments: Option<&Map<String, Value>>,
    params: &[(String, WitType)],
) -> Result<Vec<Val>, ConvertError> {
    let empty = Map::new();
    let arguments = arguments.unwrap_or(&empty);
    if let Some(unknown) = arguments
        .keys()
        .find(|k| !params.iter().any(|(p, _)| p == *k))
    {
        let names: Vec<&str> = params.iter().map(|(p, _)| p.as_str()).collect();
        let expected = if names.is_empty() {
            "this tool takes no arguments".to_string()
        } else {
            format!("expected one of: {}", names.join(", "))
        };
        return Err(ConvertError::new(
            &format!("arguments.{unknown}"),
            format!("unknown argument; {expected}"),
        ));
    }
    params
        .iter()
        .map(|(name, ty)| field_value(arguments.get(name), ty, &format!("arguments.{name}")))
        .collect()
}

/// A record field or argument: absent means `none` for options and is an error otherwise.
fn field_value(json: Option<&Value>, ty: &WitType, path: &str) -> Result<Val, ConvertError> {
    match (json, ty) {
        (None, WitType::Option(_)) => Ok(Val::Option(None)),
        (None, _) => Err(ConvertError::new(
            path,
            format!("missing required value (expected {})", ty.describe()),
        )),
        (Some(v), _) => to_value(v, ty, path),
    }
}

/// Convert one JSON value of type `ty`; `path` names it in errors.
pub fn to_value(json: &Value, ty: &WitType, path: &str) -> Result<Val, ConvertError> {
    let bad = || ConvertError::expected(path, ty, json);
    Ok(match ty {
        WitType::Bool => Val::Bool(json.as_bool().ok_or_else(bad)?),
        WitType::S8 => Val::S8(
            integer(json)
                .and_then(|i| i8::try_from(i).ok())
                .ok_or_else(bad)?,
        ),
        WitType::U8 => Val::U8(
            integer(json)
                .and_then(|i| u8::try_from(i).ok())
                .ok_or_else(bad)?,
        ),
        WitType::S16 => Val::S16(
            integer(json)
                .and_then(|i| i16::try_from(i).ok())
                .ok_or_else(bad)?,
        ),
        WitType::U16 => Val::U16(
            integer(json)
                .and_then(|i| u16::try_from(i).ok())
                .ok_or_else(bad)?,
        ),
        WitType::S32 => Val::S32(
            integer(json)
                .and_then(|i| i32::try_from(i).ok())
                .ok_or_else(bad)?,
        ),
        WitType::U32 => Val::U32(
            integer(json)
                .and_then(|i| u32::try_from(i).ok())
                .ok_or_else(bad)?,
        ),
        WitType::S64 => Val::S64(
            integer(json)
                .and_then(|i| i64::try_from(i).ok())
                .ok_or_else(bad)?,
        ),
        WitType::U64 => Val::U64(
            integer(json)
                .and_then(|i| u64::try_from(i).ok())
                .ok_or_else(bad)?,
        ),
        WitType::F32 => {
            let f = float(json).ok_or_else(bad)?;
            if f.is_finite() && f.abs() > f32::MAX as f64 {
                return Err(bad());
            }
            Val::Float32(f as f32)
        }
        WitType::F64 => Val::Float64(float(json).ok_or_else(bad)?),
        WitType::Char => {
            let s = json.as_str().ok_or_else(bad)?;
            let mut chars = s.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Val::Char(c),
                _ => return Err(bad()),
            }
        }
        WitType::String => Val::String(json.as_str().ok_or_else(bad)?.to_string()),
        WitType::List(inner) if **inner == WitType::U8 && json.is_string() => {
            let bytes = BASE64
                .decode(json.as_str().unwrap_or_default())
                .map_err(|e| {
                    ConvertError::new(
                        path,
                        format!("expected {}, got invalid base64 ({e})", ty.describe()),
                    )
                })?;
            Val::List(bytes.into_iter().map(Val::U8).collect())
        }
        WitType::List(inner) => Val::List(elements(json, inner, path, None).ok_or_else(bad)??),
        WitType::FixedList(inner, n) => {
            Val::FixedLengthList(elements(json, inner, path, Some(*n as usize)).ok_or_else(bad)??)
        }
        WitType::Tuple(types) => {
            let items = json
                .as_array()
                .filter(|a| a.len() == types.len())
                .ok_or_else(bad)?;
            Val::Tuple(
                items
                    .iter()
                    .zip(types)
                    .enumerate()
                    .map(|(i, (v, t))| to_value(v, t, &format!("{path}[{i}]")))
                    .collect::<Result<_, _>>()?,
            )
        }
        WitType::Record(record) => {
            let object = json.as_object().ok_or_else(bad)?;
            if let Some(unknown) = object
                .keys()
                .find(|k| !record.fields.iter().any(|f| f.key() == **k))
            {
                let names: Vec<String> = record.fields.iter().map(|f| f.key()).collect();
                return Err(ConvertError::new(
                    &format!("{path}.{unknown}"),
                    format!("unknown field; expected one of: {}", names.join(", ")),
                ));
            }
            Val::Record(
                record
                    .fields
                    .iter()
                    .map(|f| {
                        let key = f.key();
                        Ok((
                            f.name.clone(),
                            field_value(object.get(&key), &f.ty, &format!("{path}.{key}"))?,
                        ))
                    })
                    .collect::<Result<_, _>>()?,
            )
        }
        WitType::Variant(variant) => {
            let (name, payload) = tagged(json).ok_or_else(bad)?;
            let case = variant
                .cases
                .iter()
                .find(|c| c.name == name)
                .ok_or_else(bad)?;
            match (&case.ty, payload) {
                (None, None) => Val::Variant(name.to_string(), None),
                (Some(t), Some(p)) => Val::Variant(
                    name.to_string(),
                    Some(Box::new(to_value(p, t, &format!("{path}.{name}"))?)),
                ),
                _ => return Err(bad()),
            }
        }
        WitType::Enum(e) => {
            let s = json
                .as_str()
                .filter(|s| e.cases.iter().any(|c| c.0 == *s))
                .ok_or_else(bad)?;
            Val::Enum(s.to_string())
        }
        WitType::Flags(f) => {
            let items = json.as_array().ok_or_else(bad)?;
            let mut set = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let name = item
                    .as_str()
                    .filter(|s| f.flags.iter().any(|c| c.0 == *s))
                    .ok_or_else(|| ConvertError::expected(&format!("{path}[{i}]"), ty, item))?;
                if !set.iter().any(|s: &String| s == name) {
                    set.push(name.to_string());
                }
            }
            Val::Flags(set)
        }
        WitType::Option(inner) => match json {
            Value::Null => Val::Option(None),
            _ if inner.json_can_be_null() => {
                let some = single_key(json, "some").ok_or_else(bad)?;
                Val::Option(Some(Box::new(to_value(
                    some,
                    inner,
                    &format!("{path}.some"),
                )?)))
            }
            _ => Val::Option(Some(Box::new(to_value(json, inner, path)?))),
        },
        WitType::Result { ok, err } => {
            let side = |t: &Option<Box<WitType>>,
                        v: &Value,
                        key: &str|
             -> Result<Option<Box<Val>>, ConvertError> {
                match t {
                    None if v.is_null() => Ok(None),
                    None => Err(ConvertError::new(
                        &format!("{path}.{key}"),
                        format!("expected null, got {}", short(v)),
                    )),
                    Some(t) => Ok(Some(Box::new(to_value(v, t, &format!("{path}.{key}"))?))),
                }
            };
            if let Some(v) = single_key(json, "ok") {
                Val::Result(Ok(side(ok, v, "ok")?))
            } else if let Some(v) = single_key(json, "err") {
                Val::Result(Err(side(err, v, "err")?))
            } else {
                return Err(bad());
            }
        }
        WitType::ContentBlock => {
            content::content_block_value(json).map_err(|e| ConvertError::new(path, e))?
        }
        WitType::Json => Val::String(json.to_string()),
    })
}

/// Render a guest value of type `ty` as JSON.
pub fn from_value(val: &Val, ty: &WitType) -> Result<Value, String> {
    let mismatch = || {
        format!(
            "guest returned {val:?} where the WIT type is {}",
            ty.describe()
        )
    };
    Ok(match (ty, val) {
        (WitType::Bool, Val::Bool(b)) => json!(b),
        (WitType::S8, Val::S8(i)) => json!(i),
        (WitType::U8, Val::U8(i)) => json!(i),
        (WitType::S16, Val::S16(i)) => json!(i),
        (WitType::U16, Val::U16(i)) => json!(i),
        (WitType::S32, Val::S32(i)) => json!(i),
        (WitType::U32, Val::U32(i)) => json!(i),
        (WitType::S64, Val::S64(i)) => json!(i),
        (WitType::U64, Val::U64(i)) => json!(i),
        (WitType::F32, Val::Float32(f)) => float_json(*f as f64),
        (WitType::F64, Val::Float64(f)) => float_json(*f),
        (WitType::Char, Val::Char(c)) => json!(c.to_string()),
        (WitType::String, Val::String(s)) => json!(s),
        (WitType::List(inner), Val::List(items)) if **inner == WitType::U8 => {
            let bytes: Vec<u8> = items
                .iter()
                .map(|v| {
                    if let Val::U8(b) = v {
                        Ok(*b)
                    } else {
                        Err(mismatch())
                    }
                })
                .collect::<Result<_, _>>()?;
            json!(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        (WitType::List(inner), Val::List(items))
        | (WitType::FixedList(inner, _), Val::FixedLengthList(items)) => Value::Array(
            items
                .iter()
                .map(|v| from_value(v, inner))
                .collect::<Result<_, _>>()?,
        ),
        (WitType::Tuple(types), Val::Tuple(items)) if types.len() == items.len() => Value::Array(
            items
                .iter()
                .zip(types)
                .map(|(v, t)| from_value(v, t))
                .collect::<Result<_, _>>()?,
        ),
        (WitType::Record(record), Val::Record(fields)) => {
            let mut object = Map::new();
            for field in &record.fields {
                let (_, v) = fields
                    .iter()
                    .find(|(n, _)| *n == field.name)
                    .ok_or_else(mismatch)?;
                object.insert(field.key(), from_value(v, &field.ty)?);
            }
            Value::Object(object)
        }
        (WitType::Variant(variant), Val::Variant(name, payload)) => {
            let case = variant
                .cases
                .iter()
                .find(|c| &c.name == name)
                .ok_or_else(mismatch)?;
            match (&case.ty, payload) {
                (None, None) => json!(name),
                (Some(t), Some(p)) => json!({ name.as_str(): from_value(p, t)? }),
                _ => return Err(mismatch()),
            }
        }
        (WitType::Enum(_), Val::Enum(name)) => json!(name),
        (WitType::Flags(f), Val::Flags(set)) => {
            // Declaration order, so output is deterministic.
            json!(
                f.flags
                    .iter()
                    .filter(|(n, _)| set.contains(n))
                    .map(|(n, _)| n)
                    .collect::<Vec<_>>()
            )
        }
        (WitType::Option(_), Val::Option(None)) => Value::Null,
        (WitType::Option(inner), Val::Option(Some(v))) if inner.json_can_be_null() => {
            json!({"some": from_value(v, inner)?})
        }
        (WitType::Option(inner), Val::Option(Some(v))) => from_value(v, inner)?,
        (WitType::Result { ok, err }, Val::Result(r)) => {
            let side = |t: &Option<Box<WitType>>, v: &Option<Box<Val>>| match (t, v) {
                (None, None) => Ok(Value::Null),
                (Some(t), Some(v)) => from_value(v, t),
                _ => Err(mismatch()),
            };
            match r {
                Ok(v) => json!({"ok": side(ok, v)?}),
                Err(v) => json!({"err": side(err, v)?}),
            }
        }
        (WitType::ContentBlock, v) => content::content_block_json(v)?,
        (WitType::Json, Val::String(text)) => serde_json::from_str(text).map_err(|e| {
            format!("the guest returned a `json` value that is not JSON ({e}): {text:.200}")
        })?,
        _ => return Err(mismatch()),
    })
}

fn integer(json: &Value) -> Option<i128> {
    let n = json.as_number()?;
    if let Some(i) = n.as_i64() {
        return Some(i as i128);
    }
    if let Some(u) = n.as_u64() {
        return Some(u as i128);
    }
    // JSON Schema counts 3.0 as an integer; so do we, when it is exact.
    let f = n.as_f64()?;
    (f.fract() == 0.0 && f.abs() < 2f64.powi(64)).then_some(f as i128)
}

fn float(json: &Value) -> Option<f64> {
    match json {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

fn float_json(f: f64) -> Value {
    if f.is_nan() {
        json!(NON_FINITE[0])
    } else if f.is_infinite() {
        json!(if f > 0.0 {
            NON_FINITE[1]
        } else {
            NON_FINITE[2]
        })
    } else {
        json!(f)
    }
}

fn elements(
    json: &Value,
    inner: &WitType,
    path: &str,
    exact: Option<usize>,
) -> Option<Result<Vec<Val>, ConvertError>> {
    let items = json.as_array()?;
    if exact.is_some_and(|n| n != items.len()) {
        return None;
    }
    Some(
        items
            .iter()
            .enumerate()
            .map(|(i, v)| to_value(v, inner, &format!("{path}[{i}]")))
            .collect(),
    )
}

/// `"case"` → (case, None); `{"case": payload}` → (case, Some(payload)).
fn tagged(json: &Value) -> Option<(&str, Option<&Value>)> {
    match json {
        Value::String(s) => Some((s, None)),
        Value::Object(o) if o.len() == 1 => o.iter().next().map(|(k, v)| (k.as_str(), Some(v))),
        _ => None,
    }
}

fn single_key<'a>(json: &'a Value, key: &str) -> Option<&'a Value> {
    json.as_object()
        .filter(|o| o.len() == 1)
        .and_then(|o| o.get(key))
}

/// A JSON value shortened for an error message.
fn short(v: &Value) -> String {
    let text = v.to_string();
    let kind = match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => return text,
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    if text.chars().count() > 60 {
        format!("{kind} {}…", text.chars().take(57).collect::<String>())
    } else if matches!(v, Value::Null) {
        "null".into()
    } else {
        format!("{kind} {text}")
    }
}
