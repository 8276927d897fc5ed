//! Gives every build of the host an identity, so caches of derived data (component
//! descriptions) written by one build are never read by another whose mapping
//! rules may differ. Cargo reruns this whenever a file of the package changes.

fn main() {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    println!(
        "cargo:rustc-env=MCPPLUS_BUILD_ID={}-{nanos:x}",
        std::env::var("CARGO_PKG_VERSION").unwrap_or_default()
    );
}
