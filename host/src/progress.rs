//! A progress line for a person watching: while CVP sends its initial state
//! (thousands of events on a large fabric), stderr shows how many have
//! arrived and how fast. Only when stderr is a terminal and logs are human
//! text; in journald, files and JSON logs it never appears.
//!
//! Log lines written while it is shown go through [`LogWriter`], which
//! lifts the bar out of the way so the two never interleave on one line.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

static ENABLED: AtomicBool = AtomicBool::new(false);
static BAR: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Turns progress lines on when stderr is a terminal and `human_logs`.
pub fn enable_if_terminal(human_logs: bool) {
    ENABLED.store(
        human_logs && std::io::stderr().is_terminal(),
        Ordering::Relaxed,
    );
}

fn with_bar<T>(f: impl FnOnce(&mut Option<ProgressBar>) -> T) -> T {
    // A poisoned lock only means a panic elsewhere while drawing: carry on.
    let mut guard = BAR.lock().unwrap_or_else(|p| p.into_inner());
    f(&mut guard)
}

/// The initial sync began.
pub fn start_sync() {
    if !ENABLED.load(Ordering::Relaxed) {
        return;
    }
    with_bar(|bar| {
        let pb = ProgressBar::new_spinner();
        pb.set_style(
            ProgressStyle::with_template("{spinner} CVP initial sync: {pos} events ({per_sec})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        pb.enable_steady_tick(Duration::from_millis(200));
        *bar = Some(pb);
    });
}

/// One more event of the initial state arrived.
pub fn inc() {
    if ENABLED.load(Ordering::Relaxed) {
        with_bar(|bar| {
            if let Some(pb) = bar {
                pb.inc(1);
            }
        });
    }
}

/// The sync completed or the stream ended: the line goes away.
pub fn finish() {
    if ENABLED.load(Ordering::Relaxed) {
        with_bar(|bar| {
            if let Some(pb) = bar.take() {
                pb.finish_and_clear();
            }
        });
    }
}

/// stderr for the log, stepping around a progress line when one is shown.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if ENABLED.load(Ordering::Relaxed) {
            let shown = with_bar(|bar| bar.clone());
            if let Some(pb) = shown {
                return pb.suspend(|| std::io::stderr().write(buf));
            }
        }
        std::io::stderr().write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}
