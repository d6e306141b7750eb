//! Delivery progress that survives a restart. The sink writes it as the
//! server acknowledges events (see `tracker.rs`); the source reads it at
//! start-up and forwards whatever changed after it.
//!
//! Written to a temporary file, fsynced, renamed over the old one and the
//! directory fsynced: a crash leaves either the old checkpoint or the new,
//! never a torn one.

use super::SharedTracker;
use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

/// The `checkpoint:` block: progress that survives a restart, the last
/// event fully acknowledged (in order), written atomically and fsynced.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    pub path: PathBuf,
    /// How often it is written while events flow (and always at shutdown).
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
}

/// What a crash resends is at most what was acknowledged within one
/// interval: at 200,000 events/s, 1 s was 200,000 events. A write (JSON,
/// fsync, rename, directory fsync) took 0.56 ms here, so ten a second cost
/// the sink about 0.6% of its time for a twentieth of the resends.
fn default_interval() -> Duration {
    Duration::from_millis(100)
}

impl CheckpointConfig {
    /// The directory must exist and take a file, and the path must not be a
    /// directory: found now, not as an error every interval while nothing
    /// is saved. (A probe file is written and removed; `validate` checks
    /// this too, as the first write would.)
    pub fn validate(&self) -> Result<()> {
        let dir = self.path.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dir.filter(|d| !d.is_dir()) {
            anyhow::bail!(
                "checkpoint.path {}: the directory {} does not exist",
                self.path.display(),
                dir.display()
            );
        }
        if self.path.is_dir() {
            anyhow::bail!(
                "checkpoint.path {} is a directory: give a file name in it, e.g. {}",
                self.path.display(),
                self.path.join("checkpoint.json").display()
            );
        }
        let probe = self.path.with_extension("tmp");
        let written = std::fs::File::create(&probe).and_then(|mut f| f.write_all(b"{}\n"));
        let _ = std::fs::remove_file(&probe);
        written.map_err(|e| {
            anyhow!(
                "checkpoint.path {}: cannot write there ({e}): choose a directory this user can write",
                self.path.display()
            )
        })
    }
}

/// Writes the checkpoint as delivery progresses, at most every `interval`.
pub struct CheckpointWriter {
    path: PathBuf,
    interval: Duration,
    written_watermark: i64,
}

impl CheckpointWriter {
    pub fn new(cfg: &CheckpointConfig) -> CheckpointWriter {
        CheckpointWriter {
            path: cfg.path.clone(),
            interval: cfg.interval,
            written_watermark: 0,
        }
    }

    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Writes when progress was made since the last write (or `force`).
    /// The caller paces it (the sink's timer ticks every `interval`): a
    /// second "has `interval` passed" check here skipped every other tick,
    /// since a tick comes just short of `interval` after the last write.
    /// Never a checkpoint that knows nothing (0): a restart from it would
    /// replay CVP's whole state.
    ///
    /// Returns false when the write failed. Not fatal: the next may
    /// succeed, and meanwhile a restart resends from the older checkpoint
    /// (duplicates, not loss); but /ready says so until one succeeds, and
    /// a run whose last write failed exits with an error.
    pub fn maybe_write(&mut self, tracker: &SharedTracker, force: bool) -> bool {
        let cp = match Checkpoint::of(&tracker.lock()) {
            Some(cp) if force || cp.delivered_up_to != self.written_watermark => cp,
            _ => return true,
        };
        let watermark = cp.delivered_up_to;
        let written = write(&self.path, &cp);
        crate::metrics::get().set_checkpoint_written(written.is_ok());
        match written {
            Ok(()) => {
                self.written_watermark = watermark;
                true
            }
            Err(e) => {
                tracing::error!("{e:#}");
                false
            }
        }
    }
}

const VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    pub version: u32,
    /// Every event up to this one (in the order CVP sent them) is fully
    /// acknowledged by Kafka: its time, ns since the Unix epoch.
    pub delivered_up_to: i64,
    /// The same, readable (RFC 3339); informational.
    #[serde(default)]
    pub delivered_up_to_utc: String,
    /// Events after that point that Kafka also acknowledged (deliveries
    /// complete out of order): (event key, event time in ns). On resume
    /// they are not sent again.
    #[serde(default)]
    pub also_delivered: Vec<(String, i64)>,
}

impl Checkpoint {
    /// What the tracker says is delivered; `None` before the first event.
    pub fn of(tracker: &super::Tracker) -> Option<Checkpoint> {
        let watermark = tracker.resume_point();
        (watermark > 0).then(|| Checkpoint::new(watermark, tracker.delivered_beyond(watermark)))
    }

    pub fn new(delivered_up_to: i64, also_delivered: Vec<(String, i64)>) -> Checkpoint {
        Checkpoint {
            version: VERSION,
            delivered_up_to,
            delivered_up_to_utc: utc(delivered_up_to),
            also_delivered,
        }
    }
}

fn utc(nanos: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_nanos(nanos.max(0) as u64);
    humantime::format_rfc3339_nanos(t).to_string()
}

/// The checkpoint at `path`; `None` when there is none yet (first start).
pub fn read(path: &Path) -> Result<Option<Checkpoint>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(anyhow!(
                "checkpoint.path {}: cannot read it: {e}",
                path.display()
            ))
        }
    };
    let cp: Checkpoint = serde_json::from_str(&text).map_err(|e| {
        anyhow!(
            "checkpoint.path {} is not a cvp-stream checkpoint ({e}); move it away to start afresh",
            path.display()
        )
    })?;
    if cp.version != VERSION {
        return Err(anyhow!(
            "checkpoint.path {} has version {}; this cvp-stream reads version {VERSION}",
            path.display(),
            cp.version
        ));
    }
    Ok(Some(cp))
}

/// Replaces the checkpoint at `path` atomically and durably.
pub fn write(path: &Path, cp: &Checkpoint) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let body = serde_json::to_vec_pretty(cp)?;
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself is durable only once the directory is synced.
        std::fs::File::open(dir)?.sync_all()
    })();
    result.with_context(|| format!("cannot write checkpoint {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        assert_eq!(read(&path).unwrap(), None);
        let cp = Checkpoint::new(1_700_000_000_123_456_789, vec![("k".into(), 5)]);
        write(&path, &cp).unwrap();
        assert_eq!(read(&path).unwrap(), Some(cp.clone()));
        assert_eq!(cp.delivered_up_to_utc, "2023-11-14T22:13:20.123456789Z");
        // A second write replaces it; no temporary file is left behind.
        let cp2 = Checkpoint::new(2, vec![]);
        write(&path, &cp2).unwrap();
        assert_eq!(read(&path).unwrap(), Some(cp2));
        assert!(!path.with_extension("tmp").exists());
    }

    /// Every call that finds progress writes: the timer that calls it is
    /// the only pacing (two paces skipped every other tick).
    #[test]
    fn each_tick_with_progress_writes() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = CheckpointConfig {
            path: dir.path().join("cp.json"),
            interval: Duration::from_secs(3600),
        };
        let mut writer = CheckpointWriter::new(&cfg);
        let tracker = SharedTracker::default();
        let deliver = |time: i64| {
            let mut t = tracker.lock();
            let seq = t.register("k", time);
            t.expect(seq, 1);
            t.settle(seq);
        };
        deliver(10);
        writer.maybe_write(&tracker, false);
        assert_eq!(read(&cfg.path).unwrap().unwrap().delivered_up_to, 10);
        deliver(20);
        writer.maybe_write(&tracker, false);
        assert_eq!(read(&cfg.path).unwrap().unwrap().delivered_up_to, 20);
        // No progress: no write (the file is left as it is).
        std::fs::remove_file(&cfg.path).unwrap();
        writer.maybe_write(&tracker, false);
        assert!(!cfg.path.exists());
    }

    /// A checkpoint that cannot be written is a start-up error, not an
    /// error every interval while nothing is saved.
    #[test]
    fn an_unwritable_path_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let at = |path: PathBuf| CheckpointConfig {
            path,
            interval: Duration::from_secs(1),
        };
        at(dir.path().join("cp.json")).validate().unwrap();
        assert!(!dir.path().join("cp.tmp").exists(), "the probe is removed");
        let e = at(dir.path().to_path_buf())
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("is a directory"), "{e}");
        // Even root cannot create files in /proc.
        let e = at(PathBuf::from("/proc/cvp-stream-checkpoint.json"))
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot write there"), "{e}");
    }

    #[test]
    fn a_foreign_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        std::fs::write(&path, "hello").unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains("is not a cvp-stream checkpoint"), "{e}");
    }
}
