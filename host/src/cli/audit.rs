//! `mcpplus audit [--tools DIR] [--json]`: for a security review, per component,
//! what it asks for, what its policy gives it, what is refused, its limits and a
//! short risk summary. Reads the same files and config as `serve`, without
//! compiling anything. Exits with 1 when a component would be refused.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

use super::CommonArgs;
use super::serve::bundled_tools_dir;
use mcpplus_policy::Policy;
use mcpplus_policy::config::{CallLimits, OperatorConfig};
use mcpplus_policy::report::{
    AUDIT_VERSION, AuditInput, AuditReport, ComponentAudit, MeshAudit, QueueAudit,
};
use mcpplus_runtime::cache::digest;
use mcpplus_runtime::loaded::component_name;
use mcpplus_schema::describe_component;

#[derive(clap::Args)]
pub struct AuditArgs {
    /// Folder of tool components (*.wasm) and their policies [default: the bundled tools]
    #[arg(long, env = "MCPPLUS_TOOLS", value_name = "DIR")]
    tools: Option<PathBuf>,
    /// Print the stable JSON report (documented in docs/security.md) instead of text
    #[arg(long)]
    json: bool,
    /// The node's data directory, to show its PeerId (its key is read, never created)
    #[arg(long, env = "MCPPLUS_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
}

pub fn run(args: AuditArgs, common: &CommonArgs) -> anyhow::Result<ExitCode> {
    let dir = args.tools.unwrap_or_else(bundled_tools_dir);
    let config = common.operator_config()?;
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot read the tools folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "wasm") && p.is_file())
        .collect();
    paths.sort();

    let mut taken: Vec<(String, String)> = Vec::new(); // (tool, component)
    let components: Vec<ComponentAudit> = paths
        .iter()
        .map(|path| audit_one(path, &config, &mut taken))
        .collect();
    for name in config.policies.keys() {
        if !components.iter().any(|c| &c.name == name) {
            eprintln!(
                "warning: [policies.{name}] in the operator config matches no component in {}",
                dir.display()
            );
        }
    }
    let refused = components.iter().any(|c| c.status == "refused");
    let peer_id = args
        .data_dir
        .as_deref()
        .and_then(|d| std::fs::read(d.join(mcpplus_mesh::identity::IDENTITY_FILE)).ok())
        .and_then(|bytes| libp2p::identity::Keypair::from_protobuf_encoding(&bytes).ok())
        .map(|key| key.public().to_peer_id().to_string());
    let report = AuditReport {
        audit_version: AUDIT_VERSION,
        tools_dir: dir.display().to_string(),
        components,
        mesh: MeshAudit::of(&config.mesh, peer_id, pnet_status(&config.mesh)),
        queue: QueueAudit::of(&config.queue),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_text(&report);
    }
    Ok(if refused {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn audit_one(
    path: &Path,
    config: &OperatorConfig,
    taken: &mut Vec<(String, String)>,
) -> ComponentAudit {
    let name = component_name(path);
    let bytes = std::fs::read(path);
    let sha256 = bytes.as_ref().map(|b| digest(b)).unwrap_or_default();
    let description = match &bytes {
        Ok(b) => describe_component(&name, b).map_err(|e| e.to_string()),
        Err(e) => Err(format!("cannot read the file: {e}")),
    };
    let policy = Policy::for_component(&name, path, &sha256, config).map_err(|e| e.to_string());
    let (tools, imports, mut load_error) = match &description {
        Ok(d) => (
            d.tools.iter().map(|t| t.name.clone()).collect::<Vec<_>>(),
            d.imports.clone(),
            None,
        ),
        Err(e) => (Vec::new(), Vec::new(), Some(e.clone())),
    };
    if load_error.is_none() && policy.is_ok() {
        load_error = tools.iter().find_map(|t| {
            taken
                .iter()
                .find(|(tool, _)| tool == t)
                .map(|(_, owner)| format!("tool `{t}` is already provided by component `{owner}`"))
        });
        if load_error.is_none() {
            taken.extend(tools.iter().map(|t| (t.clone(), name.clone())));
        }
    }
    let policy_limits = policy
        .as_ref()
        .map(|p| p.limits.clone())
        .unwrap_or_default();
    let base = CallLimits::default();
    let limits = config.limits_for(&base, &name, &policy_limits, "");
    let tool_limits = tools
        .iter()
        .map(|t| {
            (
                t.clone(),
                config.limits_for(&base, &name, &policy_limits, t),
            )
        })
        .collect();
    ComponentAudit::build(AuditInput {
        name: &name,
        path,
        sha256: &sha256,
        tools,
        imports: &imports,
        policy: policy.as_ref().map_err(|e| e.clone()),
        load_error,
        limits,
        tool_limits,
    })
}

fn print_text(report: &AuditReport) {
    println!(
        "audit of {} ({} components)",
        report.tools_dir,
        report.components.len()
    );
    println!("\nqueue");
    println!("  backend      {}", report.queue.backend);
    println!("  location     {}", report.queue.location);
    if let Some(privileges) = &report.queue.database_privileges {
        println!("  db user      needs {privileges}");
    }
    if let Some(mesh) = &report.mesh {
        println!("\nmesh");
        println!(
            "  peer id      {}",
            mesh.peer_id
                .as_deref()
                .unwrap_or("unknown (pass --data-dir DIR)")
        );
        println!("  listen       {}", list_or_none(&mesh.listen));
        println!("  bootstrap    {}", list_or_none(&mesh.bootstrap));
        println!("  mdns         {}", if mesh.mdns { "on" } else { "off" });
        println!("  pnet         {}", mesh.pnet);
        println!(
            "  federate     {}",
            if mesh.federate {
                "on: peers' tools are listed and called here"
            } else {
                "off"
            }
        );
        println!("  slots        {} per peer pulled from", mesh.slots);
        if mesh.peers.is_empty() {
            println!("  peers        none allowed: every connection is refused");
        }
        for peer in &mesh.peers {
            let roles = if peer.roles.is_empty() {
                "connect only".to_string()
            } else {
                peer.roles.join(", ")
            };
            println!("  peer         {}  ({roles})", peer.peer_id);
        }
    }
    for c in &report.components {
        println!("\n{}  ({})", c.name, c.path);
        let pin = if c.pinned { "  (pinned by policy)" } else { "" };
        println!("  sha256       {}{pin}", c.sha256);
        println!(
            "  policy       {}",
            c.policy.as_deref().unwrap_or("none (nothing granted)")
        );
        match &c.error {
            Some(e) => println!("  status       REFUSED: {e}"),
            None => println!("  status       loaded"),
        }
        println!("  tools        {}", c.tools.join(", "));
        let g = &c.grants;
        let mut grants = Vec::new();
        for f in &g.files {
            grants.push(format!(
                "files: {} as {} ({})",
                f.host,
                f.guest,
                f.access.as_str()
            ));
        }
        for e in &g.env {
            let unset = if e.set_on_host {
                ""
            } else {
                " (not set on host)"
            };
            grants.push(format!("env: {}{unset}", e.name));
        }
        for n in &g.network {
            grants.push(format!("network: {n}"));
        }
        for s in &g.sockets.connect {
            grants.push(format!("sockets: connect {s}"));
        }
        for s in &g.sockets.bind {
            grants.push(format!("sockets: bind {s}"));
        }
        if g.sockets.name_lookup {
            grants.push("sockets: name lookup".into());
        }
        if g.queue.submit {
            grants.push("queue: submit".into());
        }
        if g.queue.admin {
            grants.push("queue: admin".into());
        }
        if g.peers.read {
            grants.push("peers: read".into());
        }
        if g.peers.admin {
            grants.push("peers: admin".into());
        }
        if g.workflow.submit {
            grants.push("workflow: submit".into());
        }
        if g.workflow.admin {
            grants.push("workflow: admin".into());
        }
        for (granted, what) in [
            (g.client.elicit, "client: elicit"),
            (g.client.sample, "client: sample"),
            (g.client.roots, "client: roots"),
        ] {
            if granted {
                grants.push(what.into());
            }
        }
        print_list("grants", &grants, "none");
        let unused: Vec<String> = c.unused_grants.iter().map(|u| u.as_str().into()).collect();
        print_list("unused", &unused, "none");
        print_list("denied", &c.denied_imports, "none");
        if !c.unavailable_imports.is_empty() {
            print_list("unavailable", &c.unavailable_imports, "none");
        }
        let l = &c.limits;
        println!(
            "  limits       timeout {} ms, memory {} MiB, concurrency {} (queue {}), output {} KiB, result {} KiB",
            l.timeout_ms, l.memory_mib, l.max_concurrency, l.max_queued, l.output_kib, l.result_kib
        );
        for (tool, l) in &c.tool_limits {
            println!(
                "    {tool}: timeout {} ms, memory {} MiB, concurrency {} (queue {})",
                l.timeout_ms, l.memory_mib, l.max_concurrency, l.max_queued
            );
        }
        let a = &c.annotations;
        println!(
            "  hints        readOnlyHint={} destructiveHint={} openWorldHint={}",
            a.read_only_hint, a.destructive_hint, a.open_world_hint
        );
        print_list("risks", &c.risks, "none");
    }
}

fn print_list(label: &str, items: &[String], empty: &str) {
    match items.split_first() {
        None => println!("  {label:<12} {empty}"),
        Some((first, rest)) => {
            println!("  {label:<12} {first}");
            for item in rest {
                println!("  {:<12} {item}", "");
            }
        }
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

/// `off`, `on (fingerprint …)`, or why the key cannot be used.
fn pnet_status(mesh: &mcpplus_policy::config::mesh::MeshConfig) -> String {
    match &mesh.psk_file {
        None => "off".into(),
        Some(path) => match mcpplus_mesh::psk::load(path) {
            Ok(key) => format!("on (fingerprint {})", key.fingerprint()),
            Err(e) => format!("UNUSABLE: {e}"),
        },
    }
}
