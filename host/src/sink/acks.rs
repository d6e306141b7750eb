//! Which events Kafka has fully acknowledged, in order. Deliveries complete
//! out of order (partitions, retries); progress may only be claimed up to
//! the first event that still has a record in flight, or a crash there
//! would skip it. This is the watermark behind the checkpoint-lag metric.

use std::collections::VecDeque;

#[derive(Default)]
pub struct Acks {
    /// Sequence number of `pending[0]`.
    base: u64,
    /// Per event: its key, its time in ns since the epoch, and how many of
    /// its records are still unacknowledged.
    pending: VecDeque<(String, i64, u32)>,
    /// Time of the last event before which everything is acknowledged.
    watermark: i64,
}

impl Acks {
    /// An event with `records` records to deliver; returns its sequence
    /// number for [`Acks::settle`]. An event with none (dropped, failed) is
    /// done at once.
    pub fn begin(&mut self, key: &str, event_time: i64, records: u32) -> u64 {
        let seq = self.base + self.pending.len() as u64;
        self.pending
            .push_back((key.to_string(), event_time, records));
        self.advance();
        seq
    }

    /// One record of event `seq` is settled (acknowledged, or failed and
    /// handled by its policy).
    pub fn settle(&mut self, seq: u64) {
        if let Some(slot) = seq
            .checked_sub(self.base)
            .and_then(|i| self.pending.get_mut(i as usize))
        {
            slot.2 = slot.2.saturating_sub(1);
        }
        self.advance();
    }

    /// Another record for event `seq` (its dead-letter record, in place of
    /// the one that failed: the count is unchanged by settle + add).
    pub fn add(&mut self, seq: u64) {
        if let Some(slot) = seq
            .checked_sub(self.base)
            .and_then(|i| self.pending.get_mut(i as usize))
        {
            slot.2 += 1;
        }
    }

    /// Events past the watermark that are fully delivered, as (key, time):
    /// what a restart must not send again.
    pub fn delivered_beyond(&self) -> Vec<(String, i64)> {
        self.pending
            .iter()
            .filter(|(_, _, left)| *left == 0)
            .map(|(k, t, _)| (k.clone(), *t))
            .collect()
    }

    fn advance(&mut self) {
        while let Some((_, time, 0)) = self.pending.front() {
            self.watermark = self.watermark.max(*time);
            self.pending.pop_front();
            self.base += 1;
        }
    }

    /// The time of the newest event such that it and every event before it
    /// are fully delivered; 0 before the first.
    pub fn watermark(&self) -> i64 {
        self.watermark
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

    #[test]
    fn watermark_waits_for_the_oldest_event() {
        let mut a = Acks::default();
        let e1 = a.begin("k", 100, 2);
        let e2 = a.begin("k", 200, 1);
        let _dropped = a.begin("k", 300, 0);
        // The later event completes first: no progress yet.
        a.settle(e2);
        assert_eq!(a.watermark(), 0);
        a.settle(e1);
        assert_eq!(a.watermark(), 0, "one record of e1 still in flight");
        assert_eq!(
            a.delivered_beyond(),
            [("k".to_string(), 200), ("k".to_string(), 300)]
        );
        a.settle(e1);
        // e1, then e2 (done), then the dropped one: all through 300.
        assert_eq!(a.watermark(), 300);
        assert_eq!(a.in_flight(), 0);
    }

    #[test]
    fn events_with_no_records_complete_at_once() {
        let mut a = Acks::default();
        a.begin("k", 50, 0);
        assert_eq!(a.watermark(), 50);
        let e = a.begin("k", 60, 1);
        a.begin("k", 70, 0);
        assert_eq!(a.watermark(), 50);
        a.settle(e);
        assert_eq!(a.watermark(), 70);
    }

    #[test]
    fn stale_sequence_numbers_are_ignored() {
        let mut a = Acks::default();
        let e = a.begin("k", 10, 1);
        a.settle(e);
        a.settle(e); // already gone: no effect, no panic
        let f = a.begin("k", 20, 1);
        assert_eq!(a.in_flight(), 1);
        a.settle(f);
        assert_eq!(a.watermark(), 20);
    }
}
