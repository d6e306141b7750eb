//! `sink.mqtt`: the server, the protocol version, the session, how a
//! record's topic becomes an MQTT topic, credentials and TLS, and the bound
//! on records awaiting their PUBACK.

use crate::secret::Secret;
use anyhow::{anyhow, bail, Result};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttConfig {
    /// `mqtt://HOST[:PORT]` (default port 1883) or `mqtts://HOST[:PORT]`
    /// (TLS, default port 8883).
    pub url: String,
    /// Where a record goes when no transform says otherwise.
    pub topic: String,
    /// The MQTT topic of a record: `{topic}` is the record's topic, `{key}`
    /// its key (as text; `+`, `#` and NUL, which MQTT forbids in a topic
    /// name, become `_`). E.g. `cvp/{topic}/{key}`.
    #[serde(default = "default_template")]
    pub topic_template: String,
    /// `5` (user properties carry the headers) or `3.1.1` (no headers).
    #[serde(default)]
    pub protocol: MqttProtocol,
    /// The session's name at the server: keep it stable, and unique among
    /// the server's clients, so the session survives a reconnect.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// Ask the server to keep each message as the topic's retained message.
    #[serde(default)]
    pub retain: bool,
    /// MQTT 5: the user property that carries the record's key (empty: none).
    #[serde(default = "default_key_property")]
    pub key_property: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Extra CA certificates (PEM) trusted, with the system's, for `mqtts://`.
    pub ca_file: Option<PathBuf>,
    /// How long the server keeps the session after a disconnect (MQTT 5;
    /// 3.1.1 servers keep it until the client cleans it).
    #[serde(default = "default_session_expiry", with = "humantime_serde")]
    pub session_expiry: Duration,
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
    /// Records published and not yet acknowledged before the sink stops
    /// taking more (backpressure to CVP).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// How long shutdown waits for outstanding acknowledgements.
    #[serde(default = "default_flush_timeout", with = "humantime_serde")]
    pub flush_timeout: Duration,
    /// Where records the server refuses (an MQTT 5 PUBACK with an error
    /// reason) and failed events (`on_error: dead_letter`) go; sent as the
    /// topic it names, without the template.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub enum MqttProtocol {
    #[default]
    #[serde(rename = "5")]
    V5,
    #[serde(rename = "3.1.1")]
    V311,
}

fn default_template() -> String {
    "{topic}".into()
}
fn default_client_id() -> String {
    "cvp-stream".into()
}
fn default_key_property() -> String {
    "key".into()
}
fn default_session_expiry() -> Duration {
    Duration::from_secs(3600)
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}
fn default_max_in_flight() -> usize {
    1000
}
fn default_flush_timeout() -> Duration {
    Duration::from_secs(30)
}

/// The server part of `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl MqttConfig {
    /// `url` with every default, `topic` the default topic.
    pub fn new(url: impl Into<String>, topic: impl Into<String>) -> MqttConfig {
        MqttConfig {
            url: url.into(),
            topic: topic.into(),
            topic_template: default_template(),
            protocol: MqttProtocol::default(),
            client_id: default_client_id(),
            retain: false,
            key_property: default_key_property(),
            username: None,
            password: None,
            ca_file: None,
            session_expiry: default_session_expiry(),
            keep_alive: default_keep_alive(),
            max_in_flight: default_max_in_flight(),
            flush_timeout: default_flush_timeout(),
            dead_letter_topic: None,
        }
    }

    /// From `demo --sink URL`: the server in the URL (credentials in it
    /// taken out into `username`/`password`), `topic` the default topic.
    pub fn from_url(url: &str, topic: &str) -> Result<MqttConfig> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| anyhow!("--sink {url:?}: use mqtt://HOST:PORT"))?;
        let (userinfo, hostport) = match rest.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, rest),
        };
        let mut cfg = MqttConfig::new(format!("{scheme}://{hostport}"), topic);
        if let Some(u) = userinfo {
            let (user, pass) = u.split_once(':').unwrap_or((u, ""));
            cfg.username = Some(user.to_string());
            if !pass.is_empty() {
                cfg.password = Some(Secret::new(pass));
            }
        }
        cfg.server()?;
        Ok(cfg)
    }

    /// Host, port and TLS from `url`.
    pub fn server(&self) -> Result<Server> {
        let (scheme, rest) = self.url.split_once("://").unwrap_or(("", ""));
        let tls = match scheme {
            "mqtt" | "tcp" => false,
            "mqtts" | "ssl" => true,
            _ => bail!(
                "sink.mqtt.url {:?}: use mqtt://HOST[:PORT] or mqtts://HOST[:PORT]",
                self.url
            ),
        };
        let rest = rest.trim_end_matches('/');
        if rest.contains('@') || rest.contains('/') {
            bail!(
                "sink.mqtt.url {:?}: only the server goes there (credentials go in sink.mqtt.username and password)",
                self.url
            );
        }
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || !p.is_empty() => {
                let port = p.parse::<u16>().map_err(|_| {
                    anyhow!(
                        "sink.mqtt.url {:?}: the port {p:?} is not a number",
                        self.url
                    )
                })?;
                (h, port)
            }
            _ => (rest, default_port),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            bail!("sink.mqtt.url {:?} names no host", self.url);
        }
        Ok(Server {
            host: host.to_string(),
            port,
            tls,
        })
    }

    pub fn validate(&self) -> Result<()> {
        self.server()?;
        if self.topic.trim().is_empty() {
            bail!("sink.mqtt.topic is empty");
        }
        check_template(&self.topic_template)?;
        if self.client_id.is_empty() {
            bail!("sink.mqtt.client_id is empty: a persistent session needs a name");
        }
        if self.max_in_flight == 0 || self.max_in_flight > 65_535 {
            bail!("sink.mqtt.max_in_flight must be between 1 and 65535 (MQTT packet ids)");
        }
        if self.password.is_some() && self.username.is_none() {
            bail!("sink.mqtt.password is set without sink.mqtt.username");
        }
        if self.keep_alive < Duration::from_secs(1) {
            bail!("sink.mqtt.keep_alive must be at least 1s");
        }
        if self.session_expiry.as_secs() > u32::MAX as u64 {
            bail!("sink.mqtt.session_expiry is too long (at most 136 years)");
        }
        if let Some(t) = &self.dead_letter_topic {
            if t.is_empty() || t.contains(['+', '#', '\0']) {
                bail!("sink.mqtt.dead_letter_topic {t:?} is not an MQTT topic name (empty, or with + or #)");
            }
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

/// A template names only `{topic}` and `{key}`, and no wildcard.
fn check_template(t: &str) -> Result<()> {
    if t.is_empty() {
        bail!("sink.mqtt.topic_template is empty");
    }
    let bare = t.replace("{topic}", "").replace("{key}", "");
    if bare.contains(['{', '}']) {
        bail!("sink.mqtt.topic_template {t:?}: only {{topic}} and {{key}} can be filled in");
    }
    if bare.contains(['+', '#', '\0']) {
        bail!("sink.mqtt.topic_template {t:?}: + and # are wildcards, not allowed in a topic name");
    }
    Ok(())
}

/// The MQTT topic for a record: the template filled in, wildcards in the
/// filled-in parts replaced (a topic name must not contain them).
pub fn render_topic(template: &str, topic: &str, key: Option<&[u8]>) -> String {
    let clean = |s: &str| s.replace(['+', '#', '\0'], "_");
    let key = key.map(String::from_utf8_lossy).unwrap_or_default();
    template
        .replace("{topic}", &clean(topic))
        .replace("{key}", &clean(&key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_templates() {
        let c = MqttConfig::from_url("mqtt://u:p@127.0.0.1:1884", "t").unwrap();
        assert_eq!(c.url, "mqtt://127.0.0.1:1884");
        assert_eq!(c.username.as_deref(), Some("u"));
        assert_eq!(c.password.as_ref().map(Secret::expose), Some("p"));
        assert!(!format!("{c:?}").contains(":p@"));
        let s = MqttConfig::new("mqtts://broker", "t").server().unwrap();
        assert_eq!((s.host.as_str(), s.port, s.tls), ("broker", 8883, true));
        assert!(MqttConfig::new("http://x", "t").validate().is_err());
        let mut c = MqttConfig::new("mqtt://x", "t");
        c.topic_template = "cvp/{topic}/{nope}".into();
        assert!(c.validate().is_err());
        c.topic_template = "cvp/+/{key}".into();
        assert!(c.validate().is_err());
        assert_eq!(
            render_topic("cvp/{topic}/{key}", "events", Some(b"a+b#c")),
            "cvp/events/a_b_c"
        );
    }
}
