//! The Redis Streams sink: each record is an `XADD` to the stream its topic
//! names (after `stream_prefix`), with `MAXLEN ~ N` when `maxlen` is set;
//! the entry's fields are the key (`key_field`), the value (`value_field`)
//! and each header (`header_prefix` + its name).
//!
//! A record counts as delivered when Redis replies to its XADD with the
//! entry's id. Redis cannot recognise a resend, so a record whose reply was
//! lost with the connection is added again: at-least-once, duplicates
//! bounded by `max_in_flight` per lost connection. The delivery loop is the
//! one the NATS sink uses (`sinks/acked.rs`); this file is the
//! connection (kept by a task of its own, reconnecting with backoff) and the
//! command. `config.rs` is the `sink.redis` block.

mod config;

pub use config::{Endpoint, RedisConfig, RedisTls};

use crate::delivery::{Delivery, DeliveryStats, Ledger};
use crate::metrics;
use crate::sinks::acked::{self, Ack, Outgoing, SendError, Settings, Transport};
use anyhow::{anyhow, bail, Result};
use futures::future::BoxFuture;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisConnectionInfo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// The current connection and its number (to report it broken once).
type Current = Option<(u64, MultiplexedConnection)>;

pub struct RedisSink {
    settings: Settings,
    conn: watch::Receiver<Current>,
    broken: mpsc::UnboundedSender<u64>,
    stream_prefix: String,
    maxlen: Option<u64>,
    key_field: String,
    value_field: String,
    header_prefix: String,
    response_timeout: Duration,
}

impl RedisSink {
    /// What `validate` checks: the block and any files it names, no connection.
    pub fn check_offline(cfg: &RedisConfig) -> Result<()> {
        cfg.validate()?;
        cfg.check_files()?;
        if cfg.endpoint()?.tls {
            tls_config(cfg)?;
        }
        Ok(())
    }

    /// The sink, connecting (and reconnecting) in the background.
    pub async fn start(cfg: &RedisConfig, shutdown: &CancellationToken) -> Result<RedisSink> {
        Self::check_offline(cfg)?;
        let endpoint = cfg.endpoint()?;
        let tls = if endpoint.tls {
            Some((
                tokio_rustls::TlsConnector::from(Arc::new(tls_config(cfg)?)),
                ServerName::try_from(
                    cfg.tls
                        .server_name
                        .clone()
                        .unwrap_or_else(|| endpoint.host.clone()),
                )
                .map_err(|e| anyhow!("sink.redis.tls.server_name: {e}"))?,
            ))
        } else {
            None
        };
        let mut info = RedisConnectionInfo::default().set_db(endpoint.db);
        if let Some(user) = &cfg.user {
            info = info.set_username(user);
        }
        if let Some(pw) = &cfg.password {
            info = info.set_password(pw.expose());
        }
        let (tx, rx) = watch::channel(None);
        let (broken_tx, broken_rx) = mpsc::unbounded_channel();
        tokio::spawn(keep_connected(
            Keeper {
                endpoint,
                tls,
                info,
                response_timeout: cfg.response_timeout,
            },
            tx,
            broken_rx,
            shutdown.clone(),
        ));
        Ok(RedisSink {
            settings: Settings {
                sink: "redis",
                server: "Redis",
                default_topic: cfg.topic.clone(),
                dead_letter_topic: cfg.dead_letter_topic.clone(),
                max_in_flight: cfg.max_in_flight,
                flush_timeout: cfg.flush_timeout,
            },
            conn: rx,
            broken: broken_tx,
            stream_prefix: cfg.stream_prefix.clone(),
            maxlen: cfg.maxlen,
            key_field: cfg.key_field.clone(),
            value_field: cfg.value_field.clone(),
            header_prefix: cfg.header_prefix.clone(),
            response_timeout: cfg.response_timeout,
        })
    }

    pub async fn run(
        self,
        rx: mpsc::Receiver<Vec<Delivery>>,
        ledger: Ledger,
        shutdown: CancellationToken,
    ) -> Result<DeliveryStats> {
        acked::run(&self.settings, &self, rx, ledger, shutdown).await
    }

    /// The XADD for one record.
    fn command(&self, out: &Outgoing) -> redis::Cmd {
        let r = &out.record;
        let mut cmd = redis::cmd("XADD");
        cmd.arg(format!("{}{}", self.stream_prefix, r.topic));
        if let Some(n) = self.maxlen {
            cmd.arg("MAXLEN").arg("~").arg(n);
        }
        cmd.arg("*");
        if let Some(k) = &r.key {
            cmd.arg(&self.key_field).arg(k.as_slice());
        }
        cmd.arg(&self.value_field)
            .arg(r.value.as_deref().unwrap_or_default());
        for h in &r.headers {
            cmd.arg(format!("{}{}", self.header_prefix, h.key))
                .arg(h.value.as_slice());
        }
        cmd
    }
}

impl Transport for RedisSink {
    fn send(&self, out: &Outgoing) -> BoxFuture<'static, Result<Ack, SendError>> {
        let cmd = self.command(out);
        let mut conn = self.conn.clone();
        let broken = self.broken.clone();
        let limit = self.response_timeout;
        // Take the connection now (not at the first poll): records keep
        // the order they were handed over in.
        let current = conn.borrow().clone();
        Box::pin(async move {
            let (generation, mut c) = match current {
                Some(c) => c,
                None => {
                    // Not connected: wait for the keeper, a while.
                    let got = tokio::time::timeout(limit, conn.wait_for(Option::is_some)).await;
                    match got {
                        Ok(Ok(c)) => c.clone().expect("waited for Some"),
                        _ => return Err(SendError::Retry("not connected".into())),
                    }
                }
            };
            match tokio::time::timeout(limit, cmd.query_async::<redis::Value>(&mut c)).await {
                Ok(Ok(_id)) => Ok(Ack { duplicate: false }),
                Ok(Err(e)) => {
                    let retry = retriable(&e);
                    if retry && e.code().is_none() {
                        let _ = broken.send(generation);
                    }
                    if retry {
                        Err(SendError::Retry(e.to_string()))
                    } else {
                        Err(SendError::Final {
                            error: e.to_string(),
                            too_large: false,
                        })
                    }
                }
                Err(_) => {
                    // No reply in time: the connection may hang; replace it.
                    let _ = broken.send(generation);
                    Err(SendError::Retry(format!(
                        "no reply within {}",
                        humantime::format_duration(limit)
                    )))
                }
            }
        })
    }
}

/// Errors that pass with time: the connection (lost, refused, timed out)
/// and the server's transient states. Other replies (WRONGTYPE, NOPERM,
/// a bad argument) are about the record or the setup: final.
fn retriable(e: &redis::RedisError) -> bool {
    match e.code() {
        Some(code) => matches!(
            code,
            "OOM"
                | "LOADING"
                | "BUSY"
                | "TRYAGAIN"
                | "CLUSTERDOWN"
                | "MASTERDOWN"
                | "READONLY"
                | "NOAUTH"
        ),
        None => true,
    }
}

struct Keeper {
    endpoint: Endpoint,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    info: RedisConnectionInfo,
    response_timeout: Duration,
}

impl Keeper {
    async fn connect(&self) -> Result<(MultiplexedConnection, tokio::task::JoinHandle<()>)> {
        let addr = (self.endpoint.host.as_str(), self.endpoint.port);
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let config = AsyncConnectionConfig::new().set_response_timeout(Some(self.response_timeout));
        let (conn, driver) = match &self.tls {
            Some((connector, name)) => {
                let stream = connector.connect(name.clone(), tcp).await?;
                let (conn, driver) =
                    MultiplexedConnection::new_with_config(&self.info, stream, config).await?;
                (conn, tokio::spawn(driver))
            }
            None => {
                let (conn, driver) =
                    MultiplexedConnection::new_with_config(&self.info, tcp, config).await?;
                (conn, tokio::spawn(driver))
            }
        };
        Ok((conn, driver))
    }
}

/// Keeps one connection up until `shutdown`: connects, publishes it, and
/// replaces it when it closes or a send reports it broken. `sink_up`
/// follows it.
async fn keep_connected(
    keeper: Keeper,
    tx: watch::Sender<Current>,
    mut broken: mpsc::UnboundedReceiver<u64>,
    shutdown: CancellationToken,
) {
    let up = metrics::get()
        .sink_up
        .get_or_create(&metrics::labels([("sink", "redis")]))
        .clone();
    up.set(0);
    let where_ = format!("{}:{}", keeper.endpoint.host, keeper.endpoint.port);
    let (mut generation, mut attempts, mut warned) = (0u64, 0u32, false);
    while !shutdown.is_cancelled() {
        let attempt = tokio::time::timeout(Duration::from_secs(5), keeper.connect());
        let result = tokio::select! {
            r = attempt => r.unwrap_or_else(|_| Err(anyhow!("connecting timed out"))),
            _ = shutdown.cancelled() => break,
        };
        match result {
            Ok((conn, mut driver)) => {
                generation += 1;
                attempts = 0;
                warned = false;
                tx.send_replace(Some((generation, conn)));
                up.set(1);
                tracing::info!("connected to Redis at {where_}");
                // Until the connection ends or a send finds it broken.
                loop {
                    tokio::select! {
                        _ = &mut driver => break,
                        g = broken.recv() => match g {
                            Some(g) if g == generation => break,
                            Some(_) => continue,
                            None => break,
                        },
                        _ = shutdown.cancelled() => break,
                    }
                }
                driver.abort();
                tx.send_replace(None);
                up.set(0);
                if !shutdown.is_cancelled() {
                    tracing::warn!("lost the connection to Redis at {where_}; reconnecting");
                }
            }
            Err(e) => {
                attempts += 1;
                if !warned {
                    warned = true;
                    tracing::warn!(
                        "cannot connect to Redis at {where_} ({}); retrying (check sink.redis.url, user, password)",
                        one_line(&e)
                    );
                }
                let backoff =
                    Duration::from_millis(100u64 << attempts.min(5)).min(Duration::from_secs(2));
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => break,
                }
            }
        }
    }
    up.set(0);
}

fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

/// rustls with the system's roots and `tls.ca_file`.
fn tls_config(cfg: &RedisConfig) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = &cfg.tls.ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| anyhow!("sink.redis.tls.ca_file {}: {e}", path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| {
                anyhow!(
                    "sink.redis.tls.ca_file {}: not PEM certificates: {e}",
                    path.display()
                )
            })?;
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| anyhow!("sink.redis.tls.ca_file {}: {e}", path.display()))?;
        }
    }
    if roots.is_empty() {
        bail!("sink.redis.tls: no trusted CA certificates (the system store is empty); set sink.redis.tls.ca_file");
    }
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| anyhow!("sink.redis.tls: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
