//! The unit that flows through the pipeline: one CloudVision event, merged
//! into its full state, with the operation that brought it.

use crate::enrichment::Enrichment;
use cvp_proto::event::Event;
use serde::Deserialize;
use std::sync::Arc;

/// What CVP says happened to an event: present at subscription (INITIAL),
/// changed, or gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Initial,
    Updated,
    Deleted,
}

#[derive(Debug, Clone)]
pub struct SourceEvent {
    /// Shared with the merge cache: a new event costs no copy, and an
    /// update copies only while the previous version is still in flight.
    pub event: Arc<Event>,
    pub op: Op,
    /// Its number in the delivery tracker (`delivery/tracker.rs`), given
    /// when the source emits it.
    pub seq: u64,
    /// The inventory and tags of what it names, when the source joins them
    /// (`enrichment.rs`).
    pub enrichment: Option<Arc<Enrichment>>,
}

impl SourceEvent {
    /// `key.key`: names the event in every log line about it.
    pub fn key(&self) -> &str {
        event_key(&self.event)
    }
}

impl SourceEvent {
    /// When the event last changed: its last-updated time, else its
    /// creation time (the key's timestamp).
    pub fn time(&self) -> i64 {
        event_time(&self.event)
    }
}

/// See [`SourceEvent::time`].
pub fn event_time(event: &Event) -> i64 {
    let updated = nanos(event.last_updated_time.as_ref());
    if updated > 0 {
        updated
    } else {
        nanos(event.key.as_ref().and_then(|k| k.timestamp.as_ref()))
    }
}

pub fn event_key(event: &Event) -> &str {
    event
        .key
        .as_ref()
        .and_then(|k| k.key.as_deref())
        .unwrap_or("")
}

/// Nanoseconds since the Unix epoch; 0 for an unset timestamp.
pub fn nanos(ts: Option<&prost_types::Timestamp>) -> i64 {
    ts.map(|t| {
        t.seconds
            .saturating_mul(1_000_000_000)
            .saturating_add(t.nanos as i64)
    })
    .unwrap_or(0)
}
