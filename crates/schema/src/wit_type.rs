//! The host's own model of a WIT value type, with the names and doc comments the
//! MCP mapping needs.
//!
//! It is built once per component from the WIT that wit-parser recovers from the
//! binary, so the JSON Schema, the JSON → value conversion and the value → JSON
//! rendering all walk the same small tree. It is not a general WIT model: resources,
//! futures and streams have no JSON form and are reported as unsupported.

use wit_parser::{Resolve, Type, TypeDefKind, TypeOwner};

/// A WIT value type as seen by a tool caller.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum WitType {
    Bool,
    S8,
    U8,
    S16,
    U16,
    S32,
    U32,
    S64,
    U64,
    F32,
    F64,
    Char,
    String,
    List(Box<WitType>),
    /// `list<T, N>`: exactly N elements.
    FixedList(Box<WitType>, u32),
    Tuple(Vec<WitType>),
    Record(Record),
    Variant(Variant),
    Enum(Enum),
    Flags(Flags),
    Option(Box<WitType>),
    Result {
        ok: Option<Box<WitType>>,
        err: Option<Box<WitType>>,
    },
    /// The host's `mcpplus:host/types.content-block`: rendered as MCP content, not JSON.
    ContentBlock,
    /// The host's `mcpplus:host/types.json`: any JSON value, carried to and from
    /// the guest as its JSON text.
    Json,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    pub name: Option<String>,
    pub docs: Option<String>,
    pub fields: Vec<Field>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Field {
    /// As in WIT (kebab-case); its JSON key is [`Field::key`].
    pub name: String,
    pub docs: Option<String>,
    pub ty: WitType,
}

impl Field {
    /// The field's JSON key: snake_case (`max-length` → `max_length`).
    pub fn key(&self) -> String {
        super::naming::json_key(&self.name)
    }
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Variant {
    pub name: Option<String>,
    pub docs: Option<String>,
    pub cases: Vec<Case>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Case {
    pub name: String,
    pub docs: Option<String>,
    pub ty: Option<WitType>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Enum {
    pub name: Option<String>,
    pub docs: Option<String>,
    pub cases: Vec<(String, Option<String>)>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Flags {
    pub name: Option<String>,
    pub docs: Option<String>,
    pub flags: Vec<(String, Option<String>)>,
}

/// Why a WIT type cannot be offered to an MCP client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "type `{0}` has no JSON form (resources, futures, streams and maps are not supported in tool signatures)"
)]
pub struct UnsupportedType(pub String);

/// Where the content-block type lives: a type named this in an interface of this package.
const HOST_PACKAGE: (&str, &str) = ("mcpplus", "host");
const HOST_TYPES_INTERFACE: &str = "types";
const CONTENT_TYPE: &str = "content-block";
const JSON_TYPE: &str = "json";

impl WitType {
    /// Convert a wit-parser type, resolving aliases and attaching docs.
    pub fn from_wit(resolve: &Resolve, ty: &Type) -> Result<WitType, UnsupportedType> {
        Ok(match ty {
            Type::Bool => WitType::Bool,
            Type::U8 => WitType::U8,
            Type::U16 => WitType::U16,
            Type::U32 => WitType::U32,
            Type::U64 => WitType::U64,
            Type::S8 => WitType::S8,
            Type::S16 => WitType::S16,
            Type::S32 => WitType::S32,
            Type::S64 => WitType::S64,
            Type::F32 => WitType::F32,
            Type::F64 => WitType::F64,
            Type::Char => WitType::Char,
            Type::String => WitType::String,
            Type::ErrorContext => return Err(UnsupportedType("error-context".into())),
            Type::Id(id) => {
                let def = &resolve.types[*id];
                if is_host_type(resolve, def, CONTENT_TYPE) {
                    return Ok(WitType::ContentBlock);
                }
                if is_host_type(resolve, def, JSON_TYPE) {
                    return Ok(WitType::Json);
                }
                let name = def.name.clone();
                let docs = clean_docs(def.docs.contents.as_deref());
                match &def.kind {
                    TypeDefKind::Type(inner) => WitType::from_wit(resolve, inner)?,
                    TypeDefKind::Record(r) => WitType::Record(Record {
                        name,
                        docs,
                        fields: r
                            .fields
                            .iter()
                            .map(|f| {
                                Ok(Field {
                                    name: f.name.clone(),
                                    docs: clean_docs(f.docs.contents.as_deref()),
                                    ty: WitType::from_wit(resolve, &f.ty)?,
                                })
                            })
                            .collect::<Result<_, _>>()?,
                    }),
                    TypeDefKind::Variant(v) => WitType::Variant(Variant {
                        name,
                        docs,
                        cases: v
                            .cases
                            .iter()
                            .map(|c| {
                                Ok(Case {
                                    name: c.name.clone(),
                                    docs: clean_docs(c.docs.contents.as_deref()),
                                    ty: c
                                        .ty
                                        .as_ref()
                                        .map(|t| WitType::from_wit(resolve, t))
                                        .transpose()?,
                                })
                            })
                            .collect::<Result<_, _>>()?,
                    }),
                    TypeDefKind::Enum(e) => WitType::Enum(Enum {
                        name,
                        docs,
                        cases: e
                            .cases
                            .iter()
                            .map(|c| (c.name.clone(), clean_docs(c.docs.contents.as_deref())))
                            .collect(),
                    }),
                    TypeDefKind::Flags(f) => WitType::Flags(Flags {
                        name,
                        docs,
                        flags: f
                            .flags
                            .iter()
                            .map(|c| (c.name.clone(), clean_docs(c.docs.contents.as_deref())))
                            .collect(),
                    }),
                    TypeDefKind::Tuple(t) => WitType::Tuple(
                        t.types
                            .iter()
                            .map(|t| WitType::from_wit(resolve, t))
                            .collect::<Result<_, _>>()?,
                    ),
                    TypeDefKind::Option(t) => {
                        WitType::Option(Box::new(WitType::from_wit(resolve, t)?))
                    }
                    TypeDefKind::Result(r) => WitType::Result {
                        ok: r
                            .ok
                            .as_ref()
                            .map(|t| WitType::from_wit(resolve, t).map(Box::new))
                            .transpose()?,
                        err: r
                            .err
                            .as_ref()
                            .map(|t| WitType::from_wit(resolve, t).map(Box::new))
                            .transpose()?,
                    },
                    TypeDefKind::List(t) => WitType::List(Box::new(WitType::from_wit(resolve, t)?)),
                    TypeDefKind::FixedLengthList(t, n) => {
                        WitType::FixedList(Box::new(WitType::from_wit(resolve, t)?), *n)
                    }
                    TypeDefKind::Resource | TypeDefKind::Handle(_) => {
                        return Err(UnsupportedType(
                            name.unwrap_or_else(|| "resource handle".into()),
                        ));
                    }
                    TypeDefKind::Map(..) => return Err(UnsupportedType("map".into())),
                    TypeDefKind::Future(_) => return Err(UnsupportedType("future".into())),
                    TypeDefKind::Stream(_) => return Err(UnsupportedType("stream".into())),
                    TypeDefKind::Unknown => return Err(UnsupportedType("unknown".into())),
                }
            }
        })
    }

    /// A short WIT-like spelling used in error messages ("expected u8 (0..=255)").
    pub fn describe(&self) -> String {
        match self {
            WitType::Bool => "bool".into(),
            WitType::S8 => "s8 (-128..=127)".into(),
            WitType::U8 => "u8 (0..=255)".into(),
            WitType::S16 => "s16 (-32768..=32767)".into(),
            WitType::U16 => "u16 (0..=65535)".into(),
            WitType::S32 => format!("s32 ({}..={})", i32::MIN, i32::MAX),
            WitType::U32 => format!("u32 (0..={})", u32::MAX),
            WitType::S64 => format!("s64 ({}..={})", i64::MIN, i64::MAX),
            WitType::U64 => format!("u64 (0..={})", u64::MAX),
            WitType::F32 => "f32 (number)".into(),
            WitType::F64 => "f64 (number)".into(),
            WitType::Char => "char (a string of exactly one character)".into(),
            WitType::String => "string".into(),
            WitType::List(t) if **t == WitType::U8 => {
                "list<u8> (a base64 string or an array of bytes)".into()
            }
            WitType::List(_) => "list (an array)".into(),
            WitType::FixedList(_, n) => format!("list of exactly {n} elements"),
            WitType::Tuple(t) => format!("tuple (an array of {} elements)", t.len()),
            WitType::Record(r) => format!("record {} (an object)", r.name.as_deref().unwrap_or("")),
            WitType::Variant(v) => {
                let cases: Vec<_> = v.cases.iter().map(|c| c.name.as_str()).collect();
                format!("variant (one of: {})", cases.join(", "))
            }
            WitType::Enum(e) => {
                let cases: Vec<_> = e.cases.iter().map(|c| c.0.as_str()).collect();
                format!("enum (one of: {})", cases.join(", "))
            }
            WitType::Flags(f) => {
                let flags: Vec<_> = f.flags.iter().map(|c| c.0.as_str()).collect();
                format!("flags (an array of: {})", flags.join(", "))
            }
            WitType::Option(t) => format!("option<{}> (null when absent)", t.describe()),
            WitType::Result { .. } => "result (an object with `ok` or `err`)".into(),
            WitType::ContentBlock => "content-block".into(),
            WitType::Json => "json".into(),
        }
    }

    /// True when this type's JSON rendering can itself be `null`, which forces an
    /// enclosing `option` to use the explicit `{"some": …}` form.
    pub fn json_can_be_null(&self) -> bool {
        matches!(self, WitType::Option(_))
    }
}

/// Whether `def` is the type `name` of `mcpplus:host/types`.
fn is_host_type(resolve: &Resolve, def: &wit_parser::TypeDef, name: &str) -> bool {
    if def.name.as_deref() != Some(name) {
        return false;
    }
    let TypeOwner::Interface(iface) = def.owner else {
        return false;
    };
    let iface = &resolve.interfaces[iface];
    if iface.name.as_deref() != Some(HOST_TYPES_INTERFACE) {
        return false;
    }
    let Some(pkg) = iface.package else {
        return false;
    };
    let name = &resolve.packages[pkg].name;
    (name.namespace.as_str(), name.name.as_str()) == HOST_PACKAGE
}

/// Trim doc comments; empty docs become `None`.
pub fn clean_docs(docs: Option<&str>) -> Option<String> {
    let text = docs?.trim();
    (!text.is_empty()).then(|| text.to_string())
}
