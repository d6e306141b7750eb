//! Scripted mode: a JSONL recording (one `EventStreamResponse` per line)
//! split into a starting state (INITIAL lines) and a live feed
//! (UPDATED/DELETED lines, sent verbatim).

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use cvp_proto::event::{Event, EventStreamResponse};
use cvp_proto::Operation;
use prost_types::Timestamp;

use crate::state::{key_id, merge, Change, Inner};

/// Reads a JSONL script. Blank lines are skipped, and so are
/// INITIAL_SYNC_COMPLETE markers, so a recorded Subscribe stream can be
/// replayed as is. Errors name `file:line` and what is wrong.
pub fn load_jsonl(path: &Path) -> anyhow::Result<Vec<EventStreamResponse>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read script {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let at = || format!("{}:{}", path.display(), i + 1);
        let resp = cvp_proto::json::parse_stream_response(line)
            .map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
        if resp.r#type == Operation::InitialSyncComplete as i32 {
            continue;
        }
        check_entry(&resp).with_context(at)?;
        out.push(resp);
    }
    Ok(out)
}

/// What makes a script entry usable: a known type and an identified event.
pub(crate) fn check_entry(resp: &EventStreamResponse) -> anyhow::Result<()> {
    match Operation::try_from(resp.r#type) {
        Ok(Operation::Initial | Operation::Updated | Operation::Deleted) => {}
        _ => bail!(
            "unsupported type {} (expected INITIAL, UPDATED or DELETED)",
            resp.r#type
        ),
    }
    let has_key = resp
        .value
        .as_ref()
        .and_then(|v| v.key.as_ref())
        .is_some_and(|k| k.key.is_some());
    if !has_key {
        bail!("entry has no value.key.key, so it cannot be applied to the state");
    }
    Ok(())
}

/// When an entry happened: its `time`, else the event's last update, else
/// when the event occurred.
fn entry_time(resp: &EventStreamResponse) -> Timestamp {
    resp.time
        .or_else(|| resp.value.as_ref().and_then(|v| v.last_updated_time))
        .or_else(|| {
            resp.value
                .as_ref()
                .and_then(|v| v.key.as_ref())
                .and_then(|k| k.timestamp)
        })
        .unwrap_or_default()
}

/// Turns one script entry into a timeline change against the current state.
/// INITIAL entries build the state; live entries keep their wire form.
pub(crate) fn to_change(inner: &Inner, resp: &EventStreamResponse) -> Option<Change> {
    let value = resp.value.as_ref()?;
    let key = key_id(value.key.as_ref()?)?;
    let existing = inner.current.get(&key).map(|c| c.full.clone());
    let time = entry_time(resp);
    let live = resp.r#type != Operation::Initial as i32;
    let wire = live.then(|| Arc::new(value.clone()));
    let (op, full) = if resp.r#type == Operation::Deleted as i32 {
        let full = existing.unwrap_or_else(|| Arc::new(value.clone()));
        (Operation::Deleted, full)
    } else {
        let base = existing.as_deref().cloned().unwrap_or_else(Event::default);
        (Operation::Updated, Arc::new(merge(&base, value)))
    };
    Some(Change {
        op,
        time,
        key,
        full,
        wire,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("cvp-sim-{}-{name}", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn loads_sample() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/sample-events.jsonl");
        let script = load_jsonl(&p).unwrap();
        assert_eq!(script.len(), 9);
    }

    #[test]
    fn errors_name_file_and_line() {
        let p = write(
            "bad.jsonl",
            "\n{\"value\":{\"key\":{\"key\":\"a\"}},\"type\":\"UPDATED\"}\n{\"value\":{\"key\":{\"key\":\"a\",\"timestamp\":\"x\"}},\"type\":\"UPDATED\"}\n",
        );
        let err = format!("{:#}", load_jsonl(&p).unwrap_err());
        assert!(err.contains("bad.jsonl:3:"), "{err}");
        assert!(
            err.contains("bad timestamp \"x\" at value.key.timestamp"),
            "{err}"
        );
        let p = write("nokey.jsonl", "{\"value\":{},\"type\":\"UPDATED\"}\n");
        let err = format!("{:#}", load_jsonl(&p).unwrap_err());
        assert!(
            err.contains("nokey.jsonl:1") && err.contains("value.key.key"),
            "{err}"
        );
        let p = write("notype.jsonl", "{\"value\":{\"key\":{\"key\":\"a\"}}}\n");
        let err = format!("{:#}", load_jsonl(&p).unwrap_err());
        assert!(err.contains("unsupported type 0"), "{err}");
    }
}
