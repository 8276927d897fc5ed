//! The process-wide wasmtime engine, its linker, and the epoch ticker that lets a
//! running guest be interrupted (deadlines, cancellation).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::StoreContextMut;
use wasmtime::component::types::ComponentFunc;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker, Val};
use wasmtime::{Config, Engine};

use super::cache::CompileCache;
use super::call::CallLimits;
use super::host_state::HostState;
use super::loaded::{LoadError, LoadedComponent};

/// How often the epoch advances; a guest in a tight loop yields this often.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    cache: Option<CompileCache>,
    limits: CallLimits,
    _ticker: EpochTicker,
}

impl Runtime {
    /// Build the engine. `cache` = `None` compiles every component from scratch.
    pub fn new(cache: Option<CompileCache>, limits: CallLimits) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .parallel_compilation(true);
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        let ticker = EpochTicker::start(engine.clone());
        Ok(Self {
            engine,
            linker,
            cache,
            limits,
            _ticker: ticker,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn limits(&self) -> &CallLimits {
        &self.limits
    }

    pub(crate) fn cache(&self) -> Option<&CompileCache> {
        self.cache.as_ref()
    }

    /// A linker for one component: the host's interfaces, plus a trapping stub for
    /// every other import the host does not provide, so the component still loads
    /// and only a call that reaches the missing import fails (with its name).
    ///
    /// WASI imports are left to the real WASI linker, whose semver matching lets a
    /// component built against a newer 0.2.x patch release use our 0.2 host.
    pub(crate) fn linker_for(&self, component: &Component) -> wasmtime::Result<Linker<HostState>> {
        let mut linker = self.linker.clone();
        for (name, item) in component.component_type().imports(&self.engine) {
            if name.starts_with("wasi:") {
                continue;
            }
            match item.ty {
                ComponentItem::ComponentInstance(instance) => {
                    let mut stub = linker.instance(name)?;
                    for (func, item) in instance.exports(&self.engine) {
                        if matches!(item.ty, ComponentItem::ComponentFunc(_)) {
                            stub.func_new(func, missing_import(format!("{name}#{func}")))?;
                        }
                    }
                }
                ComponentItem::ComponentFunc(_) => linker
                    .root()
                    .func_new(name, missing_import(name.to_string()))?,
                _ => {}
            }
        }
        Ok(linker)
    }

    /// Compile (or fetch from cache), describe and prepare the component at `path`.
    pub fn load_file(&self, path: &Path) -> Result<LoadedComponent, LoadError> {
        LoadedComponent::load_file(self, path)
    }
}

/// A host function that fails the call, naming the import the host lacks.
fn missing_import(
    name: String,
) -> impl Fn(StoreContextMut<'_, HostState>, ComponentFunc, &[Val], &mut [Val]) -> wasmtime::Result<()>
+ Send
+ Sync
+ 'static {
    move |_, _, _, _| {
        Err(wasmtime::format_err!(
            "the component called `{name}`, an import this host does not provide"
        ))
    }
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("mcpplus-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawning the epoch ticker thread");
        Self { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
