//! rumqttc's MQTT 3.1.1 and MQTT 5 clients behind one face: the options
//! built from `sink.mqtt`, a publish that never waits (the sink's single
//! task also drives the event loop, so a waiting publish would deadlock),
//! and the few events the sink acts on.

use super::config::{MqttConfig, MqttProtocol};
use anyhow::{anyhow, bail, Context, Result};
use rumqttc::{v5, QoS, TlsConfiguration, Transport};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use std::sync::Arc;

/// What the sink needs to know from the event loop.
pub enum MqttEvent {
    /// Connected; `session_present`: the server kept our session, and
    /// rumqttc re-sends what was unacknowledged. Otherwise it dropped it.
    Connected {
        session_present: bool,
    },
    /// A publish was written with this packet id (first time or re-sent).
    Sent(u16),
    /// The server acknowledged packet `pkid`; `refused` holds the MQTT 5
    /// reason when it did not take the message.
    Acked {
        pkid: u16,
        refused: Option<String>,
    },
    Other,
}

/// The handle publishes go through.
pub enum Client {
    V4(rumqttc::AsyncClient),
    V5(v5::AsyncClient),
}

/// The event loop: the connection, the session's in-flight state, the
/// re-sends. Polled by value (see [`Loop::poll`]).
pub enum Loop {
    // Boxed: an event loop is over a kilobyte, and the sink moves it
    // into each poll.
    V4(Box<rumqttc::EventLoop>),
    V5(Box<v5::EventLoop>),
}

/// A message to publish.
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    /// MQTT 5 user properties (3.1.1 has none).
    pub properties: Vec<(String, String)>,
    pub retain: bool,
}

impl Client {
    pub fn new(cfg: &MqttConfig) -> Result<(Client, Loop)> {
        let server = cfg.server()?;
        // Room for every record the sink lets be in flight: a publish never
        // finds the request channel full.
        let cap = cfg.max_in_flight.max(1);
        let inflight = cfg.max_in_flight.clamp(1, 65_535) as u16;
        let transport = if server.tls {
            Some(Transport::tls_with_config(TlsConfiguration::Rustls(
                Arc::new(tls_config(cfg)?),
            )))
        } else {
            None
        };
        Ok(match cfg.protocol {
            MqttProtocol::V311 => {
                let mut o = rumqttc::MqttOptions::new(&cfg.client_id, &server.host, server.port);
                o.set_keep_alive(cfg.keep_alive)
                    // A persistent session: the server keeps it (and rumqttc
                    // re-sends unacknowledged publishes) across reconnects.
                    .set_clean_session(false)
                    .set_inflight(inflight)
                    .set_max_packet_size(256 << 20, 256 << 20);
                if let Some(t) = transport {
                    o.set_transport(t);
                }
                if let Some(u) = &cfg.username {
                    o.set_credentials(u, cfg.password.as_ref().map_or("", |p| p.expose()));
                }
                let (c, e) = rumqttc::AsyncClient::new(o, cap);
                (Client::V4(c), Loop::V4(Box::new(e)))
            }
            MqttProtocol::V5 => {
                let mut o = v5::MqttOptions::new(&cfg.client_id, &server.host, server.port);
                o.set_keep_alive(cfg.keep_alive)
                    .set_clean_start(false)
                    // Without an expiry an MQTT 5 session ends with the
                    // connection, and with it what was in flight.
                    .set_session_expiry_interval(Some(cfg.session_expiry.as_secs() as u32))
                    .set_outgoing_inflight_upper_limit(inflight);
                if let Some(t) = transport {
                    o.set_transport(t);
                }
                if let Some(u) = &cfg.username {
                    o.set_credentials(u, cfg.password.as_ref().map_or("", |p| p.expose()));
                }
                let (c, e) = v5::AsyncClient::new(o, cap);
                (Client::V5(c), Loop::V5(Box::new(e)))
            }
        })
    }

    /// Hands a QoS 1 publish to the event loop without waiting. `false`:
    /// its queue is full (try again after the next event).
    pub fn try_publish(&self, m: Message) -> Result<bool> {
        // Only a full queue is worth retrying; anything else means the
        // event loop is gone.
        let (full, error) = match self {
            Client::V4(c) => match c.try_publish(m.topic, QoS::AtLeastOnce, m.retain, m.payload) {
                Ok(()) => return Ok(true),
                Err(e) => (
                    matches!(e, rumqttc::ClientError::TryRequest(_)),
                    e.to_string(),
                ),
            },
            Client::V5(c) => {
                let props = v5::mqttbytes::v5::PublishProperties {
                    user_properties: m.properties,
                    ..Default::default()
                };
                match c.try_publish_with_properties(
                    m.topic,
                    v5::mqttbytes::QoS::AtLeastOnce,
                    m.retain,
                    m.payload,
                    props,
                ) {
                    Ok(()) => return Ok(true),
                    Err(e) => (matches!(e, v5::ClientError::TryRequest(_)), e.to_string()),
                }
            }
        };
        if full {
            Ok(false)
        } else {
            bail!("the MQTT client stopped: {error}")
        }
    }

    /// Asks the server to end the session's connection cleanly.
    pub fn disconnect(&self) {
        match self {
            Client::V4(c) => {
                let _ = c.try_disconnect();
            }
            Client::V5(c) => {
                let _ = c.try_disconnect();
            }
        }
    }
}

impl Loop {
    /// The next event, after `delay`; `Err` is a lost or refused connection
    /// (polling again reconnects). The loop moves into the future and comes
    /// back with the event, so the sink can keep one poll going across its
    /// `select!` (rumqttc's poll is not cancel-safe mid-write).
    pub async fn poll(mut self, delay: std::time::Duration) -> (Loop, Result<MqttEvent, String>) {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let r = self.poll_once().await;
        (self, r)
    }

    async fn poll_once(&mut self) -> Result<MqttEvent, String> {
        match self {
            Loop::V4(e) => {
                use rumqttc::{Event, Outgoing, Packet};
                match e.poll().await.map_err(|e| e.to_string())? {
                    Event::Incoming(Packet::ConnAck(c)) => Ok(MqttEvent::Connected {
                        session_present: c.session_present,
                    }),
                    Event::Incoming(Packet::PubAck(a)) => Ok(MqttEvent::Acked {
                        pkid: a.pkid,
                        refused: None,
                    }),
                    Event::Outgoing(Outgoing::Publish(pkid)) => Ok(MqttEvent::Sent(pkid)),
                    _ => Ok(MqttEvent::Other),
                }
            }
            Loop::V5(e) => {
                use v5::mqttbytes::v5::{Packet, PubAckReason};
                use v5::Event;
                match e.poll().await.map_err(|e| e.to_string())? {
                    Event::Incoming(Packet::ConnAck(c)) => Ok(MqttEvent::Connected {
                        session_present: c.session_present,
                    }),
                    Event::Incoming(Packet::PubAck(a)) => Ok(MqttEvent::Acked {
                        pkid: a.pkid,
                        refused: match a.reason {
                            PubAckReason::Success | PubAckReason::NoMatchingSubscribers => None,
                            r => Some(format!("the server refused it: {r:?}")),
                        },
                    }),
                    Event::Outgoing(rumqttc::Outgoing::Publish(pkid)) => Ok(MqttEvent::Sent(pkid)),
                    _ => Ok(MqttEvent::Other),
                }
            }
        }
    }
}

/// rustls with the system's roots plus `ca_file`.
pub fn tls_config(cfg: &MqttConfig) -> Result<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        // A broken system certificate should not stop us; the others count.
        let _ = roots.add(cert);
    }
    if let Some(path) = &cfg.ca_file {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| anyhow!("sink.mqtt.ca_file {}: {e}", path.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| {
                anyhow!(
                    "sink.mqtt.ca_file {}: not PEM certificates: {e}",
                    path.display()
                )
            })?;
        if certs.is_empty() {
            bail!("sink.mqtt.ca_file {} holds no certificates", path.display());
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| anyhow!("sink.mqtt.ca_file {}: {e}", path.display()))?;
        }
    }
    if roots.is_empty() {
        bail!("no trusted CA certificates for mqtts://: the system store is empty; set sink.mqtt.ca_file");
    }
    ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS setup")
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}
