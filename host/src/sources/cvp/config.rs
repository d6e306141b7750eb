//! `source.cvp`: where CloudVision is, how to log in and trust it, which
//! operations to forward, and CVP's own server-side filter.

use crate::config::units::enabled;
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
        Ok(())
    }
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
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            enabled: true,
            ca_file: None,
            insecure_skip_verify: false,
            server_name: None,
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
