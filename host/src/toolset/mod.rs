//! The set of components being served, and every change to it while serving:
//! load (add or replace), unload and reload, from the folder watcher or the admin
//! endpoint alike.
//!
//! A change is prepared completely (read, policy checked, compiled, names checked)
//! before anything is swapped; then the whole catalog is replaced in one step.
//! Calls that started on an old version hold it and finish on it; calls that start
//! after the swap see the new one. A change that fails leaves the catalog as it
//! was. Changes are applied one at a time.

pub mod watch;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::catalog::{CatalogError, LiveCatalog};
use mcpplus_runtime::loaded::component_name;
use mcpplus_runtime::{LoadedComponent, Runtime};

pub struct ToolSet {
    runtime: Arc<Runtime>,
    catalog: Arc<LiveCatalog>,
    /// How long unloading waits for running calls before cancelling them.
    drain_timeout: Duration,
    changing: tokio::sync::Mutex<()>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Added,
    Replaced,
    Removed,
    /// Same file and same policy as what is serving: nothing was swapped.
    Unchanged,
}

/// What one change did, by tool name.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangeReport {
    pub component: String,
    pub action: Action,
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_sha256: Option<String>,
    /// Unloading: calls still running when the drain time ran out (cancelled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancelled_calls: Option<usize>,
    pub elapsed_ms: u64,
}

/// A component as `mcpplus tools list` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentInfo {
    pub name: String,
    pub path: String,
    pub sha256: String,
    pub policy: Option<String>,
    pub tools: Vec<String>,
    pub calls_in_flight: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ToolSetError {
    #[error("{0}; the previous version (if any) keeps serving")]
    Refused(#[from] CatalogError),
    #[error("no component named `{0}` is loaded; `mcpplus tools list` shows what is")]
    UnknownComponent(String),
    #[error("{path}: cannot read the component: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the change could not run: {0}")]
    Internal(String),
}

impl ToolSet {
    pub fn new(runtime: Arc<Runtime>, catalog: Arc<LiveCatalog>, drain_timeout: Duration) -> Self {
        Self {
            runtime,
            catalog,
            drain_timeout,
            changing: tokio::sync::Mutex::new(()),
        }
    }

    pub fn catalog(&self) -> &Arc<LiveCatalog> {
        &self.catalog
    }

    /// Add the component at `path`, or replace the loaded one of the same name.
    pub async fn load(&self, path: &Path) -> Result<ChangeReport, ToolSetError> {
        let _one_at_a_time = self.changing.lock().await;
        let started = Instant::now();
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
        let name = component_name(&path);
        let current = self.catalog.snapshot();
        let old = current.component(&name).cloned();
        if let Some(old) = &old
            && self.unchanged(old, &path)?
        {
            return Ok(report(
                &name,
                Action::Unchanged,
                Some(old),
                Some(old),
                None,
                started,
            ));
        }

        let runtime = self.runtime.clone();
        let load_path = path.clone();
        let loaded = tokio::task::spawn_blocking(move || runtime.load_file(&load_path))
            .await
            .map_err(|e| ToolSetError::Internal(e.to_string()))?
            .map_err(|e| self.refused(&name, CatalogError::from(e)))?;
        let new = Arc::new(loaded);
        for w in &new.description.warnings {
            tracing::warn!(component = %name, "{w}");
        }
        let (next, replaced) = current
            .with_component(new.clone())
            .map_err(|e| self.refused(&name, e))?;
        self.catalog.replace(next);

        let action = if replaced.is_some() {
            Action::Replaced
        } else {
            Action::Added
        };
        let change = report(&name, action, replaced.as_ref(), Some(&new), None, started);
        tracing::info!(
            event = if replaced.is_some() { "tool.replaced" } else { "tool.loaded" },
            component = %name,
            digest = %new.digest,
            previous_digest = replaced.as_ref().map(|o| o.digest.as_str()).unwrap_or(""),
            cache = ?new.cache,
            policy = new.policy.source.as_deref().unwrap_or("none (nothing granted)"),
            added = %change.added.join(","),
            changed = %change.changed.join(","),
            removed = %change.removed.join(","),
            elapsed_ms = change.elapsed_ms,
            "component {}", if replaced.is_some() { "replaced" } else { "loaded" }
        );
        Ok(change)
    }

    /// Remove the component called `name`: new calls no longer see it; running
    /// ones get the drain time to finish, then are cancelled.
    pub async fn unload(&self, name: &str) -> Result<ChangeReport, ToolSetError> {
        let started = Instant::now();
        let old = {
            let _one_at_a_time = self.changing.lock().await;
            let (next, old) = self
                .catalog
                .snapshot()
                .without(name)
                .ok_or_else(|| ToolSetError::UnknownComponent(name.to_string()))?;
            self.catalog.replace(next);
            old
        };
        // Drain outside the lock: other changes need not wait for these calls.
        let drained = old.calls.drained(self.drain_timeout).await;
        let cancelled = if drained {
            0
        } else {
            let still = old.calls.in_flight();
            old.calls.cancel_remaining();
            still
        };
        let change = report(
            name,
            Action::Removed,
            Some(&old),
            None,
            Some(cancelled),
            started,
        );
        tracing::info!(
            event = "tool.unloaded",
            component = %name,
            digest = %old.digest,
            removed = %change.removed.join(","),
            cancelled_calls = cancelled,
            elapsed_ms = change.elapsed_ms,
            "component unloaded"
        );
        Ok(change)
    }

    /// Load the component called `name` again from its file (after the file or
    /// its policy changed).
    pub async fn reload(&self, name: &str) -> Result<ChangeReport, ToolSetError> {
        let path = self
            .catalog
            .snapshot()
            .component(name)
            .map(|c| c.path.clone())
            .ok_or_else(|| ToolSetError::UnknownComponent(name.to_string()))?;
        self.load(&path).await
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    pub fn list(&self) -> Vec<ComponentInfo> {
        let catalog = self.catalog.snapshot();
        let mut list: Vec<ComponentInfo> = catalog
            .components()
            .iter()
            .map(|c| ComponentInfo {
                name: c.name.clone(),
                path: c.path.display().to_string(),
                sha256: c.digest.clone(),
                policy: c.policy.source.clone(),
                tools: c.tools().iter().map(|t| t.name.clone()).collect(),
                calls_in_flight: c.calls.in_flight(),
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// Whether the file at `path` and its policy are exactly what `old` serves.
    fn unchanged(&self, old: &LoadedComponent, path: &Path) -> Result<bool, ToolSetError> {
        if old.path != path {
            return Ok(false);
        }
        let bytes = std::fs::read(path).map_err(|source| ToolSetError::Read {
            path: path.to_owned(),
            source,
        })?;
        let digest = mcpplus_runtime::cache::digest(&bytes);
        if digest != old.digest {
            return Ok(false);
        }
        Ok(self
            .runtime
            .policy_for(&old.name, path, &digest)
            .is_ok_and(|p| p == *old.policy))
    }

    fn refused(&self, name: &str, error: CatalogError) -> ToolSetError {
        let serving = self.catalog.snapshot().component(name).is_some();
        tracing::error!(
            event = "tool.load_failed",
            component = %name,
            error = %error,
            still_serving = serving,
            "component not loaded{}",
            if serving { "; the previous version keeps serving" } else { "" }
        );
        ToolSetError::Refused(error)
    }
}

fn tool_names(c: Option<&Arc<LoadedComponent>>) -> BTreeSet<String> {
    c.map(|c| c.tools().iter().map(|t| t.name.clone()).collect())
        .unwrap_or_default()
}

fn report(
    name: &str,
    action: Action,
    old: Option<&Arc<LoadedComponent>>,
    new: Option<&Arc<LoadedComponent>>,
    cancelled_calls: Option<usize>,
    started: Instant,
) -> ChangeReport {
    let (before, after) = (tool_names(old), tool_names(new));
    let unchanged = action == Action::Unchanged;
    ChangeReport {
        component: name.to_string(),
        action,
        added: after.difference(&before).cloned().collect(),
        changed: if unchanged {
            Vec::new()
        } else {
            after.intersection(&before).cloned().collect()
        },
        removed: before.difference(&after).cloned().collect(),
        sha256: new.map(|c| c.digest.clone()),
        previous_sha256: old.map(|c| c.digest.clone()),
        cancelled_calls,
        elapsed_ms: started.elapsed().as_millis() as u64,
    }
}
