//! `mcpplus inspect COMPONENT.wasm [--json]`: what a component offers and asks for,
//! without compiling it.

use std::path::PathBuf;
use std::process::ExitCode;

use std::fmt::Write as _;

use anyhow::Context as _;
use serde_json::json;

use mcpplus_runtime::cache::digest;
use mcpplus_runtime::loaded::component_name;
use mcpplus_schema::describe_component;

#[derive(clap::Args)]
pub struct InspectArgs {
    /// The component file (.wasm)
    pub(super) component: PathBuf,
    /// Print machine-readable JSON instead of text
    #[arg(long)]
    pub(super) json: bool,
}

pub fn run(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&args.component)
        .with_context(|| format!("cannot read {}", args.component.display()))?;
    let name = component_name(&args.component);
    let description = describe_component(&name, &bytes)
        .with_context(|| format!("{}", args.component.display()))?;
    let tools: Vec<_> = description
        .tools
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "export": t.export.to_string(),
                "description": t.description,
                "inputSchema": t.input_schema,
                "outputSchema": t.output_schema,
            })
        })
        .collect();
    let mut out = String::new();
    if args.json {
        let report = json!({
            "component": name,
            "path": args.component.display().to_string(),
            "sha256": digest(&bytes),
            "hasDocs": description.has_docs,
            "tools": tools,
            "servesPrompts": description.prompts_export.is_some(),
            "servesResources": description.resources_export.is_some(),
            "imports": description.imports,
            "warnings": description.warnings,
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        return print(&out);
    }
    writeln!(out, "component {name}  ({})", args.component.display())?;
    writeln!(out, "sha256    {}", digest(&bytes))?;
    writeln!(out, "\ntools ({}):", description.tools.len())?;
    for t in &description.tools {
        writeln!(out, "\n  {}  [{}]", t.name, t.export)?;
        for line in t.description.lines() {
            writeln!(out, "    {line}")?;
        }
        writeln!(
            out,
            "    input:  {}",
            serde_json::to_string(&t.input_schema)?
        )?;
        if let Some(output) = &t.output_schema {
            writeln!(out, "    output: {}", serde_json::to_string(output)?)?;
        }
    }
    // Which prompts and resources: the component says when it is loaded
    // (`mcpplus serve`), since listing them runs its code.
    for (what, export) in [
        ("prompts", &description.prompts_export),
        ("resources", &description.resources_export),
    ] {
        if let Some(export) = export {
            writeln!(
                out,
                "\nserves {what} (exports {export}; listed once served)"
            )?;
        }
    }
    writeln!(out, "\nimports ({}):", description.imports.len())?;
    for i in &description.imports {
        writeln!(out, "  {i}")?;
    }
    for w in &description.warnings {
        writeln!(out, "\nwarning: {w}")?;
    }
    if !description.has_docs {
        writeln!(
            out,
            "\nnote: no doc comments embedded; run `mcpplus embed-docs {} --wit <your wit dir>`",
            args.component.display()
        )?;
    }
    print(&out)
}

/// Write the report to stdout; a reader that stops early (`| head`) is not an error.
fn print(report: &str) -> anyhow::Result<ExitCode> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(report.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}
