//! Templates: parsing, parameter schemas, validation errors, defaults,
//! typed substitution, run-time placeholders left alone, sha256 pins.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mcpplus_workflow::reference::{Scope, StepField, resolve};
use mcpplus_workflow::spec::OnFailure;
use mcpplus_workflow::template::{
    MAX_TEMPLATE_BYTES, MAX_TEMPLATES, RESERVED_PARAMETER_NAMES, Template, TemplateError,
    TemplateRegistry, compare_versions, instantiate, parse_template,
};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

fn sha(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn params(value: Value) -> Map<String, Value> {
    value.as_object().unwrap().clone()
}

/// The original's list form, every feature used.
fn crawl() -> Value {
    json!({
        "template_id": "crawl",
        "version": "1.2.0",
        "name": "Crawl",
        "description": "fetch then count",
        "parameters": [
            {"name": "url", "type": "string", "description": "start page", "validation": "https?://"},
            {"name": "count", "type": "integer", "default": 3, "required": false},
            {"name": "label", "type": "string", "default": "run"},
            {"name": "tags", "type": "array", "required": false},
            {"name": "ratio", "type": "number", "required": false},
            {"name": "deep", "type": "boolean", "default": false},
            {"name": "opts", "type": "object", "default": {"k": "v"}}
        ],
        "steps": [
            {"step_id": "fetch", "action": "http_get",
             "inputs": {"url": "${url}", "limit": "${count}", "title": "${label}: ${count} pages from ${params.url}",
                        "tags": "${tags}", "opts": "${params.opts}", "deep": "${deep}"}},
            {"step_id": "count", "action": "word_count", "depends_on": ["fetch"],
             "inputs": {"text": "${steps.fetch.result/body}", "each": "${item/x} #${index} of ${workflow.id}",
                        "lit": "$${url} and $${steps.x.result}"},
             "for_each": "${steps.fetch.result/items}",
             "when": {"gt": ["${steps.fetch.result/n}", "${count}"]},
             "timeout_ms": "${count}"}
        ],
        "metadata": {"owner": "ops", "note": "${not_substituted_in_metadata}"},
        "output": {"total": "${steps.count.result}", "label": "${label}"},
        "max_parallel": "${count}"
    })
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec_pretty(v).unwrap()
}

fn parse(v: &Value) -> Result<Template, TemplateError> {
    parse_template(&bytes(v))
}

fn crawl_template() -> Template {
    parse(&crawl()).unwrap()
}

fn instantiate_err(t: &Template, p: Value) -> String {
    instantiate(t, &params(p), "wf-1").unwrap_err().to_string()
}

#[test]
fn whole_string_parameters_keep_their_type_and_embedded_ones_become_text() {
    let t = crawl_template();
    let spec = instantiate(
        &t,
        &params(json!({"url": "https://a.example", "tags": ["x"]})),
        "wf-1",
    )
    .unwrap();
    let fetch = &spec.steps[0].inputs;
    assert_eq!(fetch["url"], json!("https://a.example"));
    assert_eq!(fetch["limit"], json!(3)); // the default, as a number
    assert_eq!(fetch["title"], json!("run: 3 pages from https://a.example"));
    assert_eq!(fetch["tags"], json!(["x"]));
    assert_eq!(fetch["opts"], json!({"k": "v"}));
    assert_eq!(fetch["deep"], json!(false));
    // Typed substitution in typed fields too.
    assert_eq!(spec.steps[1].timeout_ms, Some(3));
    assert_eq!(spec.max_parallel, 3);
    assert_eq!(
        spec.steps[1].when,
        Some(json!({"gt": ["${steps.fetch.result/n}", 3]}))
    );
    assert_eq!(
        spec.output,
        Some(json!({"total": "${steps.count.result}", "label": "run"}))
    );
    assert_eq!(spec.workflow_id, "wf-1");
    assert_eq!(spec.name, "Crawl (wf-1)");
    assert_eq!(spec.on_failure, OnFailure::Stop);
}

#[test]
fn given_values_override_defaults_and_absent_optionals_are_null() {
    let t = crawl_template();
    let spec = instantiate(
        &t,
        &params(json!({"url": "http://b", "count": 10, "label": "L"})),
        "wf-2",
    )
    .unwrap();
    let fetch = &spec.steps[0].inputs;
    assert_eq!(fetch["limit"], json!(10));
    assert_eq!(fetch["title"], json!("L: 10 pages from http://b"));
    assert_eq!(fetch["tags"], Value::Null);
    assert_eq!(spec.max_parallel, 10);
}

#[test]
fn run_time_placeholders_and_escapes_are_left_as_written() {
    let spec = instantiate(&crawl_template(), &params(json!({"url": "http://a"})), "wf").unwrap();
    let count = &spec.steps[1];
    assert_eq!(count.inputs["text"], json!("${steps.fetch.result/body}"));
    assert_eq!(
        count.inputs["each"],
        json!("${item/x} #${index} of ${workflow.id}")
    );
    assert_eq!(count.inputs["lit"], json!("$${url} and $${steps.x.result}"));
    assert_eq!(count.for_each, Some(json!("${steps.fetch.result/items}")));
    assert_eq!(count.depends_on, vec!["fetch".to_owned()]);
}

#[test]
fn metadata_names_the_template_and_is_not_substituted() {
    let file = bytes(&crawl());
    let t = parse_template(&file).unwrap();
    assert_eq!(t.sha256, sha(&file));
    let spec = instantiate(&t, &params(json!({"url": "http://a"})), "wf").unwrap();
    assert_eq!(spec.metadata["template_id"], json!("crawl"));
    assert_eq!(spec.metadata["template_version"], json!("1.2.0"));
    assert_eq!(spec.metadata["template_sha256"], json!(sha(&file)));
    assert_eq!(spec.metadata["owner"], json!("ops"));
    assert_eq!(
        spec.metadata["note"],
        json!("${not_substituted_in_metadata}")
    );
}

#[test]
fn parameter_text_is_never_parsed_as_a_reference() {
    let t = crawl_template();
    let spec = instantiate(
        &t,
        &params(json!({"url": "http://a", "label": "${steps.secret.result}", "opts": {"s": "${index}"}})),
        "wf",
    )
    .unwrap();
    let inputs = &spec.steps[0].inputs;
    assert_eq!(
        inputs["title"],
        json!("$${steps.secret.result}: 3 pages from http://a")
    );
    assert_eq!(inputs["opts"], json!({"s": "$${index}"}));
    assert_eq!(
        spec.output.as_ref().unwrap()["label"],
        json!("$${steps.secret.result}")
    );

    // At run time they resolve to the parameter's text, not to a step.
    struct Nothing;
    impl Scope for Nothing {
        fn step(&self, _: &str, _: StepField) -> Option<Value> {
            None
        }
        fn item(&self) -> Option<&Value> {
            None
        }
        fn index(&self) -> Option<usize> {
            None
        }
        fn workflow_id(&self) -> &str {
            "wf"
        }
    }
    let resolved = resolve(&Value::Object(inputs.clone()), &Nothing).unwrap();
    assert_eq!(
        resolved["title"],
        json!("${steps.secret.result}: 3 pages from http://a")
    );
    assert_eq!(resolved["opts"], json!({"s": "${index}"}));
}

#[test]
fn fields_not_resolved_at_run_time_get_the_raw_value() {
    let mut v = crawl();
    v["parameters"] = json!([{"name": "tool", "type": "string"}, {"name": "id", "type": "string"}]);
    v["steps"] = json!([{"step_id": "${id}", "action": "${tool}", "description": "calls ${tool}"}]);
    v.as_object_mut().unwrap().remove("output");
    v.as_object_mut().unwrap().remove("max_parallel");
    let spec = instantiate(
        &parse(&v).unwrap(),
        &params(json!({"tool": "echo", "id": "s1"})),
        "w",
    )
    .unwrap();
    assert_eq!(spec.steps[0].step_id, "s1");
    assert_eq!(spec.steps[0].action, "echo");
    assert_eq!(spec.steps[0].description.as_deref(), Some("calls echo"));
}

#[test]
fn a_wrong_type_names_the_parameter_and_the_rule() {
    let msg = instantiate_err(
        &crawl_template(),
        json!({"url": "http://a", "count": "ten"}),
    );
    assert!(
        msg.contains(r#"parameters.count: "ten" is not of type "integer""#),
        "{msg}"
    );
    assert!(msg.contains("template crawl version 1.2.0"), "{msg}");
    let msg = instantiate_err(&crawl_template(), json!({"url": "http://a", "count": 2.5}));
    assert!(
        msg.contains(r#"parameters.count: 2.5 is not of type "integer""#),
        "{msg}"
    );
    let msg = instantiate_err(
        &crawl_template(),
        json!({"url": "http://a", "ratio": "x", "tags": {}}),
    );
    assert!(
        msg.contains(r#"parameters.ratio: "x" is not of type "number""#),
        "{msg}"
    );
    assert!(
        msg.contains(r#"parameters.tags: {} is not of type "array""#),
        "{msg}"
    );
}

#[test]
fn a_missing_parameter_is_named() {
    let msg = instantiate_err(&crawl_template(), json!({}));
    assert!(
        msg.contains("parameters.url: required parameter is missing"),
        "{msg}"
    );
    // Parameters with defaults are never missing.
    assert!(!msg.contains("parameters.label"), "{msg}");
}

#[test]
fn a_pattern_violation_is_named() {
    let msg = instantiate_err(&crawl_template(), json!({"url": "ftp://a"}));
    assert!(
        msg.contains(r#"parameters.url: "ftp://a" does not match"#),
        "{msg}"
    );
    assert!(msg.contains("https?://"), "{msg}");
    // The original's re.match anchors at the start: a match later in the text does not count.
    let msg = instantiate_err(&crawl_template(), json!({"url": "see http://a"}));
    assert!(msg.contains("parameters.url"), "{msg}");
}

#[test]
fn an_unknown_parameter_is_named_with_the_declared_ones() {
    let msg = instantiate_err(&crawl_template(), json!({"url": "http://a", "cuont": 2}));
    assert!(msg.contains(r#"unknown parameter "cuont""#), "{msg}");
    assert!(
        msg.contains("declared parameters: url, count, label, tags, ratio, deep, opts"),
        "{msg}"
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let msg = instantiate_err(&crawl_template(), json!({"count": "x", "deep": 1}));
    assert!(msg.contains("parameters.url"), "{msg}");
    assert!(msg.contains("parameters.count"), "{msg}");
    assert!(
        msg.contains("parameters.deep: 1 is not of type \"boolean\""),
        "{msg}"
    );
}

#[test]
fn the_list_form_compiles_to_json_schema() {
    let t = crawl_template();
    let s = &t.parameters_schema;
    assert_eq!(
        s["$schema"],
        json!("https://json-schema.org/draft/2020-12/schema")
    );
    assert_eq!(s["type"], json!("object"));
    assert_eq!(s["additionalProperties"], json!(false));
    assert_eq!(s["required"], json!(["url"]));
    assert_eq!(
        s["properties"]["url"],
        json!({"type": "string", "description": "start page", "pattern": "^(?:https?://)"})
    );
    assert_eq!(
        s["properties"]["count"],
        json!({"type": "integer", "default": 3})
    );
    assert_eq!(
        t.parameter_names(),
        vec!["url", "count", "label", "tags", "ratio", "deep", "opts"]
    );
}

#[test]
fn parameters_may_be_a_json_schema() {
    let mut v = crawl();
    v["parameters"] = json!({
        "type": "object",
        "properties": {
            "url": {"type": "string", "format": "uri"},
            "count": {"type": "integer", "minimum": 1, "maximum": 5, "default": 2},
            "label": {"enum": ["run", "test"], "default": "run"},
            "tags": {"type": "array"}, "ratio": {"type": "number"},
            "deep": {"type": "boolean", "default": true}, "opts": {"type": "object"}
        },
        "required": ["url"],
        "additionalProperties": false
    });
    let t = parse(&v).unwrap();
    assert_eq!(t.parameters_schema, v["parameters"]);
    let spec = instantiate(&t, &params(json!({"url": "http://a"})), "w").unwrap();
    assert_eq!(spec.steps[0].inputs["limit"], json!(2));
    assert_eq!(spec.steps[0].inputs["deep"], json!(true));
    let msg = instantiate_err(&t, json!({"url": "http://a", "count": 9, "label": "x"}));
    assert!(
        msg.contains("parameters.count: 9 is greater than the maximum of 5"),
        "{msg}"
    );
    assert!(
        msg.contains("parameters.label: \"x\" is not one of"),
        "{msg}"
    );
    let msg = instantiate_err(&t, json!({}));
    assert!(
        msg.contains("parameters.url: required parameter is missing"),
        "{msg}"
    );
}

#[test]
fn an_undeclared_placeholder_is_refused_listing_the_declared_parameters() {
    for text in ["${nope}", "x ${nope} y", "${params.nope}"] {
        let mut v = crawl();
        v["steps"][0]["inputs"]["extra"] = json!(text);
        let err = parse(&v).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, TemplateError::UndeclaredParameter { .. }),
            "{msg}"
        );
        assert!(
            msg.contains(&text.replace("x ", "").replace(" y", "")),
            "{msg}"
        );
        assert!(
            msg.contains("declared parameters: url, count, label, tags, ratio, deep, opts"),
            "{msg}"
        );
    }
    // Also in the output and the workflow fields.
    let mut v = crawl();
    v["output"] = json!({"x": "${nope}"});
    assert!(matches!(
        parse(&v),
        Err(TemplateError::UndeclaredParameter { .. })
    ));
    // And at instantiation, for a template built by hand.
    let mut t = crawl_template();
    t.steps[0]["inputs"]["extra"] = json!("${nope}");
    let msg = instantiate_err(&t, json!({"url": "http://a"}));
    assert!(
        msg.contains("${nope}") && msg.contains("declared parameters"),
        "{msg}"
    );
    // With no parameters at all.
    let v = json!({"template_id": "t", "version": "1", "name": "T",
                   "steps": [{"step_id": "a", "action": "x", "inputs": {"v": "${v}"}}]});
    let msg = parse(&v).unwrap_err().to_string();
    assert!(msg.contains("declared parameters: (none)"), "{msg}");
}

#[test]
fn bad_run_time_placeholders_are_refused_at_load() {
    let mut v = crawl();
    v["steps"][1]["inputs"]["bad"] = json!("${steps.fetch.reslt}");
    let msg = parse(&v).unwrap_err().to_string();
    assert!(
        msg.contains("template crawl") && msg.contains("unknown step field"),
        "{msg}"
    );
    let mut v = crawl();
    v["steps"][1]["inputs"]["bad"] = json!("${url");
    assert!(parse(&v).unwrap_err().to_string().contains("unterminated"));
}

#[test]
fn reserved_parameter_names_are_refused() {
    for name in RESERVED_PARAMETER_NAMES {
        let mut v = crawl();
        v["parameters"][0]["name"] = json!(name);
        let err = parse(&v).unwrap_err();
        assert!(
            matches!(err, TemplateError::ReservedParameter { .. }),
            "{err}"
        );
        assert!(
            err.to_string().contains(&format!("{name:?} is reserved")),
            "{err}"
        );

        let mut v = crawl();
        v["parameters"] = json!({"type": "object", "properties": {name: {"type": "string"}}});
        let err = parse(&v).unwrap_err();
        assert!(
            matches!(err, TemplateError::ReservedParameter { .. }),
            "{err}"
        );
    }
}

#[test]
fn bad_parameter_declarations_are_refused() {
    let cases = [
        (
            json!([{"name": "a", "type": "text"}]),
            "types are string, number, integer, boolean, array, object",
        ),
        (
            json!([{"name": "a", "type": "string"}, {"name": "a", "type": "string"}]),
            "declared twice",
        ),
        (json!([{"name": "a b", "type": "string"}]), "must match"),
        (
            json!([{"name": "a", "type": "string", "validation": "(["}]),
            "parameter \"a\"",
        ),
        (
            json!([{"name": "a", "type": "integer", "default": "x"}]),
            "default of parameters.a",
        ),
        (
            json!([{"name": "a", "type": "string", "default": "zz", "validation": "[0-9]+"}]),
            "default of parameters.a",
        ),
        (
            json!([{"name": "a", "type": "string", "colour": "red"}]),
            "unknown field `colour`",
        ),
        (json!([{"type": "string"}]), "missing field `name`"),
        (json!({"type": "array"}), "\"type\": \"object\""),
        (
            json!({"properties": {"a": {"type": "strin"}}}),
            "not valid JSON Schema",
        ),
        (
            json!({"properties": {"n": {"type": "integer", "default": "x"}}}),
            "default of parameters.n",
        ),
        (
            json!("a, b"),
            "a list of parameters or a JSON Schema object",
        ),
    ];
    for (parameters, expect) in cases {
        let mut v = crawl();
        v["parameters"] = parameters.clone();
        // Keep the steps referring only to declared names.
        v["steps"] = json!([{"step_id": "s", "action": "x"}]);
        v.as_object_mut().unwrap().remove("output");
        v.as_object_mut().unwrap().remove("max_parallel");
        let msg = parse(&v).unwrap_err().to_string();
        assert!(msg.contains(expect), "{parameters}: {msg}");
    }
}

#[test]
fn bad_template_shapes_are_refused() {
    let mut cases: Vec<(Value, &str)> = Vec::new();
    let mut v = crawl();
    v["colour"] = json!(1);
    cases.push((v, "unknown field `colour`"));
    let mut v = crawl();
    v["steps"][0]["depend_on"] = json!(["x"]);
    cases.push((v, "unknown field \"depend_on\"; step fields are"));
    let mut v = crawl();
    v["steps"] = json!([]);
    cases.push((v, "at least one step"));
    let mut v = crawl();
    v["steps"][0].as_object_mut().unwrap().remove("action");
    cases.push((v, "steps[0] needs a string action"));
    let mut v = crawl();
    v["steps"][1] = json!("s");
    cases.push((v, "steps[1] must be an object"));
    let mut v = crawl();
    v["includes"] = json!(["other"]);
    cases.push((v, "includes"));
    let mut v = crawl();
    v["template_id"] = json!("");
    cases.push((v, "template_id must be"));
    let mut v = crawl();
    v["version"] = json!("1 2");
    cases.push((v, "version \"1 2\""));
    let mut v = crawl();
    v["name"] = json!(" ");
    cases.push((v, "name must not be empty"));
    let mut v = crawl();
    v.as_object_mut().unwrap().remove("template_id");
    cases.push((v, "missing field `template_id`"));
    for (v, expect) in cases {
        let msg = parse(&v).unwrap_err().to_string();
        assert!(msg.contains(expect), "{expect}: {msg}");
    }
    assert!(
        parse_template(b"{")
            .unwrap_err()
            .to_string()
            .contains("not valid JSON")
    );
    // The original's saved shape (`includes: []`, null fields) is accepted; version defaults to 1.0.0.
    let mut v = crawl();
    v["includes"] = json!([]);
    v["description"] = Value::Null;
    v["parameters"][0]["default"] = Value::Null;
    v["parameters"][0]["validation"] = Value::Null;
    v.as_object_mut().unwrap().remove("version");
    let t = parse(&v).unwrap();
    assert_eq!(t.version, "1.0.0");
    assert_eq!(t.parameters_schema["required"], json!(["url"]));
}

#[test]
fn an_oversized_template_is_refused() {
    let big = vec![b' '; MAX_TEMPLATE_BYTES + 1];
    let err = parse_template(&big).unwrap_err();
    assert!(matches!(err, TemplateError::TooLarge { .. }));
    assert!(err.to_string().contains(&MAX_TEMPLATE_BYTES.to_string()));
}

#[test]
fn an_invalid_instantiated_workflow_is_refused() {
    let mut v = crawl();
    v["parameters"] = json!([{"name": "t", "type": "string"}]);
    v["steps"] = json!([{"step_id": "s", "action": "x", "timeout_ms": "${t}"}]);
    v.as_object_mut().unwrap().remove("output");
    v.as_object_mut().unwrap().remove("max_parallel");
    let t = parse(&v).unwrap();
    let err = instantiate(&t, &params(json!({"t": "soon"})), "w").unwrap_err();
    assert!(matches!(err, TemplateError::Spec { .. }), "{err}");
}

// ---- the registry ----

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "mcpplus-workflow-templates-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn write(&self, name: &str, v: &Value) -> Vec<u8> {
        let b = bytes(v);
        std::fs::write(self.0.join(name), &b).unwrap();
        b
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn version(id: &str, version: &str) -> Value {
    json!({"template_id": id, "version": version, "name": id, "steps": [{"step_id": "s", "action": "echo"}]})
}

#[test]
fn load_dir_pins_and_refuses_a_changed_file_naming_both_sha256s() {
    let dir = TempDir::new();
    let first = dir.write("crawl.json", &crawl());
    let mut pins = BTreeMap::new();
    let (registry, errors) = TemplateRegistry::load_dir(&dir.0, &mut pins);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(registry.len(), 1);
    let key = ("crawl".to_owned(), "1.2.0".to_owned());
    assert_eq!(pins.get(&key), Some(&sha(&first)));

    // Same bytes again: fine.
    let (registry, errors) = TemplateRegistry::load_dir(&dir.0, &mut pins);
    assert!(errors.is_empty() && registry.len() == 1);

    // Edited under the same version: refused, pin kept.
    let mut edited = crawl();
    edited["description"] = json!("changed");
    let second = dir.write("crawl.json", &edited);
    let (registry, errors) = TemplateRegistry::load_dir(&dir.0, &mut pins);
    assert!(registry.get("crawl", None).is_none());
    assert_eq!(errors.len(), 1);
    let msg = errors[0].to_string();
    assert!(
        msg.contains(&format!(
            "template crawl version 1.2.0 changed without a new version: pinned sha256 {}, file now {}",
            sha(&first),
            sha(&second)
        )),
        "{msg}"
    );
    assert!(msg.contains("crawl.json"), "{msg}");
    assert_eq!(pins.get(&key), Some(&sha(&first)));

    // A new version is a new template.
    edited["version"] = json!("1.3.0");
    let third = dir.write("crawl.json", &edited);
    let (registry, errors) = TemplateRegistry::load_dir(&dir.0, &mut pins);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(registry.get("crawl", None).unwrap().sha256, sha(&third));
    assert_eq!(pins.len(), 2);
}

#[test]
fn load_dir_refuses_two_files_with_the_same_id_and_version() {
    let dir = TempDir::new();
    dir.write("a.json", &version("t", "1.0.0"));
    let mut other = version("t", "1.0.0");
    other["description"] = json!("other");
    dir.write("b.json", &other);
    dir.write("c.json", &version("t", "2.0.0"));
    let mut pins = BTreeMap::new();
    let (registry, errors) = TemplateRegistry::load_dir(&dir.0, &mut pins);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let msg = errors[0].to_string();
    assert!(
        matches!(errors[0], TemplateError::Duplicate { .. }),
        "{msg}"
    );
    assert!(msg.contains("a.json") && msg.contains("b.json"), "{msg}");
    assert!(registry.get("t", Some("1.0.0")).is_none());
    assert_eq!(registry.get("t", None).unwrap().version, "2.0.0");
    assert!(!pins.contains_key(&("t".to_owned(), "1.0.0".to_owned())));
}

#[test]
fn get_takes_the_latest_version_by_dotted_numbers() {
    let dir = TempDir::new();
    for v in ["1.2.0", "1.10.0", "1.9.3", "0.9"] {
        dir.write(&format!("t-{v}.json"), &version("t", v));
    }
    dir.write("u.json", &version("u", "beta"));
    dir.write("u2.json", &version("u", "alpha"));
    let (registry, errors) = TemplateRegistry::load_dir(&dir.0, &mut BTreeMap::new());
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(registry.get("t", None).unwrap().version, "1.10.0");
    assert_eq!(registry.get("t", Some("1.9.3")).unwrap().version, "1.9.3");
    assert!(registry.get("t", Some("1.9")).is_none());
    assert!(registry.get("nope", None).is_none());
    assert_eq!(registry.get("u", None).unwrap().version, "beta");
    let listed: Vec<(String, String)> = registry
        .list()
        .iter()
        .map(|t| (t.template_id.clone(), t.version.clone()))
        .collect();
    let expect: Vec<(String, String)> = [
        ("t", "0.9"),
        ("t", "1.2.0"),
        ("t", "1.9.3"),
        ("t", "1.10.0"),
        ("u", "alpha"),
        ("u", "beta"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(listed, expect);
    assert_eq!(compare_versions("2.0", "10.0"), std::cmp::Ordering::Less);
}

#[test]
fn load_dir_reports_bad_files_by_path_and_loads_the_rest() {
    let dir = TempDir::new();
    dir.write("good.json", &version("good", "1"));
    std::fs::write(dir.0.join("broken.json"), b"{ nope").unwrap();
    let mut bad = version("bad", "1");
    bad["steps"][0]["inputs"] = json!({"x": "${undeclared}"});
    dir.write("bad.json", &bad);
    // Not templates: ignored.
    std::fs::write(dir.0.join("notes.txt"), b"hello").unwrap();
    std::fs::write(dir.0.join(".hidden.json"), b"{").unwrap();
    std::fs::create_dir(dir.0.join("sub.d")).unwrap();
    let big = vec![b' '; MAX_TEMPLATE_BYTES + 1];
    std::fs::write(dir.0.join("huge.json"), big).unwrap();

    let (registry, errors) = TemplateRegistry::load_dir(&dir.0, &mut BTreeMap::new());
    assert_eq!(registry.len(), 1);
    assert!(registry.get("good", None).is_some());
    let msgs: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(msgs.len(), 3, "{msgs:#?}");
    assert!(
        msgs.iter()
            .any(|m| m.contains("bad.json") && m.contains("${undeclared}")),
        "{msgs:#?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains("broken.json") && m.contains("not valid JSON")),
        "{msgs:#?}"
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains("huge.json") && m.contains("over the limit")),
        "{msgs:#?}"
    );
}

#[test]
fn a_missing_directory_is_empty() {
    let (registry, errors) = TemplateRegistry::load_dir(
        Path::new("/nonexistent/mcpplus/workflow-templates"),
        &mut BTreeMap::new(),
    );
    assert!(registry.is_empty() && errors.is_empty());
}

#[test]
fn at_most_max_templates_are_loaded() {
    let dir = TempDir::new();
    for i in 0..=MAX_TEMPLATES {
        dir.write(&format!("t{i:05}.json"), &version(&format!("t{i:05}"), "1"));
    }
    let (registry, errors) = TemplateRegistry::load_dir(&dir.0, &mut BTreeMap::new());
    assert_eq!(registry.len(), MAX_TEMPLATES);
    assert_eq!(errors.len(), 1);
    let msg = errors[0].to_string();
    assert!(
        msg.contains("1001 template files, over the limit of 1000"),
        "{msg}"
    );
    assert!(
        registry
            .get(&format!("t{MAX_TEMPLATES:05}"), None)
            .is_none()
    );
}
