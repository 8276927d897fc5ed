//! How long Cranelift takes to compile a component under each optimisation
//! level, with and without parallel compilation (docs/performance.md, "Cold
//! start"). Usage: `cargo run --release -p mcpplus-runtime --example
//! compile_options -- guest-tools/dist/py_stats.wasm [reps]`.

use std::time::Instant;

use wasmtime::{Config, Engine, OptLevel};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .ok_or_else(|| anyhow::anyhow!("usage: compile_options COMPONENT.wasm [reps]"))?;
    let reps: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(1);
    let bytes = std::fs::read(&path)?;
    println!("| opt level | parallel | compile s (min of {reps}) | code bytes |");
    println!("|---|---|---:|---:|");
    for (name, level) in [
        ("none", OptLevel::None),
        ("speed (default)", OptLevel::Speed),
        ("speed_and_size", OptLevel::SpeedAndSize),
    ] {
        for parallel in [true, false] {
            let mut config = Config::new();
            config
                .wasm_component_model(true)
                .epoch_interruption(true)
                .cranelift_opt_level(level)
                .parallel_compilation(parallel);
            let engine = Engine::new(&config)?;
            let mut best = f64::INFINITY;
            let mut size = 0;
            for _ in 0..reps {
                let started = Instant::now();
                let compiled = engine.precompile_component(&bytes)?;
                best = best.min(started.elapsed().as_secs_f64());
                size = compiled.len();
            }
            println!("| {name} | {parallel} | {best:.2} | {size} |");
        }
    }
    Ok(())
}
