//! The delivery loop of a sink whose server acknowledges each record on its
//! own (JetStream's publish ack, Redis's XADD reply): from deliveries to
//! settled records in the [`Ledger`], for any [`Transport`].
//!
//! Every record is kept until its server acknowledges it. A failure that
//! may pass (connection lost, acknowledgement timed out, server starting)
//! sends it again after a backoff, for as long as it takes; a failure that
//! will not pass (too large, refused) sends a dead letter in its place, or
//! gives it up with an error in the log. At most `max_in_flight` records
//! are kept: at the bound no more deliveries are taken from the channel, so
//! the source waits (backpressure) while the server is slow or away. On
//! shutdown, outstanding records get `flush_timeout` to be acknowledged; the
//! rest are left to the checkpoint, which never passes them.
//!
//! Shared by the NATS and Redis sinks; a new sink whose server acknowledges
//! each record can implement [`Transport`] and run the same loop.

use crate::delivery::{dead_letter, Delivery, DeliveryStats, Ledger};
use crate::metrics;
use anyhow::Result;
use cvp_transform_engine::KafkaRecord;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One record on its way, with what identifies it across resends.
pub(crate) struct Outgoing {
    pub record: KafkaRecord,
    pub event_key: String,
    /// When the event changed at CVP (`None`: a deletion or a dead letter).
    pub changed_at: Option<i64>,
    /// Its place among the event's records.
    pub index: u32,
    /// This record is itself a dead letter: if it fails, it is lost.
    pub dead_letter: bool,
}

/// What the server said to a record.
pub(crate) struct Ack {
    /// The server recognised a resend and kept only the first copy.
    pub duplicate: bool,
}

/// Why a record is not (yet) delivered.
pub(crate) enum SendError {
    /// May pass (connection lost, timeout, server starting): sent again.
    Retry(String),
    /// Will not pass: dead-lettered or given up.
    Final { error: String, too_large: bool },
}

/// How a sink reaches its server.
pub(crate) trait Transport {
    /// Sends one record; the future resolves with the server's answer. The
    /// futures are polled in the order they are made, so records go out in
    /// that order.
    fn send(&self, out: &Outgoing) -> BoxFuture<'static, Result<Ack, SendError>>;
}

/// The loop's settings.
pub(crate) struct Settings {
    /// `sink=` in the metrics, `sink.NAME` in messages.
    pub sink: &'static str,
    /// What the server is called in log lines.
    pub server: &'static str,
    pub default_topic: String,
    pub dead_letter_topic: Option<String>,
    pub max_in_flight: usize,
    pub flush_timeout: Duration,
}

struct Entry {
    seq: u64,
    out: Outgoing,
    attempts: u32,
}

struct State<'a, T: Transport> {
    settings: &'a Settings,
    transport: &'a T,
    ledger: Ledger,
    entries: HashMap<u64, Entry>,
    next_id: u64,
    pending: FuturesUnordered<BoxFuture<'static, (u64, Result<Ack, SendError>)>>,
    /// Records waiting to be sent again: (when, id).
    retries: BTreeSet<(Instant, u64)>,
    /// In a streak of retriable failures (logged once per streak).
    failing: bool,
    duplicates: u64,
}

/// Runs the loop until the channel closes (or shutdown while full), then
/// drains within the flush timeout.
pub(crate) async fn run<T: Transport>(
    settings: &Settings,
    transport: &T,
    mut rx: mpsc::Receiver<Vec<Delivery>>,
    ledger: Ledger,
    shutdown: CancellationToken,
) -> Result<DeliveryStats> {
    let every = ledger.progress_interval();
    let mut st = State {
        settings,
        transport,
        ledger,
        entries: HashMap::new(),
        next_id: 0,
        pending: FuturesUnordered::new(),
        retries: BTreeSet::new(),
        failing: false,
        duplicates: 0,
    };
    st.ledger
        .count_topics(std::iter::once(&settings.default_topic).chain(&settings.dead_letter_topic));
    st.publish_in_flight();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);

    let result: Result<()> = async {
        loop {
            let full = st.entries.len() >= settings.max_in_flight;
            let next_retry = st.retries.first().map(|(t, _)| *t);
            tokio::select! {
                _ = tick.tick() => {
                    st.ledger.publish_progress();
                    st.publish_in_flight();
                }
                Some((id, result)) = st.pending.next(), if !st.pending.is_empty() => {
                    st.settle(id, result);
                }
                _ = tokio::time::sleep_until(next_retry.unwrap_or(far)), if next_retry.is_some() => {
                    st.resend_due();
                }
                batch = rx.recv(), if !full => {
                    let Some(batch) = batch else { return Ok(()) };
                    for d in batch {
                        st.deliver(d)?;
                    }
                    st.publish_in_flight();
                }
                // Full and asked to stop: the server is slow or away. What
                // was not taken is sent after the next start.
                _ = shutdown.cancelled(), if full => {
                    tracing::warn!(
                        "shutting down while {} has not acknowledged {} records: the events not yet delivered are sent after the next start, from the checkpoint",
                        settings.server,
                        st.entries.len()
                    );
                    return Ok(());
                }
            }
        }
    }
    .await;

    // Drain what is in flight, bounded by the flush timeout.
    let drain = async {
        while !st.entries.is_empty() {
            let next_retry = st.retries.first().map(|(t, _)| *t);
            tokio::select! {
                Some((id, result)) = st.pending.next(), if !st.pending.is_empty() => {
                    st.settle(id, result);
                }
                _ = tokio::time::sleep_until(next_retry.unwrap_or(far)), if next_retry.is_some() => {
                    st.resend_due();
                }
                _ = tick.tick() => st.ledger.publish_progress(),
            }
        }
    };
    if tokio::time::timeout(settings.flush_timeout, drain)
        .await
        .is_err()
    {
        tracing::error!(
            "{} did not acknowledge {} records within sink.{}.flush_timeout ({}); the checkpoint stops before them, so a restart sends them again",
            settings.server,
            st.entries.len(),
            settings.sink,
            humantime::format_duration(settings.flush_timeout)
        );
    }
    st.publish_in_flight();
    if st.duplicates > 0 {
        tracing::info!(
            "{} recognised {} resent records as duplicates and kept one copy of each",
            settings.server,
            st.duplicates
        );
    }
    let stats = st.ledger.finish();
    result.map(|()| stats)
}

impl<T: Transport> State<'_, T> {
    fn deliver(&mut self, d: Delivery) -> Result<()> {
        let dead_letter_topic = self.settings.dead_letter_topic.as_deref();
        for out in self.ledger.accept(d, dead_letter_topic)? {
            let seq = out.seq;
            let out = Outgoing {
                record: out.record,
                event_key: out.event_key,
                changed_at: out.changed_at,
                index: out.index,
                dead_letter: out.dead_letter,
            };
            self.add(seq, out);
        }
        Ok(())
    }

    fn add(&mut self, seq: u64, out: Outgoing) {
        let id = self.next_id;
        self.next_id += 1;
        self.entries.insert(
            id,
            Entry {
                seq,
                out,
                attempts: 0,
            },
        );
        self.send(id);
    }

    fn send(&mut self, id: u64) {
        let Some(e) = self.entries.get(&id) else {
            return;
        };
        let fut = self.transport.send(&e.out);
        self.pending.push(Box::pin(async move { (id, fut.await) }));
    }

    fn resend_due(&mut self) {
        let now = Instant::now();
        while let Some(&(at, id)) = self.retries.first() {
            if at > now {
                break;
            }
            self.retries.pop_first();
            self.send(id);
        }
    }

    fn settle(&mut self, id: u64, result: Result<Ack, SendError>) {
        match result {
            Ok(ack) => {
                let Some(e) = self.entries.remove(&id) else {
                    return;
                };
                if self.failing {
                    self.failing = false;
                    tracing::info!("{} acknowledges records again", self.settings.server);
                }
                if ack.duplicate {
                    self.duplicates += 1;
                }
                let changed_at = if e.out.dead_letter {
                    None
                } else {
                    e.out.changed_at
                };
                self.ledger
                    .acknowledged(e.seq, changed_at, &e.out.record.topic);
            }
            Err(SendError::Retry(error)) => {
                let Some(e) = self.entries.get_mut(&id) else {
                    return;
                };
                e.attempts += 1;
                // 100 ms, doubling, at most 2 s: quick after a blip, gentle
                // on a server that is away.
                let backoff = Duration::from_millis(100 << e.attempts.min(5).saturating_sub(1))
                    .min(Duration::from_secs(2));
                if !self.failing {
                    self.failing = true;
                    tracing::warn!(
                        event_key = e.out.event_key,
                        "{} did not acknowledge a record ({error}); sending it again, and every unacknowledged record, until it does",
                        self.settings.server
                    );
                }
                self.retries.insert((Instant::now() + backoff, id));
            }
            Err(SendError::Final { error, too_large }) => {
                let Some(e) = self.entries.remove(&id) else {
                    return;
                };
                let topic = e.out.record.topic.clone();
                let server = self.settings.server;
                let to = self
                    .settings
                    .dead_letter_topic
                    .clone()
                    .filter(|_| !e.out.dead_letter);
                match to {
                    Some(dlq) => {
                        tracing::error!(
                            event_key = e.out.event_key,
                            topic,
                            "{server} will not take the record for event {}: {error}; sending it to the dead-letter topic {dlq}",
                            e.out.event_key
                        );
                        let letter = dead_letter::undeliverable(
                            &dlq,
                            &e.out.event_key,
                            e.out.record,
                            &error,
                            too_large,
                        );
                        dead_letter::count(self.settings.sink, "undeliverable");
                        // The dead letter takes the failed record's place
                        // among the event's records.
                        self.ledger.replaced_by_dead_letter(e.seq, &topic);
                        let out = Outgoing {
                            record: letter,
                            event_key: e.out.event_key,
                            changed_at: e.out.changed_at,
                            index: e.out.index,
                            dead_letter: true,
                        };
                        self.add(e.seq, out);
                    }
                    None => {
                        tracing::error!(
                            event_key = e.out.event_key,
                            topic,
                            "{server} did not accept the record for event {}: {error}{}",
                            e.out.event_key,
                            if e.out.dead_letter {
                                " (it was a dead letter; it is lost)".to_string()
                            } else {
                                format!(
                                    " (no sink.{}.dead_letter_topic: it is lost)",
                                    self.settings.sink
                                )
                            }
                        );
                        self.ledger.given_up(e.seq, &topic);
                    }
                }
            }
        }
    }

    fn publish_in_flight(&self) {
        metrics::get()
            .sink_in_flight
            .get_or_create(&metrics::labels([("sink", self.settings.sink)]))
            .set(self.entries.len() as i64);
    }
}

/// A stable 64-bit FNV-1a hash: an identity for a record that has no time
/// (a deletion), the same in every process and release.
pub(crate) fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for b in p.iter().chain(&[0xff]) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    h
}
