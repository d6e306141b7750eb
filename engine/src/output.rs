//! What a call into a transform returns, held to the transform's
//! [`OutputLimits`]. wasmtime copies a call's result out of the guest only
//! while its "hostcall fuel" lasts (one unit per byte the host allocates),
//! which the runtime sets to twice `bytes_per_batch`: without it the
//! canonical ABI lets a guest point a hundred thousand records at the same
//! megabyte, and a 128 MiB guest hands the host gigabytes. What was copied
//! is then counted per event here, and per call by the chain.
//!
//! An event whose output breaks a per-event limit fails alone (reason
//! `output`); the other events of the call keep theirs. Past the per-call
//! limits the remaining events are not failed: they go on in the next call.

use crate::bindings::{Header, KafkaRecord, Output};
use crate::spec::OutputLimits;

/// What the host spends to hold a record or a header beside its bytes.
const RECORD_COST: u64 = std::mem::size_of::<KafkaRecord>() as u64;
const HEADER_COST: u64 = std::mem::size_of::<Header>() as u64;

/// The longest guest error message kept (a guest may return megabytes).
pub const MAX_MESSAGE: usize = 1024;

/// Holds each of `outputs` (one per input) to the per-event limits: per
/// input, its output or why it was refused. (The batch limits are the
/// chain's: past them events wait for the next call rather than fail.)
pub(crate) fn check(outputs: Vec<Output>, limits: &OutputLimits) -> Vec<Result<Output, String>> {
    outputs
        .into_iter()
        .map(|o| {
            let records = match o {
                Output::Error(msg) => return Ok(Output::Error(clip(&msg, MAX_MESSAGE))),
                Output::Records(records) => records,
            };
            let n = records.len() as u64;
            if n > limits.records_per_event {
                return Err(format!(
                    "returned {n} records for one event (limits.records_per_event is {})",
                    limits.records_per_event
                ));
            }
            let bytes: u64 = records.iter().map(record_bytes).sum();
            if bytes > limits.bytes_per_event {
                return Err(format!(
                    "returned more than {} for one event (limits.bytes_per_event)",
                    size(limits.bytes_per_event)
                ));
            }
            Ok(Output::Records(records))
        })
        .collect()
}

/// At most `max` bytes of `text`, cut at a character boundary, with a mark
/// and the full length when cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

fn size(bytes: u64) -> String {
    if bytes >= 1 << 20 && bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else if bytes >= 1 << 10 && bytes.is_multiple_of(1 << 10) {
        format!("{} KiB", bytes >> 10)
    } else {
        format!("{bytes} bytes")
    }
}

/// The host bytes a record takes, as [`take`] counts them: for callers
/// that bound what they hold.
pub fn record_bytes(r: &KafkaRecord) -> u64 {
    RECORD_COST
        + r.topic.len() as u64
        + r.key.as_ref().map_or(0, |k| k.len() as u64)
        + r.value.as_ref().map_or(0, |v| v.len() as u64)
        + r.headers
            .iter()
            .map(|h| HEADER_COST + (h.key.len() + h.value.len()) as u64)
            .sum::<u64>()
}
