//! `mcpplus call COMPONENT.wasm TOOL --args '{...}'`: one call, no client needed.
//! Prints the result as an MCP `CallToolResult`-shaped JSON object; exits 1 when
//! the tool reports an error.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use mcpplus_runtime::invoke::invoke;
use mcpplus_runtime::loaded::component_name;

#[derive(clap::Args)]
pub struct CallArgs {
    /// The component file (.wasm)
    component: PathBuf,
    /// The tool to call (as listed by `mcpplus inspect`)
    tool: String,
    /// Arguments as a JSON object
    #[arg(long, default_value = "{}", value_name = "JSON")]
    args: String,
}

pub async fn run(args: CallArgs, common: &super::CommonArgs) -> anyhow::Result<ExitCode> {
    let arguments: Value = serde_json::from_str(&args.args).context("--args is not valid JSON")?;
    let Value::Object(arguments) = arguments else {
        anyhow::bail!(
            "--args must be a JSON object such as '{{\"text\": \"hi\"}}', got {arguments}"
        );
    };
    let runtime = common.runtime()?;
    let component = runtime.load_file(&args.component)?;
    let Some(tool) = component.tool(&args.tool) else {
        let names: Vec<&str> = component.tools().iter().map(|t| t.name.as_str()).collect();
        anyhow::bail!(
            "component `{}` has no tool `{}`; its tools are: {}",
            component_name(&args.component),
            args.tool,
            names.join(", ")
        );
    };
    let outcome = invoke(
        &runtime,
        &component,
        tool,
        Some(&arguments),
        &CancellationToken::new(),
        None,
    )
    .await;
    let mut printed = json!({"content": outcome.content, "isError": outcome.is_error});
    if let Some(structured) = &outcome.structured {
        printed["structuredContent"] = structured.clone();
    }
    println!("{}", serde_json::to_string_pretty(&printed)?);
    Ok(if outcome.is_error {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
