//! A compilation cache: Cranelift takes seconds for a Python or JavaScript
//! component (12-18 MB), and every start, reload and test would pay it
//! again. The machine code wasmtime produces is kept on disk, keyed by the
//! component's SHA-256 and the engine's compatibility hash (wasmtime
//! version, compiler settings, CPU features), so a changed component or
//! host never loads stale code.
//!
//! Where: `$CVP_STREAM_CACHE_DIR`, else `$CACHE_DIRECTORY` (systemd's
//! `CacheDirectory=`), else `$XDG_CACHE_HOME/cvp-stream`, else
//! `~/.cache/cvp-stream`; `CVP_STREAM_CACHE_DIR=off` turns it off.
//!
//! Trusted only when it can be: wasmtime runs what it finds there as
//! machine code. The directory is made private (0700) and is used only
//! while it belongs to the service's user and no one else may write to it;
//! an entry only if it is a regular file of that user that no one else may
//! write, and it starts with the SHA-256 of the component it was compiled
//! from and of the code that follows, both checked on every load (a
//! `.cwasm` copied over another's name, or truncated, is refused). Anything
//! else is compiled afresh and the log says why.
//!
//! Bounded: every component version leaves an entry (a developer rebuilding
//! a transform all afternoon left 310 MB), so after each write the oldest
//! entries go until the directory holds at most `CVP_STREAM_CACHE_MAX_MB`
//! (default 256) megabytes. An evicted entry only costs its next start a
//! compilation.

use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use wasmtime::component::Component;
use wasmtime::Engine;

pub struct CompileCache {
    dir: PathBuf,
    max_bytes: u64,
}

/// The default bound on the cache directory: a few dozen components of
/// the 12-18 MB kind (their machine code is about as large).
const DEFAULT_MAX_MB: u64 = 256;

/// What every entry starts with, then the two digests, then the code.
const MAGIC: &[u8; 8] = b"cvpcwsm1";
const HEADER: usize = MAGIC.len() + 32 + 32;

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
        let max_mb = var("CVP_STREAM_CACHE_MAX_MB")
            .and_then(|v| v.to_str().and_then(|s| s.trim().parse().ok()))
            .unwrap_or(DEFAULT_MAX_MB);
        Some(CompileCache::at(dir, max_mb << 20))
    }

    /// A cache in `dir` that keeps at most `max_bytes` of entries.
    pub fn at(dir: PathBuf, max_bytes: u64) -> CompileCache {
        CompileCache { dir, max_bytes }
    }

    /// Where the entry for `bytes` compiled by `engine` is kept.
    pub fn entry(&self, engine: &Engine, bytes: &[u8]) -> PathBuf {
        let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
        engine
            .precompile_compatibility_hash()
            .hash(&mut engine_hash);
        let digest = Sha256::digest(bytes);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        self.dir
            .join(format!("{hex}-{:016x}.cwasm", engine_hash.finish()))
    }

    /// The compiled component: from the cache when there and sound, else
    /// compiled (and stored, when the directory is private). The cache
    /// never makes a load fail: an unusable entry or directory costs a
    /// compilation and a line in the log. Compile errors are wasmtime's,
    /// for the caller to word.
    pub fn load(&self, engine: &Engine, bytes: &[u8]) -> wasmtime::Result<Component> {
        let path = self.entry(engine, bytes);
        let component_hash: [u8; 32] = Sha256::digest(bytes).into();
        let private = match self.private_dir() {
            Ok(()) => true,
            Err(why) => {
                tracing::warn!(
                    "not using the compilation cache {}: {why}; compiling instead",
                    self.dir.display()
                );
                false
            }
        };
        if private {
            match read_entry(&path, &component_hash) {
                Ok(Some(code)) => {
                    // SAFETY: the entry is a file of our own user in our own
                    // private directory, written below from wasmtime's own
                    // precompilation of a component whose digest it carries,
                    // and its code matches the digest written with it.
                    match unsafe { Component::deserialize(engine, &code) } {
                        Ok(c) => return Ok(c),
                        Err(e) => tracing::warn!(
                            "compilation cache entry {} unusable ({e}); compiling",
                            path.display()
                        ),
                    }
                }
                Ok(None) => {}
                Err(why) => tracing::warn!(
                    "compilation cache entry {} refused: {why}; compiling",
                    path.display()
                ),
            }
        }
        // Compiled once, in the storable form, and loaded from that.
        let code = engine.precompile_component(bytes)?;
        if private {
            if let Err(e) = self.store(&code, &component_hash, &path) {
                tracing::debug!(
                    "cannot write the compilation cache {}: {e}",
                    self.dir.display()
                );
            }
        }
        // SAFETY: `code` is what wasmtime just produced for this engine.
        unsafe { Component::deserialize(engine, &code) }
    }

    /// Creates the directory private if missing; `Err` says why an existing
    /// one cannot be trusted.
    fn private_dir(&self) -> Result<(), String> {
        if !self.dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(|e| format!("cannot create it ({e})"))?;
        }
        let meta = std::fs::symlink_metadata(&self.dir).map_err(|e| e.to_string())?;
        if !meta.is_dir() {
            return Err("it is not a directory".into());
        }
        owned_and_private(&meta, "it")
    }

    fn store(&self, code: &[u8], component_hash: &[u8; 32], path: &Path) -> std::io::Result<()> {
        // Written aside and renamed: a concurrent reader (another test, a
        // reload) never sees half a file.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(MAGIC)?;
        file.write_all(component_hash)?;
        file.write_all(&Sha256::digest(code))?;
        file.write_all(code)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        self.prune(path);
        Ok(())
    }

    /// Removes the oldest entries (by when they were written) until the
    /// directory is within its bound; `keep` (the entry just written) stays
    /// whatever its size. Failures are ignored: pruning is housekeeping.
    fn prune(&self, keep: &Path) {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut entries: Vec<(std::time::SystemTime, u64, PathBuf)> = dir
            .filter_map(Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), e.path()))
            })
            .collect();
        let mut total: u64 = entries.iter().map(|(_, len, _)| len).sum();
        entries.sort();
        for (_, len, path) in entries {
            if total <= self.max_bytes {
                break;
            }
            if path != keep && std::fs::remove_file(&path).is_ok() {
                tracing::debug!("compilation cache: pruned {}", path.display());
                total -= len;
            }
        }
    }
}

/// The code of the entry at `path` for a component of digest `component`:
/// `None` when there is none, `Err` (why) when it is not to be trusted.
fn read_entry(path: &Path, component: &[u8; 32]) -> Result<Option<Vec<u8>>, String> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    owned_and_private(&meta, "the file")?;
    let mut data = std::fs::read(path).map_err(|e| e.to_string())?;
    if data.len() < HEADER || &data[..MAGIC.len()] != MAGIC {
        return Err("not an entry this host wrote".into());
    }
    let (recorded, code_hash) = data[MAGIC.len()..HEADER].split_at(32);
    if recorded != component {
        return Err("it was compiled from another component".into());
    }
    if code_hash != Sha256::digest(&data[HEADER..]).as_slice() {
        return Err("its code does not match the digest written with it".into());
    }
    data.drain(..HEADER);
    Ok(Some(data))
}

/// Whether `meta` belongs to the user we run as and no one else may write.
fn owned_and_private(meta: &std::fs::Metadata, what: &str) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(format!(
            "{what} belongs to user {}, not to this service's user {me}",
            meta.uid()
        ));
    }
    let mode = meta.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(format!(
            "{what} may be written by other users (mode {:o}); chmod go-w",
            mode & 0o777
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty component: the smallest thing wasmtime compiles.
    const EMPTY: &[u8] = b"\0asm\x0d\0\x01\0";

    #[test]
    fn the_oldest_entries_go_beyond_the_bound() {
        let engine = Engine::new(wasmtime::Config::new().wasm_component_model(true)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        // Three stale entries, oldest first, then a real one written.
        let old = |i: u64| {
            let p = dir.path().join(format!("old{i}.cwasm"));
            std::fs::write(&p, vec![0u8; 1000]).unwrap();
            let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i);
            std::fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(t)
                .unwrap();
            p
        };
        let stale: Vec<PathBuf> = (0..3).map(old).collect();
        let fresh_len = engine.precompile_component(EMPTY).unwrap().len() as u64;
        // Room for the fresh entry and one stale one.
        let cache = CompileCache::at(dir.path().to_path_buf(), fresh_len + 1500);
        cache.load(&engine, EMPTY).unwrap();
        assert!(cache.entry(&engine, EMPTY).exists(), "the new entry stays");
        assert!(!stale[0].exists() && !stale[1].exists(), "the oldest go");
        assert!(stale[2].exists(), "the newest stale one fits");
    }
}
