//! Host-side bindings of the `mcpplus:host` interfaces, generated from wit/.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "mcpplus:host/queue-tool",
    imports: { "mcpplus:host/queue": async },
});

pub use self::mcpplus::host::{log, progress, queue};
