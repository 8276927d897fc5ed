//! `mcpplus inspect COMPONENT.wasm [--json]`: what a component offers and asks for,
//! without compiling it.

use std::path::PathBuf;
use std::process::ExitCode;

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
    if args.json {
        let report = json!({
            "component": name,
            "path": args.component.display().to_string(),
            "sha256": digest(&bytes),
            "hasDocs": description.has_docs,
            "tools": tools,
            "imports": description.imports,
            "warnings": description.warnings,
        });
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("component {name}  ({})", args.component.display());
    println!("sha256    {}", digest(&bytes));
    println!("\ntools ({}):", description.tools.len());
    for t in &description.tools {
        println!("\n  {}  [{}]", t.name, t.export);
        for line in t.description.lines() {
            println!("    {line}");
        }
        println!("    input:  {}", serde_json::to_string(&t.input_schema)?);
        if let Some(output) = &t.output_schema {
            println!("    output: {}", serde_json::to_string(output)?);
        }
    }
    println!("\nimports ({}):", description.imports.len());
    for i in &description.imports {
        println!("  {i}");
    }
    for w in &description.warnings {
        println!("\nwarning: {w}");
    }
    if !description.has_docs {
        println!(
            "\nnote: no doc comments embedded; run `mcpplus embed-docs {} --wit <your wit dir>`",
            args.component.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
