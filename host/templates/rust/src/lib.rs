//! {{name}}: an mcpplus tool component. Every function the world in
//! `wit/world.wit` exports is an MCP tool; `impl Guest` below implements them.
//! Build it with `mcpplus build`; `cargo test` runs the tests on your machine.
//!
//! Logging and progress: uncomment the imports in `wit/world.wit`, then
//! ```ignore
//! use mcpplus::host::{log, progress};
//! log::log(log::Level::Info, "counted", &[("words".into(), words.to_string())]);
//! progress::report(done as f64, Some(total as f64), Some("counting"));
//! ```

wit_bindgen::generate!({ path: "wit", world: "{{name}}", generate_all });

struct Component;

impl Guest for Component {
    fn count_words(text: String) -> u32 {
        text.split_whitespace().count() as u32
    }

    fn summarize_text(text: String, min_length: Option<u32>) -> Result<TextSummary, String> {
        if text.trim().is_empty() {
            // `Err` becomes a tool error the client's model can read and act on.
            return Err("the text is empty: pass some words to summarize".into());
        }
        let min_length = min_length.unwrap_or(1) as usize;
        let mut words = 0;
        let mut longest_word: Option<&str> = None;
        for word in text.split_whitespace() {
            let length = word.chars().count();
            if length < min_length {
                continue;
            }
            words += 1;
            if longest_word.is_none_or(|longest| length > longest.chars().count()) {
                longest_word = Some(word);
            }
        }
        Ok(TextSummary {
            words,
            lines: text.lines().count() as u32,
            longest_word: longest_word.map(str::to_string),
        })
    }
}

export!(Component);

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "The quick brown fox\njumps over the lazy dog";

    #[test]
    fn counts_words() {
        assert_eq!(Component::count_words(TEXT.into()), 9);
        assert_eq!(Component::count_words("  ".into()), 0);
    }

    #[test]
    fn summarizes() {
        let summary = Component::summarize_text(TEXT.into(), None).unwrap();
        assert_eq!((summary.words, summary.lines), (9, 2));
        assert_eq!(summary.longest_word.as_deref(), Some("quick"));
        let long = Component::summarize_text(TEXT.into(), Some(6)).unwrap();
        assert_eq!((long.words, long.longest_word), (0, None));
    }

    #[test]
    fn an_empty_text_is_an_error() {
        assert!(Component::summarize_text(" \n".into(), None).is_err());
    }
}
