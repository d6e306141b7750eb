//! Exactly once on Kafka (`sink.kafka.exactly_once`): the records and the
//! checkpoint are written in one Kafka transaction, the checkpoint as a
//! record keyed by the group in a compacted topic. A consumer reading
//! committed records sees each event's records once: a crash mid-way
//! aborts the open transaction (its records stay invisible), and the next
//! start, on any machine, resumes from the checkpoint Kafka committed with
//! the last records it shows.
//!
//! The transactional id is `cvp-stream-GROUP`: a second instance of the
//! same group that starts fences the first, whose next commit fails, and
//! which then stops rather than write again.

use super::config::ExactlyOnceConfig;
use super::KafkaConfig;
use crate::delivery::checkpoint::Checkpoint;
use anyhow::{anyhow, bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, Producer};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use std::time::{Duration, Instant};

/// How long a call to the transaction coordinator may take.
const COORDINATOR_TIMEOUT: Duration = Duration::from_secs(30);

pub fn transactional_id(eos: &ExactlyOnceConfig) -> String {
    format!("cvp-stream-{}", eos.group)
}

/// The checkpoint topic (one partition, compacted) exists; the producer
/// is registered with the coordinator (which aborts what a former holder
/// of the id left open, and fences it) and a first transaction is open.
pub async fn begin<C: rdkafka::ClientContext + 'static>(
    cfg: &KafkaConfig,
    eos: &ExactlyOnceConfig,
    producer: &FutureProducer<C>,
) -> Result<()> {
    ensure_checkpoint_topic(cfg, eos).await?;
    let producer = producer.clone();
    let group = eos.group.clone();
    tokio::task::spawn_blocking(move || {
        producer
            .init_transactions(Timeout::After(COORDINATOR_TIMEOUT))
            .map_err(|e| {
                anyhow!("sink.kafka.exactly_once: Kafka did not register the transactional producer for group {group:?}: {e} (the broker must support transactions, and the user needs the TransactionalId permission)")
            })?;
        producer
            .begin_transaction()
            .map_err(|e| anyhow!("sink.kafka.exactly_once: cannot begin a transaction: {e}"))
    })
    .await
    .context("the transaction set-up task")?
}

/// Makes the checkpoint topic when the cluster does not have it. A
/// cluster that will not (no CreateTopics, no permission) gets a warning:
/// the checkpoint always goes to partition 0, so a topic made otherwise
/// serves too.
pub(super) async fn ensure_checkpoint_topic(
    cfg: &KafkaConfig,
    eos: &ExactlyOnceConfig,
) -> Result<()> {
    // librdkafka's built-in mock cluster (`test.mock.num.brokers`, the
    // bench) lives inside the producer: no other client reaches it, and it
    // makes topics itself.
    if cfg.properties.contains_key("test.mock.num.brokers") {
        return Ok(());
    }
    let admin: AdminClient<_> = admin_config(cfg)
        .create()
        .map_err(|e| anyhow!("sink.kafka: cannot create an admin client: {e}"))?;
    let exists = {
        let topic = eos.checkpoint_topic.clone();
        let client = admin_config(cfg)
            .create::<BaseConsumer>()
            .map_err(|e| anyhow!("sink.kafka: cannot create a client: {e}"))?;
        tokio::task::spawn_blocking(move || {
            client
                .fetch_metadata(Some(&topic), Duration::from_secs(10))
                .map(|m| {
                    m.topics()
                        .iter()
                        .any(|t| t.error().is_none() && !t.partitions().is_empty())
                })
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false)
    };
    if exists {
        return Ok(());
    }
    // The broker's default replication (-1): a production cluster's is 3.
    let topic = NewTopic::new(&eos.checkpoint_topic, 1, TopicReplication::Fixed(-1))
        .set("cleanup.policy", "compact");
    let options = AdminOptions::new()
        .operation_timeout(Some(Duration::from_secs(10)))
        .request_timeout(Some(Duration::from_secs(10)));
    let refused = match admin.create_topics([&topic], &options).await {
        Err(e) => Some(e.to_string()),
        Ok(results) => results.into_iter().find_map(|r| match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => None,
            Err((_, code)) => Some(code.to_string()),
        }),
    };
    if let Some(why) = refused {
        tracing::warn!(
            "sink.kafka.exactly_once: could not create the checkpoint topic {:?} ({why}); create it with one partition and cleanup.policy=compact",
            eos.checkpoint_topic
        );
    }
    Ok(())
}

pub(super) fn admin_config(cfg: &KafkaConfig) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &cfg.brokers);
    // SASL and SSL settings apply to every client; producer-only ones
    // would be refused by a consumer or admin client.
    for (k, v) in &cfg.properties {
        if k.starts_with("sasl.") || k.starts_with("ssl.") || k == "security.protocol" {
            cc.set(k, &v.0);
        }
    }
    cc
}

/// The checkpoint Kafka last committed for the group, read with
/// read_committed (so nothing of an aborted transaction); `None` on a
/// first start. Call after [`begin`]: registering the id aborts a crashed
/// instance's open transaction, which would otherwise hold the read back.
pub async fn read_checkpoint(
    cfg: &KafkaConfig,
    eos: &ExactlyOnceConfig,
) -> Result<Option<Checkpoint>> {
    let mut cc = admin_config(cfg);
    cc.set(
        "group.id",
        format!("cvp-stream-{}-checkpoint-reader", eos.group),
    )
    .set("enable.auto.commit", "false")
    .set("isolation.level", "read_committed")
    .set("enable.partition.eof", "true");
    let topic = eos.checkpoint_topic.clone();
    let key = eos.group.clone();
    tokio::task::spawn_blocking(move || -> Result<Option<Checkpoint>> {
        let consumer: BaseConsumer<EndIsNoError> = cc
            .create_with_context(EndIsNoError)
            .map_err(|e| anyhow!("sink.kafka: cannot create a consumer: {e}"))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Beginning)
            .map_err(|e| anyhow!("{e}"))?;
        consumer.assign(&tpl).map_err(|e| anyhow!("{e}"))?;
        let started = Instant::now();
        let mut last: Option<Vec<u8>> = None;
        loop {
            if started.elapsed() > COORDINATOR_TIMEOUT {
                bail!("sink.kafka.exactly_once: could not read the checkpoint topic {topic:?} to its end within {COORDINATOR_TIMEOUT:?}");
            }
            match consumer.poll(Duration::from_millis(500)) {
                None => continue,
                Some(Err(KafkaError::PartitionEOF(_))) => break,
                Some(Err(e)) => bail!("sink.kafka.exactly_once: reading the checkpoint topic {topic:?}: {e}"),
                Some(Ok(m)) => {
                    if m.key() == Some(key.as_bytes()) {
                        last = m.payload().map(<[u8]>::to_vec);
                    }
                }
            }
        }
        last.map(|body| {
            serde_json::from_slice(&body).map_err(|e| {
                anyhow!("sink.kafka.exactly_once: the checkpoint of group {key:?} in {topic:?} is not a cvp-stream checkpoint: {e}")
            })
        })
        .transpose()
    })
    .await
    .context("the checkpoint reader task")?
}

/// Commits the open transaction and begins the next. An error is fatal to
/// the run: the caller aborts the transaction ([`abort`]; its records stay
/// invisible) and the next start resumes from the last committed checkpoint.
pub async fn commit<C: rdkafka::ClientContext + 'static>(
    producer: &FutureProducer<C>,
) -> Result<()> {
    let producer = producer.clone();
    tokio::task::spawn_blocking(move || {
        if let Err(e) = producer.commit_transaction(Timeout::After(COORDINATOR_TIMEOUT)) {
            let fenced = matches!(
                e.rdkafka_error_code(),
                Some(RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch)
            );
            if fenced {
                return Err(anyhow::Error::new(Fenced));
            }
            if e.rdkafka_error_code() == Some(RDKafkaErrorCode::UnsupportedFeature) {
                bail!("this Kafka cluster does not support transactions ({e}): turn sink.kafka.exactly_once off, or use a broker that implements them (Apache Kafka 0.11 or later; tansu 0.6 does not)");
            }
            return Err(anyhow::Error::new(Aborted(e.to_string())));
        }
        producer
            .begin_transaction()
            .map_err(|e| anyhow!("cannot begin the next transaction: {e}"))
    })
    .await
    .context("the commit task")?
}

/// A commit refused because another instance of the group registered the
/// transactional id since: it is the active one now, and this one must not
/// write again.
#[derive(Debug)]
pub struct Fenced;

impl std::fmt::Display for Fenced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("another instance of this exactly_once group has taken over (this producer is fenced: Kafka refused its commit, and shows none of its open transaction)")
    }
}

impl std::error::Error for Fenced {}

/// A transaction Kafka did not commit (the coordinator moved or timed it
/// out, the broker restarted): it is aborted, none of it shows, and
/// delivery can begin again from the last committed checkpoint.
#[derive(Debug)]
pub struct Aborted(String);

impl std::fmt::Display for Aborted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kafka did not commit the transaction ({}); it is aborted, and delivery resumes from the last committed checkpoint", self.0)
    }
}

impl std::error::Error for Aborted {}

/// `err`, or [`Fenced`] when the producer is fenced: once it is, every
/// step of a commit fails (the checkpoint record's send first), each
/// saying so in its own words.
pub fn fenced_or<C: rdkafka::ClientContext + 'static>(
    producer: &FutureProducer<C>,
    err: anyhow::Error,
) -> anyhow::Error {
    let fatal = producer.client().fatal_error().map(|(code, _)| code);
    if matches!(
        fatal,
        Some(RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch)
    ) {
        anyhow::Error::new(Fenced)
    } else {
        err
    }
}

/// Aborts the open transaction (at a shutdown that could not wait for
/// every record): none of it is shown, and the next start sends it again.
pub async fn abort<C: rdkafka::ClientContext + 'static>(producer: &FutureProducer<C>) {
    let producer = producer.clone();
    let aborted = tokio::task::spawn_blocking(move || {
        producer.abort_transaction(Timeout::After(COORDINATOR_TIMEOUT))
    })
    .await;
    if let Ok(Err(e)) = aborted {
        // A fenced producer's transaction is already ended by Kafka.
        if matches!(
            e.rdkafka_error_code(),
            Some(RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::InvalidProducerEpoch)
        ) {
            return;
        }
        tracing::warn!("could not abort the open transaction ({e}); Kafka aborts it when its timeout passes or the next start registers");
    }
}

/// The checkpoint reader's context: reaching the end of the topic is how it
/// knows it has read everything, not an error to log.
struct EndIsNoError;

impl rdkafka::ClientContext for EndIsNoError {
    fn error(&self, error: KafkaError, reason: &str) {
        let end = matches!(
            error,
            KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
        );
        if !end {
            tracing::error!("reading the checkpoint topic: {error}: {reason}");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for EndIsNoError {}
