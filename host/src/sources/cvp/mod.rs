//! The CloudVision source: subscribe to `arista.event.v1.EventService`,
//! merge partial updates into full events, and pass on the operations the
//! config asks for, in batches. Reconnects with backoff when the stream ends.
//!
//! Reading order: `config.rs` (what the user sets), `connect.rs` and
//! `auth.rs` + `tls.rs` (reaching CVP), `session.rs` (one subscription, from
//! its initial state to its end), `cache.rs` (partial diffs merged into whole
//! events), `resume.rs` (what changed while away), `filter.rs` (CVP's own
//! server-side filter).

mod auth;
mod cache;
pub mod config;
mod connect;
mod error;
mod filter;
mod resume;
mod session;
mod tls;

pub use cache::EventCache;
pub use config::CvpConfig;
pub use resume::Resume;

use crate::delivery::SharedTracker;
use crate::event::{Op, SourceEvent};
use crate::metrics::{self, StreamState};
use crate::progress;
use anyhow::Result;
use auth::{Credentials, LoginClient};
use connect::{Target, Tls};
use cvp_proto::event::EventStreamRequest;
use session::{ReceivedCounts, SessionEnd};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub struct CvpSource {
    target: Target,
    tls: Option<Tls>,
    credentials: Credentials,
    login: Option<LoginClient>,
    request: EventStreamRequest,
    forward: ForwardedOps,
    cache: EventCache,
    batch_size: usize,
    connect_timeout: Duration,
    max_backoff: Duration,
    received: ReceivedCounts,
    resume: Resume,
    /// Everything up to this time counts as delivered (the checkpoint or
    /// the start of a backfill window).
    floor: i64,
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
        let target = Target::parse(&cfg.address)?;
        let credentials = Credentials::from_config(cfg)?;
        let tls = if cfg.tls.enabled {
            Some((
                tls::client_config(&cfg.tls, &[b"h2"])?,
                tls::server_name(&cfg.tls, &target.host)?,
            ))
        } else {
            None
        };
        let login = match &credentials {
            Credentials::Login { .. } => {
                let scheme = if cfg.tls.enabled { "https" } else { "http" };
                let rest_tls = if cfg.tls.enabled {
                    Some(tls::client_config(&cfg.tls, &[b"h2", b"http/1.1"])?)
                } else {
                    None
                };
                Some(LoginClient::new(
                    format!("{scheme}://{}", target.authority()),
                    rest_tls,
                )?)
            }
            _ => None,
        };
        let has = |op| cfg.operations.contains(&op);
        Ok(CvpSource {
            target,
            tls,
            credentials,
            login,
            request: EventStreamRequest {
                partial_eq_filter: filter::partial_eq_filters(&cfg.filter),
                time: None,
            },
            forward: ForwardedOps {
                initial: has(Op::Initial),
                updated: has(Op::Updated),
                deleted: has(Op::Deleted),
            },
            cache: EventCache::new(cfg.cache_size),
            batch_size,
            connect_timeout: cfg.connect_timeout,
            max_backoff: cfg.max_backoff,
            received: ReceivedCounts::default(),
            resume: Resume::default(),
            floor: 0,
        })
    }

    /// Where to resume from (see [`Resume`]).
    pub fn resume_from(&mut self, resume: Resume) {
        self.floor = resume.after.unwrap_or(0);
        if let Some(after) = resume.after {
            tracing::info!(
                "forwarding events that changed after {}",
                humantime::format_rfc3339_millis(
                    std::time::UNIX_EPOCH + Duration::from_nanos(after.max(0) as u64)
                )
            );
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
            progress::finish();
            let wait = match result {
                Ok(SessionEnd::Shutdown) => return Ok(()),
                Ok(SessionEnd::StreamClosed) if once => return Ok(()),
                Ok(SessionEnd::StreamClosed) => {
                    tracing::warn!(cvp = %self.target.authority(), "CVP closed the event stream; reconnecting");
                    min_backoff
                }
                Err(e) if once => return Err(e.into()),
                Err(e) => {
                    let refused = e.refused();
                    if refused {
                        self.credentials.invalidate();
                    }
                    if refused && self.credentials.is_static_token() {
                        // A bad static token will not fix itself quickly:
                        // keep trying, slowly, and say what to fix.
                        tracing::error!(
                            cvp = %self.target.authority(),
                            "CVP refused the token ({e}): check source.cvp.token / token_file / CVP_TOKEN; retrying in {}",
                            humantime::format_duration(self.max_backoff)
                        );
                        self.max_backoff
                    } else {
                        if started.elapsed() > Duration::from_secs(60) {
                            backoff = min_backoff;
                        }
                        let wait = jitter(backoff);
                        tracing::warn!(
                            cvp = %self.target.authority(),
                            "CVP stream failed: {}; reconnecting in {}",
                            e.to_string().replace('\n', " "),
                            humantime::format_duration(Duration::from_millis(wait.as_millis() as u64))
                        );
                        backoff = (backoff * 2).min(self.max_backoff);
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

/// ±20% so that many hosts restarted together do not reconnect in step.
fn jitter(d: Duration) -> Duration {
    let f: f64 = rand::random_range(0.8..1.2);
    d.mul_f64(f)
}
