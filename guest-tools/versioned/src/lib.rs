//! Answers with the version it was built as, so a test can tell which build
//! served a call.

wit_bindgen::generate!({ world: "versioned", path: "wit" });

const VERSION: &str = match option_env!("MCPPLUS_FIXTURE_VERSION") {
    Some(v) => v,
    None => "unversioned",
};

struct Versioned;

impl Guest for Versioned {
    fn version() -> String {
        VERSION.to_string()
    }

    fn slow_version(ms: u32) -> String {
        std::thread::sleep(std::time::Duration::from_millis(ms.into()));
        VERSION.to_string()
    }
}

export!(Versioned);
