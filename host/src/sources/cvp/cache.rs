//! The source's event cache. CVP's UPDATED messages may be partial diffs and DELETED carries only the
//! key. A bounded cache of full events lets the host hand transforms the whole
//! event every time (the Go seed read fields a partial update leaves empty).
//!
//! Bounded three ways: entries (`cache_size`), bytes (`cache_max_bytes`,
//! twenty 30 MiB events once held 721 MB), and each event's size
//! (`max_event_size`: partial updates that keep adding data keys grew one
//! event without limit). Sizes are protobuf sizes, as CVP sends them; in
//! memory an event takes about two to three times that.

use crate::event::{Op, SourceEvent};
use cvp_proto::event::{Event, EventStreamResponse};
use cvp_proto::merge::merge_event;
use cvp_proto::Operation;
use lru::LruCache;
use prost::Message;
use std::num::NonZeroUsize;
use std::sync::Arc;

/// An event's identity: `key.key` and `key.timestamp`.
pub type EventId = (String, i64, i32);

struct Entry {
    event: Arc<Event>,
    /// Its protobuf size.
    size: usize,
    /// The initial sync that last saw it (see [`EventCache::begin_sync`]).
    sync: u64,
}

pub struct EventCache {
    events: LruCache<EventId, Entry>,
    /// The sum of the entries' sizes.
    bytes: usize,
    max_bytes: usize,
    max_event: usize,
    /// The current initial sync's number.
    sync: u64,
}

/// What applying a message left.
pub enum Applied {
    /// The whole event, as it now is.
    Event(SourceEvent),
    /// The event is larger than `max_event_size` once merged: it is no
    /// longer cached, and is returned whole (with its size) for the caller
    /// to refuse.
    TooLarge(SourceEvent, usize),
}

pub fn id(ev: &Event) -> EventId {
    let key = ev.key.as_ref();
    let ts = key.and_then(|k| k.timestamp.as_ref());
    (
        key.and_then(|k| k.key.clone()).unwrap_or_default(),
        ts.map(|t| t.seconds).unwrap_or(0),
        ts.map(|t| t.nanos).unwrap_or(0),
    )
}

/// A message's operation and event; `None` for markers and operations
/// that are not events.
fn op_and_event(resp: EventStreamResponse) -> Option<(Op, Event)> {
    let op = match Operation::try_from(resp.r#type) {
        Ok(Operation::Initial) => Op::Initial,
        Ok(Operation::Updated) => Op::Updated,
        Ok(Operation::Deleted) => Op::Deleted,
        _ => {
            tracing::debug!(operation = resp.r#type, "operation not forwarded");
            return None;
        }
    };
    let Some(value) = resp.value else {
        tracing::debug!(operation = resp.r#type, "message without an event; skipped");
        return None;
    };
    Some((op, value))
}

impl EventCache {
    /// `capacity` events, however large (for replaying a recording).
    pub fn new(capacity: usize) -> Self {
        EventCache::bounded(capacity, usize::MAX, usize::MAX)
    }

    /// `capacity` events of `max_bytes` in all, none over `max_event`.
    pub fn bounded(capacity: usize, max_bytes: usize, max_event: usize) -> Self {
        EventCache {
            events: LruCache::new(NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN)),
            bytes: 0,
            max_bytes,
            max_event,
            sync: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// The sum of the cached events' sizes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Applies one message from CVP and returns the whole event it leaves,
    /// with its operation; `None` for markers and for operations that are
    /// not events (newer CVPs add some, such as batch markers).
    pub fn apply(&mut self, resp: EventStreamResponse) -> Option<SourceEvent> {
        match self.apply_sized(resp)? {
            Applied::Event(ev) | Applied::TooLarge(ev, _) => Some(ev),
        }
    }

    /// [`EventCache::apply`], saying when the event is too large to keep.
    pub fn apply_sized(&mut self, resp: EventStreamResponse) -> Option<Applied> {
        let (op, value) = op_and_event(resp)?;
        let (event, too_large) = match op {
            Op::Initial => self.put(value),
            Op::Updated => self.update(value),
            Op::Deleted => (self.remove(value), None),
        };
        let ev = SourceEvent {
            event,
            op,
            seq: 0,
            enrichment: None,
        };
        Some(match too_large {
            None => Applied::Event(ev),
            Some(size) => Applied::TooLarge(ev, size),
        })
    }

    /// The head of a message too large to read whole: the cached version
    /// of its event is stale, so it is forgotten. Returns the head with its
    /// operation.
    pub fn refuse(&mut self, head: EventStreamResponse) -> Option<SourceEvent> {
        let (op, value) = op_and_event(head)?;
        self.forget_id(&id(&value));
        Some(SourceEvent {
            event: Arc::new(value),
            op,
            seq: 0,
            enrichment: None,
        })
    }

    /// Caches `event` under `id` (evicting what the bounds ask), unless it
    /// is too large: then its size.
    fn insert(&mut self, id: EventId, event: Arc<Event>) -> Option<usize> {
        let size = event.encoded_len();
        if size > self.max_event {
            self.forget_id(&id);
            return Some(size);
        }
        let entry = Entry {
            event,
            size,
            sync: self.sync,
        };
        // The entry it replaced, or the least recently used one evicted.
        if let Some((_, old)) = self.events.push(id, entry) {
            self.bytes -= old.size;
        }
        self.bytes += size;
        self.shrink();
        None
    }

    /// Evicts the least recently used events while over `max_bytes`.
    fn shrink(&mut self) {
        while self.bytes > self.max_bytes {
            match self.events.pop_lru() {
                Some((_, old)) => self.bytes -= old.size,
                None => break,
            }
        }
    }

    fn forget_id(&mut self, id: &EventId) -> Option<Arc<Event>> {
        let old = self.events.pop(id)?;
        self.bytes -= old.size;
        Some(old.event)
    }

    /// INITIAL: a fully specified event replaces what we had.
    fn put(&mut self, ev: Event) -> (Arc<Event>, Option<usize>) {
        let ev = Arc::new(ev);
        let too_large = self.insert(id(&ev), ev.clone());
        (ev, too_large)
    }

    /// UPDATED: merge into the cached event and return the merged whole.
    fn update(&mut self, diff: Event) -> (Arc<Event>, Option<usize>) {
        let id = id(&diff);
        let merged = match self.forget_id(&id) {
            Some(mut full) => {
                // Copies the event only if its previous version is still
                // on its way to Kafka.
                merge_event(Arc::make_mut(&mut full), diff);
                full
            }
            None => Arc::new(diff),
        };
        let too_large = self.insert(id, merged.clone());
        (merged, too_large)
    }

    /// A new initial sync begins: from now on, [`EventCache::sweep_unseen`]
    /// finds the events it did not send. Costs nothing per event beyond
    /// the cache's own bounds (a set of the keys seen grew without limit
    /// with an initial sync that never ended).
    pub fn begin_sync(&mut self) {
        self.sync += 1;
    }

    /// When the cached version of `ev`'s event last changed, if cached.
    pub fn cached_time(&self, ev: &Event) -> Option<i64> {
        self.events
            .peek(&id(ev))
            .map(|e| crate::event::event_time(&e.event))
    }

    /// Forgets every event the current initial sync did not send and
    /// returns them: events CVP deleted while we were not connected (they
    /// are missing from its new initial state).
    pub fn sweep_unseen(&mut self) -> Vec<Arc<Event>> {
        let sync = self.sync;
        let gone: Vec<EventId> = self
            .events
            .iter()
            .filter(|(_, e)| e.sync != sync)
            .map(|(k, _)| k.clone())
            .collect();
        gone.iter().filter_map(|k| self.forget_id(k)).collect()
    }

    /// DELETED: forget the event, returning the last state we knew (or the
    /// bare key, if it was never seen or was evicted).
    fn remove(&mut self, key_only: Event) -> Arc<Event> {
        let mut last = self.forget_id(&id(&key_only)).unwrap_or_default();
        merge_event(Arc::make_mut(&mut last), key_only);
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cvp_proto::event::{EventData, EventKey};

    fn ev(key: &str) -> Event {
        Event {
            key: Some(EventKey {
                key: Some(key.into()),
                timestamp: Some(prost_types::Timestamp {
                    seconds: 10,
                    nanos: 0,
                }),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn partial_update_keeps_the_title() {
        let mut cache = EventCache::new(10);
        let mut full = ev("a");
        full.title = Some("T".into());
        full.severity = 2;
        full.data = Some(EventData {
            data: [("x".into(), "1".into()), ("y".into(), "2".into())].into(),
        });
        cache.put(full);
        let mut diff = ev("a");
        diff.description = Some("new".into());
        diff.data = Some(EventData {
            data: [("y".into(), "3".into())].into(),
        });
        let (merged, _) = cache.update(diff);
        assert_eq!(merged.title.as_deref(), Some("T"));
        assert_eq!(merged.description.as_deref(), Some("new"));
        assert_eq!(merged.severity, 2);
        let data = &merged.data.as_ref().unwrap().data;
        assert_eq!((data["x"].as_str(), data["y"].as_str()), ("1", "3"));
    }

    #[test]
    fn delete_returns_last_state_and_forgets_it() {
        let mut cache = EventCache::new(10);
        let mut full = ev("a");
        full.title = Some("T".into());
        cache.put(full);
        assert_eq!(cache.remove(ev("a")).title.as_deref(), Some("T"));
        assert_eq!(cache.len(), 0);
        assert_eq!(cache.remove(ev("a")).title, None);
    }

    #[test]
    fn sweep_returns_what_the_sync_did_not_send() {
        let mut cache = EventCache::new(10);
        for k in ["a", "b", "c"] {
            cache.put(ev(k));
        }
        cache.begin_sync();
        cache.put(ev("a"));
        cache.put(ev("c"));
        let gone = cache.sweep_unseen();
        assert_eq!(gone.len(), 1);
        assert_eq!(crate::event::event_key(&gone[0]), "b");
        assert_eq!(cache.len(), 2);
    }

    /// An event of `n` data entries of 100 bytes each.
    fn big(key: &str, n: usize) -> Event {
        let mut e = ev(key);
        e.data = Some(EventData {
            data: (0..n)
                .map(|i| (format!("k{i:05}"), "v".repeat(100)))
                .collect(),
        });
        e
    }

    /// Twenty large events in a cache of 10,000 entries once stayed at
    /// 721 MB: the bytes bound evicts the least recently used.
    #[test]
    fn bounded_by_bytes() {
        let one = big("e00", 100).encoded_len();
        let mut cache = EventCache::bounded(10_000, 5 * one, usize::MAX);
        for i in 0..20 {
            cache.put(big(&format!("e{i:02}"), 100));
        }
        assert_eq!(cache.len(), 5);
        assert_eq!(cache.bytes(), 5 * one);
        // The newest stay.
        assert_eq!(cache.cached_time(&ev("e19")), Some(10_000_000_000));
        assert_eq!(cache.cached_time(&ev("e14")), None);
        // Removing and replacing keep the count true.
        cache.remove(ev("e19"));
        cache.put(big("e18", 1));
        assert_eq!(cache.bytes(), 3 * one + big("e18", 1).encoded_len());
    }

    /// Partial updates that keep adding data keys grew one cached event
    /// without limit: past `max_event` it is refused and forgotten.
    #[test]
    fn an_event_growing_by_updates_is_refused_past_its_cap() {
        let max_event = big("a", 50).encoded_len();
        let mut cache = EventCache::bounded(10, usize::MAX, max_event);
        cache.put(ev("a"));
        let mut refused = None;
        for i in 0..1000 {
            let mut diff = ev("a");
            diff.data = Some(EventData {
                data: [(format!("k{i:05}"), "v".repeat(100))].into(),
            });
            if let Some(Applied::TooLarge(merged, size)) = cache.apply_sized(EventStreamResponse {
                value: Some(diff),
                time: None,
                r#type: Operation::Updated as i32,
            }) {
                refused = Some((i, size, merged.event.data.as_ref().unwrap().data.len()));
                break;
            }
            assert!(cache.bytes() <= max_event);
        }
        let (i, size, entries) = refused.expect("refused once too large");
        assert_eq!((i, entries), (50, 51));
        assert!(size > max_event);
        assert_eq!((cache.len(), cache.bytes()), (0, 0));
    }

    #[test]
    fn bounded() {
        let mut cache = EventCache::new(2);
        for k in ["a", "b", "c"] {
            cache.put(ev(k));
        }
        assert_eq!(cache.len(), 2);
    }
}
