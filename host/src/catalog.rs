//! The live catalog: loaded components and the tool names they answer to.
//!
//! A [`Catalog`] is an immutable snapshot; [`LiveCatalog`] holds the current one and
//! swaps it whole, so a call that started on one snapshot finishes on it. Tool names
//! are unique across components: a component whose tool name is already taken is
//! refused with an error naming both components, never shadowed silently. The
//! same holds for the prompt names, resource URIs and resource templates that
//! components serve (`mcpplus:host/prompts`, `mcpplus:host/resources`).

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
    /// prompt name → index into `components`.
    prompts: BTreeMap<String, usize>,
    /// resource URI → index into `components`.
    resources: BTreeMap<String, usize>,
    /// resource URI template → index into `components`.
    templates: BTreeMap<String, usize>,
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
    #[error(
        "{path}: {kind} `{name}` is already served by component `{existing}` ({existing_path}); rename it or remove one of the components"
    )]
    ServedCollision {
        path: PathBuf,
        /// `prompt`, `resource` or `resource template`.
        kind: &'static str,
        name: String,
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
        let served = served_keys(&component);
        for (kind, key) in &served {
            if let Some(&i) = self.served_map(kind).get(key) {
                let existing = &self.components[i];
                return Err(CatalogError::ServedCollision {
                    path: component.path.clone(),
                    kind,
                    name: key.clone(),
                    existing: existing.name.clone(),
                    existing_path: existing.path.clone(),
                });
            }
        }
        let index = self.components.len();
        for tool in component.tools() {
            self.tools.insert(tool.name.clone(), index);
        }
        for (kind, key) in served {
            self.served_map_mut(kind).insert(key, index);
        }
        self.components.push(component);
        Ok(())
    }

    fn served_map(&self, kind: &str) -> &BTreeMap<String, usize> {
        match kind {
            PROMPT => &self.prompts,
            RESOURCE => &self.resources,
            _ => &self.templates,
        }
    }

    fn served_map_mut(&mut self, kind: &str) -> &mut BTreeMap<String, usize> {
        match kind {
            PROMPT => &mut self.prompts,
            RESOURCE => &mut self.resources,
            _ => &mut self.templates,
        }
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
            prompts: self.prompts.clone(),
            resources: self.resources.clone(),
            templates: self.templates.clone(),
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

    /// All prompts (MCP `Prompt` objects) in name order, with their components.
    pub fn prompts(&self) -> impl Iterator<Item = ServedEntry<'_>> {
        self.prompts.iter().filter_map(|(name, &i)| {
            let component = &self.components[i];
            Some(ServedEntry {
                component,
                json: component.served.prompt(name)?,
            })
        })
    }

    pub fn prompt(&self, name: &str) -> Option<ServedEntry<'_>> {
        let component = &self.components[*self.prompts.get(name)?];
        Some(ServedEntry {
            component,
            json: component.served.prompt(name)?,
        })
    }

    /// All resources (MCP `Resource` objects) in URI order.
    pub fn resources(&self) -> impl Iterator<Item = ServedEntry<'_>> {
        self.resources.iter().filter_map(|(uri, &i)| {
            let component = &self.components[i];
            Some(ServedEntry {
                component,
                json: component
                    .served
                    .resources
                    .iter()
                    .find(|r| r["uri"] == *uri)?,
            })
        })
    }

    /// All resource templates (MCP `ResourceTemplate` objects) in template order.
    pub fn resource_templates(&self) -> impl Iterator<Item = ServedEntry<'_>> {
        self.templates.iter().filter_map(|(template, &i)| {
            let component = &self.components[i];
            Some(ServedEntry {
                component,
                json: &component
                    .served
                    .templates
                    .iter()
                    .find(|t| t.uri_template() == template)?
                    .json,
            })
        })
    }

    /// The component that serves `uri`: the one listing it as a resource, else
    /// the one whose template (the first in template order) matches it.
    pub fn resolve_uri(&self, uri: &str) -> Option<&Arc<LoadedComponent>> {
        if let Some(&i) = self.resources.get(uri) {
            return Some(&self.components[i]);
        }
        self.templates.iter().find_map(|(template, &i)| {
            let component = &self.components[i];
            component
                .served
                .templates
                .iter()
                .find(|t| t.uri_template() == template)
                .and_then(|t| t.template.match_uri(uri))
                .map(|_| component)
        })
    }

    /// Whether any component serves prompts.
    pub fn has_prompts(&self) -> bool {
        !self.prompts.is_empty()
    }

    /// Whether any component serves resources or resource templates.
    pub fn has_resources(&self) -> bool {
        !self.resources.is_empty() || !self.templates.is_empty()
    }

    fn prompt_list(&self) -> Vec<&serde_json::Value> {
        self.prompts().map(|e| e.json).collect()
    }

    fn resource_list(&self) -> Vec<&serde_json::Value> {
        self.resources()
            .chain(self.resource_templates())
            .map(|e| e.json)
            .collect()
    }
}

/// A prompt, resource or resource template, with the component serving it.
pub struct ServedEntry<'a> {
    pub component: &'a Arc<LoadedComponent>,
    /// The MCP object as listed.
    pub json: &'a serde_json::Value,
}

const PROMPT: &str = "prompt";
const RESOURCE: &str = "resource";
const TEMPLATE: &str = "resource template";

/// What a component serves besides tools: (kind, name/URI/template).
fn served_keys(component: &LoadedComponent) -> Vec<(&'static str, String)> {
    let served = &component.served;
    let text = |v: &serde_json::Value, key: &str| v[key].as_str().unwrap_or_default().to_string();
    served
        .prompts
        .iter()
        .map(|p| (PROMPT, text(p, "name")))
        .chain(served.resources.iter().map(|r| (RESOURCE, text(r, "uri"))))
        .chain(
            served
                .templates
                .iter()
                .map(|t| (TEMPLATE, t.uri_template().to_string())),
        )
        .collect()
}

/// What changed in one swap of the catalog (every swap may change tools).
#[derive(Clone)]
pub struct CatalogChange {
    /// The tool list may have changed.
    pub tools: bool,
    /// The prompt list changed.
    pub prompts: bool,
    /// The resource or resource-template list changed.
    pub resources: bool,
    pub before: Arc<Catalog>,
    pub after: Arc<Catalog>,
}

impl CatalogChange {
    /// The URIs among `uris` whose serving build changed (another component
    /// or sha256, or none any more): their contents may have changed.
    pub fn updated_uris<'a>(&self, uris: impl IntoIterator<Item = &'a String>) -> Vec<String> {
        let serving = |c: &Catalog, uri: &str| c.resolve_uri(uri).map(|c| c.digest.clone());
        uris.into_iter()
            .filter(|uri| serving(&self.before, uri) != serving(&self.after, uri))
            .cloned()
            .collect()
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
    changes: broadcast::Sender<CatalogChange>,
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

    /// Swap in a new catalog and tell subscribers what changed: the tool list
    /// (always), the prompt and resource lists (when they differ).
    pub fn replace(&self, catalog: Catalog) {
        set_loaded_gauge(&catalog);
        let after = Arc::new(catalog);
        let before = std::mem::replace(
            &mut *self.current.write().unwrap_or_else(|e| e.into_inner()),
            after.clone(),
        );
        let change = CatalogChange {
            tools: true,
            prompts: before.prompt_list() != after.prompt_list(),
            resources: before.resource_list() != after.resource_list(),
            before,
            after,
        };
        let _ = self.changes.send(change);
    }

    /// Tell subscribers the tool list changed outside the catalog (tools the
    /// server adds itself, e.g. the conformance suite's diagnostics).
    pub fn announce_change(&self) {
        let now = self.snapshot();
        let _ = self.changes.send(CatalogChange {
            tools: true,
            prompts: false,
            resources: false,
            before: now.clone(),
            after: now,
        });
    }

    /// Tell subscribers the prompt list changed outside the catalog (the
    /// conformance suite's diagnostics).
    pub fn announce_prompt_change(&self) {
        let now = self.snapshot();
        let _ = self.changes.send(CatalogChange {
            tools: false,
            prompts: true,
            resources: false,
            before: now.clone(),
            after: now,
        });
    }

    /// Notified after every [`LiveCatalog::replace`] and [`LiveCatalog::announce_change`].
    pub fn subscribe(&self) -> broadcast::Receiver<CatalogChange> {
        self.changes.subscribe()
    }
}
