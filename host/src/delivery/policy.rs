//! `on_error`: what happens to an event when a transform traps, times out,
//! runs out of memory or returns an error for it. The transform stage marks
//! the failed event with its transform's policy; every sink applies it here.

use super::{DeliveryStats, TransformFailure};
use crate::metrics;
use anyhow::{bail, Result};
use serde::Deserialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Log the error with the event key and go on with the next event.
    #[default]
    Drop,
    /// Stop the pipeline (exit non-zero) without producing the event.
    Stop,
    /// Produce the event (as JSON) to the sink's dead-letter topic, with
    /// headers saying which transform failed and why, and go on.
    DeadLetter,
}

/// A transform failed on an event: counts it and applies the policy. `Err`
/// stops the pipeline; `Ok` leaves a dead letter (if that is the policy) to
/// the sink.
pub fn transform_failed(
    event_key: &str,
    failure: &TransformFailure,
    stats: &mut DeliveryStats,
) -> Result<()> {
    stats.failed_transform += 1;
    let TransformFailure {
        transform, error, ..
    } = failure;
    match failure.policy {
        // The transform stage already logged it with the event key.
        OnError::Drop => {
            metrics::get()
                .events_dropped
                .get_or_create(&metrics::labels([
                    ("transform", transform),
                    ("reason", "error"),
                ]))
                .inc();
            Ok(())
        }
        OnError::Stop => bail!(
            "transform {transform} failed on event {event_key} and its on_error is stop: {error}"
        ),
        OnError::DeadLetter => Ok(()),
    }
}
