//! The Kafka sink: one long-lived idempotent producer (`acks=all`), records
//! enqueued as they come and their deliveries awaited concurrently.
//!
//! Delivery is at-least-once: librdkafka retries what is retriable for as
//! long as it takes (`message.timeout.ms = 0`), so an error that comes back
//! is one that will not go away (too large, not authorised). Such records,
//! and events whose transform failed with `on_error: dead_letter`, go to
//! the dead-letter topic. Progress is claimed, and checkpointed, only up to
//! the first event with a record still in flight.

use super::dead_letter;
use super::kafka_log::KafkaContext;
use super::SharedAcks;
use super::{failed, Delivery, SinkStats};
use crate::checkpoint::{self, Checkpoint};
use crate::config::{CheckpointConfig, KafkaConfig, OnError};
use crate::metrics;
use crate::transform::bindings::KafkaRecord;
use crate::transform::Outcome;
use anyhow::{anyhow, Result};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use prometheus_client::metrics::counter::Counter;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One record's delivery: what it settles to, and for which event.
struct Settled {
    seq: u64,
    event_key: String,
    topic: String,
    sent: Instant,
    changed_at: Option<i64>,
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
struct Of<'a> {
    seq: u64,
    key: &'a str,
    changed_at: Option<i64>,
}

impl<'a> Of<'a> {
    /// A dead letter's latency is not the pipeline's: not measured.
    fn dead_letter(seq: u64, key: &'a str) -> Of<'a> {
        Of {
            seq,
            key,
            changed_at: None,
        }
    }
}

type Pending = Pin<Box<dyn Future<Output = Settled> + Send>>;

/// What the sink keeps while records are in flight.
#[derive(Default)]
struct Books {
    stats: SinkStats,
    acks: SharedAcks,
    /// Per-topic counters, looked up once per topic.
    produced: HashMap<String, Counter>,
    /// Records that failed and are to be re-sent to the dead-letter topic.
    redirect: Vec<(u64, String, KafkaRecord)>,
    dead_letter_topic: Option<String>,
    checkpoint: Option<CheckpointWriter>,
    /// Shutdown came while Kafka's queue was full (Kafka away): what was
    /// not handed over stays undelivered, for the next start.
    abandoned: bool,
    shutdown: CancellationToken,
    latency: Option<super::LatencyLog>,
}

struct CheckpointWriter {
    path: PathBuf,
    interval: Duration,
    last_written: Instant,
    written_watermark: i64,
}

impl CheckpointWriter {
    /// Writes when progress was made and `interval` has passed (or `force`).
    /// Never a checkpoint that knows nothing (0): a restart from it would
    /// replay CVP's whole state.
    fn maybe_write(&mut self, acks: &SharedAcks, force: bool) {
        if !force && self.last_written.elapsed() < self.interval {
            return;
        }
        let cp = {
            let acks = acks.lock();
            let watermark = acks.resume_point();
            if watermark == 0 || (watermark == self.written_watermark && !force) {
                return;
            }
            Checkpoint::new(watermark, acks.delivered_beyond(watermark))
        };
        let watermark = cp.delivered_up_to;
        match checkpoint::write(&self.path, &cp) {
            Ok(()) => self.written_watermark = watermark,
            // Not fatal: the next write may succeed; meanwhile a restart
            // resends from the older checkpoint (duplicates, not loss).
            Err(e) => tracing::error!("{e:#}"),
        }
        self.last_written = Instant::now();
    }
}

pub struct KafkaSink {
    producer: FutureProducer<KafkaContext>,
    brokers: String,
    flush_timeout: Duration,
    dead_letter_topic: Option<String>,
    checkpoint: Option<(PathBuf, Duration)>,
    topic: String,
    latency: Option<super::LatencyLog>,
}

impl KafkaSink {
    pub fn new(cfg: &KafkaConfig) -> Result<KafkaSink> {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &cfg.brokers)
            // At-least-once without duplicates from the producer's own retries.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Retry for as long as it takes: a broker outage must delay
            // records, never drop them. Backpressure bounds the wait.
            .set("message.timeout.ms", "0")
            .set(
                "queue.buffering.max.kbytes",
                (cfg.max_queue_size / 1024).max(1).to_string(),
            )
            // CVP events are latency-sensitive alerts: 1 ms keeps p99 near
            // 2 ms at 10,000 events/s (5 ms, librdkafka's default, made it
            // 8 ms) and costs no throughput in a burst, where batches fill
            // before the linger ends (BENCHMARKS.md).
            .set("linger.ms", "1")
            .set("compression.type", "lz4")
            .set("client.id", "cvp-stream");
        for (k, v) in &cfg.properties {
            cc.set(k, &v.0);
        }
        let producer: FutureProducer<KafkaContext> = cc
            .create_with_context(KafkaContext::default())
            .map_err(|e| {
                anyhow!("sink.kafka: cannot create the producer: {e} (check sink.kafka.properties)")
            })?;
        Ok(KafkaSink {
            producer,
            brokers: cfg.brokers.clone(),
            flush_timeout: cfg.flush_timeout,
            dead_letter_topic: cfg.dead_letter_topic.clone(),
            checkpoint: None,
            topic: cfg.topic.clone(),
            latency: None,
        })
    }

    /// Keep progress in this file (see `checkpoint.rs`).
    pub fn with_checkpoint(mut self, cfg: Option<&CheckpointConfig>) -> KafkaSink {
        self.checkpoint = cfg.map(|c| (c.path.clone(), c.interval));
        self
    }

    /// Log each record's latency here (see [`super::LatencyLog`]).
    pub fn with_latency_log(mut self, log: super::LatencyLog) -> KafkaSink {
        self.latency = Some(log);
        self
    }

    /// Asks the cluster for the topic's metadata: a start-up hint that the
    /// broker is reachable. Not fatal: librdkafka keeps retrying on its own.
    pub async fn probe(&self, topic: &str) {
        let producer = self.producer.clone();
        let topic = topic.to_string();
        let result = tokio::task::spawn_blocking(move || {
            producer
                .client()
                .fetch_metadata(Some(&topic), Duration::from_secs(5))
                .map(|_| ())
        })
        .await;
        match result {
            Ok(Ok(())) => tracing::info!(brokers = %self.brokers, "connected to Kafka"),
            Ok(Err(e)) => tracing::warn!(
                brokers = %self.brokers,
                "cannot reach Kafka yet ({e}); records are queued and retried (check sink.kafka.brokers)"
            ),
            Err(_) => {}
        }
    }

    /// Checks, every few seconds until `shutdown`, that the cluster answers
    /// a metadata request: the `kafka_broker_up` metric and `/ready`.
    pub fn watch_broker(&self, shutdown: CancellationToken) {
        let producer = self.producer.clone();
        tokio::spawn(async move {
            loop {
                let p = producer.clone();
                let up = tokio::task::spawn_blocking(move || {
                    p.client()
                        .fetch_metadata(None, Duration::from_secs(2))
                        .is_ok()
                })
                .await
                .unwrap_or(false);
                metrics::get().kafka_broker_up.set(up as i64);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        });
    }

    pub async fn run(
        self,
        mut rx: mpsc::Receiver<Vec<Delivery>>,
        acks: SharedAcks,
        shutdown: CancellationToken,
    ) -> Result<SinkStats> {
        let mut books = Books {
            acks,
            checkpoint: self
                .checkpoint
                .clone()
                .map(|(path, interval)| CheckpointWriter {
                    path,
                    interval,
                    last_written: Instant::now(),
                    written_watermark: 0,
                }),
            dead_letter_topic: self.dead_letter_topic.clone(),
            shutdown,
            latency: self.latency.clone(),
            ..Books::default()
        };
        // The configured topics' series exist from the start, at 0.
        let m = metrics::get();
        for topic in std::iter::once(&self.topic).chain(&self.dead_letter_topic) {
            let l = metrics::labels([("topic", topic)]);
            let _ = m.kafka_delivery_failures.get_or_create(&l);
            let c = m.records_produced.get_or_create(&l).clone();
            books.produced.insert(topic.clone(), c);
        }
        let mut pending: FuturesUnordered<Pending> = FuturesUnordered::new();
        // Progress made by the last acknowledgements of a burst must reach
        // the gauges and the checkpoint even when nothing follows them.
        let every = self
            .checkpoint
            .as_ref()
            .map_or(Duration::from_secs(1), |c| c.1);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let result: Result<()> = async {
            loop {
                tokio::select! {
                    _ = tick.tick() => books.publish_progress(),
                    Some(done) = pending.next(), if !pending.is_empty() => {
                        books.settle(done, pending.len());
                        self.redirect(&mut pending, &mut books).await;
                    }
                    batch = rx.recv() => {
                        let Some(batch) = batch else { return Ok(()) };
                        for d in batch {
                            self.deliver(d, &mut pending, &mut books).await?;
                            if books.abandoned {
                                break;
                            }
                        }
                        self.redirect(&mut pending, &mut books).await;
                        books.publish(pending.len());
                        if books.abandoned {
                            tracing::warn!("shutting down while Kafka takes nothing (its queue is full): the events not handed over are sent after the next start, from the checkpoint");
                            return Ok(());
                        }
                    }
                }
            }
        }
        .await;

        // Drain what is in flight, bounded by the flush timeout.
        let drain = async {
            while let Some(done) = pending.next().await {
                books.settle(done, pending.len());
                self.redirect(&mut pending, &mut books).await;
            }
        };
        if tokio::time::timeout(self.flush_timeout, drain)
            .await
            .is_err()
        {
            tracing::error!(
                "Kafka did not acknowledge every record within sink.kafka.flush_timeout ({}); the checkpoint stops before them, so a restart sends them again",
                humantime::format_duration(self.flush_timeout)
            );
        }
        books.publish(pending.len());
        metrics::get().set_delivered_up_to(books.acks.lock().resume_point());
        if let Some(cp) = &mut books.checkpoint {
            cp.maybe_write(&books.acks, true);
        }
        result.map(|()| books.stats)
    }

    /// One event's outcome: its records, or its failure per policy.
    async fn deliver(
        &self,
        d: Delivery,
        pending: &mut FuturesUnordered<Pending>,
        books: &mut Books,
    ) -> Result<()> {
        books.stats.events += 1;
        match d.outcome {
            Outcome::Produce(records) if records.is_empty() => {
                books.stats.dropped += 1;
                books.acks.lock().expect(d.seq, 0);
            }
            Outcome::Produce(records) => {
                let seq = d.seq;
                books.acks.lock().expect(seq, records.len() as u32);
                for r in records {
                    self.enqueue(
                        Of {
                            seq,
                            key: &d.event_key,
                            changed_at: d.changed_at,
                        },
                        r,
                        false,
                        pending,
                        books,
                    )
                    .await;
                    if books.abandoned {
                        break;
                    }
                }
            }
            Outcome::Failed {
                transform,
                reason,
                error,
                policy,
            } => {
                failed(&d.event_key, &transform, &error, policy, &mut books.stats)?;
                match (policy, &self.dead_letter_topic) {
                    (OnError::DeadLetter, Some(topic)) => {
                        let record = dead_letter::transform_failed(
                            topic,
                            &d.event_key,
                            d.event_json,
                            &transform,
                            reason,
                            &error,
                        );
                        dead_letter::count(&transform, reason);
                        books.acks.lock().expect(d.seq, 1);
                        self.enqueue(
                            Of::dead_letter(d.seq, &d.event_key),
                            record,
                            true,
                            pending,
                            books,
                        )
                        .await;
                    }
                    _ => {
                        books.acks.lock().expect(d.seq, 0);
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends the records that failed to the dead-letter topic.
    async fn redirect(&self, pending: &mut FuturesUnordered<Pending>, books: &mut Books) {
        while let Some((seq, event_key, record)) = books.redirect.pop() {
            if books.abandoned {
                return;
            }
            self.enqueue(
                Of::dead_letter(seq, &event_key),
                record,
                true,
                pending,
                books,
            )
            .await;
        }
    }

    async fn enqueue(
        &self,
        of: Of<'_>,
        r: KafkaRecord,
        dead_letter: bool,
        pending: &mut FuturesUnordered<Pending>,
        books: &mut Books,
    ) {
        let Of {
            seq,
            key: event_key,
            changed_at,
        } = of;
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
                    let event_key = event_key.to_string();
                    let topic = r.topic.clone();
                    let sent = Instant::now();
                    pending.push(Box::pin(delivery.map(move |res| {
                        let result = match res {
                            Ok(Ok(d)) => Ok((d.partition, d.offset)),
                            Ok(Err((e, msg))) => Err(Undelivered {
                                code: e.rdkafka_error_code(),
                                error: e.to_string(),
                                record: Some(dead_letter::from_message(&msg)),
                            }),
                            Err(_) => Err(Undelivered {
                                error: "the producer was closed".to_string(),
                                code: None,
                                record: None,
                            }),
                        };
                        Settled {
                            seq,
                            event_key,
                            topic,
                            sent,
                            changed_at,
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
                    let stop = books.shutdown.clone();
                    tokio::select! {
                        done = pending.next() => match done {
                            Some(done) => books.settle(done, pending.len()),
                            None => tokio::time::sleep(Duration::from_millis(10)).await,
                        },
                        _ = stop.cancelled() => {
                            books.abandoned = true;
                            return;
                        }
                    }
                }
                Err((e, _)) => {
                    // Refused before it was queued (e.g. larger than
                    // message.max.bytes): as final as a failed delivery.
                    let done = Settled {
                        seq,
                        event_key: event_key.to_string(),
                        topic: r.topic.clone(),
                        sent: Instant::now(),
                        changed_at,
                        dead_letter,
                        result: Err(Undelivered {
                            code: e.rdkafka_error_code(),
                            error: e.to_string(),
                            record: Some(r.clone()),
                        }),
                    };
                    books.settle(done, pending.len());
                    return;
                }
            }
        }
    }
}

impl Books {
    fn settle(&mut self, done: Settled, in_flight: usize) {
        let m = metrics::get();
        m.kafka_delivery_duration
            .observe(done.sent.elapsed().as_secs_f64());
        let Settled {
            seq,
            event_key,
            topic,
            dead_letter,
            result,
            changed_at,
            ..
        } = done;
        match result {
            Ok((partition, offset)) => {
                self.stats.produced += 1;
                let now = Instant::now();
                self.stats.first_ack.get_or_insert(now);
                self.stats.last_ack = Some(now);
                if let (Some(log), Some(at)) = (&self.latency, changed_at) {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as i64);
                    log.lock().unwrap_or_else(|p| p.into_inner()).push(now - at);
                }
                self.acks.lock().settle(seq);
                match self.produced.get(&topic) {
                    Some(c) => {
                        c.inc();
                    }
                    None => {
                        let c = m
                            .records_produced
                            .get_or_create(&metrics::labels([("topic", &topic)]))
                            .clone();
                        c.inc();
                        self.produced.insert(topic.clone(), c);
                    }
                }
                tracing::debug!(
                    event_key,
                    offset,
                    "writing 1 messages to {topic} (partition: {partition})"
                );
            }
            Err(undelivered) => {
                self.stats.failed_delivery += 1;
                m.kafka_delivery_failures
                    .get_or_create(&metrics::labels([("topic", &topic)]))
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
                        let mut acks = self.acks.lock();
                        acks.add(seq);
                        acks.settle(seq);
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
                        self.acks.lock().settle(seq);
                    }
                }
            }
        }
        // Per settle would be per record: publish every so often, and when
        // the last record in flight is settled.
        if in_flight == 0 || self.stats.produced.is_multiple_of(256) {
            self.publish(in_flight);
        }
    }

    /// The queue-depth gauge: cheap, so per batch.
    fn publish(&mut self, in_flight: usize) {
        metrics::get().kafka_queue_depth.set(in_flight as i64);
    }

    /// The delivered-up-to gauge and the checkpoint: the resume point scans
    /// the events in flight, so on the timer (and at the end), not per batch.
    fn publish_progress(&mut self) {
        metrics::get().set_delivered_up_to(self.acks.lock().resume_point());
        if let Some(cp) = &mut self.checkpoint {
            cp.maybe_write(&self.acks, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Scalar;

    /// The TLS and SCRAM settings production clusters use are accepted:
    /// librdkafka is built with OpenSSL. (Without it, creating the producer
    /// fails with "Unsupported value SASL_SSL".)
    #[test]
    fn sasl_ssl_and_scram_are_supported() {
        let cfg = KafkaConfig {
            brokers: "127.0.0.1:1".into(),
            topic: "t".into(),
            properties: [
                ("security.protocol", "SASL_SSL"),
                ("sasl.mechanisms", "SCRAM-SHA-512"),
                ("sasl.username", "u"),
                ("sasl.password", "p"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), Scalar(v.to_string())))
            .collect(),
            flush_timeout: Duration::from_secs(1),
            dead_letter_topic: None,
            max_queue_size: 32 << 20,
        };
        if let Err(e) = KafkaSink::new(&cfg) {
            panic!("{e:#}");
        }
    }
}
