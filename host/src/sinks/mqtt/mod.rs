//! The MQTT sink. (Scaffold: its config and delivery are being written;
//! see ARCHITECTURE.md, "Add a sink", for the contract.)

use crate::delivery::{Delivery, DeliveryStats, Ledger};
use anyhow::{bail, Result};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// `sink.mqtt`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// Where a record goes when no transform says otherwise.
    pub topic: String,
}

impl MqttConfig {
    /// From `demo --sink URL`: the server in the URL, `topic` as the default topic.
    pub fn from_url(_url: &str, topic: &str) -> Result<MqttConfig> {
        Ok(MqttConfig {
            topic: topic.to_string(),
        })
    }

    pub fn validate(&self) -> Result<()> {
        Ok(())
    }

    pub fn default_topic(&self) -> &str {
        &self.topic
    }

    pub fn dead_letter_topic(&self) -> Option<&str> {
        None
    }
}

pub struct MqttSink;

impl MqttSink {
    /// What `validate` checks: the block and any files it names, no connection.
    pub fn check_offline(_cfg: &MqttConfig) -> Result<()> {
        bail!("sink.mqtt is not available yet")
    }

    /// The sink, connecting (and reconnecting) in the background.
    pub async fn start(_cfg: &MqttConfig, _shutdown: &CancellationToken) -> Result<MqttSink> {
        bail!("sink.mqtt is not available yet")
    }

    pub async fn run(
        self,
        _rx: mpsc::Receiver<Vec<Delivery>>,
        _ledger: Ledger,
        _shutdown: CancellationToken,
    ) -> Result<DeliveryStats> {
        bail!("sink.mqtt is not available yet")
    }
}
