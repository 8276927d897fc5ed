//! One breaker per destination, created on first use and shared by every caller.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use super::{Breaker, BreakerConfig, Snapshot, Transition};

/// Called after every state change with the breaker's name.
pub type TransitionListener = Arc<dyn Fn(&str, &Transition) + Send + Sync>;

pub struct BreakerRegistry {
    defaults: BreakerConfig,
    /// Settings for particular destinations, by name.
    overrides: BTreeMap<String, BreakerConfig>,
    listener: Option<TransitionListener>,
    breakers: RwLock<HashMap<String, Arc<Breaker>>>,
}

impl BreakerRegistry {
    pub fn new(
        defaults: BreakerConfig,
        overrides: BTreeMap<String, BreakerConfig>,
        listener: Option<TransitionListener>,
    ) -> Self {
        Self {
            defaults,
            overrides,
            listener,
            breakers: RwLock::new(HashMap::new()),
        }
    }

    /// The breaker for `name` (created closed on first use), and whether this
    /// call created it.
    pub fn get_new(&self, name: &str) -> (Arc<Breaker>, bool) {
        if let Some(b) = self.read().get(name) {
            return (b.clone(), false);
        }
        let mut breakers = self.breakers.write().unwrap_or_else(|e| e.into_inner());
        let mut created = false;
        let breaker = breakers
            .entry(name.to_string())
            .or_insert_with(|| {
                created = true;
                let config = self.overrides.get(name).unwrap_or(&self.defaults).clone();
                Breaker::new(name, config, self.listener.clone())
            })
            .clone();
        (breaker, created)
    }

    /// Every breaker in use, by name.
    pub fn list(&self, now: Instant) -> Vec<(String, Snapshot)> {
        let mut all: Vec<_> = self
            .read()
            .iter()
            .map(|(name, b)| (name.clone(), b.snapshot(now)))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Close the breaker for `name`. `false` when there is none by that name.
    pub fn reset(&self, name: &str) -> bool {
        let breaker = self.read().get(name).cloned();
        breaker.map(|b| b.reset()).is_some()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Arc<Breaker>>> {
        self.breakers.read().unwrap_or_else(|e| e.into_inner())
    }
}
