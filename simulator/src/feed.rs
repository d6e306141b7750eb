//! The single global live feed: emits the script's or the generator's live
//! changes into the shared log at the configured rate.

use std::sync::Arc;
use std::time::Duration;

use cvp_proto::event::EventStreamResponse;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::info;

use crate::generate::Generator;
use crate::inventory::Inventory;
use crate::script;
use crate::state::Hub;

/// Changes appended per lock/wake-up when running flat out.
const FEED_BATCH: usize = 1024;

pub(crate) enum Source {
    Script(std::vec::IntoIter<EventStreamResponse>),
    Generated(Generator),
    /// Generated up front (`SimOptions::prepare`).
    Prepared(std::vec::IntoIter<crate::state::Change>),
}

impl Source {
    fn emit(&mut self, hub: &Hub, n: usize) {
        match self {
            Source::Generated(g) => {
                // Generate outside the lock; subscribers keep reading meanwhile.
                let changes: Vec<_> = (0..n).map(|_| g.live()).collect();
                hub.append(|inner| changes.into_iter().for_each(|c| inner.apply(c)));
            }
            Source::Prepared(changes) => {
                hub.append(|inner| changes.by_ref().take(n).for_each(|c| inner.apply(c)))
            }
            // Script entries merge into the current state, so they are
            // resolved under the lock.
            Source::Script(entries) => hub.append(|inner| {
                for entry in entries.by_ref().take(n) {
                    if let Some(c) = script::to_change(inner, &entry) {
                        inner.apply(c);
                    }
                }
            }),
        }
    }
}

/// Waits for the first subscriber to sync, then emits `hub.live_total`
/// changes, `rate` per second (0 = as fast as possible).
/// With `churn` (the inventory, every how many changes), the inventory
/// changes too: one step of `Inventory::churn` per that many live changes.
pub(crate) async fn run(
    hub: Arc<Hub>,
    mut source: Source,
    rate: f64,
    churn: Option<(Arc<Inventory>, u64)>,
    mut shutdown: watch::Receiver<bool>,
) {
    let total = hub.live_total;
    if total == 0 {
        return;
    }
    let mut synced = hub.synced.subscribe();
    tokio::select! {
        r = synced.wait_for(|s| *s) => if r.is_err() { return },
        _ = shutdown.wait_for(|s| *s) => return,
    }
    let paced = rate > 0.0 && rate.is_finite();
    info!(total, rate, "live feed started");
    let start = Instant::now();
    let _ = hub.live_started.set(start.into_std());
    let mut emitted = 0usize;
    while emitted < total {
        // Catch up with however many changes are due, so high rates do not
        // depend on timer resolution.
        let due = if paced {
            ((start.elapsed().as_secs_f64() * rate) as usize + 1).min(total)
        } else {
            total
        };
        if due > emitted {
            let n = (due - emitted).min(FEED_BATCH);
            source.emit(&hub, n);
            if let Some((inventory, every)) = &churn {
                let every = usize::try_from(*every).unwrap_or(usize::MAX);
                for _ in 0..((emitted + n) / every - emitted / every) {
                    inventory.churn();
                }
            }
            emitted += n;
            // Let subscribers run between batches on a busy runtime.
            tokio::task::yield_now().await;
            continue;
        }
        let next = start + Duration::from_secs_f64(emitted as f64 / rate);
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
    }
    info!(total, "live feed done");
}
