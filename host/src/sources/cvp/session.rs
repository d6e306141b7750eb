//! One subscription to CVP's event stream: connect, authenticate, take the
//! initial state and then live changes, merge each into the cache, and send
//! on, in batches, what the config forwards, each event registered with the
//! delivery tracker as it leaves.

use super::cache::Applied;
use super::codec::{head_of, EventCodec, Incoming};
use super::error::SessionError;
use super::CvpSource;
use crate::delivery::{Delivery, OnError, Outcome, SharedTracker, Tracker, TransformFailure};
use crate::event::{Op, SourceEvent};
use crate::metrics::{self, StreamState};
use crate::progress;
use cvp_proto::event::EventStreamResponse;
use cvp_proto::Operation;
use futures::StreamExt;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::codec::Streaming;

/// Why a session ended without an error.
pub enum SessionEnd {
    Shutdown,
    StreamClosed,
}

/// Events received per (operation, severity), flushed to the metrics once
/// per chunk rather than once per event.
#[derive(Default)]
pub struct ReceivedCounts([[u64; SEVERITIES.len()]; 3]);

/// Label values for `EventSeverity`, indexed by its wire number.
const SEVERITIES: [&str; 6] = [
    "unspecified",
    "info",
    "warning",
    "error",
    "critical",
    "debug",
];

impl ReceivedCounts {
    fn count(&mut self, ev: &SourceEvent) {
        let op = match ev.op {
            Op::Initial => 0,
            Op::Updated => 1,
            Op::Deleted => 2,
        };
        // Unknown severities from a newer CVP count as unspecified.
        let sev = usize::try_from(ev.event.severity)
            .ok()
            .filter(|s| *s < SEVERITIES.len())
            .unwrap_or(0);
        self.0[op][sev] += 1;
    }

    fn flush(&mut self) {
        let m = metrics::get();
        for (op, row) in ["initial", "updated", "deleted"].iter().zip(&mut self.0) {
            for (sev, n) in SEVERITIES.iter().zip(row.iter_mut()) {
                if *n > 0 {
                    m.events_received
                        .get_or_create(&metrics::labels([("operation", op), ("severity", sev)]))
                        .inc_by(*n);
                    *n = 0;
                }
            }
        }
    }
}

impl CvpSource {
    pub(super) async fn session(
        &mut self,
        tx: &mpsc::Sender<Vec<SourceEvent>>,
        shutdown: &CancellationToken,
        tracker: &SharedTracker,
    ) -> Result<SessionEnd, SessionError> {
        let m = metrics::get();
        m.cvp_waiting();
        // A CVP that takes the call and never answers it (no response
        // headers) once held the source here forever, with no log.
        let stream = tokio::time::timeout(self.conn.subscribe_timeout, self.subscribe())
            .await
            .map_err(|_| SessionError::SubscribeTimeout {
                authority: self.conn.target.authority(),
                after: self.conn.subscribe_timeout,
            })??;
        tracing::info!(cvp = %self.conn.target.authority(), "subscribed to CVP events");
        metrics::get().set_stream_state(StreamState::syncing);
        self.syncing = true;
        progress::start_sync();
        // Events cached before this sync and missing from it were deleted
        // while we were away; with nothing cached there is nothing to find.
        self.compare_sync = !self.cache.is_empty();
        self.cache.begin_sync();
        let mut chunks = stream.ready_chunks(self.batch_size);
        loop {
            // Until the initial sync completes, CVP is expected to keep
            // sending; once live, silence is normal (HTTP/2 keepalive finds
            // a dead connection).
            if self.syncing {
                m.cvp_waiting();
            } else {
                m.cvp_not_waiting();
            }
            let chunk = tokio::select! {
                c = chunks.next() => c,
                _ = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
            };
            // Waiting for the pipeline below is not waiting for CVP.
            m.cvp_not_waiting();
            let Some(chunk) = chunk else {
                return Ok(SessionEnd::StreamClosed);
            };
            let mut batch = Vec::with_capacity(chunk.len());
            let mut too_large = Vec::new();
            let mut failure = None;
            let horizon = self.horizon(super::now_nanos());
            for item in chunk {
                match item {
                    Ok(Incoming::Whole(resp)) => {
                        self.handle(resp, None, &mut batch, &mut too_large, horizon)
                    }
                    Ok(Incoming::TooLarge { head, size }) => {
                        self.handle(head, Some(size), &mut batch, &mut too_large, horizon)
                    }
                    Err(status) => {
                        failure = Some(status);
                        break;
                    }
                }
            }
            self.received.flush();
            if let Some(dir) = &self.directory {
                // A snapshot per event, taken as it is sent on.
                dir.enrich(&mut batch);
            }
            if !batch.is_empty() {
                // From here until the sink has delivered all its records,
                // an event holds the checkpoint back.
                let mut tracker = tracker.lock();
                for ev in &mut batch {
                    ev.seq = register(&mut tracker, ev, horizon);
                }
            }
            if !too_large.is_empty() && !self.refuse(too_large, tracker, horizon).await {
                return Ok(SessionEnd::Shutdown);
            }
            // Whatever arrived before a failure still goes on.
            if !batch.is_empty() && tx.send(batch).await.is_err() {
                return Ok(SessionEnd::Shutdown);
            }
            if let Some(status) = failure {
                if status.code() == tonic::Code::OutOfRange
                    && status.message().contains("message length too large")
                {
                    return Err(SessionError::MessageTooLarge(status.message().to_string()));
                }
                return Err(status.into());
            }
        }
    }

    /// Connects, logs in and subscribes: everything up to CVP's answer.
    async fn subscribe(&mut self) -> Result<Streaming<Incoming>, SessionError> {
        // The generated client's call, with our codec (codec.rs).
        let (mut grpc, request) =
            super::connect::open(&mut self.conn, self.request.clone()).await?;
        let path = http::uri::PathAndQuery::from_static("/arista.event.v1.EventService/Subscribe");
        let codec = EventCodec {
            max_event: self.max_event_size,
        };
        Ok(grpc
            .server_streaming(request, path, codec)
            .await?
            .into_inner())
    }

    /// Applies one message to the cache and queues what is to be forwarded
    /// (`out`), or refused for its size (`too_large`, with the size). An
    /// event dated after `horizon` does not count as seen for resuming.
    /// `wire_size`: the message was too large to read, `resp` is its head.
    fn handle(
        &mut self,
        resp: EventStreamResponse,
        wire_size: Option<usize>,
        out: &mut Vec<SourceEvent>,
        too_large: &mut Vec<(SourceEvent, usize)>,
        horizon: i64,
    ) {
        if resp.r#type == Operation::InitialSyncComplete as i32 {
            progress::finish();
            self.sync_complete(out);
            tracing::info!(cached = self.cache.len(), "CVP initial sync complete");
            metrics::get().set_stream_state(StreamState::live);
            self.syncing = false;
            return;
        }
        let initial = resp.r#type == Operation::Initial as i32;
        // Before the cache takes the new state: what we knew of it.
        let known = match (&resp.value, initial) {
            (Some(v), true) => Some(self.cache.cached_time(v)),
            _ => None,
        };
        let applied = match wire_size {
            None => self.cache.apply_sized(resp),
            Some(size) => self
                .cache
                .refuse(resp)
                .map(|ev| Applied::TooLarge(ev, size)),
        };
        let (mut ev, size) = match applied {
            None => return,
            Some(Applied::Event(ev)) => (ev, None),
            Some(Applied::TooLarge(ev, size)) => (ev, Some(size)),
        };
        self.received.count(&ev);
        let time = ev.time();
        if time > horizon {
            self.future_dated(&ev, time);
        } else {
            self.resume.newest = self.resume.newest.max(time);
        }
        let wanted = match ev.op {
            Op::Initial => {
                progress::inc();
                if self.forward.initial {
                    true
                } else if self.resume.changed_while_away(&ev, time, known.flatten()) {
                    // Not news to CVP, but news to Kafka: it changed while
                    // we were not connected, so it goes on as an update.
                    tracing::debug!(
                        event_key = ev.key(),
                        "event {} changed while disconnected; forwarding it",
                        ev.key()
                    );
                    ev.op = Op::Updated;
                    self.forward.updated
                } else {
                    false
                }
            }
            Op::Updated => self.forward.updated,
            Op::Deleted => self.forward.deleted,
        };
        match (wanted, size) {
            (false, _) => {}
            (true, None) => out.push(ev),
            (true, Some(size)) => too_large.push((ev, size)),
        }
    }

    /// Events too large to forward: logged, counted, and handed to the
    /// sink as failures whose policy is `dead_letter`, so that they reach
    /// its dead-letter topic (when it has one) with their key and their
    /// head as the value. False when the pipeline has shut down.
    async fn refuse(
        &mut self,
        events: Vec<(SourceEvent, usize)>,
        tracker: &SharedTracker,
        horizon: i64,
    ) -> bool {
        let max = self.max_event_size;
        let mut letters = Vec::with_capacity(events.len());
        for (ev, size) in events {
            metrics::get().cvp_events_too_large.inc();
            let say = format!(
                "event {} is {size} bytes, over source.cvp.max_event_size ({max}): not forwarded; its key and head go to the sink's dead-letter topic, if it has one",
                ev.key()
            );
            if self.warned(|s| &mut s.too_large_warned) {
                tracing::warn!(event_key = ev.key(), "{say}");
            } else {
                tracing::debug!(event_key = ev.key(), "{say}");
            }
            if self.dead_letters.is_none() {
                continue;
            }
            // The head only: the whole event is what memory is kept from.
            let head = SourceEvent {
                event: Arc::new(head_of(&ev.event)),
                op: ev.op,
                seq: 0,
                enrichment: None,
            };
            drop(ev);
            let seq = register(&mut tracker.lock(), &head, horizon);
            letters.push(Delivery {
                seq,
                event_key: head.key().to_string(),
                changed_at: None,
                outcome: Outcome::Failed(TransformFailure {
                    transform: crate::delivery::dead_letter::SOURCE.into(),
                    reason: "too-large",
                    error: format!(
                        "the event is {size} bytes, over source.cvp.max_event_size ({max})"
                    ),
                    policy: OnError::DeadLetter,
                    event_json: Some(cvp_proto::json::event_to_json(&head.event)),
                }),
                // A head of a few hundred bytes: not counted against
                // pipeline.max_pending_bytes.
                held: Default::default(),
            });
        }
        match &self.dead_letters {
            Some(tx) if !letters.is_empty() => tx.send(letters).await.is_ok(),
            _ => true,
        }
    }

    /// Whether to log at warning level now: at most once a minute per kind
    /// (the `Option<Instant>` `field` picks), so that a broken CVP or
    /// device cannot flood the log; the metrics count every one.
    fn warned(&mut self, field: impl FnOnce(&mut Self) -> &mut Option<std::time::Instant>) -> bool {
        let last = field(self);
        let loud = last.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(60));
        if loud {
            *last = Some(std::time::Instant::now());
        }
        loud
    }

    /// An event dated in the future: forwarded, but its time is not to be
    /// trusted for resuming. Logged (at most once a minute as a warning)
    /// and counted.
    fn future_dated(&mut self, ev: &SourceEvent, time: i64) {
        metrics::get().cvp_events_future_dated.inc();
        let say = format!(
            "event {} is dated {}, in the future (beyond source.cvp.future_tolerance): it is forwarded but does not move the resume point; check the clocks of CVP and its devices",
            ev.key(),
            super::utc(time)
        );
        if self.warned(|s| &mut s.future_warned) {
            tracing::warn!(event_key = ev.key(), "{say}");
        } else {
            tracing::debug!(event_key = ev.key(), "{say}");
        }
    }

    /// The initial state is complete: later reconnects compare against what
    /// we have seen, and events that vanished from CVP's state while we
    /// were away were deleted.
    fn sync_complete(&mut self, out: &mut Vec<SourceEvent>) {
        self.resume.synced();
        if std::mem::take(&mut self.compare_sync) {
            for event in self.cache.sweep_unseen() {
                let ev = SourceEvent {
                    event,
                    op: Op::Deleted,
                    seq: 0,
                    enrichment: None,
                };
                self.received.count(&ev);
                if self.forward.deleted {
                    tracing::debug!(
                        event_key = ev.key(),
                        "event {} was deleted while disconnected",
                        ev.key()
                    );
                    out.push(ev);
                }
            }
        }
    }
}

/// Registers `ev` with the tracker; one dated after `horizon` without its
/// time, which is not to be trusted for the resume point.
fn register(tracker: &mut Tracker, ev: &SourceEvent, horizon: i64) -> u64 {
    let time = ev.time();
    if time > horizon {
        tracker.register_untimed(ev.key())
    } else {
        tracker.register(ev.key(), time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::sources::cvp::CvpConfig;
    use cvp_proto::event::{Event, EventKey};

    /// Bytes allocated and not yet freed, per thread: what a test's own
    /// code holds on to, whatever other tests do meanwhile.
    mod counting {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        thread_local! {
            pub static HELD: Cell<isize> = const { Cell::new(0) };
        }

        fn add(n: isize) {
            let _ = HELD.try_with(|h| h.set(h.get() + n));
        }

        pub struct Counting;

        // SAFETY: every call is passed on to the system allocator unchanged.
        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                add(layout.size() as isize);
                unsafe { System.alloc(layout) }
            }
            unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
                add(-(layout.size() as isize));
                unsafe { System.dealloc(ptr, layout) }
            }
            unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
                add(new as isize - layout.size() as isize);
                unsafe { System.realloc(ptr, layout, new) }
            }
        }

        #[global_allocator]
        static ALLOCATOR: Counting = Counting;

        pub fn held() -> isize {
            HELD.with(|h| h.get())
        }
    }

    fn source(cache_size: usize) -> CvpSource {
        let mut cfg = CvpConfig::new("127.0.0.1:1");
        cfg.token = Some(Secret::new("t"));
        cfg.tls.enabled = false;
        cfg.cache_size = cache_size;
        CvpSource::new(&cfg, 100).unwrap()
    }

    fn initial(key: &str) -> EventStreamResponse {
        EventStreamResponse {
            value: Some(Event {
                key: Some(EventKey {
                    key: Some(key.into()),
                    timestamp: Some(prost_types::Timestamp {
                        seconds: 10,
                        nanos: 0,
                    }),
                }),
                ..Default::default()
            }),
            time: None,
            r#type: Operation::Initial as i32,
        }
    }

    /// Issue 16, item 9: an initial sync that never ends, each key new,
    /// after a reconnect (so there is a cache to compare it with). The
    /// source held ~220 bytes more per key, forever (a set of the keys
    /// seen); now what it holds stays within the cache's bounds.
    #[test]
    fn a_never_ending_initial_sync_holds_nothing_per_key() {
        let mut src = source(100);
        let (mut out, mut too_large) = (Vec::new(), Vec::new());
        let mut feed = |src: &mut CvpSource, resp| {
            src.handle(resp, None, &mut out, &mut too_large, i64::MAX);
        };
        for i in 0..100 {
            feed(&mut src, initial(&format!("a{i:06}")));
        }
        feed(
            &mut src,
            EventStreamResponse {
                r#type: Operation::InitialSyncComplete as i32,
                ..Default::default()
            },
        );
        // Reconnected: what `session` does when CVP answers.
        src.compare_sync = true;
        src.cache.begin_sync();
        // The cache fills with new keys; from then on it only churns.
        for i in 0..200 {
            feed(&mut src, initial(&format!("b{i:06}")));
        }
        let before = counting::held();
        for i in 200..20_200 {
            feed(&mut src, initial(&format!("b{i:06}")));
        }
        let per_key = (counting::held() - before) / 20_000;
        assert_eq!(per_key, 0, "bytes held per new key");
        assert_eq!(src.cache.len(), 100);
    }
}
