//! What the source knows about what was already delivered, to forward what
//! changed while it was not connected. CVP's Subscribe is state based: on
//! every connection it sends the current state as INITIAL, not the changes
//! that led to it, so the source compares that state with what it saw.

use crate::delivery::checkpoint::Checkpoint;
use crate::event::SourceEvent;
use std::collections::HashSet;
use std::time::Duration;

#[derive(Default)]
pub struct Resume {
    /// Events that changed after this time (ns) and are not in the cache
    /// are news. `None` before the first sync without a checkpoint: the
    /// seed's behaviour, only what happens after start-up.
    pub(super) after: Option<i64>,
    /// Delivered already though after `after` (from the checkpoint).
    pub(super) skip: HashSet<(String, i64)>,
    /// The newest event time seen; becomes `after` at each sync.
    pub(super) newest: i64,
}

impl Resume {
    /// From a checkpoint (a restart), else from `since` ago (a backfill),
    /// else from now on.
    pub fn new(checkpoint: Option<&Checkpoint>, since: Option<Duration>) -> Resume {
        let mut r = Resume::default();
        if let Some(cp) = checkpoint {
            r.after = Some(cp.delivered_up_to);
            r.skip = cp.also_delivered.iter().cloned().collect();
        } else if let Some(window) = since {
            let from = std::time::SystemTime::now()
                .checked_sub(window)
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as i64);
            r.after = Some(from);
        }
        r
    }

    /// Whether an INITIAL entry is news to Kafka: it changed after what we
    /// last saw of it (`cached`), or, not cached, after the resume point,
    /// and it is not among the events the checkpoint says were delivered.
    pub(super) fn changed_while_away(
        &self,
        ev: &SourceEvent,
        time: i64,
        cached: Option<i64>,
    ) -> bool {
        let newer = match cached {
            Some(t) => time > t,
            None => self.after.is_some_and(|after| time > after),
        };
        newer && !self.skip.contains(&(ev.key().to_string(), time))
    }

    /// The initial sync is complete: what was seen becomes the resume point
    /// of the next reconnect.
    pub(super) fn synced(&mut self) {
        self.after = Some(self.after.unwrap_or(i64::MIN).max(self.newest));
        self.skip.clear();
    }
}
