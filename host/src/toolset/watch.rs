//! Watch the tools folder and apply what changes there: a new `NAME.wasm` is
//! loaded, a changed one (or a changed `NAME.policy.toml`) replaces the loaded
//! version, a removed one is unloaded.
//!
//! File events are debounced: a path is acted on only after it has been quiet for
//! the settle time, so a component still being copied is not loaded half-way. If
//! a copy stalls for longer than that, the half file fails to load (the previous
//! version keeps serving) and the copy's next writes trigger a new attempt.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::ToolSet;

/// Keeps the watch alive; dropping it stops watching.
pub struct FolderWatch {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FolderWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Start watching `dir` (not its subfolders) for component and policy changes.
pub fn watch(toolset: Arc<ToolSet>, dir: &Path, settle: Duration) -> notify::Result<FolderWatch> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if may_change_content(&event.kind) => {
                for path in event.paths {
                    let _ = tx.send(path);
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "tools folder watch error"),
        })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    tracing::info!(event = "watch.started", dir = %dir.display(), settle_ms = settle.as_millis() as u64, "watching the tools folder");
    let task = tokio::spawn(debounce(toolset, dir, rx, settle));
    Ok(FolderWatch {
        _watcher: watcher,
        task,
    })
}

/// The component file a changed path concerns: `x.wasm` itself, or `x.wasm`
/// beside a changed `x.policy.toml`. Anything else is ignored.
/// Whether an event can mean a file was added, removed, renamed or written.
/// Opening or reading a file (inotify's IN_OPEN / IN_CLOSE_NOWRITE, which
/// notify reports as `Access`) and attribute changes (atime, mode) do not.
/// They must not start a check: the check reads the file itself, so a read
/// that started one would start the next, hashing every component over and
/// over once anything (a backup, `cp`, another server) read the folder.
fn may_change_content(kind: &notify::EventKind) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode, ModifyKind};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) | EventKind::Modify(ModifyKind::Metadata(_)) => false,
        _ => true,
    }
}

fn component_file(path: &Path) -> Option<PathBuf> {
    let file = path.file_name()?.to_str()?;
    if file.starts_with('.') {
        return None;
    }
    if let Some(stem) = file.strip_suffix(".policy.toml") {
        return Some(path.with_file_name(format!("{stem}.wasm")));
    }
    file.ends_with(".wasm").then(|| path.to_owned())
}

async fn debounce(
    toolset: Arc<ToolSet>,
    dir: PathBuf,
    mut events: mpsc::UnboundedReceiver<PathBuf>,
    settle: Duration,
) {
    let mut pending: HashMap<PathBuf, Instant> = HashMap::new();
    loop {
        let next_due = pending.values().min().map(|t| *t + settle);
        tokio::select! {
            event = events.recv() => match event {
                Some(path) => {
                    if let Some(component) = component_file(&path) {
                        pending.insert(dir.join(component.file_name().unwrap_or_default()), Instant::now());
                    }
                }
                None => return,
            },
            _ = sleep_until(next_due) => {
                let now = Instant::now();
                let due: Vec<PathBuf> = pending
                    .iter()
                    .filter(|(_, t)| now.duration_since(**t) >= settle)
                    .map(|(p, _)| p.clone())
                    .collect();
                for path in due {
                    pending.remove(&path);
                    apply(&toolset, &path).await;
                }
            }
        }
    }
}

async fn sleep_until(when: Option<Instant>) {
    match when {
        Some(when) => tokio::time::sleep_until(when).await,
        None => std::future::pending().await,
    }
}

/// Bring the served set in line with the file at `path`. Errors are logged by
/// the tool set (the previous version keeps serving).
async fn apply(toolset: &ToolSet, path: &Path) {
    if path.is_file() {
        let _ = toolset.load(path).await;
        return;
    }
    // Gone: unload it, if it is the component that file provided.
    let name = mcpplus_runtime::loaded::component_name(path);
    let served_from_here = toolset
        .catalog()
        .snapshot()
        .component(&name)
        .is_some_and(|c| c.path == path);
    if served_from_here {
        let _ = toolset.unload(&name).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reading a component must not make the watcher look at it; writing
    /// one must. inotify delivers a folder's events in order, so the first
    /// path through is the written file unless the reads got through too.
    #[test]
    fn reads_are_not_changes() {
        let dir = std::env::temp_dir().join(format!("mcpplus-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let read_me = dir.join("read.wasm");
        std::fs::write(&read_me, b"\0asm").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut watcher =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event
                    && may_change_content(&event.kind)
                {
                    for path in event.paths {
                        let _ = tx.send(path);
                    }
                }
            })
            .unwrap();
        watcher.watch(&dir, RecursiveMode::NonRecursive).unwrap();
        for _ in 0..3 {
            std::fs::read(&read_me).unwrap();
        }
        let written = dir.join("written.wasm");
        std::fs::write(&written, b"\0asm").unwrap();
        let first = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the write was seen");
        assert_eq!(first, written, "a read was reported as a change");
        drop(watcher);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_components_and_policies_matter() {
        let p = Path::new("/t/notes.wasm");
        assert_eq!(component_file(p), Some(p.to_owned()));
        assert_eq!(
            component_file(Path::new("/t/notes.policy.toml")),
            Some(PathBuf::from("/t/notes.wasm"))
        );
        assert_eq!(component_file(Path::new("/t/notes.wasm.tmp")), None);
        assert_eq!(component_file(Path::new("/t/.notes.wasm.swp")), None);
        assert_eq!(component_file(Path::new("/t/README.md")), None);
    }
}
