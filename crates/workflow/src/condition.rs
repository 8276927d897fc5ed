//! `when`: a JSON predicate evaluated at run time, after its references are
//! resolved (docs/workflows.md, design §3.4).
//!
//! A predicate is one of:
//! - `true` / `false`;
//! - a string that is exactly one placeholder resolving to a JSON boolean
//!   (no truthiness: anything else is an error);
//! - `{"eq": [a, b]}`, `ne`: deep equality (numbers compared by value, so
//!   `1 == 1.0`); the operands must have the same JSON type, or one be `null`;
//! - `{"lt": [a, b]}`, `le`, `gt`, `ge`: numbers with numbers, strings with
//!   strings (by Unicode code point);
//! - `{"in": [x, [..]]}`: `x` is deeply equal to a member (the list may be a
//!   placeholder resolving to an array);
//! - `{"exists": "${…}"}`: the reference resolves (the step has that field
//!   and the path exists);
//! - `{"not": p}`, `{"all": [p…]}` (true when empty), `{"any": [p…]}` (false
//!   when empty); `all` and `any` stop at the first deciding predicate.
//!
//! Operands are resolved with `reference::resolve`. A type mismatch is an
//! error naming both operands and their types. Nesting is bounded by
//! [`MAX_DEPTH`] so a hostile spec cannot overflow the stack.

use std::cmp::Ordering;

use serde_json::{Map, Value};

use crate::reference::{self, ReferenceError, Scope, Token, json_type, show, tokenize};

/// The deepest nesting of predicates (`not`, `all`, `any`) allowed.
pub const MAX_DEPTH: usize = 32;

/// Every operator, in the order error messages list them.
pub const OPERATORS: [&str; 11] = [
    "eq", "ne", "lt", "le", "gt", "ge", "in", "exists", "not", "all", "any",
];

fn operator_list() -> String {
    OPERATORS.join(", ")
}

fn static_operator(op: &str) -> &'static str {
    OPERATORS.iter().copied().find(|o| *o == op).unwrap_or("?")
}

fn type_rule(operator: &str) -> &'static str {
    if matches!(operator, "eq" | "ne") {
        "eq and ne need operands of the same JSON type (or null)"
    } else {
        "both must be numbers or both strings"
    }
}

/// Why a `when` is malformed or could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConditionError {
    #[error(
        "{at}: unknown operator {operator:?}; operators are {list}, or a boolean, \
         or a string that is one ${{…}} placeholder",
        list = operator_list()
    )]
    UnknownOperator { at: String, operator: String },
    #[error("{at}: {reason}")]
    Malformed { at: String, reason: String },
    #[error("{at}: `{operator}` takes {expected}, got {found}")]
    Arity {
        at: String,
        operator: String,
        expected: &'static str,
        found: String,
    },
    #[error("{at}: conditions nest deeper than {limit} levels")]
    TooDeep { at: String, limit: usize },
    #[error(
        "{at}: `{operator}` cannot compare {left} ({left_type}) with {right} ({right_type}): {}",
        type_rule(.operator)
    )]
    TypeMismatch {
        at: String,
        operator: &'static str,
        left: String,
        left_type: &'static str,
        right: String,
        right_type: &'static str,
    },
    #[error(
        "{at}: {expr} is {value} ({json_type}), not a boolean (conditions have no truthiness: compare it with eq/ne/…)"
    )]
    NotBoolean {
        at: String,
        expr: String,
        value: String,
        json_type: &'static str,
    },
    #[error("{at}: the second operand of `in` must be an array; {expr} is {value} ({json_type})")]
    NotArray {
        at: String,
        expr: String,
        value: String,
        json_type: &'static str,
    },
    /// A reference that does not parse or resolve (boxed to keep the error small).
    #[error("{at}: {error}")]
    Reference {
        at: String,
        error: Box<ReferenceError>,
    },
}

/// Checks the structure of a `when` (at submit): operators, arity,
/// placeholder syntax, depth. Nothing is resolved.
pub fn check(when: &Value) -> Result<(), ConditionError> {
    check_at(when, "when", 1)
}

/// Evaluates a `when` against run-time values.
pub fn evaluate(when: &Value, scope: &dyn Scope) -> Result<bool, ConditionError> {
    check(when)?;
    eval_at(when, scope, "when")
}

/// The single operator of a predicate object.
fn operator<'a>(
    map: &'a Map<String, Value>,
    at: &str,
) -> Result<(&'a str, &'a Value), ConditionError> {
    let mut entries = map.iter();
    match (entries.next(), entries.next()) {
        (Some((op, arg)), None) => Ok((op.as_str(), arg)),
        (None, _) => Err(ConditionError::Malformed {
            at: at.to_owned(),
            reason: format!(
                "an empty object is not a condition; use one of {}",
                operator_list()
            ),
        }),
        _ => Err(ConditionError::Malformed {
            at: at.to_owned(),
            reason: format!(
                "a condition object has exactly one operator, found {}; combine them with `all` or `any`",
                map.keys()
                    .map(|k| format!("{k:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

fn pair<'a>(op: &str, arg: &'a Value, at: &str) -> Result<(&'a Value, &'a Value), ConditionError> {
    match arg.as_array().map(Vec::as_slice) {
        Some([a, b]) => Ok((a, b)),
        _ => Err(ConditionError::Arity {
            at: at.to_owned(),
            operator: op.to_owned(),
            expected: "an array of exactly 2 operands",
            found: describe_arg(arg),
        }),
    }
}

fn list<'a>(op: &str, arg: &'a Value, at: &str) -> Result<&'a [Value], ConditionError> {
    arg.as_array()
        .map(Vec::as_slice)
        .ok_or_else(|| ConditionError::Arity {
            at: at.to_owned(),
            operator: op.to_owned(),
            expected: "an array of conditions",
            found: describe_arg(arg),
        })
}

fn describe_arg(arg: &Value) -> String {
    match arg {
        Value::Array(items) => format!("an array of {}", items.len()),
        other => format!("{} ({})", show(other), json_type(other)),
    }
}

/// The body of a string that is exactly one placeholder.
fn lone_placeholder(text: &str) -> Option<&str> {
    match tokenize(text).ok()?.as_slice() {
        [Token::Placeholder(body)] => Some(body),
        _ => None,
    }
}

fn syntax(value: &Value, at: &str) -> Result<(), ConditionError> {
    reference::parse_placeholders(value)
        .map_err(|error| ConditionError::Reference {
            at: at.to_owned(),
            error: Box::new(error),
        })?
        .into_iter()
        .try_for_each(|p| match p {
            reference::Placeholder::Param { .. } => Err(ConditionError::Reference {
                at: at.to_owned(),
                error: Box::new(ReferenceError::ParamAtRunTime {
                    placeholder: p.to_string(),
                }),
            }),
            _ => Ok(()),
        })
}

fn check_at(when: &Value, at: &str, depth: usize) -> Result<(), ConditionError> {
    if depth > MAX_DEPTH {
        return Err(ConditionError::TooDeep {
            at: at.to_owned(),
            limit: MAX_DEPTH,
        });
    }
    match when {
        Value::Bool(_) => Ok(()),
        Value::String(s) => {
            syntax(when, at)?;
            if lone_placeholder(s).is_none() {
                return Err(ConditionError::Malformed {
                    at: at.to_owned(),
                    reason: format!(
                        "a string condition must be exactly one placeholder resolving to a boolean, \
                         like \"${{steps.check.result/ok}}\"; got {}",
                        show(when)
                    ),
                });
            }
            Ok(())
        }
        Value::Object(map) => {
            let (op, arg) = operator(map, at)?;
            let here = format!("{at}.{op}");
            match op {
                "eq" | "ne" | "lt" | "le" | "gt" | "ge" => {
                    let (a, b) = pair(op, arg, at)?;
                    syntax(a, &here)?;
                    syntax(b, &here)
                }
                "in" => {
                    let (x, members) = pair(op, arg, at)?;
                    syntax(x, &here)?;
                    match members {
                        Value::Array(_) => syntax(members, &here),
                        Value::String(s) if lone_placeholder(s).is_some() => syntax(members, &here),
                        other => Err(ConditionError::Arity {
                            at: at.to_owned(),
                            operator: op.to_owned(),
                            expected: "[x, list] where list is an array or one placeholder resolving to an array",
                            found: format!("{} ({}) as the list", show(other), json_type(other)),
                        }),
                    }
                }
                "exists" => match arg {
                    Value::String(s) if lone_placeholder(s).is_some() => syntax(arg, &here),
                    other => Err(ConditionError::Arity {
                        at: at.to_owned(),
                        operator: op.to_owned(),
                        expected: "one placeholder string, like \"${steps.a.result/x}\"",
                        found: format!("{} ({})", show(other), json_type(other)),
                    }),
                },
                "not" => check_at(arg, &here, depth + 1),
                "all" | "any" => list(op, arg, at)?
                    .iter()
                    .enumerate()
                    .try_for_each(|(i, p)| check_at(p, &format!("{here}[{i}]"), depth + 1)),
                _ => Err(ConditionError::UnknownOperator {
                    at: at.to_owned(),
                    operator: op.to_owned(),
                }),
            }
        }
        other => Err(ConditionError::Malformed {
            at: at.to_owned(),
            reason: format!(
                "{} ({}) is not a condition; use a boolean, a placeholder string, or an object with one of {}",
                show(other),
                json_type(other),
                operator_list()
            ),
        }),
    }
}

fn resolve(value: &Value, scope: &dyn Scope, at: &str) -> Result<Value, ConditionError> {
    reference::resolve(value, scope).map_err(|error| ConditionError::Reference {
        at: at.to_owned(),
        error: Box::new(error),
    })
}

/// How an operand is named: its expression, and its value when that differs.
fn name_operand(expr: &Value, value: &Value) -> String {
    if expr == value {
        show(value)
    } else {
        format!("{} = {}", show(expr), show(value))
    }
}

fn eval_at(when: &Value, scope: &dyn Scope, at: &str) -> Result<bool, ConditionError> {
    match when {
        Value::Bool(b) => Ok(*b),
        Value::String(_) => match resolve(when, scope, at)? {
            Value::Bool(b) => Ok(b),
            other => Err(ConditionError::NotBoolean {
                at: at.to_owned(),
                expr: show(when),
                value: show(&other),
                json_type: json_type(&other),
            }),
        },
        Value::Object(map) => {
            let (op, arg) = operator(map, at)?;
            let here = format!("{at}.{op}");
            match op {
                "eq" | "ne" | "lt" | "le" | "gt" | "ge" => {
                    let (a_expr, b_expr) = pair(op, arg, at)?;
                    let a = resolve(a_expr, scope, &here)?;
                    let b = resolve(b_expr, scope, &here)?;
                    let mismatch = || ConditionError::TypeMismatch {
                        at: at.to_owned(),
                        operator: static_operator(op),
                        left: name_operand(a_expr, &a),
                        left_type: json_type(&a),
                        right: name_operand(b_expr, &b),
                        right_type: json_type(&b),
                    };
                    if matches!(op, "eq" | "ne") {
                        let comparable = a.is_null()
                            || b.is_null()
                            || std::mem::discriminant(&a) == std::mem::discriminant(&b);
                        if !comparable {
                            return Err(mismatch());
                        }
                        return Ok(json_eq(&a, &b) == (op == "eq"));
                    }
                    let ordering = match (&a, &b) {
                        (Value::Number(x), Value::Number(y)) => cmp_numbers(x, y),
                        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
                        _ => None,
                    }
                    .ok_or_else(mismatch)?;
                    Ok(match op {
                        "lt" => ordering.is_lt(),
                        "le" => ordering.is_le(),
                        "gt" => ordering.is_gt(),
                        _ => ordering.is_ge(),
                    })
                }
                "in" => {
                    let (x_expr, list_expr) = pair(op, arg, at)?;
                    let x = resolve(x_expr, scope, &here)?;
                    match resolve(list_expr, scope, &here)? {
                        Value::Array(members) => Ok(members.iter().any(|m| json_eq(&x, m))),
                        other => Err(ConditionError::NotArray {
                            at: at.to_owned(),
                            expr: show(list_expr),
                            value: show(&other),
                            json_type: json_type(&other),
                        }),
                    }
                }
                "exists" => match reference::resolve(arg, scope) {
                    Ok(_) => Ok(true),
                    Err(e) if e.is_missing() => Ok(false),
                    Err(error) => Err(ConditionError::Reference {
                        at: here,
                        error: Box::new(error),
                    }),
                },
                "not" => Ok(!eval_at(arg, scope, &here)?),
                "all" => {
                    for (i, p) in list(op, arg, at)?.iter().enumerate() {
                        if !eval_at(p, scope, &format!("{here}[{i}]"))? {
                            return Ok(false);
                        }
                    }
                    Ok(true)
                }
                "any" => {
                    for (i, p) in list(op, arg, at)?.iter().enumerate() {
                        if eval_at(p, scope, &format!("{here}[{i}]"))? {
                            return Ok(true);
                        }
                    }
                    Ok(false)
                }
                _ => Err(ConditionError::UnknownOperator {
                    at: at.to_owned(),
                    operator: op.to_owned(),
                }),
            }
        }
        // `check` refuses the rest before evaluation starts.
        other => Err(ConditionError::Malformed {
            at: at.to_owned(),
            reason: format!("{} ({}) is not a condition", show(other), json_type(other)),
        }),
    }
}

/// Compares numbers by value, exactly for integers.
fn cmp_numbers(a: &serde_json::Number, b: &serde_json::Number) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return Some(x.cmp(&y));
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return Some(x.cmp(&y));
    }
    // One is a negative i64 and the other a u64 above i64::MAX.
    if let (Some(_), Some(_)) = (a.as_i64(), b.as_u64()) {
        return Some(Ordering::Less);
    }
    if let (Some(_), Some(_)) = (a.as_u64(), b.as_i64()) {
        return Some(Ordering::Greater);
    }
    a.as_f64()?.partial_cmp(&b.as_f64()?)
}

/// Deep equality with numbers compared by value and objects regardless of key order.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => cmp_numbers(x, y) == Some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_compare_by_value() {
        let n = |v: Value| v.as_number().unwrap().clone();
        assert_eq!(
            cmp_numbers(&n(json!(1)), &n(json!(1.0))),
            Some(Ordering::Equal)
        );
        assert_eq!(
            cmp_numbers(&n(json!(-1)), &n(json!(u64::MAX))),
            Some(Ordering::Less)
        );
        assert_eq!(
            cmp_numbers(&n(json!(u64::MAX)), &n(json!(-1))),
            Some(Ordering::Greater)
        );
        assert_eq!(
            cmp_numbers(
                &n(json!(9007199254740993_i64)),
                &n(json!(9007199254740992_i64))
            ),
            Some(Ordering::Greater)
        );
        assert!(json_eq(&json!({"a": [1, 2.0]}), &json!({"a": [1.0, 2]})));
        assert!(!json_eq(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
    }

    /// Below clippy's `result_large_err` threshold (128 bytes), so callers may return it.
    #[test]
    fn the_error_stays_small() {
        assert!(
            std::mem::size_of::<ConditionError>() < 128,
            "{}",
            std::mem::size_of::<ConditionError>()
        );
    }
}
