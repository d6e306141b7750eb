//! `sink.nats`: the servers, how a record's topic becomes a subject, the
//! optional stream to create, credentials and TLS, and the bounds that keep
//! memory flat while JetStream is slow or away.

use crate::secret::Secret;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `sink.nats`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// The server(s): `nats://host:4222`, `tls://host:4222`, or several
    /// separated by commas (the client picks one and fails over).
    #[serde(default = "default_url")]
    pub url: String,
    /// Where a record goes when no transform says otherwise.
    pub topic: String,
    /// Put before a record's topic to make its subject (`cvp.` makes topic
    /// `events` the subject `cvp.events`).
    #[serde(default)]
    pub subject_prefix: String,
    /// The header that carries the record's key (NATS messages have none).
    #[serde(default = "default_key_header")]
    pub key_header: String,
    /// Set `Nats-Msg-Id` (event key, time and the record's place in the
    /// event) so the stream's duplicate window drops what a retry or a
    /// restart sends again.
    #[serde(default = "yes")]
    pub msg_id: bool,
    /// A stream to create (or reuse) at start; without it the subjects must
    /// already be captured by a stream.
    #[serde(default)]
    pub stream: Option<StreamSpec>,
    /// Where records go that JetStream will not take (too large, a subject it
    /// refuses) and events whose transform failed with `on_error:
    /// dead_letter`: a topic, made a subject with the same prefix.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    #[serde(default)]
    pub token: Option<Secret>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// An NKey seed (`SU...`).
    #[serde(default)]
    pub nkey: Option<Secret>,
    /// A `.creds` file (JWT and NKey seed).
    #[serde(default)]
    pub creds_file: Option<PathBuf>,
    #[serde(default)]
    pub tls: NatsTls,
    /// Records sent and not yet acknowledged, at most; at the bound the sink
    /// stops taking more (backpressure to CVP).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// How long one publish waits for JetStream's acknowledgement before it
    /// is sent again.
    #[serde(default = "default_ack_timeout", with = "humantime_serde")]
    pub ack_timeout: Duration,
    /// How long shutdown waits for outstanding acknowledgements.
    #[serde(default = "default_flush_timeout", with = "humantime_serde")]
    pub flush_timeout: Duration,
}

/// `sink.nats.stream`: created if missing, used as it is if present.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    pub name: String,
    /// Default: the prefix followed by `>` (every subject the sink writes).
    #[serde(default)]
    pub subjects: Vec<String>,
    /// How long JetStream remembers a `Nats-Msg-Id` to drop a duplicate.
    #[serde(default = "default_duplicate_window", with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// `file` (survives a server restart) or `memory`.
    #[serde(default = "default_storage")]
    pub storage: String,
}

/// `sink.nats.tls`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsTls {
    /// Require TLS (implied by a `tls://` URL or any file below).
    #[serde(default)]
    pub enabled: bool,
    /// A PEM file of CA certificates to trust (besides the system's).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A client certificate and its key (PEM), for mutual TLS.
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

impl NatsConfig {
    /// `topic` on the server(s) at `url`, with every default.
    pub fn new(url: impl Into<String>, topic: impl Into<String>) -> NatsConfig {
        NatsConfig {
            url: url.into(),
            topic: topic.into(),
            subject_prefix: String::new(),
            key_header: default_key_header(),
            msg_id: true,
            stream: None,
            dead_letter_topic: None,
            token: None,
            user: None,
            password: None,
            nkey: None,
            creds_file: None,
            tls: NatsTls::default(),
            max_in_flight: default_max_in_flight(),
            ack_timeout: default_ack_timeout(),
            flush_timeout: default_flush_timeout(),
        }
    }

    /// From `demo --sink URL`: the server in the URL, `topic` as the default
    /// topic, and a stream `CVP` for `topic` created if missing.
    pub fn from_url(url: &str, topic: &str) -> Result<NatsConfig> {
        let mut cfg = NatsConfig::new(url, topic);
        // A stream per topic: one named for all would already exist, with
        // another subject, the second time a different topic is tried.
        let name: String = topic
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        cfg.stream = Some(StreamSpec {
            name: format!("CVP_{name}"),
            subjects: vec![topic.to_string()],
            duplicate_window: default_duplicate_window(),
            storage: default_storage(),
        });
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        if self.url.trim().is_empty() {
            bail!("sink.nats.url is empty: set it to nats://HOST:4222");
        }
        for u in self.servers() {
            if u.contains(char::is_whitespace) {
                bail!("sink.nats.url: {u:?} has a space in it");
            }
        }
        if self.topic.trim().is_empty() {
            bail!("sink.nats.topic is empty");
        }
        for (what, topic) in std::iter::once(("topic", &self.topic)).chain(
            self.dead_letter_topic
                .iter()
                .map(|t| ("dead_letter_topic", t)),
        ) {
            let subject = self.subject(topic);
            if !valid_subject(&subject) {
                bail!("sink.nats.{what}: {subject:?} is not a valid NATS subject (no spaces, `*`, `>`, or empty tokens)");
            }
        }
        if !self.subject_prefix.is_empty() && !self.subject_prefix.ends_with('.') {
            // Not an error (a prefix may glue onto the topic), but nearly
            // always meant as a token of its own.
            tracing::debug!("sink.nats.subject_prefix does not end with '.'");
        }
        if self.key_header.parse::<async_nats::HeaderName>().is_err() || self.key_header.is_empty()
        {
            bail!(
                "sink.nats.key_header: {:?} is not a valid header name",
                self.key_header
            );
        }
        let methods = [
            self.token.is_some(),
            self.user.is_some() || self.password.is_some(),
            self.nkey.is_some(),
            self.creds_file.is_some(),
        ];
        if methods.iter().filter(|m| **m).count() > 1 {
            bail!("sink.nats: set only one of token, user/password, nkey and creds_file");
        }
        if self.user.is_some() != self.password.is_some() {
            bail!("sink.nats: user and password go together: set both or neither");
        }
        if let Some(seed) = &self.nkey {
            if !seed.expose().starts_with("SU") {
                bail!("sink.nats.nkey must be a user NKey seed (it starts with SU)");
            }
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            bail!("sink.nats.tls: cert_file and key_file go together: set both or neither");
        }
        if self.max_in_flight == 0 {
            bail!("sink.nats.max_in_flight must be at least 1");
        }
        if self.ack_timeout < Duration::from_millis(100) {
            bail!("sink.nats.ack_timeout must be at least 100ms");
        }
        if let Some(s) = &self.stream {
            if s.name.is_empty()
                || s.name
                    .contains(|c: char| c.is_whitespace() || ".*>".contains(c))
            {
                bail!(
                    "sink.nats.stream.name: {:?} must be non-empty, without spaces, '.', '*' or '>'",
                    s.name
                );
            }
            if !matches!(s.storage.as_str(), "file" | "memory") {
                bail!(
                    "sink.nats.stream.storage: {:?} is not file or memory",
                    s.storage
                );
            }
            if s.subjects.is_empty() && self.subject_prefix.is_empty() {
                bail!("sink.nats.stream.subjects: set them, or a subject_prefix (the stream then takes PREFIX>)");
            }
        }
        Ok(())
    }

    /// The files the block names exist and hold what they should.
    pub fn check_files(&self) -> Result<()> {
        if let Some(path) = &self.creds_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("sink.nats.creds_file: cannot read {}", path.display()))?;
            async_nats::ConnectOptions::with_credentials(&text).map_err(|e| {
                anyhow::anyhow!(
                    "sink.nats.creds_file: {} is not a NATS credentials file ({e})",
                    path.display()
                )
            })?;
        }
        for (what, path) in [
            ("ca_file", &self.tls.ca_file),
            ("cert_file", &self.tls.cert_file),
        ] {
            if let Some(path) = path {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("sink.nats.tls.{what}: cannot read {}", path.display())
                })?;
                if !text.contains("-----BEGIN CERTIFICATE-----") {
                    bail!(
                        "sink.nats.tls.{what}: {} holds no PEM certificate",
                        path.display()
                    );
                }
            }
        }
        if let Some(path) = &self.tls.key_file {
            std::fs::metadata(path).with_context(|| {
                format!("sink.nats.tls.key_file: cannot read {}", path.display())
            })?;
        }
        Ok(())
    }

    pub fn default_topic(&self) -> &str {
        &self.topic
    }

    pub fn dead_letter_topic(&self) -> Option<&str> {
        self.dead_letter_topic.as_deref()
    }

    /// The subject a record of `topic` is published to.
    pub fn subject(&self, topic: &str) -> String {
        format!("{}{topic}", self.subject_prefix)
    }

    pub fn servers(&self) -> impl Iterator<Item = &str> {
        self.url.split(',').map(str::trim).filter(|s| !s.is_empty())
    }

    /// TLS is wanted: a `tls://` URL, `tls.enabled`, or a file for it.
    pub fn tls_required(&self) -> bool {
        self.tls.enabled
            || self.tls.ca_file.is_some()
            || self.tls.cert_file.is_some()
            || self.servers().any(|s| s.starts_with("tls://"))
    }

    /// The stream's subjects, defaults applied.
    pub fn stream_subjects(&self, s: &StreamSpec) -> Vec<String> {
        if s.subjects.is_empty() {
            vec![format!("{}>", self.subject_prefix)]
        } else {
            s.subjects.clone()
        }
    }
}

/// A subject a message can be published to: dot-separated non-empty tokens,
/// no whitespace, no wildcards.
pub fn valid_subject(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|t| {
            !t.is_empty() && t != "*" && t != ">" && !t.contains(|c: char| c.is_whitespace())
        })
}

fn default_url() -> String {
    "nats://127.0.0.1:4222".into()
}

fn default_key_header() -> String {
    "Cvp-Key".into()
}

fn yes() -> bool {
    true
}

fn default_max_in_flight() -> usize {
    // Enough to keep a loopback or LAN server busy (acks are pipelined);
    // small enough that an outage holds a few MB at most.
    1024
}

fn default_ack_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_flush_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_duplicate_window() -> Duration {
    Duration::from_secs(120)
}

fn default_storage() -> String {
    "file".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_stay_out_of_debug() {
        let mut cfg = NatsConfig::new("nats://h:4222", "events");
        cfg.token = Some(Secret::new("s3cret-token"));
        assert!(!format!("{cfg:?}").contains("s3cret-token"));
    }

    #[test]
    fn checks_the_block() {
        let cfg = NatsConfig::new("nats://h:4222", "events");
        cfg.validate().unwrap();
        let mut bad = NatsConfig::new("nats://h:4222", "has space");
        assert!(bad.validate().is_err());
        bad.topic = "a.>".into();
        assert!(bad.validate().is_err());
        let mut both = NatsConfig::new("nats://h:4222", "events");
        both.token = Some(Secret::new("t"));
        both.nkey = Some(Secret::new("SUxyz"));
        let e = both.validate().unwrap_err().to_string();
        assert!(e.contains("only one"), "{e}");
        assert!(!e.contains("SUxyz"));
        let mut parsed: NatsConfig =
            serde_yaml::from_str("topic: t\nsubject_prefix: cvp.\nstream: { name: S }\n").unwrap();
        parsed.validate().unwrap();
        assert_eq!(
            parsed.stream_subjects(parsed.stream.as_ref().unwrap()),
            ["cvp.>"]
        );
        parsed.max_in_flight = 0;
        assert!(parsed.validate().is_err());
        assert!(serde_yaml::from_str::<NatsConfig>("topic: t\nnope: 1\n").is_err());
    }
}
