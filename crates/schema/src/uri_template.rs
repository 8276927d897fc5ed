//! RFC 6570 level-1 URI templates (`{var}` simple string expansion), matched
//! against concrete URIs: how `resources/read` finds the resource template
//! that serves a URI.

/// One parsed template: literal text and variables, alternating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UriTemplate {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Var(String),
}

impl UriTemplate {
    /// Parse `template`. Refused: unbalanced braces, empty or non-level-1
    /// expressions (`{+x}`, `{x,y}`, `{x*}`, …), and two variables with no
    /// literal text between them (ambiguous).
    pub fn parse(template: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = template;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                Some(i) if rest.as_bytes()[i] == b'}' => {
                    return Err(format!("`{template}`: a `}}` without its `{{`"));
                }
                Some(i) => {
                    if i > 0 {
                        parts.push(Part::Literal(rest[..i].to_string()));
                    }
                    let after = &rest[i + 1..];
                    let end = after
                        .find('}')
                        .ok_or(format!("`{template}`: a `{{` without its `}}`"))?;
                    let name = &after[..end];
                    if name.is_empty()
                        || !name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                    {
                        return Err(format!(
                            "`{template}`: `{{{name}}}` is not a simple `{{name}}` variable (RFC 6570 level 1)"
                        ));
                    }
                    if matches!(parts.last(), Some(Part::Var(_))) {
                        return Err(format!(
                            "`{template}`: two variables with nothing between them"
                        ));
                    }
                    parts.push(Part::Var(name.to_string()));
                    rest = &after[end + 1..];
                }
                None => {
                    parts.push(Part::Literal(rest.to_string()));
                    rest = "";
                }
            }
        }
        Ok(Self { parts })
    }

    /// The variables of `uri` if it matches: each variable takes one or more
    /// characters other than `/`, `?` and `#` (so `{id}` is one path segment),
    /// and literal text must match exactly.
    pub fn match_uri(&self, uri: &str) -> Option<Vec<(String, String)>> {
        let mut vars = Vec::new();
        let mut rest = uri;
        let mut parts = self.parts.iter().peekable();
        while let Some(part) = parts.next() {
            match part {
                Part::Literal(lit) => rest = rest.strip_prefix(lit.as_str())?,
                Part::Var(name) => {
                    // The value runs to the next literal (or a delimiter, or the end).
                    let stop = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                    let end = match parts.peek() {
                        Some(Part::Literal(next)) => rest[..stop]
                            .find(next.as_str())
                            .or_else(|| rest[stop..].starts_with(next.as_str()).then_some(stop))?,
                        _ => stop,
                    };
                    if end == 0 {
                        return None;
                    }
                    vars.push((name.clone(), rest[..end].to_string()));
                    rest = &rest[end..];
                }
            }
        }
        rest.is_empty().then_some(vars)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(t: &str, uri: &str) -> Option<Vec<(String, String)>> {
        UriTemplate::parse(t).unwrap().match_uri(uri)
    }

    #[test]
    fn matches_one_segment_per_variable() {
        assert_eq!(
            m("test://template/{id}/data", "test://template/123/data"),
            Some(vec![("id".into(), "123".into())])
        );
        assert_eq!(
            m("test://template/{id}/data", "test://template/1/2/data"),
            None
        );
        assert_eq!(
            m("test://template/{id}/data", "test://template//data"),
            None
        );
        assert_eq!(
            m("test://template/{id}/data", "test://template/1/data/x"),
            None
        );
        assert_eq!(m("test://template/{id}/data", "test://other/1/data"), None);
    }

    #[test]
    fn variables_at_the_end_and_between_literals() {
        assert_eq!(
            m("notes://{user}/{id}", "notes://ann/42"),
            Some(vec![
                ("user".into(), "ann".into()),
                ("id".into(), "42".into())
            ])
        );
        assert_eq!(m("notes://{user}/{id}", "notes://ann/42/more"), None);
        assert_eq!(
            m("file:///{name}.txt", "file:///a.b.txt"),
            Some(vec![("name".into(), "a.b".into())])
        );
        assert_eq!(
            m("x://{a}-{b}", "x://1-2"),
            Some(vec![("a".into(), "1".into()), ("b".into(), "2".into())])
        );
        assert_eq!(m("x://fixed", "x://fixed"), Some(vec![]));
        assert_eq!(m("x://fixed", "x://fixed2"), None);
    }

    #[test]
    fn refuses_templates_beyond_level_1() {
        for bad in [
            "x://{+path}",
            "x://{a,b}",
            "x://{a*}",
            "x://{}",
            "x://{a",
            "x://a}",
            "x://{a}{b}",
        ] {
            assert!(UriTemplate::parse(bad).is_err(), "{bad}");
        }
    }
}
