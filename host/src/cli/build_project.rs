//! `mcpplus build [DIR]`: build a tool project (as `mcpplus new` makes them) with
//! its language's own tools, store its WIT doc comments in the component, write
//! it to `DIR/dist/NAME.wasm`, and list its tools.
//!
//! - Rust (`Cargo.toml`): `cargo build --release --target wasm32-wasip2`;
//! - Python (`app.py` and `wit/`): `componentize-py -d wit -w WORLD componentize app`,
//!   with componentize-py from the project's `.venv` or `PATH`;
//! - JavaScript (`package.json`): `npm run build`, which must write
//!   `dist/NAME.wasm` (NAME: the package name in snake_case).

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::SystemTime;

use anyhow::Context as _;

use super::inspect::{self, InspectArgs};
use super::new::Lang;

#[derive(clap::Args)]
pub struct BuildArgs {
    /// The project folder [default: the current folder]
    dir: Option<PathBuf>,
    /// List the tools as JSON (as `mcpplus inspect --json` does)
    #[arg(long)]
    json: bool,
}

pub fn run(args: BuildArgs) -> anyhow::Result<ExitCode> {
    let dir = args.dir.unwrap_or_else(|| PathBuf::from("."));
    let started = std::time::Instant::now();
    let component = build(&dir)?;
    // `dist/x.wasm` rather than `./dist/x.wasm`
    let component = component
        .strip_prefix(".")
        .map(Path::to_path_buf)
        .unwrap_or(component);
    eprintln!(
        "built {} in {:.1}s",
        component.display(),
        started.elapsed().as_secs_f64()
    );
    inspect::run(InspectArgs {
        component,
        json: args.json,
    })
}

/// The language of the project in `dir`, from the files it has.
pub(super) fn detect(dir: &Path) -> anyhow::Result<Lang> {
    anyhow::ensure!(
        dir.is_dir(),
        "{} is not a folder; pass the project folder made by `mcpplus new`",
        dir.display()
    );
    let lang = if dir.join("Cargo.toml").is_file() {
        Lang::Rust
    } else if dir.join("package.json").is_file() {
        Lang::Js
    } else if dir.join("app.py").is_file() {
        Lang::Python
    } else {
        anyhow::bail!(
            "{} has no Cargo.toml (Rust), package.json (JavaScript) or app.py (Python): \
             pass a tool project's folder, or make one with `mcpplus new NAME --lang rust|python|js`",
            dir.display()
        );
    };
    anyhow::ensure!(
        dir.join("wit").is_dir(),
        "{} has no wit/ folder: the WIT world the component is built from belongs there \
         (with the host's package in wit/deps/mcpplus-host/, as `mcpplus new` writes it)",
        dir.display()
    );
    Ok(lang)
}

/// Build the project in `dir`; returns the component, `dir/dist/NAME.wasm`, with
/// the WIT doc comments stored in it.
pub(super) fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    let lang = detect(dir)?;
    let dist = dir.join("dist");
    std::fs::create_dir_all(&dist).with_context(|| format!("cannot create {}", dist.display()))?;
    let (name, built) = match lang {
        Lang::Rust => build_rust(dir)?,
        Lang::Python => build_python(dir, &dist)?,
        Lang::Js => build_js(dir, &dist)?,
    };
    let bytes =
        std::fs::read(&built).with_context(|| format!("cannot read {}", built.display()))?;
    let with_docs = super::embed_docs::embed(&bytes, &dir.join("wit"))
        .with_context(|| format!("cannot store the WIT doc comments in {}", built.display()))?;
    let component = dist.join(format!("{name}.wasm"));
    write_atomically(&component, &with_docs)?;
    if lang == Lang::Python {
        let _ = std::fs::remove_file(&built);
    }
    Ok(component)
}

/// Write `bytes` to `path` through a hidden temporary file beside it and a
/// rename, so a reader (such as a server watching the folder) never sees half
/// a file. The temporary name starts with `.`, which the tools-folder watch ignores.
pub(super) fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let file = path
        .file_name()
        .context("the output path has no file name")?
        .to_string_lossy();
    let tmp = path.with_file_name(format!(".{file}.tmp"));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot move {} to {}", tmp.display(), path.display())
    })
}

/// Run `command`, which prints to our stderr (stdout is kept for the tool list).
fn run_tool(mut command: Command, what: &str, install: &str) -> anyhow::Result<()> {
    let program = command.get_program().to_string_lossy().into_owned();
    let status = command
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .status()
        .map_err(|e| not_runnable(&program, e, install))?;
    anyhow::ensure!(
        status.success(),
        "{what} failed ({status}); its messages are above"
    );
    Ok(())
}

fn not_runnable(program: &str, e: std::io::Error, install: &str) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        anyhow::anyhow!("`{program}` was not found: {install}")
    } else {
        anyhow::anyhow!("cannot run `{program}`: {e}")
    }
}

const RUSTUP: &str = "install Rust with rustup (https://rustup.rs), then run \
                      `rustup target add wasm32-wasip2`";

fn build_rust(dir: &Path) -> anyhow::Result<(String, PathBuf)> {
    // The toolchain the project uses (its rust-toolchain.toml) must have the target.
    let sysroot = Command::new("rustc")
        .args(["--print", "sysroot"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| not_runnable("rustc", e, RUSTUP))?;
    anyhow::ensure!(
        sysroot.status.success(),
        "`rustc --print sysroot` failed in {}: {}",
        dir.display(),
        String::from_utf8_lossy(&sysroot.stderr).trim()
    );
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    anyhow::ensure!(
        sysroot.join("lib/rustlib/wasm32-wasip2").is_dir(),
        "the Rust target wasm32-wasip2 is not installed in the toolchain at {}: \
         run `rustup target add wasm32-wasip2` in {}",
        sysroot.display(),
        folder(dir)
    );

    let mut child = Command::new("cargo")
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--message-format=json-render-diagnostics",
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| not_runnable("cargo", e, RUSTUP))?;
    // stdout carries cargo's JSON messages; the artifacts say where the .wasm is.
    let manifest = std::path::absolute(dir.join("Cargo.toml"))?;
    let manifest = manifest.canonicalize().unwrap_or(manifest);
    let mut wasm: Vec<(bool, PathBuf)> = Vec::new();
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line.context("cannot read cargo's output")?;
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let cdylib = message["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "cdylib"));
        if !cdylib {
            continue;
        }
        let ours = message["manifest_path"]
            .as_str()
            .is_some_and(|m| Path::new(m) == manifest);
        for file in message["filenames"].as_array().into_iter().flatten() {
            if let Some(file) = file.as_str().filter(|f| f.ends_with(".wasm")) {
                wasm.push((ours, PathBuf::from(file)));
            }
        }
    }
    let status = child.wait()?;
    anyhow::ensure!(
        status.success(),
        "cargo build failed ({status}); its messages are above"
    );
    let artifact = match wasm.iter().find(|(ours, _)| *ours) {
        Some((_, file)) => file.clone(),
        None if wasm.len() == 1 => wasm.remove(0).1,
        None if wasm.is_empty() => anyhow::bail!(
            "cargo built no .wasm library: add `[lib] crate-type = [\"cdylib\"]` to {}",
            dir.join("Cargo.toml").display()
        ),
        None => anyhow::bail!(
            "cargo built several components ({}); run `mcpplus build` in the folder of one",
            wasm.iter()
                .map(|(_, f)| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let name = component_stem(&artifact)?;
    Ok((name, artifact))
}

fn component_stem(path: &Path) -> anyhow::Result<String> {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .with_context(|| format!("{} has no file name", path.display()))
}

/// The world of the project's own WIT package (the one in `dir/wit`, not its deps).
fn the_world(wit: &Path) -> anyhow::Result<String> {
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve
        .push_path(wit)
        .with_context(|| format!("cannot parse the WIT in {}", wit.display()))?;
    let worlds: Vec<&String> = resolve.packages[package].worlds.keys().collect();
    match worlds.as_slice() {
        [world] => Ok(world.to_string()),
        [] => anyhow::bail!(
            "the WIT package in {} has no world; declare one that exports the tools",
            wit.display()
        ),
        several => anyhow::bail!(
            "the WIT package in {} has several worlds ({}); keep the one app.py implements",
            wit.display(),
            several
                .iter()
                .map(|w| w.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// componentize-py from the project's `.venv`, else from `PATH`.
fn componentize_py(dir: &Path) -> PathBuf {
    for venv in [
        ".venv/bin/componentize-py",
        ".venv/Scripts/componentize-py.exe",
    ] {
        let candidate = dir.join(venv);
        if candidate.is_file() {
            // Absolute: the command runs in `dir`.
            return std::path::absolute(&candidate).unwrap_or(candidate);
        }
    }
    PathBuf::from("componentize-py")
}

const COMPONENTIZE_PY: &str = "0.25.1";

fn build_python(dir: &Path, dist: &Path) -> anyhow::Result<(String, PathBuf)> {
    let wit = dir.join("wit");
    let world = the_world(&wit)?;
    let install = format!(
        "it is neither in {} nor on PATH; run \
         `python3 -m venv .venv && .venv/bin/pip install -r requirements.txt` in {} \
         (or `pip install componentize-py=={COMPONENTIZE_PY}`)",
        dir.join(".venv").display(),
        folder(dir)
    );
    let exe = componentize_py(dir);
    let version = Command::new(&exe)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| not_runnable("componentize-py", e, &install))?;
    let version = String::from_utf8_lossy(&version.stdout);
    if !version.contains(COMPONENTIZE_PY) {
        eprintln!(
            "warning: {} is `{}`; mcpplus is tested with componentize-py {COMPONENTIZE_PY}",
            exe.display(),
            version.trim()
        );
    }
    let name = world.replace('-', "_");
    let out = std::path::absolute(dist.join(format!(".{name}.wasm.build")))?;
    let mut command = Command::new(&exe);
    command
        .args(["-d", "wit", "-w", &world, "componentize", "app", "-o"])
        .arg(&out)
        .current_dir(dir);
    run_tool(command, "componentize-py", &install)?;
    Ok((name, out))
}

fn build_js(dir: &Path, dist: &Path) -> anyhow::Result<(String, PathBuf)> {
    let package = dir.join("package.json");
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&package)
            .with_context(|| format!("cannot read {}", package.display()))?,
    )
    .with_context(|| format!("{} is not valid JSON", package.display()))?;
    let package_name = manifest["name"]
        .as_str()
        .with_context(|| format!("{} has no \"name\"", package.display()))?;
    // `@scope/word-tools` → `word_tools`
    let name = package_name
        .rsplit('/')
        .next()
        .unwrap_or(package_name)
        .replace(['-', '.'], "_");
    anyhow::ensure!(
        manifest["scripts"]["build"].is_string(),
        "{} has no \"build\" script; it should write dist/{name}.wasm (e.g. \"node build.mjs\")",
        package.display()
    );
    let node = "install Node.js 20 or later (it comes with npm): https://nodejs.org";
    let _ = Command::new("node")
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| not_runnable("node", e, node))?;
    if !dir
        .join("node_modules/@bytecodealliance/componentize-js")
        .is_dir()
    {
        let install = if dir.join("package-lock.json").is_file() {
            "npm ci"
        } else {
            "npm install"
        };
        anyhow::bail!(
            "componentize-js is not installed in {}: run `{install}` in {}",
            dir.join("node_modules").display(),
            folder(dir)
        );
    }
    let out = dist.join(format!("{name}.wasm"));
    let before = modified(&out);
    let started = SystemTime::now();
    let mut command = Command::new("npm");
    command.args(["run", "build"]).current_dir(dir);
    run_tool(command, "npm run build", node)?;
    let after = modified(&out);
    anyhow::ensure!(
        after.is_some() && (after != before || after >= Some(started)),
        "`npm run build` succeeded but did not write {}; mcpplus expects the component there",
        out.display()
    );
    Ok((name, out))
}

/// How to name the project folder in advice.
fn folder(dir: &Path) -> String {
    if dir == Path::new(".") {
        "this folder".into()
    } else {
        dir.display().to_string()
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_each_language_and_says_what_is_missing() {
        let base = std::env::temp_dir().join(format!("mcpplus-detect-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        for (lang, name) in [(Lang::Rust, "r"), (Lang::Python, "p"), (Lang::Js, "j")] {
            let dir = base.join(name);
            super::super::new::create(&dir, "word-tools", lang).unwrap();
            assert_eq!(detect(&dir).unwrap(), lang);
            assert_eq!(the_world(&dir.join("wit")).unwrap(), "word-tools");
        }
        std::fs::create_dir_all(base.join("empty")).unwrap();
        let e = detect(&base.join("empty")).unwrap_err().to_string();
        assert!(e.contains("no Cargo.toml"), "{e}");
        std::fs::remove_dir_all(base.join("j/node_modules")).ok();
        let e = build(&base.join("j")).unwrap_err().to_string();
        assert!(
            e.contains("run `npm install`") || e.contains("`node` was not found"),
            "{e}"
        );
        std::fs::remove_dir_all(&base).unwrap();
    }
}
