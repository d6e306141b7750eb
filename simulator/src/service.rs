//! The `arista.event.v1.EventService` implementation.

use std::pin::Pin;
use std::sync::Arc;

use cvp_proto::event::event_service_server::EventService;
use cvp_proto::event::{
    Event, EventRequest, EventResponse, EventSomeRequest, EventSomeResponse, EventStreamRequest,
    EventStreamResponse, MetaResponse,
};
use cvp_proto::Operation;
use futures::{Stream, StreamExt};
use prost_types::Timestamp;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::{debug, info};

use crate::state::{key_id, matches_any, ts_key, Change, Hub};
use crate::stats::Counters;

/// Messages per batch handed from a subscriber task to its gRPC stream:
/// large enough to amortise locking and channel overhead, small enough to
/// keep memory per slow subscriber bounded.
const BATCH: usize = 512;
/// Batches buffered per subscriber before the subscriber task waits.
const QUEUE: usize = 4;

pub(crate) type ResponseStream =
    Pin<Box<dyn Stream<Item = Result<EventStreamResponse, Status>> + Send + 'static>>;

/// The streams of the calls (the generated trait's `BoxStream`s: with
/// default stubs, tonic names no associated stream types).
type GetSomeStream =
    Pin<Box<dyn Stream<Item = Result<EventSomeResponse, Status>> + Send + 'static>>;
type SubscribeMetaStream =
    Pin<Box<dyn Stream<Item = Result<MetaResponse, Status>> + Send + 'static>>;

pub(crate) struct Service {
    pub hub: Arc<Hub>,
    pub counters: Arc<Counters>,
    pub shutdown: watch::Receiver<bool>,
}

/// What a subscriber task hands its stream. Markers are processed only when
/// the gRPC layer pulls past them, i.e. once everything before them has been
/// taken for sending.
// Nearly every item is a `Msg`; boxing it would cost an allocation per message.
#[allow(clippy::large_enum_variant)]
enum Item {
    Msg(EventStreamResponse),
    /// INITIAL_SYNC_COMPLETE has been taken: the live feed may start.
    Synced,
    /// Log entries up to this index have been taken.
    Delivered(usize),
    /// The stream ends here with UNAVAILABLE (a simulated reset).
    Reset,
}

fn initial(ev: &Event, time: Timestamp) -> EventStreamResponse {
    EventStreamResponse {
        value: Some(ev.clone()),
        time: Some(time),
        r#type: Operation::Initial as i32,
    }
}

fn peer(req: &Request<EventStreamRequest>) -> String {
    req.remote_addr()
        .map_or_else(|| "unknown".to_string(), |a| a.to_string())
}

#[tonic::async_trait]
impl EventService for Service {
    async fn get_one(
        &self,
        request: Request<EventRequest>,
    ) -> Result<Response<EventResponse>, Status> {
        Counters::inc(&self.counters.get_ones);
        let req = request.into_inner();
        let key =
            req.key.as_ref().and_then(key_id).ok_or_else(|| {
                Status::invalid_argument("GetOne needs key.key (and key.timestamp)")
            })?;
        let found = {
            let inner = self.hub.lock();
            match &req.time {
                None => inner.current.get(&key).map(|c| (c.full.clone(), c.time)),
                Some(at) => inner
                    .snapshot_at(at)
                    .into_iter()
                    .find(|(e, _)| e.key.as_ref().and_then(key_id).as_ref() == Some(&key)),
            }
        };
        match found {
            Some((ev, time)) => Ok(Response::new(EventResponse {
                value: Some((*ev).clone()),
                time: Some(time),
            })),
            None => Err(Status::not_found(format!(
                "no event with key {:?} and timestamp {}.{:09}",
                key.0, key.1, key.2
            ))),
        }
    }

    /// Several events by key, each found or answered with an error string,
    /// as CVP does.
    async fn get_some(
        &self,
        request: Request<EventSomeRequest>,
    ) -> Result<Response<GetSomeStream>, Status> {
        let req = request.into_inner();
        let out: Vec<_> = {
            let inner = self.hub.lock();
            let snapshot = req.time.as_ref().map(|at| inner.snapshot_at(at));
            req.keys
                .iter()
                .map(|k| {
                    let id = key_id(k);
                    let found = id.as_ref().and_then(|id| match &snapshot {
                        None => inner.current.get(id).map(|c| (c.full.clone(), c.time)),
                        Some(snap) => snap
                            .iter()
                            .find(|(e, _)| e.key.as_ref().and_then(key_id).as_ref() == Some(id))
                            .cloned(),
                    });
                    Ok(match found {
                        Some((ev, time)) => EventSomeResponse {
                            value: Some((*ev).clone()),
                            error: None,
                            time: Some(time),
                        },
                        None => EventSomeResponse {
                            value: Some(Event {
                                key: Some(k.clone()),
                                ..Default::default()
                            }),
                            error: Some("not found".into()),
                            time: None,
                        },
                    })
                })
                .collect()
        };
        Ok(Response::new(Box::pin(futures::stream::iter(out))))
    }

    /// How many events match the filters now.
    async fn get_meta(
        &self,
        request: Request<EventStreamRequest>,
    ) -> Result<Response<MetaResponse>, Status> {
        let req = request.into_inner();
        let inner = self.hub.lock();
        let count = inner
            .current
            .values()
            .filter(|c| matches_any(&req.partial_eq_filter, &c.full))
            .count();
        let time = inner.log.last().map(|c| c.time);
        Ok(Response::new(MetaResponse {
            time,
            r#type: Operation::Initial as i32,
            count: Some(u32::try_from(count).unwrap_or(u32::MAX)),
        }))
    }

    async fn subscribe_meta(
        &self,
        _request: Request<EventStreamRequest>,
    ) -> Result<Response<SubscribeMetaStream>, Status> {
        Err(Status::unimplemented(
            "the simulator does not stream SubscribeMeta; use GetMeta",
        ))
    }

    async fn get_all(
        &self,
        request: Request<EventStreamRequest>,
    ) -> Result<Response<ResponseStream>, Status> {
        Counters::inc(&self.counters.get_alls);
        info!(peer = %peer(&request), "GetAll");
        let req = request.into_inner();
        let filters = req.partial_eq_filter;
        // Collect shared pointers under the lock; clone events outside it.
        let (state, changes): (_, Vec<Arc<Change>>) = {
            let inner = self.hub.lock();
            match &req.time {
                None => (inner.snapshot(), Vec::new()),
                Some(tb) => match (&tb.start, &tb.end) {
                    (Some(start), end) => {
                        let (s, e) = (ts_key(start), end.as_ref().map(ts_key));
                        let changes = inner
                            .log
                            .iter()
                            .filter(|c| {
                                let t = ts_key(&c.time);
                                t > s && e.is_none_or(|e| t <= e)
                            })
                            .cloned()
                            .collect();
                        (inner.snapshot_at(start), changes)
                    }
                    // Only an end: the state as it was then.
                    (None, Some(end)) => (inner.snapshot_at(end), Vec::new()),
                    (None, None) => (inner.snapshot(), Vec::new()),
                },
            }
        };
        let mut out = Vec::with_capacity(state.len() + changes.len());
        out.extend(
            state
                .iter()
                .filter(|(e, _)| matches_any(&filters, e))
                .map(|(e, t)| initial(e, *t)),
        );
        out.extend(
            changes
                .iter()
                .filter(|c| matches_any(&filters, &c.full))
                .map(|c| c.response()),
        );
        let counters = self.counters.clone();
        let stream = futures::stream::iter(out).map(move |m| {
            counters.count_sent(m.r#type, 1);
            Ok(m)
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn subscribe(
        &self,
        request: Request<EventStreamRequest>,
    ) -> Result<Response<ResponseStream>, Status> {
        let peer = peer(&request);
        let req = request.into_inner();
        if req.time.is_some() {
            return Err(Status::invalid_argument(
                "Subscribe does not take time bounds; use GetAll for history",
            ));
        }
        if self.hub.refusing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Status::unavailable(
                "simulated outage: not accepting subscriptions",
            ));
        }
        Counters::inc(&self.counters.subscribes);
        info!(%peer, filters = req.partial_eq_filter.len(), "Subscribe");
        let hang = self
            .hub
            .hang_subscribes
            .fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |n| n.checked_sub(1),
            )
            .is_ok();
        if hang {
            // No response, so no headers: the client waits until it gives
            // up (or the simulator stops).
            info!(%peer, "Subscribe left unanswered (hang_subscribes)");
            let mut shutdown = self.shutdown.clone();
            let _ = shutdown.wait_for(|s| *s).await;
            return Err(Status::unavailable("simulator shutting down"));
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run_subscriber(
            self.hub.clone(),
            req.partial_eq_filter,
            tx,
            self.shutdown.clone(),
        ));
        let hub = self.hub.clone();
        let counters = self.counters.clone();
        let stream = ReceiverStream::new(rx)
            .flat_map(futures::stream::iter)
            .filter_map(move |item| {
                let out = match item {
                    Item::Msg(m) => {
                        counters.count_sent(m.r#type, 1);
                        Some(Ok(m))
                    }
                    Item::Synced => {
                        hub.mark_synced();
                        None
                    }
                    Item::Delivered(i) => {
                        hub.mark_delivered(i);
                        None
                    }
                    Item::Reset => Some(Err(Status::unavailable("simulated stream reset"))),
                };
                std::future::ready(out)
            });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Hands `items` to the stream; false when the client went away or the
/// simulator is shutting down.
async fn send(
    tx: &mpsc::Sender<Vec<Item>>,
    items: Vec<Item>,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    if items.is_empty() {
        return true;
    }
    tokio::select! {
        r = tx.send(items) => r.is_ok(),
        _ = shutdown.wait_for(|s| *s) => false,
    }
}

/// Feeds one subscriber: the current state, the sync marker, then the log
/// from where the state snapshot was taken, forever (until shutdown or the
/// client goes away).
async fn run_subscriber(
    hub: Arc<Hub>,
    filters: Vec<Event>,
    tx: mpsc::Sender<Vec<Item>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut len_rx = hub.watch_len();
    len_rx.borrow_and_update();
    let mut reset_rx = hub.reset.subscribe();
    reset_rx.borrow_and_update();
    // Snapshot and log position under one lock, so no change is missed or
    // seen twice.
    let (snapshot, mut idx) = {
        let inner = hub.lock();
        (inner.snapshot(), inner.log.len())
    };
    for chunk in snapshot.chunks(BATCH) {
        let items = chunk
            .iter()
            .filter(|(e, _)| matches_any(&filters, e))
            .map(|(e, t)| Item::Msg(initial(e, *t)))
            .collect();
        if !send(&tx, items, &mut shutdown).await {
            return;
        }
    }
    if hub.stall_initial_sync {
        // The stream stays open and says nothing more.
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => {}
            _ = tx.closed() => {}
        }
        return;
    }
    let sync = EventStreamResponse {
        r#type: Operation::InitialSyncComplete as i32,
        ..Default::default()
    };
    let marker = vec![Item::Msg(sync), Item::Synced, Item::Delivered(idx)];
    if !send(&tx, marker, &mut shutdown).await {
        return;
    }
    loop {
        if reset_rx.has_changed().unwrap_or(false) {
            let _ = tx.send(vec![Item::Reset]).await;
            return;
        }
        // Mark the length seen before reading, so an append racing with the
        // read still wakes us.
        len_rx.borrow_and_update();
        let batch: Vec<Arc<Change>> = {
            let inner = hub.lock();
            let end = inner.log.len().min(idx + BATCH);
            inner.log[idx.min(end)..end].to_vec()
        };
        if batch.is_empty() {
            let reset = tokio::select! {
                r = len_rx.changed() => if r.is_err() { return } else { false },
                _ = reset_rx.changed() => true,
                _ = shutdown.wait_for(|s| *s) => return,
            };
            if reset {
                // `changed` marked it seen: end the stream here.
                let _ = tx.send(vec![Item::Reset]).await;
                return;
            }
            continue;
        }
        idx += batch.len();
        let mut items: Vec<Item> = batch
            .iter()
            .filter(|c| matches_any(&filters, &c.full))
            .map(|c| Item::Msg(c.response()))
            .collect();
        items.push(Item::Delivered(idx));
        if !send(&tx, items, &mut shutdown).await {
            debug!("subscriber went away");
            return;
        }
    }
}
