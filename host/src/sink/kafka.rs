//! The Kafka sink: one long-lived idempotent producer (`acks=all`), records
//! enqueued as they come and their deliveries awaited concurrently.

use super::kafka_log::KafkaContext;
use super::{failed, Delivery, SinkStats};
use crate::config::KafkaConfig;
use crate::transform::bindings::KafkaRecord;
use crate::transform::Outcome;
use anyhow::{anyhow, Result};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::mpsc;

type Pending = Pin<Box<dyn Future<Output = (String, String, Result<(i32, i64), String>)> + Send>>;

pub struct KafkaSink {
    producer: FutureProducer<KafkaContext>,
    brokers: String,
    flush_timeout: Duration,
}

impl KafkaSink {
    pub fn new(cfg: &KafkaConfig) -> Result<KafkaSink> {
        let mut cc = ClientConfig::new();
        cc.set("bootstrap.servers", &cfg.brokers)
            // At-least-once without duplicates from the producer's own retries.
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "5")
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
        })
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

    pub async fn run(self, mut rx: mpsc::Receiver<Vec<Delivery>>) -> Result<SinkStats> {
        let mut stats = SinkStats::default();
        let mut pending: FuturesUnordered<Pending> = FuturesUnordered::new();
        let result: Result<()> = async {
            loop {
                tokio::select! {
                    Some(done) = pending.next(), if !pending.is_empty() => settle(done, &mut stats),
                    batch = rx.recv() => {
                        let Some(batch) = batch else { return Ok(()) };
                        for d in batch {
                            stats.events += 1;
                            match d.outcome {
                                Outcome::Produce(records) if records.is_empty() => stats.dropped += 1,
                                Outcome::Produce(records) => {
                                    for r in records {
                                        self.enqueue(&d.event_key, r, &mut pending, &mut stats).await;
                                    }
                                }
                                Outcome::Failed { transform, error, policy } => {
                                    failed(&d.event_key, &transform, &error, policy, &mut stats)?;
                                }
                            }
                        }
                    }
                }
            }
        }
        .await;

        // Drain what is in flight, bounded by the flush timeout.
        let drain = async {
            while let Some(done) = pending.next().await {
                settle(done, &mut stats);
            }
        };
        if tokio::time::timeout(self.flush_timeout, drain)
            .await
            .is_err()
        {
            tracing::error!(
                "Kafka did not acknowledge every record within sink.kafka.flush_timeout ({}); unacknowledged records may be lost",
                humantime::format_duration(self.flush_timeout)
            );
        }
        result.map(|()| stats)
    }

    async fn enqueue(
        &self,
        event_key: &str,
        r: KafkaRecord,
        pending: &mut FuturesUnordered<Pending>,
        stats: &mut SinkStats,
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
                    let key = event_key.to_string();
                    let topic = r.topic.clone();
                    pending.push(Box::pin(delivery.map(move |res| {
                        let res = match res {
                            Ok(Ok(d)) => Ok((d.partition, d.offset)),
                            Ok(Err((e, _))) => Err(e.to_string()),
                            Err(_) => Err("the producer was closed".to_string()),
                        };
                        (key, topic, res)
                    })));
                    return;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    // librdkafka's queue is full: wait for a delivery to free
                    // room. This is what stops us reading faster than Kafka takes.
                    match pending.next().await {
                        Some(done) => settle(done, stats),
                        None => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
                Err((e, _)) => {
                    stats.failed_delivery += 1;
                    tracing::error!(event_key, topic = %r.topic, "cannot produce record for event {event_key}: {e}");
                    return;
                }
            }
        }
    }
}

fn settle(
    (event_key, topic, result): (String, String, Result<(i32, i64), String>),
    stats: &mut SinkStats,
) {
    match result {
        Ok((partition, offset)) => {
            stats.produced += 1;
            tracing::debug!(
                event_key,
                offset,
                "writing 1 messages to {topic} (partition: {partition})"
            );
        }
        Err(e) => {
            stats.failed_delivery += 1;
            tracing::error!(
                event_key,
                topic,
                "Kafka did not accept the record for event {event_key}: {e}"
            );
        }
    }
}
