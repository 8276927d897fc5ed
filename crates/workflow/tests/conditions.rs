//! `when` conditions: every operator both ways, type errors naming both
//! operands, structure checks, short-circuiting and the depth bound.

use std::collections::BTreeMap;

use mcpplus_workflow::condition::{ConditionError, MAX_DEPTH, OPERATORS, check, evaluate};
use mcpplus_workflow::reference::{Scope, StepField};
use serde_json::{Value, json};

struct TestScope {
    results: BTreeMap<String, Value>,
    item: Option<Value>,
}

impl Scope for TestScope {
    fn step(&self, id: &str, field: StepField) -> Option<Value> {
        match field {
            StepField::Result => self.results.get(id).cloned(),
            StepField::Status if self.results.contains_key(id) => Some(json!("completed")),
            _ => None,
        }
    }
    fn item(&self) -> Option<&Value> {
        self.item.as_ref()
    }
    fn index(&self) -> Option<usize> {
        self.item.as_ref().map(|_| 0)
    }
    fn workflow_id(&self) -> &str {
        "wf"
    }
}

fn scope() -> TestScope {
    let mut results = BTreeMap::new();
    results.insert(
        "page".to_owned(),
        json!({"status": 200, "code": "200", "ok": true, "name": "beta", "tags": ["x", "y"],
               "ratio": 0.5, "none": null, "obj": {"a": 1, "b": [1, 2]}}),
    );
    TestScope {
        results,
        item: None,
    }
}

fn eval(when: Value) -> Result<bool, ConditionError> {
    evaluate(&when, &scope())
}

fn yes(when: Value) {
    assert_eq!(eval(when.clone()), Ok(true), "{when}");
}

fn no(when: Value) {
    assert_eq!(eval(when.clone()), Ok(false), "{when}");
}

#[test]
fn eq_and_ne() {
    yes(json!({"eq": ["${steps.page.result/status}", 200]}));
    no(json!({"eq": ["${steps.page.result/status}", 404]}));
    yes(json!({"ne": ["${steps.page.result/status}", 404]}));
    no(json!({"ne": ["${steps.page.result/status}", 200]}));
    // Numbers by value.
    yes(json!({"eq": ["${steps.page.result/status}", 200.0]}));
    yes(json!({"eq": ["${steps.page.result/name}", "beta"]}));
    no(json!({"eq": ["${steps.page.result/name}", "Beta"]}));
    yes(json!({"eq": ["${steps.page.result/ok}", true]}));
    // Deep, regardless of key order.
    yes(json!({"eq": ["${steps.page.result/obj}", {"b": [1.0, 2], "a": 1}]}));
    no(json!({"eq": ["${steps.page.result/obj}", {"a": 1}]}));
    yes(json!({"eq": ["${steps.page.result/tags}", ["x", "y"]]}));
    // null compares with anything.
    yes(json!({"eq": ["${steps.page.result/none}", null]}));
    no(json!({"eq": ["${steps.page.result/status}", null]}));
    yes(json!({"ne": ["${steps.page.result/name}", null]}));
    // Embedded placeholders are text.
    yes(json!({"eq": ["code ${steps.page.result/status}", "code 200"]}));
}

#[test]
fn ordering_operators() {
    let n = "${steps.page.result/status}";
    yes(json!({"lt": [n, 201]}));
    no(json!({"lt": [n, 200]}));
    yes(json!({"le": [n, 200]}));
    no(json!({"le": [n, 199.5]}));
    yes(json!({"gt": [n, 199]}));
    no(json!({"gt": [n, 200]}));
    yes(json!({"ge": [n, 200]}));
    no(json!({"ge": [n, 200.5]}));
    yes(json!({"lt": ["${steps.page.result/ratio}", 1]}));
    // Strings by code point.
    let s = "${steps.page.result/name}";
    yes(json!({"lt": [s, "gamma"]}));
    no(json!({"lt": [s, "alpha"]}));
    yes(json!({"ge": [s, "beta"]}));
    no(json!({"gt": [s, "beta"]}));
    yes(json!({"gt": ["b", "B"]}));
}

#[test]
fn a_type_mismatch_names_both_operands_and_their_types() {
    let err = eval(json!({"eq": ["${steps.page.result/code}", 200]})).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ConditionError::TypeMismatch { .. }), "{msg}");
    assert!(
        msg.contains(r#""${steps.page.result/code}" = "200" (string)"#),
        "{msg}"
    );
    assert!(msg.contains("200 (number)"), "{msg}");

    for op in ["lt", "le", "gt", "ge"] {
        let err = eval(json!({op: ["${steps.page.result/name}", 3]})).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&format!("`{op}`")), "{msg}");
        assert!(msg.contains(r#""beta" (string)"#), "{msg}");
        assert!(msg.contains("3 (number)"), "{msg}");
        assert!(
            msg.contains("both must be numbers or both strings"),
            "{msg}"
        );
    }
    // Booleans, arrays, null do not order.
    for (a, b) in [
        (json!(true), json!(false)),
        (json!([1]), json!([2])),
        (json!(null), json!(1)),
        (json!({}), json!({})),
    ] {
        let err = eval(json!({"lt": [a, b]})).unwrap_err();
        assert!(matches!(err, ConditionError::TypeMismatch { .. }), "{err}");
    }
    let msg = eval(json!({"ne": [["${steps.page.result/ok}"], {"k": 1}]}))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("(array)") && msg.contains("(object)"), "{msg}");
}

#[test]
fn in_operator() {
    yes(json!({"in": ["${steps.page.result/status}", [200, 201]]}));
    no(json!({"in": ["${steps.page.result/status}", [404, "200"]]}));
    yes(json!({"in": ["y", "${steps.page.result/tags}"]}));
    no(json!({"in": ["z", "${steps.page.result/tags}"]}));
    no(json!({"in": ["x", []]}));
    let err = eval(json!({"in": ["x", "${steps.page.result/name}"]})).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ConditionError::NotArray { .. }), "{msg}");
    assert!(
        msg.contains("${steps.page.result/name}") && msg.contains("(string)"),
        "{msg}"
    );
}

#[test]
fn exists_is_whether_the_reference_resolves() {
    yes(json!({"exists": "${steps.page.result/tags/1}"}));
    yes(json!({"exists": "${steps.page.result/none}"}));
    no(json!({"exists": "${steps.page.result/tags/2}"}));
    no(json!({"exists": "${steps.page.result/missing}"}));
    no(json!({"exists": "${steps.never.result}"}));
    yes(json!({"exists": "${steps.page.status}"}));
    // Misuse is still an error, not false.
    let err = eval(json!({"exists": "${item/x}"})).unwrap_err();
    assert!(err.to_string().contains("for_each"), "{err}");
}

#[test]
fn not_all_any() {
    yes(json!({"not": false}));
    no(json!({"not": true}));
    yes(json!({"not": {"eq": [1, 2]}}));
    yes(json!({"all": [true, {"eq": [1, 1]}]}));
    no(json!({"all": [true, false]}));
    yes(json!({"all": []}));
    yes(json!({"any": [false, {"eq": [1, 1]}]}));
    no(json!({"any": [false, {"not": true}]}));
    no(json!({"any": []}));
}

#[test]
fn all_and_any_stop_at_the_deciding_predicate() {
    // The second predicate would fail (missing step), but is never evaluated.
    no(json!({"all": [
        {"exists": "${steps.page.result/missing}"},
        {"eq": ["${steps.page.result/missing}", 1]}
    ]}));
    yes(json!({"any": [true, {"eq": ["${steps.never.result}", 1]}]}));
    assert!(eval(json!({"all": [true, {"eq": ["${steps.never.result}", 1]}]})).is_err());
}

#[test]
fn booleans_and_boolean_placeholders_without_truthiness() {
    yes(json!(true));
    no(json!(false));
    yes(json!("${steps.page.result/ok}"));
    for (text, ty) in [
        ("${steps.page.result/status}", "number"),
        ("${steps.page.result/name}", "string"),
        ("${steps.page.result/none}", "null"),
        ("${steps.page.result/tags}", "array"),
    ] {
        let err = eval(json!(text)).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, ConditionError::NotBoolean { .. }), "{msg}");
        assert!(msg.contains(text) && msg.contains(ty), "{msg}");
    }
}

#[test]
fn reference_errors_surface() {
    let err = eval(json!({"eq": ["${steps.page.result/nope}", 1]})).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("when.eq") && msg.contains("/nope") && msg.contains("\"status\""),
        "{msg}"
    );
}

#[test]
fn check_refuses_unknown_operators_listing_them() {
    let err = check(&json!({"all": [true, {"equals": [1, 1]}]})).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, ConditionError::UnknownOperator { .. }),
        "{msg}"
    );
    assert!(
        msg.contains("\"equals\"") && msg.contains("when.all[1]"),
        "{msg}"
    );
    for op in OPERATORS {
        assert!(msg.contains(op), "{op} missing: {msg}");
    }
}

#[test]
fn check_refuses_wrong_arity_and_shapes() {
    let cases = [
        (json!({"eq": [1]}), "exactly 2"),
        (json!({"lt": [1, 2, 3]}), "an array of 3"),
        (json!({"ge": 1}), "exactly 2"),
        (json!({"in": [1]}), "exactly 2"),
        (json!({"in": [1, 2]}), "as the list"),
        (json!({"in": [1, "not a placeholder"]}), "as the list"),
        (json!({"exists": ["${steps.a.result}"]}), "one placeholder"),
        (json!({"exists": "steps.a.result"}), "one placeholder"),
        (
            json!({"exists": "${steps.a.result} and more"}),
            "one placeholder",
        ),
        (json!({"all": true}), "an array of conditions"),
        (json!({"any": {"eq": [1, 1]}}), "an array of conditions"),
        (json!({"eq": [1, 1], "ne": [1, 2]}), "exactly one operator"),
        (json!({}), "empty object"),
        (json!(1), "not a condition"),
        (json!(null), "not a condition"),
        (json!([true]), "not a condition"),
        (json!("yes"), "exactly one placeholder"),
        (json!({"not": 0}), "not a condition"),
    ];
    for (when, expect) in cases {
        let err = check(&when).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(expect), "{when}: {msg}");
        // Evaluation refuses the same way, before resolving anything.
        assert_eq!(evaluate(&when, &scope()).unwrap_err(), err, "{when}");
    }
}

#[test]
fn check_refuses_bad_placeholders_and_parameters() {
    let msg = check(&json!({"eq": ["${steps.a.reslt}", 1]}))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("unknown step field \"reslt\""), "{msg}");
    let msg = check(&json!({"in": [1, ["${oops"]]}))
        .unwrap_err()
        .to_string();
    assert!(msg.contains("unterminated"), "{msg}");
    let msg = check(&json!({"eq": ["${params.n}", 1]}))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("${params.n}") && msg.contains("template parameter"),
        "{msg}"
    );
    assert!(check(&json!({"eq": ["${steps.a.result/x}", "$${literal}"]})).is_ok());
}

fn nested_not(depth: usize) -> Value {
    let mut when = json!(true);
    for _ in 1..depth {
        when = json!({ "not": when });
    }
    when
}

#[test]
fn nesting_is_bounded() {
    // MAX_DEPTH levels: `not` × (MAX_DEPTH - 1) around a boolean.
    let ok = nested_not(MAX_DEPTH);
    assert!(check(&ok).is_ok());
    assert_eq!(evaluate(&ok, &scope()), Ok(MAX_DEPTH % 2 == 1));

    let err = check(&nested_not(MAX_DEPTH + 1)).unwrap_err();
    assert!(
        matches!(
            err,
            ConditionError::TooDeep {
                limit: MAX_DEPTH,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains(&MAX_DEPTH.to_string()));

    // A hostile spec far deeper than the bound: refused, no stack overflow.
    let mut deep = json!(true);
    for i in 0..1_000 {
        deep = if i % 2 == 0 {
            json!({ "all": [deep] })
        } else {
            json!({ "not": deep })
        };
    }
    assert!(matches!(check(&deep), Err(ConditionError::TooDeep { .. })));
    assert!(matches!(
        evaluate(&deep, &scope()),
        Err(ConditionError::TooDeep { .. })
    ));
}
