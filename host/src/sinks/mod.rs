//! Where transformed records go. Each sink is a folder (or a file, when it
//! is small); this file lists them and the `sink:` block that chooses one.
//! Every sink settles what it delivers through `crate::delivery`: a record
//! counts as delivered only once its server has acknowledged it.

pub mod acked;
pub mod amqp;
pub mod kafka;
pub mod mqtt;
pub mod nats;
pub mod redis;
pub mod stdout;

pub use amqp::{AmqpConfig, AmqpSink};
pub use kafka::{KafkaConfig, KafkaSink};
pub use mqtt::{MqttConfig, MqttSink};
pub use nats::{NatsConfig, NatsSink};
pub use redis::{RedisConfig, RedisSink};
pub use stdout::{describe, StdoutSink};

use crate::delivery::{Delivery, DeliveryStats, Ledger};
use anyhow::Result;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The `sink:` block: exactly one of these, named by its key
/// (`sink: { kafka: {...} }`). A new sink is a variant here, a field in
/// [`SinkBlock`], a variant in [`Sink`], and its arms below.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    Kafka(KafkaConfig),
    Nats(NatsConfig),
    Mqtt(MqttConfig),
    Redis(RedisConfig),
    Amqp(AmqpConfig),
}

/// The block as written: serde_yaml reads enums only from YAML tags
/// (`!kafka`), so the block is read as optional keys, exactly one set.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SinkBlock {
    kafka: Option<KafkaConfig>,
    nats: Option<NatsConfig>,
    mqtt: Option<MqttConfig>,
    redis: Option<RedisConfig>,
    amqp: Option<AmqpConfig>,
}

impl<'de> Deserialize<'de> for SinkConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let b = SinkBlock::deserialize(d)?;
        let mut given: Vec<SinkConfig> = [
            b.kafka.map(SinkConfig::Kafka),
            b.nats.map(SinkConfig::Nats),
            b.mqtt.map(SinkConfig::Mqtt),
            b.redis.map(SinkConfig::Redis),
            b.amqp.map(SinkConfig::Amqp),
        ]
        .into_iter()
        .flatten()
        .collect();
        match given.len() {
            1 => Ok(given.remove(0)),
            0 => Err(serde::de::Error::custom(
                "no sink given: use one of kafka, nats, mqtt, redis, amqp",
            )),
            _ => Err(serde::de::Error::custom(format!(
                "give exactly one sink, not {}",
                given
                    .iter()
                    .map(SinkConfig::name)
                    .collect::<Vec<_>>()
                    .join(" and ")
            ))),
        }
    }
}

impl SinkConfig {
    /// The block's name, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            SinkConfig::Kafka(_) => "kafka",
            SinkConfig::Nats(_) => "nats",
            SinkConfig::Mqtt(_) => "mqtt",
            SinkConfig::Redis(_) => "redis",
            SinkConfig::Amqp(_) => "amqp",
        }
    }

    /// `demo --sink URL`: the sink the URL's scheme names (`kafka://`,
    /// `nats://`, `mqtt://`/`mqtts://`, `redis://`/`rediss://`,
    /// `amqp://`/`amqps://`), with `topic` as its default topic.
    pub fn from_url(url: &str, topic: &str) -> Result<SinkConfig> {
        let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
        Ok(match scheme {
            "kafka" => SinkConfig::Kafka(KafkaConfig::new(&url["kafka://".len()..], topic)),
            "nats" | "tls" => SinkConfig::Nats(NatsConfig::from_url(url, topic)?),
            "mqtt" | "mqtts" => SinkConfig::Mqtt(MqttConfig::from_url(url, topic)?),
            "redis" | "rediss" => SinkConfig::Redis(RedisConfig::from_url(url, topic)?),
            "amqp" | "amqps" => SinkConfig::Amqp(AmqpConfig::from_url(url, topic)?),
            _ => anyhow::bail!(
                "--sink {url:?}: use kafka://HOST:PORT, nats://, mqtt://, redis:// or amqp://"
            ),
        })
    }

    /// Where a record goes when no transform says otherwise.
    pub fn default_topic(&self) -> &str {
        match self {
            SinkConfig::Kafka(k) => &k.topic,
            SinkConfig::Nats(c) => c.default_topic(),
            SinkConfig::Mqtt(c) => c.default_topic(),
            SinkConfig::Redis(c) => c.default_topic(),
            SinkConfig::Amqp(c) => c.default_topic(),
        }
    }

    /// Where dead letters go, if anywhere.
    pub fn dead_letter_topic(&self) -> Option<&str> {
        match self {
            SinkConfig::Kafka(k) => k.dead_letter_topic.as_deref(),
            SinkConfig::Nats(c) => c.dead_letter_topic(),
            SinkConfig::Mqtt(c) => c.dead_letter_topic(),
            SinkConfig::Redis(c) => c.dead_letter_topic(),
            SinkConfig::Amqp(c) => c.dead_letter_topic(),
        }
    }

    /// The Kafka block, when that is the sink.
    pub fn kafka(&self) -> Option<&KafkaConfig> {
        match self {
            SinkConfig::Kafka(k) => Some(k),
            _ => None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        match self {
            SinkConfig::Kafka(k) => k.validate(),
            SinkConfig::Nats(c) => c.validate(),
            SinkConfig::Mqtt(c) => c.validate(),
            SinkConfig::Redis(c) => c.validate(),
            SinkConfig::Amqp(c) => c.validate(),
        }
    }

    /// What `validate` checks without connecting: the client accepts its
    /// settings. Made and dropped at once, it has no time to try a server.
    pub fn check_offline(&self) -> Result<()> {
        match self {
            SinkConfig::Kafka(k) => KafkaSink::check_offline(k),
            SinkConfig::Nats(c) => NatsSink::check_offline(c),
            SinkConfig::Mqtt(c) => MqttSink::check_offline(c),
            SinkConfig::Redis(c) => RedisSink::check_offline(c),
            SinkConfig::Amqp(c) => AmqpSink::check_offline(c),
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
                kafka.begin(k).await?;
                Ok(Sink::Kafka(kafka))
            }
            SinkConfig::Nats(c) => Ok(Sink::Nats(NatsSink::start(c, shutdown).await?)),
            SinkConfig::Mqtt(c) => Ok(Sink::Mqtt(MqttSink::start(c, shutdown).await?)),
            SinkConfig::Redis(c) => Ok(Sink::Redis(RedisSink::start(c, shutdown).await?)),
            SinkConfig::Amqp(c) => Ok(Sink::Amqp(AmqpSink::start(c, shutdown).await?)),
        }
    }
}

pub enum Sink {
    Kafka(KafkaSink),
    Nats(NatsSink),
    Mqtt(MqttSink),
    Redis(RedisSink),
    Amqp(AmqpSink),
    Stdout(StdoutSink),
}

impl Sink {
    /// The `sink` label of its metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Sink::Kafka(_) => "kafka",
            Sink::Nats(_) => "nats",
            Sink::Mqtt(_) => "mqtt",
            Sink::Redis(_) => "redis",
            Sink::Amqp(_) => "amqp",
            Sink::Stdout(_) => "stdout",
        }
    }

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
            Sink::Nats(s) => s.run(rx, ledger, shutdown).await,
            Sink::Mqtt(s) => s.run(rx, ledger, shutdown).await,
            Sink::Redis(s) => s.run(rx, ledger, shutdown).await,
            Sink::Amqp(s) => s.run(rx, ledger, shutdown).await,
            Sink::Stdout(s) => s.run(rx, ledger).await,
        }
    }
}
