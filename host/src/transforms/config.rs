//! `transforms:` and `pipeline:`: the chain as the user writes it, and how
//! each entry becomes the engine's [`TransformSpec`].

use super::builtin;
use crate::config::units::de_size;
use crate::delivery::OnError;
use anyhow::{anyhow, bail, Result};
use cvp_transform_engine::{Code, Limits, TransformSpec};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    pub name: String,
    /// A `.wasm` file, or `builtin:NAME`.
    pub path: PathBuf,
    /// Handed to the transform through `host.config()`.
    #[serde(default)]
    pub config: BTreeMap<String, serde_yaml::Value>,
    #[serde(default)]
    pub on_error: OnError,
    #[serde(default)]
    pub limits: LimitsConfig,
}

impl TransformConfig {
    /// A transform with every default: no config, `on_error: drop`.
    pub fn new(name: impl Into<String>, path: impl Into<PathBuf>) -> TransformConfig {
        TransformConfig {
            name: name.into(),
            path: path.into(),
            config: BTreeMap::new(),
            on_error: OnError::default(),
            limits: LimitsConfig::default(),
        }
    }

    /// What the engine loads: the file or built-in, the config as the
    /// string pairs the WIT `config()` returns, the limits.
    pub fn spec(&self) -> Result<TransformSpec> {
        let code = match builtin::lookup(&self.path) {
            Some(found) => Code::Embedded {
                label: self.path.display().to_string(),
                bytes: found.map_err(|e| anyhow!("transform {}: {e}", self.name))?,
            },
            None => Code::File(self.path.clone()),
        };
        Ok(TransformSpec {
            name: self.name.clone(),
            code,
            config: config_pairs(&self.config),
            limits: Limits {
                memory: self.limits.memory,
                timeout: self.limits.timeout,
            },
        })
    }

    /// A relative path is taken from the config file's folder, so a config
    /// works from any working directory.
    pub fn resolve_path(&mut self, base: &Path) {
        let builtin = self
            .path
            .to_str()
            .is_some_and(|p| p.starts_with(builtin::PREFIX));
        if !builtin && self.path.is_relative() && !self.path.exists() {
            self.path = base.join(&self.path);
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.limits.memory < (1 << 20) {
            bail!("transforms[{}].limits.memory is below 1MiB", self.name);
        }
        Ok(())
    }
}

/// YAML config as the string pairs the WIT `config()` returns: scalars as
/// text, lists and maps as JSON.
fn config_pairs(map: &BTreeMap<String, serde_yaml::Value>) -> Vec<(String, String)> {
    map.iter()
        .map(|(k, v)| {
            let text = match v {
                serde_yaml::Value::String(s) => s.clone(),
                serde_yaml::Value::Null => String::new(),
                serde_yaml::Value::Bool(b) => b.to_string(),
                serde_yaml::Value::Number(n) => n.to_string(),
                other => serde_json::to_string(other).unwrap_or_default(),
            };
            (k.clone(), text)
        })
        .collect()
}

/// `limits:` of one transform.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Largest linear memory an instance may grow to, e.g. `64MiB`.
    #[serde(default = "default_memory", deserialize_with = "de_size")]
    pub memory: u64,
    /// Longest a single call into the transform may run.
    #[serde(default = "default_call_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            memory: default_memory(),
            timeout: default_call_timeout(),
        }
    }
}

fn default_memory() -> u64 {
    Limits::default().memory
}
fn default_call_timeout() -> Duration {
    Limits::default().timeout
}

/// The `pipeline:` block.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Most events handed to a transform in one call.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// The value of the record the first transform receives.
    #[serde(default)]
    pub default_value: DefaultValue,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            batch_size: default_batch_size(),
            default_value: DefaultValue::default(),
        }
    }
}

fn default_batch_size() -> usize {
    256
}

/// The value of the default record, the one the first transform receives.
/// Encoding each event as JSON costs about as much as a simple transform
/// (BENCHMARKS.md); a transform that builds its own value does not need it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DefaultValue {
    /// `json`, except for a first transform known to set its own value
    /// (the built-in title-to-key), which gets `none`.
    #[default]
    Auto,
    /// The merged event as protobuf JSON.
    Json,
    /// No value (a Kafka null); for a first transform that sets its own.
    /// With no transforms the value is always JSON.
    None,
}
