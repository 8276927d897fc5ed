//! `mcpplus embed-docs COMPONENT.wasm --wit DIR`: store the WIT package's doc
//! comments in the component so tools and parameters get descriptions.
//! (Compilers drop doc comments when they build a component.)

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use mcpplus_schema::docs::with_docs_section;

#[derive(clap::Args)]
pub struct EmbedDocsArgs {
    /// The component file (.wasm), rewritten in place unless --output is given
    component: PathBuf,
    /// The WIT folder the component was built from (with its deps/)
    #[arg(long, value_name = "DIR")]
    wit: PathBuf,
    /// Write the result here instead of in place
    #[arg(long, short, value_name = "FILE")]
    output: Option<PathBuf>,
}

pub fn run(args: EmbedDocsArgs) -> anyhow::Result<ExitCode> {
    let bytes = std::fs::read(&args.component)
        .with_context(|| format!("cannot read {}", args.component.display()))?;
    let with_docs =
        embed(&bytes, &args.wit).with_context(|| format!("{}", args.component.display()))?;
    let out = args.output.unwrap_or(args.component);
    std::fs::write(&out, with_docs).with_context(|| format!("cannot write {}", out.display()))?;
    eprintln!(
        "embedded docs from {} into {}",
        args.wit.display(),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `component` with the WIT package in `wit` (and its doc comments) stored in it.
pub fn embed(component: &[u8], wit: &Path) -> anyhow::Result<Vec<u8>> {
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve
        .push_path(wit)
        .with_context(|| format!("cannot parse the WIT in {}", wit.display()))?;
    let encoded =
        wit_component::encode(&resolve, package).context("cannot encode the WIT package")?;
    with_docs_section(component, &encoded).map_err(|e| anyhow::anyhow!("{e}"))
}
