//! Imports the component may not use get a stand-in that fails the call with a
//! message saying why and what to do, so the component still loads and its other
//! tools keep working. A denied capability also leaves an audit event.

use wasmtime::component::types::{ComponentFunc, ComponentItem};
use wasmtime::component::{Linker, LinkerInstance, ResourceType, Val};
use wasmtime::{Engine, StoreContextMut};

use crate::policy::imports::Capability;
use crate::runtime::host_state::HostState;

/// Why an import gets a stand-in.
#[derive(Debug, Clone, Copy)]
pub enum StubReason {
    /// The host has no such interface.
    NotProvided,
    /// The policy does not grant the capability.
    Denied(Capability),
    /// Granted, but this host does not implement the interface yet.
    NotImplemented(Capability),
}

/// A resource type the stand-ins hand out (never, as every function fails).
struct Unavailable;

/// Define every function (and resource) of import `name` as a failing stand-in.
pub fn stub_import(
    linker: &mut Linker<HostState>,
    engine: &Engine,
    name: &str,
    item: &ComponentItem,
    reason: StubReason,
) -> wasmtime::Result<()> {
    match item {
        ComponentItem::ComponentInstance(instance) => {
            let mut stub = linker.instance(name)?;
            for (export, item) in instance.exports(engine) {
                define(&mut stub, export, &item.ty, &format!("{name}#{export}"), reason)?;
            }
            Ok(())
        }
        other => define(&mut linker.root(), name, other, name, reason),
    }
}

fn define(
    instance: &mut LinkerInstance<'_, HostState>,
    export: &str,
    item: &ComponentItem,
    full_name: &str,
    reason: StubReason,
) -> wasmtime::Result<()> {
    match item {
        ComponentItem::ComponentFunc(_) => {
            instance.func_new(export, failing(full_name.to_string(), reason))
        }
        ComponentItem::Resource(_) => {
            instance.resource(export, ResourceType::host::<Unavailable>(), |_, _| Ok(()))
        }
        _ => Ok(()),
    }
}

fn failing(
    name: String,
    reason: StubReason,
) -> impl Fn(StoreContextMut<'_, HostState>, ComponentFunc, &[Val], &mut [Val]) -> wasmtime::Result<()>
+ Send
+ Sync
+ 'static {
    move |store, _, _, _| {
        Err(match reason {
            StubReason::NotProvided => wasmtime::format_err!(
                "the component called `{name}`, an import this host does not provide"
            ),
            StubReason::Denied(capability) => {
                let call = store.data().call();
                call.deny(
                    capability,
                    &name,
                    "the policy does not grant this capability",
                );
                wasmtime::format_err!(
                    "permission denied: `{name}` needs the `{}` capability, which the policy of component `{}` does not grant; to allow it, {}",
                    capability.as_str(),
                    call.component,
                    capability.how_to_grant()
                )
            }
            StubReason::NotImplemented(capability) => wasmtime::format_err!(
                "the component called `{name}`: its policy grants the `{}` capability, but this host does not implement that interface yet",
                capability.as_str()
            ),
        })
    }
}
