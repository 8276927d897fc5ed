//! Property tests for the WIT ⇄ JSON mapping: generated types and values must
//! round-trip through JSON, rendered JSON must satisfy the declared schemas, and
//! any JSON the input schema accepts must convert without error.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use wasmtime::component::Val;

use super::json_schema::{Direction, schema_for};
use super::wit_type::{Case, Enum, Field, Flags, Record, Variant, WitType};
use super::{from_value, to_value};

fn ident() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9]{0,5}(-[a-z][a-z0-9]{0,3})?"
}

fn unique_idents(min: usize, max: usize) -> impl Strategy<Value = Vec<String>> {
    proptest::collection::btree_set(ident(), min..=max).prop_map(|s| s.into_iter().collect())
}

fn leaf() -> impl Strategy<Value = WitType> {
    prop_oneof![
        Just(WitType::Bool),
        Just(WitType::S8),
        Just(WitType::U8),
        Just(WitType::S16),
        Just(WitType::U16),
        Just(WitType::S32),
        Just(WitType::U32),
        Just(WitType::S64),
        Just(WitType::U64),
        Just(WitType::F32),
        Just(WitType::F64),
        Just(WitType::Char),
        Just(WitType::String),
        unique_idents(1, 4).prop_map(|c| WitType::Enum(Enum {
            name: None,
            docs: None,
            cases: c.into_iter().map(|c| (c, None)).collect()
        })),
        unique_idents(1, 4).prop_map(|f| WitType::Flags(Flags {
            name: None,
            docs: None,
            flags: f.into_iter().map(|f| (f, None)).collect()
        })),
    ]
}

fn arb_type() -> impl Strategy<Value = WitType> {
    leaf().prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|t| WitType::List(Box::new(t))),
            Just(WitType::List(Box::new(WitType::U8))),
            (inner.clone(), 0u32..4).prop_map(|(t, n)| WitType::FixedList(Box::new(t), n)),
            proptest::collection::vec(inner.clone(), 1..4).prop_map(WitType::Tuple),
            (
                unique_idents(0, 4),
                proptest::collection::vec(inner.clone(), 4)
            )
                .prop_map(|(names, types)| {
                    WitType::Record(Record {
                        name: None,
                        docs: None,
                        fields: names
                            .into_iter()
                            .zip(types)
                            .map(|(name, ty)| Field {
                                name,
                                docs: None,
                                ty,
                            })
                            .collect(),
                    })
                }),
            (
                unique_idents(1, 4),
                proptest::collection::vec(proptest::option::of(inner.clone()), 4)
            )
                .prop_map(|(names, types)| WitType::Variant(Variant {
                    name: None,
                    docs: None,
                    cases: names
                        .into_iter()
                        .zip(types)
                        .map(|(name, ty)| Case {
                            name,
                            docs: None,
                            ty
                        })
                        .collect(),
                })),
            inner.clone().prop_map(|t| WitType::Option(Box::new(t))),
            (
                proptest::option::of(inner.clone()),
                proptest::option::of(inner)
            )
                .prop_map(|(ok, err)| WitType::Result {
                    ok: ok.map(Box::new),
                    err: err.map(Box::new)
                }),
        ]
    })
}

fn finite_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        -1e300f64..1e300,
        Just(0.0),
        Just(-0.0),
        Just(f64::MAX),
        Just(f64::MIN_POSITIVE)
    ]
}

fn arb_value(ty: &WitType) -> BoxedStrategy<Val> {
    match ty {
        WitType::Bool => any::<bool>().prop_map(Val::Bool).boxed(),
        WitType::S8 => any::<i8>().prop_map(Val::S8).boxed(),
        WitType::U8 => any::<u8>().prop_map(Val::U8).boxed(),
        WitType::S16 => any::<i16>().prop_map(Val::S16).boxed(),
        WitType::U16 => any::<u16>().prop_map(Val::U16).boxed(),
        WitType::S32 => any::<i32>().prop_map(Val::S32).boxed(),
        WitType::U32 => any::<u32>().prop_map(Val::U32).boxed(),
        WitType::S64 => any::<i64>().prop_map(Val::S64).boxed(),
        WitType::U64 => any::<u64>().prop_map(Val::U64).boxed(),
        WitType::F32 => prop_oneof![-3.0e38f32..3.0e38, Just(f32::MAX), Just(f32::MIN)]
            .prop_map(Val::Float32)
            .boxed(),
        WitType::F64 => finite_f64().prop_map(Val::Float64).boxed(),
        WitType::Char => any::<char>().prop_map(Val::Char).boxed(),
        WitType::String => any::<String>().prop_map(Val::String).boxed(),
        WitType::List(t) => proptest::collection::vec(arb_value(t), 0..4)
            .prop_map(Val::List)
            .boxed(),
        WitType::FixedList(t, n) => proptest::collection::vec(arb_value(t), *n as usize)
            .prop_map(Val::FixedLengthList)
            .boxed(),
        WitType::Tuple(ts) => ts
            .iter()
            .map(arb_value)
            .collect::<Vec<_>>()
            .prop_map(Val::Tuple)
            .boxed(),
        WitType::Record(r) => {
            let names: Vec<String> = r.fields.iter().map(|f| f.name.clone()).collect();
            r.fields
                .iter()
                .map(|f| arb_value(&f.ty))
                .collect::<Vec<_>>()
                .prop_map(move |vals| Val::Record(names.iter().cloned().zip(vals).collect()))
                .boxed()
        }
        WitType::Variant(v) => {
            let cases: Vec<BoxedStrategy<Val>> = v
                .cases
                .iter()
                .map(|c| {
                    let name = c.name.clone();
                    match &c.ty {
                        None => Just(Val::Variant(name, None)).boxed(),
                        Some(t) => arb_value(t)
                            .prop_map(move |p| Val::Variant(name.clone(), Some(Box::new(p))))
                            .boxed(),
                    }
                })
                .collect();
            proptest::strategy::Union::new(cases).boxed()
        }
        WitType::Enum(e) => {
            proptest::sample::select(e.cases.iter().map(|c| c.0.clone()).collect::<Vec<_>>())
                .prop_map(Val::Enum)
                .boxed()
        }
        WitType::Flags(f) => {
            let names: Vec<String> = f.flags.iter().map(|c| c.0.clone()).collect();
            proptest::sample::subsequence(names.clone(), 0..=names.len())
                .prop_map(Val::Flags)
                .boxed()
        }
        WitType::Option(t) => prop_oneof![
            Just(Val::Option(None)),
            arb_value(t).prop_map(|v| Val::Option(Some(Box::new(v))))
        ]
        .boxed(),
        WitType::Result { ok, err } => {
            let side = |t: &Option<Box<WitType>>| match t {
                None => Just(None).boxed(),
                Some(t) => arb_value(t).prop_map(|v| Some(Box::new(v))).boxed(),
            };
            prop_oneof![
                side(ok).prop_map(|v| Val::Result(Ok(v))),
                side(err).prop_map(|v| Val::Result(Err(v)))
            ]
            .boxed()
        }
        WitType::ContentBlock | WitType::Json => unreachable!("not generated"),
    }
}

/// JSON a client might send for `ty`, in every accepted spelling (bytes as arrays,
/// integral floats for integers, omitted optional record fields).
fn arb_input_json(ty: &WitType) -> BoxedStrategy<Value> {
    match ty {
        WitType::List(t) if **t == WitType::U8 => prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..6).prop_map(|b| json!(b)),
            proptest::collection::vec(any::<u8>(), 0..6).prop_map(|b| {
                use base64::Engine as _;
                json!(base64::engine::general_purpose::STANDARD.encode(b))
            }),
        ]
        .boxed(),
        WitType::U8 => prop_oneof![
            any::<u8>().prop_map(|i| json!(i)),
            any::<u8>().prop_map(|i| json!(i as f64))
        ]
        .boxed(),
        WitType::List(t) => proptest::collection::vec(arb_input_json(t), 0..4)
            .prop_map(Value::Array)
            .boxed(),
        WitType::Record(r) => {
            let fields: Vec<(String, bool, BoxedStrategy<Value>)> = r
                .fields
                .iter()
                .map(|f| {
                    (
                        f.key(),
                        matches!(f.ty, WitType::Option(_)),
                        arb_input_json(&f.ty),
                    )
                })
                .collect();
            let (names, optional): (Vec<String>, Vec<bool>) =
                fields.iter().map(|(n, o, _)| (n.clone(), *o)).unzip();
            let values: Vec<BoxedStrategy<Value>> = fields.into_iter().map(|(_, _, s)| s).collect();
            (
                values,
                proptest::collection::vec(any::<bool>(), names.len()),
            )
                .prop_map(move |(values, omit)| {
                    let mut object = Map::new();
                    for (i, v) in values.into_iter().enumerate() {
                        if !(optional[i] && omit[i]) {
                            object.insert(names[i].clone(), v);
                        }
                    }
                    Value::Object(object)
                })
                .boxed()
        }
        other => {
            let other = other.clone();
            arb_value(&other)
                .prop_map(move |v| from_value(&v, &other).expect("renderable"))
                .boxed()
        }
    }
}

fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::draft202012::new(schema).unwrap_or_else(|e| panic!("invalid schema {schema}: {e}"))
}

fn type_and_value() -> impl Strategy<Value = (WitType, Val)> {
    arb_type().prop_flat_map(|t| {
        let v = arb_value(&t);
        (Just(t), v)
    })
}

fn type_and_input() -> impl Strategy<Value = (WitType, Value)> {
    arb_type().prop_flat_map(|t| {
        let j = arb_input_json(&t);
        (Just(t), j)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// value → JSON → value is the identity, and the JSON satisfies both schemas.
    #[test]
    fn values_round_trip_through_json((ty, val) in type_and_value()) {
        let json = from_value(&val, &ty).expect("render");
        let back = to_value(&json, &ty, "arguments.x").unwrap_or_else(|e| panic!("{e} for {json}"));
        prop_assert_eq!(&back, &val);
        prop_assert!(validator(&schema_for(&ty, Direction::Output)).is_valid(&json), "output schema rejects {}", json);
        prop_assert!(validator(&schema_for(&ty, Direction::Input)).is_valid(&json), "input schema rejects {}", json);
    }

    /// Whatever a client sends that the input schema accepts converts without error.
    #[test]
    fn schema_valid_input_converts((ty, json) in type_and_input()) {
        let schema = schema_for(&ty, Direction::Input);
        prop_assert!(validator(&schema).is_valid(&json), "schema {} rejects generated {}", schema, json);
        to_value(&json, &ty, "arguments.x").unwrap_or_else(|e| panic!("{e}: {json} against {schema}"));
    }

    /// Arbitrary JSON: the schema and the converter agree on what is acceptable.
    #[test]
    fn schema_and_converter_agree(ty in arb_type(), json in arb_json()) {
        let accepted = validator(&schema_for(&ty, Direction::Input)).is_valid(&json);
        let converted = to_value(&json, &ty, "arguments.x");
        if accepted {
            prop_assert!(converted.is_ok(), "schema accepts {} but conversion fails: {:?}", json, converted);
        }
    }
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        (-1e6f64..1e6).prop_map(|f| json!(f)),
        "[a-z-]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map("[a-z-]{1,6}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn non_finite_floats_round_trip_as_strings() {
    for f in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        let json = from_value(&Val::Float64(f), &WitType::F64).unwrap();
        assert!(json.is_string());
        assert!(validator(&schema_for(&WitType::F64, Direction::Output)).is_valid(&json));
        let Val::Float64(back) = to_value(&json, &WitType::F64, "x").unwrap() else {
            panic!()
        };
        assert!(back.is_nan() == f.is_nan() && (f.is_nan() || back == f));
    }
}

#[test]
fn errors_name_the_path_and_the_expected_type() {
    let item = WitType::Record(Record {
        name: Some("item".into()),
        docs: None,
        fields: vec![Field {
            name: "count".into(),
            docs: None,
            ty: WitType::U8,
        }],
    });
    let params = vec![("items".to_string(), WitType::List(Box::new(item)))];
    let args = json!({"items": [{"count": 1}, {"count": 2}, {"count": 300}]});
    let err = super::arguments_to_values(args.as_object(), &params).unwrap_err();
    assert_eq!(
        err.to_string(),
        "arguments.items[2].count: expected u8 (0..=255), got 300"
    );

    let err = super::arguments_to_values(json!({}).as_object(), &params).unwrap_err();
    assert_eq!(
        err.to_string(),
        "arguments.items: missing required value (expected list (an array))"
    );

    let err = super::arguments_to_values(json!({"items": [], "extra": 1}).as_object(), &params)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "arguments.extra: unknown argument; expected one of: items"
    );
}

#[test]
fn integer_schemas_carry_exact_ranges() {
    assert_eq!(
        schema_for(&WitType::U8, Direction::Input),
        json!({"type": "integer", "minimum": 0, "maximum": 255})
    );
    assert_eq!(
        schema_for(&WitType::S64, Direction::Input),
        json!({"type": "integer", "minimum": i64::MIN, "maximum": i64::MAX})
    );
    assert_eq!(
        schema_for(&WitType::U64, Direction::Input)["maximum"],
        json!(u64::MAX)
    );
}

/// A schema every client can take: no bare `true`/`false` where a schema object
/// belongs (only the keywords that take a boolean), and no schema object that
/// constrains nothing (`{}` reads as "forgot to say"). The rules of the MCP
/// Inspector's `tools/list --strict` lint, which portable clients follow.
fn portability_findings(
    schema: &Value,
    path: &str,
    parent_keyword: Option<&str>,
    out: &mut Vec<String>,
) {
    const BOOLEAN_OK: [&str; 4] = [
        "additionalProperties",
        "unevaluatedProperties",
        "additionalItems",
        "unevaluatedItems",
    ];
    const CONSTRAINING: [&str; 27] = [
        "type",
        "enum",
        "const",
        "multipleOf",
        "maximum",
        "exclusiveMaximum",
        "minimum",
        "exclusiveMinimum",
        "maxLength",
        "minLength",
        "pattern",
        "format",
        "contentMediaType",
        "contentEncoding",
        "maxItems",
        "minItems",
        "uniqueItems",
        "required",
        "allOf",
        "anyOf",
        "oneOf",
        "not",
        "items",
        "prefixItems",
        "contains",
        "properties",
        "$ref",
    ];
    let object = match schema {
        Value::Bool(_) if parent_keyword.is_some_and(|k| BOOLEAN_OK.contains(&k)) => return,
        Value::Bool(b) => return out.push(format!("{path}: bare `{b}` as a schema")),
        Value::Object(object) => object,
        _ => return,
    };
    if parent_keyword != Some("not") && !object.keys().any(|k| CONSTRAINING.contains(&k.as_str())) {
        out.push(format!("{path}: constrains nothing: {schema}"));
    }
    for (key, value) in object {
        match (key.as_str(), value) {
            ("properties" | "$defs", Value::Object(map)) => {
                for (name, sub) in map {
                    portability_findings(sub, &format!("{path}.{key}.{name}"), Some(key), out);
                }
            }
            ("allOf" | "anyOf" | "oneOf" | "prefixItems", Value::Array(items)) => {
                for (i, sub) in items.iter().enumerate() {
                    portability_findings(sub, &format!("{path}.{key}[{i}]"), Some(key), out);
                }
            }
            ("items" | "not" | "additionalProperties" | "contains", sub) => {
                portability_findings(sub, &format!("{path}.{key}"), Some(key), out);
            }
            _ => {}
        }
    }
}

fn assert_portable(schema: &Value) {
    let mut findings = Vec::new();
    portability_findings(schema, "", None, &mut findings);
    assert!(findings.is_empty(), "{findings:#?} in {schema}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Every generated schema, input and output, passes the portability rules.
    #[test]
    fn schemas_are_portable(ty in arb_type()) {
        assert_portable(&schema_for(&ty, Direction::Input));
        assert_portable(&schema_for(&ty, Direction::Output));
    }
}

#[test]
fn json_and_content_block_schemas_are_portable() {
    for ty in [
        WitType::Json,
        WitType::ContentBlock,
        WitType::Option(Box::new(WitType::Json)),
        WitType::Tuple(vec![WitType::Json, WitType::U8]),
    ] {
        assert_portable(&schema_for(&ty, Direction::Input));
        assert_portable(&schema_for(&ty, Direction::Output));
    }
    // Spelled out, but still any JSON value.
    let any = validator(&schema_for(&WitType::Json, Direction::Input));
    for value in [
        json!(null),
        json!(true),
        json!(1.5),
        json!(-3),
        json!("x"),
        json!([1, {}]),
        json!({"a": []}),
    ] {
        assert!(any.is_valid(&value), "{value}");
    }
}

#[test]
fn tuples_reject_extra_items_without_a_bare_false() {
    let schema = schema_for(
        &WitType::Tuple(vec![WitType::U8, WitType::String]),
        Direction::Input,
    );
    assert!(!schema.to_string().contains("false"), "{schema}");
    let tuple = validator(&schema);
    assert!(tuple.is_valid(&json!([1, "a"])));
    assert!(!tuple.is_valid(&json!([1, "a", 2])));
    assert!(!tuple.is_valid(&json!([1])));
}
