//! Host-side bindings of the `mcpplus:host` interfaces, generated from wit/.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "mcpplus:host/tool",
});

pub use mcpplus::host::{log, progress};
