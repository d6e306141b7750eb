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

/// The `sink:` block: exactly one of these, named by its key
/// (`sink: { kafka: {...} }`). A new sink is a variant here and in [`Sink`],
/// and its arms below.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkConfig {
    Kafka(KafkaConfig),
}

impl SinkConfig {
    /// The block's name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            SinkConfig::Kafka(_) => "kafka",
        }
    }

    /// Where a record goes when no transform says otherwise.
    pub fn default_topic(&self) -> &str {
        match self {
            SinkConfig::Kafka(k) => &k.topic,
        }
    }

    /// Where dead letters go, if anywhere.
    pub fn dead_letter_topic(&self) -> Option<&str> {
        match self {
            SinkConfig::Kafka(k) => k.dead_letter_topic.as_deref(),
        }
    }

    /// The Kafka block, when that is the sink.
    pub fn kafka(&self) -> Option<&KafkaConfig> {
        match self {
            SinkConfig::Kafka(k) => Some(k),
        }
    }

    pub fn validate(&self) -> Result<()> {
        match self {
            SinkConfig::Kafka(k) => k.validate(),
        }
    }

    /// What `validate` checks without connecting: the client accepts its
    /// settings. Made and dropped at once, it has no time to try a server.
    pub fn check_offline(&self) -> Result<()> {
        match self {
            SinkConfig::Kafka(k) => KafkaSink::new(k).map(drop),
        }
    }

    /// The sink, its client started (connecting in the background) and its
    /// health watched until `shutdown`.
    pub async fn start(&self, shutdown: &CancellationToken) -> Result<Sink> {
        match self {
            SinkConfig::Kafka(k) => {
                let kafka = KafkaSink::new(k)?;
                kafka.probe().await;
                kafka.watch_broker(shutdown.clone());
                Ok(Sink::Kafka(kafka))
            }
        }
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
