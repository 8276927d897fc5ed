//! The operator config (`mcpplus.toml`): parsed and checked, or refused with
//! an error naming the line; never a panic. A config that parses resolves
//! limits for any tool.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(config) = mcpplus_policy::config::OperatorConfig::parse(text) {
        let base = mcpplus_policy::config::CallLimits::default();
        let none = mcpplus_policy::config::LimitOverrides::default();
        let _ = config.limits_for(&base, "c", &none, "t");
        let _ = config.max_memory_bytes(&base);
    }
});
