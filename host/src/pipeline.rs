//! Wires the stages together, top to bottom:
//!
//!   CVP source (tokio task) -> transform chain (its own thread) -> sink (tokio task)
//!
//! joined by bounded channels, so a slow stage stops the one before it
//! instead of growing memory.

use crate::config::{Config, OnError};
use crate::event::SourceEvent;
use crate::sink::{Delivery, SharedAcks, Sink, SinkStats};
use crate::source::CvpSource;
use crate::transform::{reload, Chain, Outcome};
use anyhow::{anyhow, Result};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Batches in flight between two stages.
const CHANNEL_BATCHES: usize = 8;

pub struct Pipeline {
    source: CvpSource,
    chain: Chain,
    sink: Sink,
}

impl Pipeline {
    /// [`Pipeline::build`] from async code: transforms are instantiated and
    /// initialised off the runtime (see `main.rs` on wasmtime-wasi).
    pub async fn build_off_runtime(config: std::sync::Arc<Config>, sink: Sink) -> Result<Pipeline> {
        tokio::task::spawn_blocking(move || Pipeline::build(&config, sink))
            .await
            .map_err(|e| anyhow!("loading the transforms failed: {e}"))?
    }

    /// Everything that can fail at start-up fails here, before connecting.
    pub fn build(config: &Config, sink: Sink) -> Result<Pipeline> {
        let chain = Chain::load(config)?;
        let source = CvpSource::new(&config.source.cvp, config.pipeline.batch_size)?;
        Ok(Pipeline {
            source,
            chain,
            sink,
        })
    }

    /// Where the source resumes: after a checkpoint, or a backfill window.
    pub fn resume_from(&mut self, resume: crate::source::Resume) {
        self.source.resume_from(resume);
    }

    /// Runs until `shutdown` is cancelled (or, with `once`, until CVP ends
    /// the stream), then drains every stage and flushes the sink.
    pub async fn run(self, shutdown: CancellationToken, once: bool) -> Result<SinkStats> {
        let Pipeline {
            source,
            mut chain,
            sink,
        } = self;
        let (events_tx, mut events_rx) = mpsc::channel::<Vec<SourceEvent>>(CHANNEL_BATCHES);
        let (out_tx, out_rx) = mpsc::channel::<Vec<Delivery>>(CHANNEL_BATCHES);

        let shutdown_for_source = shutdown.clone();
        // Events are tracked from the source on, so those still in the
        // transform stage hold the checkpoint back too.
        let acks = SharedAcks::default();
        let acks_for_source = acks.clone();
        let reload = Arc::new(AtomicU8::new(reload::NONE));
        let watcher = tokio::spawn(reload::watch(
            chain.watched_files(),
            reload.clone(),
            events_tx.clone(),
            shutdown.clone(),
        ));
        let source_task = tokio::spawn(async move {
            let result = source
                .run(events_tx, shutdown_for_source, once, acks_for_source)
                .await;
            // The watcher holds a sender too: with both gone the transform
            // thread drains and ends, and then the sink.
            watcher.abort();
            result
        });

        // Transforms are synchronous CPU work: keep them off the async runtime.
        let transform_thread = std::thread::Builder::new()
            .name("transforms".into())
            .spawn(move || {
                while let Some(batch) = events_rx.blocking_recv() {
                    // Swaps happen here, between batches: nothing is in flight.
                    match reload.swap(reload::NONE, Ordering::AcqRel) {
                        reload::ALL => chain.reload(true),
                        reload::CHANGED => chain.reload(false),
                        _ => {}
                    }
                    if batch.is_empty() {
                        continue; // a nudge from the watcher
                    }
                    let outcomes = chain.process(&batch);
                    let deliveries: Vec<Delivery> = batch
                        .iter()
                        .zip(outcomes)
                        .map(|(ev, outcome)| Delivery {
                            seq: ev.seq,
                            event_key: ev.key().to_string(),
                            changed_at: (ev.op != crate::config::Op::Deleted).then(|| ev.time()),
                            // Only an event bound for the dead-letter topic
                            // pays for this encoding.
                            event_json: matches!(
                                outcome,
                                Outcome::Failed {
                                    policy: OnError::DeadLetter,
                                    ..
                                }
                            )
                            .then(|| cvp_proto::json::event_to_json(&ev.event)),
                            outcome,
                        })
                        .collect();
                    if out_tx.blocking_send(deliveries).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| anyhow!("cannot start the transform thread: {e}"))?;

        let sink_result = sink.run(out_rx, acks, shutdown.clone()).await;
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
