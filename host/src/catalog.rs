//! The live catalog: loaded components and the tool names they answer to.
//!
//! A [`Catalog`] is an immutable snapshot; [`LiveCatalog`] holds the current one and
//! swaps it whole, so a call that started on one snapshot finishes on it. Tool names
//! are unique across components: a component whose tool name is already taken is
//! refused with an error naming both components, never shadowed silently.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use tokio::sync::broadcast;

use mcpplus_runtime::{LoadError, LoadedComponent, Runtime};
use mcpplus_schema::ToolSignature;

/// One consistent set of loaded components.
#[derive(Default)]
pub struct Catalog {
    components: Vec<Arc<LoadedComponent>>,
    /// tool name → index into `components`.
    tools: BTreeMap<String, usize>,
}

/// A tool found in the catalog, with the component that serves it.
pub struct ToolEntry<'a> {
    pub component: &'a Arc<LoadedComponent>,
    pub signature: &'a ToolSignature,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(
        "{path}: tool `{tool}` is already provided by component `{existing}` ({existing_path}); rename the export or remove one of the components"
    )]
    NameCollision {
        path: PathBuf,
        tool: String,
        existing: String,
        existing_path: PathBuf,
    },
    #[error("{path}: cannot read the tools folder: {source}")]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Catalog {
    /// Add a component, refusing it whole if any of its tool names is taken.
    pub fn add(&mut self, component: LoadedComponent) -> Result<(), CatalogError> {
        self.add_shared(Arc::new(component))
    }

    fn add_shared(&mut self, component: Arc<LoadedComponent>) -> Result<(), CatalogError> {
        for tool in component.tools() {
            if let Some(&i) = self.tools.get(&tool.name) {
                let existing = &self.components[i];
                return Err(CatalogError::NameCollision {
                    path: component.path.clone(),
                    tool: tool.name.clone(),
                    existing: existing.name.clone(),
                    existing_path: existing.path.clone(),
                });
            }
        }
        let index = self.components.len();
        for tool in component.tools() {
            self.tools.insert(tool.name.clone(), index);
        }
        self.components.push(component);
        Ok(())
    }

    /// The component called `name`.
    pub fn component(&self, name: &str) -> Option<&Arc<LoadedComponent>> {
        self.components.iter().find(|c| c.name == name)
    }

    /// This catalog with `component` added, or replacing the one of the same
    /// name (returned). Refused whole if a tool name is taken by another component.
    pub fn with_component(
        &self,
        component: Arc<LoadedComponent>,
    ) -> Result<(Catalog, Option<Arc<LoadedComponent>>), CatalogError> {
        let (mut next, old) = match self.without(&component.name) {
            Some((rest, old)) => (rest, Some(old)),
            None => (self.clone_all(), None),
        };
        next.add_shared(component)?;
        Ok((next, old))
    }

    /// This catalog without the component called `name` (returned), if present.
    pub fn without(&self, name: &str) -> Option<(Catalog, Arc<LoadedComponent>)> {
        let old = self.component(name)?.clone();
        let mut next = Catalog::default();
        for c in self.components.iter().filter(|c| c.name != name) {
            next.add_shared(c.clone())
                .expect("components of one catalog never collide");
        }
        Some((next, old))
    }

    fn clone_all(&self) -> Catalog {
        Catalog {
            components: self.components.clone(),
            tools: self.tools.clone(),
        }
    }

    /// All tools in name order.
    pub fn tools(&self) -> impl Iterator<Item = ToolEntry<'_>> {
        self.tools.iter().filter_map(|(name, &i)| {
            let component = &self.components[i];
            Some(ToolEntry {
                component,
                signature: component.tool(name)?,
            })
        })
    }

    /// The names of all tools, in name order.
    pub fn tool_names(&self) -> Vec<String> {
        self.tools.keys().cloned().collect()
    }

    pub fn tool(&self, name: &str) -> Option<ToolEntry<'_>> {
        let component = &self.components[*self.tools.get(name)?];
        Some(ToolEntry {
            component,
            signature: component.tool(name)?,
        })
    }

    pub fn components(&self) -> &[Arc<LoadedComponent>] {
        &self.components
    }
}

/// Load every `*.wasm` in `dir` (in name order, compiled in parallel). Components
/// that fail to load are returned as errors beside the catalog of those that did.
pub fn load_dir(
    runtime: &Runtime,
    dir: &Path,
) -> Result<(Catalog, Vec<CatalogError>), CatalogError> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| CatalogError::ReadDir {
            path: dir.to_owned(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "wasm") && p.is_file())
        .collect();
    paths.sort();

    let loaded: Vec<Result<LoadedComponent, LoadError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = paths
            .iter()
            .map(|p| scope.spawn(|| runtime.load_file(p)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("component loading thread panicked"))
            .collect()
    });

    let mut catalog = Catalog::default();
    let mut errors = Vec::new();
    for result in loaded {
        match result
            .map_err(CatalogError::from)
            .and_then(|c| catalog.add(c))
        {
            Ok(()) => {}
            Err(e) => errors.push(e),
        }
    }
    Ok((catalog, errors))
}

fn set_loaded_gauge(catalog: &Catalog) {
    mcpplus_telemetry::metrics::metrics()
        .components_loaded
        .set(catalog.components().len() as i64);
}

/// The catalog the server answers from; replaced whole, never edited in place.
pub struct LiveCatalog {
    current: RwLock<Arc<Catalog>>,
    changes: broadcast::Sender<()>,
}

impl LiveCatalog {
    pub fn new(catalog: Catalog) -> Self {
        set_loaded_gauge(&catalog);
        Self {
            current: RwLock::new(Arc::new(catalog)),
            changes: broadcast::channel(16).0,
        }
    }

    /// The current snapshot; hold it for the length of one request.
    pub fn snapshot(&self) -> Arc<Catalog> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Swap in a new catalog and tell subscribers the tool list changed.
    pub fn replace(&self, catalog: Catalog) {
        set_loaded_gauge(&catalog);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(catalog);
        let _ = self.changes.send(());
    }

    /// Tell subscribers the tool list changed outside the catalog (tools the
    /// server adds itself, e.g. the conformance suite's diagnostics).
    pub fn announce_change(&self) {
        let _ = self.changes.send(());
    }

    /// Notified after every [`LiveCatalog::replace`] and [`LiveCatalog::announce_change`].
    pub fn subscribe(&self) -> broadcast::Receiver<()> {
        self.changes.subscribe()
    }
}
