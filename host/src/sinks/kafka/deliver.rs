//! From deliveries to acknowledgements: each event's records are enqueued
//! with librdkafka as they come and their deliveries awaited concurrently;
//! each acknowledgement settles a record in the ledger. A record Kafka will
//! not take goes to the dead-letter topic in its place.

use super::KafkaSink;
use crate::delivery::{dead_letter, Delivery, DeliveryStats, Ledger};
use crate::metrics;
use anyhow::Result;
use cvp_transform_engine::{Header as WitHeader, KafkaRecord};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use prometheus_client::metrics::counter::Counter;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::FutureRecord;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One record's delivery: what it settles to, and for which event.
struct Settled {
    origin: OwnedOrigin,
    topic: String,
    sent: Instant,
    /// This record is itself a dead letter: if it fails, it is lost.
    dead_letter: bool,
    result: Result<(i32, i64), Undelivered>,
}

/// A record Kafka will not take, and why.
struct Undelivered {
    error: String,
    code: Option<RDKafkaErrorCode>,
    /// The record as it was (librdkafka hands it back with the error).
    record: Option<KafkaRecord>,
}

/// The event a record belongs to.
struct RecordOrigin<'a> {
    seq: u64,
    event_key: &'a str,
    changed_at: Option<i64>,
}

struct OwnedOrigin {
    seq: u64,
    event_key: String,
    changed_at: Option<i64>,
}

impl<'a> RecordOrigin<'a> {
    /// A dead letter's latency is not the pipeline's: not measured.
    fn dead_letter(seq: u64, event_key: &'a str) -> RecordOrigin<'a> {
        RecordOrigin {
            seq,
            event_key,
            changed_at: None,
        }
    }

    fn to_owned(&self) -> OwnedOrigin {
        OwnedOrigin {
            seq: self.seq,
            event_key: self.event_key.to_string(),
            changed_at: self.changed_at,
        }
    }
}

type Pending = Pin<Box<dyn Future<Output = Settled> + Send>>;

/// What the sink keeps while records are in flight.
struct SendState {
    ledger: Ledger,
    /// Per-topic counters of Kafka's own family, looked up once per topic
    /// (every sink's per-topic series are the ledger's).
    produced: HashMap<String, Counter>,
    /// Records that failed and are to be re-sent to the dead-letter topic.
    redirect: Vec<(u64, String, KafkaRecord)>,
    dead_letter_topic: Option<String>,
    /// Shutdown came while Kafka's queue was full (Kafka away): what was
    /// not handed over stays undelivered, for the next start.
    abandoned: bool,
    shutdown: CancellationToken,
    /// With exactly_once: records sent in the open transaction, and the
    /// resume point its last commit carried.
    in_transaction: usize,
    committed_up_to: i64,
}

impl KafkaSink {
    pub async fn run(
        self,
        mut rx: mpsc::Receiver<Vec<Delivery>>,
        ledger: Ledger,
        shutdown: CancellationToken,
    ) -> Result<DeliveryStats> {
        let every = ledger.progress_interval();
        let mut state = SendState {
            ledger,
            produced: HashMap::new(),
            redirect: Vec::new(),
            dead_letter_topic: self.dead_letter_topic.clone(),
            abandoned: false,
            shutdown,
            in_transaction: 0,
            committed_up_to: 0,
        };
        // The configured topics' series exist from the start, at 0.
        let m = metrics::get();
        for topic in std::iter::once(&self.topic).chain(&self.dead_letter_topic) {
            let l = metrics::labels([("topic", &metrics::topic(topic))]);
            let _ = m.kafka_delivery_failures.get_or_create(&l);
            let c = m.records_produced.get_or_create(&l).clone();
            state.produced.insert(topic.clone(), c);
        }
        state
            .ledger
            .count_topics(std::iter::once(&self.topic).chain(&self.dead_letter_topic));
        let mut pending: FuturesUnordered<Pending> = FuturesUnordered::new();
        // Progress made by the last acknowledgements of a burst must reach
        // the gauges and the checkpoint even when nothing follows them.
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let commit_every = self
            .exactly_once
            .as_ref()
            .map_or(Duration::from_secs(3600), |e| e.commit_interval);
        let mut commit_tick = tokio::time::interval(commit_every);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let transactional = self.exactly_once.is_some();
        if transactional {
            state.ledger.observe_at_commit();
        }
        let result: Result<()> = async {
            loop {
                tokio::select! {
                    _ = tick.tick() => state.ledger.publish_progress(),
                    _ = commit_tick.tick(), if transactional => {
                        self.commit(&mut pending, &mut state).await?;
                    }
                    Some(done) = pending.next(), if !pending.is_empty() => {
                        state.settle(done, pending.len());
                        self.redirect(&mut pending, &mut state).await;
                    }
                    batch = rx.recv() => {
                        let Some(batch) = batch else { return Ok(()) };
                        for d in batch {
                            self.deliver(d, &mut pending, &mut state).await?;
                            if state.abandoned {
                                break;
                            }
                        }
                        self.redirect(&mut pending, &mut state).await;
                        publish_queue_depth(pending.len());
                        if state.abandoned {
                            tracing::warn!("shutting down while Kafka takes nothing (its queue is full): the events not handed over are sent after the next start, from the checkpoint");
                            return Ok(());
                        }
                        if let Some(eos) = &self.exactly_once {
                            if state.in_transaction >= eos.commit_records {
                                self.commit(&mut pending, &mut state).await?;
                            }
                        }
                    }
                }
            }
        }
        .await;
        if transactional && result.is_err() {
            // A transaction that could not be committed (it is aborted), or
            // a stop: nothing more of it is claimed or committed.
            super::transaction::abort(&self.producer).await;
            return result.map(|()| DeliveryStats::default());
        }

        // Drain what is in flight, bounded by the flush timeout.
        let drain = async {
            while let Some(done) = pending.next().await {
                state.settle(done, pending.len());
                self.redirect(&mut pending, &mut state).await;
            }
        };
        let drained = tokio::time::timeout(self.flush_timeout, drain)
            .await
            .is_ok();
        if !drained {
            tracing::error!(
                "Kafka did not acknowledge every record within sink.kafka.flush_timeout ({}); the checkpoint stops before them, so a restart sends them again",
                humantime::format_duration(self.flush_timeout)
            );
        }
        publish_queue_depth(pending.len());
        if transactional {
            if drained {
                if let Err(e) = self.commit(&mut pending, &mut state).await {
                    super::transaction::abort(&self.producer).await;
                    return Err(e);
                }
            } else {
                // Committed, the records still in flight would be shown
                // and then sent again from the older checkpoint.
                super::transaction::abort(&self.producer).await;
            }
        }
        let stats = state.ledger.finish();
        result.map(|()| stats)
    }

    /// Exactly once: waits for every record of the open transaction, adds
    /// the checkpoint they complete (keyed by the group, in the checkpoint
    /// topic), commits, and opens the next transaction.
    async fn commit(
        &self,
        pending: &mut FuturesUnordered<Pending>,
        state: &mut SendState,
    ) -> Result<()> {
        self.commit_open(pending, state)
            .await
            .map_err(|e| super::transaction::fenced_or(&self.producer, e))
    }

    async fn commit_open(
        &self,
        pending: &mut FuturesUnordered<Pending>,
        state: &mut SendState,
    ) -> Result<()> {
        let Some(eos) = &self.exactly_once else {
            return Ok(());
        };
        while let Some(done) = pending.next().await {
            state.settle(done, pending.len());
            self.redirect(pending, state).await;
        }
        let checkpoint = state
            .ledger
            .checkpoint_now()
            .filter(|cp| cp.delivered_up_to != state.committed_up_to);
        if state.in_transaction == 0 && checkpoint.is_none() {
            return Ok(());
        }
        if let Some(cp) = &checkpoint {
            let body = serde_json::to_vec(cp)?;
            // Partition 0, where the reader looks, however many the
            // topic has.
            let record = FutureRecord::to(&eos.checkpoint_topic)
                .partition(0)
                .key(eos.group.as_bytes())
                .payload(&body);
            let delivery = self
                .producer
                .send_result(record)
                .map_err(|(e, _)| anyhow::anyhow!("cannot write the checkpoint record: {e}"))?;
            match delivery.await {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => anyhow::bail!(
                    "Kafka did not take the checkpoint record in {:?}: {e}",
                    eos.checkpoint_topic
                ),
                Err(_) => anyhow::bail!("the producer closed before the checkpoint was written"),
            }
        }
        super::transaction::commit(&self.producer).await?;
        state.ledger.committed();
        state.in_transaction = 0;
        if let Some(cp) = checkpoint {
            state.committed_up_to = cp.delivered_up_to;
        }
        Ok(())
    }

    /// One event's outcome: its records, or its failure per policy.
    async fn deliver(
        &self,
        d: Delivery,
        pending: &mut FuturesUnordered<Pending>,
        state: &mut SendState,
    ) -> Result<()> {
        let dead_letter_topic = self.dead_letter_topic.as_deref();
        for out in state.ledger.accept(d, dead_letter_topic)? {
            let origin = RecordOrigin {
                seq: out.seq,
                event_key: &out.event_key,
                changed_at: out.changed_at,
            };
            self.enqueue(origin, out.record, out.dead_letter, pending, state)
                .await;
            if state.abandoned {
                break;
            }
        }
        Ok(())
    }

    /// Sends the records that failed to the dead-letter topic.
    async fn redirect(&self, pending: &mut FuturesUnordered<Pending>, state: &mut SendState) {
        while let Some((seq, event_key, record)) = state.redirect.pop() {
            if state.abandoned {
                return;
            }
            let origin = RecordOrigin::dead_letter(seq, &event_key);
            self.enqueue(origin, record, true, pending, state).await;
        }
    }

    async fn enqueue(
        &self,
        origin: RecordOrigin<'_>,
        r: KafkaRecord,
        dead_letter: bool,
        pending: &mut FuturesUnordered<Pending>,
        state: &mut SendState,
    ) {
        let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
        for h in &r.headers {
            headers = headers.insert(Header {
                key: &h.key,
                value: Some(&h.value),
            });
        }
        loop {
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&r.topic).headers(headers.clone());
            if let Some(k) = &r.key {
                record = record.key(k.as_slice());
            }
            if let Some(v) = &r.value {
                record = record.payload(v.as_slice());
            }
            match self.producer.send_result(record) {
                Ok(delivery) => {
                    state.in_transaction += 1;
                    let origin = origin.to_owned();
                    let topic = r.topic.clone();
                    let sent = Instant::now();
                    pending.push(Box::pin(delivery.map(move |res| {
                        let result = match res {
                            Ok(Ok(d)) => Ok((d.partition, d.offset)),
                            Ok(Err((e, msg))) => Err(Undelivered {
                                code: e.rdkafka_error_code(),
                                error: e.to_string(),
                                record: Some(from_message(&msg)),
                            }),
                            Err(_) => Err(Undelivered {
                                error: "the producer was closed".to_string(),
                                code: None,
                                record: None,
                            }),
                        };
                        Settled {
                            origin,
                            topic,
                            sent,
                            dead_letter,
                            result,
                        }
                    })));
                    return;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // librdkafka's queue is full: wait for a delivery to free
                    // room. This is what stops us reading faster than Kafka
                    // takes. With Kafka away that wait has no end, so a
                    // shutdown must be able to cut it short.
                    let stop = state.shutdown.clone();
                    tokio::select! {
                        done = pending.next() => match done {
                            Some(done) => state.settle(done, pending.len()),
                            None => tokio::time::sleep(Duration::from_millis(10)).await,
                        },
                        _ = stop.cancelled() => {
                            state.abandoned = true;
                            return;
                        }
                    }
                }
                Err((e, _)) => {
                    // Refused before it was queued (e.g. larger than
                    // message.max.bytes): as final as a failed delivery.
                    let done = Settled {
                        origin: origin.to_owned(),
                        topic: r.topic.clone(),
                        sent: Instant::now(),
                        dead_letter,
                        result: Err(Undelivered {
                            code: e.rdkafka_error_code(),
                            error: e.to_string(),
                            record: Some(r.clone()),
                        }),
                    };
                    state.settle(done, pending.len());
                    return;
                }
            }
        }
    }
}

impl SendState {
    fn settle(&mut self, done: Settled, in_flight: usize) {
        let m = metrics::get();
        m.kafka_delivery_duration
            .observe(done.sent.elapsed().as_secs_f64());
        let Settled {
            origin:
                OwnedOrigin {
                    seq,
                    event_key,
                    changed_at,
                },
            topic,
            dead_letter,
            result,
            ..
        } = done;
        match result {
            Ok((partition, offset)) => {
                self.ledger.acknowledged(seq, changed_at, &topic);
                // Bounded as the labels are (`metrics::topic`): past the
                // bound, topics not yet seen are counted by a look-up.
                match self.produced.get(&topic) {
                    Some(c) => {
                        c.inc();
                    }
                    None => {
                        let c = m
                            .records_produced
                            .get_or_create(&metrics::labels([("topic", &metrics::topic(&topic))]))
                            .clone();
                        c.inc();
                        if self.produced.len() < metrics::MAX_TOPIC_SERIES {
                            self.produced.insert(topic.clone(), c);
                        }
                    }
                }
                tracing::debug!(
                    event_key,
                    offset,
                    "writing 1 messages to {topic} (partition: {partition})"
                );
            }
            Err(undelivered) => {
                m.kafka_delivery_failures
                    .get_or_create(&metrics::labels([("topic", &metrics::topic(&topic))]))
                    .inc();
                // A dead letter that fails is not sent on again (no loops).
                let to = self.dead_letter_topic.clone().filter(|_| !dead_letter);
                match (to, undelivered.record) {
                    (Some(dlq), Some(record)) => {
                        tracing::error!(
                            event_key,
                            topic,
                            "Kafka will not take the record for event {event_key}: {}; sending it to the dead-letter topic {dlq}",
                            undelivered.error
                        );
                        let too_large = matches!(
                            undelivered.code,
                            Some(RDKafkaErrorCode::MessageSizeTooLarge)
                        );
                        let letter = dead_letter::undeliverable(
                            &dlq,
                            &event_key,
                            record,
                            &undelivered.error,
                            too_large,
                        );
                        dead_letter::count("kafka", "undeliverable");
                        // The dead letter takes the failed record's place
                        // among the event's records.
                        self.ledger.replaced_by_dead_letter(seq, &topic);
                        self.redirect.push((seq, event_key, letter));
                    }
                    _ => {
                        tracing::error!(
                            event_key,
                            topic,
                            "Kafka did not accept the record for event {event_key}: {}{}",
                            undelivered.error,
                            if dead_letter {
                                " (it was a dead letter; it is lost)"
                            } else {
                                " (no sink.kafka.dead_letter_topic: it is lost)"
                            }
                        );
                        self.ledger.given_up(seq, &topic);
                    }
                }
            }
        }
        // Per settle would be per record: publish every so often, and when
        // the last record in flight is settled.
        if in_flight == 0 || self.ledger.stats.produced.is_multiple_of(256) {
            publish_queue_depth(in_flight);
        }
    }
}

/// The queue-depth gauges: cheap, so per batch.
fn publish_queue_depth(in_flight: usize) {
    let m = metrics::get();
    m.kafka_queue_depth.set(in_flight as i64);
    m.sink_in_flight
        .get_or_create(&metrics::labels([("sink", "kafka")]))
        .set(in_flight as i64);
}

/// The record librdkafka hands back with a delivery error.
fn from_message(m: &OwnedMessage) -> KafkaRecord {
    KafkaRecord {
        topic: m.topic().to_string(),
        key: m.key().map(<[u8]>::to_vec),
        value: m.payload().map(<[u8]>::to_vec),
        headers: m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| WitHeader {
                        key: h.key.to_string(),
                        value: h.value.unwrap_or_default().to_vec(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}
