//! What the engine needs to know about one transform: its name, where its
//! code is, the `config()` it hands the guest, and its sandbox limits. The
//! caller builds these from its own configuration format.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone)]
pub struct TransformSpec {
    /// Names it in logs, metrics and errors.
    pub name: String,
    pub code: Code,
    /// What the guest's `host.config()` returns.
    pub config: Vec<(String, String)>,
    pub limits: Limits,
}

/// Where a transform's component comes from.
#[derive(Debug, Clone)]
pub enum Code {
    /// A `.wasm` file, read at load and at every reload.
    File(PathBuf),
    /// Bytes compiled into the caller (its built-in transforms), shown in
    /// messages as `label`.
    Embedded { label: String, bytes: &'static [u8] },
}

impl Code {
    /// How messages name it: the path, or the built-in's label.
    pub fn describe(&self) -> String {
        match self {
            Code::File(p) => p.display().to_string(),
            Code::Embedded { label, .. } => label.clone(),
        }
    }

    /// The file to watch for changes, if any.
    pub fn file(&self) -> Option<&Path> {
        match self {
            Code::File(p) => Some(p),
            Code::Embedded { .. } => None,
        }
    }

    /// When the file last changed; `None` for embedded code and for files
    /// that cannot be read (the load itself reports those).
    pub fn modified(&self) -> Option<SystemTime> {
        self.file()
            .and_then(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
    }
}

/// The sandbox of one instance.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest linear memory an instance may grow to, in bytes.
    pub memory: u64,
    /// Longest a single call into the transform may run.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: 128 << 20,
            timeout: Duration::from_secs(1),
        }
    }
}
