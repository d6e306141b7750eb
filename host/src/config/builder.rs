//! Configs made in code: the demo, `transform test`, the bench, the seed's
//! file and the tests build the same [`Config`] a YAML file gives, without
//! formatting YAML to parse it back.

use super::Config;
use crate::event::Op;
use crate::secret::Secret;
use crate::sinks::{KafkaConfig, SinkConfig};
use crate::sources::cvp::CvpConfig;
use crate::sources::SourceConfig;
use crate::transforms::{DefaultValue, PipelineConfig, TransformConfig};
use anyhow::Result;

pub struct ConfigBuilder {
    config: Config,
}

impl ConfigBuilder {
    /// CVP at `address` (TLS, no credentials yet), no transforms, and Kafka
    /// at a placeholder address with the topic `cvp-events`.
    pub fn new(address: impl Into<String>) -> ConfigBuilder {
        ConfigBuilder {
            config: Config {
                source: SourceConfig {
                    cvp: CvpConfig::new(address),
                },
                transforms: Vec::new(),
                sink: SinkConfig::Kafka(KafkaConfig::new("unused:9092", "cvp-events")),
                pipeline: PipelineConfig::default(),
                admin: None,
                checkpoint: None,
                tests: Vec::new(),
            },
        }
    }

    /// A service-account token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.config.source.cvp.token = Some(Secret::new(token));
        self
    }

    /// Plaintext to CVP (a simulator on loopback).
    pub fn plaintext(mut self) -> Self {
        self.config.source.cvp.tls.enabled = false;
        self
    }

    /// The operations to forward (default: updated).
    pub fn operations(mut self, ops: impl IntoIterator<Item = Op>) -> Self {
        self.config.source.cvp.operations = ops.into_iter().collect();
        self
    }

    /// Any other `source.cvp` setting.
    pub fn cvp(mut self, change: impl FnOnce(&mut CvpConfig)) -> Self {
        change(&mut self.config.source.cvp);
        self
    }

    /// Appends a transform to the chain.
    pub fn transform(mut self, t: TransformConfig) -> Self {
        self.config.transforms.push(t);
        self
    }

    /// Produces to `topic` on the Kafka cluster at `brokers`.
    pub fn kafka(self, brokers: impl Into<String>, topic: impl Into<String>) -> Self {
        self.sink(SinkConfig::Kafka(KafkaConfig::new(brokers, topic)))
    }

    /// Any sink, configured in full.
    pub fn sink(mut self, sink: SinkConfig) -> Self {
        self.config.sink = sink;
        self
    }

    pub fn default_value(mut self, v: DefaultValue) -> Self {
        self.config.pipeline.default_value = v;
        self
    }

    /// The config as built, not yet checked.
    pub(super) fn into_config(self) -> Config {
        self.config
    }

    /// The config, checked as a parsed file is.
    pub fn build(self) -> Result<Config> {
        let mut config = self.config;
        config.validate()?;
        Ok(config)
    }
}
