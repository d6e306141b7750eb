//! Wires the stages together, top to bottom:
//!
//!   CVP source (tokio task) -> transform stage (its own thread) -> sink (tokio task)
//!
//! joined by bounded channels, so a slow stage stops the one before it
//! instead of growing memory. The delivery tracker is shared by the source
//! (which registers each event) and the sink (which settles it).

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
use std::sync::Arc;
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
        })
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
        } = self;
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
                    if out_tx.blocking_send(transforms.deliveries(&batch)).is_err() {
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
