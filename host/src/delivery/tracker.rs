//! Which events the sink has fully delivered, and so how far a restart may
//! skip. Events are registered when the source emits them (so those still
//! in the transform stage count as undelivered) and settled as the server
//! acknowledges their records, out of order.
//!
//! The resume point R is a time such that every event with a later time
//! may be undelivered, and every undelivered event has a later time: a
//! restart forwards what changed after R. Event times need not arrive in
//! order (a catch-up after a reconnect comes in CVP's state order), so R is
//! bounded by the oldest event still in flight, not by arrival order.
//!
//! An event whose time cannot be trusted (dated in the future: a CVP or
//! device clock gone wrong) is tracked without its time: it neither moves R
//! forward when delivered nor holds it back while in flight. One event
//! dated 2126 once moved R to 2126, and a restart then skipped everything.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

/// Records not yet known: the event is still in the transform stage.
const UNKNOWN: u32 = u32::MAX;

/// The time of an event registered without one ([`Tracker::register_untimed`]).
const NO_TIME: i64 = i64::MIN;

#[derive(Default)]
pub struct Tracker {
    /// Sequence number of `pending[0]`.
    base: u64,
    /// Per event: its key, its time in ns since the epoch, and how many of
    /// its records are still unacknowledged.
    pending: VecDeque<(String, i64, u32)>,
    /// The newest time of the events that left `pending` fully delivered.
    done_max: i64,
    /// A resume point R is never earlier than this (the checkpoint this
    /// run started from: everything up to it was delivered before).
    floor: i64,
}

/// The tracker shared by the source (which registers events) and the sink
/// (which settles them).
#[derive(Clone, Default)]
pub struct SharedTracker(Arc<Mutex<Tracker>>);

impl SharedTracker {
    pub fn lock(&self) -> MutexGuard<'_, Tracker> {
        // Poisoned only by a panic elsewhere mid-update: counts stay usable.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Tracker {
    /// Starts from a checkpoint's resume point.
    pub fn set_floor(&mut self, floor: i64) {
        self.floor = floor;
    }

    /// The source emitted an event; its records are not known yet.
    pub fn register(&mut self, key: &str, event_time: i64) -> u64 {
        let seq = self.base + self.pending.len() as u64;
        self.pending
            .push_back((key.to_string(), event_time, UNKNOWN));
        seq
    }

    /// The source emitted an event whose time is not to be trusted: it is
    /// waited for like any other, but its time is not the resume point's.
    pub fn register_untimed(&mut self, key: &str) -> u64 {
        self.register(key, NO_TIME)
    }

    fn slot(&mut self, seq: u64) -> Option<&mut (String, i64, u32)> {
        seq.checked_sub(self.base)
            .and_then(|i| self.pending.get_mut(i as usize))
    }

    /// The transform stage made `records` records of event `seq` (0: it
    /// was dropped, or failed and its policy is handled).
    pub fn expect(&mut self, seq: u64, records: u32) {
        if let Some(slot) = self.slot(seq) {
            slot.2 = records;
        }
        self.advance();
    }

    /// One record of event `seq` is settled (acknowledged, or failed and
    /// handled by its policy).
    pub fn settle(&mut self, seq: u64) {
        if let Some(slot) = self.slot(seq) {
            if slot.2 != UNKNOWN {
                slot.2 = slot.2.saturating_sub(1);
            }
        }
        self.advance();
    }

    /// Another record for event `seq` (its dead-letter record, in place of
    /// the one that failed: the count is unchanged by settle + add).
    pub fn add(&mut self, seq: u64) {
        if let Some(slot) = self.slot(seq) {
            if slot.2 != UNKNOWN {
                slot.2 += 1;
            }
        }
    }

    fn advance(&mut self) {
        while let Some((_, time, 0)) = self.pending.front() {
            self.done_max = self.done_max.max(*time);
            self.pending.pop_front();
            self.base += 1;
        }
    }

    /// R (see the module doc): 0 while nothing is known to be delivered.
    pub fn resume_point(&self) -> i64 {
        let mut done = self.done_max;
        let mut oldest_open = i64::MAX;
        for (_, t, left) in &self.pending {
            if *t == NO_TIME {
                continue;
            }
            if *left == 0 {
                done = done.max(*t);
            } else {
                oldest_open = oldest_open.min(*t);
            }
        }
        done.min(oldest_open.saturating_sub(1)).max(self.floor)
    }

    /// Events after the resume point that are fully delivered, as (key,
    /// time): what a restart must not send again.
    pub fn delivered_beyond(&self, resume_point: i64) -> Vec<(String, i64)> {
        self.pending
            .iter()
            .filter(|(_, t, left)| *left == 0 && *t > resume_point && *t != NO_TIME)
            .map(|(k, t, _)| (k.clone(), *t))
            .collect()
    }

    /// Events not yet fully delivered.
    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn begin(a: &mut Tracker, time: i64, records: u32) -> u64 {
        let seq = a.register("k", time);
        a.expect(seq, records);
        seq
    }

    #[test]
    fn resume_point_waits_for_the_oldest_event() {
        let mut a = Tracker::default();
        let e1 = begin(&mut a, 100, 2);
        let e2 = begin(&mut a, 200, 1);
        let _dropped = begin(&mut a, 300, 0);
        // The later events complete first: e1 (time 100) is still open.
        a.settle(e2);
        assert_eq!(a.resume_point(), 99);
        a.settle(e1);
        assert_eq!(a.resume_point(), 99, "one record of e1 still in flight");
        assert_eq!(
            a.delivered_beyond(99),
            [("k".to_string(), 200), ("k".to_string(), 300)]
        );
        a.settle(e1);
        assert_eq!(a.resume_point(), 300);
        assert_eq!(a.in_flight(), 0);
    }

    /// A catch-up arrives in CVP's state order, not time order: an older
    /// event behind a newer one holds the resume point back, even while it
    /// is still in the transform stage.
    #[test]
    fn an_older_event_arriving_later_holds_the_resume_point() {
        let mut a = Tracker::default();
        let newer = begin(&mut a, 500, 1);
        let older = a.register("k", 100); // not yet out of the transforms
        a.settle(newer);
        assert_eq!(a.resume_point(), 99);
        a.expect(older, 1);
        assert_eq!(a.resume_point(), 99);
        a.settle(older);
        assert_eq!(a.resume_point(), 500);
    }

    #[test]
    fn nothing_known_is_zero_and_the_floor_holds() {
        let mut a = Tracker::default();
        assert_eq!(a.resume_point(), 0);
        a.set_floor(1000);
        let e = begin(&mut a, 2000, 1);
        assert_eq!(a.resume_point(), 1000);
        a.settle(e);
        assert_eq!(a.resume_point(), 2000);
    }

    /// A future-dated event (registered untimed) neither advances the
    /// resume point once delivered nor holds it back while in flight.
    #[test]
    fn an_untimed_event_neither_advances_nor_holds_the_resume_point() {
        let mut a = Tracker::default();
        let e1 = begin(&mut a, 100, 1);
        let future = a.register_untimed("f");
        a.expect(future, 1);
        let e2 = begin(&mut a, 200, 1);
        a.settle(e1);
        a.settle(e2);
        assert_eq!(
            a.resume_point(),
            200,
            "the open untimed event holds nothing"
        );
        a.settle(future);
        assert_eq!(a.resume_point(), 200);
        assert_eq!(a.in_flight(), 0);
        assert!(a.delivered_beyond(0).is_empty());
    }

    #[test]
    fn stale_sequence_numbers_are_ignored() {
        let mut a = Tracker::default();
        let e = begin(&mut a, 10, 1);
        a.settle(e);
        a.settle(e); // already gone: no effect, no panic
        let f = begin(&mut a, 20, 1);
        assert_eq!(a.in_flight(), 1);
        a.settle(f);
        assert_eq!(a.resume_point(), 20);
    }
}
