//! wasi:sockets under the policy's `[sockets]` grants.
//!
//! wasmtime-wasi asks a check function before every bind, listen, accept,
//! connect and send; ours allows exactly the granted addresses and records every
//! refusal. Name lookup is off unless granted; a component that imports it
//! without the grant gets a lookup that fails with `access-denied` (and an audit
//! event) instead of wasmtime-wasi's silent resolver failure.

use std::net::SocketAddr;
use std::sync::Arc;

use wasmtime::component::types::{ComponentFunc, ComponentItem};
use wasmtime::component::{Linker, Val};
use wasmtime::{Engine, StoreContextMut};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::sockets::SocketAddrUse;

use super::CallContext;
use super::stubs::{SharedResources, StubReason, stub_import};
use crate::host_state::HostState;
use mcpplus_policy::imports::Capability;
use mcpplus_policy::{Policy, SocketGrants};

/// Whether `grants` allow `usage` of `addr`.
pub fn allows(grants: &SocketGrants, addr: SocketAddr, usage: SocketAddrUse) -> bool {
    let listed = |list: &[mcpplus_policy::SocketPattern]| list.iter().any(|p| p.allows(addr));
    match usage {
        // An implicit bind (wildcard address, port 0) comes before every connect,
        // listen and send, each of which is checked on its own; refusing it here
        // would hide the address the guest was really after.
        SocketAddrUse::TcpBind | SocketAddrUse::UdpBind
            if addr.ip().is_unspecified() && addr.port() == 0 =>
        {
            true
        }
        SocketAddrUse::TcpBind | SocketAddrUse::UdpBind | SocketAddrUse::TcpListen => {
            listed(&grants.bind)
        }
        SocketAddrUse::TcpAccept => !grants.bind.is_empty(),
        _ => listed(&grants.connect),
    }
}

/// Install the address check for one call.
pub fn configure(builder: &mut WasiCtxBuilder, policy: Arc<Policy>, call: Arc<CallContext>) {
    // Sockets may be created; every bind, connect and send then goes through the
    // address check below, which is where refusals are decided and recorded.
    builder
        .allow_tcp(true)
        .allow_udp(true)
        .allow_ip_name_lookup(policy.sockets.name_lookup);
    builder.socket_addr_check(move |addr, usage| {
        let allowed = allows(&policy.sockets, addr, usage);
        if !allowed {
            call.deny(
                Capability::Sockets,
                &format!("{usage:?} {addr}"),
                "the address is not in the policy's [sockets] grants",
            );
        }
        Box::pin(async move { allowed })
    });
}

/// Link the component's `ip-name-lookup` import (at its exact name, ahead of
/// wasmtime-wasi's) as a refusal, for components whose policy does not grant
/// name lookup.
pub fn deny_name_lookup(
    linker: &mut Linker<HostState>,
    engine: &Engine,
    import: &str,
    item: &ComponentItem,
    shared: &SharedResources,
) -> wasmtime::Result<()> {
    // The import may carry the exact version wasmtime-wasi defines; replace it.
    linker.allow_shadowing(true);
    let result = stub_import(
        linker,
        engine,
        import,
        item,
        shared,
        StubReason::Denied(Capability::Sockets),
    )
    .and_then(|()| {
        linker
            .instance(import)?
            .func_new_async("resolve-addresses", refuse_lookup)
    });
    linker.allow_shadowing(false);
    result
}

fn refuse_lookup<'a>(
    mut store: StoreContextMut<'a, HostState>,
    _: ComponentFunc,
    args: &'a [Val],
    results: &'a mut [Val],
) -> Box<dyn Future<Output = wasmtime::Result<()>> + Send + 'a> {
    Box::new(async move {
        let name = match args.get(1) {
            Some(Val::String(s)) => s.as_str(),
            _ => "",
        };
        store.data().call().deny(
            Capability::Sockets,
            &format!("name lookup {name}"),
            "the policy does not grant [sockets] name_lookup",
        );
        // The borrowed `network` handle must be released before returning.
        if let Some(Val::Resource(network)) = args.first() {
            network.resource_drop_async(&mut store).await?;
        }
        results[0] = Val::Result(Err(Some(Box::new(Val::Enum("access-denied".into())))));
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcpplus_policy::SocketPattern;

    #[test]
    fn only_granted_addresses_pass() {
        let none = SocketGrants::default();
        let addr: SocketAddr = "127.0.0.1:5432".parse().unwrap();
        let wildcard: SocketAddr = "0.0.0.0:0".parse().unwrap();
        assert!(!allows(&none, addr, SocketAddrUse::TcpConnect));
        assert!(allows(&none, wildcard, SocketAddrUse::TcpBind));
        assert!(!allows(&none, wildcard, SocketAddrUse::TcpListen));

        let grants = SocketGrants {
            connect: vec![SocketPattern::parse("127.0.0.1:5432").unwrap()],
            ..SocketGrants::default()
        };
        assert!(allows(&grants, addr, SocketAddrUse::TcpConnect));
        assert!(allows(&grants, wildcard, SocketAddrUse::TcpBind));
        assert!(!allows(
            &grants,
            "127.0.0.1:22".parse().unwrap(),
            SocketAddrUse::TcpConnect
        ));
        assert!(!allows(
            &grants,
            "10.0.0.1:5432".parse().unwrap(),
            SocketAddrUse::UdpSend
        ));
        assert!(!allows(
            &grants,
            "0.0.0.0:8080".parse().unwrap(),
            SocketAddrUse::TcpBind
        ));
        assert!(!allows(&grants, addr, SocketAddrUse::TcpListen));
    }
}
