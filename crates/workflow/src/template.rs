//! Versioned workflow templates (docs/workflows.md, design §3.6): JSON files
//! in `<data-dir>/workflow-templates/`, in the original MCP++ shape
//! `{template_id, version, name, description, parameters, steps, metadata}`
//! plus the optional workflow fields `output`, `on_failure`, `max_parallel`
//! and `timeout_ms`.
//!
//! `parameters` is either the original's list
//! `[{name, type, description, default, required, validation}]`, compiled to
//! a JSON Schema 2020-12 object, or a JSON Schema object given directly. The
//! original's `validation` regex was applied with Python's `re.match`, which
//! anchors at the start, so the compiled `pattern` is `^(?:validation)`
//! unless it already starts with `^`.
//!
//! Instantiation validates the parameters, applies defaults and substitutes
//! `${params.name}` and the original's bare `${name}` in the steps and the
//! workflow fields (never in `metadata`): a string that is exactly one
//! parameter becomes its typed value, an embedded one becomes text. A
//! declared parameter that is absent and has no default is `null`. Run-time
//! placeholders (`${steps…}`, `${item}`, `${index}`, `${workflow.id}`) and
//! `$${` are left as written. Substituted values are escaped (`${` → `$${`)
//! in the fields resolved at run time (`inputs`, `when`, `for_each`,
//! `output`), so a parameter's text is never parsed as a reference.
//!
//! `(template_id, version)` is immutable: the registry pins the sha256 of
//! each file and refuses a file whose bytes changed under the same version.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::reference::{
    Placeholder, ReferenceError, Token, escape, escape_value, is_valid_parameter_name, show,
    tokenize,
};
use crate::spec::{MAX_STEPS, MAX_WORKFLOW_ID, StepSpec, WorkflowSpec};

/// The largest template file.
pub const MAX_TEMPLATE_BYTES: usize = 4 << 20;
/// At most this many template files are loaded.
pub const MAX_TEMPLATES: usize = 1_000;
/// The directory of templates inside the data directory.
pub const TEMPLATES_DIR: &str = "workflow-templates";
/// The longest template version.
pub const MAX_VERSION: usize = 64;
/// Names a parameter may not take: they begin run-time placeholders.
pub const RESERVED_PARAMETER_NAMES: [&str; 5] = ["steps", "item", "index", "workflow", "params"];
/// The types of the list form of `parameters`.
pub const PARAMETER_TYPES: [&str; 6] =
    ["string", "number", "integer", "boolean", "array", "object"];
/// The step fields resolved at run time, where substituted values are escaped.
const RESOLVED_STEP_FIELDS: [&str; 3] = ["inputs", "when", "for_each"];

/// A loaded template.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Template {
    pub template_id: String,
    pub version: String,
    pub name: String,
    pub description: String,
    /// `parameters` as written in the file (a list, a schema, or null).
    pub parameters: Value,
    /// The JSON Schema 2020-12 the parameters are validated with.
    pub parameters_schema: Value,
    /// The steps, placeholders and all.
    pub steps: Vec<Value>,
    pub metadata: Map<String, Value>,
    pub output: Option<Value>,
    pub on_failure: Option<Value>,
    pub max_parallel: Option<Value>,
    pub timeout_ms: Option<Value>,
    /// Of the file's bytes, lowercase hex.
    pub sha256: String,
}

impl Template {
    /// The declared parameter names (the schema's `properties`).
    pub fn parameter_names(&self) -> Vec<String> {
        declared_names(&self.parameters_schema)
    }
}

/// Why a template was refused or could not be instantiated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TemplateError {
    #[error("{}: {message}", .path.display())]
    Io { path: PathBuf, message: String },
    #[error("the template file is {bytes} bytes, over the limit of {limit} bytes")]
    TooLarge { bytes: u64, limit: usize },
    #[error(
        "{}: {found} template files, over the limit of {limit}; only the first {limit} by file name are read",
        .dir.display()
    )]
    TooMany {
        dir: PathBuf,
        found: usize,
        limit: usize,
    },
    #[error("the template is not valid JSON of the template shape: {message}")]
    Json { message: String },
    #[error("template {template_id}: {reason}")]
    Invalid { template_id: String, reason: String },
    #[error(
        "template {template_id}: parameter name {name:?} is reserved (reserved: {}); rename it",
        RESERVED_PARAMETER_NAMES.join(", ")
    )]
    ReservedParameter { template_id: String, name: String },
    #[error(
        "template {template_id}: `{placeholder}` names no declared parameter; declared parameters: {}",
        list_or_none(.declared)
    )]
    UndeclaredParameter {
        template_id: String,
        placeholder: String,
        declared: Vec<String>,
    },
    /// A placeholder that does not parse (boxed to keep the error small).
    #[error("template {template_id}: {error}")]
    Reference {
        template_id: String,
        error: Box<ReferenceError>,
    },
    #[error("template {template_id} version {version}: invalid parameters: {}", .errors.join("; "))]
    Parameters {
        template_id: String,
        version: String,
        errors: Vec<String>,
    },
    /// `load_dir` reports it inside `InFile`, which names the file.
    #[error(
        "template {template_id} version {version} changed without a new version: pinned sha256 {pinned}, \
         file now {now}; restore the file or give it a new version"
    )]
    PinMismatch {
        template_id: String,
        version: String,
        pinned: String,
        now: String,
    },
    #[error(
        "template {template_id} version {version} is defined by {} files ({}); (template_id, version) must be unique, so none of them is loaded",
        .paths.len(),
        .paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    Duplicate {
        template_id: String,
        version: String,
        paths: Vec<PathBuf>,
    },
    #[error(
        "template {template_id} version {version}: the instantiated workflow is not valid: {message}"
    )]
    Spec {
        template_id: String,
        version: String,
        message: String,
    },
    #[error("{}: {error}", .path.display())]
    InFile {
        path: PathBuf,
        error: Box<TemplateError>,
    },
}

fn list_or_none(names: &[String]) -> String {
    if names.is_empty() {
        "(none)".to_owned()
    } else {
        names.join(", ")
    }
}

/// A template file as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TemplateFile {
    template_id: String,
    /// The original's `from_dict` default.
    #[serde(default = "default_version")]
    version: String,
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    parameters: Value,
    steps: Vec<Value>,
    #[serde(default)]
    metadata: Map<String, Value>,
    #[serde(default)]
    output: Option<Value>,
    #[serde(default)]
    on_failure: Option<Value>,
    #[serde(default)]
    max_parallel: Option<Value>,
    #[serde(default)]
    timeout_ms: Option<Value>,
    /// The original's composition; only an empty list is accepted for now.
    #[serde(default)]
    includes: Option<Vec<Value>>,
}

fn default_version() -> String {
    "1.0.0".to_owned()
}

/// One parameter of the list form.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ParameterDecl {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    default: Option<Value>,
    #[serde(default)]
    required: Option<bool>,
    #[serde(default)]
    validation: Option<String>,
}

/// Parses and checks one template file: shape, parameters (names, types,
/// regexes, defaults) and every placeholder (syntax, declared parameters).
pub fn parse_template(bytes: &[u8]) -> Result<Template, TemplateError> {
    if bytes.len() > MAX_TEMPLATE_BYTES {
        return Err(TemplateError::TooLarge {
            bytes: bytes.len() as u64,
            limit: MAX_TEMPLATE_BYTES,
        });
    }
    let sha256 = hex::encode(Sha256::digest(bytes));
    let file: TemplateFile = serde_json::from_slice(bytes).map_err(|e| TemplateError::Json {
        message: e.to_string(),
    })?;
    let id = file.template_id.clone();
    let invalid = |reason: String| TemplateError::Invalid {
        template_id: id.clone(),
        reason,
    };
    if id.is_empty() || id.chars().count() > MAX_WORKFLOW_ID || id.chars().any(char::is_control) {
        return Err(invalid(format!(
            "template_id must be 1 to {MAX_WORKFLOW_ID} characters without control characters"
        )));
    }
    let version = &file.version;
    if version.is_empty()
        || version.chars().count() > MAX_VERSION
        || version.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return Err(invalid(format!(
            "version {version:?} must be 1 to {MAX_VERSION} characters without spaces, like \"1.2.0\""
        )));
    }
    if file.name.trim().is_empty() {
        return Err(invalid("name must not be empty".into()));
    }
    if file.includes.as_ref().is_some_and(|i| !i.is_empty()) {
        return Err(invalid(
            "includes (template composition) is not supported yet; copy the included steps in"
                .into(),
        ));
    }
    if file.steps.is_empty() {
        return Err(invalid("a template needs at least one step".into()));
    }
    if file.steps.len() > MAX_STEPS {
        return Err(invalid(format!(
            "{} steps, over the limit of {MAX_STEPS}",
            file.steps.len()
        )));
    }
    let known = step_fields();
    for (i, step) in file.steps.iter().enumerate() {
        let Some(map) = step.as_object() else {
            return Err(invalid(format!(
                "steps[{i}] must be an object, not {}",
                show(step)
            )));
        };
        for field in ["step_id", "action"] {
            if !map.get(field).is_some_and(Value::is_string) {
                return Err(invalid(format!("steps[{i}] needs a string {field}")));
            }
        }
        if let Some(unknown) = map.keys().find(|k| !known.contains(*k)) {
            return Err(invalid(format!(
                "steps[{i}] has unknown field {unknown:?}; step fields are {}",
                known.iter().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
    }
    let parameters_schema = compile_parameters(&id, &file.parameters)?;
    let template = Template {
        template_id: file.template_id,
        version: file.version,
        name: file.name,
        description: file.description.unwrap_or_default(),
        parameters: file.parameters,
        parameters_schema,
        steps: file.steps,
        metadata: file.metadata,
        output: file.output,
        on_failure: file.on_failure,
        max_parallel: file.max_parallel,
        timeout_ms: file.timeout_ms,
        sha256,
    };
    // Every placeholder is checked by a dry substitution with nulls.
    let nulls: Map<String, Value> = template
        .parameter_names()
        .into_iter()
        .map(|n| (n, Value::Null))
        .collect();
    substitute_all(&template, &nulls)?;
    Ok(template)
}

/// The fields of a step, as `StepSpec` serializes them.
fn step_fields() -> BTreeSet<String> {
    // Derived from the type so that the list follows spec.rs.
    match serde_json::to_value(StepSpec::new("a", "b")) {
        Ok(Value::Object(map)) => map.into_iter().map(|(k, _)| k).collect(),
        _ => BTreeSet::new(),
    }
}

/// Compiles `parameters` (list, schema or null) to a JSON Schema 2020-12 object.
fn compile_parameters(template_id: &str, parameters: &Value) -> Result<Value, TemplateError> {
    let invalid = |reason: String| TemplateError::Invalid {
        template_id: template_id.to_owned(),
        reason,
    };
    let check_name = |name: &str| {
        if RESERVED_PARAMETER_NAMES.contains(&name) {
            return Err(TemplateError::ReservedParameter {
                template_id: template_id.to_owned(),
                name: name.to_owned(),
            });
        }
        if !is_valid_parameter_name(name) {
            return Err(invalid(format!(
                "parameter name {name:?} must match [A-Za-z0-9_-]{{1,64}}"
            )));
        }
        Ok(())
    };
    let schema = match parameters {
        Value::Null => json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {},
            "additionalProperties": false,
        }),
        Value::Array(list) => {
            let mut properties = Map::new();
            let mut required = Vec::new();
            for (i, raw) in list.iter().enumerate() {
                let decl: ParameterDecl = serde_json::from_value(raw.clone())
                    .map_err(|e| invalid(format!("parameters[{i}]: {e}")))?;
                check_name(&decl.name)?;
                if properties.contains_key(&decl.name) {
                    return Err(invalid(format!(
                        "parameter {:?} is declared twice",
                        decl.name
                    )));
                }
                if !PARAMETER_TYPES.contains(&decl.kind.as_str()) {
                    return Err(invalid(format!(
                        "parameter {:?} has type {:?}; types are {}",
                        decl.name,
                        decl.kind,
                        PARAMETER_TYPES.join(", ")
                    )));
                }
                let mut property = Map::new();
                property.insert("type".into(), Value::String(decl.kind.clone()));
                if let Some(description) = decl.description.filter(|d| !d.is_empty()) {
                    property.insert("description".into(), Value::String(description));
                }
                if let Some(regex) = &decl.validation {
                    let pattern = if regex.starts_with('^') {
                        regex.clone()
                    } else {
                        format!("^(?:{regex})")
                    };
                    property.insert("pattern".into(), Value::String(pattern));
                }
                let property = Value::Object(property);
                if let Err(e) = jsonschema::draft202012::new(&property) {
                    return Err(invalid(format!(
                        "parameter {:?}: invalid declaration (is the validation regex valid?): {e}",
                        decl.name
                    )));
                }
                let mut property = property;
                match decl.default {
                    Some(default) => {
                        property["default"] = default;
                    }
                    None if decl.required.unwrap_or(true) => {
                        required.push(Value::String(decl.name.clone()));
                    }
                    None => {}
                }
                properties.insert(decl.name, property);
            }
            json!({
                "$schema": "https://json-schema.org/draft/2020-12/schema",
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": false,
            })
        }
        Value::Object(schema) => {
            match schema.get("type") {
                None => {}
                Some(Value::String(t)) if t == "object" => {}
                Some(other) => {
                    return Err(invalid(format!(
                        "a parameters schema must have \"type\": \"object\", not {}",
                        show(other)
                    )));
                }
            }
            match schema.get("properties") {
                None => {}
                Some(Value::Object(properties)) => {
                    for name in properties.keys() {
                        check_name(name)?;
                    }
                }
                Some(other) => {
                    return Err(invalid(format!(
                        "the parameters schema's properties must be an object, not {}",
                        show(other)
                    )));
                }
            }
            parameters.clone()
        }
        other => {
            return Err(invalid(format!(
                "parameters must be a list of parameters or a JSON Schema object, not {}",
                show(other)
            )));
        }
    };
    let validator = jsonschema::draft202012::new(&schema).map_err(|e| {
        invalid(format!(
            "the parameters schema is not valid JSON Schema: {e}"
        ))
    })?;
    // Each default must satisfy its own parameter's rules.
    let defaults = Value::Object(defaults(&schema));
    let bad: Vec<String> = validator
        .iter_errors(&defaults)
        .filter(|e| !e.instance_path().as_str().is_empty())
        .map(|e| {
            format!(
                "default of {}: {e}",
                dotted(e.instance_path().as_str(), &defaults)
            )
        })
        .collect();
    if !bad.is_empty() {
        return Err(invalid(bad.join("; ")));
    }
    Ok(schema)
}

fn declared_names(schema: &Value) -> Vec<String> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default()
}

/// The `default` of each property.
fn defaults(schema: &Value) -> Map<String, Value> {
    schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| {
            p.iter()
                .filter_map(|(name, property)| {
                    Some((name.clone(), property.get("default")?.clone()))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A JSON pointer into the parameters, as `parameters.a.b[0]`.
fn dotted(pointer: &str, instance: &Value) -> String {
    let mut out = String::from("parameters");
    let mut current = Some(instance);
    if let Some(rest) = pointer.strip_prefix('/') {
        for raw in rest.split('/') {
            let token = raw.replace("~1", "/").replace("~0", "~");
            match current {
                Some(Value::Array(items)) => {
                    out.push_str(&format!("[{token}]"));
                    current = token.parse::<usize>().ok().and_then(|i| items.get(i));
                }
                other => {
                    out.push('.');
                    out.push_str(&token);
                    current = other.and_then(|v| v.get(&token));
                }
            }
        }
    }
    out
}

/// Substitutes parameters in a template's steps and workflow fields.
struct Substitution<'a> {
    template_id: &'a str,
    declared: Vec<String>,
    values: &'a Map<String, Value>,
}

impl Substitution<'_> {
    /// The parameter a placeholder names, or `None` for a run-time placeholder.
    fn parameter<'b>(&self, body: &'b str) -> Result<Option<&'b str>, TemplateError> {
        let reference = |error| TemplateError::Reference {
            template_id: self.template_id.to_owned(),
            error: Box::new(error),
        };
        let name = if let Some(name) = body.strip_prefix("params.") {
            // Checks the name's syntax.
            Placeholder::parse_body(body).map_err(reference)?;
            name
        } else if is_valid_parameter_name(body) && !RESERVED_PARAMETER_NAMES.contains(&body) {
            body
        } else {
            // A run-time placeholder: left as written, but its syntax is checked.
            Placeholder::parse_body(body).map_err(reference)?;
            return Ok(None);
        };
        if !self.declared.iter().any(|d| d == name) {
            return Err(TemplateError::UndeclaredParameter {
                template_id: self.template_id.to_owned(),
                placeholder: format!("${{{body}}}"),
                declared: self.declared.clone(),
            });
        }
        Ok(Some(name))
    }

    fn value(&self, name: &str) -> Value {
        self.values.get(name).cloned().unwrap_or(Value::Null)
    }

    /// `escape`: the value is resolved at run time, so substituted text must stay literal.
    fn apply(&self, value: &Value, escaped: bool) -> Result<Value, TemplateError> {
        match value {
            Value::String(s) => self.apply_str(s, escaped),
            Value::Array(items) => items
                .iter()
                .map(|v| self.apply(v, escaped))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| Ok((k.clone(), self.apply(v, escaped)?)))
                .collect::<Result<Map<_, _>, _>>()
                .map(Value::Object),
            other => Ok(other.clone()),
        }
    }

    fn apply_str(&self, text: &str, escaped: bool) -> Result<Value, TemplateError> {
        let tokens = tokenize(text).map_err(|error| TemplateError::Reference {
            template_id: self.template_id.to_owned(),
            error: Box::new(error),
        })?;
        if let [Token::Placeholder(body)] = tokens.as_slice()
            && let Some(name) = self.parameter(body)?
        {
            let value = self.value(name);
            return Ok(if escaped { escape_value(&value) } else { value });
        }
        let mut out = String::with_capacity(text.len());
        for token in tokens {
            match token {
                Token::Literal(raw) => out.push_str(raw),
                Token::Placeholder(body) => match self.parameter(body)? {
                    None => out.push_str(&token.raw()),
                    Some(name) => {
                        let text = match self.value(name) {
                            Value::String(s) => s,
                            other => other.to_string(),
                        };
                        out.push_str(&if escaped { escape(&text) } else { text });
                    }
                },
            }
        }
        Ok(Value::String(out))
    }
}

/// The substituted `(steps, output, on_failure, max_parallel, timeout_ms)`.
type Substituted = (
    Vec<Value>,
    Option<Value>,
    Option<Value>,
    Option<Value>,
    Option<Value>,
);

fn substitute_all(t: &Template, values: &Map<String, Value>) -> Result<Substituted, TemplateError> {
    let sub = Substitution {
        template_id: &t.template_id,
        declared: t.parameter_names(),
        values,
    };
    let steps = t
        .steps
        .iter()
        .map(|step| match step {
            Value::Object(map) => map
                .iter()
                .map(|(k, v)| {
                    Ok((
                        k.clone(),
                        sub.apply(v, RESOLVED_STEP_FIELDS.contains(&k.as_str()))?,
                    ))
                })
                .collect::<Result<Map<_, _>, TemplateError>>()
                .map(Value::Object),
            other => sub.apply(other, false),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let field = |v: &Option<Value>, escaped| v.as_ref().map(|v| sub.apply(v, escaped)).transpose();
    Ok((
        steps,
        field(&t.output, true)?,
        field(&t.on_failure, false)?,
        field(&t.max_parallel, false)?,
        field(&t.timeout_ms, false)?,
    ))
}

/// Makes a workflow of a template: validates `parameters` against the
/// template's schema (each error names the parameter and the rule), applies
/// defaults and substitutes them. The workflow's metadata gains
/// `template_id`, `template_version` and `template_sha256`.
pub fn instantiate(
    t: &Template,
    parameters: &Map<String, Value>,
    workflow_id: &str,
) -> Result<WorkflowSpec, TemplateError> {
    let invalid = |errors: Vec<String>| TemplateError::Parameters {
        template_id: t.template_id.clone(),
        version: t.version.clone(),
        errors,
    };
    let validator = jsonschema::draft202012::new(&t.parameters_schema)
        .map_err(|e| invalid(vec![format!("the parameters schema is not valid: {e}")]))?;
    let mut merged = parameters.clone();
    for (name, default) in defaults(&t.parameters_schema) {
        merged.entry(name).or_insert(default);
    }
    let instance = Value::Object(merged);
    let declared = t.parameter_names();
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| describe_error(&e, &instance, &declared))
        .collect();
    if !errors.is_empty() {
        return Err(invalid(errors));
    }
    let Value::Object(merged) = instance else {
        unreachable!("built as an object")
    };
    let (steps, output, on_failure, max_parallel, timeout_ms) = substitute_all(t, &merged)?;

    let mut metadata = t.metadata.clone();
    metadata.insert("template_id".into(), Value::String(t.template_id.clone()));
    metadata.insert("template_version".into(), Value::String(t.version.clone()));
    metadata.insert("template_sha256".into(), Value::String(t.sha256.clone()));
    let mut spec = Map::new();
    spec.insert("workflow_id".into(), Value::String(workflow_id.to_owned()));
    // The original named an instance "<template name> (<workflow id>)".
    spec.insert(
        "name".into(),
        Value::String(format!("{} ({workflow_id})", t.name)),
    );
    spec.insert("steps".into(), Value::Array(steps));
    spec.insert("metadata".into(), Value::Object(metadata));
    for (key, value) in [
        ("output", output),
        ("on_failure", on_failure),
        ("max_parallel", max_parallel),
        ("timeout_ms", timeout_ms),
    ] {
        if let Some(value) = value {
            spec.insert(key.into(), value);
        }
    }
    serde_json::from_value(Value::Object(spec)).map_err(|e| TemplateError::Spec {
        template_id: t.template_id.clone(),
        version: t.version.clone(),
        message: e.to_string(),
    })
}

/// One validation error as `parameters.<name>: <rule>`.
fn describe_error(
    e: &jsonschema::ValidationError<'_>,
    instance: &Value,
    declared: &[String],
) -> String {
    let at = dotted(e.instance_path().as_str(), instance);
    match e.kind() {
        jsonschema::error::ValidationErrorKind::Required { property } => {
            let name = property
                .as_str()
                .map_or_else(|| property.to_string(), str::to_owned);
            format!("{at}.{name}: required parameter is missing")
        }
        jsonschema::error::ValidationErrorKind::AdditionalProperties { unexpected }
            if e.instance_path().as_str().is_empty() =>
        {
            format!(
                "{at}: unknown parameter{} {}; declared parameters: {}",
                if unexpected.len() == 1 { "" } else { "s" },
                unexpected
                    .iter()
                    .map(|u| format!("{u:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                list_or_none(declared)
            )
        }
        _ => format!("{at}: {e}"),
    }
}

/// Orders versions: dotted numbers (`1.10.0`) numerically and above any
/// other version; the rest as strings.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn numeric(v: &str) -> Option<Vec<u64>> {
        let mut parts = v
            .split('.')
            .map(|p| {
                if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
                    p.parse::<u64>().ok()
                } else {
                    None
                }
            })
            .collect::<Option<Vec<_>>>()?;
        while parts.len() > 1 && parts.last() == Some(&0) {
            parts.pop();
        }
        Some(parts)
    }
    match (numeric(a), numeric(b)) {
        (Some(x), Some(y)) => x.cmp(&y).then_with(|| a.cmp(b)),
        (Some(_), None) => Ordering::Greater,
        (None, Some(_)) => Ordering::Less,
        (None, None) => a.cmp(b),
    }
}

/// The templates of a directory, by id, each id's versions in order.
#[derive(Debug, Clone, Default)]
pub struct TemplateRegistry {
    templates: BTreeMap<String, Vec<Template>>,
}

impl TemplateRegistry {
    /// Loads `dir/*.json` (in file-name order; hidden files skipped). A
    /// missing directory is an empty registry. Each file that cannot be
    /// loaded is reported and skipped. `pins` maps `(template_id, version)`
    /// to the sha256 seen before: a file that differs from its pin is
    /// refused, and a new template is pinned.
    pub fn load_dir(
        dir: &Path,
        pins: &mut BTreeMap<(String, String), String>,
    ) -> (TemplateRegistry, Vec<TemplateError>) {
        let mut registry = TemplateRegistry::default();
        let mut errors = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (registry, errors),
            Err(e) => {
                errors.push(TemplateError::Io {
                    path: dir.to_owned(),
                    message: format!("cannot list the templates directory: {e}"),
                });
                return (registry, errors);
            }
        };
        let mut paths = Vec::new();
        for entry in entries {
            match entry {
                Ok(entry) => {
                    let name = entry.file_name();
                    let name = name.to_string_lossy();
                    if name.ends_with(".json") && !name.starts_with('.') {
                        paths.push(entry.path());
                    }
                }
                Err(e) => errors.push(TemplateError::Io {
                    path: dir.to_owned(),
                    message: format!("cannot list the templates directory: {e}"),
                }),
            }
        }
        paths.sort();
        if paths.len() > MAX_TEMPLATES {
            errors.push(TemplateError::TooMany {
                dir: dir.to_owned(),
                found: paths.len(),
                limit: MAX_TEMPLATES,
            });
            paths.truncate(MAX_TEMPLATES);
        }
        let mut by_key: BTreeMap<(String, String), Vec<(PathBuf, Template)>> = BTreeMap::new();
        for path in paths {
            match read_template(&path) {
                Ok(t) => by_key
                    .entry((t.template_id.clone(), t.version.clone()))
                    .or_default()
                    .push((path, t)),
                Err(error) => errors.push(TemplateError::InFile {
                    path,
                    error: Box::new(error),
                }),
            }
        }
        for ((template_id, version), mut files) in by_key {
            if files.len() > 1 {
                errors.push(TemplateError::Duplicate {
                    template_id,
                    version,
                    paths: files.into_iter().map(|(p, _)| p).collect(),
                });
                continue;
            }
            let (path, template) = files.remove(0);
            let key = (template_id, version);
            match pins.get(&key) {
                Some(pinned) if *pinned != template.sha256 => {
                    errors.push(TemplateError::InFile {
                        path,
                        error: Box::new(TemplateError::PinMismatch {
                            template_id: key.0,
                            version: key.1,
                            pinned: pinned.clone(),
                            now: template.sha256,
                        }),
                    });
                    continue;
                }
                Some(_) => {}
                None => {
                    pins.insert(key, template.sha256.clone());
                }
            }
            registry.insert(template);
        }
        (registry, errors)
    }

    fn insert(&mut self, template: Template) {
        let versions = self
            .templates
            .entry(template.template_id.clone())
            .or_default();
        let at = versions
            .binary_search_by(|t| compare_versions(&t.version, &template.version))
            .unwrap_or_else(|at| at);
        versions.insert(at, template);
    }

    /// A template by id and version, or its latest version when `version` is `None`.
    pub fn get(&self, id: &str, version: Option<&str>) -> Option<&Template> {
        let versions = self.templates.get(id)?;
        match version {
            Some(v) => versions.iter().find(|t| t.version == v),
            None => versions.last(),
        }
    }

    /// Every template, by id, then by version (oldest first).
    pub fn list(&self) -> Vec<&Template> {
        self.templates.values().flatten().collect()
    }

    /// How many templates (all versions) are loaded.
    pub fn len(&self) -> usize {
        self.templates.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.templates.is_empty()
    }
}

fn read_template(path: &Path) -> Result<Template, TemplateError> {
    let io = |e: std::io::Error| TemplateError::Io {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > MAX_TEMPLATE_BYTES as u64 {
        return Err(TemplateError::TooLarge {
            bytes: size,
            limit: MAX_TEMPLATE_BYTES,
        });
    }
    let mut bytes = Vec::with_capacity(size as usize);
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAX_TEMPLATE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    parse_template(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_numerically_then_as_strings() {
        assert_eq!(compare_versions("1.10.0", "1.9.3"), Ordering::Greater);
        assert_eq!(compare_versions("2", "1.99"), Ordering::Greater);
        assert_eq!(compare_versions("1.0", "1.0.0"), Ordering::Less); // tie broken by text
        assert_eq!(compare_versions("0.1", "beta"), Ordering::Greater);
        assert_eq!(compare_versions("alpha", "beta"), Ordering::Less);
        assert_eq!(compare_versions("1.a", "1.0"), Ordering::Less);
    }

    #[test]
    fn dotted_paths_show_array_indexes() {
        let instance = serde_json::json!({"a": [{"b/c": 1}]});
        assert_eq!(dotted("/a/0/b~1c", &instance), "parameters.a[0].b/c");
        assert_eq!(dotted("", &instance), "parameters");
    }

    #[test]
    fn step_fields_follow_the_spec() {
        let fields = step_fields();
        for f in [
            "step_id",
            "action",
            "inputs",
            "depends_on",
            "when",
            "for_each",
        ] {
            assert!(fields.contains(f), "{f} missing from {fields:?}");
        }
    }

    /// Below clippy's `result_large_err` threshold (128 bytes), so callers may return it.
    #[test]
    fn the_error_stays_small() {
        assert!(
            std::mem::size_of::<TemplateError>() < 128,
            "{}",
            std::mem::size_of::<TemplateError>()
        );
    }
}
