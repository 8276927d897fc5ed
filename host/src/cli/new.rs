//! `mcpplus new NAME --lang rust|python|js [--dir DIR]`: start a tool project that
//! builds with the language's own tools into a component mcpplus serves.
//!
//! The templates live in `host/templates/` and are compiled into the binary, as
//! is the host's `mcpplus:host` WIT package (`wit/*.wit`), which every project
//! gets in `wit/deps/mcpplus-host/` so its version always matches this host.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;

/// The host's WIT package, as `wit/` of this repository holds it.
pub(super) const HOST_WIT: &[(&str, &str)] = &[("host.wit", include_str!("../../../wit/host.wit"))];

/// The world, shared by every language.
const WORLD: &str = include_str!("../../templates/world.wit");

/// Per language: (path in the project, template).
const RUST: &[(&str, &str)] = &[
    (
        "Cargo.toml",
        include_str!("../../templates/rust/Cargo.toml.tmpl"),
    ),
    (
        "rust-toolchain.toml",
        include_str!("../../templates/rust/rust-toolchain.toml.tmpl"),
    ),
    (
        "src/lib.rs",
        include_str!("../../templates/rust/src/lib.rs"),
    ),
    ("README.md", include_str!("../../templates/rust/README.md")),
    (".gitignore", include_str!("../../templates/rust/gitignore")),
];
const PYTHON: &[(&str, &str)] = &[
    ("app.py", include_str!("../../templates/python/app.py")),
    (
        "requirements.txt",
        include_str!("../../templates/python/requirements.txt"),
    ),
    (
        "README.md",
        include_str!("../../templates/python/README.md"),
    ),
    (
        ".gitignore",
        include_str!("../../templates/python/gitignore"),
    ),
];
const JS: &[(&str, &str)] = &[
    (
        "package.json",
        include_str!("../../templates/js/package.json.tmpl"),
    ),
    ("build.mjs", include_str!("../../templates/js/build.mjs")),
    ("app.js", include_str!("../../templates/js/app.js")),
    ("README.md", include_str!("../../templates/js/README.md")),
    (".gitignore", include_str!("../../templates/js/gitignore")),
];

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    /// Rust with wit-bindgen (cargo)
    Rust,
    /// Python with componentize-py
    Python,
    /// JavaScript with componentize-js (npm)
    Js,
}

impl Lang {
    fn label(self) -> &'static str {
        match self {
            Lang::Rust => "Rust",
            Lang::Python => "Python",
            Lang::Js => "JavaScript",
        }
    }

    fn files(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Lang::Rust => RUST,
            Lang::Python => PYTHON,
            Lang::Js => JS,
        }
    }

    /// The file that implements the world, named in the world's comments.
    fn source(self) -> &'static str {
        match self {
            Lang::Rust => "src/lib.rs",
            Lang::Python => "app.py",
            Lang::Js => "app.js",
        }
    }
}

#[derive(clap::Args)]
pub struct NewArgs {
    /// The project's name: lowercase letters and digits in words joined by
    /// hyphens, each word starting with a letter (e.g. `word-tools`). It names
    /// the WIT world, the package and the component (`dist/word_tools.wasm`).
    name: String,
    /// The language to write the tools in
    #[arg(long, value_enum)]
    lang: Lang,
    /// The project folder to create [default: ./NAME]; if it exists it must be empty
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
}

pub fn run(args: NewArgs) -> anyhow::Result<ExitCode> {
    check_name(&args.name)?;
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    create(&dir, &args.name, args.lang)?;
    let snake = args.name.replace('-', "_");
    let shown = dir.display();
    eprintln!(
        "created {} tool project `{}` in {shown}",
        args.lang.label(),
        args.name
    );
    eprintln!("\nnext:\n  cd {shown}");
    match args.lang {
        Lang::Rust => eprintln!("  rustup target add wasm32-wasip2      # once, if missing"),
        Lang::Python => {
            eprintln!("  python3 -m venv .venv && .venv/bin/pip install -r requirements.txt")
        }
        Lang::Js => eprintln!("  npm install"),
    }
    eprintln!("  mcpplus build                         # → dist/{snake}.wasm, and its tools");
    eprintln!(
        "  mcpplus call dist/{snake}.wasm count_words --args '{{\"text\": \"one two three\"}}'"
    );
    eprintln!(
        "  mcpplus dev --tools TOOLS_DIR         # rebuild on change, for `mcpplus serve --tools TOOLS_DIR`"
    );
    Ok(ExitCode::SUCCESS)
}

/// Write the project for `name` in `dir`, which must not exist or be empty.
pub(super) fn create(dir: &Path, name: &str, lang: Lang) -> anyhow::Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => anyhow::ensure!(
            entries.next().is_none(),
            "{} already exists and is not empty; choose another --dir, or empty it first",
            dir.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            anyhow::bail!("{} exists and is not a folder", dir.display())
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
    }
    let snake = name.replace('-', "_");
    let fill = |template: &str| {
        template
            .replace("{{name}}", name)
            .replace("{{snake}}", &snake)
            .replace("{{source}}", lang.source())
    };
    let mut files: Vec<(String, String)> = lang
        .files()
        .iter()
        .map(|(path, template)| (path.to_string(), fill(template)))
        .collect();
    files.push(("wit/world.wit".into(), fill(WORLD)));
    for (file, text) in HOST_WIT {
        files.push((format!("wit/deps/mcpplus-host/{file}"), text.to_string()));
    }
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Names that are keywords of WIT or Rust, or that cargo refuses.
const RESERVED: &[&str] = &[
    // WIT
    "as",
    "async",
    "bool",
    "borrow",
    "char",
    "constructor",
    "enum",
    "export",
    "f32",
    "f64",
    "flags",
    "float32",
    "float64",
    "from",
    "func",
    "future",
    "import",
    "include",
    "interface",
    "list",
    "option",
    "own",
    "package",
    "record",
    "resource",
    "result",
    "s16",
    "s32",
    "s64",
    "s8",
    "static",
    "stream",
    "string",
    "tuple",
    "type",
    "u16",
    "u32",
    "u64",
    "u8",
    "use",
    "variant",
    "with",
    "world", // Rust
    "abstract",
    "become",
    "box",
    "break",
    "const",
    "continue",
    "crate",
    "do",
    "dyn",
    "else",
    "extern",
    "false",
    "final",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "macro",
    "match",
    "mod",
    "move",
    "mut",
    "override",
    "priv",
    "pub",
    "ref",
    "return",
    "self",
    "struct",
    "super",
    "trait",
    "true",
    "try",
    "typeof",
    "unsafe",
    "unsized",
    "virtual",
    "where",
    "while",
    "yield", // cargo: the standard crates, and names Windows reserves for devices
    "alloc",
    "core",
    "std",
    "test",
    "con",
    "prn",
    "aux",
    "nul",
    "com1",
    "com2",
    "com3",
    "com4",
    "com5",
    "com6",
    "com7",
    "com8",
    "com9",
    "lpt1",
    "lpt2",
    "lpt3",
    "lpt4",
    "lpt5",
    "lpt6",
    "lpt7",
    "lpt8",
    "lpt9",
];

/// A project name is a WIT identifier (it names the world and the package) in
/// lowercase, which is also a valid cargo, npm and file name.
pub(super) fn check_name(name: &str) -> anyhow::Result<()> {
    const RULE: &str = "use lowercase letters (a-z) and digits, in words joined by single \
                        hyphens, each word starting with a letter, e.g. `word-tools` or `stats2`";
    anyhow::ensure!(!name.is_empty(), "the name is empty; {RULE}");
    anyhow::ensure!(
        name.len() <= 64,
        "the name `{name}` is {} characters long; 64 at most",
        name.len()
    );
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        let fixed = name.to_ascii_lowercase().replace('_', "-");
        let hint = if fixed != name && check_name(&fixed).is_ok() {
            format!(" (write `{fixed}`)")
        } else {
            String::new()
        };
        anyhow::bail!("the name `{name}` contains `{c}`{hint}; {RULE}");
    }
    for word in name.split('-') {
        match word.chars().next() {
            None => anyhow::bail!(
                "the name `{name}` has an empty word (a hyphen at the start or end, or two in a row); {RULE}"
            ),
            Some(c) if !c.is_ascii_lowercase() => anyhow::bail!(
                "in the name `{name}`, the word `{word}` starts with `{c}`, not a letter; {RULE}"
            ),
            Some(_) => {}
        }
    }
    anyhow::ensure!(
        !RESERVED.contains(&name),
        "`{name}` is a reserved word in WIT or Rust; choose another name, e.g. `{name}-tools`"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_wit_file_of_the_host_is_embedded() {
        let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
        let mut on_disk: Vec<String> = std::fs::read_dir(&wit)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|f| f.ends_with(".wit"))
            .collect();
        on_disk.sort();
        let mut embedded: Vec<&str> = HOST_WIT.iter().map(|(f, _)| *f).collect();
        embedded.sort();
        assert_eq!(on_disk, embedded, "add the new wit/*.wit files to HOST_WIT");
        for (file, text) in HOST_WIT {
            assert!(
                std::fs::read_to_string(wit.join(file)).unwrap() == *text,
                "wit/{file} differs from the embedded copy"
            );
        }
    }

    #[test]
    fn names() {
        for good in ["word-tools", "stats2", "a", "my-tool-v2"] {
            check_name(good).unwrap();
        }
        for (bad, says) in [
            ("", "empty"),
            ("Word", "write `word`"),
            ("Tools-2", "contains `T`;"),
            ("word_tools", "write `word-tools`"),
            ("tools-2", "starts with `2`"),
            ("2tools", "starts with `2`"),
            ("-x", "empty word"),
            ("a--b", "empty word"),
            ("a b", "contains ` `"),
            ("../x", "contains `.`"),
            ("type", "reserved"),
            ("test", "reserved"),
        ] {
            let e = check_name(bad).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
