//! Imports the component may not use get a stand-in that fails the call with a
//! message saying why and what to do, so the component still loads and its other
//! tools keep working. A denied capability also leaves an audit event.

use wasmtime::component::types::{ComponentFunc, ComponentItem};
use wasmtime::component::{Linker, LinkerInstance, ResourceType, Val};
use wasmtime::{Engine, StoreContextMut};

use super::ImportRefused;
use crate::host_state::HostState;
use mcpplus_policy::imports::Capability;

/// Why an import gets a stand-in.
#[derive(Debug, Clone, Copy)]
pub enum StubReason {
    /// The host has no such interface.
    NotProvided,
    /// The policy does not grant the capability.
    Denied(Capability),
    /// Granted, but this host does not implement the interface yet.
    NotYetAvailable(Capability),
}

/// A resource type the stand-ins hand out (never, as every function fails).
struct Unavailable;

/// Resources the component imports from interfaces the host does link for real,
/// which a stubbed interface may re-export (`use wasi:io/poll.{pollable}`): as
/// (the component's view of the type, the host type it is linked to).
#[derive(Default)]
pub struct SharedResources(Vec<(ResourceType, ResourceType)>);

impl SharedResources {
    /// Collect the wasi:io and wasi:sockets/network resources among the component's imports.
    pub fn of(component: &wasmtime::component::Component, engine: &Engine) -> Self {
        use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, IoError, Network};
        let mut shared = Vec::new();
        for (name, item) in component.component_type().imports(engine) {
            let ComponentItem::ComponentInstance(instance) = item.ty else {
                continue;
            };
            let interface = name.split('@').next().unwrap_or(name);
            for (export, item) in instance.exports(engine) {
                let ComponentItem::Resource(ty) = item.ty else {
                    continue;
                };
                let host = match (interface, export) {
                    ("wasi:io/poll", "pollable") => ResourceType::host::<DynPollable>(),
                    ("wasi:io/streams", "input-stream") => ResourceType::host::<DynInputStream>(),
                    ("wasi:io/streams", "output-stream") => ResourceType::host::<DynOutputStream>(),
                    ("wasi:io/error", "error") => ResourceType::host::<IoError>(),
                    ("wasi:sockets/network", "network") => ResourceType::host::<Network>(),
                    _ => continue,
                };
                shared.push((ty, host));
            }
        }
        SharedResources(shared)
    }

    fn host_type(&self, ty: &ResourceType) -> Option<ResourceType> {
        self.0.iter().find(|(t, _)| t == ty).map(|(_, h)| *h)
    }
}

/// Define every function (and resource) of import `name` as a failing stand-in.
pub fn stub_import(
    linker: &mut Linker<HostState>,
    engine: &Engine,
    name: &str,
    item: &ComponentItem,
    shared: &SharedResources,
    reason: StubReason,
) -> wasmtime::Result<()> {
    match item {
        ComponentItem::ComponentInstance(instance) => {
            let mut stub = linker.instance(name)?;
            for (export, item) in instance.exports(engine) {
                let full_name = format!("{name}#{export}");
                define(&mut stub, export, &item.ty, &full_name, shared, reason)?;
            }
            Ok(())
        }
        other => define(&mut linker.root(), name, other, name, shared, reason),
    }
}

fn define(
    instance: &mut LinkerInstance<'_, HostState>,
    export: &str,
    item: &ComponentItem,
    full_name: &str,
    shared: &SharedResources,
    reason: StubReason,
) -> wasmtime::Result<()> {
    match item {
        ComponentItem::ComponentFunc(_) => {
            instance.func_new(export, failing(full_name.to_string(), reason))
        }
        ComponentItem::Resource(ty) => {
            let host = shared
                .host_type(ty)
                .unwrap_or(ResourceType::host::<Unavailable>());
            instance.resource(export, host, |_, _| Ok(()))
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
        Err(wasmtime::Error::new(ImportRefused(match reason {
            StubReason::NotProvided => {
                format!("the component called `{name}`, an import this host does not provide")
            }
            StubReason::Denied(capability) => {
                let call = store.data().call();
                call.deny(
                    capability,
                    &name,
                    "the policy does not grant this capability",
                );
                format!(
                    "permission denied: `{name}` needs the `{}` capability, which the policy of component `{}` does not grant; to allow it, {}",
                    capability.as_str(),
                    call.component,
                    capability.how_to_grant()
                )
            }
            StubReason::NotYetAvailable(capability) => format!(
                "the component called `{name}`: its policy grants the `{}` capability, but this host does not implement that interface yet",
                capability.as_str()
            ),
        })))
    }
}
