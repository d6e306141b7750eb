//! The simulated CVP's data: the current state and the timeline of changes.
//!
//! Every change (including those that built the starting state) is appended
//! to one log. Subscribers read the log by index and wait on a `watch` for it
//! to grow, so a slow subscriber can never miss a message: nothing is ever
//! dropped from the log, it just reads further behind. The same log is the
//! timeline `GetAll` replays for time-bounded requests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use cvp_proto::event::{Event, EventKey, EventStreamResponse};
use cvp_proto::Operation;
use prost_types::Timestamp;
use tokio::sync::watch;

/// An event's identity: key string plus occurrence timestamp.
pub(crate) type KeyId = (String, i64, i32);

pub(crate) fn key_id(key: &EventKey) -> Option<KeyId> {
    let k = key.key.clone()?;
    let ts = key.timestamp.unwrap_or_default();
    Some((k, ts.seconds, ts.nanos))
}

pub(crate) fn ts_key(ts: &Timestamp) -> (i64, i32) {
    (ts.seconds, ts.nanos)
}

/// One entry of the timeline.
pub(crate) struct Change {
    pub op: Operation,
    pub time: Timestamp,
    pub key: KeyId,
    /// The full event after the change; for a delete, the last state before
    /// it (filters match DELETED and partial messages against this).
    pub full: Arc<Event>,
    /// What goes on the wire when it is not `full` (partial diffs, deletes,
    /// script entries sent verbatim).
    pub wire: Option<Arc<Event>>,
}

impl Change {
    pub fn wire_event(&self) -> &Event {
        self.wire.as_deref().unwrap_or(&self.full)
    }

    pub fn response(&self) -> EventStreamResponse {
        EventStreamResponse {
            value: Some(self.wire_event().clone()),
            time: Some(self.time),
            r#type: self.op as i32,
        }
    }
}

pub(crate) struct Current {
    pub full: Arc<Event>,
    /// Time of the last modification (the `time` of INITIAL messages).
    pub time: Timestamp,
    /// Creation order, so INITIAL replays the state in the order it was built.
    pub seq: u64,
}

#[derive(Default)]
pub(crate) struct Inner {
    pub current: HashMap<KeyId, Current>,
    pub log: Vec<Arc<Change>>,
    next_seq: u64,
}

impl Inner {
    pub fn apply(&mut self, change: Change) {
        match change.op {
            Operation::Deleted => {
                self.current.remove(&change.key);
            }
            _ => {
                let seq = match self.current.get(&change.key) {
                    Some(c) => c.seq,
                    None => {
                        self.next_seq += 1;
                        self.next_seq
                    }
                };
                self.current.insert(
                    change.key.clone(),
                    Current {
                        full: change.full.clone(),
                        time: change.time,
                        seq,
                    },
                );
            }
        }
        self.log.push(Arc::new(change));
    }

    /// The current state in creation order, with last-modification times.
    pub fn snapshot(&self) -> Vec<(Arc<Event>, Timestamp)> {
        let mut v: Vec<_> = self.current.values().collect();
        v.sort_unstable_by_key(|c| c.seq);
        v.into_iter().map(|c| (c.full.clone(), c.time)).collect()
    }

    /// The state as it was at `at` (changes with time <= `at`), in creation order.
    pub fn snapshot_at(&self, at: &Timestamp) -> Vec<(Arc<Event>, Timestamp)> {
        let at = ts_key(at);
        let mut state: HashMap<&KeyId, (usize, Arc<Event>, Timestamp)> = HashMap::new();
        for (i, c) in self.log.iter().enumerate() {
            if ts_key(&c.time) > at {
                continue;
            }
            match c.op {
                Operation::Deleted => {
                    state.remove(&c.key);
                }
                _ => {
                    let first = state.get(&c.key).map_or(i, |s| s.0);
                    state.insert(&c.key, (first, c.full.clone(), c.time));
                }
            }
        }
        let mut v: Vec<_> = state.into_values().collect();
        v.sort_unstable_by_key(|s| s.0);
        v.into_iter().map(|(_, e, t)| (e, t)).collect()
    }
}

/// Shared between the feed, the gRPC service and the handle.
pub(crate) struct Hub {
    inner: Mutex<Inner>,
    /// Log length, bumped after every appended batch.
    len_tx: watch::Sender<usize>,
    /// Index in the log where the live feed starts.
    pub live_start: usize,
    /// Number of live changes the feed will emit.
    pub live_total: usize,
    /// Set once a subscriber has been handed INITIAL_SYNC_COMPLETE.
    pub synced: watch::Sender<bool>,
    /// Highest log index handed to any subscriber's stream.
    pub delivered: watch::Sender<usize>,
    /// Bumped to end every open Subscribe stream (a simulated reset).
    pub reset: watch::Sender<u64>,
    /// While set, new Subscribe calls fail with UNAVAILABLE.
    pub refusing: std::sync::atomic::AtomicBool,
    /// When the live feed started emitting.
    pub live_started: std::sync::OnceLock<std::time::Instant>,
    /// Subscribe calls still to leave unanswered (`SimOptions::hang_subscribes`).
    pub hang_subscribes: std::sync::atomic::AtomicU64,
    /// `SimOptions::stall_initial_sync`.
    pub stall_initial_sync: bool,
}

impl Hub {
    pub fn new(inner: Inner, live_total: usize) -> Self {
        let live_start = inner.log.len();
        Hub {
            len_tx: watch::channel(live_start).0,
            inner: Mutex::new(inner),
            live_start,
            live_total,
            synced: watch::channel(false).0,
            delivered: watch::channel(live_start).0,
            reset: watch::channel(0).0,
            refusing: std::sync::atomic::AtomicBool::new(false),
            live_started: std::sync::OnceLock::new(),
            hang_subscribes: std::sync::atomic::AtomicU64::new(0),
            stall_initial_sync: false,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the log half-written
        // in a way readers care about, so recover from poisoning.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn watch_len(&self) -> watch::Receiver<usize> {
        self.len_tx.subscribe()
    }

    /// Appends changes built by `f` under one lock and wakes subscribers once.
    pub fn append(&self, f: impl FnOnce(&mut Inner)) {
        let len = {
            let mut inner = self.lock();
            f(&mut inner);
            inner.log.len()
        };
        self.len_tx.send_replace(len);
    }

    pub fn mark_synced(&self) {
        self.synced
            .send_if_modified(|s| !std::mem::replace(s, true));
    }

    pub fn mark_delivered(&self, upto: usize) {
        self.delivered.send_if_modified(|d| {
            if upto > *d {
                *d = upto;
                true
            } else {
                false
            }
        });
    }
}

/// Merges a (possibly partial) update into `base` (see
/// [`cvp_proto::merge::merge_event`]).
pub(crate) fn merge(base: &Event, upd: &Event) -> Event {
    let mut ev = base.clone();
    cvp_proto::merge::merge_event(&mut ev, upd.clone());
    ev
}

/// True if `ev` matches any filter (no filters = everything matches). A
/// filter matches when every field it sets equals the event's.
pub(crate) fn matches_any(filters: &[Event], ev: &Event) -> bool {
    filters.is_empty() || filters.iter().any(|f| matches(f, ev))
}

fn matches(f: &Event, ev: &Event) -> bool {
    if let Some(fk) = &f.key {
        let ek = ev.key.as_ref();
        if fk.key.is_some() && fk.key != ek.and_then(|k| k.key.clone()) {
            return false;
        }
        if fk.timestamp.is_some() && fk.timestamp != ek.and_then(|k| k.timestamp) {
            return false;
        }
    }
    if f.severity != 0 && f.severity != ev.severity {
        return false;
    }
    macro_rules! eq {
        ($($f:ident),*) => {$( if f.$f.is_some() && f.$f != ev.$f { return false; } )*};
    }
    eq!(title, description, event_type, rule_id);
    if let Some(fd) = &f.data {
        let Some(ed) = &ev.data else { return false };
        if !fd.data.iter().all(|(k, v)| ed.data.get(k) == Some(v)) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use cvp_proto::event::EventData;

    fn ev(key: &str, sev: i32, desc: &str) -> Event {
        Event {
            key: Some(EventKey {
                key: Some(key.into()),
                timestamp: Some(Timestamp {
                    seconds: 1,
                    nanos: 0,
                }),
            }),
            severity: sev,
            description: Some(desc.into()),
            data: Some(EventData {
                data: [("a".to_string(), "1".to_string())].into(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn merge_upserts_data_and_replaces_set_fields() {
        let base = ev("k", 2, "old");
        let upd = Event {
            description: Some("new".into()),
            data: Some(EventData {
                data: [("b".to_string(), "2".to_string())].into(),
            }),
            ..Default::default()
        };
        let m = merge(&base, &upd);
        assert_eq!(m.description.as_deref(), Some("new"));
        assert_eq!(m.severity, 2);
        assert_eq!(m.data.unwrap().data.len(), 2);
    }

    #[test]
    fn filters() {
        let e = ev("k", 3, "d");
        assert!(matches_any(&[], &e));
        let f = |sev| Event {
            severity: sev,
            ..Default::default()
        };
        assert!(matches_any(&[f(3)], &e));
        assert!(!matches_any(&[f(2)], &e));
        assert!(matches_any(&[f(2), f(3)], &e));
        let by_key = Event {
            key: Some(EventKey {
                key: Some("other".into()),
                timestamp: None,
            }),
            ..Default::default()
        };
        assert!(!matches_any(&[by_key], &e));
    }
}
