//! `sink.amqp`: the RabbitMQ server, where a record goes (exchange and
//! routing key, both templates), credentials and TLS, and the bound on
//! records awaiting their publisher confirm.

use crate::secret::Secret;
use anyhow::{anyhow, bail, Result};
use lapin::uri::AMQPUri;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpConfig {
    /// `amqp://HOST[:PORT][/VHOST]` or `amqps://...` (TLS). Credentials go
    /// in `username` and `password`.
    pub url: String,
    /// Where a record goes when no transform says otherwise.
    pub topic: String,
    /// The exchange a record is published to: `{topic}` is the record's
    /// topic, `{key}` its key. `""` is the default exchange, which routes
    /// to the queue named by the routing key.
    #[serde(default)]
    pub exchange: String,
    /// The routing key, a template as `exchange` is.
    #[serde(default = "default_routing_key")]
    pub routing_key: String,
    /// The header that carries the record's key (empty: none).
    #[serde(default = "default_key_header")]
    pub key_header: String,
    /// Publish with the mandatory flag: a message no queue takes comes back
    /// and counts as a failure (dead-lettered or logged), not as delivered.
    #[serde(default = "yes")]
    pub mandatory: bool,
    /// Delivery mode 2: queues that are durable keep the message on disk.
    #[serde(default = "yes")]
    pub persistent: bool,
    #[serde(default = "default_username")]
    pub username: String,
    #[serde(default = "default_password")]
    pub password: Secret,
    /// Extra CA certificates (PEM) for `amqps://`.
    pub ca_file: Option<PathBuf>,
    #[serde(default = "default_heartbeat", with = "humantime_serde")]
    pub heartbeat: Duration,
    /// Records published and not yet confirmed before the sink stops taking
    /// more (backpressure to CVP).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// How long shutdown waits for outstanding confirms.
    #[serde(default = "default_flush_timeout", with = "humantime_serde")]
    pub flush_timeout: Duration,
    /// Where returned (unroutable) records and failed events (`on_error:
    /// dead_letter`) go: published with the templates, `{topic}` being this.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
}

fn yes() -> bool {
    true
}
fn default_routing_key() -> String {
    "{topic}".into()
}
fn default_key_header() -> String {
    "key".into()
}
fn default_username() -> String {
    "guest".into()
}
fn default_password() -> Secret {
    Secret::new("guest")
}
fn default_heartbeat() -> Duration {
    Duration::from_secs(10)
}
fn default_max_in_flight() -> usize {
    1000
}
fn default_flush_timeout() -> Duration {
    Duration::from_secs(30)
}

impl AmqpConfig {
    /// `url` with every default, `topic` the default topic.
    pub fn new(url: impl Into<String>, topic: impl Into<String>) -> AmqpConfig {
        AmqpConfig {
            url: url.into(),
            topic: topic.into(),
            exchange: String::new(),
            routing_key: default_routing_key(),
            key_header: default_key_header(),
            mandatory: true,
            persistent: true,
            username: default_username(),
            password: default_password(),
            ca_file: None,
            heartbeat: default_heartbeat(),
            max_in_flight: default_max_in_flight(),
            flush_timeout: default_flush_timeout(),
            dead_letter_topic: None,
        }
    }

    /// From `demo --sink URL`: the server in the URL (credentials in it
    /// taken out), `topic` the default topic (and routing key).
    pub fn from_url(url: &str, topic: &str) -> Result<AmqpConfig> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| anyhow!("--sink {url:?}: use amqp://HOST:PORT"))?;
        let (userinfo, hostpath) = match rest.split_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let mut cfg = AmqpConfig::new(format!("{scheme}://{hostpath}"), topic);
        if let Some(u) = userinfo {
            let (user, pass) = u.split_once(':').unwrap_or((u, ""));
            cfg.username = user.to_string();
            cfg.password = Secret::new(pass);
        }
        cfg.uri()?;
        Ok(cfg)
    }

    /// The URI lapin connects to, with the credentials put in.
    pub fn uri(&self) -> Result<AMQPUri> {
        if !(self.url.starts_with("amqp://") || self.url.starts_with("amqps://")) {
            bail!(
                "sink.amqp.url {:?}: use amqp://HOST[:PORT][/VHOST] or amqps://",
                self.url
            );
        }
        if self.url.contains('@') {
            bail!("sink.amqp.url: credentials go in sink.amqp.username and password, not the URL");
        }
        let mut uri: AMQPUri = self
            .url
            .parse()
            .map_err(|e| anyhow!("sink.amqp.url {:?}: {e}", self.url))?;
        uri.authority.userinfo.username = self.username.clone();
        uri.authority.userinfo.password = self.password.expose().to_string();
        uri.query.heartbeat = Some(self.heartbeat.as_secs().clamp(1, u16::MAX as u64) as u16);
        // A server that does not answer must not hold a reconnect for long.
        uri.query.connection_timeout.get_or_insert(5_000);
        Ok(uri)
    }

    pub fn validate(&self) -> Result<()> {
        self.uri()?;
        if self.topic.trim().is_empty() {
            bail!("sink.amqp.topic is empty");
        }
        check_template("exchange", &self.exchange)?;
        check_template("routing_key", &self.routing_key)?;
        if self.max_in_flight == 0 {
            bail!("sink.amqp.max_in_flight must be at least 1");
        }
        if self.heartbeat < Duration::from_secs(1) {
            bail!("sink.amqp.heartbeat must be at least 1s");
        }
        Ok(())
    }

    pub fn default_topic(&self) -> &str {
        &self.topic
    }

    pub fn dead_letter_topic(&self) -> Option<&str> {
        self.dead_letter_topic.as_deref()
    }
}

fn check_template(name: &str, t: &str) -> Result<()> {
    let bare = t.replace("{topic}", "").replace("{key}", "");
    if bare.contains(['{', '}']) {
        bail!("sink.amqp.{name} {t:?}: only {{topic}} and {{key}} can be filled in");
    }
    if t.len() > 255 {
        bail!("sink.amqp.{name} is longer than AMQP allows (255 bytes)");
    }
    Ok(())
}

/// A template filled in for a record (AMQP names are at most 255 bytes).
pub fn render(template: &str, topic: &str, key: Option<&[u8]>) -> String {
    let key = key.map(String::from_utf8_lossy).unwrap_or_default();
    let mut s = template.replace("{topic}", topic).replace("{key}", &key);
    if s.len() > 255 {
        let mut end = 255;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_templates_and_secrets() {
        let c = AmqpConfig::from_url("amqp://u:pw@127.0.0.1:5673/%2f", "t").unwrap();
        assert_eq!(c.url, "amqp://127.0.0.1:5673/%2f");
        assert_eq!(c.username, "u");
        assert!(!format!("{c:?}").contains("pw"));
        let uri = c.uri().unwrap();
        assert_eq!(uri.authority.port, 5673);
        assert!(AmqpConfig::new("http://x", "t").validate().is_err());
        let mut c = AmqpConfig::new("amqp://x", "t");
        c.routing_key = "{nope}".into();
        assert!(c.validate().is_err());
        assert_eq!(render("cvp.{topic}.{key}", "a", Some(b"k")), "cvp.a.k");
    }
}
