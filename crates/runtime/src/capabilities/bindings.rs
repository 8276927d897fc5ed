//! Host-side bindings of the `mcpplus:host` interfaces, generated from wit/.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "mcpplus:host/host-imports",
    imports: {
        "mcpplus:host/queue": async,
        "mcpplus:host/peers": async,
        "mcpplus:host/workflow": async,
        "mcpplus:host/client": async,
    },
});

pub use self::mcpplus::host::{client, log, peers, progress, queue, workflow};
