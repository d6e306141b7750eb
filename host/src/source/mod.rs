//! The CloudVision side: subscribe to `arista.event.v1.EventService`, merge
//! partial updates into full events, and pass on the operations the config
//! asks for, in batches. Reconnects with backoff when the stream ends.

mod auth;
mod filter;
mod merge;
mod tls;

use crate::checkpoint::Checkpoint;
use crate::config::{CvpConfig, Op};
use crate::event::SourceEvent;
use crate::metrics::{self, StreamState};
use crate::progress;
use crate::sink::SharedAcks;
use anyhow::{anyhow, bail, Result};
use auth::{error_chain, Credentials, LoginClient};
use cvp_proto::event::event_service_client::EventServiceClient;
use cvp_proto::event::{EventStreamRequest, EventStreamResponse};
use cvp_proto::Operation;
use futures::StreamExt;
pub use merge::EventCache;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// Huge `data` maps must not break decoding (tonic's default is 4 MiB).
const MAX_MESSAGE: usize = 64 << 20;

/// HTTP/2 flow-control window for the event stream: about 4,000 events
/// may be on their way before CVP waits for us.
const STREAM_WINDOW: u32 = 2 << 20;

pub struct CvpSource {
    target: Target,
    tls: Option<(rustls::ClientConfig, rustls::pki_types::ServerName<'static>)>,
    credentials: Credentials,
    login: Option<LoginClient>,
    request: EventStreamRequest,
    forward: Forward,
    cache: EventCache,
    batch_size: usize,
    connect_timeout: Duration,
    max_backoff: Duration,
    /// Events received per (operation, severity), flushed to the metrics
    /// once per chunk rather than once per event.
    received: Received,
    resume: Resume,
    /// Everything up to this time counts as delivered (the checkpoint or
    /// the start of a backfill window).
    floor: i64,
}

/// What the source knows about what was already delivered, to forward
/// what changed while it was not connected (CVP's Subscribe is state
/// based: on every connection it sends the current state as INITIAL, not
/// the changes that led to it).
#[derive(Default)]
pub struct Resume {
    /// Events that changed after this time (ns) and are not in the cache
    /// are news. `None` before the first sync without a checkpoint: the
    /// seed's behaviour, only what happens after start-up.
    after: Option<i64>,
    /// Delivered already though after `after` (from the checkpoint).
    skip: HashSet<(String, i64)>,
    /// The newest event time seen; becomes `after` at each sync.
    newest: i64,
    /// Events seen in the current initial sync, to find those deleted while
    /// away. `None` when there is nothing cached to compare with.
    seen: Option<HashSet<merge::Id>>,
}

impl Resume {
    /// From a checkpoint (a restart), else from `since` ago (a backfill),
    /// else from now on.
    pub fn new(checkpoint: Option<&Checkpoint>, since: Option<Duration>) -> Resume {
        let mut r = Resume::default();
        if let Some(cp) = checkpoint {
            r.after = Some(cp.delivered_up_to);
            r.skip = cp.also_delivered.iter().cloned().collect();
        } else if let Some(window) = since {
            let from = std::time::SystemTime::now()
                .checked_sub(window)
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos() as i64);
            r.after = Some(from);
        }
        r
    }
}

#[derive(Default)]
struct Received([[u64; SEVERITIES.len()]; 3]);

/// Label values for `EventSeverity`, indexed by its wire number.
const SEVERITIES: [&str; 6] = [
    "unspecified",
    "info",
    "warning",
    "error",
    "critical",
    "debug",
];

impl Received {
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

struct Target {
    host: String,
    port: u16,
}

impl Target {
    fn parse(address: &str) -> Result<Target> {
        let a = address.trim();
        let a = a
            .strip_prefix("https://")
            .or_else(|| a.strip_prefix("http://"))
            .unwrap_or(a)
            .trim_end_matches('/');
        // `[v6]:port`, `host:port`, or a bare host (CVP's default port 443).
        let (host, port) = if let Some(rest) = a.strip_prefix('[') {
            let (h, p) = rest
                .split_once(']')
                .ok_or_else(|| anyhow!("bad address {address:?}"))?;
            (h.to_string(), p.strip_prefix(':'))
        } else {
            match a.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (a.to_string(), None),
            }
        };
        let port = match port {
            Some(p) => p
                .parse()
                .map_err(|_| anyhow!("bad port in source.cvp.address {address:?}"))?,
            None => 443,
        };
        if host.is_empty() {
            bail!("source.cvp.address {address:?} has no host");
        }
        Ok(Target { host, port })
    }

    fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[derive(Clone, Copy)]
struct Forward {
    initial: bool,
    updated: bool,
    deleted: bool,
}

/// Why a session with CVP ended.
enum End {
    Shutdown,
    StreamClosed,
}

impl CvpSource {
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
            forward: Forward {
                initial: has(Op::Initial),
                updated: has(Op::Updated),
                deleted: has(Op::Deleted),
            },
            cache: EventCache::new(cfg.cache_size),
            batch_size,
            connect_timeout: cfg.connect_timeout,
            max_backoff: cfg.max_backoff,
            received: Received::default(),
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
    pub async fn run(
        mut self,
        tx: mpsc::Sender<Vec<SourceEvent>>,
        shutdown: CancellationToken,
        once: bool,
        acks: SharedAcks,
    ) -> Result<()> {
        acks.lock().set_floor(self.floor);
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
                r = self.session(&tx, &shutdown, &acks) => r,
                _ = shutdown.cancelled() => Ok(End::Shutdown),
            };
            metrics::get().set_stream_state(StreamState::disconnected);
            progress::finish();
            let wait = match result {
                Ok(End::Shutdown) => return Ok(()),
                Ok(End::StreamClosed) if once => return Ok(()),
                Ok(End::StreamClosed) => {
                    tracing::warn!(cvp = %self.target.authority(), "CVP closed the event stream; reconnecting");
                    min_backoff
                }
                Err(e) if once => return Err(e),
                Err(e) => {
                    let refused = matches!(e.downcast_ref::<Status>(), Some(s) if s.code() == Code::Unauthenticated || s.code() == Code::PermissionDenied);
                    if refused {
                        self.credentials.invalidate();
                    }
                    if refused && self.credentials.is_static_token() {
                        // A bad static token will not fix itself quickly:
                        // keep trying, slowly, and say what to fix.
                        tracing::error!(
                            cvp = %self.target.authority(),
                            "CVP refused the token ({}): check source.cvp.token / token_file / CVP_TOKEN; retrying in {}",
                            status_text(&e),
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
                            one_line(&e),
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

    async fn session(
        &mut self,
        tx: &mpsc::Sender<Vec<SourceEvent>>,
        shutdown: &CancellationToken,
        acks: &SharedAcks,
    ) -> Result<End> {
        let channel = self.connect().await?;
        let login = self.login.as_ref();
        let token = match login {
            Some(l) => self.credentials.bearer(l).await?,
            None => self.credentials.bearer_without_login(),
        };
        let auth: Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>> =
            match token {
                Some(t) => Some(format!("Bearer {}", t.expose()).parse().map_err(|_| {
                    anyhow!("the CVP token has characters not allowed in a header")
                })?),
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
        self.resume.seen = (self.cache.len() > 0).then(HashSet::new);
        let mut chunks = stream.ready_chunks(self.batch_size);
        loop {
            let chunk = tokio::select! {
                c = chunks.next() => c,
                _ = shutdown.cancelled() => return Ok(End::Shutdown),
            };
            let Some(chunk) = chunk else {
                return Ok(End::StreamClosed);
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
                // From here until Kafka has all its records, an event holds
                // the checkpoint back.
                let mut acks = acks.lock();
                for ev in &mut batch {
                    ev.seq = acks.register(ev.key(), ev.time());
                }
            }
            // Whatever arrived before a failure still goes on.
            if !batch.is_empty() && tx.send(batch).await.is_err() {
                return Ok(End::Shutdown);
            }
            if let Some(status) = failure {
                return Err(status.into());
            }
        }
    }

    async fn connect(&self) -> Result<Channel> {
        let authority = self.target.authority();
        // TLS is ours (rustls, with the verifier the config asks for), done in
        // the connector below; tonic would refuse an https:// endpoint without
        // its own TLS. So the endpoint says http and the origin, which sets
        // each request's :scheme, says https.
        let endpoint = Endpoint::from_shared(format!("http://{authority}"))
            .map_err(|e| anyhow!("bad CVP address {authority}: {e}"))?;
        let endpoint = match &self.tls {
            Some(_) => endpoint.origin(
                format!("https://{authority}")
                    .parse()
                    .map_err(|e| anyhow!("bad CVP address {authority}: {e}"))?,
            ),
            None => endpoint,
        };
        let endpoint = endpoint
            .connect_timeout(self.connect_timeout)
            .tcp_nodelay(true)
            // HTTP/2's default 64 KiB windows make a burst (an initial sync,
            // a backfill) stop for a window update every ~100 events.
            .initial_stream_window_size(Some(STREAM_WINDOW))
            .initial_connection_window_size(Some(STREAM_WINDOW))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        let channel = match &self.tls {
            None => endpoint.connect().await,
            Some((config, name)) => {
                let connector =
                    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config.clone()));
                let name = name.clone();
                let addr = authority.clone();
                let timeout = self.connect_timeout;
                endpoint
                    .connect_with_connector(tower::service_fn(move |_uri: http::Uri| {
                        let connector = connector.clone();
                        let name = name.clone();
                        let addr = addr.clone();
                        async move {
                            let tcp = tokio::time::timeout(
                                timeout,
                                tokio::net::TcpStream::connect(&addr),
                            )
                            .await
                            .map_err(|_| {
                                std::io::Error::new(
                                    std::io::ErrorKind::TimedOut,
                                    "connect timed out",
                                )
                            })??;
                            tcp.set_nodelay(true)?;
                            let tls = connector.connect(name, tcp).await?;
                            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
                        }
                    }))
                    .await
            }
        };
        channel.map_err(|e| anyhow!("cannot connect to CVP at {authority}: {}", error_chain(&e)))
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
                    seen.insert(merge::id(&ev.event));
                }
                if self.forward.initial {
                    true
                } else if self.changed_while_away(&ev, time, known.flatten()) {
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

    fn changed_while_away(&self, ev: &SourceEvent, time: i64, cached: Option<i64>) -> bool {
        let newer = match cached {
            Some(t) => time > t,
            None => self.resume.after.is_some_and(|after| time > after),
        };
        newer && !self.resume.skip.contains(&(ev.key().to_string(), time))
    }

    /// The initial state is complete: later reconnects compare against what
    /// we have seen, and events that vanished from CVP's state while we
    /// were away were deleted.
    fn sync_complete(&mut self, out: &mut Vec<SourceEvent>) {
        self.resume.after = Some(
            self.resume
                .after
                .unwrap_or(i64::MIN)
                .max(self.resume.newest),
        );
        self.resume.skip.clear();
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

impl Credentials {
    fn bearer_without_login(&self) -> Option<crate::secret::Secret> {
        match self {
            Credentials::Token(t) => Some(t.clone()),
            _ => None,
        }
    }
}

fn status_text(e: &anyhow::Error) -> String {
    match e.downcast_ref::<Status>() {
        Some(s) => format!("{:?}: {}", s.code(), s.message()),
        None => one_line(e),
    }
}

fn one_line(e: &anyhow::Error) -> String {
    match e.downcast_ref::<Status>() {
        Some(s) => format!("{:?}: {}", s.code(), s.message()),
        None => format!("{e:#}").replace('\n', " "),
    }
}

/// ±20% so that many hosts restarted together do not reconnect in step.
fn jitter(d: Duration) -> Duration {
    let f: f64 = rand::random_range(0.8..1.2);
    d.mul_f64(f)
}
