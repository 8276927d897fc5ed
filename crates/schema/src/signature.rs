//! A component's exports → tool signatures (name, description, parameter types,
//! result shape, input and output schema).
//!
//! Every exported function, top level or inside an exported interface, is a tool;
//! exports of `mcpplus:host/prompts` and `mcpplus:host/resources` serve MCP
//! prompts and resources instead (recorded, not tools); exports of `wasi:*` interfaces (e.g. `wasi:cli/run`) are runtime entry points,
//! not tools, and are skipped. Functions whose types have no JSON form are skipped
//! with a warning rather than failing the whole component.

use serde_json::{Value, json};
use wit_parser::{Function, Resolve, WorldItem, WorldKey};

use super::docs::{check_component_header, find_docs_section, inject_docs, split_function_docs};
use super::json_schema::{Direction, describe, object_schema, schema_for};
use super::naming::{json_key, tool_name};
use super::wit_type::{UnsupportedType, WitType};

/// Exports that toolchains add for their own use, never tools:
/// componentize-py's pre-initialization hook (`exports#init`).
const TOOLCHAIN_EXPORTS: &[&str] = &["exports"];

/// Where a tool lives inside its component: `interface` is the export name of the
/// instance (e.g. `mcpplus:examples/text@0.1.0`), `None` for a top-level function.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct ExportPath {
    pub interface: Option<String>,
    pub function: String,
}

impl std::fmt::Display for ExportPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.interface {
            Some(i) => write!(f, "{i}#{}", self.function),
            None => write!(f, "{}", self.function),
        }
    }
}

/// What a tool returns, and so how its result is presented.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ResultShape {
    /// No return value.
    Nothing,
    /// A plain value: `structuredContent` + text.
    Value(WitType),
    /// A top-level `result<T, E>`: `ok` as a value, `err` as `isError: true`.
    Fallible {
        ok: Option<WitType>,
        err: Option<WitType>,
    },
}

impl ResultShape {
    /// The success type, if any.
    pub fn ok_type(&self) -> Option<&WitType> {
        match self {
            ResultShape::Nothing => None,
            ResultShape::Value(t) => Some(t),
            ResultShape::Fallible { ok, .. } => ok.as_ref(),
        }
    }
}

/// True for `content-block` and `list<content-block>`: returned as MCP content.
pub fn is_content(ty: &WitType) -> bool {
    match ty {
        WitType::ContentBlock => true,
        WitType::List(inner) => **inner == WitType::ContentBlock,
        _ => false,
    }
}

/// One tool, ready to list and to call.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ToolSignature {
    pub name: String,
    pub export: ExportPath,
    pub description: String,
    pub params: Vec<(String, WitType)>,
    pub result: ResultShape,
    pub input_schema: Value,
    pub output_schema: Option<Value>,
}

/// Everything the host learns about a component from its binary.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ComponentDescription {
    pub tools: Vec<ToolSignature>,
    /// The export name of `mcpplus:host/prompts` (e.g.
    /// `mcpplus:host/prompts@0.1.0`) when the component serves MCP prompts.
    #[serde(default)]
    pub prompts_export: Option<String>,
    /// The export name of `mcpplus:host/resources` when the component serves
    /// MCP resources.
    #[serde(default)]
    pub resources_export: Option<String>,
    /// Imported interfaces and functions (what the component asks the host for).
    pub imports: Vec<String>,
    /// Exports that could not become tools, with the reason.
    pub warnings: Vec<String>,
    /// Whether doc comments were embedded (see `mcpplus embed-docs`).
    pub has_docs: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum DescribeError {
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    #[error(
        "two exports of this component map to the tool name `{name}` ({first} and {second}); rename one in its WIT"
    )]
    DuplicateName {
        name: String,
        first: ExportPath,
        second: ExportPath,
    },
}

/// Describe a component binary: its tools and its imports.
pub fn describe_component(
    component_name: &str,
    bytes: &[u8],
) -> Result<ComponentDescription, DescribeError> {
    check_component_header(bytes).map_err(DescribeError::NotAComponent)?;
    let decoded = wit_parser::decoding::decode(bytes)
        .map_err(|e| DescribeError::NotAComponent(format!("{e:#}")))?;
    let wit_parser::decoding::DecodedWasm::Component(mut resolve, world) = decoded else {
        return Err(DescribeError::NotAComponent(
            "this is a WIT package, not a component".into(),
        ));
    };
    let mut warnings = Vec::new();
    let mut has_docs = false;
    if let Some(section) = find_docs_section(bytes) {
        match wit_parser::decoding::decode(section) {
            Ok(docs) => {
                inject_docs(&mut resolve, docs.resolve());
                has_docs = true;
            }
            Err(e) => warnings.push(format!(
                "embedded docs could not be read ({e}); run `mcpplus embed-docs` again"
            )),
        }
    }

    let world = &resolve.worlds[world];
    // Interfaces and functions only: a world-level type import asks for nothing.
    let imports = world
        .imports
        .iter()
        .filter(|(_, item)| !matches!(item, WorldItem::Type { .. }))
        .map(|(k, _)| resolve.name_world_key(k))
        .collect();

    let mut found: Vec<(ExportPath, Option<String>, &Function)> = Vec::new();
    let mut prompts_export = None;
    let mut resources_export = None;
    for (key, item) in &world.exports {
        match item {
            WorldItem::Function(f) => found.push((
                ExportPath {
                    interface: None,
                    function: f.name.clone(),
                },
                None,
                f,
            )),
            WorldItem::Interface { id, .. } => {
                let iface = &resolve.interfaces[*id];
                if iface
                    .package
                    .is_some_and(|p| resolve.packages[p].name.namespace == "wasi")
                {
                    continue;
                }
                let export_name = resolve.name_world_key(key);
                if TOOLCHAIN_EXPORTS.contains(&export_name.as_str()) {
                    continue;
                }
                // `mcpplus:host/prompts` and `mcpplus:host/resources` serve MCP
                // prompts and resources; their functions are not tools.
                match served_interface(&resolve, iface) {
                    Some(ServedInterface::Prompts) => {
                        prompts_export = Some(export_name);
                        continue;
                    }
                    Some(ServedInterface::Resources) => {
                        resources_export = Some(export_name);
                        continue;
                    }
                    None => {}
                }
                let short = match key {
                    WorldKey::Name(n) => n.clone(),
                    WorldKey::Interface(_) => {
                        iface.name.clone().unwrap_or_else(|| export_name.clone())
                    }
                };
                for f in iface.functions.values() {
                    found.push((
                        ExportPath {
                            interface: Some(export_name.clone()),
                            function: f.name.clone(),
                        },
                        Some(short.clone()),
                        f,
                    ));
                }
            }
            WorldItem::Type { .. } => {}
        }
    }

    // Plain function names unless two exports share one; then prefix the interface.
    let plain = |f: &Function| tool_name(&[&f.name]);
    let mut tools: Vec<ToolSignature> = Vec::new();
    for (export, short, func) in &found {
        let clash = found
            .iter()
            .filter(|(_, _, g)| plain(g) == plain(func))
            .count()
            > 1;
        let name = match (clash, short) {
            (true, Some(short)) => tool_name(&[short, &func.name]),
            _ => plain(func),
        };
        match signature(&resolve, component_name, name, export.clone(), func) {
            Ok(sig) => {
                if let Some(prev) = tools.iter().find(|t| t.name == sig.name) {
                    return Err(DescribeError::DuplicateName {
                        name: sig.name,
                        first: prev.export.clone(),
                        second: export.clone(),
                    });
                }
                tools.push(sig);
            }
            Err(e) => warnings.push(format!("`{export}` is not offered as a tool: {e}")),
        }
    }
    tools.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(ComponentDescription {
        tools,
        prompts_export,
        resources_export,
        imports,
        warnings,
        has_docs,
    })
}

enum ServedInterface {
    Prompts,
    Resources,
}

/// `mcpplus:host/prompts` or `mcpplus:host/resources` (any version).
fn served_interface(resolve: &Resolve, iface: &wit_parser::Interface) -> Option<ServedInterface> {
    let package = &resolve.packages[iface.package?].name;
    if package.namespace != "mcpplus" || package.name != "host" {
        return None;
    }
    match iface.name.as_deref()? {
        "prompts" => Some(ServedInterface::Prompts),
        "resources" => Some(ServedInterface::Resources),
        _ => None,
    }
}

fn signature(
    resolve: &Resolve,
    component_name: &str,
    name: String,
    export: ExportPath,
    func: &Function,
) -> Result<ToolSignature, UnsupportedType> {
    let params: Vec<(String, WitType)> = func
        .params
        .iter()
        .map(|p| Ok((json_key(&p.name), WitType::from_wit(resolve, &p.ty)?)))
        .collect::<Result<_, UnsupportedType>>()?;
    if params.iter().any(|(_, t)| contains_content(t)) {
        return Err(UnsupportedType(
            "content-block (it can only be returned, not passed in)".into(),
        ));
    }
    let result = match &func.result {
        None => ResultShape::Nothing,
        Some(ty) => match WitType::from_wit(resolve, ty)? {
            WitType::Result { ok, err } => ResultShape::Fallible {
                ok: ok.map(|t| *t),
                err: err.map(|t| *t),
            },
            other => ResultShape::Value(other),
        },
    };
    let names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
    let docs = split_function_docs(func.docs.contents.as_deref(), &names);
    let description = docs
        .description
        .unwrap_or_else(|| format!("`{}` from component `{component_name}`.", func.name));

    let mut input_schema = object_schema(
        params
            .iter()
            .map(|(n, t)| (n.as_str(), t, docs.params.get(n).map(String::as_str))),
        Direction::Input,
    );
    input_schema["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    let output_schema = result
        .ok_type()
        .filter(|t| !is_content(t))
        .map(output_schema_for);
    Ok(ToolSignature {
        name,
        export,
        description,
        params,
        result,
        input_schema,
        output_schema,
    })
}

/// `structuredContent` must be an object: records are sent as they are, anything
/// else is wrapped as `{"result": value}`.
pub fn output_schema_for(ty: &WitType) -> Value {
    let mut schema = match ty {
        WitType::Record(_) => schema_for(ty, Direction::Output),
        _ => {
            let mut inner = schema_for(ty, Direction::Output);
            describe(&mut inner, Some("The tool's return value."));
            json!({
                "type": "object",
                "properties": {"result": inner},
                "required": ["result"],
                "additionalProperties": false,
            })
        }
    };
    schema["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    schema
}

/// Wrap a rendered ok value the way [`output_schema_for`] describes it.
pub fn structured_output(ty: &WitType, value: Value) -> Value {
    match ty {
        WitType::Record(_) => value,
        _ => json!({ "result": value }),
    }
}

fn contains_content(ty: &WitType) -> bool {
    match ty {
        WitType::ContentBlock => true,
        WitType::List(t) | WitType::FixedList(t, _) | WitType::Option(t) => contains_content(t),
        WitType::Tuple(ts) => ts.iter().any(contains_content),
        WitType::Record(r) => r.fields.iter().any(|f| contains_content(&f.ty)),
        WitType::Variant(v) => v
            .cases
            .iter()
            .filter_map(|c| c.ty.as_ref())
            .any(contains_content),
        WitType::Result { ok, err } => ok.iter().chain(err.iter()).any(|t| contains_content(t)),
        _ => false,
    }
}
