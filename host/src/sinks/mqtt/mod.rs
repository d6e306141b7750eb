//! The MQTT sink (3.1.1 and 5): each record published with QoS 1 and
//! counted as delivered when its PUBACK arrives (MQTT 5: with a success
//! reason). The session is persistent (clean session / clean start off, an
//! MQTT 5 session expiry), so what is in flight at a disconnect is re-sent
//! in the same session after it. If the server lost the session, the sink
//! publishes every unacknowledged record again itself: nothing is dropped,
//! at the cost of duplicates (at-least-once).
//!
//! `config.rs` is the `sink.mqtt` block, `client.rs` rumqttc's two
//! clients behind one face, `deliver.rs` the loop from deliveries to
//! acknowledgements.

mod client;
mod config;
mod deliver;

pub use config::{render_topic, MqttConfig, MqttProtocol};

use crate::metrics;
use anyhow::Result;
use std::time::Duration;

pub struct MqttSink {
    events: client::Loop,
    publisher: Publisher,
}

/// The client and the settings publishing needs.
struct Publisher {
    client: client::Client,
    template: String,
    retain: bool,
    key_property: Option<String>,
    v5: bool,
    max_in_flight: usize,
    flush_timeout: Duration,
    dead_letter_topic: Option<String>,
    topic: String,
    server: String,
}

impl MqttSink {
    /// What `validate` checks: the block and the CA file it names; no
    /// connection (rumqttc connects on its first poll, in `run`).
    pub fn check_offline(cfg: &MqttConfig) -> Result<()> {
        cfg.validate()?;
        client::Client::new(cfg).map(drop)
    }

    /// The sink; it connects (and reconnects) when it runs.
    pub async fn start(
        cfg: &MqttConfig,
        _shutdown: &tokio_util::sync::CancellationToken,
    ) -> Result<MqttSink> {
        cfg.validate()?;
        let (client, events) = client::Client::new(cfg)?;
        metrics::get()
            .sink_up
            .get_or_create(&metrics::labels([("sink", "mqtt")]))
            .set(0);
        Ok(MqttSink {
            events,
            publisher: Publisher {
                client,
                template: cfg.topic_template.clone(),
                retain: cfg.retain,
                key_property: Some(cfg.key_property.clone()).filter(|k| !k.is_empty()),
                v5: cfg.protocol == MqttProtocol::V5,
                max_in_flight: cfg.max_in_flight,
                flush_timeout: cfg.flush_timeout,
                dead_letter_topic: cfg.dead_letter_topic.clone(),
                topic: cfg.topic.clone(),
                server: cfg.url.clone(),
            },
        })
    }
}
