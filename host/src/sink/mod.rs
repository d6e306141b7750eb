//! Where transformed records go: Kafka, or stdout for the demo.

mod acks;
mod dead_letter;
mod kafka;
mod kafka_log;
mod stdout;

pub use acks::SharedAcks;
pub use kafka::KafkaSink;
pub use stdout::{describe, StdoutSink};

use crate::config::OnError;
use crate::transform::Outcome;
use anyhow::{bail, Result};
use tokio::sync::mpsc;

/// What the transform stage hands the sink for one event.
pub struct Delivery {
    /// The event's number in the delivery tracker.
    pub seq: u64,
    /// The CVP event key, for log lines about this event.
    pub event_key: String,
    /// The merged event as JSON, only for an event that goes to the
    /// dead-letter topic.
    pub event_json: Option<Vec<u8>>,
    /// When the change happened at CVP (ns since the epoch), for latency
    /// measurement; `None` for a deletion, whose merged event carries the
    /// time of its last state, not of the deletion.
    pub changed_at: Option<i64>,
    pub outcome: Outcome,
}

pub enum Sink {
    Kafka(KafkaSink),
    Stdout(StdoutSink),
}

/// Counts for the end-of-run summary and tests.
#[derive(Debug, Default, Clone, Copy)]
pub struct SinkStats {
    pub events: u64,
    pub produced: u64,
    pub dropped: u64,
    pub failed_transform: u64,
    pub failed_delivery: u64,
    /// When the first and the last record were acknowledged (benchmarks
    /// time bursts with these).
    pub first_ack: Option<std::time::Instant>,
    pub last_ack: Option<std::time::Instant>,
}

/// Per acknowledged record, ns from the change at CVP to Kafka's
/// acknowledgement: exact samples for `cvp-stream bench` (the metrics'
/// histogram buckets are too coarse for percentiles).
pub type LatencyLog = std::sync::Arc<std::sync::Mutex<Vec<i64>>>;

impl Sink {
    /// Consumes deliveries until the channel closes, then flushes. Returns
    /// an error when a transform whose policy is `stop` failed.
    pub async fn run(
        self,
        rx: mpsc::Receiver<Vec<Delivery>>,
        acks: SharedAcks,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Result<SinkStats> {
        match self {
            Sink::Kafka(k) => k.run(rx, acks, shutdown).await,
            Sink::Stdout(s) => s.run(rx, acks).await,
        }
    }
}

/// Applies the on_error policy of a failed event. `Err` stops the pipeline.
fn failed(
    event_key: &str,
    transform: &str,
    error: &str,
    policy: OnError,
    stats: &mut SinkStats,
) -> Result<()> {
    stats.failed_transform += 1;
    match policy {
        // The transform stage already logged it with the event key.
        OnError::Drop => {
            crate::metrics::get()
                .events_dropped
                .get_or_create(&crate::metrics::labels([
                    ("transform", transform),
                    ("reason", "error"),
                ]))
                .inc();
            Ok(())
        }
        OnError::Stop => bail!(
            "transform {transform} failed on event {event_key} and its on_error is stop: {error}"
        ),
        // The Kafka sink sends it to the dead-letter topic; the printing
        // sink shows it.
        OnError::DeadLetter => Ok(()),
    }
}
