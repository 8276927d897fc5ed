//! Gives every build of the server an identity (`mcpplus_build_info{build_id}`),
//! new whenever a file of the server or of any crate under crates/ changes.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=../crates");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    println!(
        "cargo:rustc-env=MCPPLUS_BUILD_ID={}-{nanos:x}",
        std::env::var("CARGO_PKG_VERSION").unwrap_or_default()
    );
}
