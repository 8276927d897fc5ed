//! Doc comments for a component's tools.
//!
//! A compiled component carries its WIT types but not their doc comments. The
//! `mcpplus embed-docs` command stores the tool's WIT package (with docs) in a
//! custom section named [`DOCS_SECTION`]; at load time the docs are copied onto the
//! WIT recovered from the component, matched by interface, type, field and function
//! name. Parameters are documented in the function's doc comment as a list item
//! naming the parameter (`- `text`: the text to count`); see docs/tool-authors.md.

use std::collections::HashMap;

use wit_parser::{Docs, Resolve, TypeDefKind, TypeOwner, WorldItem};

/// Custom section holding the tool's WIT package, binary-encoded, with its docs.
pub const DOCS_SECTION: &str = "mcpplus:wit-docs";

/// Copy doc comments from `source` (the author's WIT package) onto `target` (the WIT
/// decoded from the component). Items are matched by name; unmatched ones keep no docs.
pub fn inject_docs(target: &mut Resolve, source: &Resolve) {
    // Interfaces by fully qualified name, e.g. `mcpplus:examples/text@0.1.0`.
    let source_ifaces: HashMap<String, wit_parser::InterfaceId> = source
        .interfaces
        .iter()
        .filter_map(|(id, _)| Some((source.id_of(id)?, id)))
        .collect();
    // World-level (freestanding) functions, by name, from every world of the source.
    let mut world_funcs: HashMap<String, Docs> = HashMap::new();
    for (_, world) in source.worlds.iter() {
        for item in world.exports.values().chain(world.imports.values()) {
            if let WorldItem::Function(f) = item {
                world_funcs
                    .entry(f.name.clone())
                    .or_insert_with(|| f.docs.clone());
            }
        }
    }

    let target_ifaces: Vec<_> = target.interfaces.iter().map(|(id, _)| id).collect();
    for id in target_ifaces {
        let Some(source_id) = target
            .id_of(id)
            .and_then(|name| source_ifaces.get(&name).copied())
        else {
            continue;
        };
        let source_iface = &source.interfaces[source_id];
        let target_iface = &mut target.interfaces[id];
        target_iface.docs = source_iface.docs.clone();
        for (name, func) in target_iface.functions.iter_mut() {
            if let Some(src) = source_iface.functions.get(name) {
                func.docs = src.docs.clone();
            }
        }
    }
    for (_, world) in target.worlds.iter_mut() {
        for item in world.exports.values_mut() {
            if let WorldItem::Function(f) = item
                && let Some(docs) = world_funcs.get(&f.name)
            {
                f.docs = docs.clone();
            }
        }
    }

    // Named types: those of interfaces match by the interface's qualified name
    // and the type name; those declared in a world by the type name (a decoded
    // component's world is not named like the source's).
    let mut source_types = HashMap::new();
    let mut source_world_types = HashMap::new();
    for (id, def) in source.types.iter() {
        match (&def.name, def.owner) {
            (Some(name), TypeOwner::Interface(owner)) => {
                if let Some(owner) = source.id_of(owner) {
                    source_types.insert((owner, name.clone()), id);
                }
            }
            (Some(name), TypeOwner::World(_)) => {
                source_world_types.insert(name.clone(), id);
            }
            _ => {}
        }
    }
    let target_types: Vec<_> = target.types.iter().map(|(id, _)| id).collect();
    for id in target_types {
        let def = &target.types[id];
        let src_id = match (&def.name, def.owner) {
            (Some(name), TypeOwner::Interface(owner)) => target
                .id_of(owner)
                .and_then(|owner| source_types.get(&(owner, name.clone()))),
            (Some(name), TypeOwner::World(_)) => source_world_types.get(name),
            _ => None,
        };
        let Some(&src_id) = src_id else {
            continue;
        };
        copy_type_docs(&mut target.types[id], &source.types[src_id]);
    }
}

/// A named type's docs, and those of its fields, cases or flags, from `src`.
fn copy_type_docs(def: &mut wit_parser::TypeDef, src: &wit_parser::TypeDef) {
    def.docs = src.docs.clone();
    match (&mut def.kind, &src.kind) {
        (TypeDefKind::Record(t), TypeDefKind::Record(s)) => {
            for f in &mut t.fields {
                if let Some(sf) = s.fields.iter().find(|sf| sf.name == f.name) {
                    f.docs = sf.docs.clone();
                }
            }
        }
        (TypeDefKind::Variant(t), TypeDefKind::Variant(s)) => {
            for c in &mut t.cases {
                if let Some(sc) = s.cases.iter().find(|sc| sc.name == c.name) {
                    c.docs = sc.docs.clone();
                }
            }
        }
        (TypeDefKind::Enum(t), TypeDefKind::Enum(s)) => {
            for c in &mut t.cases {
                if let Some(sc) = s.cases.iter().find(|sc| sc.name == c.name) {
                    c.docs = sc.docs.clone();
                }
            }
        }
        (TypeDefKind::Flags(t), TypeDefKind::Flags(s)) => {
            for c in &mut t.flags {
                if let Some(sc) = s.flags.iter().find(|sc| sc.name == c.name) {
                    c.docs = sc.docs.clone();
                }
            }
        }
        _ => {}
    }
}

/// A function's doc comment split into the tool description and per-parameter docs.
#[derive(Debug, Default, PartialEq)]
pub struct FunctionDocs {
    pub description: Option<String>,
    pub params: HashMap<String, String>,
}

/// Lines like `- name: text`, `* `name` - text` that name a parameter document it; a
/// heading such as `# Parameters` or `Arguments:` just before them is dropped too.
pub fn split_function_docs(docs: Option<&str>, param_names: &[&str]) -> FunctionDocs {
    let Some(docs) = docs else {
        return FunctionDocs::default();
    };
    let mut params = HashMap::new();
    let mut kept: Vec<&str> = Vec::new();
    for line in docs.lines() {
        // `min-length` and `min_length` both name the parameter `min_length`.
        let named = param_line(line).map(|(n, text)| (super::naming::json_key(n), text));
        if let Some((name, text)) = named.filter(|(n, _)| param_names.contains(&n.as_str())) {
            params.insert(name, text.to_string());
            continue;
        }
        kept.push(line);
    }
    // Drop headings that introduced the parameter list, and trailing blank lines.
    let is_heading = |l: &str| {
        let l = l
            .trim()
            .trim_start_matches('#')
            .trim()
            .trim_end_matches(':')
            .to_ascii_lowercase();
        matches!(l.as_str(), "parameters" | "params" | "arguments" | "args")
    };
    if !params.is_empty() {
        kept.retain(|l| !is_heading(l));
    }
    let description = kept.join("\n").trim().to_string();
    FunctionDocs {
        description: (!description.is_empty()).then_some(description),
        params,
    }
}

fn param_line(line: &str) -> Option<(&str, &str)> {
    let rest = line.trim_start().strip_prefix(['-', '*'])?.trim_start();
    let (name, rest) = if let Some(quoted) = rest.strip_prefix('`') {
        let end = quoted.find('`')?;
        (&quoted[..end], &quoted[end + 1..])
    } else {
        let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))?;
        (&rest[..end], &rest[end..])
    };
    let text = rest.trim_start().strip_prefix([':', '-', '–', '—'])?.trim();
    (!name.is_empty() && !text.is_empty()).then_some((name, text))
}

/// Find the docs section among a component's top-level sections.
pub fn find_docs_section(component: &[u8]) -> Option<&[u8]> {
    top_level_sections(component)
        .ok()?
        .into_iter()
        .find_map(|s| (s.id == 0 && s.custom_name() == Some(DOCS_SECTION)).then(|| s.custom_data()))
}

/// Return `component` with `package` (binary-encoded WIT) stored as the docs section,
/// replacing any earlier one.
pub fn with_docs_section(component: &[u8], package: &[u8]) -> Result<Vec<u8>, String> {
    let sections = top_level_sections(component)?;
    let mut out = component[..8].to_vec();
    for s in sections
        .iter()
        .filter(|s| !(s.id == 0 && s.custom_name() == Some(DOCS_SECTION)))
    {
        out.extend_from_slice(s.raw);
    }
    let mut body = Vec::new();
    leb128(DOCS_SECTION.len() as u64, &mut body);
    body.extend_from_slice(DOCS_SECTION.as_bytes());
    body.extend_from_slice(package);
    out.push(0);
    leb128(body.len() as u64, &mut out);
    out.extend_from_slice(&body);
    Ok(out)
}

struct Section<'a> {
    id: u8,
    raw: &'a [u8],
    body: &'a [u8],
}

impl<'a> Section<'a> {
    fn custom_name(&self) -> Option<&'a str> {
        let (len, n) = read_leb128(self.body)?;
        std::str::from_utf8(self.body.get(n..n + len as usize)?).ok()
    }
    fn custom_data(&self) -> &'a [u8] {
        let Some((len, n)) = read_leb128(self.body) else {
            return &[];
        };
        self.body.get(n + len as usize..).unwrap_or(&[])
    }
}

/// Check that `bytes` start like a component, saying what they are otherwise.
pub fn check_component_header(bytes: &[u8]) -> Result<(), String> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 0x0d, 0, 1, 0]) => Ok(()),
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => Err(
            "this is a core WebAssembly module; build for the wasm32-wasip2 target, which produces a component".into(),
        ),
        _ => Err("the file does not start with a WebAssembly header".into()),
    }
}

fn top_level_sections(bytes: &[u8]) -> Result<Vec<Section<'_>>, String> {
    check_component_header(bytes).map_err(|e| format!("not a WebAssembly component: {e}"))?;
    let mut sections = Vec::new();
    let mut pos = 8;
    while pos < bytes.len() {
        let start = pos;
        let id = bytes[pos];
        let (len, n) = read_leb128(&bytes[pos + 1..]).ok_or("truncated section header")?;
        let body_start = pos + 1 + n;
        let end = body_start
            .checked_add(len as usize)
            .filter(|e| *e <= bytes.len())
            .ok_or("truncated section")?;
        sections.push(Section {
            id,
            raw: &bytes[start..end],
            body: &bytes[body_start..end],
        });
        pos = end;
    }
    Ok(sections)
}

fn read_leb128(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, b) in bytes.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn leb128(mut value: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_lines_leave_the_description() {
        let docs = "Count words.\n\n# Parameters\n- `text`: the text\n* min-length - shortest word counted\n- unrelated: stays";
        // Parameters go by their JSON keys; the docs may spell them either way.
        let split = split_function_docs(Some(docs), &["text", "min_length"]);
        assert_eq!(
            split.description.as_deref(),
            Some("Count words.\n\n- unrelated: stays")
        );
        assert_eq!(split.params["text"], "the text");
        assert_eq!(split.params["min_length"], "shortest word counted");
    }

    #[test]
    fn docs_section_round_trips_and_replaces() {
        let empty_component = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
        let once = with_docs_section(&empty_component, b"first").unwrap();
        assert_eq!(find_docs_section(&once), Some(&b"first"[..]));
        let twice = with_docs_section(&once, b"second").unwrap();
        assert_eq!(find_docs_section(&twice), Some(&b"second"[..]));
        assert_eq!(twice.len(), once.len() + 1);
    }

    #[test]
    fn core_modules_are_refused() {
        let core = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
        assert!(
            with_docs_section(&core, b"x")
                .unwrap_err()
                .contains("not a WebAssembly component")
        );
    }
}
