//! The process-wide wasmtime engine, its linker, and the epoch ticker that lets a
//! running guest be interrupted (deadlines, cancellation).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine};

use super::admission::Admission;
use super::cache::CompileCache;
use super::host_state::HostState;
use super::loaded::{LoadError, LoadedComponent};
use crate::capabilities::peers::PeerNetwork;
use crate::capabilities::{
    self, sockets,
    stubs::{SharedResources, StubReason, stub_import},
};
use crate::outbound::Outbound;
use mcpplus_policy::config::{CallLimits, OperatorConfig};
use mcpplus_policy::imports::{self, Capability, ImportClass};
use mcpplus_policy::{Policy, PolicyError};
use mcpplus_queue::service::QueueService;
use mcpplus_workflow::Workflows;
use wasmtime::{InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances; a guest in a tight loop yields this often.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    /// `linker` plus wasi:http, for components whose policy grants network access.
    http_linker: Linker<HostState>,
    outbound: Arc<Outbound>,
    /// The task queue, once `serve` has opened it.
    queue: std::sync::OnceLock<Arc<QueueService>>,
    /// The mesh, once `serve` has joined one.
    peers: std::sync::OnceLock<Arc<dyn PeerNetwork>>,
    /// The workflow engine, once `serve` has opened the queue it runs on.
    workflows: std::sync::OnceLock<Arc<Workflows>>,
    cache: Option<CompileCache>,
    /// Built-in defaults with the command-line flags applied.
    base_limits: CallLimits,
    config: OperatorConfig,
    admission: Admission,
    allocator: Allocator,
    _ticker: EpochTicker,
}

/// Which instance allocator the engine ended up with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocator {
    Pooling,
    OnDemand,
}

/// How the runtime is set up.
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
    pub cache: Option<std::path::PathBuf>,
    pub base_limits: CallLimits,
    pub config: OperatorConfig,
    /// Use on-demand allocation even where pooling would work (for comparison).
    pub no_pooling: bool,
}

impl Runtime {
    /// Build the engine: the pooling allocator sized for the configured limits,
    /// falling back to on-demand allocation (with a logged reason) when the address
    /// space cannot be reserved.
    pub fn new(options: RuntimeOptions) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .parallel_compilation(true);
        let (engine, allocator) = if options.no_pooling {
            (Engine::new(&config)?, Allocator::OnDemand)
        } else {
            let mut pooled = config.clone();
            pooled.allocation_strategy(pooling_config(&options));
            match Engine::new(&pooled) {
                Ok(engine) => (engine, Allocator::Pooling),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "pooling allocator unavailable; using on-demand allocation");
                    (Engine::new(&config)?, Allocator::OnDemand)
                }
            }
        };
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        capabilities::filesystem::add_to_linker(&mut linker)?;
        use capabilities::bindings::{client, log, peers, progress, queue, workflow};
        use wasmtime::component::HasSelf;
        log::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
        progress::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
        queue::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
        peers::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
        workflow::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
        client::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?;
        let mut http_linker = linker.clone();
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut http_linker)?;
        let outbound = Outbound::new(options.config.outbound.clone())
            .map_err(|e| anyhow::anyhow!("the operator config's [outbound] section: {e}"))?;
        let ticker = EpochTicker::start(engine.clone());
        Ok(Self {
            engine,
            linker,
            http_linker,
            outbound: Arc::new(outbound),
            queue: std::sync::OnceLock::new(),
            peers: std::sync::OnceLock::new(),
            workflows: std::sync::OnceLock::new(),
            cache: options.cache.and_then(|dir| match CompileCache::open(dir) {
                Ok(cache) => Some(cache),
                Err(e) => {
                    tracing::warn!(event = "cache.refused", "{e}");
                    None
                }
            }),
            admission: Admission::new(&options.config.server),
            base_limits: options.base_limits,
            config: options.config,
            allocator,
            _ticker: ticker,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn allocator(&self) -> Allocator {
        self.allocator
    }

    pub fn config(&self) -> &OperatorConfig {
        &self.config
    }

    /// The outbound HTTP service every tool's wasi:http requests go through.
    pub fn outbound(&self) -> &Arc<Outbound> {
        &self.outbound
    }

    /// Give tools the task queue (`mcpplus:host/queue`). Once per runtime.
    pub fn attach_queue(&self, queue: Arc<QueueService>) -> Result<(), Arc<QueueService>> {
        self.queue.set(queue)
    }

    /// The task queue, when this process runs one.
    pub fn queue(&self) -> Option<&Arc<QueueService>> {
        self.queue.get()
    }

    /// Give tools the mesh (`mcpplus:host/peers`). Once per runtime.
    pub fn attach_peers(&self, peers: Arc<dyn PeerNetwork>) -> bool {
        self.peers.set(peers).is_ok()
    }

    /// The mesh, when this node is in one.
    pub fn peers(&self) -> Option<&Arc<dyn PeerNetwork>> {
        self.peers.get()
    }

    /// Give tools the workflow engine (`mcpplus:host/workflow`). Once per runtime.
    pub fn attach_workflows(&self, workflows: Arc<Workflows>) -> bool {
        self.workflows.set(workflows).is_ok()
    }

    /// The workflow engine, when this process runs one.
    pub fn workflows(&self) -> Option<&Arc<Workflows>> {
        self.workflows.get()
    }

    /// The limits a call of `tool` of `component` runs under.
    pub fn limits_for(&self, component: &LoadedComponent, tool: &str) -> CallLimits {
        self.config.limits_for(
            &self.base_limits,
            &component.name,
            &component.policy.limits,
            tool,
        )
    }

    /// The policy of component `name` at `path` whose sha256 is `digest`.
    pub fn policy_for(&self, name: &str, path: &Path, digest: &str) -> Result<Policy, PolicyError> {
        Policy::for_component(name, path, digest, &self.config)
    }

    /// The largest memory any call may have (what the instance pool is sized for).
    pub fn max_memory_bytes(&self) -> usize {
        self.config.max_memory_bytes(&self.base_limits)
    }

    pub(crate) fn admission(&self) -> &Admission {
        &self.admission
    }

    pub(crate) fn cache(&self) -> Option<&CompileCache> {
        self.cache.as_ref()
    }

    /// A linker for one component under `policy`.
    ///
    /// WASI files, environment and sockets are always linked for real: what the
    /// guest can reach through them is decided per call by its WASI context
    /// (nothing, unless granted), which keeps toolchains that touch them at
    /// start-up (wasi-libc, CPython) working. Every other capability import the
    /// policy does not grant, and every import the host does not offer, is linked
    /// to a stand-in that fails the call saying why, so the component still
    /// loads and only a call that reaches it fails.
    ///
    /// Baseline WASI imports go to the real WASI linker, whose semver matching
    /// lets a component built against a newer 0.2.x patch release use our host.
    pub(crate) fn linker_for(
        &self,
        component: &Component,
        policy: &Policy,
    ) -> wasmtime::Result<Linker<HostState>> {
        let network = Capability::Network.granted_by(policy);
        let mut linker = if network {
            self.http_linker.clone()
        } else {
            self.linker.clone()
        };
        let shared = SharedResources::of(component, &self.engine);
        for (name, item) in component.component_type().imports(&self.engine) {
            let reason = match imports::classify(name) {
                ImportClass::Baseline if name.starts_with("wasi:") || provided_by_host(name) => {
                    continue;
                }
                ImportClass::Baseline | ImportClass::Unknown => StubReason::NotProvided,
                ImportClass::Capability(Capability::Sockets)
                    if name.starts_with("wasi:sockets/ip-name-lookup@")
                        && !policy.sockets.name_lookup =>
                {
                    sockets::deny_name_lookup(&mut linker, &self.engine, name, &item.ty, &shared)?;
                    continue;
                }
                ImportClass::Capability(Capability::Network) if network => continue,
                ImportClass::Capability(Capability::Network) => {
                    StubReason::Denied(Capability::Network)
                }
                ImportClass::Capability(c) if c.implemented() => continue,
                ImportClass::Capability(c) if c.granted_by(policy) => {
                    StubReason::NotYetAvailable(c)
                }
                ImportClass::Capability(c) => StubReason::Denied(c),
            };
            stub_import(&mut linker, &self.engine, name, &item.ty, &shared, reason)?;
        }
        Ok(linker)
    }

    /// Compile (or fetch from cache), describe and prepare the component at `path`.
    pub fn load_file(&self, path: &Path) -> Result<LoadedComponent, LoadError> {
        LoadedComponent::load_file(self, path)
    }
}

/// `mcpplus:host` interfaces with functions that the host links for real.
fn provided_by_host(import: &str) -> bool {
    [
        "mcpplus:host/log@",
        "mcpplus:host/progress@",
        "mcpplus:host/queue@",
        "mcpplus:host/peers@",
        "mcpplus:host/workflow@",
        "mcpplus:host/client@",
    ]
    .iter()
    .any(|p| import.starts_with(p))
}

/// Dirty linear-memory bytes a pool slot resets in place (and keeps resident)
/// after a call; beyond this the rest is decommitted.
const KEEP_RESIDENT_MEMORY: usize = 4 << 20;
/// The same for a slot's tables.
const KEEP_RESIDENT_TABLE: usize = 64 << 10;

/// Pool slots for as many simultaneous calls as the server admits, each slot big
/// enough for the largest configured memory limit.
fn pooling_config(options: &RuntimeOptions) -> InstanceAllocationStrategy {
    let slots = options.config.server.max_concurrency.max(1);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(slots)
        .total_core_instances(slots * 16)
        .total_memories(slots * 4)
        .total_tables(slots * 8)
        .total_stacks(slots)
        .max_core_instances_per_component(64)
        .max_memories_per_component(16)
        .max_tables_per_component(32)
        .max_memories_per_module(2)
        .max_tables_per_module(4)
        .table_elements(100_000)
        .max_core_instance_size(1 << 20)
        .max_component_instance_size(1 << 20)
        .max_memory_size(options.config.max_memory_bytes(&options.base_limits));
    // Resetting a slot for the next call: with Linux's PAGEMAP_SCAN (6.7+;
    // `Auto` falls back to madvise elsewhere) only the pages the call dirtied
    // are copied back from the memory image and stay resident, instead of
    // decommitting the memory (TLB shoot-downs to the other cores) and
    // faulting it back in on the next call. This took the showcase `echo`
    // from ~30 to ~12 µs in-host (docs/performance.md). The keep-resident
    // sizes bound what a slot keeps between calls; unused warm slots are not
    // kept at all, so the slots holding memory are only those that ran
    // concurrently.
    pool.pagemap_scan(wasmtime::Enabled::Auto)
        .linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
        .table_keep_resident(KEEP_RESIDENT_TABLE)
        .max_unused_warm_slots(0);
    InstanceAllocationStrategy::Pooling(pool)
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
