//! Host logging: `tracing` to stderr (never stdout, which may carry the protocol).

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init(filter: &str, format: Option<LogFormat>) {
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|e| {
        eprintln!("warning: ignoring invalid log filter `{filter}` ({e}); using `info`");
        EnvFilter::new("info")
    });
    let format = format.unwrap_or(if std::io::stderr().is_terminal() {
        LogFormat::Text
    } else {
        LogFormat::Json
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        // No tracing `target` (module path) in JSON: `target` is an event field
        // (what a capability.denied event refused); events say what they are
        // through `event` instead.
        LogFormat::Json => builder
            .json()
            .with_target(false)
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}
