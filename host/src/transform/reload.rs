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

pub const NONE: u8 = 0;
pub const CHANGED: u8 = 1;
pub const ALL: u8 = 2;

/// How often the transforms' files are checked for changes.
const POLL: Duration = Duration::from_secs(1);

/// Sets `flag` and nudges the transform thread (an empty batch) when a
/// reload is due. Polling modification times needs no watcher crate and
/// works the same on every file system, including network mounts and
/// Kubernetes ConfigMap volumes, which replace files by symlink swaps.
pub async fn watch(
    files: Vec<PathBuf>,
    flag: Arc<AtomicU8>,
    nudge: mpsc::Sender<Vec<SourceEvent>>,
    shutdown: CancellationToken,
) {
    let stamp = |files: &[PathBuf]| -> Vec<Option<SystemTime>> {
        files.iter().map(|f| super::modified(f)).collect()
    };
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
        let level = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hangup => {
                tracing::info!("SIGHUP: reloading every transform");
                ALL
            }
            _ = tokio::time::sleep(POLL) => {
                let now = stamp(&files);
                if now == last {
                    continue;
                }
                last = now;
                CHANGED
            }
        };
        flag.fetch_max(level, Ordering::AcqRel);
        if nudge.send(Vec::new()).await.is_err() {
            return;
        }
    }
}
