//! The crate graph of docs/architecture.md, checked: every dependency between
//! our crates points to a lower layer, and the crates below the runtime do not
//! pull in wasmtime (so `cargo test -p mcpplus-queue` builds no WebAssembly).

use std::collections::BTreeSet;
use std::process::Command;

/// Our crates, lowest layer first (docs/architecture.md, "Crates").
const LAYERS: &[&str] = &[
    "mcpplus-breaker",
    "mcpplus-telemetry",
    "mcpplus-schema",
    "mcpplus-policy",
    "mcpplus-queue",
    "mcpplus-workflow",
    "mcpplus-mesh",
    "mcpplus-runtime",
    "mcpplus",
];

/// The packages `crate_name` depends on (normal dependencies, this platform):
/// the direct ones with `direct`, else all of them.
fn dependencies(crate_name: &str, direct: bool) -> BTreeSet<String> {
    let mut args = vec![
        "tree",
        "--locked",
        "--offline",
        "-e",
        "normal",
        "--prefix",
        "none",
        "--format",
        "{p}",
        "-p",
        crate_name,
    ];
    if direct {
        args.extend(["--depth", "1"]);
    }
    let out = Command::new(env!("CARGO"))
        .args(&args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1) // the crate itself
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn every_dependency_between_our_crates_points_down_a_layer() {
    let layer = |name: &str| LAYERS.iter().position(|l| *l == name);
    for crate_name in LAYERS {
        let mine = layer(crate_name).unwrap();
        for dep in dependencies(crate_name, true) {
            if !dep.starts_with("mcpplus") {
                continue;
            }
            let theirs = layer(&dep).unwrap_or_else(|| panic!("{dep} is not in LAYERS"));
            assert!(
                theirs < mine,
                "{crate_name} depends on {dep}, which is not in a lower layer"
            );
        }
    }
}

#[test]
fn the_crates_below_the_runtime_build_no_wasmtime() {
    for crate_name in [
        "mcpplus-breaker",
        "mcpplus-telemetry",
        "mcpplus-policy",
        "mcpplus-queue",
        "mcpplus-workflow",
    ] {
        let wasm: Vec<String> = dependencies(crate_name, false)
            .into_iter()
            .filter(|d| d.starts_with("wasmtime") || d.starts_with("cranelift"))
            .collect();
        assert!(wasm.is_empty(), "{crate_name} pulls in {wasm:?}");
    }
}
