//! The `mcpplus` binary; everything lives in the library (see `cli`).

fn main() -> std::process::ExitCode {
    mcpplus::cli::main()
}
