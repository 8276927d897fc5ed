//! The example workflow templates shipped with mcpplus (`workflow-templates/`
//! in the repository), copied into `<data-dir>/workflow-templates/` when a
//! file of that name is missing, so `workflow_templates` lists them and an
//! operator can read and copy them. An edited copy keeps its edits; a
//! template changed without a new version is refused by its sha256 pin.

use std::path::Path;

/// (file name, contents).
const EXAMPLES: [(&str, &str); 3] = [
    (
        "text-report.json",
        include_str!("../../workflow-templates/text-report.json"),
    ),
    (
        "sample-stats.json",
        include_str!("../../workflow-templates/sample-stats.json"),
    ),
    (
        "page-words.json",
        include_str!("../../workflow-templates/page-words.json"),
    ),
];

/// Copy the missing examples into `dir`; a failure is logged, not fatal
/// (the server serves without them).
pub fn install_examples(dir: &Path) {
    if let Err(e) = try_install(dir) {
        tracing::warn!(event = "workflow.templates_unavailable", dir = %dir.display(), error = %e,
            "cannot install the example workflow templates");
    }
}

fn try_install(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, contents) in EXAMPLES {
        let path = dir.join(name);
        if !path.exists() {
            std::fs::write(&path, contents)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_parses_as_a_template() {
        for (name, contents) in EXAMPLES {
            mcpplus_workflow::template::parse_template(contents.as_bytes())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }

    #[test]
    fn an_edited_copy_is_not_overwritten() {
        let dir = std::env::temp_dir().join(format!("mcpplus-templates-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let edited = dir.join("text-report.json");
        std::fs::write(&edited, "{}").unwrap();
        install_examples(&dir);
        assert_eq!(std::fs::read_to_string(&edited).unwrap(), "{}");
        assert!(dir.join("sample-stats.json").is_file());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
