//! What a step's `${steps.x.result}` is, read from the CallToolResult its
//! task stored.

use serde_json::Value;

/// The tool's return value: its `structuredContent` (unwrapped when it is
/// the host's `{"result": v}` wrapping of a value that is not a record),
/// else the text of its content (one text block: that text; several: an
/// array of their texts), else the whole CallToolResult.
pub fn result_of(output: &Value) -> Value {
    if let Some(structured) = output.get("structuredContent")
        && !structured.is_null()
    {
        return match structured {
            Value::Object(map) if map.len() == 1 && map.contains_key("result") => {
                map["result"].clone()
            }
            other => other.clone(),
        };
    }
    let texts: Vec<&str> = output
        .get("content")
        .and_then(Value::as_array)
        .map(|blocks| {
            blocks
                .iter()
                .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    match texts.as_slice() {
        [] => output.clone(),
        [one] => Value::String((*one).to_string()),
        many => Value::Array(
            many.iter()
                .map(|t| Value::String((*t).to_string()))
                .collect(),
        ),
    }
}

/// The error a failed CallToolResult carries (its text), when it has one.
pub fn error_text(output: &Value) -> Option<String> {
    match result_of(output) {
        Value::String(text) => Some(text),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn structured_content_wins_and_the_host_wrapping_is_removed() {
        let wrapped =
            json!({"content": [{"type": "text", "text": "3"}], "structuredContent": {"result": 3}});
        assert_eq!(result_of(&wrapped), json!(3));
        let record = json!({"structuredContent": {"a": 1, "b": 2}});
        assert_eq!(result_of(&record), json!({"a": 1, "b": 2}));
    }

    #[test]
    fn text_content_without_structured_content() {
        let one = json!({"content": [{"type": "text", "text": "hello"}]});
        assert_eq!(result_of(&one), json!("hello"));
        let two = json!({"content": [{"type": "text", "text": "a"}, {"type": "image", "data": ""}, {"type": "text", "text": "b"}]});
        assert_eq!(result_of(&two), json!(["a", "b"]));
        let none = json!({"content": []});
        assert_eq!(result_of(&none), none);
    }
}
