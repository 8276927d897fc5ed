//! No call sees what an earlier call left behind. Each call gets a fresh
//! instance, but pooled slots are reused and reset in place (only dirtied pages
//! are restored, docs/performance.md), so this checks the reset, not the
//! design: the `leftovers` fixture leaves a mark in a global, in its data
//! segment, in a zero-initialised static and in heap memory, and reports any
//! mark it finds.

use mcpplus_runtime::engine::{Allocator, RuntimeOptions};
use mcpplus_runtime::invoke::{ToolOutcome, invoke};
use mcpplus_runtime::{LoadedComponent, Runtime};
use mcpplus_tests::{Scratch, artifacts};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

fn leftovers(outcome: &ToolOutcome) -> Vec<Value> {
    assert!(!outcome.is_error, "the call failed: {:?}", outcome.content);
    let structured = outcome.structured.as_ref().expect("a structured result");
    structured["result"].as_array().expect("a list").clone()
}

async fn call(runtime: &Runtime, component: &LoadedComponent, mark: &str, kib: u32) -> ToolOutcome {
    let tool = component
        .tool("leftovers")
        .expect("the fixture has `leftovers`");
    let args = json!({"mark": mark, "kib": kib});
    invoke(
        runtime,
        component,
        tool,
        args.as_object(),
        &CancellationToken::new(),
        None,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_call_sees_what_an_earlier_call_left() {
    for pooling in [true, false] {
        let scratch = Scratch::new("isolation");
        let runtime = Runtime::new(RuntimeOptions {
            cache: Some(scratch.compile_cache()),
            no_pooling: !pooling,
            ..RuntimeOptions::default()
        })
        .unwrap();
        if pooling {
            assert_eq!(
                runtime.allocator(),
                Allocator::Pooling,
                "the pool is what this tests"
            );
        }
        let component = runtime.load_file(&artifacts::misbehaving()).unwrap();
        // One after another: the same slot is reused each time.
        for i in 0..200u32 {
            // Heap from nothing to beyond what a slot keeps resident (4 MiB).
            let kib = [0, 4, 64, 1024, 6144][i as usize % 5];
            let found = leftovers(&call(&runtime, &component, &format!("call-{i}"), kib).await);
            assert!(
                found.is_empty(),
                "call {i} (pooling: {pooling}) found {found:?}"
            );
        }
        // Concurrently: many slots in use and reset at once.
        let calls = (0..64u32).map(|i| {
            let (runtime, component) = (&runtime, &component);
            async move { (i, call(runtime, component, &format!("par-{i}"), 256).await) }
        });
        for (i, outcome) in futures::future::join_all(calls).await {
            let found = leftovers(&outcome);
            assert!(
                found.is_empty(),
                "concurrent call {i} (pooling: {pooling}) found {found:?}"
            );
        }
    }
}
