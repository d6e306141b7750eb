//! The CloudVision source: subscribe to `arista.event.v1.EventService`,
//! merge partial updates into full events, and pass on the operations the
//! config asks for, in batches. Reconnects with backoff when the stream ends.
//!
//! Reading order: `config.rs` (what the user sets), `connect.rs` and
//! `auth.rs` + `tls.rs` (reaching CVP), `session.rs` (one subscription, from
//! its initial state to its end), `codec.rs` (reading the stream, and only
//! the head of a message too large), `cache.rs` (partial diffs merged into
//! whole events, within bounds), `resume.rs` (what changed while away),
//! `filter.rs` (CVP's own server-side filter).
//!
//! Enrichment (`enrich:`): `inventory.rs` and `tags.rs` keep CVP's device
//! inventory and tag assignments in `directory.rs`'s bounded store, each on
//! its own task through `resource.rs` (same connection settings, own
//! reconnects and initial sync); `session.rs` joins each batch with the
//! store as it sends it on. The event stream waits for their first sync
//! at most `enrich.sync_timeout`.

mod auth;
mod cache;
mod codec;
pub mod config;
mod connect;
pub mod directory;
mod error;
mod filter;
mod inventory;
mod resource;
mod resume;
mod session;
mod tags;
mod tls;

pub use cache::EventCache;
pub use config::{CvpConfig, EnrichConfig};
pub use directory::Directory;
pub use resume::Resume;

use crate::delivery::{Delivery, SharedTracker};
use crate::event::{Op, SourceEvent};
use crate::metrics::{self, StreamState};
use crate::progress;
use anyhow::Result;
use cvp_proto::event::EventStreamRequest;
use session::{ReceivedCounts, SessionEnd};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub struct CvpSource {
    conn: connect::Conn,
    request: EventStreamRequest,
    forward: ForwardedOps,
    cache: EventCache,
    batch_size: usize,
    received: ReceivedCounts,
    resume: Resume,
    /// Everything up to this time counts as delivered (the checkpoint or
    /// the start of a backfill window).
    floor: i64,
    /// Events dated later than now plus this are forwarded but do not move
    /// the resume point (ns).
    future_tolerance: i64,
    /// When a future-dated event was last logged at warning level: a device
    /// with a broken clock must not flood the log.
    future_warned: Option<Instant>,
    stuck_after: Duration,
    /// Between Subscribe's answer and INITIAL_SYNC_COMPLETE.
    syncing: bool,
    /// This initial sync is compared with the cache for deletions.
    compare_sync: bool,
    max_event_size: usize,
    too_large_warned: Option<Instant>,
    /// Where events too large to forward go, as failures for the sink's
    /// dead-letter path; `None`: logged and counted only.
    dead_letters: Option<mpsc::Sender<Vec<Delivery>>>,
    /// The inventory and tags each event is joined with (`enrich:`).
    directory: Option<Arc<Directory>>,
    /// Their subscriptions, started by `run`.
    feeds: Vec<Feed>,
    enrich_sync_timeout: Duration,
}

/// An enrichment subscription not yet started.
enum Feed {
    Inventory(inventory::Inventory, connect::Conn),
    Tags(tags::Tags, connect::Conn),
}

/// The operations the config forwards.
#[derive(Clone, Copy)]
struct ForwardedOps {
    initial: bool,
    updated: bool,
    deleted: bool,
}

impl CvpSource {
    /// Checks the credentials and TLS files; connects nowhere.
    pub fn new(cfg: &CvpConfig, batch_size: usize) -> Result<CvpSource> {
        let has = |op| cfg.operations.contains(&op);
        let mut feeds = Vec::new();
        let directory = match &cfg.enrich {
            None => None,
            Some(e) => {
                if e.inventory {
                    feeds.push(Feed::Inventory(
                        inventory::Inventory::new(e.max_devices),
                        connect::Conn::new(cfg)?,
                    ));
                }
                if !e.tags.is_empty() {
                    feeds.push(Feed::Tags(tags::Tags::new(e), connect::Conn::new(cfg)?));
                }
                Some(Arc::new(Directory::new(e, &cfg.address)))
            }
        };
        Ok(CvpSource {
            conn: connect::Conn::new(cfg)?,
            request: EventStreamRequest {
                partial_eq_filter: filter::partial_eq_filters(&cfg.filter),
                time: None,
            },
            forward: ForwardedOps {
                initial: has(Op::Initial),
                updated: has(Op::Updated),
                deleted: has(Op::Deleted),
            },
            cache: EventCache::bounded(
                cfg.cache_size,
                usize::try_from(cfg.cache_max_bytes).unwrap_or(usize::MAX),
                usize::try_from(cfg.max_event_size).unwrap_or(usize::MAX),
            ),
            batch_size,
            received: ReceivedCounts::default(),
            resume: Resume::default(),
            floor: 0,
            future_tolerance: i64::try_from(cfg.future_tolerance.as_nanos()).unwrap_or(i64::MAX),
            future_warned: None,
            stuck_after: cfg.stuck_after,
            syncing: false,
            compare_sync: false,
            max_event_size: usize::try_from(cfg.max_event_size).unwrap_or(usize::MAX),
            too_large_warned: None,
            dead_letters: None,
            directory,
            feeds,
            enrich_sync_timeout: cfg
                .enrich
                .as_ref()
                .map_or(Duration::ZERO, |e| e.sync_timeout),
        })
    }

    /// Events too large to forward go to `sink` as failures whose policy
    /// is `dead_letter` (the sink's dead-letter path), with their key.
    pub fn dead_letters_to(&mut self, sink: mpsc::Sender<Vec<Delivery>>) {
        self.dead_letters = Some(sink);
    }

    /// The enrichment store (`None` without `enrich:`), for tests and the
    /// bench.
    pub fn directory(&self) -> Option<Arc<Directory>> {
        self.directory.clone()
    }

    /// Starts the enrichment subscriptions, stopped with `stop`, and waits
    /// at most `enrich.sync_timeout` for their first initial sync: events
    /// after that go on, enriched with what is known by then.
    async fn start_feeds(&mut self, stop: &CancellationToken) {
        let Some(dir) = self.directory.clone() else {
            return;
        };
        let mut waits = Vec::new();
        for feed in std::mem::take(&mut self.feeds) {
            let (tx, rx) = tokio::sync::watch::channel(false);
            let name = match feed {
                Feed::Inventory(r, conn) => {
                    tokio::spawn(resource::run(r, conn, dir.clone(), tx, stop.clone()));
                    "inventory"
                }
                Feed::Tags(r, conn) => {
                    tokio::spawn(resource::run(r, conn, dir.clone(), tx, stop.clone()));
                    "tags"
                }
            };
            waits.push((name, rx));
        }
        let deadline = tokio::time::Instant::now() + self.enrich_sync_timeout;
        for (name, mut rx) in waits {
            let synced = tokio::select! {
                r = tokio::time::timeout_at(deadline, rx.wait_for(|s| *s)) => matches!(r, Ok(Ok(_))),
                _ = stop.cancelled() => return,
            };
            if !synced {
                tracing::warn!(
                    "CVP {name} not synced within source.cvp.enrich.sync_timeout ({}): events go on, joined with what is known when each is sent",
                    humantime::format_duration(self.enrich_sync_timeout)
                );
            }
        }
    }

    /// Where to resume from (see [`Resume`]).
    pub fn resume_from(&mut self, mut resume: Resume) {
        let now = now_nanos();
        if let Some(after) = resume.after.filter(|a| *a > self.horizon(now)) {
            // Written by a version that let a future-dated event move it:
            // the true point is lost. From now on is the best left.
            tracing::error!(
                "the checkpoint says delivered up to {}, which is in the future (a future-dated event moved it); resuming from now: events that changed while cvp-stream was down are not forwarded",
                utc(after)
            );
            resume.after = Some(now);
        }
        self.floor = resume.after.unwrap_or(0);
        if let Some(after) = resume.after {
            tracing::info!("forwarding events that changed after {}", utc(after));
        }
        self.resume = resume;
    }

    /// Streams events into `tx` until shutdown. With `once`, the first end of
    /// the stream ends the run (the demo); otherwise it reconnects forever.
    /// Every event is registered with `tracker` as it leaves, so the
    /// checkpoint waits for it.
    pub async fn run(
        mut self,
        tx: mpsc::Sender<Vec<SourceEvent>>,
        shutdown: CancellationToken,
        once: bool,
        tracker: SharedTracker,
    ) -> Result<()> {
        tracker.lock().set_floor(self.floor);
        metrics::get().set_cvp_stuck_after(self.stuck_after);
        // The subscriptions end with the event stream, however it ends.
        let feeds = shutdown.child_token();
        let _feeds = feeds.clone().drop_guard();
        self.start_feeds(&feeds).await;
        let min_backoff = Duration::from_millis(500);
        let mut backoff = min_backoff;
        let mut first = true;
        loop {
            if !first {
                metrics::get().cvp_reconnects.inc();
            }
            first = false;
            let started = Instant::now();
            let result = tokio::select! {
                r = self.session(&tx, &shutdown, &tracker) => r,
                _ = shutdown.cancelled() => Ok(SessionEnd::Shutdown),
            };
            metrics::get().set_stream_state(StreamState::disconnected);
            metrics::get().cvp_not_waiting();
            self.syncing = false;
            progress::finish();
            let wait = match result {
                Ok(SessionEnd::Shutdown) => return Ok(()),
                Ok(SessionEnd::StreamClosed) if once => return Ok(()),
                Ok(SessionEnd::StreamClosed) => {
                    tracing::warn!(cvp = %self.conn.target.authority(), "CVP closed the event stream; reconnecting");
                    min_backoff
                }
                Err(e) if once => return Err(e.into()),
                Err(e) => {
                    let refused = e.refused();
                    if refused {
                        self.conn.credentials.invalidate();
                    }
                    if refused && self.conn.credentials.is_static_token() {
                        // A bad static token will not fix itself quickly:
                        // keep trying, slowly, and say what to fix.
                        tracing::error!(
                            cvp = %self.conn.target.authority(),
                            "CVP refused the token ({e}): check source.cvp.token / token_file / CVP_TOKEN; retrying in {}",
                            humantime::format_duration(self.conn.max_backoff)
                        );
                        self.conn.max_backoff
                    } else {
                        if started.elapsed() > Duration::from_secs(60) {
                            backoff = min_backoff;
                        }
                        let wait = jitter(backoff);
                        tracing::warn!(
                            cvp = %self.conn.target.authority(),
                            "CVP stream failed: {}; reconnecting in {}",
                            e.to_string().replace('\n', " "),
                            humantime::format_duration(Duration::from_millis(wait.as_millis() as u64))
                        );
                        backoff = (backoff * 2).min(self.conn.max_backoff);
                        wait
                    }
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
    }
}

impl CvpSource {
    /// The latest event time (ns) that may move the resume point.
    fn horizon(&self, now: i64) -> i64 {
        now.saturating_add(self.future_tolerance)
    }
}

/// Nanoseconds since the Unix epoch.
fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// An event time (ns), readable.
fn utc(nanos: i64) -> String {
    humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + Duration::from_nanos(nanos.max(0) as u64),
    )
    .to_string()
}

/// ±20% so that many hosts restarted together do not reconnect in step.
fn jitter(d: Duration) -> Duration {
    let f: f64 = rand::random_range(0.8..1.2);
    d.mul_f64(f)
}
