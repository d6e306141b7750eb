//! `sink.redis`: the server, how a record's topic becomes a stream name, the
//! fields a record is written as, MAXLEN, ACL credentials and TLS, and the
//! bounds that keep memory flat while Redis is slow or away.

use crate::secret::Secret;
use anyhow::{anyhow, bail, Context, Result};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `sink.redis`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://HOST:PORT[/DB]` or `rediss://` (TLS). Credentials go in
    /// `user` and `password`, not here.
    #[serde(default = "default_url")]
    pub url: String,
    /// Where a record goes when no transform says otherwise.
    pub topic: String,
    /// Put before a record's topic to make its stream's name.
    #[serde(default)]
    pub stream_prefix: String,
    /// `XADD ... MAXLEN ~ N`: each stream trimmed to about N entries.
    #[serde(default)]
    pub maxlen: Option<u64>,
    /// The entry's field holding the record's key (left out when it has none).
    #[serde(default = "default_key_field")]
    pub key_field: String,
    /// The entry's field holding the record's value.
    #[serde(default = "default_value_field")]
    pub value_field: String,
    /// Put before each header's name to make its field.
    #[serde(default = "default_header_prefix")]
    pub header_prefix: String,
    /// Where records go that Redis will not take, and events whose
    /// transform failed with `on_error: dead_letter` (a topic: a stream
    /// named with the same prefix).
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// An ACL user (with `password`); without it, `password` is the
    /// default user's (`requirepass`).
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub tls: RedisTls,
    /// Records sent and not yet answered, at most; at the bound the sink
    /// stops taking more (backpressure to CVP).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// How long one XADD waits for its reply before it is sent again.
    #[serde(default = "default_response_timeout", with = "humantime_serde")]
    pub response_timeout: Duration,
    /// How long shutdown waits for outstanding replies.
    #[serde(default = "default_flush_timeout", with = "humantime_serde")]
    pub flush_timeout: Duration,
}

/// `sink.redis.tls`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisTls {
    /// TLS (implied by a `rediss://` URL or `ca_file`).
    #[serde(default)]
    pub enabled: bool,
    /// A PEM file of CA certificates to trust (besides the system's).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// The name the certificate must carry, if not the URL's host.
    #[serde(default)]
    pub server_name: Option<String>,
}

/// Where Redis is, from `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub db: i64,
    pub tls: bool,
}

impl RedisConfig {
    /// `topic` on the server at `url`, with every default.
    pub fn new(url: impl Into<String>, topic: impl Into<String>) -> RedisConfig {
        RedisConfig {
            url: url.into(),
            topic: topic.into(),
            stream_prefix: String::new(),
            maxlen: None,
            key_field: default_key_field(),
            value_field: default_value_field(),
            header_prefix: default_header_prefix(),
            dead_letter_topic: None,
            user: None,
            password: None,
            tls: RedisTls::default(),
            max_in_flight: default_max_in_flight(),
            response_timeout: default_response_timeout(),
            flush_timeout: default_flush_timeout(),
        }
    }

    /// From `demo --sink URL`: the server in the URL, `topic` as the default
    /// topic (and so the stream's name).
    pub fn from_url(url: &str, topic: &str) -> Result<RedisConfig> {
        let cfg = RedisConfig::new(url, topic);
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        self.endpoint()?;
        if self.topic.trim().is_empty() {
            bail!("sink.redis.topic is empty");
        }
        if self.key_field.is_empty() || self.value_field.is_empty() {
            bail!("sink.redis.key_field and value_field must not be empty");
        }
        if self.key_field == self.value_field {
            bail!("sink.redis.key_field and value_field must differ");
        }
        if self.user.is_some() && self.password.is_none() {
            bail!("sink.redis.user needs sink.redis.password");
        }
        if self.maxlen == Some(0) {
            bail!("sink.redis.maxlen must be at least 1 (leave it out for no trimming)");
        }
        if self.max_in_flight == 0 {
            bail!("sink.redis.max_in_flight must be at least 1");
        }
        if self.response_timeout < Duration::from_millis(100) {
            bail!("sink.redis.response_timeout must be at least 100ms");
        }
        Ok(())
    }

    /// The files the block names hold what they should.
    pub fn check_files(&self) -> Result<()> {
        if let Some(path) = &self.tls.ca_file {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!("sink.redis.tls.ca_file: cannot read {}", path.display())
            })?;
            if !text.contains("-----BEGIN CERTIFICATE-----") {
                bail!(
                    "sink.redis.tls.ca_file: {} holds no PEM certificate",
                    path.display()
                );
            }
        }
        Ok(())
    }

    /// Host, port, database and TLS from `url`.
    pub fn endpoint(&self) -> Result<Endpoint> {
        let url = self.url.trim();
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            anyhow!("sink.redis.url: {url:?} is not redis://HOST:PORT or rediss://HOST:PORT")
        })?;
        let tls = match scheme {
            "redis" => false,
            "rediss" => true,
            _ => bail!("sink.redis.url: {url:?}: the scheme must be redis or rediss"),
        };
        if rest.contains('@') {
            bail!("sink.redis.url: put credentials in sink.redis.user and sink.redis.password, not in the URL");
        }
        let (hostport, db) = match rest.split_once('/') {
            Some((hp, "")) => (hp, 0),
            Some((hp, db)) => (
                hp,
                db.parse()
                    .map_err(|_| anyhow!("sink.redis.url: database {db:?} is not a number"))?,
            ),
            None => (rest, 0),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (
                h,
                p.parse()
                    .map_err(|_| anyhow!("sink.redis.url: port {p:?} is not a number"))?,
            ),
            _ => (hostport, 6379),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            bail!("sink.redis.url: {url:?} has no host");
        }
        Ok(Endpoint {
            host: host.to_string(),
            port,
            db,
            tls: tls || self.tls.enabled || self.tls.ca_file.is_some(),
        })
    }

    pub fn default_topic(&self) -> &str {
        &self.topic
    }

    pub fn dead_letter_topic(&self) -> Option<&str> {
        self.dead_letter_topic.as_deref()
    }

    /// The stream a record of `topic` is added to.
    pub fn stream(&self, topic: &str) -> String {
        format!("{}{topic}", self.stream_prefix)
    }
}

fn default_url() -> String {
    "redis://127.0.0.1:6379".into()
}

fn default_key_field() -> String {
    "key".into()
}

fn default_value_field() -> String {
    "value".into()
}

fn default_header_prefix() -> String {
    "header:".into()
}

fn default_max_in_flight() -> usize {
    // Replies are pipelined on one connection: 1024 keeps it busy, and
    // bounds an outage to a few MB.
    1024
}

fn default_response_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_flush_timeout() -> Duration {
    Duration::from_secs(30)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        let e = |u: &str| RedisConfig::new(u, "t").endpoint();
        assert_eq!(
            e("redis://h:7000/2").unwrap(),
            Endpoint {
                host: "h".into(),
                port: 7000,
                db: 2,
                tls: false
            }
        );
        assert_eq!(e("rediss://h").unwrap().port, 6379);
        assert!(e("rediss://h").unwrap().tls);
        assert!(e("http://h").is_err());
        let err = e("redis://u:pw-secret@h").unwrap_err().to_string();
        assert!(!err.contains("pw-secret"), "{err}");
    }
}
