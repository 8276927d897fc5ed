//! Gives every build of the runtime an identity, so the component descriptions
//! the compile cache keeps (`cache::CachedFacts`) are never read by a build whose
//! mapping rules may differ. The rules live in this crate and in mcpplus-schema,
//! so a change to either makes a new identity.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=../schema/src");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    println!(
        "cargo:rustc-env=MCPPLUS_BUILD_ID={}-{nanos:x}",
        std::env::var("CARGO_PKG_VERSION").unwrap_or_default()
    );
}
