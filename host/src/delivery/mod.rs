//! The delivery wing: what every sink shares between "the transform stage
//! made these records" and "the server has them".
//!
//! - `tracker.rs`: which events are fully delivered, and so the resume point
//!   (events are registered by the source, settled by the sink);
//! - `checkpoint.rs`: that resume point kept on disk across restarts;
//! - `policy.rs`: `on_error`, applied to an event a transform failed on;
//! - `dead_letter.rs`: the records that say what failed and why;
//! - [`Ledger`]: the books a sink keeps while records are in flight, tying
//!   the above together, with a [`DeliveryObserver`] for those who measure.

pub mod checkpoint;
pub mod dead_letter;
pub mod policy;
mod tracker;

pub use checkpoint::{CheckpointConfig, CheckpointWriter};
pub use policy::OnError;
pub use tracker::{SharedTracker, Tracker};

use crate::metrics;
use anyhow::Result;
use cvp_transform_engine::KafkaRecord;
use prometheus_client::metrics::counter::Counter;

/// What the transform stage hands the sink for one event.
pub struct Delivery {
    /// The event's number in the delivery tracker.
    pub seq: u64,
    /// The CVP event key, for log lines about this event.
    pub event_key: String,
    /// When the change happened at CVP (ns since the epoch), for latency;
    /// `None` for a deletion, whose merged event carries the time of its
    /// last state, not of the deletion.
    pub changed_at: Option<i64>,
    pub outcome: Outcome,
    /// Its bytes' share of `pipeline.max_pending_bytes`, given back when
    /// the sink drops it.
    pub held: crate::pipeline::Held,
}

/// What became of one event in the transform stage.
#[derive(Debug)]
pub enum Outcome {
    /// Records to deliver, in order. Empty: a transform dropped it.
    Records(Vec<KafkaRecord>),
    /// A transform failed on it; its policy says what to do.
    Failed(TransformFailure),
}

#[derive(Debug)]
pub struct TransformFailure {
    pub transform: String,
    /// trap, timeout, memory, contract or error (the guest returned one).
    pub reason: &'static str,
    pub error: String,
    pub policy: OnError,
    /// The merged event as JSON, only when the policy is `dead_letter`.
    pub event_json: Option<Vec<u8>>,
}

/// A record for the sink to send, and whose event it is.
#[derive(Debug)]
pub struct ToSend {
    /// The event's number in the tracker.
    pub seq: u64,
    pub event_key: String,
    /// When the event changed at CVP (`None`: a deletion or a dead letter).
    pub changed_at: Option<i64>,
    /// Its place among the event's records.
    pub index: u32,
    pub record: KafkaRecord,
    /// This record is itself a dead letter: if it fails, it is lost (no
    /// dead letters of dead letters).
    pub dead_letter: bool,
}

/// Counts for the end-of-run summary and tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct DeliveryStats {
    pub events: u64,
    pub produced: u64,
    pub dropped: u64,
    pub failed_transform: u64,
    pub failed_delivery: u64,
    /// The last checkpoint write of the run failed.
    pub checkpoint_failed: bool,
}

/// Told of every acknowledged record: how benchmarks measure latency and
/// throughput without fields of their own in the sinks.
pub trait DeliveryObserver: Send + Sync {
    /// A record of an event that changed at `changed_at` (ns since the
    /// epoch; `None` for deletions and dead letters) was acknowledged.
    fn acknowledged(&self, changed_at: Option<i64>);
}

/// The books a sink keeps: counts, the tracker, the checkpoint writer, every
/// sink's per-topic metrics, and an observer if someone is measuring.
pub struct Ledger {
    pub stats: DeliveryStats,
    pub tracker: SharedTracker,
    checkpoint: Option<CheckpointWriter>,
    observer: Option<std::sync::Arc<dyn DeliveryObserver>>,
    /// The `sink` label of the per-topic series.
    sink: &'static str,
    /// Per topic: `sink_records_delivered` and `sink_delivery_failures`,
    /// looked up once per topic rather than per record.
    topics: std::collections::HashMap<String, (Counter, Counter)>,
    /// Topics beyond `metrics::MAX_TOPIC_SERIES`.
    other_topics: Option<(Counter, Counter)>,
    /// Acknowledgements the observer hears of at the next commit (see
    /// [`Ledger::observe_at_commit`]).
    unobserved: Option<Vec<Option<i64>>>,
}

impl Ledger {
    /// The books of the sink named `sink` (the metrics' label).
    pub fn new(
        sink: &'static str,
        tracker: SharedTracker,
        checkpoint: Option<CheckpointWriter>,
        observer: Option<std::sync::Arc<dyn DeliveryObserver>>,
    ) -> Ledger {
        Ledger {
            stats: DeliveryStats::default(),
            tracker,
            checkpoint,
            observer,
            sink,
            topics: std::collections::HashMap::new(),
            other_topics: None,
            unobserved: None,
        }
    }

    /// The per-topic series of these topics exist from now on, at 0: a
    /// dashboard shows 0, not "no data", for the configured topics.
    pub fn count_topics<'a>(&mut self, topics: impl IntoIterator<Item = &'a String>) {
        for topic in topics {
            self.counters(topic);
        }
    }

    /// The topic's series: its label escaped, and a topic per event folded
    /// into `other` (`metrics::topic`), so neither the exposition nor this
    /// map grows without bound.
    fn counters(&mut self, topic: &str) -> &(Counter, Counter) {
        let sink = self.sink;
        let series = |label: &str| {
            let m = metrics::get();
            let l = metrics::labels([("sink", sink), ("topic", label)]);
            (
                m.sink_records_delivered.get_or_create(&l).clone(),
                m.sink_delivery_failures.get_or_create(&l).clone(),
            )
        };
        if !self.topics.contains_key(topic) && self.topics.len() >= metrics::MAX_TOPIC_SERIES {
            return self.other_topics.get_or_insert_with(|| series("other"));
        }
        self.topics
            .entry(topic.to_string())
            .or_insert_with(|| series(&metrics::topic(topic)))
    }

    /// How often [`Ledger::publish_progress`] should run: the checkpoint's
    /// interval, else once a second for the gauges.
    pub fn progress_interval(&self) -> std::time::Duration {
        self.checkpoint
            .as_ref()
            .map_or(std::time::Duration::from_secs(1), |c| c.interval())
    }

    /// Takes one event's outcome: counts it, tells the tracker how many
    /// records to wait for, applies its transform's `on_error` (an `Err`
    /// stops the pipeline), and returns what the sink is to send: its
    /// records, or the dead letter that takes their place (to
    /// `dead_letter_topic`, when the policy and the sink have one).
    pub fn accept(&mut self, d: Delivery, dead_letter_topic: Option<&str>) -> Result<Vec<ToSend>> {
        self.stats.events += 1;
        let Delivery {
            seq,
            event_key,
            changed_at,
            outcome,
            ..
        } = d;
        match outcome {
            Outcome::Records(records) => {
                if records.is_empty() {
                    self.stats.dropped += 1;
                }
                self.expect(seq, records.len() as u32);
                Ok(records
                    .into_iter()
                    .enumerate()
                    .map(|(index, record)| ToSend {
                        seq,
                        event_key: event_key.clone(),
                        changed_at,
                        index: index as u32,
                        record,
                        dead_letter: false,
                    })
                    .collect())
            }
            Outcome::Failed(f) => {
                policy::transform_failed(&event_key, &f, &mut self.stats)?;
                match (f.policy, dead_letter_topic) {
                    (OnError::DeadLetter, Some(topic)) => {
                        let record = dead_letter::transform_failed(
                            topic,
                            &event_key,
                            f.event_json,
                            &f.transform,
                            f.reason,
                            &f.error,
                        );
                        dead_letter::count(&f.transform, f.reason);
                        self.expect(seq, 1);
                        Ok(vec![ToSend {
                            seq,
                            event_key,
                            // A dead letter's latency is not the pipeline's.
                            changed_at: None,
                            index: 0,
                            record,
                            dead_letter: true,
                        }])
                    }
                    _ => {
                        self.expect(seq, 0);
                        Ok(Vec::new())
                    }
                }
            }
        }
    }

    /// The transform stage made `records` records of event `seq`.
    pub fn expect(&mut self, seq: u64, records: u32) {
        self.tracker.lock().expect(seq, records);
    }

    /// One record of event `seq`, bound for `topic`, is acknowledged by the
    /// server.
    pub fn acknowledged(&mut self, seq: u64, changed_at: Option<i64>, topic: &str) {
        self.stats.produced += 1;
        self.counters(topic).0.inc();
        if let Some(o) = &self.observer {
            match &mut self.unobserved {
                Some(held) => held.push(changed_at),
                None => o.acknowledged(changed_at),
            }
        }
        self.tracker.lock().settle(seq);
    }

    /// For a sink whose records are seen only when it commits (Kafka with
    /// exactly_once): the observer hears of acknowledgements at
    /// [`Ledger::committed`], not as they come.
    pub fn observe_at_commit(&mut self) {
        self.unobserved.get_or_insert_with(Vec::new);
    }

    /// What was acknowledged since the last commit is now visible.
    pub fn committed(&mut self) {
        if let (Some(o), Some(held)) = (&self.observer, &mut self.unobserved) {
            for changed_at in held.drain(..) {
                o.acknowledged(changed_at);
            }
        }
    }

    /// One record of event `seq`, bound for `topic`, is settled without
    /// being delivered (lost, and said so in the log).
    pub fn given_up(&mut self, seq: u64, topic: &str) {
        self.stats.failed_delivery += 1;
        self.counters(topic).1.inc();
        self.tracker.lock().settle(seq);
    }

    /// One record of event `seq`, bound for `topic`, failed and is replaced
    /// by a dead letter: the event still waits for one record.
    pub fn replaced_by_dead_letter(&mut self, seq: u64, topic: &str) {
        self.stats.failed_delivery += 1;
        self.counters(topic).1.inc();
        let mut t = self.tracker.lock();
        t.add(seq);
        t.settle(seq);
    }

    /// The delivered-up-to gauge and the checkpoint: the resume point scans
    /// the events in flight, so on a timer (and at the end), not per batch.
    pub fn publish_progress(&mut self) {
        metrics::get().set_delivered_up_to(self.tracker.lock().resume_point());
        if let Some(cp) = &mut self.checkpoint {
            cp.maybe_write(&self.tracker, false);
        }
    }

    /// The checkpoint as things stand (what `checkpoint:` would write now),
    /// for a sink that keeps it elsewhere (Kafka, with exactly_once);
    /// `None` before the first delivered event.
    pub fn checkpoint_now(&self) -> Option<checkpoint::Checkpoint> {
        checkpoint::Checkpoint::of(&self.tracker.lock())
    }

    /// At the end of a run: the last progress, the checkpoint written
    /// whatever its interval (a failure is in the stats: the run's exit
    /// status reports it).
    pub fn finish(&mut self) -> DeliveryStats {
        metrics::get().set_delivered_up_to(self.tracker.lock().resume_point());
        if let Some(cp) = &mut self.checkpoint {
            self.stats.checkpoint_failed = !cp.maybe_write(&self.tracker, true);
        }
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A topic a transform chose reaches the exposition as one escaped
    /// series: it cannot end the exposition early or forge another series.
    #[test]
    fn a_forged_topic_is_one_escaped_series() {
        let mut ledger = Ledger::new("nats", SharedTracker::default(), None, None);
        let seq = {
            let mut t = ledger.tracker.lock();
            let seq = t.register("k", 1);
            t.expect(seq, 1);
            seq
        };
        ledger.acknowledged(seq, Some(1), "evil\"} 9\n# EOF\n");
        let text = metrics::get().encode();
        assert_eq!(text.lines().filter(|l| *l == "# EOF").count(), 1);
        assert!(
            text.contains(
                r#"sink_records_delivered_total{sink="nats",topic="evil\"} 9\n# EOF\n"} 1"#
            ),
            "{text}"
        );
    }
}
