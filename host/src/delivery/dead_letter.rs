//! Dead letters: what could not be delivered, or could not be transformed,
//! kept on a topic (or subject, stream, queue) of its own with headers that say why, so nothing is
//! dropped silently and everything can be replayed.
//!
//! Headers (all text):
//! - `cvp-dead-letter-reason`: `transform-failed`, `undeliverable`, or
//!   `too-large` (an event the CVP source would not forward whole: over
//!   `source.cvp.max_event_size`; its value is the event's head)
//! - `cvp-error`: the error message
//! - `cvp-event-key`: the CVP event key
//! - `cvp-transform`, `cvp-failure`: the transform and its failure kind
//!   (trap, timeout, memory, contract, error), for `transform-failed`
//! - `cvp-original-topic`: where the record was going, for `undeliverable`
//! - `cvp-original-size`: the value's size when it was too large and so
//!   left out

use crate::metrics;
use cvp_transform_engine::{Header, KafkaRecord};

/// The name the CVP source gives itself in `cvp-transform` when it sends an
/// event it will not forward whole to the dead-letter topic.
pub const SOURCE: &str = "source.cvp";

fn header(key: &str, value: &str) -> Header {
    Header {
        key: key.to_string(),
        value: value.as_bytes().to_vec(),
    }
}

/// An event a transform failed on: key = the event key, value = the merged
/// event as JSON (what a transform would have been given), so it can be
/// replayed once the transform is fixed.
pub fn transform_failed(
    topic: &str,
    event_key: &str,
    event_json: Option<Vec<u8>>,
    transform: &str,
    failure: &str,
    error: &str,
) -> KafkaRecord {
    // The source hands its refusals down the same path (it has no
    // transform); a reader of the topic should not go looking for one.
    let reason = if transform == SOURCE {
        "too-large"
    } else {
        "transform-failed"
    };
    KafkaRecord {
        topic: topic.to_string(),
        key: Some(event_key.as_bytes().to_vec()),
        value: event_json,
        headers: vec![
            header("cvp-dead-letter-reason", reason),
            header("cvp-error", error),
            header("cvp-event-key", event_key),
            header("cvp-transform", transform),
            header("cvp-failure", failure),
        ],
    }
}

/// A record Kafka will not take: the same record, re-addressed, its headers
/// kept and ours added. A value too large for Kafka is left out (it would
/// be refused again) and its size noted.
pub fn undeliverable(
    topic: &str,
    event_key: &str,
    mut record: KafkaRecord,
    error: &str,
    too_large: bool,
) -> KafkaRecord {
    record
        .headers
        .push(header("cvp-dead-letter-reason", "undeliverable"));
    record.headers.push(header("cvp-error", error));
    record.headers.push(header("cvp-event-key", event_key));
    record
        .headers
        .push(header("cvp-original-topic", &record.topic));
    if too_large {
        let size = record.value.as_ref().map_or(0, Vec::len);
        record
            .headers
            .push(header("cvp-original-size", &size.to_string()));
        record.value = None;
    }
    record.topic = topic.to_string();
    record
}

pub fn count(transform: &str, reason: &str) {
    metrics::get()
        .events_dead_lettered
        .get_or_create(&metrics::labels([
            ("transform", transform),
            ("reason", reason),
        ]))
        .inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_large_values_are_left_out_and_measured() {
        let r = KafkaRecord {
            topic: "events".into(),
            key: Some(b"k".to_vec()),
            value: Some(vec![0; 10]),
            headers: vec![header("mine", "1")],
        };
        let d = undeliverable("dlq", "ev1", r, "too big", true);
        assert_eq!(d.topic, "dlq");
        assert_eq!(d.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(d.value, None);
        let h = |k: &str| {
            d.headers
                .iter()
                .find(|h| h.key == k)
                .map(|h| String::from_utf8_lossy(&h.value).into_owned())
        };
        assert_eq!(h("mine").as_deref(), Some("1"));
        assert_eq!(h("cvp-original-topic").as_deref(), Some("events"));
        assert_eq!(h("cvp-original-size").as_deref(), Some("10"));
        assert_eq!(
            h("cvp-dead-letter-reason").as_deref(),
            Some("undeliverable")
        );
    }
}
