//! Each catalog tool as an rmcp `Tool`, built once per catalog snapshot.
//!
//! rmcp asks the handler for a tool's input schema on every 2026-07-28 HTTP
//! call (to check `Mcp-Param-*` headers), and `tools/list` wants them all;
//! building a `Tool` (JSON assembled, then deserialised) was ~10% of the
//! HTTP server's CPU per echo call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use rmcp::model::Tool;

use crate::catalog::{Catalog, ToolEntry};

/// The tools built for one snapshot, by name.
type Built = (Weak<Catalog>, HashMap<String, Tool>);

/// Shared by all sessions of one server.
#[derive(Default)]
pub struct ToolCache {
    /// The snapshot the tools were built from. A `Weak` keeps that snapshot's
    /// allocation (not its components) alive, so its address cannot be
    /// reused by a newer snapshot while we compare against it.
    built: Mutex<Option<Built>>,
}

impl ToolCache {
    /// `entry`'s tool from `catalog`, built by `build` if this snapshot has
    /// not built it yet. A newer snapshot discards every older entry.
    pub fn get(
        &self,
        catalog: &Arc<Catalog>,
        entry: &ToolEntry<'_>,
        build: impl FnOnce(&ToolEntry<'_>) -> Tool,
    ) -> Tool {
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        let current =
            matches!(&*built, Some((of, _)) if Weak::ptr_eq(of, &Arc::downgrade(catalog)));
        if !current {
            *built = Some((Arc::downgrade(catalog), HashMap::new()));
        }
        let (_, tools) = built.as_mut().expect("set above");
        // Bounded: at most one entry per tool of the current snapshot.
        tools
            .entry(entry.signature.name.clone())
            .or_insert_with(|| build(entry))
            .clone()
    }
}
