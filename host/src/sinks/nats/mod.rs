//! The NATS JetStream sink: each record published to the subject its topic
//! names (after `subject_prefix`), its headers as NATS headers, its key in
//! `key_header`, and, unless turned off, a `Nats-Msg-Id` made of the event
//! key, the event's time and the record's place in the event, so that the
//! stream's duplicate window drops what a retry or a restart sends again.
//!
//! A record counts as delivered when JetStream's publish acknowledgement
//! comes back (the stream has stored it). `../acked.rs` is the loop that keeps
//! unacknowledged records, resends them, and bounds them; it is shared
//! with the Redis sink. `config.rs` is the `sink.nats` block, `tls.rs` the TLS
//! client config.

mod config;
mod tls;

pub use config::{NatsConfig, NatsTls, StreamSpec};

use crate::delivery::{Delivery, DeliveryStats, Ledger};
use crate::metrics;
use crate::sinks::acked::{self, Ack, Outgoing, SendError, Settings, Transport};
use anyhow::{anyhow, bail, Result};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, stream};
use async_nats::{ConnectOptions, HeaderMap, HeaderName, HeaderValue, ServerAddr};
use futures::future::BoxFuture;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Boxed: the client and its JetStream context are large, and `Sink` is an
/// enum of every sink.
pub struct NatsSink(Box<Nats>);

struct Nats {
    client: async_nats::Client,
    /// Stops the connection watcher when the sink's run ends (or at
    /// shutdown), so a finished sink neither keeps its client nor reports
    /// `sink_up`.
    watch: CancellationToken,
    js: jetstream::Context,
    settings: Settings,
    subject_prefix: String,
    key_header: HeaderName,
    msg_id: bool,
    stream: Option<stream::Config>,
}

impl NatsSink {
    /// What `validate` checks: the block and any files it names, no connection.
    pub fn check_offline(cfg: &NatsConfig) -> Result<()> {
        cfg.validate()?;
        cfg.check_files()?;
        servers(cfg)?;
        if cfg.tls_required() {
            tls::client_config(cfg)?;
        }
        Ok(())
    }

    /// The sink, connecting (and reconnecting) in the background.
    pub async fn start(cfg: &NatsConfig, shutdown: &CancellationToken) -> Result<NatsSink> {
        Self::check_offline(cfg)?;
        let mut opts = match (&cfg.token, &cfg.user, &cfg.password, &cfg.nkey) {
            (Some(t), ..) => ConnectOptions::with_token(t.expose().to_string()),
            (_, Some(u), Some(p), _) => {
                ConnectOptions::with_user_and_password(u.clone(), p.expose().to_string())
            }
            (.., Some(seed)) => ConnectOptions::with_nkey(seed.expose().to_string()),
            _ => ConnectOptions::new(),
        };
        if let Some(path) = &cfg.creds_file {
            opts = opts
                .credentials_file(path)
                .await
                .map_err(|e| anyhow!("sink.nats.creds_file: cannot use {}: {e}", path.display()))?;
        }
        if cfg.tls_required() {
            // The rustls config is ours, not async-nats's: see tls.rs.
            opts = opts
                .require_tls(true)
                .tls_client_config(tls::client_config(cfg)?);
        }
        let opts = opts
            .name("cvp-stream")
            // Connect in the background: a server that is away at start is
            // waited for, records meanwhile held (and bounded) by the sink.
            .retry_on_initial_connect()
            .max_reconnects(None)
            // Quick after a blip, at most 2 s apart while the server is away.
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(100u64 << attempts.min(5)).min(Duration::from_secs(2))
            })
            .connection_timeout(Duration::from_secs(5))
            .event_callback(|event| async move { log_event(event) });
        let client = opts.connect(servers(cfg)?).await.map_err(|e| {
            anyhow!("sink.nats: cannot start the client: {e} (check sink.nats.url)")
        })?;
        let js = jetstream::ContextBuilder::new()
            .timeout(cfg.ack_timeout)
            // The sink bounds what is in flight itself (max_in_flight); the
            // client's own bound is only a safety net, never the limit.
            .max_ack_inflight(cfg.max_in_flight.saturating_mul(4).max(1 << 16))
            .build(client.clone());
        let watch = shutdown.child_token();
        watch_connection(client.clone(), watch.clone());
        let stream = cfg.stream.as_ref().map(|s| stream::Config {
            name: s.name.clone(),
            subjects: cfg.stream_subjects(s),
            duplicate_window: s.duplicate_window,
            storage: if s.storage == "memory" {
                stream::StorageType::Memory
            } else {
                stream::StorageType::File
            },
            ..Default::default()
        });
        Ok(NatsSink(Box::new(Nats {
            client,
            watch,
            js,
            settings: Settings {
                sink: "nats",
                server: "NATS JetStream",
                default_topic: cfg.topic.clone(),
                dead_letter_topic: cfg.dead_letter_topic.clone(),
                max_in_flight: cfg.max_in_flight,
                flush_timeout: cfg.flush_timeout,
            },
            subject_prefix: cfg.subject_prefix.clone(),
            key_header: cfg
                .key_header
                .parse()
                .map_err(|_| anyhow!("sink.nats.key_header is not a valid header name"))?,
            msg_id: cfg.msg_id,
            stream,
        })))
    }

    pub async fn run(
        self,
        rx: mpsc::Receiver<Vec<Delivery>>,
        ledger: Ledger,
        shutdown: CancellationToken,
    ) -> Result<DeliveryStats> {
        let result = self.0.run(rx, ledger, shutdown).await;
        self.0.watch.cancel();
        result
    }
}

impl Nats {
    async fn run(
        &self,
        rx: mpsc::Receiver<Vec<Delivery>>,
        ledger: Ledger,
        shutdown: CancellationToken,
    ) -> Result<DeliveryStats> {
        if let Some(spec) = &self.stream {
            if !self.ensure_stream(spec, &shutdown).await? {
                // Shut down before the server answered: nothing was taken.
                let mut ledger = ledger;
                return Ok(ledger.finish());
            }
        }
        let result = acked::run(&self.settings, self, rx, ledger, shutdown).await;
        // Whatever is still buffered goes out before the client is dropped.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.client.flush()).await;
        result
    }

    /// Creates the stream if it is missing (or takes it as it is), waiting
    /// for the server as long as it takes. `false`: shut down meanwhile.
    async fn ensure_stream(
        &self,
        spec: &stream::Config,
        shutdown: &CancellationToken,
    ) -> Result<bool> {
        let mut warned = false;
        loop {
            match self.js.get_or_create_stream(spec.clone()).await {
                Ok(_) => {
                    tracing::info!(stream = spec.name, "JetStream stream ready");
                    return Ok(true);
                }
                Err(e) => {
                    use async_nats::jetstream::context::CreateStreamErrorKind as K;
                    let text = e.to_string();
                    // An answer from JetStream itself (subjects overlap
                    // another stream, bad name) will not change by waiting.
                    if matches!(
                        e.kind(),
                        K::JetStream(_)
                            | K::EmptyStreamName
                            | K::InvalidStreamName
                            | K::DomainAndExternalSet
                    ) {
                        bail!(
                            "sink.nats.stream: JetStream will not create stream {}: {text} (check sink.nats.stream)",
                            spec.name
                        );
                    }
                    if !warned {
                        warned = true;
                        tracing::warn!(
                            stream = spec.name,
                            "cannot reach JetStream to create stream {} yet ({text}); retrying (check sink.nats.url)",
                            spec.name
                        );
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                _ = shutdown.cancelled() => return Ok(false),
            }
        }
    }

    /// The message's identity across resends and restarts.
    fn msg_id(out: &Outgoing) -> String {
        let when = match out.changed_at {
            Some(t) => t.to_string(),
            // A deletion has no time of its own: its content stands in.
            None => format!(
                "x{:016x}",
                acked::fnv1a(&[
                    out.record.topic.as_bytes(),
                    out.record.value.as_deref().unwrap_or_default()
                ])
            ),
        };
        let kind = if out.dead_letter { "d" } else { "r" };
        format!("{}@{when}#{kind}{}", out.event_key, out.index)
    }

    fn message(&self, out: &Outgoing) -> Result<(String, PublishMessage), String> {
        let r = &out.record;
        let subject = format!("{}{}", self.subject_prefix, r.topic);
        if !config::valid_subject(&subject) {
            return Err(format!("{subject:?} is not a valid NATS subject"));
        }
        let mut headers = HeaderMap::new();
        for h in &r.headers {
            let name: HeaderName = h
                .key
                .parse()
                .map_err(|_| format!("header name {:?} is not valid in NATS", h.key))?;
            headers.append(name, text_value(&h.key, &h.value)?);
        }
        if let Some(k) = &r.key {
            headers.insert(self.key_header.clone(), text_value("key", k)?);
        }
        let mut msg = PublishMessage::build()
            .payload(r.value.clone().unwrap_or_default().into())
            .headers(headers);
        if self.msg_id {
            msg = msg.message_id(Self::msg_id(out));
        }
        Ok((subject, msg))
    }
}

/// A header value: text on one line (NATS headers are lines of text).
fn text_value(what: &str, v: &[u8]) -> Result<HeaderValue, String> {
    std::str::from_utf8(v)
        .ok()
        .and_then(|s| s.parse::<HeaderValue>().ok())
        .ok_or_else(|| format!("{what} is not one line of UTF-8 text, as a NATS header must be"))
}

impl Transport for Nats {
    fn send(&self, out: &Outgoing) -> BoxFuture<'static, Result<Ack, SendError>> {
        let built = self.message(out);
        let size = out.record.value.as_ref().map_or(0, Vec::len);
        let max = self.client.server_info().max_payload;
        let js = self.js.clone();
        Box::pin(async move {
            let (subject, msg) = built.map_err(|error| SendError::Final {
                error,
                too_large: false,
            })?;
            // Larger than the server takes: it would close the connection.
            if max > 0 && size > max {
                return Err(SendError::Final {
                    error: format!("{size} bytes is more than the server's max_payload ({max})"),
                    too_large: true,
                });
            }
            let ack = js
                .send_publish(subject.clone(), msg)
                .await
                .map_err(|e| SendError::Retry(e.to_string()))?;
            match ack.await {
                Ok(a) => Ok(Ack {
                    duplicate: a.duplicate,
                }),
                Err(e) => Err(classify(e, &subject)),
            }
        })
    }
}

/// Which publish errors pass with time.
fn classify(e: async_nats::jetstream::context::PublishError, subject: &str) -> SendError {
    let text = e.to_string();
    match e.kind() {
        // Timeout or connection lost.
        PublishErrorKind::TimedOut | PublishErrorKind::BrokenPipe => SendError::Retry(text),
        // No stream answers (yet): JetStream starting or recovering its
        // streams after a restart, or none captures the subject. Waiting
        // is right for the first two; the message says what fixes the last.
        PublishErrorKind::StreamNotFound => SendError::Retry(format!(
            "no JetStream stream takes subject {subject}: create one for it, or set sink.nats.stream"
        )),
        // JetStream's own refusals: final when the message is the problem,
        // else (storage full, no leader) they pass.
        _ if text.contains("10054") || text.contains("maximum") && text.contains("size") => {
            SendError::Final {
                error: text,
                too_large: true,
            }
        }
        _ => SendError::Retry(text),
    }
}

/// The client's own events worth a line: a refusal of the credentials
/// (retried by the client, so said once per kind) and other server errors.
fn log_event(event: async_nats::Event) {
    use async_nats::{Event, ServerError};
    use std::sync::atomic::{AtomicBool, Ordering};
    static AUTH_SAID: AtomicBool = AtomicBool::new(false);
    match event {
        Event::ServerError(ServerError::AuthorizationViolation)
            if !AUTH_SAID.swap(true, Ordering::Relaxed) =>
        {
            tracing::error!("NATS refused the credentials (authorization violation): check sink.nats.token, user/password, nkey or creds_file");
        }
        Event::ServerError(ServerError::AuthorizationViolation) => {}
        Event::Connected => AUTH_SAID.store(false, Ordering::Relaxed),
        Event::ServerError(e) => tracing::warn!("NATS server error: {e}"),
        Event::ClientError(e) => tracing::warn!("NATS client error: {e}"),
        Event::LameDuckMode => {
            tracing::info!(
                "the NATS server is shutting down (lame duck mode); reconnecting elsewhere"
            )
        }
        _ => {}
    }
}

/// The configured servers, parsed.
fn servers(cfg: &NatsConfig) -> Result<Vec<ServerAddr>> {
    cfg.servers()
        .map(|s| {
            s.parse::<ServerAddr>()
                .map_err(|e| anyhow!("sink.nats.url: {s:?} is not a server address: {e}"))
        })
        .collect()
}

/// `sink_up{sink="nats"}` follows the connection, checked every 250 ms
/// until `shutdown`; transitions are logged.
fn watch_connection(client: async_nats::Client, shutdown: CancellationToken) {
    tokio::spawn(async move {
        let gauge = metrics::get()
            .sink_up
            .get_or_create(&metrics::labels([("sink", "nats")]))
            .clone();
        let mut was: Option<bool> = None;
        loop {
            let up = client.connection_state() == async_nats::connection::State::Connected;
            gauge.set(up as i64);
            if was != Some(up) {
                if up {
                    tracing::info!("connected to NATS");
                } else if was.is_some() {
                    tracing::warn!("lost the connection to NATS; reconnecting");
                }
                was = Some(up);
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = shutdown.cancelled() => {
                    gauge.set(0);
                    return;
                }
            }
        }
    });
}
