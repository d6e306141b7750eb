//! Wires the stages together, top to bottom:
//!
//!   CVP source (tokio task) -> transform stage (its own thread) -> sink (tokio task)
//!
//! joined by bounded channels, so a slow stage stops the one before it
//! instead of growing memory. Between the transform stage and the sink the
//! bound is in bytes as well ([`PendingBytes`]): a transform returning large
//! values would otherwise fill the channel's batches with gigabytes. The
//! delivery tracker is shared by the source (which registers each event)
//! and the sink (which settles it).

use crate::config::Config;
use crate::delivery::{
    CheckpointWriter, Delivery, DeliveryObserver, DeliveryStats, Ledger, SharedTracker,
};
use crate::event::SourceEvent;
use crate::sinks::Sink;
use crate::sources::cvp::{CvpSource, Resume};
use crate::transforms::reload::{self, PendingReload};
use crate::transforms::TransformStage;
use anyhow::{anyhow, Result};
use std::sync::{Arc, Condvar, Mutex};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Batches in flight between two stages.
const CHANNEL_BATCHES: usize = 8;

pub struct Pipeline {
    source: CvpSource,
    transforms: TransformStage,
    sink: Sink,
    checkpoint: Option<CheckpointWriter>,
    observer: Option<Arc<dyn DeliveryObserver>>,
    max_pending_bytes: u64,
}

impl Pipeline {
    /// [`Pipeline::build`] from async code: transforms are instantiated and
    /// initialised off the runtime (see `main.rs` on wasmtime-wasi).
    pub async fn build_off_runtime(config: Arc<Config>, sink: Sink) -> Result<Pipeline> {
        tokio::task::spawn_blocking(move || Pipeline::build(&config, sink))
            .await
            .map_err(|e| anyhow!("loading the transforms failed: {e}"))?
    }

    /// Everything that can fail at start-up fails here, before connecting.
    pub fn build(config: &Config, sink: Sink) -> Result<Pipeline> {
        let transforms = TransformStage::load(
            &config.transforms,
            &config.pipeline,
            config.sink.default_topic(),
        )?;
        let source = CvpSource::new(&config.source.cvp, config.pipeline.batch_size)?;
        Ok(Pipeline {
            source,
            transforms,
            sink,
            checkpoint: config.checkpoint.as_ref().map(CheckpointWriter::new),
            observer: None,
            max_pending_bytes: config.pipeline.max_pending_bytes,
        })
    }

    /// The store of CVP's inventory and tags the source joins events with
    /// (`None` without `source.cvp.enrich`).
    pub fn directory(&self) -> Option<Arc<crate::sources::cvp::Directory>> {
        self.source.directory()
    }

    /// Where the source resumes: after a checkpoint, or a backfill window.
    pub fn resume_from(&mut self, resume: Resume) {
        self.source.resume_from(resume);
    }

    /// Tells `observer` of every acknowledged record (benchmarks).
    pub fn observe_deliveries(&mut self, observer: Arc<dyn DeliveryObserver>) {
        self.observer = Some(observer);
    }

    /// Runs until `shutdown` is cancelled (or, with `once`, until CVP ends
    /// the stream), then drains every stage and flushes the sink.
    pub async fn run(self, shutdown: CancellationToken, once: bool) -> Result<DeliveryStats> {
        let Pipeline {
            mut source,
            mut transforms,
            sink,
            checkpoint,
            observer,
            max_pending_bytes,
        } = self;
        let pending_bytes = PendingBytes::new(max_pending_bytes);
        let (events_tx, mut events_rx) = mpsc::channel::<Vec<SourceEvent>>(CHANNEL_BATCHES);
        let (out_tx, out_rx) = mpsc::channel::<Vec<Delivery>>(CHANNEL_BATCHES);
        // Events too large to forward skip the transforms, for the sink's
        // dead-letter path.
        source.dead_letters_to(out_tx.clone());

        // Events are tracked from the source on, so those still in the
        // transform stage hold the checkpoint back too.
        let tracker = SharedTracker::default();
        let pending_reload = PendingReload::default();
        let watcher = tokio::spawn(reload::watch(
            transforms.watched_files(),
            pending_reload.clone(),
            events_tx.clone(),
            shutdown.clone(),
        ));
        let source_task = tokio::spawn({
            let (shutdown, tracker) = (shutdown.clone(), tracker.clone());
            async move {
                let result = source.run(events_tx, shutdown, once, tracker).await;
                // The watcher holds a sender too: with both gone the
                // transform thread drains and ends, and then the sink.
                watcher.abort();
                result
            }
        });

        // Transforms are synchronous CPU work: keep them off the async runtime.
        let transform_thread = std::thread::Builder::new()
            .name("transforms".into())
            .spawn(move || {
                while let Some(batch) = events_rx.blocking_recv() {
                    // Swaps happen here, between batches: nothing is in flight.
                    transforms.reload(pending_reload.take());
                    if batch.is_empty() {
                        continue; // a nudge from the watcher
                    }
                    // Sent as settled: a transform whose retries take long
                    // hands on its healthy events before trying the rest.
                    let mut open = true;
                    transforms.deliveries_each(&batch, |mut deliveries| {
                        if !open {
                            return;
                        }
                        pending_bytes.hold(&mut deliveries);
                        open = out_tx.blocking_send(deliveries).is_ok();
                    });
                    if !open {
                        break;
                    }
                }
            })
            .map_err(|e| anyhow!("cannot start the transform thread: {e}"))?;

        let ledger = Ledger::new(sink.name(), tracker, checkpoint, observer);
        let sink_result = sink.run(out_rx, ledger, shutdown.clone()).await;
        if sink_result.is_err() {
            // The sink stopped (a `stop` policy): stop reading from CVP too.
            shutdown.cancel();
        }
        let source_result = source_task
            .await
            .map_err(|e| anyhow!("CVP source task failed: {e}"))?;
        let _ = tokio::task::spawn_blocking(move || transform_thread.join()).await;
        let stats = sink_result?;
        source_result?;
        Ok(stats)
    }
}

/// The bytes of records the transform stage has handed on and the sink has
/// not yet taken over (`pipeline.max_pending_bytes`), wherever they wait:
/// in the channel or in the sink's hands. Each [`Delivery`] carries a
/// [`Held`] that gives its bytes back when the sink is done with it (has
/// handed its records to the server's client, whose own queue bound takes
/// over), so the transform stage waits instead of growing memory.
#[derive(Clone)]
pub struct PendingBytes(Arc<Budget>);

struct Budget {
    max: u64,
    held: Mutex<u64>,
    freed: Condvar,
}

impl PendingBytes {
    pub fn new(max: u64) -> PendingBytes {
        PendingBytes(Arc::new(Budget {
            max,
            held: Mutex::new(0),
            freed: Condvar::new(),
        }))
    }

    /// Waits (blocking: the transform thread) until `deliveries` fit, then
    /// counts them. Deliveries larger than the whole budget go alone, when
    /// nothing else is held.
    pub fn hold(&self, deliveries: &mut [Delivery]) {
        let bytes: u64 = deliveries.iter().map(delivery_bytes).sum();
        let b = &*self.0;
        let Ok(mut held) = b.held.lock() else {
            return;
        };
        while *held > 0 && *held + bytes > b.max {
            held = match b.freed.wait(held) {
                Ok(h) => h,
                Err(_) => return,
            };
        }
        *held += bytes;
        crate::metrics::get()
            .pipeline_pending_bytes
            .set(*held as i64);
        drop(held);
        for d in deliveries {
            let bytes = delivery_bytes(d);
            d.held = Held(Some((self.clone(), bytes)));
        }
    }

    /// What is held now.
    pub fn held(&self) -> u64 {
        self.0.held.lock().map_or(0, |h| *h)
    }

    fn release(&self, bytes: u64) {
        let b = &*self.0;
        if let Ok(mut held) = b.held.lock() {
            *held = held.saturating_sub(bytes);
            crate::metrics::get()
                .pipeline_pending_bytes
                .set(*held as i64);
        }
        b.freed.notify_all();
    }
}

/// The bytes one delivery holds: its records as the engine counts them,
/// or the event JSON a dead letter will carry.
fn delivery_bytes(d: &Delivery) -> u64 {
    let body = match &d.outcome {
        crate::delivery::Outcome::Records(records) => records
            .iter()
            .map(cvp_transform_engine::record_bytes)
            .sum::<u64>(),
        crate::delivery::Outcome::Failed(f) => {
            (f.error.len() + f.event_json.as_ref().map_or(0, Vec::len)) as u64
        }
    };
    body + (std::mem::size_of::<Delivery>() + d.event_key.len()) as u64
}

/// A delivery's share of [`PendingBytes`], given back when it is dropped.
#[derive(Default)]
pub struct Held(Option<(PendingBytes, u64)>);

impl Drop for Held {
    fn drop(&mut self) {
        if let Some((budget, bytes)) = self.0.take() {
            budget.release(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::Outcome;
    use cvp_transform_engine::KafkaRecord;

    fn delivery(value: usize) -> Delivery {
        Delivery {
            seq: 0,
            event_key: "k".into(),
            changed_at: None,
            outcome: Outcome::Records(vec![KafkaRecord {
                topic: "t".into(),
                key: None,
                value: Some(vec![0; value]),
                headers: Vec::new(),
            }]),
            held: Held::default(),
        }
    }

    /// The transform stage waits while the sink holds the budget, and goes
    /// on when the sink drops what it took.
    #[test]
    fn pending_bytes_hold_the_sender_until_the_sink_lets_go() {
        let budget = PendingBytes::new(3 << 20);
        let mut first = vec![delivery(2 << 20)];
        budget.hold(&mut first);
        assert!(budget.held() > 2 << 20);
        let (tx, rx) = std::sync::mpsc::channel();
        let sender = {
            let budget = budget.clone();
            std::thread::spawn(move || {
                let mut second = vec![delivery(2 << 20)];
                budget.hold(&mut second);
                tx.send(()).unwrap();
                second
            })
        };
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "went past a full budget"
        );
        drop(first);
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the sender goes on once the bytes are given back");
        let second = sender.join().unwrap();
        assert!(budget.held() > 2 << 20 && budget.held() < 3 << 20);
        drop(second);
        assert_eq!(budget.held(), 0);
        // Larger than the whole budget: goes alone.
        let mut huge = vec![delivery(5 << 20)];
        budget.hold(&mut huge);
        assert!(budget.held() > 5 << 20);
    }
}
