//! A compilation cache: Cranelift takes seconds for a Python or JavaScript
//! component (12-18 MB), and every start, reload and test would pay it
//! again. The machine code wasmtime produces is kept on disk, keyed by the
//! component's SHA-256 and the engine's compatibility hash (wasmtime
//! version, compiler settings, CPU features), so a changed component or
//! host never loads stale code.
//!
//! Where: `$CVP_STREAM_CACHE_DIR`, else `$CACHE_DIRECTORY` (systemd's
//! `CacheDirectory=`), else `$XDG_CACHE_HOME/cvp-stream`, else
//! `~/.cache/cvp-stream`; `CVP_STREAM_CACHE_DIR=off` turns it off. The
//! directory must be writable by the service alone: wasmtime runs what it
//! finds there as trusted machine code.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::component::Component;
use wasmtime::Engine;

pub struct CompileCache {
    dir: PathBuf,
}

impl CompileCache {
    /// The cache in its default place, or `None` when off or homeless.
    pub fn from_env() -> Option<CompileCache> {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let dir = match var("CVP_STREAM_CACHE_DIR") {
            Some(v) if v == "off" => return None,
            Some(v) => PathBuf::from(v),
            None => match var("CACHE_DIRECTORY") {
                Some(v) => PathBuf::from(v),
                None => var("XDG_CACHE_HOME")
                    .map(PathBuf::from)
                    .or_else(|| var("HOME").map(|h| Path::new(&h).join(".cache")))?
                    .join("cvp-stream"),
            },
        };
        Some(CompileCache { dir })
    }

    #[cfg(test)]
    pub fn at(dir: PathBuf) -> CompileCache {
        CompileCache { dir }
    }

    fn entry(&self, engine: &Engine, bytes: &[u8]) -> PathBuf {
        let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
        engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        let digest = Sha256::digest(bytes);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        self.dir
            .join(format!("{hex}-{:016x}.cwasm", engine_hash.finish()))
    }

    /// The compiled component: from the cache when there, else compiled
    /// and stored. The cache never makes a load fail: an unusable entry is
    /// compiled afresh, an unwritable directory only costs the next start
    /// its time. Compile errors are wasmtime's, for the caller to word.
    pub fn load(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
        let path = self.entry(engine, bytes);
        if path.exists() {
            // SAFETY: the file was written below from wasmtime's own
            // precompilation of exactly these bytes for an engine with this
            // compatibility hash (its name says so), in the service's own
            // directory.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(c) => return Ok(c),
                Err(e) => tracing::debug!(
                    "compilation cache entry {} unusable ({e}); compiling",
                    path.display()
                ),
            }
        }
        // Compiled once, in the storable form, and loaded from that.
        let code = engine.precompile_component(bytes)?;
        if let Err(e) = self.store(&code, &path) {
            tracing::debug!(
                "cannot write the compilation cache {}: {e}",
                self.dir.display()
            );
        }
        // SAFETY: `code` is what wasmtime just produced for this engine.
        unsafe { Component::deserialize(engine, &code) }
    }

    fn store(&self, code: &[u8], path: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        // Written aside and renamed: a concurrent reader (another test, a
        // reload) never sees half a file.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, code)?;
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_load_comes_from_the_cache_and_a_bad_entry_is_replaced() {
        let engine = Engine::new(wasmtime::Config::new().wasm_component_model(true)).unwrap();
        let bytes = crate::transform::builtin::TITLE_TO_KEY;
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::at(dir.path().to_path_buf());
        let entries = || std::fs::read_dir(dir.path()).unwrap().count();
        cache.load(&engine, bytes).unwrap();
        assert_eq!(entries(), 1);
        let path = cache.entry(&engine, bytes);
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        cache.load(&engine, bytes).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            modified,
            "served from the cache, not written again"
        );
        std::fs::write(&path, b"not machine code").unwrap();
        cache.load(&engine, bytes).unwrap();
        assert_ne!(std::fs::read(&path).unwrap(), b"not machine code");
        // Other bytes (an empty component), another entry.
        cache.load(&engine, b"\0asm\x0d\0\x01\0").unwrap();
        assert_eq!(entries(), 2);
    }
}
