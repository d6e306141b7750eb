//! The RabbitMQ sink (AMQP 0-9-1): one connection and one channel in
//! confirm mode; each record published persistent and mandatory, and
//! counted as delivered when the broker confirms it (basic.ack) without
//! returning it. A returned message (no queue took it) is a failure: it goes
//! to the dead-letter topic or is logged as lost. A nack, or a connection
//! lost before the confirm, sends the record again (at-least-once), on a
//! new connection when needed.
//!
//! `config.rs` is the `sink.amqp` block, `deliver.rs` the loop from
//! deliveries to confirms.

mod config;
mod deliver;

pub use config::{render, AmqpConfig};

use crate::metrics;
use anyhow::{anyhow, Context, Result};
use lapin::uri::AMQPUri;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct AmqpSink {
    uri: AMQPUri,
    /// Extra CA certificates (PEM) for amqps://.
    ca_pem: Option<String>,
    exchange: String,
    routing_key: String,
    key_header: Option<String>,
    mandatory: bool,
    persistent: bool,
    max_in_flight: usize,
    flush_timeout: Duration,
    dead_letter_topic: Option<String>,
    topic: String,
    server: String,
}

impl AmqpSink {
    /// What `validate` checks: the block and the CA file it names; no
    /// connection.
    pub fn check_offline(cfg: &AmqpConfig) -> Result<()> {
        cfg.validate()?;
        ca_pem(cfg).map(drop)
    }

    /// The sink; it connects (and reconnects) when it runs.
    pub async fn start(cfg: &AmqpConfig, _shutdown: &CancellationToken) -> Result<AmqpSink> {
        cfg.validate()?;
        metrics::get()
            .sink_up
            .get_or_create(&metrics::labels([("sink", "amqp")]))
            .set(0);
        Ok(AmqpSink {
            uri: cfg.uri()?,
            ca_pem: ca_pem(cfg)?,
            exchange: cfg.exchange.clone(),
            routing_key: cfg.routing_key.clone(),
            key_header: Some(cfg.key_header.clone()).filter(|k| !k.is_empty()),
            mandatory: cfg.mandatory,
            persistent: cfg.persistent,
            max_in_flight: cfg.max_in_flight,
            flush_timeout: cfg.flush_timeout,
            dead_letter_topic: cfg.dead_letter_topic.clone(),
            topic: cfg.topic.clone(),
            server: cfg.url.clone(),
        })
    }
}

/// The CA file, read now so a wrong path fails `validate`.
fn ca_pem(cfg: &AmqpConfig) -> Result<Option<String>> {
    let Some(path) = &cfg.ca_file else {
        return Ok(None);
    };
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("sink.amqp.ca_file {}", path.display()))?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(anyhow!(
            "sink.amqp.ca_file {}: no PEM certificate in it",
            path.display()
        ));
    }
    Ok(Some(pem))
}
