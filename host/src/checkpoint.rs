//! Delivery progress that survives a restart. The sink writes it as Kafka
//! acknowledges events (in order: see `sink/acks.rs`); the source reads it at
//! start-up and forwards whatever changed after it.
//!
//! Written to a temporary file, fsynced, renamed over the old one and the
//! directory fsynced: a crash leaves either the old checkpoint or the new,
//! never a torn one.

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

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

    #[test]
    fn a_foreign_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cp.json");
        std::fs::write(&path, "hello").unwrap();
        let e = read(&path).unwrap_err().to_string();
        assert!(e.contains("is not a cvp-stream checkpoint"), "{e}");
    }
}
