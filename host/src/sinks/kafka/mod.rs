//! The Kafka sink: one long-lived idempotent producer (`acks=all`), records
//! enqueued as they come and their deliveries awaited concurrently.
//!
//! Delivery is at-least-once: librdkafka retries what is retriable for as
//! long as it takes (`message.timeout.ms = 0`), so an error that comes back
//! is one that will not go away (too large, not authorised). Such records,
//! and events whose transform failed with `on_error: dead_letter`, go to
//! the dead-letter topic. Progress is claimed, and checkpointed, only up to
//! the first event with a record still in flight.
//!
//! With `exactly_once`, records and the checkpoint go in one transaction
//! instead (`transaction.rs`), and with its `standby`, Kafka's consumer
//! group picks which of several instances delivers (`standby.rs`).
//!
//! `config.rs` is the `sink.kafka` block, this file the producer and its
//! health, `deliver.rs` the loop from deliveries to acknowledgements,
//! `transaction.rs` exactly once, `standby.rs` the election, `log.rs`
//! librdkafka's own log lines.

mod config;
mod deliver;
mod log;
mod standby;
mod transaction;

pub use config::{ExactlyOnceConfig, KafkaConfig};
pub use standby::Election;
pub use transaction::{read_checkpoint, Aborted, Fenced};

use crate::metrics;
use anyhow::{anyhow, Result};
use log::KafkaContext;
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::ClientConfig;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct KafkaSink {
    producer: FutureProducer<KafkaContext>,
    brokers: String,
    flush_timeout: Duration,
    dead_letter_topic: Option<String>,
    topic: String,
    exactly_once: Option<ExactlyOnceConfig>,
}

impl KafkaSink {
    /// Makes the producer; connects in the background (librdkafka).
    pub fn new(cfg: &KafkaConfig) -> Result<KafkaSink> {
        let producer: FutureProducer<KafkaContext> = client_config(cfg)
            .create_with_context(KafkaContext::default())
            .map_err(|e| {
                anyhow!("sink.kafka: cannot create the producer: {e} (check sink.kafka.properties)")
            })?;
        Ok(KafkaSink {
            producer,
            brokers: cfg.brokers.clone(),
            flush_timeout: cfg.flush_timeout,
            dead_letter_topic: cfg.dead_letter_topic.clone(),
            topic: cfg.topic.clone(),
            exactly_once: cfg.exactly_once.clone(),
        })
    }

    /// With `exactly_once`: the checkpoint topic made, the transactional
    /// producer registered (fencing a former instance) and a transaction
    /// open. Nothing otherwise.
    pub async fn begin(&self, cfg: &KafkaConfig) -> Result<()> {
        match &self.exactly_once {
            Some(eos) => transaction::begin(cfg, eos, &self.producer).await,
            None => Ok(()),
        }
    }

    /// What `validate` checks: librdkafka accepts every property. The
    /// producer made for it has no brokers to try, and is silent, so a
    /// check connects nowhere and logs nothing.
    pub fn check_offline(cfg: &KafkaConfig) -> Result<()> {
        let mut cc = client_config(cfg);
        cc.set("bootstrap.servers", "").set("log_level", "0");
        cc.create::<rdkafka::producer::BaseProducer>()
            .map(drop)
            .map_err(|e| {
                anyhow!("sink.kafka: the producer refuses its settings: {e} (check sink.kafka.properties)")
            })
    }
}

/// The producer's settings: ours, then the user's `properties` over them.
fn client_config(cfg: &KafkaConfig) -> ClientConfig {
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
    if let Some(eos) = &cfg.exactly_once {
        cc.set("transactional.id", transaction::transactional_id(eos));
    }
    for (k, v) in &cfg.properties {
        cc.set(k, &v.0);
    }
    cc
}

impl KafkaSink {
    /// Asks the cluster for the topic's metadata: a start-up hint that the
    /// broker is reachable. Not fatal: librdkafka keeps retrying on its own.
    pub async fn probe(&self) {
        let producer = self.producer.clone();
        let topic = self.topic.clone();
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
                let m = metrics::get();
                m.kafka_broker_up.set(up as i64);
                m.sink_up
                    .get_or_create(&metrics::labels([("sink", "kafka")]))
                    .set(up as i64);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::units::ScalarText;

    /// The TLS and SCRAM settings production clusters use are accepted:
    /// librdkafka is built with OpenSSL. (Without it, creating the producer
    /// fails with "Unsupported value SASL_SSL".)
    #[test]
    fn sasl_ssl_and_scram_are_supported() {
        let mut cfg = KafkaConfig::new("127.0.0.1:1", "t");
        cfg.properties = [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", "u"),
            ("sasl.password", "p"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ScalarText(v.to_string())))
        .collect();
        if let Err(e) = KafkaSink::new(&cfg) {
            panic!("{e:#}");
        }
    }
}
