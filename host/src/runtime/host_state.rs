//! The state one call's `Store` holds: the guest's WASI context and its limits.
//! This is the whole of what a guest can reach; nothing is shared between calls.

use wasmtime::StoreLimits;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::output::CappedOutput;

pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limits: StoreLimits,
}

/// The guest's captured stdout and stderr (never the process's own stdout, which
/// carries the MCP protocol on stdio).
pub struct CapturedOutput {
    pub stdout: CappedOutput,
    pub stderr: CappedOutput,
}

impl HostState {
    /// A deny-by-default WASI context: no files, no environment, no sockets, no
    /// stdin; stdout and stderr go to bounded in-memory captures
    /// that drop (and count) what does not fit.
    pub fn new(limits: StoreLimits, output_capacity: usize) -> (Self, CapturedOutput) {
        let output = CapturedOutput {
            stdout: CappedOutput::new(output_capacity),
            stderr: CappedOutput::new(output_capacity),
        };
        let wasi = WasiCtxBuilder::new()
            .stdout(output.stdout.clone())
            .stderr(output.stderr.clone())
            .build();
        (
            Self {
                wasi,
                table: ResourceTable::new(),
                limits,
            },
            output,
        )
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
