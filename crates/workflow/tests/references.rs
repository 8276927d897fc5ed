//! `${…}` references: grammar, typed and embedded substitution, pointers,
//! escapes, no re-parsing, and errors a user can act on.

use std::collections::BTreeMap;

use mcpplus_workflow::reference::{
    Placeholder, ReferenceError, Scope, StepField, escape, escape_value, parse_placeholders,
    referenced_steps, resolve,
};
use proptest::prelude::*;
use serde_json::{Value, json};

#[derive(Default)]
struct TestScope {
    steps: BTreeMap<(String, StepField), Value>,
    item: Option<Value>,
    index: Option<usize>,
}

impl TestScope {
    fn with(mut self, step: &str, field: StepField, value: Value) -> Self {
        self.steps.insert((step.to_owned(), field), value);
        self
    }
    fn in_item(mut self, item: Value, index: usize) -> Self {
        self.item = Some(item);
        self.index = Some(index);
        self
    }
}

impl Scope for TestScope {
    fn step(&self, id: &str, field: StepField) -> Option<Value> {
        self.steps.get(&(id.to_owned(), field)).cloned()
    }
    fn item(&self) -> Option<&Value> {
        self.item.as_ref()
    }
    fn index(&self) -> Option<usize> {
        self.index
    }
    fn workflow_id(&self) -> &str {
        "wf-1"
    }
}

fn fetch_scope() -> TestScope {
    TestScope::default()
        .with(
            "fetch",
            StepField::Result,
            json!({
                "body": {"count": 3, "name": "Ann", "items": ["a", "b", "c"], "obj": {"x": [1, 2]}, "nothing": null},
                "a/b": "slash",
                "m~n": "tilde",
                "~1": "literal tilde-one",
                "a.b": "dot",
                "": "empty key"
            }),
        )
        .with("fetch", StepField::Status, json!("completed"))
        .with("fetch", StepField::Output, json!({"content": [{"type": "text", "text": "hi"}]}))
        .with("broken", StepField::Error, json!("boom"))
}

fn r(value: Value) -> Result<Value, ReferenceError> {
    resolve(&value, &fetch_scope())
}

#[test]
fn a_lone_placeholder_keeps_its_json_type() {
    assert_eq!(
        r(json!("${steps.fetch.result/body/count}")).unwrap(),
        json!(3)
    );
    assert_eq!(
        r(json!("${steps.fetch.result/body/items}")).unwrap(),
        json!(["a", "b", "c"])
    );
    assert_eq!(
        r(json!("${steps.fetch.result/body/obj}")).unwrap(),
        json!({"x": [1, 2]})
    );
    assert_eq!(
        r(json!("${steps.fetch.result/body/nothing}")).unwrap(),
        Value::Null
    );
    assert_eq!(
        r(json!("${steps.fetch.status}")).unwrap(),
        json!("completed")
    );
    assert_eq!(
        r(json!("${steps.fetch.output/content/0/text}")).unwrap(),
        json!("hi")
    );
    assert_eq!(r(json!("${steps.broken.error}")).unwrap(), json!("boom"));
    assert_eq!(r(json!("${workflow.id}")).unwrap(), json!("wf-1"));
}

#[test]
fn embedded_placeholders_become_text() {
    // Strings raw, everything else compact JSON.
    assert_eq!(
        r(json!("hello ${steps.fetch.result/body/name}!")).unwrap(),
        json!("hello Ann!")
    );
    assert_eq!(
        r(json!("n=${steps.fetch.result/body/count}")).unwrap(),
        json!("n=3")
    );
    assert_eq!(
        r(json!("o=${steps.fetch.result/body/obj} l=${steps.fetch.result/body/items} z=${steps.fetch.result/body/nothing}")).unwrap(),
        json!(r#"o={"x":[1,2]} l=["a","b","c"] z=null"#)
    );
    assert_eq!(
        r(json!("${workflow.id}${workflow.id}")).unwrap(),
        json!("wf-1wf-1")
    );
}

#[test]
fn values_are_walked_but_object_keys_are_not_scanned() {
    let scope = fetch_scope().in_item(json!({"id": 7}), 2);
    let value = json!({
        "${index}": "${index}",
        "list": ["${item/id}", 5, true, null, {"deep": "#${index}"}]
    });
    assert_eq!(
        resolve(&value, &scope).unwrap(),
        json!({"${index}": 2, "list": [7, 5, true, null, {"deep": "#2"}]})
    );
}

#[test]
fn pointers_unescape_tilde_and_slash() {
    assert_eq!(
        r(json!("${steps.fetch.result/a~1b}")).unwrap(),
        json!("slash")
    );
    assert_eq!(
        r(json!("${steps.fetch.result/m~0n}")).unwrap(),
        json!("tilde")
    );
    // `~01` is `~1` (the `~1` → `/` step comes first, and does not apply).
    assert_eq!(
        r(json!("${steps.fetch.result/~01}")).unwrap(),
        json!("literal tilde-one")
    );
    // Dots are just characters in a pointer; `/` alone is the empty key.
    assert_eq!(r(json!("${steps.fetch.result/a.b}")).unwrap(), json!("dot"));
    assert_eq!(
        r(json!("${steps.fetch.result/}")).unwrap(),
        json!("empty key")
    );
    // An unescaped `/` splits: `a/b` is key "a" then "b", which is missing.
    assert!(matches!(
        r(json!("${steps.fetch.result/a/b}")),
        Err(ReferenceError::MissingPath { .. })
    ));
}

#[test]
fn a_bad_pointer_escape_is_a_syntax_error() {
    for text in [
        "${steps.fetch.result/a~2}",
        "${steps.fetch.result/a~}",
        "${item/~x}",
    ] {
        let err = parse_placeholders(&json!(text)).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ReferenceError::Syntax { .. }), "{msg}");
        assert!(msg.contains("must be followed by 0"), "{msg}");
    }
}

#[test]
fn array_indexes() {
    assert_eq!(
        r(json!("${steps.fetch.result/body/items/2}")).unwrap(),
        json!("c")
    );
    let err = r(json!("${steps.fetch.result/body/items/3}")).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("array of length 3"), "{msg}");
    assert!(msg.contains("/body/items"), "{msg}");
    // Leading zeros and `-` are not indexes (RFC 6901).
    for bad in ["01", "-", "x"] {
        let err = r(json!(format!("${{steps.fetch.result/body/items/{bad}}}"))).unwrap_err();
        assert!(matches!(err, ReferenceError::MissingPath { .. }), "{err}");
    }
}

#[test]
fn a_missing_path_names_the_placeholder_the_path_and_the_keys_that_exist() {
    let err = r(json!("x ${steps.fetch.result/body/itms/0}")).unwrap_err();
    match &err {
        ReferenceError::MissingPath {
            placeholder,
            path,
            reached,
            found,
        } => {
            assert_eq!(placeholder, "${steps.fetch.result/body/itms/0}");
            assert_eq!(path, "/body/itms/0");
            assert_eq!(reached, "/body");
            for key in ["\"count\"", "\"name\"", "\"items\"", "\"obj\""] {
                assert!(found.contains(key), "{found}");
            }
        }
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("${steps.fetch.result/body/itms/0}"), "{msg}");
    assert!(msg.contains("/body/itms/0"), "{msg}");
    assert!(msg.contains("\"items\""), "{msg}");

    // Descending into a scalar says what it is.
    let msg = r(json!("${steps.fetch.result/body/count/x}"))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("/body/count, a number"), "{msg}");
    // At the root.
    let msg = resolve(
        &json!("${steps.s.result/x}"),
        &TestScope::default().with("s", StepField::Result, json!({"y": 1})),
    )
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("the whole value") && msg.contains("\"y\""),
        "{msg}"
    );
}

#[test]
fn a_step_without_the_field_is_named() {
    let err = r(json!("${steps.later.result}")).unwrap_err();
    assert!(err.is_missing());
    let msg = err.to_string();
    assert!(
        msg.contains("${steps.later.result}") && msg.contains("step later has no result"),
        "{msg}"
    );
}

#[test]
fn dollar_dollar_brace_is_a_literal() {
    let scope = TestScope::default().in_item(json!(1), 4);
    assert_eq!(
        resolve(&json!("$${index} is ${index}"), &scope).unwrap(),
        json!("${index} is 4")
    );
    // Even a lone escaped "placeholder" is text, and needs no scope.
    assert_eq!(
        resolve(&json!("$${steps.nope.result}"), &TestScope::default()).unwrap(),
        json!("${steps.nope.result}")
    );
    assert_eq!(
        parse_placeholders(&json!("$${item} $$ $ {x} $x")).unwrap(),
        vec![]
    );
    // `$$${index}` is a `$` then a literal `${`.
    assert_eq!(
        resolve(&json!("$$${index}"), &scope).unwrap(),
        json!("$${index}")
    );
}

#[test]
fn substituted_values_are_never_re_parsed() {
    let scope = TestScope::default()
        .with("a", StepField::Result, json!("${steps.secret.result}"))
        .with("b", StepField::Result, json!({"t": "$${x} ${index}"}))
        .with("secret", StepField::Result, json!("LEAKED"));
    assert_eq!(
        resolve(&json!("${steps.a.result}"), &scope).unwrap(),
        json!("${steps.secret.result}")
    );
    assert_eq!(
        resolve(&json!("got ${steps.a.result}"), &scope).unwrap(),
        json!("got ${steps.secret.result}")
    );
    assert_eq!(
        resolve(&json!("${steps.b.result}"), &scope).unwrap(),
        json!({"t": "$${x} ${index}"})
    );
}

#[test]
fn item_and_index_only_inside_for_each() {
    let scope = fetch_scope().in_item(json!({"url": "u", "tags": ["t"]}), 0);
    assert_eq!(
        resolve(&json!("${item}"), &scope).unwrap(),
        json!({"url": "u", "tags": ["t"]})
    );
    assert_eq!(
        resolve(&json!("${item/tags/0}"), &scope).unwrap(),
        json!("t")
    );
    assert_eq!(resolve(&json!("${index}"), &scope).unwrap(), json!(0));

    for text in ["${item}", "${item/url}", "${index}"] {
        let err = r(json!(text)).unwrap_err();
        assert!(
            matches!(err, ReferenceError::OutsideForEach { .. }),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains(text) && msg.contains("for_each"), "{msg}");
    }
}

#[test]
fn params_are_an_error_at_run_time() {
    let err = r(json!("${params.count}")).unwrap_err();
    assert!(matches!(err, ReferenceError::ParamAtRunTime { .. }));
    assert!(err.to_string().contains("${params.count}"));
    assert!(!err.is_missing());
}

#[test]
fn syntax_errors_name_the_text_and_what_is_allowed() {
    let cases = [
        ("${foo}", "unknown placeholder"),
        ("${}", "empty"),
        ("${steps.fetch}", "steps.<id>.<field>"),
        ("${steps.fetch.body}", "unknown step field \"body\""),
        (
            "${steps.fetch.result.body.x}",
            "${steps.fetch.result/body/x}",
        ),
        ("${steps.bad id.result}", "must match [A-Za-z0-9_-]{1,64}"),
        ("${steps..result}", "must match"),
        ("${item.url}", "${item/url}"),
        ("${ index }", "spaces"),
        ("${workflow}", "needs a member"),
        ("${workflow.name}", "unknown placeholder"),
        ("${params.a b}", "parameter name"),
    ];
    for (text, reason) in cases {
        let err = parse_placeholders(&json!({"k": ["x", text]})).unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, ReferenceError::Syntax { .. }),
            "{text}: {msg}"
        );
        assert!(msg.contains(text), "{text}: {msg}");
        assert!(msg.contains(reason), "{text}: {msg}");
        assert!(
            msg.contains("${steps.<id>.result|output|status|error"),
            "{msg}"
        );
        // Resolution refuses it the same way.
        assert_eq!(r(json!(text)).unwrap_err(), err);
    }
}

#[test]
fn an_unterminated_placeholder_is_named() {
    let err = parse_placeholders(&json!("abc ${steps.a.result")).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, ReferenceError::Unterminated { at: 4, .. }),
        "{msg}"
    );
    assert!(
        msg.contains("abc ${steps.a.result") && msg.contains("$${"),
        "{msg}"
    );
}

#[test]
fn parse_finds_every_placeholder_in_order() {
    let value = json!({
        "a": "${steps.one.result/x~1y} and ${steps.two.output}",
        "b": [{"c": "${item/k}"}, "${index}", 3, "${workflow.id}"],
        "d": "${params.p}",
        "${steps.keys.result}": "${steps.one.status}"
    });
    assert_eq!(
        parse_placeholders(&value).unwrap(),
        vec![
            Placeholder::Step {
                step: "one".into(),
                field: StepField::Result,
                pointer: "/x~1y".into()
            },
            Placeholder::Step {
                step: "two".into(),
                field: StepField::Output,
                pointer: String::new()
            },
            Placeholder::Item {
                pointer: "/k".into()
            },
            Placeholder::Index,
            Placeholder::WorkflowId,
            Placeholder::Param { name: "p".into() },
            Placeholder::Step {
                step: "one".into(),
                field: StepField::Status,
                pointer: String::new()
            },
        ]
    );
    assert_eq!(
        referenced_steps(&value)
            .unwrap()
            .into_iter()
            .collect::<Vec<_>>(),
        vec!["one".to_owned(), "two".to_owned()]
    );
}

#[test]
fn placeholders_display_as_written() {
    for text in [
        "${steps.a-b_1.error/x~0/0}",
        "${steps.s.status}",
        "${item}",
        "${item/a}",
        "${index}",
        "${workflow.id}",
        "${params.n}",
    ] {
        let parsed = parse_placeholders(&json!(text)).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].to_string(), text);
    }
}

#[test]
fn escape_makes_text_literal() {
    let text = "a ${x} $${y} $$${z} ${";
    assert_eq!(
        resolve(&json!(escape(text)), &TestScope::default()).unwrap(),
        json!(text)
    );
    let value = json!({"${k}": ["${steps.a.result}", 1]});
    assert_eq!(
        escape_value(&value),
        json!({"${k}": ["$${steps.a.result}", 1]})
    );
    assert_eq!(
        resolve(&escape_value(&value), &TestScope::default()).unwrap(),
        value
    );
}

fn pieces() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            Just("$".to_owned()),
            Just("{".to_owned()),
            Just("}".to_owned()),
            Just("${".to_owned()),
            Just("$${".to_owned()),
            Just("steps.".to_owned()),
            Just("fetch".to_owned()),
            Just(".result".to_owned()),
            Just(".status".to_owned()),
            Just("/body".to_owned()),
            Just("/items/1".to_owned()),
            Just("~".to_owned()),
            Just("~0".to_owned()),
            Just("~1".to_owned()),
            Just("item".to_owned()),
            Just("index".to_owned()),
            Just("workflow.id".to_owned()),
            Just("params.x".to_owned()),
            Just("/".to_owned()),
            Just(".".to_owned()),
            "\\PC{0,3}",
        ],
        0..12,
    )
    .prop_map(|p| p.concat())
}

proptest! {
    #[test]
    fn resolve_never_panics_on_arbitrary_strings(text in any::<String>()) {
        let _ = resolve(&json!(text), &fetch_scope());
        let _ = resolve(&json!(text), &fetch_scope().in_item(json!([1]), 0));
        let _ = parse_placeholders(&json!(text));
    }

    #[test]
    fn resolve_never_panics_on_placeholder_like_strings(text in pieces()) {
        let _ = resolve(&json!(text), &fetch_scope());
        let _ = resolve(&json!({"k": [text.clone()]}), &fetch_scope().in_item(json!({"body": 1}), 3));
        // Every placeholder that parses displays back to a placeholder that parses the same.
        if let Ok(found) = parse_placeholders(&json!(text)) {
            for p in found {
                prop_assert_eq!(parse_placeholders(&json!(p.to_string())).unwrap(), vec![p]);
            }
        }
    }

    #[test]
    fn escaped_text_resolves_to_itself(text in pieces()) {
        prop_assert_eq!(
            resolve(&json!(escape(&text)), &TestScope::default()).unwrap(),
            json!(text)
        );
    }
}
