//! Host-side bindings of the `mcpplus:host` interfaces, generated from wit/.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "mcpplus:host/tool",
});

pub use self::mcpplus::host::{log, progress};
