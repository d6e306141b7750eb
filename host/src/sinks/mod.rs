//! Where transformed records go. Each sink is a folder (or a file, when it
//! is small); this file lists them and the `sink:` block that chooses one.
//! Every sink settles what it delivers through `crate::delivery`.

pub mod kafka;
pub mod stdout;

pub use kafka::{KafkaConfig, KafkaSink};
pub use stdout::{describe, StdoutSink};

use crate::delivery::{Delivery, DeliveryStats, Ledger};
use anyhow::Result;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The `sink:` block.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    pub kafka: KafkaConfig,
}

impl SinkConfig {
    /// Where a record goes when no transform says otherwise.
    pub fn default_topic(&self) -> &str {
        &self.kafka.topic
    }

    /// Where dead letters go, if anywhere.
    pub fn dead_letter_topic(&self) -> Option<&str> {
        self.kafka.dead_letter_topic.as_deref()
    }

    pub fn validate(&self) -> Result<()> {
        self.kafka.validate()
    }
}

pub enum Sink {
    Kafka(KafkaSink),
    Stdout(StdoutSink),
}

impl Sink {
    /// Consumes deliveries until the channel closes, then flushes. Returns
    /// an error when a transform whose policy is `stop` failed.
    pub async fn run(
        self,
        rx: mpsc::Receiver<Vec<Delivery>>,
        ledger: Ledger,
        shutdown: CancellationToken,
    ) -> Result<DeliveryStats> {
        match self {
            Sink::Kafka(k) => k.run(rx, ledger, shutdown).await,
            Sink::Stdout(s) => s.run(rx, ledger).await,
        }
    }
}
