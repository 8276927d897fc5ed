//! A tool call's JSON arguments → component values, against the real
//! signatures of the bundled components (the showcase covers records,
//! variants, enums, flags, tuples, options, results, lists, bytes, char,
//! every integer and float) plus one synthetic tool for the families no
//! bundled component takes (fixed-length lists, `json`, nested options, a
//! bare result, content blocks).
//!
//! Input: one byte picks the tool, the rest is the `arguments` JSON text.
//! What must hold, beyond never panicking:
//! - arguments the conversion accepts are valid against the tool's
//!   advertised `inputSchema` (the schema never rejects what we take);
//! - each accepted value rendered back to JSON (`from_value`, the result
//!   path) is valid against its output schema and converts again to the
//!   same value (nothing is lost or changed on the way through).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mcpplus_schema::json_schema::{Direction, object_schema, schema_for};
use mcpplus_schema::wit_type::{Case, Variant};
use mcpplus_schema::{WitType, arguments_to_values, from_value, to_value};
use serde_json::Value;

struct Tool {
    name: String,
    params: Vec<(String, WitType)>,
    input_schema: jsonschema::Validator,
    output_schemas: Vec<jsonschema::Validator>,
}

fn tools() -> &'static [Tool] {
    static TOOLS: OnceLock<Vec<Tool>> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let dist = concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-tools/dist");
        let mut signatures: Vec<(String, Vec<(String, WitType)>, Value)> = Vec::new();
        for component in [
            "showcase",
            "text_utils",
            "task_queue",
            "peer_tools",
            "fetch",
        ] {
            let path = format!("{dist}/{component}.wasm");
            let bytes = std::fs::read(&path).unwrap_or_else(|e| {
                panic!("{path}: {e}; build the bundled tools with scripts/build-guest-tools.sh")
            });
            let description = mcpplus_schema::describe_component(component, &bytes)
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            for tool in description.tools {
                signatures.push((tool.name, tool.params, tool.input_schema));
            }
        }
        let synthetic = synthetic_params();
        let schema = object_schema(
            synthetic.iter().map(|(n, t)| (n.as_str(), t, None)),
            Direction::Input,
        );
        signatures.push(("synthetic_families".into(), synthetic, schema));
        signatures
            .into_iter()
            .map(|(name, params, input_schema)| Tool {
                input_schema: jsonschema::validator_for(&input_schema)
                    .unwrap_or_else(|e| panic!("{name}'s inputSchema does not compile: {e}")),
                output_schemas: params
                    .iter()
                    .map(|(_, ty)| {
                        jsonschema::validator_for(&schema_for(ty, Direction::Output))
                            .expect("an output schema compiles")
                    })
                    .collect(),
                name,
                params,
            })
            .collect()
    })
}

/// The WIT families no bundled component takes as a parameter.
fn synthetic_params() -> Vec<(String, WitType)> {
    let bx = Box::new;
    vec![
        ("fixed".into(), WitType::FixedList(bx(WitType::S16), 3)),
        ("fixed_bytes".into(), WitType::FixedList(bx(WitType::U8), 2)),
        ("doc".into(), WitType::Json),
        (
            "maybe_maybe".into(),
            WitType::Option(bx(WitType::Option(bx(WitType::U64)))),
        ),
        (
            "bare_result".into(),
            WitType::Option(bx(WitType::Result {
                ok: None,
                err: None,
            })),
        ),
        (
            "choice".into(),
            WitType::Option(bx(WitType::Variant(Variant {
                name: Some("choice".into()),
                docs: None,
                cases: vec![
                    Case {
                        name: "none-here".into(),
                        docs: None,
                        ty: None,
                    },
                    Case {
                        name: "bytes".into(),
                        docs: None,
                        ty: Some(WitType::List(bx(WitType::U8))),
                    },
                    Case {
                        name: "pair".into(),
                        docs: None,
                        ty: Some(WitType::Tuple(vec![WitType::F32, WitType::Char])),
                    },
                ],
            }))),
        ),
        ("block".into(), WitType::Option(bx(WitType::ContentBlock))),
        ("big".into(), WitType::Option(bx(WitType::S64))),
    ]
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, text)) = data.split_first() else {
        return;
    };
    let tools = tools();
    let tool = &tools[selector as usize % tools.len()];
    let Ok(arguments) = serde_json::from_slice::<Value>(text) else {
        return;
    };
    let Value::Object(arguments) = &arguments else {
        // The MCP layer refuses non-object arguments before conversion; a
        // single value still goes through the per-type path.
        for (_, ty) in &tool.params {
            let _ = to_value(&arguments, ty, "arguments");
        }
        return;
    };
    let Ok(values) = arguments_to_values(Some(arguments), &tool.params) else {
        return;
    };
    let as_json = Value::Object(arguments.clone());
    assert!(
        tool.input_schema.is_valid(&as_json),
        "{}: the conversion accepted {as_json} but the inputSchema rejects it",
        tool.name
    );
    for (((name, ty), value), output_schema) in
        tool.params.iter().zip(&values).zip(&tool.output_schemas)
    {
        let rendered = from_value(value, ty).unwrap_or_else(|e| {
            panic!(
                "{}.{name}: an accepted value does not render: {e}",
                tool.name
            )
        });
        assert!(
            output_schema.is_valid(&rendered),
            "{}.{name}: {rendered} does not match its own output schema",
            tool.name
        );
        let again = to_value(&rendered, ty, name).unwrap_or_else(|e| {
            panic!(
                "{}.{name}: the rendered {rendered} does not convert back: {e}",
                tool.name
            )
        });
        assert_eq!(
            &again, value,
            "{}.{name}: changed on the way through",
            tool.name
        );
    }
});
