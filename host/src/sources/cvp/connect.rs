//! The gRPC channel to CVP: the address parsed, TLS done by our own rustls
//! connector (with the verifier the config asks for), HTTP/2 tuned for
//! bursts.

use super::auth::{Credentials, LoginClient};
use super::config::CvpConfig;
use super::error::SessionError;
use anyhow::{anyhow, bail, Result};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// HTTP/2 flow-control window for the event stream: about 4,000 events
/// may be on their way before CVP waits for us.
const STREAM_WINDOW: u32 = 2 << 20;

pub struct Target {
    pub host: String,
    pub port: u16,
}

impl Target {
    pub fn parse(address: &str) -> Result<Target> {
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

    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// Everything a subscription to CVP needs, read from `source.cvp` once:
/// the event stream and the inventory and tag streams each hold one (its
/// own credentials: a login is a session of its own).
pub(super) struct Conn {
    pub target: Target,
    pub tls: Option<Tls>,
    pub credentials: Credentials,
    pub login: Option<LoginClient>,
    pub connect_timeout: Duration,
    pub subscribe_timeout: Duration,
    pub max_backoff: Duration,
    pub max_message_size: usize,
}

impl Conn {
    /// Checks the credentials and TLS files; connects nowhere.
    pub fn new(cfg: &CvpConfig) -> Result<Conn> {
        let target = Target::parse(&cfg.address)?;
        let credentials = Credentials::from_config(cfg)?;
        let tls = if cfg.tls.enabled {
            Some((
                super::tls::client_config(&cfg.tls, &[b"h2"])?,
                super::tls::server_name(&cfg.tls, &target.host)?,
            ))
        } else {
            None
        };
        let login = match &credentials {
            Credentials::Login { .. } => {
                let scheme = if cfg.tls.enabled { "https" } else { "http" };
                let rest_tls = if cfg.tls.enabled {
                    Some(super::tls::client_config(&cfg.tls, &[b"h2", b"http/1.1"])?)
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
        Ok(Conn {
            target,
            tls,
            credentials,
            login,
            connect_timeout: cfg.connect_timeout,
            subscribe_timeout: cfg.subscribe_timeout,
            max_backoff: cfg.max_backoff,
            max_message_size: usize::try_from(cfg.max_message_size).unwrap_or(usize::MAX),
        })
    }
}

/// Connects, logs in and readies a gRPC client for one streaming call,
/// with `message` as its request carrying the bearer token: everything a
/// subscription does before its call, the same for the event stream and
/// for the inventory and tag streams.
pub async fn open<T>(
    conn: &mut Conn,
    message: T,
) -> Result<(tonic::client::Grpc<Channel>, tonic::Request<T>), SessionError> {
    let channel = connect(&conn.target, conn.tls.as_ref(), conn.connect_timeout).await?;
    let token = match &conn.login {
        Some(l) => conn
            .credentials
            .bearer(l)
            .await
            .map_err(|e| SessionError::Login(format!("{e:#}").replace('\n', " ")))?,
        None => conn.credentials.bearer_without_login(),
    };
    let mut request = tonic::Request::new(message);
    if let Some(t) = token {
        let value = format!("Bearer {}", t.expose())
            .parse()
            .map_err(|_| SessionError::TokenNotAHeader)?;
        request.metadata_mut().insert("authorization", value);
    }
    let mut grpc =
        tonic::client::Grpc::new(channel).max_decoding_message_size(conn.max_message_size);
    grpc.ready().await.map_err(|e| SessionError::Connect {
        authority: conn.target.authority(),
        detail: super::auth::error_chain(&e),
    })?;
    Ok((grpc, request))
}

/// TLS as configured: the rustls config and the name to verify.
pub type Tls = (rustls::ClientConfig, rustls::pki_types::ServerName<'static>);

pub async fn connect(
    target: &Target,
    tls: Option<&Tls>,
    connect_timeout: Duration,
) -> Result<Channel, SessionError> {
    let authority = target.authority();
    let bad_address = |e: &dyn std::fmt::Display| SessionError::Connect {
        authority: authority.clone(),
        detail: format!("bad address: {e}"),
    };
    // TLS is ours (rustls, with the verifier the config asks for), done in
    // the connector below; tonic would refuse an https:// endpoint without
    // its own TLS. So the endpoint says http and the origin, which sets
    // each request's :scheme, says https.
    let endpoint =
        Endpoint::from_shared(format!("http://{authority}")).map_err(|e| bad_address(&e))?;
    let endpoint = match tls {
        Some(_) => endpoint.origin(
            format!("https://{authority}")
                .parse()
                .map_err(|e| bad_address(&e))?,
        ),
        None => endpoint,
    };
    let endpoint = endpoint
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        // HTTP/2's default 64 KiB windows make a burst (an initial sync,
        // a backfill) stop for a window update every ~100 events.
        .initial_stream_window_size(Some(STREAM_WINDOW))
        .initial_connection_window_size(Some(STREAM_WINDOW))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true);
    let channel = match tls {
        None => endpoint.connect().await,
        Some((config, name)) => {
            let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config.clone()));
            let name = name.clone();
            let addr = authority.clone();
            endpoint
                .connect_with_connector(tower::service_fn(move |_uri: http::Uri| {
                    let connector = connector.clone();
                    let name = name.clone();
                    let addr = addr.clone();
                    async move {
                        let tcp = tokio::time::timeout(
                            connect_timeout,
                            tokio::net::TcpStream::connect(&addr),
                        )
                        .await
                        .map_err(|_| {
                            std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
                        })??;
                        tcp.set_nodelay(true)?;
                        let tls = connector.connect(name, tcp).await.map_err(|e| {
                            match super::tls::explain(&e) {
                                Some(advice) => std::io::Error::other(advice),
                                None => e,
                            }
                        })?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
                    }
                }))
                .await
        }
    };
    channel.map_err(|e| SessionError::Connect {
        authority,
        detail: super::auth::error_chain(&e),
    })
}
