//! MCP tool names from WIT names: deterministic, `^[a-zA-Z0-9_-]{1,64}$`.
//!
//! Kebab-case WIT identifiers become snake_case (`word-count` → `word_count`). Names
//! that would exceed 64 characters are cut and given a short hash of the full name,
//! so two long names never collapse into one.

use sha2::{Digest, Sha256};

pub const MAX_TOOL_NAME: usize = 64;

/// `word-count` → `word_count`; any character outside `[A-Za-z0-9_-]` becomes `_`.
pub fn tool_name(parts: &[&str]) -> String {
    let joined = parts.join("_");
    let name: String = joined
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.len() <= MAX_TOOL_NAME {
        return name;
    }
    let digest = hex::encode(&Sha256::digest(name.as_bytes())[..4]);
    format!("{}_{digest}", &name[..MAX_TOOL_NAME - digest.len() - 1])
}

/// The JSON key of a WIT parameter or record field: `max-length` → `max_length`,
/// the snake_case that JSON APIs (and the original MCP++ tools) use.
pub fn json_key(wit_name: &str) -> String {
    wit_name.replace('-', "_")
}

/// True when `name` is acceptable to every MCP host we know of.
pub fn is_valid_tool_name(name: &str) -> bool {
    (1..=MAX_TOOL_NAME).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kebab_becomes_snake() {
        assert_eq!(tool_name(&["word-count"]), "word_count");
        assert_eq!(
            tool_name(&["text-utils", "word-count"]),
            "text_utils_word_count"
        );
    }

    #[test]
    fn long_names_are_cut_with_a_distinguishing_hash() {
        let a = tool_name(&[&"a-".repeat(40), "one"]);
        let b = tool_name(&[&"a-".repeat(40), "two"]);
        assert!(is_valid_tool_name(&a) && is_valid_tool_name(&b), "{a} {b}");
        assert_eq!(a.len(), MAX_TOOL_NAME);
        assert_ne!(a, b);
    }

    #[test]
    fn validity() {
        assert!(is_valid_tool_name("echo_1-a"));
        assert!(!is_valid_tool_name(""));
        assert!(!is_valid_tool_name("a.b"));
        assert!(!is_valid_tool_name(&"x".repeat(65)));
    }
}
