//! A component ready to call: compiled, described (its tools and imports), and
//! pre-instantiated so each call only has to create a `Store` and instantiate.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use wasmtime::component::{Component, ComponentExportIndex, InstancePre};

use super::cache::{CacheOutcome, CachedFacts, content_key, digest};
use super::engine::{Allocator, Runtime};
use super::host_state::HostState;
use super::served::{Served, ServedExports, gather_blocking};
use super::tracker::CallTracker;
use mcpplus_policy::{Policy, PolicyError};
use mcpplus_schema::{ComponentDescription, ToolSignature, describe_component};
use mcpplus_telemetry::metrics::{OkCallSeries, metrics};

pub struct LoadedComponent {
    /// The component's name: its file name without `.wasm`.
    pub name: String,
    pub path: PathBuf,
    /// sha256 of the component file, hex.
    pub digest: String,
    pub description: ComponentDescription,
    pub cache: CacheOutcome,
    pub compile_time: std::time::Duration,
    /// What the component is granted (nothing unless a policy says so).
    pub policy: Arc<Policy>,
    /// Calls running on this component (for draining on replace and unload).
    pub calls: CallTracker,
    /// The MCP prompts and resources it serves, listed when it loaded.
    pub served: Served,
    served_exports: ServedExports,
    component: Component,
    pre: InstancePre<HostState>,
    exports: HashMap<String, ComponentExportIndex>,
    /// Per tool, the metric series its successful calls update, resolved on
    /// the first one (creating them at load would list tools never called).
    ok_series: HashMap<String, OnceLock<OkCallSeries>>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read the file: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

impl LoadedComponent {
    pub(crate) fn load_file(runtime: &Runtime, path: &Path) -> Result<Self, LoadError> {
        // Absolute, so the folder watcher and the admin endpoint name it the same way.
        let absolute = std::path::absolute(path);
        let path = absolute.as_deref().unwrap_or(path);
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        let name = component_name(path);
        Self::load_bytes(runtime, &name, path, &bytes)
    }

    pub(crate) fn load_bytes(
        runtime: &Runtime,
        name: &str,
        path: &Path,
        bytes: &[u8],
    ) -> Result<Self, LoadError> {
        let invalid = |message: String| LoadError::Invalid {
            path: path.to_owned(),
            message,
        };
        // A warm start reads the description and sha256 recorded by this build; a
        // cold one computes them while the code is hashed and compiled.
        let key = content_key(bytes);
        let facts = runtime
            .cache()
            .and_then(|c| c.read_facts(runtime.engine(), &key));
        let load_code = || {
            let started = Instant::now();
            match runtime.cache() {
                Some(cache) => cache.load(runtime.engine(), name, bytes, &key),
                None => {
                    Component::new(runtime.engine(), bytes).map(|c| (c, CacheOutcome::Disabled))
                }
            }
            .map(|(component, cache)| (component, cache, started.elapsed()))
        };
        let from_facts = facts.is_some();
        let (description, digest, compiled) = match facts {
            Some(facts) => (Ok(facts.description), facts.sha256, load_code()),
            None => std::thread::scope(|scope| {
                let describing = scope.spawn(|| describe_component(name, bytes));
                let hashing = scope.spawn(|| digest(bytes));
                let compiled = load_code();
                let description = describing.join().expect("describing a component panicked");
                let digest = hashing.join().expect("hashing a component panicked");
                if let (Ok(d), Some(cache)) = (&description, runtime.cache()) {
                    cache.write_facts(
                        runtime.engine(),
                        &key,
                        &CachedFacts::new(digest.clone(), d.clone()),
                    );
                }
                (description, digest, compiled)
            }),
        };
        let description = description.map_err(|e| invalid(e.to_string()))?;
        let (component, cache, compile_time) =
            compiled.map_err(|e| invalid(format!("does not compile: {e:#}")))?;
        let result = match cache {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Disabled => "disabled",
        };
        metrics()
            .compile_cache
            .get_or_create(&vec![("result", result.to_string())])
            .inc();
        let mut digest = digest;
        let mut policy = runtime.policy_for(name, path, &digest);
        // A pinned build is checked against the bytes themselves, never only
        // against a sha256 read from the cache (whoever can write the cache
        // could otherwise make another build pass the pin).
        let pinned = matches!(&policy, Ok(p) if p.sha256.is_some())
            || matches!(&policy, Err(PolicyError::DigestMismatch { .. }));
        if from_facts && pinned {
            let actual = super::cache::digest(bytes);
            if actual != digest {
                tracing::warn!(event = "cache.facts_mismatch", component = %name,
                    "the compile cache's facts do not match the component; its sha256 was recomputed");
                digest = actual;
            }
            policy = runtime.policy_for(name, path, &digest);
        }
        let policy = policy?;
        // Granted environment values are secrets: mask them in every log line.
        mcpplus_telemetry::redact::register_secrets(
            policy.env.iter().filter_map(|e| e.value.as_deref()),
        );
        for var in &policy.env {
            if var.value.as_deref().is_some_and(|v| {
                !v.is_empty() && v.len() < mcpplus_telemetry::redact::MIN_SECRET_LEN
            }) {
                tracing::warn!(event = "policy.short_secret", component = %name, variable = %var.name,
                    min_len = mcpplus_telemetry::redact::MIN_SECRET_LEN,
                    "a granted environment value is too short to be masked in logs; do not use it for a secret");
            }
        }
        // The instance pool is sized before policies beside components are read;
        // a policy may not ask for more memory than a pool slot has.
        if let Some(mib) = policy.limits.memory_mib
            && runtime.allocator() == Allocator::Pooling
            && (mib as usize) << 20 > runtime.max_memory_bytes()
        {
            return Err(invalid(format!(
                "its policy asks for memory_mib = {mib}, above the server's largest limit of {} MiB; raise [limits] memory_mib in the operator config or lower the policy's",
                runtime.max_memory_bytes() >> 20
            )));
        }
        let linker = runtime
            .linker_for(&component, &policy)
            .map_err(|e| invalid(format!("cannot link: {e:#}")))?;
        let pre = linker
            .instantiate_pre(&component)
            .map_err(|e| invalid(format!("cannot link: {e:#}")))?;

        let mut exports = HashMap::new();
        for tool in &description.tools {
            let index = export_index(&component, tool).ok_or_else(|| {
                invalid(format!(
                    "export `{}` not found in the component",
                    tool.export
                ))
            })?;
            exports.insert(tool.name.clone(), index);
        }
        let mut warnings = Vec::new();
        let ok_series = exports
            .keys()
            .map(|t| (t.clone(), OnceLock::new()))
            .collect();
        let served_exports = ServedExports::find(&component, &description, &mut warnings);
        let mut loaded = Self {
            name: name.to_string(),
            path: path.to_owned(),
            digest,
            description,
            cache,
            compile_time,
            policy: Arc::new(policy),
            calls: CallTracker::default(),
            served: Served::default(),
            served_exports,
            component,
            pre,
            exports,
            ok_series,
        };
        // Prompts and resources are listed once, by running the component:
        // a failure is a load warning, never a failed load.
        loaded.served = gather_blocking(runtime, &loaded, &mut warnings);
        loaded.description.warnings.extend(warnings);
        Ok(loaded)
    }

    pub fn tools(&self) -> &[ToolSignature] {
        &self.description.tools
    }

    pub fn tool(&self, name: &str) -> Option<&ToolSignature> {
        self.description.tools.iter().find(|t| t.name == name)
    }

    pub(crate) fn component(&self) -> &Component {
        &self.component
    }

    pub(crate) fn instance_pre(&self) -> &InstancePre<HostState> {
        &self.pre
    }

    pub(crate) fn served_exports(&self) -> &ServedExports {
        &self.served_exports
    }

    /// The series a successful call of `tool` updates (`None`: not a tool).
    pub(crate) fn ok_series(&self, tool: &str) -> Option<&OkCallSeries> {
        let cell = self.ok_series.get(tool)?;
        Some(cell.get_or_init(|| metrics().ok_call_series(tool, &self.name)))
    }

    pub(crate) fn export(&self, tool: &str) -> Option<&ComponentExportIndex> {
        self.exports.get(tool)
    }
}

fn export_index(component: &Component, tool: &ToolSignature) -> Option<ComponentExportIndex> {
    let parent = match &tool.export.interface {
        Some(iface) => Some(component.get_export_index(None, iface)?),
        None => None,
    };
    component.get_export_index(parent.as_ref(), &tool.export.function)
}

/// `tools/text_utils.wasm` → `text_utils`.
pub fn component_name(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "component".into())
}
