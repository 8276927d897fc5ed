//! Everyday text utilities as a tool component: word counts, slugs, case
//! conversion, wrapping, truncation and URL extraction.

wit_bindgen::generate!({ path: "wit", world: "text-utils", generate_all });

use exports::mcpplus::text_utils::text::{CaseStyle, Guest, TextStats};

struct TextUtils;

/// Split an identifier or phrase into lowercase words at spaces, `-`, `_` and
/// lower→upper case changes.
fn words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut prev_lower = false;
    for c in text.chars() {
        if !c.is_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        prev_lower = c.is_lowercase() || c.is_numeric();
        current.extend(c.to_lowercase());
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

impl Guest for TextUtils {
    fn word_count(text: String) -> TextStats {
        TextStats {
            words: text.split_whitespace().count() as u32,
            lines: text.lines().count() as u32,
            characters: text.chars().count() as u32,
            bytes: text.len() as u32,
        }
    }

    fn slugify(text: String, separator: Option<char>) -> String {
        let separator = separator.unwrap_or('-').to_string();
        let ascii: String = text
            .chars()
            .map(|c| match c {
                'à' | 'á' | 'â' | 'ä' | 'ã' | 'å' => 'a',
                'è' | 'é' | 'ê' | 'ë' => 'e',
                'ì' | 'í' | 'î' | 'ï' => 'i',
                'ò' | 'ó' | 'ô' | 'ö' | 'õ' => 'o',
                'ù' | 'ú' | 'û' | 'ü' => 'u',
                'ç' => 'c',
                'ñ' => 'n',
                c => c,
            })
            .collect();
        ascii
            .to_lowercase()
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect::<Vec<_>>()
            .join(&separator)
    }

    fn change_case(text: String, style: CaseStyle) -> String {
        let words = words(&text);
        match style {
            CaseStyle::Snake => words.join("_"),
            CaseStyle::Kebab => words.join("-"),
            CaseStyle::Camel => words
                .iter()
                .enumerate()
                .map(|(i, w)| if i == 0 { w.clone() } else { capitalize(w) })
                .collect(),
            CaseStyle::Pascal => words.iter().map(|w| capitalize(w)).collect(),
            CaseStyle::Title => words
                .iter()
                .map(|w| capitalize(w))
                .collect::<Vec<_>>()
                .join(" "),
            CaseStyle::Upper => words.join(" ").to_uppercase(),
            CaseStyle::Lower => words.join(" "),
        }
    }

    fn wrap(text: String, width: u16) -> Result<String, String> {
        if width == 0 {
            return Err("width must be at least 1".into());
        }
        let width = width as usize;
        let mut lines = Vec::new();
        for paragraph in text.lines() {
            let mut line = String::new();
            for word in paragraph.split_whitespace() {
                let needed = if line.is_empty() {
                    word.chars().count()
                } else {
                    line.chars().count() + 1 + word.chars().count()
                };
                if needed > width && !line.is_empty() {
                    lines.push(std::mem::take(&mut line));
                }
                if !line.is_empty() {
                    line.push(' ');
                }
                line.push_str(word);
            }
            lines.push(line);
        }
        Ok(lines.join("\n"))
    }

    fn truncate(text: String, max_chars: u32, ellipsis: Option<String>) -> String {
        let max = max_chars as usize;
        if text.chars().count() <= max {
            return text;
        }
        let ellipsis = ellipsis.unwrap_or_else(|| "…".into());
        let keep = max.saturating_sub(ellipsis.chars().count());
        let mut cut: String = text.chars().take(keep).collect();
        cut.push_str(&ellipsis);
        cut.chars().take(max).collect()
    }

    fn extract_urls(text: String) -> Vec<String> {
        text.split_whitespace()
            .filter_map(|token| {
                let start = token.find("https://").or_else(|| token.find("http://"))?;
                let url = token[start..]
                    .trim_end_matches(['.', ',', ';', ':', ')', ']', '>', '"', '\'', '!', '?']);
                (url.len() > "https://".len()).then(|| url.to_string())
            })
            .collect()
    }
}

export!(TextUtils);
