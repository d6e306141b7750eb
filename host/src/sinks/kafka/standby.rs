//! A standby that takes over (`sink.kafka.exactly_once.standby`): which of
//! several instances of one exactly_once group delivers, decided by Kafka
//! itself. Each instance joins a Kafka consumer group on the checkpoint
//! topic; the one the group's coordinator assigns partition 0 is active,
//! the others wait. When the active one stops answering (killed, frozen,
//! cut off) for `session_timeout`, the coordinator gives the partition to
//! a standby, which registers the group's transactional id: that aborts
//! what the former active left open and fences it, so if it comes back it
//! cannot commit again (`transaction.rs`). No consensus of our own, no
//! shared disk: the consumer group elects, the transactional id guards.
//!
//! `cooperative-sticky` assignment keeps the partition with its holder
//! when another instance joins or comes back, so a returning instance does
//! not cause a needless hand-over.

use super::config::ExactlyOnceConfig;
use super::transaction;
use super::KafkaConfig;
use anyhow::{anyhow, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The consumer group the instances of `eos.group` elect their active one
/// in.
pub fn election_group(eos: &ExactlyOnceConfig) -> String {
    format!("cvp-stream-{}-active", eos.group)
}

/// This instance's membership of its group's election: a thread keeps it
/// (librdkafka's consumer wants polling), and says through `active` whether
/// the coordinator has given it the checkpoint topic's partition 0.
pub struct Election {
    active: watch::Receiver<bool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Election {
    /// Joins the election (the checkpoint topic is made first: a topic
    /// that a broker auto-created with several partitions would elect
    /// several instances, so only partition 0 counts).
    pub async fn join(cfg: &KafkaConfig, eos: &ExactlyOnceConfig) -> Result<Election> {
        transaction::ensure_checkpoint_topic(cfg, eos).await?;
        let session_ms = eos.session_timeout.as_millis().to_string();
        let mut cc = transaction::admin_config(cfg);
        cc.set("group.id", election_group(eos))
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("session.timeout.ms", &session_ms)
            .set(
                "heartbeat.interval.ms",
                (eos.session_timeout.as_millis() / 3).max(100).to_string(),
            )
            // Records are not what it is for: it never commits offsets,
            // and starts each time at the end.
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "latest")
            .set("allow.auto.create.topics", "false");
        let consumer: BaseConsumer = cc.create().map_err(|e| {
            anyhow!("sink.kafka.exactly_once.standby: cannot create the group member: {e}")
        })?;
        consumer.subscribe(&[&eos.checkpoint_topic]).map_err(|e| {
            anyhow!("sink.kafka.exactly_once.standby: cannot join the election: {e}")
        })?;
        let (tx, active) = watch::channel(false);
        let stop = Arc::new(AtomicBool::new(false));
        let topic = eos.checkpoint_topic.clone();
        let thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("cvp-stream-election".into())
                .spawn(move || keep_membership(consumer, &topic, &tx, &stop))
                .map_err(|e| anyhow!("cannot start the election thread: {e}"))?
        };
        Ok(Election {
            active,
            stop,
            thread: Some(thread),
        })
    }

    /// Waits until this instance is the active one (true), or for the
    /// shutdown (false).
    pub async fn until_active(&mut self, shutdown: &CancellationToken) -> bool {
        tokio::select! {
            won = self.active.wait_for(|a| *a) => won.is_ok(),
            _ = shutdown.cancelled() => false,
        }
    }

    /// Whether the coordinator still counts this instance the active one.
    pub fn is_active(&self) -> bool {
        *self.active.borrow()
    }

    /// Resolves when this instance stops being the active one.
    pub fn until_lost(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut active = self.active.clone();
        async move {
            let _ = active.wait_for(|a| !*a).await;
        }
    }

    /// Leaves the group (at once: a standby takes over without waiting for
    /// the session to time out).
    pub async fn leave(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

impl Drop for Election {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// The election thread: polls the member (which runs its heartbeats'
/// outcomes and the rebalances, assigning incrementally with
/// cooperative-sticky), and publishes whether it holds partition 0.
fn keep_membership(
    consumer: BaseConsumer,
    topic: &str,
    active: &watch::Sender<bool>,
    stop: &AtomicBool,
) {
    let mut paused = false;
    while !stop.load(Ordering::Relaxed) {
        if let Some(Err(e)) = consumer.poll(Duration::from_millis(100)) {
            tracing::debug!("election: {e}");
        }
        let assignment = consumer.assignment().unwrap_or_default();
        let holds = assignment
            .elements()
            .iter()
            .any(|p| p.topic() == topic && p.partition() == 0);
        // Nothing of the topic is read: its records are the checkpoint,
        // which the active one reads read-committed on its own.
        if holds && !paused {
            paused = consumer.pause(&assignment).is_ok();
        }
        if !holds {
            paused = false;
        }
        active.send_if_modified(|a| std::mem::replace(a, holds) != holds);
    }
    // Dropping the consumer closes it, which leaves the group.
    active.send_replace(false);
    drop(consumer);
}
