//! The state one call's `Store` holds: the guest's WASI context built from its
//! policy, who is calling (for audit events), and its limits. This is the whole
//! of what a guest can reach; nothing is shared between calls.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, StoreLimits};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpView};

use super::observer::CallObserver;
use super::output::CappedOutput;
use crate::capabilities::client::{Asked, ClientLink};
use crate::capabilities::logging::LogBudget;
use crate::capabilities::peers::PeerNetwork;
use crate::capabilities::{CallContext, sockets};
use crate::outbound::Outbound;
use crate::outbound::wasi::GuestHttp;
use mcpplus_policy::config::{CallLimits, GuestLogLevel};
use mcpplus_policy::{ClientGrants, FileAccess, PeerGrants, Policy, QueueGrants, WorkflowGrants};
use mcpplus_queue::service::QueueService;
use mcpplus_workflow::Workflows;

/// What this node runs besides the sandbox, when it runs them: the task
/// queue (`mcpplus serve --data-dir`), the workflows that run on it, and the
/// mesh (`[mesh]`).
#[derive(Default)]
pub struct NodeServices {
    pub queue: Option<Arc<QueueService>>,
    pub peers: Option<Arc<dyn PeerNetwork>>,
    pub workflows: Option<Arc<Workflows>>,
}

pub struct HostState {
    wasi: WasiParts,
    http: GuestHttp,
    /// The task queue (when this process runs one) and what the policy grants of it.
    queue: Option<Arc<QueueService>>,
    queue_grants: QueueGrants,
    /// The mesh (when this node is in one) and what the policy grants of it.
    peers: Option<Arc<dyn PeerNetwork>>,
    peer_grants: PeerGrants,
    /// The workflow engine (when this process runs one) and what the policy grants of it.
    workflows: Option<Arc<Workflows>>,
    workflow_grants: WorkflowGrants,
    /// The MCP client that made the call (none for queue tasks), what the
    /// policy grants of it, and what this run has asked.
    client: Option<Arc<dyn ClientLink>>,
    client_grants: ClientGrants,
    client_asked: Asked,
    call: Arc<CallContext>,
    pub limits: TrackedLimits,
    guest_io: GuestIo,
}

/// Guest logging and progress for one call: the level kept, the rate budget,
/// and where signals for the client go.
pub struct GuestIo {
    pub min_level: GuestLogLevel,
    pub budget: LogBudget,
    pub observer: Option<CallObserver>,
    pub progress: crate::capabilities::progress::ProgressGate,
}

/// The store's limits, remembering the largest memory the guest grew to.
pub struct TrackedLimits {
    inner: StoreLimits,
    pub peak_memory: usize,
}

impl ResourceLimiter for TrackedLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.inner.memory_growing(current, desired, maximum)?;
        if allowed {
            self.peak_memory = self.peak_memory.max(desired);
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// The WASI context and resource table, apart from the rest so a binding can
/// borrow them next to the call context.
pub struct WasiParts {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl WasiView for WasiParts {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// The guest's captured stdout and stderr (never the process's own stdout, which
/// carries the MCP protocol on stdio).
pub struct CapturedOutput {
    pub stdout: CappedOutput,
    pub stderr: CappedOutput,
}

impl HostState {
    /// A WASI context with exactly the policy's grants: its directories as
    /// preopens, its variables, its socket addresses; nothing else. No stdin;
    /// stdout and stderr go to bounded in-memory captures that drop (and count)
    /// what does not fit. Fails when a granted directory cannot be opened.
    pub fn new(
        limits: StoreLimits,
        call_limits: &CallLimits,
        policy: &Arc<Policy>,
        call: Arc<CallContext>,
        observer: Option<CallObserver>,
        outbound: Arc<Outbound>,
        services: NodeServices,
    ) -> Result<(Self, CapturedOutput), String> {
        let NodeServices {
            queue,
            peers,
            workflows,
        } = services;
        let output_capacity = call_limits.output_bytes;
        let output = CapturedOutput {
            stdout: CappedOutput::new(output_capacity),
            stderr: CappedOutput::new(output_capacity),
        };
        let mut builder = WasiCtxBuilder::new();
        builder
            .stdout(output.stdout.clone())
            .stderr(output.stderr.clone());
        for grant in &policy.files {
            let perms = match grant.access {
                FileAccess::ReadOnly => FsPerms::ReadOnly,
                FileAccess::ReadWrite => FsPerms::ReadWrite,
            };
            builder
                .preopened_dir(&grant.host, &grant.guest, perms)
                .map_err(|e| {
                    format!(
                        "the granted directory {} cannot be opened: {e:#}",
                        grant.host.display()
                    )
                })?;
        }
        for var in &policy.env {
            if let Some(value) = &var.value {
                builder.env(&var.name, value);
            }
        }
        sockets::configure(&mut builder, policy.clone(), call.clone());
        let client = observer.as_ref().and_then(|o| o.client.clone());
        let deadline = std::time::Instant::now() + call_limits.timeout;
        let http = GuestHttp::new(outbound, policy.clone(), call.clone(), deadline);
        Ok((
            Self {
                wasi: WasiParts {
                    ctx: builder.build(),
                    table: ResourceTable::new(),
                },
                http,
                queue,
                queue_grants: policy.queue,
                peers,
                peer_grants: policy.peers,
                workflows,
                workflow_grants: policy.workflow,
                client,
                client_grants: policy.client,
                client_asked: Asked::default(),
                call,
                limits: TrackedLimits {
                    inner: limits,
                    peak_memory: 0,
                },
                guest_io: GuestIo {
                    min_level: call_limits.log_level,
                    budget: LogBudget::new(call_limits.log_lines_per_second),
                    observer,
                    progress: Default::default(),
                },
            },
            output,
        ))
    }

    pub fn queue_service(&self) -> Option<&Arc<QueueService>> {
        self.queue.as_ref()
    }

    pub fn queue_grants(&self) -> QueueGrants {
        self.queue_grants
    }

    pub fn peer_network(&self) -> Option<&Arc<dyn PeerNetwork>> {
        self.peers.as_ref()
    }

    pub fn peer_grants(&self) -> PeerGrants {
        self.peer_grants
    }

    pub fn workflow_engine(&self) -> Option<&Arc<Workflows>> {
        self.workflows.as_ref()
    }

    pub fn workflow_grants(&self) -> WorkflowGrants {
        self.workflow_grants
    }

    pub fn client_link(&self) -> Option<&Arc<dyn ClientLink>> {
        self.client.as_ref()
    }

    pub fn client_grants(&self) -> ClientGrants {
        self.client_grants
    }

    /// What this run has asked the client so far.
    pub fn client_asked(&mut self) -> &mut Asked {
        &mut self.client_asked
    }

    /// Who is calling, for audit events.
    pub fn call(&self) -> &CallContext {
        &self.call
    }

    pub fn guest_io(&mut self) -> &mut GuestIo {
        &mut self.guest_io
    }

    /// The WASI parts and the call context, borrowed together.
    pub fn wasi_and_call(&mut self) -> (&mut WasiParts, &CallContext) {
        (&mut self.wasi, &self.call)
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.wasi.ctx()
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http.ctx,
            table: &mut self.wasi.table,
            hooks: &mut self.http.hooks,
        }
    }
}
