//! The source's event cache. CVP's UPDATED messages may be partial diffs and DELETED carries only the
//! key. A bounded cache of full events lets the host hand transforms the whole
//! event every time (the Go seed read fields a partial update leaves empty).

use crate::event::{Op, SourceEvent};
use cvp_proto::event::{Event, EventStreamResponse};
use cvp_proto::merge::merge_event;
use cvp_proto::Operation;
use lru::LruCache;
use std::num::NonZeroUsize;
use std::sync::Arc;

/// An event's identity: `key.key` and `key.timestamp`.
pub type EventId = (String, i64, i32);

pub struct EventCache {
    events: LruCache<EventId, Arc<Event>>,
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

impl EventCache {
    pub fn new(capacity: usize) -> Self {
        EventCache {
            events: LruCache::new(NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN)),
        }
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Applies one message from CVP and returns the whole event it leaves,
    /// with its operation; `None` for markers and for operations that are
    /// not events (newer CVPs add some, such as batch markers).
    pub fn apply(&mut self, resp: EventStreamResponse) -> Option<SourceEvent> {
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
        let event = match op {
            Op::Initial => self.put(value),
            Op::Updated => self.update(value),
            Op::Deleted => self.remove(value),
        };
        Some(SourceEvent { event, op, seq: 0 })
    }

    /// INITIAL: a fully specified event replaces what we had.
    fn put(&mut self, ev: Event) -> Arc<Event> {
        let ev = Arc::new(ev);
        self.events.put(id(&ev), ev.clone());
        ev
    }

    /// UPDATED: merge into the cached event and return the merged whole.
    fn update(&mut self, diff: Event) -> Arc<Event> {
        let id = id(&diff);
        match self.events.get_mut(&id) {
            Some(full) => {
                // Copies the event only if its previous version is still
                // on its way to Kafka.
                merge_event(Arc::make_mut(full), diff);
                full.clone()
            }
            None => {
                let ev = Arc::new(diff);
                self.events.put(id, ev.clone());
                ev
            }
        }
    }

    /// When the cached version of `ev`'s event last changed, if cached.
    pub fn cached_time(&self, ev: &Event) -> Option<i64> {
        self.events
            .peek(&id(ev))
            .map(|e| crate::event::event_time(e))
    }

    /// Forgets every event not in `seen` and returns them: events CVP
    /// deleted while we were not connected (they are missing from its new
    /// initial state).
    pub fn retain_seen(&mut self, seen: &std::collections::HashSet<EventId>) -> Vec<Arc<Event>> {
        let gone: Vec<EventId> = self
            .events
            .iter()
            .map(|(k, _)| k)
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        gone.iter().filter_map(|k| self.events.pop(k)).collect()
    }

    /// DELETED: forget the event, returning the last state we knew (or the
    /// bare key, if it was never seen or was evicted).
    fn remove(&mut self, key_only: Event) -> Arc<Event> {
        let mut last = self.events.pop(&id(&key_only)).unwrap_or_default();
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
        let merged = cache.update(diff);
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
    fn retain_seen_returns_what_vanished() {
        let mut cache = EventCache::new(10);
        for k in ["a", "b", "c"] {
            cache.put(ev(k));
        }
        let seen = [id(&ev("a")), id(&ev("c"))].into_iter().collect();
        let gone = cache.retain_seen(&seen);
        assert_eq!(gone.len(), 1);
        assert_eq!(crate::event::event_key(&gone[0]), "b");
        assert_eq!(cache.len(), 2);
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
