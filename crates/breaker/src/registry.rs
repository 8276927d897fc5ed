//! One breaker per destination, created on first use and shared by every caller.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use super::{Breaker, BreakerConfig, Snapshot, Transition};

/// Breakers kept at most: a wildcard grant (`https://*.example.com`) lets a
/// guest name endless destinations, and each would otherwise get one for ever.
pub const MAX_BREAKERS: usize = 1024;

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
        if breakers.len() >= MAX_BREAKERS && !breakers.contains_key(name) {
            // Forget a healthy one nobody is using (it starts closed again if
            // needed); open ones are kept, they protect a failing destination.
            let now = Instant::now();
            let idle = breakers
                .iter()
                .find(|(_, b)| {
                    let s = b.snapshot(now);
                    s.state == super::State::Closed && s.in_flight == 0
                })
                .map(|(n, _)| n.clone());
            match idle {
                Some(evicted) => {
                    breakers.remove(&evicted);
                }
                // Every breaker is open or busy: this destination gets one
                // of its own for this request, not kept.
                None => {
                    let config = self.overrides.get(name).unwrap_or(&self.defaults).clone();
                    return (Breaker::new(name, config, self.listener.clone()), false);
                }
            }
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_never_holds_more_than_its_bound() {
        let registry = BreakerRegistry::new(BreakerConfig::default(), BTreeMap::new(), None);
        for i in 0..MAX_BREAKERS + 100 {
            registry.get_new(&format!("https://h{i}.example.com:443"));
        }
        assert_eq!(registry.list(Instant::now()).len(), MAX_BREAKERS);
    }
}
