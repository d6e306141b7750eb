//! `source.cvp`: where CloudVision is, how to log in and trust it, which
//! operations to forward, CVP's own server-side filter, and what to join
//! onto each event from CVP's inventory and tags (`enrich`).

use crate::config::units::{de_size, enabled};
use crate::event::Op;
use crate::secret::Secret;
use anyhow::{bail, Result};
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CvpConfig {
    /// `host:port`; the port defaults to 443.
    pub address: String,
    /// A service-account token. When no credential is configured at all, the
    /// `CVP_TOKEN` environment variable is used.
    pub token: Option<Secret>,
    pub token_file: Option<PathBuf>,
    pub username: Option<String>,
    /// Better given as `${CVP_PASSWORD}`, or left out to read `CVP_PASSWORD`.
    pub password: Option<Secret>,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default = "default_operations")]
    pub operations: Vec<Op>,
    #[serde(default)]
    pub filter: FilterConfig,
    /// How many full events to keep for merging partial updates.
    #[serde(default = "default_cache_size")]
    pub cache_size: usize,
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest wait between reconnect attempts.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// How far in the future an event may be dated (clock skew between
    /// CVP, its devices and this host) and still move the resume point.
    #[serde(default = "default_future_tolerance", with = "humantime_serde")]
    pub future_tolerance: Duration,
    /// How long the start of a subscription may take (connection, login,
    /// CVP's answer to Subscribe) before it is abandoned and retried.
    #[serde(default = "default_subscribe_timeout", with = "humantime_serde")]
    pub subscribe_timeout: Duration,
    /// `/health` fails once the source has waited this long for CVP
    /// without progress (a subscription starting, or an initial sync that
    /// stopped sending), so an orchestrator restarts it.
    #[serde(default = "default_stuck_after", with = "humantime_serde")]
    pub stuck_after: Duration,
    /// Largest event taken (its protobuf size, merged with its updates);
    /// a larger one goes to the dead-letter topic with its key only.
    #[serde(default = "default_max_event_size", deserialize_with = "de_size")]
    pub max_event_size: u64,
    /// Largest gRPC message read at all: above it CVP's stream fails (the
    /// message cannot even be read for its key) and is retried.
    #[serde(default = "default_max_message_size", deserialize_with = "de_size")]
    pub max_message_size: u64,
    /// How many bytes of events the merge cache holds, besides `cache_size`
    /// entries (whichever bound is reached first evicts).
    #[serde(default = "default_cache_max_bytes", deserialize_with = "de_size")]
    pub cache_max_bytes: u64,
    /// Join each event with CVP's inventory and tags (off when absent).
    pub enrich: Option<EnrichConfig>,
}

impl CvpConfig {
    /// A plaintext or TLS CVP at `address` with every default.
    pub fn new(address: impl Into<String>) -> CvpConfig {
        CvpConfig {
            address: address.into(),
            token: None,
            token_file: None,
            username: None,
            password: None,
            tls: TlsConfig::default(),
            operations: default_operations(),
            filter: FilterConfig::default(),
            cache_size: default_cache_size(),
            connect_timeout: default_connect_timeout(),
            max_backoff: default_max_backoff(),
            future_tolerance: default_future_tolerance(),
            subscribe_timeout: default_subscribe_timeout(),
            stuck_after: default_stuck_after(),
            max_event_size: default_max_event_size(),
            max_message_size: default_max_message_size(),
            cache_max_bytes: default_cache_max_bytes(),
            enrich: None,
        }
    }

    /// Checks what can be checked without connecting; takes the password
    /// from `CVP_PASSWORD` when a username has none.
    pub fn validate(&mut self) -> Result<()> {
        if self.address.trim().is_empty() {
            bail!("source.cvp.address is empty");
        }
        if self.username.is_some() && self.password.is_none() {
            match std::env::var("CVP_PASSWORD") {
                Ok(pw) => self.password = Some(Secret::new(pw)),
                Err(_) => bail!("source.cvp.username is set but no password: set CVP_PASSWORD or source.cvp.password"),
            }
        }
        let credentials = [
            self.token.is_some(),
            self.token_file.is_some(),
            self.username.is_some(),
        ];
        if credentials.iter().filter(|c| **c).count() > 1 {
            bail!("source.cvp: give only one of token, token_file and username/password");
        }
        if self.operations.is_empty() {
            bail!("source.cvp.operations is empty: nothing would be forwarded (use [updated])");
        }
        if self.cache_size == 0 {
            bail!("source.cvp.cache_size must be at least 1");
        }
        if self.subscribe_timeout.is_zero() || self.stuck_after.is_zero() {
            bail!("source.cvp.subscribe_timeout and stuck_after must be more than 0");
        }
        if self.max_event_size == 0 || self.max_event_size > self.max_message_size {
            bail!(
                "source.cvp.max_event_size ({}) must be more than 0 and at most max_message_size ({})",
                self.max_event_size,
                self.max_message_size
            );
        }
        if self.max_message_size > u64::from(u32::MAX) {
            bail!("source.cvp.max_message_size must be under 4GiB (gRPC's limit)");
        }
        if self.cache_max_bytes < self.max_event_size {
            bail!(
                "source.cvp.cache_max_bytes ({}) must be at least max_event_size ({}): the largest event must fit",
                self.cache_max_bytes,
                self.max_event_size
            );
        }
        if let Some(enrich) = &self.enrich {
            enrich.validate()?;
        }
        self.check_cleartext_credentials()
    }

    /// Without TLS a token or password crosses the network readable by
    /// anyone on the path: refused unless CVP is on this machine or the
    /// user says the network is trusted (then a warning, as for
    /// `insecure_skip_verify`).
    fn check_cleartext_credentials(&self) -> Result<()> {
        let credential = if self.username.is_some() {
            "password"
        } else if self.token.is_some()
            || self.token_file.is_some()
            || std::env::var_os("CVP_TOKEN").is_some()
        {
            "token"
        } else {
            return Ok(());
        };
        if self.tls.enabled || is_loopback(&self.address) {
            return Ok(());
        }
        if !self.tls.allow_plaintext_credentials {
            bail!(
                "source.cvp.tls.enabled is false, so the {credential} would cross the network to {} in cleartext: enable TLS (and set tls.ca_file for a private CA), or set source.cvp.tls.allow_plaintext_credentials: true on a network you trust",
                self.address
            );
        }
        tracing::warn!(
            "source.cvp.tls.enabled is false: the {credential} goes to {} in cleartext (allow_plaintext_credentials is on)",
            self.address
        );
        Ok(())
    }
}

/// `source.cvp.enrich`: which of CVP's inventory and tags to join onto each
/// event (`enrichment.rs`), how much of them to keep, and the event's link
/// in CVP's UI. The subscriptions share the event stream's address,
/// credentials and TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrichConfig {
    /// Subscribe to `arista.inventory.v1.DeviceService` (hostname, model,
    /// software version, ...).
    #[serde(default = "enabled")]
    pub inventory: bool,
    /// The tag labels to keep (`[site, role, circuit-id]`); `["*"]` keeps
    /// every label; empty: no tag subscription.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Which creators' tags to keep: `user`, `system`, `external`.
    #[serde(default = "default_tag_creators")]
    pub tag_creators: Vec<CreatorName>,
    /// Most devices held; more are counted and left out.
    #[serde(default = "default_max_devices")]
    pub max_devices: usize,
    /// Most tag assignments (device and interface) held; more are counted
    /// and left out.
    #[serde(default = "default_max_tag_assignments")]
    pub max_tag_assignments: usize,
    /// How long the event stream waits at start-up for the inventory and
    /// tags' initial sync; events go on unenriched after that.
    #[serde(default = "default_sync_timeout", with = "humantime_serde")]
    pub sync_timeout: Duration,
    /// CVP's UI, for the event's link (default: `https://` and
    /// `source.cvp.address`, without the port when it is 443). Set it for a
    /// proxy or a UI on another host.
    pub ui_url: Option<String>,
    /// The link: `{ui_url}`, `{key}` (the event key, percent-encoded) and
    /// `{timestamp}` (the key's timestamp, ns since the epoch) are
    /// replaced. Empty: no link.
    #[serde(default = "default_link_template")]
    pub link_template: String,
}

/// `arista.tag.v2.CreatorType`, as the config names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CreatorName {
    User,
    System,
    External,
}

impl Default for EnrichConfig {
    fn default() -> Self {
        EnrichConfig {
            inventory: true,
            tags: Vec::new(),
            tag_creators: default_tag_creators(),
            max_devices: default_max_devices(),
            max_tag_assignments: default_max_tag_assignments(),
            sync_timeout: default_sync_timeout(),
            ui_url: None,
            link_template: default_link_template(),
        }
    }
}

impl EnrichConfig {
    /// Checks without connecting.
    pub fn validate(&self) -> Result<()> {
        if !self.inventory && self.tags.is_empty() {
            bail!("source.cvp.enrich has inventory: false and no tags: it would join nothing (remove the block, or name tags such as [site, role])");
        }
        if let Some(bad) = self.tags.iter().find(|t| t.trim().is_empty()) {
            bail!("source.cvp.enrich.tags has an empty label ({bad:?})");
        }
        if self.tags.len() > 1 && self.tags.iter().any(|t| t == "*") {
            bail!("source.cvp.enrich.tags: \"*\" keeps every label, so it stands alone");
        }
        if !self.tags.is_empty() && self.tag_creators.is_empty() {
            bail!("source.cvp.enrich.tag_creators is empty: no tag would be kept");
        }
        if self.max_devices == 0 || self.max_tag_assignments == 0 {
            bail!("source.cvp.enrich.max_devices and max_tag_assignments must be at least 1");
        }
        if self.sync_timeout > Duration::from_secs(600) {
            bail!(
                "source.cvp.enrich.sync_timeout is at most 10m: events wait that long at start-up"
            );
        }
        if let Some(url) = &self.ui_url {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                bail!("source.cvp.enrich.ui_url {url:?} must start with https:// or http://");
            }
        }
        if !self.link_template.is_empty() && !self.link_template.contains("{key}") {
            bail!("source.cvp.enrich.link_template must contain {{key}} (or be empty for no link)");
        }
        Ok(())
    }

    /// Whether a tag with `label` from `creator` is kept.
    pub fn keeps_tag(&self, label: &str, creator: CreatorName) -> bool {
        self.tag_creators.contains(&creator) && self.tags.iter().any(|t| t == "*" || t == label)
    }
}

fn default_tag_creators() -> Vec<CreatorName> {
    vec![
        CreatorName::User,
        CreatorName::System,
        CreatorName::External,
    ]
}
fn default_max_devices() -> usize {
    // A large CVP manages a few thousand devices; 10,000 with tags fit in
    // a few MiB (BENCHMARKS.md).
    50_000
}
fn default_max_tag_assignments() -> usize {
    // 100,000 interface tags take about 20 MiB (BENCHMARKS.md).
    500_000
}
fn default_sync_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_link_template() -> String {
    "{ui_url}/cv/events/{key}?timestamp={timestamp}".into()
}

/// Whether `address` (`host[:port]`, `[v6]:port`) names this machine, by
/// the literal: a name is not resolved (it may resolve elsewhere later).
fn is_loopback(address: &str) -> bool {
    let host = match address.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None if address.matches(':').count() > 1 => address,
        None => address.split(':').next().unwrap_or(""),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// Extra CA certificates (PEM), trusted in addition to the system roots.
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate. For lab CVPs with self-signed certificates only.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// The name to verify the certificate against, when it differs from the
    /// host in `address` (e.g. connecting by IP).
    pub server_name: Option<String>,
    /// With `enabled: false`, send the token or password to a CVP that is
    /// not on this machine anyway (refused otherwise: it travels readable).
    #[serde(default)]
    pub allow_plaintext_credentials: bool,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            enabled: true,
            ca_file: None,
            insecure_skip_verify: false,
            server_name: None,
            allow_plaintext_credentials: false,
        }
    }
}

/// Server-side filter: CVP only sends events matching it. Within a list the
/// values are alternatives; the lists combine with AND.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    #[serde(default)]
    pub severity: Vec<SeverityName>,
    #[serde(default)]
    pub event_type: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeverityName {
    #[serde(alias = "DEBUG")]
    Debug,
    #[serde(alias = "INFO")]
    Info,
    #[serde(alias = "WARNING")]
    Warning,
    #[serde(alias = "ERROR")]
    Error,
    #[serde(alias = "CRITICAL")]
    Critical,
}

fn default_operations() -> Vec<Op> {
    vec![Op::Updated]
}
fn default_cache_size() -> usize {
    // A cache that keeps churning costs about 4 KiB an event of peak memory
    // (mimalloc; BENCHMARKS.md): 10,000 keeps a 1M-event burst near 70 MiB.
    10_000
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}
fn default_future_tolerance() -> Duration {
    // NTP keeps clocks within milliseconds; a minute covers a badly kept
    // device and costs, at worst, a minute of resume point.
    Duration::from_secs(60)
}
fn default_subscribe_timeout() -> Duration {
    // CVP answers Subscribe at once (its state follows the headers).
    Duration::from_secs(30)
}
fn default_stuck_after() -> Duration {
    Duration::from_secs(300)
}
fn default_max_event_size() -> u64 {
    // Events are a few KiB; Kafka's default record limit is 1 MB, and the
    // JSON value is larger than the protobuf.
    1 << 20
}
fn default_max_message_size() -> u64 {
    64 << 20
}
fn default_cache_max_bytes() -> u64 {
    // 10,000 typical events take a few MiB; this bound is for big ones.
    64 << 20
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plaintext(address: &str) -> CvpConfig {
        let mut c = CvpConfig::new(address);
        c.tls.enabled = false;
        c.token = Some(Secret::new("t0ken"));
        c
    }

    #[test]
    fn credentials_in_cleartext_only_to_this_machine_or_when_allowed() {
        for here in [
            "127.0.0.1:8443",
            "localhost",
            "[::1]:443",
            "::1",
            "127.0.0.2",
        ] {
            plaintext(here).validate().unwrap();
        }
        for away in [
            "10.0.0.5:443",
            "cvp.example.com",
            "[2001:db8::1]:443",
            "localhost.evil.example:443",
        ] {
            let e = plaintext(away).validate().unwrap_err().to_string();
            assert!(e.contains("token would cross the network"), "{away}: {e}");
            assert!(!e.contains("t0ken"), "{e}");
            let mut allowed = plaintext(away);
            allowed.tls.allow_plaintext_credentials = true;
            allowed.validate().unwrap();
        }
        let mut tls = plaintext("10.0.0.5:443");
        tls.tls.enabled = true;
        tls.validate().unwrap();
    }

    /// The enrich block: what it may say, and one line for what it may not.
    #[test]
    fn the_enrich_block_is_checked_offline() {
        let parse = |yaml: &str| -> Result<CvpConfig> {
            let mut c: CvpConfig = serde_yaml::from_str(yaml)?;
            c.validate()?;
            Ok(c)
        };
        let base = "address: 127.0.0.1:1\ntoken: t\ntls: { enabled: false }\n";
        let ok = parse(&format!(
            "{base}enrich: {{ tags: [site, role], tag_creators: [user], max_devices: 10, sync_timeout: 2s, ui_url: 'https://ui' }}"
        ))
        .unwrap();
        let e = ok.enrich.unwrap();
        assert!(e.inventory && e.keeps_tag("site", CreatorName::User));
        assert!(
            !e.keeps_tag("site", CreatorName::System) && !e.keeps_tag("pod", CreatorName::User)
        );
        for (block, says) in [
            ("{ inventory: false }", "would join nothing"),
            ("{ tags: [site, '*'] }", "stands alone"),
            ("{ tags: [''] }", "empty label"),
            ("{ max_devices: 0 }", "at least 1"),
            ("{ ui_url: 'cvp.example.com' }", "must start with https://"),
            ("{ link_template: '{ui_url}/x' }", "must contain {key}"),
            ("{ sync_timeout: 1h }", "at most 10m"),
            ("{ tags: [site], tag_creators: [] }", "no tag would be kept"),
            ("{ tag: [site] }", "unknown field `tag`"),
        ] {
            let e = parse(&format!("{base}enrich: {block}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{block}: {e}");
        }
    }
}
