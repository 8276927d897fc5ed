//! On-disk cache of precompiled components.
//!
//! Entries are keyed by the component's blake3 hash and the engine's compatibility hash,
//! so a different wasmtime version or configuration never reads another's code. An
//! entry that fails to load (truncated, corrupt, stale) is deleted and rebuilt.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

pub struct CompileCache {
    dir: PathBuf,
}

/// How a component was obtained, for logs and the load report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Miss,
    Disabled,
}

impl CompileCache {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The cache in `dir`, created private (0700). Its entries are native code
    /// this process runs, so a folder another user owns or may write to is
    /// refused: the error says why and what to do.
    pub fn open(dir: PathBuf) -> Result<Self, String> {
        use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| format!("cannot create the compile cache {}: {e}", dir.display()))?;
        }
        let meta = std::fs::metadata(&dir)
            .map_err(|e| format!("cannot read the compile cache {}: {e}", dir.display()))?;
        let uid = effective_uid();
        if meta.uid() != uid {
            return Err(format!(
                "the compile cache {} belongs to another user (uid {}); it holds native code this server would run, so it is not used. Pass --cache-dir with a folder of your own",
                dir.display(),
                meta.uid()
            ));
        }
        if meta.mode() & 0o022 != 0 {
            return Err(format!(
                "the compile cache {} is writable by other users (mode {:o}); it holds native code this server would run, so it is not used. `chmod 700` it",
                dir.display(),
                meta.mode() & 0o777
            ));
        }
        Ok(Self { dir })
    }

    /// The default location: `$MCPPLUS_CACHE_DIR`, else `$XDG_CACHE_HOME/mcpplus`,
    /// else `~/.cache/mcpplus`.
    pub fn default_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("MCPPLUS_CACHE_DIR") {
            return Some(PathBuf::from(dir));
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
        Some(base.join("mcpplus"))
    }

    fn entry_path(&self, engine: &Engine, digest: &str) -> PathBuf {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_key = format!("{:016x}", hasher.finish());
        self.dir.join(engine_key).join(format!("{digest}.cwasm"))
    }

    /// Load the precompiled form of `bytes`, compiling and storing it on a miss.
    /// An entry is used only if its checksum matches and wasmtime accepts it;
    /// otherwise it is deleted and rebuilt.
    pub fn load(
        &self,
        engine: &Engine,
        name: &str,
        bytes: &[u8],
        digest: &str,
    ) -> wasmtime::Result<(Component, CacheOutcome)> {
        let path = self.entry_path(engine, digest);
        let checksum_path = path.with_extension("blake3");
        if let Some(component) = Self::read_entry(engine, &path, &checksum_path) {
            return Ok((component, CacheOutcome::Hit));
        }
        let compiled = compile_with_progress(engine, name, bytes)?;
        let checksum = blake3::hash(&compiled).to_hex().to_string();
        // The checksum is written last, so a crash in between leaves an entry that
        // is simply not trusted.
        if let Err(e) = write_atomically(&path, &compiled)
            .and_then(|()| write_atomically(&checksum_path, checksum.as_bytes()))
        {
            tracing::warn!(path = %path.display(), error = %e, "could not write compile-cache entry");
        }
        // SAFETY: `compiled` was produced just now by this engine.
        let component = unsafe { Component::deserialize(engine, &compiled)? };
        Ok((component, CacheOutcome::Miss))
    }

    fn read_entry(engine: &Engine, path: &Path, checksum_path: &Path) -> Option<Component> {
        let expected = std::fs::read_to_string(checksum_path).ok()?;
        let discard = |reason: &str| {
            tracing::warn!(event = "cache.discarded", path = %path.display(), reason, "discarding compile-cache entry; recompiling");
            let _ = std::fs::remove_file(path);
            let _ = std::fs::remove_file(checksum_path);
        };
        // Stream the checksum so a large entry is never copied into memory whole.
        let mut hasher = blake3::Hasher::new();
        let file = std::fs::File::open(path).ok()?;
        if hasher.update_reader(file).is_err() {
            discard("unreadable");
            return None;
        }
        if hasher.finalize().to_hex().as_str() != expected.trim() {
            discard("checksum mismatch (corrupt or partly written)");
            return None;
        }
        // SAFETY: the file is exactly what this cache wrote from
        // `Engine::precompile_component` (checksum verified just now) under a key
        // that includes the engine's compatibility hash; wasmtime re-checks the
        // header. Mapping it keeps untouched code out of resident memory.
        match unsafe { Component::deserialize_file(engine, path) } {
            Ok(component) => Some(component),
            Err(e) => {
                discard(&format!("rejected by wasmtime: {e}"));
                None
            }
        }
    }
}

/// Compile, telling the operator what is happening when it may take a while.
fn compile_with_progress(engine: &Engine, name: &str, bytes: &[u8]) -> wasmtime::Result<Vec<u8>> {
    let started = std::time::Instant::now();
    tracing::info!(
        event = "component.compiling",
        component = name,
        size_kib = bytes.len() / 1024,
        "compiling component (not in the cache yet)"
    );
    let compiled = engine.precompile_component(bytes)?;
    tracing::info!(
        event = "component.compiled",
        component = name,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "compiled component"
    );
    Ok(compiled)
}

/// What the cache remembers about a component besides its code: work that is
/// slow for a large component (reading its WIT, its sha256) and depends only on
/// its bytes and on this build of the host.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct CachedFacts {
    build: String,
    pub sha256: String,
    pub description: mcpplus_schema::ComponentDescription,
}

impl CachedFacts {
    pub fn new(sha256: String, description: mcpplus_schema::ComponentDescription) -> Self {
        Self {
            build: env!("MCPPLUS_BUILD_ID").to_string(),
            sha256,
            description,
        }
    }
}

impl CompileCache {
    fn facts_path(&self, engine: &Engine, key: &str) -> PathBuf {
        self.entry_path(engine, key).with_extension("facts.json")
    }

    /// Facts recorded by this very build for the component with `key`, if any.
    pub fn read_facts(&self, engine: &Engine, key: &str) -> Option<CachedFacts> {
        let text = std::fs::read(self.facts_path(engine, key)).ok()?;
        let facts: CachedFacts = serde_json::from_slice(&text).ok()?;
        (facts.build == env!("MCPPLUS_BUILD_ID")).then_some(facts)
    }

    pub fn write_facts(&self, engine: &Engine, key: &str, facts: &CachedFacts) {
        let path = self.facts_path(engine, key);
        if let Err(e) = serde_json::to_vec(facts)
            .map_err(std::io::Error::other)
            .and_then(|b| write_atomically(&path, &b))
        {
            tracing::warn!(path = %path.display(), error = %e, "could not write compile-cache facts");
        }
    }
}

/// The cache key of a component: blake3 of its bytes (fast even for 20 MB).
pub fn content_key(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// sha256 of a component, as lowercase hex.
pub fn digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Write to a temporary file and rename, so readers never see a partial entry.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("cache entries live in a directory");
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// This process's effective user id: the owner of `/proc/self` (no libc call).
fn effective_uid() -> u32 {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self")
        .map(|m| m.uid())
        .unwrap_or(u32::MAX)
}
