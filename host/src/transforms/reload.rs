//! Hot reload: SIGHUP reloads every transform; a `.wasm` file that changes on
//! disk reloads that transform. This task only notices; the transform thread
//! does the swap between batches (see `Chain::reload`).

use crate::event::SourceEvent;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How often the transforms' files are checked for changes.
const POLL: Duration = Duration::from_secs(1);

/// What the transform thread is asked to reload, ordered by extent so that
/// requests that pile up between two batches keep the widest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum ReloadRequest {
    Nothing = 0,
    /// The transforms whose files changed.
    Changed = 1,
    /// Every transform (SIGHUP).
    All = 2,
}

/// A reload request shared between the watcher and the transform thread.
#[derive(Clone, Default)]
pub struct PendingReload(Arc<AtomicU8>);

impl PendingReload {
    fn request(&self, r: ReloadRequest) {
        self.0.fetch_max(r as u8, Ordering::AcqRel);
    }

    /// What was requested since the last call, and clears it.
    pub fn take(&self) -> ReloadRequest {
        match self.0.swap(ReloadRequest::Nothing as u8, Ordering::AcqRel) {
            2 => ReloadRequest::All,
            1 => ReloadRequest::Changed,
            _ => ReloadRequest::Nothing,
        }
    }
}

fn modified(path: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Records a request and nudges the transform thread (an empty batch) when
/// a reload is due. Polling modification times needs no watcher crate and
/// works the same on every file system, including network mounts and
/// Kubernetes ConfigMap volumes, which replace files by symlink swaps.
pub async fn watch(
    files: Vec<PathBuf>,
    pending: PendingReload,
    nudge: mpsc::Sender<Vec<SourceEvent>>,
    shutdown: CancellationToken,
) {
    let stamp =
        |files: &[PathBuf]| -> Vec<Option<SystemTime>> { files.iter().map(modified).collect() };
    let mut last = stamp(&files);
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    loop {
        #[cfg(unix)]
        let hangup = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let hangup = std::future::pending::<Option<()>>();
        let request = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hangup => {
                tracing::info!("SIGHUP: reloading every transform");
                ReloadRequest::All
            }
            _ = tokio::time::sleep(POLL) => {
                let now = stamp(&files);
                if now == last {
                    continue;
                }
                last = now;
                ReloadRequest::Changed
            }
        };
        pending.request(request);
        if nudge.send(Vec::new()).await.is_err() {
            return;
        }
    }
}
