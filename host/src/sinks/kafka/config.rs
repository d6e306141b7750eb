//! `sink.kafka`: the cluster, the topic, librdkafka properties, and what to
//! do with records that cannot be delivered.

use crate::config::units::{de_size, ScalarText};
use anyhow::{bail, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    pub brokers: String,
    pub topic: String,
    /// Passed to librdkafka as they are (SASL, SSL, batching, ...), after
    /// and so over our defaults.
    #[serde(default)]
    pub properties: BTreeMap<String, ScalarText>,
    /// How long shutdown waits for outstanding deliveries.
    #[serde(default = "default_flush_timeout", with = "humantime_serde")]
    pub flush_timeout: Duration,
    /// Where records go that cannot be delivered (too large, topic not
    /// authorised) and events whose transform failed with `on_error:
    /// dead_letter`. Without it such records are logged and counted.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// Most data librdkafka queues while Kafka is slow or down; when full,
    /// the host stops reading from CVP (backpressure) instead of growing.
    #[serde(default = "default_queue_size", deserialize_with = "de_size")]
    pub max_queue_size: u64,
    /// Records and the checkpoint in one Kafka transaction: read-committed
    /// consumers see each event once, through crashes (`transaction.rs`).
    #[serde(default)]
    pub exactly_once: Option<ExactlyOnceConfig>,
}

/// `sink.kafka.exactly_once`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExactlyOnceConfig {
    /// Names this delivery: the transactional id is `cvp-stream-GROUP` and
    /// the checkpoint record's key is GROUP. Instances of one group fence
    /// one another: only the latest to start writes.
    pub group: String,
    /// The compacted topic that holds each group's checkpoint (created,
    /// with one partition, when missing).
    #[serde(default = "default_checkpoint_topic")]
    pub checkpoint_topic: String,
    /// A transaction is committed this often while records flow ...
    #[serde(default = "default_commit_interval", with = "humantime_serde")]
    pub commit_interval: Duration,
    /// ... or once it holds this many records, whichever comes first.
    /// Read-committed consumers see records when they are committed.
    #[serde(default = "default_commit_records")]
    pub commit_records: usize,
    /// Several instances of the group, on different machines, one of them
    /// active: they join a Kafka consumer group on the checkpoint topic,
    /// and the one assigned its partition 0 delivers (`standby.rs`).
    #[serde(default)]
    pub standby: bool,
    /// With `standby`: how long the group's coordinator waits for an
    /// instance that stopped answering (killed, frozen, cut off) before a
    /// standby takes over. Kafka brokers accept 6s to 30m by default.
    #[serde(default = "default_session_timeout", with = "humantime_serde")]
    pub session_timeout: Duration,
}

fn default_checkpoint_topic() -> String {
    "cvp-stream-checkpoints".to_string()
}
fn default_commit_interval() -> Duration {
    Duration::from_millis(100)
}
fn default_commit_records() -> usize {
    10_000
}
fn default_session_timeout() -> Duration {
    Duration::from_secs(10)
}

impl ExactlyOnceConfig {
    /// For `group`, with every default.
    pub fn new(group: impl Into<String>) -> ExactlyOnceConfig {
        ExactlyOnceConfig {
            group: group.into(),
            checkpoint_topic: default_checkpoint_topic(),
            commit_interval: default_commit_interval(),
            commit_records: default_commit_records(),
            standby: false,
            session_timeout: default_session_timeout(),
        }
    }
}

impl KafkaConfig {
    /// `topic` on `brokers`, with every default.
    pub fn new(brokers: impl Into<String>, topic: impl Into<String>) -> KafkaConfig {
        KafkaConfig {
            brokers: brokers.into(),
            topic: topic.into(),
            properties: BTreeMap::new(),
            flush_timeout: default_flush_timeout(),
            dead_letter_topic: None,
            max_queue_size: default_queue_size(),
            exactly_once: None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.topic.trim().is_empty() {
            bail!("sink.kafka.topic is empty");
        }
        if self.max_queue_size < 1 << 20 {
            bail!("sink.kafka.max_queue_size must be at least 1MiB");
        }
        if let Some(eos) = &self.exactly_once {
            if eos.group.trim().is_empty() {
                bail!("sink.kafka.exactly_once.group is empty: name this service's delivery (one name per CVP and topic)");
            }
            if eos.commit_records == 0 {
                bail!("sink.kafka.exactly_once.commit_records must be at least 1");
            }
            if eos.standby && eos.session_timeout < Duration::from_secs(1) {
                bail!("sink.kafka.exactly_once.session_timeout must be at least 1s (Kafka's brokers refuse less than 6s by default)");
            }
            if self.properties.contains_key("transactional.id") {
                bail!("sink.kafka.properties sets transactional.id; with exactly_once it is cvp-stream-GROUP");
            }
        }
        Ok(())
    }
}

fn default_queue_size() -> u64 {
    // Each queued record costs librdkafka and the sink several times its
    // payload; 8 MiB of payload is ~15,000 records, plenty to batch.
    8 << 20
}

fn default_flush_timeout() -> Duration {
    Duration::from_secs(30)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> KafkaConfig {
        serde_yaml::from_str(yaml).unwrap()
    }

    /// `standby` is off unless asked for; its session timeout is 10 s by
    /// default and at least 1 s.
    #[test]
    fn standby_defaults_and_bounds() {
        let k = parse("brokers: b\ntopic: t\nexactly_once: { group: g }\n");
        let eos = k.exactly_once.as_ref().unwrap();
        assert!(!eos.standby);
        assert_eq!(eos.session_timeout, Duration::from_secs(10));
        k.validate().unwrap();

        let k = parse(
            "brokers: b\ntopic: t\nexactly_once: { group: g, standby: true, session_timeout: 500ms }\n",
        );
        let err = k.validate().unwrap_err().to_string();
        assert!(err.contains("session_timeout must be at least 1s"), "{err}");
    }
}
