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

/// The sandbox of one instance, and what one call may hand the host.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most memory an instance may hold, all its linear memories together,
    /// in bytes.
    pub memory: u64,
    /// Longest a single call into the transform may run.
    pub timeout: Duration,
    /// What one call may return, checked in the guest's memory before the
    /// host copies any of it.
    pub output: OutputLimits,
    /// Longest a batch may spend retrying events one by one after a fault;
    /// the events not reached are tried again in the next round.
    pub retry_budget: Duration,
    /// Guest log lines per second (the burst allowed is as many), and the
    /// longest line kept, in bytes.
    pub log_lines_per_second: u32,
    pub log_line_bytes: usize,
    /// An instance whose linear memory passed this many bytes is replaced
    /// by a fresh one after its call (linear memory never shrinks: one
    /// large event would otherwise pin its peak for good). Never less than
    /// twice what a fresh instance holds.
    pub recycle_memory: u64,
}

/// Bounds on a call's output. Bytes are those of topics, keys, values and
/// headers plus what the host spends to hold each record and header, so
/// they measure host memory. An event past a per-event bound fails; the
/// events of a call past a per-batch bound go on in the next call.
#[derive(Debug, Clone, Copy)]
pub struct OutputLimits {
    pub records_per_event: u64,
    pub bytes_per_event: u64,
    pub records_per_batch: u64,
    pub bytes_per_batch: u64,
}

impl Default for OutputLimits {
    fn default() -> Self {
        OutputLimits {
            records_per_event: 1000,
            bytes_per_event: 4 << 20,
            records_per_batch: 10_000,
            // With wasmtime's copy bound at twice this, a hostile transform
            // costs the host about 16 MiB beyond its own memory
            // (BENCHMARKS.md, the memory budget).
            bytes_per_batch: 8 << 20,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: 128 << 20,
            timeout: Duration::from_secs(1),
            output: OutputLimits::default(),
            retry_budget: Duration::from_secs(5),
            log_lines_per_second: 100,
            log_line_bytes: 4096,
            recycle_memory: 64 << 20,
        }
    }
}
