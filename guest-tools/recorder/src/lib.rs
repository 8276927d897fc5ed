//! Test fixture: records each execution in a journal file (granted by policy).

wit_bindgen::generate!({ path: "wit", world: "recorder", generate_all });

use std::io::Write as _;

const JOURNAL: &str = "/journal/executions.log";

struct Recorder;

impl exports::mcpplus::recorder::journal::Guest for Recorder {
    fn note_execution(key: String, work_ms: u32) -> Result<u64, String> {
        if key.contains('\n') {
            return Err("key must be one line".into());
        }
        let before = std::fs::read_to_string(JOURNAL)
            .map(|t| t.lines().count() as u64)
            .unwrap_or(0);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(JOURNAL)
            .map_err(|e| format!("cannot open {JOURNAL}: {e}"))?;
        file.write_all(format!("{key}\n").as_bytes())
            .map_err(|e| format!("cannot append to {JOURNAL}: {e}"))?;
        std::thread::sleep(std::time::Duration::from_millis(work_ms.into()));
        Ok(before)
    }
}

export!(Recorder);
