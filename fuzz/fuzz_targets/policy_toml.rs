//! A component's policy file: any text must parse or be refused with an
//! error, never panic, and a policy that parses must describe itself.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let path = std::path::Path::new("/fuzz/tool.policy.toml");
    if let Ok(policy) = mcpplus_policy::Policy::parse(path, text) {
        let _ = format!("{policy:?}");
    }
});
