//! `mcpplus dev [DIR] --tools TOOLS_DIR`: build a tool project, install the
//! component in a tools folder, and again whenever its sources change, so a
//! server running `mcpplus serve --tools TOOLS_DIR` always serves the latest
//! version (it hot-loads what appears there).
//!
//! Changes are debounced: a rebuild starts once the sources have been quiet for
//! `--debounce-ms`, and changes made during a build cause one more build after
//! it. A failed build is reported and the previous component stays installed.
//! Watched: the project folder's files and, with all they contain, the folders
//! it had when `dev` started (a folder added later is not watched), except
//! build outputs and dependencies (`target/`, `dist/`, `node_modules/`,
//! `.venv/`, hidden files), lock files and editor backups.

use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecursiveMode, Watcher as _};

use super::build_project::{self, write_atomically};
use mcpplus_runtime::loaded::component_name;

#[derive(clap::Args)]
pub struct DevArgs {
    /// The project folder [default: the current folder]
    dir: Option<PathBuf>,
    /// The tools folder to install the component in (the one `mcpplus serve --tools` watches); created if missing
    #[arg(long, value_name = "TOOLS_DIR")]
    tools: PathBuf,
    /// How long the sources must be unchanged before a rebuild starts, in milliseconds
    #[arg(long, value_name = "MS", default_value_t = 300)]
    debounce_ms: u64,
}

pub async fn run(args: DevArgs) -> anyhow::Result<ExitCode> {
    let dir = args.dir.unwrap_or_else(|| PathBuf::from("."));
    build_project::detect(&dir)?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", dir.display()))?;
    std::fs::create_dir_all(&args.tools)
        .with_context(|| format!("cannot create {}", args.tools.display()))?;

    // Watch before the first build, so changes made during it are not missed.
    let (tx, rx) = mpsc::channel();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if is_change(&event.kind) => {
                for path in event.paths {
                    let _ = tx.send(path);
                }
            }
            Ok(_) => {}
            Err(e) => eprintln!("mcpplus dev: watch error: {e}"),
        })
        .context("cannot watch the project's files")?;
    // The project's own files, and its source folders with everything in them;
    // not build outputs or dependencies (node_modules alone has thousands of folders).
    let mut watched = vec![(dir.clone(), RecursiveMode::NonRecursive)];
    for entry in
        std::fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?
    {
        let path = entry?.path();
        if path.is_dir() && is_source(&dir, &path) {
            watched.push((path, RecursiveMode::Recursive));
        }
    }
    for (path, mode) in watched {
        watcher
            .watch(&path, mode)
            .with_context(|| format!("cannot watch {}", path.display()))?;
    }

    let tools = args.tools;
    let debounce = Duration::from_millis(args.debounce_ms);
    let work = tokio::task::spawn_blocking(move || watch_and_build(&dir, &tools, rx, debounce));
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {
            eprintln!("mcpplus dev: stopped");
            // A build may be running in a blocking thread; do not wait for it.
            std::process::exit(0);
        }
        ended = work => {
            drop(watcher);
            ended.context("the build loop failed")?;
            anyhow::bail!("the file watch ended unexpectedly")
        }
    }
}

/// Writes and renames count; reads and opens do not (a build reads the sources).
fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) => true,
    }
}

/// Folders of build outputs and dependencies, never sources.
const NOT_SOURCES: &[&str] = &["target", "dist", "node_modules", "__pycache__", "venv"];

/// Whether a change of `path` (under `dir`) should cause a rebuild.
fn is_source(dir: &Path, path: &Path) -> bool {
    let Ok(relative) = path.strip_prefix(dir) else {
        return false;
    };
    let mut parts = relative.components().peekable();
    if parts.peek().is_none() {
        return false;
    }
    for (depth, part) in parts.enumerate() {
        let Component::Normal(part) = part else {
            return false;
        };
        let part = part.to_string_lossy();
        if part.starts_with('.') || NOT_SOURCES.contains(&part.as_ref()) {
            return false;
        }
        // cargo makes target/ as `targetXXXXXX` and renames it.
        let cargo_temp = part
            .strip_prefix("target")
            .is_some_and(|rest| rest.len() == 6 && rest.chars().all(|c| c.is_ascii_alphanumeric()));
        if depth == 0 && cargo_temp {
            return false;
        }
    }
    let file = relative
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let backup = file.ends_with('~')
        || [".swp", ".swx", ".tmp", ".pyc"]
            .iter()
            .any(|ext| file.ends_with(ext))
        || file == "4913"; // vim's probe file
    let lock = file == "Cargo.lock" || file == "package-lock.json";
    !(backup || lock)
}

fn watch_and_build(dir: &Path, tools: &Path, changes: mpsc::Receiver<PathBuf>, debounce: Duration) {
    loop {
        build_and_install(dir, tools);
        eprintln!(
            "mcpplus dev: watching {} for changes (Ctrl-C to stop)",
            dir.display()
        );
        // Wait for a change of a source, then for quiet.
        let mut changed: Vec<PathBuf> = Vec::new();
        loop {
            let Ok(path) = changes.recv() else { return };
            if is_source(dir, &path) {
                changed.push(path);
                break;
            }
        }
        loop {
            match changes.recv_timeout(debounce) {
                Ok(path) => {
                    if is_source(dir, &path) && !changed.contains(&path) {
                        changed.push(path);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        }
        let shown: Vec<String> = changed
            .iter()
            .map(|p| {
                let name = p.strip_prefix(dir).unwrap_or(p).display();
                if p.exists() {
                    name.to_string()
                } else {
                    format!("{name} (removed)")
                }
            })
            .collect();
        eprintln!("\nmcpplus dev: changed: {}", shown.join(", "));
    }
}

/// One build; on success the component replaces the one in `tools` (unless it
/// is the same). Failures are printed, not returned: watching goes on.
fn build_and_install(dir: &Path, tools: &Path) {
    let started = Instant::now();
    eprintln!("mcpplus dev: building {}", dir.display());
    let component = match build_project::build(dir) {
        Ok(component) => component,
        Err(e) => {
            eprintln!(
                "mcpplus dev: the build failed after {:.1}s: {e:#}\n\
                 mcpplus dev: the installed component (if any) is unchanged; fix the error and save",
                started.elapsed().as_secs_f64()
            );
            return;
        }
    };
    let elapsed = started.elapsed().as_secs_f64();
    let installed = tools.join(component.file_name().unwrap_or_default());
    match install(&component, &installed) {
        Ok(Installed { tools, replaced }) => {
            let action = match replaced {
                None => "installed",
                Some(true) => "replaced",
                Some(false) => "unchanged, kept",
            };
            eprintln!(
                "mcpplus dev: built in {elapsed:.1}s; {action} {} ({} tools: {})",
                installed.display(),
                tools.len(),
                tools.join(", ")
            );
        }
        Err(e) => eprintln!("mcpplus dev: built in {elapsed:.1}s, but {e:#}"),
    }
}

struct Installed {
    tools: Vec<String>,
    /// None: there was none; Some(false): it was the same.
    replaced: Option<bool>,
}

fn install(component: &Path, installed: &Path) -> anyhow::Result<Installed> {
    let bytes =
        std::fs::read(component).with_context(|| format!("cannot read {}", component.display()))?;
    let description = mcpplus_schema::describe_component(&component_name(installed), &bytes)
        .with_context(|| format!("{} is not a tool component", component.display()))?;
    let tools = description.tools.iter().map(|t| t.name.clone()).collect();
    let replaced = match std::fs::read(installed) {
        Ok(old) if old == bytes => {
            return Ok(Installed {
                tools,
                replaced: Some(false),
            });
        }
        Ok(_) => Some(true),
        Err(_) => None,
    };
    write_atomically(installed, &bytes)?;
    Ok(Installed { tools, replaced })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_what_a_build_reads_and_not_what_it_writes() {
        let dir = Path::new("/p");
        for source in [
            "src/lib.rs",
            "wit/world.wit",
            "app.py",
            "app.js",
            "Cargo.toml",
        ] {
            assert!(is_source(dir, &dir.join(source)), "{source}");
        }
        for not in [
            "target/release/x.wasm",
            "dist/x.wasm",
            "node_modules/a/b.js",
            ".venv/lib/x.py",
            "__pycache__/app.cpython-312.pyc",
            ".git/index",
            "src/.lib.rs.swp",
            "src/lib.rs~",
            "Cargo.lock",
            "package-lock.json",
            "targetfROflL",
            "",
        ] {
            assert!(!is_source(dir, &dir.join(not)), "{not}");
        }
        assert!(!is_source(dir, Path::new("/elsewhere/app.py")));
    }
}
