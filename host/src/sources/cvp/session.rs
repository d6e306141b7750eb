//! One subscription to CVP's event stream: connect, authenticate, take the
//! initial state and then live changes, merge each into the cache, and send
//! on, in batches, what the config forwards, each event registered with the
//! delivery tracker as it leaves.

use super::cache;
use super::error::SessionError;
use super::CvpSource;
use crate::delivery::SharedTracker;
use crate::event::{Op, SourceEvent};
use crate::metrics::{self, StreamState};
use crate::progress;
use cvp_proto::event::event_service_client::EventServiceClient;
use cvp_proto::event::EventStreamResponse;
use cvp_proto::Operation;
use futures::StreamExt;
use std::collections::HashSet;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Huge `data` maps must not break decoding (tonic's default is 4 MiB).
const MAX_MESSAGE: usize = 64 << 20;

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
        let channel =
            super::connect::connect(&self.target, self.tls.as_ref(), self.connect_timeout).await?;
        let token = match &self.login {
            Some(l) => self
                .credentials
                .bearer(l)
                .await
                .map_err(|e| SessionError::Login(format!("{e:#}").replace('\n', " ")))?,
            None => self.credentials.bearer_without_login(),
        };
        let auth: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> = match token {
            Some(t) => Some(
                format!("Bearer {}", t.expose())
                    .parse()
                    .map_err(|_| SessionError::TokenNotAHeader)?,
            ),
            None => None,
        };
        let mut client =
            EventServiceClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
                if let Some(v) = &auth {
                    req.metadata_mut().insert("authorization", v.clone());
                }
                Ok(req)
            })
            .max_decoding_message_size(MAX_MESSAGE);

        let stream = client.subscribe(self.request.clone()).await?.into_inner();
        tracing::info!(cvp = %self.target.authority(), "subscribed to CVP events");
        metrics::get().set_stream_state(StreamState::syncing);
        progress::start_sync();
        self.resume.seen = (!self.cache.is_empty()).then(HashSet::new);
        let mut chunks = stream.ready_chunks(self.batch_size);
        loop {
            let chunk = tokio::select! {
                c = chunks.next() => c,
                _ = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
            };
            let Some(chunk) = chunk else {
                return Ok(SessionEnd::StreamClosed);
            };
            let mut batch = Vec::with_capacity(chunk.len());
            let mut failure = None;
            for item in chunk {
                match item {
                    Ok(resp) => self.handle(resp, &mut batch),
                    Err(status) => {
                        failure = Some(status);
                        break;
                    }
                }
            }
            self.received.flush();
            if !batch.is_empty() {
                // From here until the sink has delivered all its records,
                // an event holds the checkpoint back.
                let mut tracker = tracker.lock();
                for ev in &mut batch {
                    ev.seq = tracker.register(ev.key(), ev.time());
                }
            }
            // Whatever arrived before a failure still goes on.
            if !batch.is_empty() && tx.send(batch).await.is_err() {
                return Ok(SessionEnd::Shutdown);
            }
            if let Some(status) = failure {
                return Err(status.into());
            }
        }
    }

    /// Applies one message to the cache and queues what is to be forwarded.
    fn handle(&mut self, resp: EventStreamResponse, out: &mut Vec<SourceEvent>) {
        if resp.r#type == Operation::InitialSyncComplete as i32 {
            progress::finish();
            self.sync_complete(out);
            tracing::info!(cached = self.cache.len(), "CVP initial sync complete");
            metrics::get().set_stream_state(StreamState::live);
            return;
        }
        let initial = resp.r#type == Operation::Initial as i32;
        // Before the cache takes the new state: what we knew of it.
        let known = match (&resp.value, initial) {
            (Some(v), true) => Some(self.cache.cached_time(v)),
            _ => None,
        };
        let Some(mut ev) = self.cache.apply(resp) else {
            return;
        };
        self.received.count(&ev);
        let time = ev.time();
        self.resume.newest = self.resume.newest.max(time);
        let wanted = match ev.op {
            Op::Initial => {
                progress::inc();
                if let Some(seen) = &mut self.resume.seen {
                    seen.insert(cache::id(&ev.event));
                }
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
        if wanted {
            out.push(ev);
        }
    }

    /// The initial state is complete: later reconnects compare against what
    /// we have seen, and events that vanished from CVP's state while we
    /// were away were deleted.
    fn sync_complete(&mut self, out: &mut Vec<SourceEvent>) {
        self.resume.synced();
        if let Some(seen) = self.resume.seen.take() {
            for event in self.cache.retain_seen(&seen) {
                let ev = SourceEvent {
                    event,
                    op: Op::Deleted,
                    seq: 0,
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
