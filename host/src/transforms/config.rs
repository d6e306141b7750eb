//! `transforms:` and `pipeline:`: the chain as the user writes it, and how
//! each entry becomes the engine's [`TransformSpec`].

use super::builtin;
use crate::config::units::de_size;
use crate::delivery::OnError;
use anyhow::{anyhow, bail, Result};
use cvp_transform_engine::{Code, Limits, OutputLimits, TransformSpec};
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
                output: OutputLimits {
                    records_per_event: self.limits.records_per_event,
                    bytes_per_event: self.limits.bytes_per_event,
                    records_per_batch: self.limits.records_per_batch,
                    bytes_per_batch: self.limits.bytes_per_batch,
                },
                retry_budget: self.limits.retry_budget,
                log_lines_per_second: self.limits.log_lines_per_second,
                log_line_bytes: self.limits.log_line_bytes as usize,
                recycle_memory: self.limits.recycle_memory,
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
        let l = &self.limits;
        let name = &self.name;
        if l.memory < (1 << 20) {
            bail!("transforms[{name}].limits.memory is below 1MiB");
        }
        if l.records_per_event == 0 || l.records_per_batch < l.records_per_event {
            bail!("transforms[{name}].limits.records_per_event must be at least 1 and records_per_batch at least records_per_event");
        }
        if l.bytes_per_event < 1024 || l.bytes_per_batch < l.bytes_per_event {
            bail!("transforms[{name}].limits.bytes_per_event must be at least 1KiB and bytes_per_batch at least bytes_per_event");
        }
        if l.log_line_bytes < 64 {
            bail!("transforms[{name}].limits.log_line_bytes must be at least 64B");
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
    /// Most records one event may become in this transform; beyond it the
    /// event fails (reason `output`) under `on_error`.
    #[serde(default = "default_records_per_event")]
    pub records_per_event: u64,
    /// Most bytes (topics, keys, values, headers, and what the host spends
    /// per record) one event's records may take.
    #[serde(default = "default_bytes_per_event", deserialize_with = "de_size")]
    pub bytes_per_event: u64,
    /// The same for all the events of one call (a batch); the events that
    /// would pass it go on in the next call, after the others reach the
    /// sink.
    #[serde(default = "default_records_per_batch")]
    pub records_per_batch: u64,
    #[serde(default = "default_bytes_per_batch", deserialize_with = "de_size")]
    pub bytes_per_batch: u64,
    /// Longest a batch may spend retrying its events one by one after a
    /// fault; the events not reached go on in the next call.
    #[serde(default = "default_retry_budget", with = "humantime_serde")]
    pub retry_budget: Duration,
    /// Guest log lines allowed per second (and in a burst); the rest are
    /// counted, not written.
    #[serde(default = "default_log_lines_per_second")]
    pub log_lines_per_second: u32,
    /// Longest guest log line written; longer ones are cut.
    #[serde(default = "default_log_line_bytes", deserialize_with = "de_size")]
    pub log_line_bytes: u64,
    /// An instance whose linear memory passed this is replaced by a fresh
    /// one after its call (linear memory never shrinks); never below twice
    /// what a fresh instance holds.
    #[serde(default = "default_recycle_memory", deserialize_with = "de_size")]
    pub recycle_memory: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            memory: default_memory(),
            timeout: default_call_timeout(),
            records_per_event: default_records_per_event(),
            bytes_per_event: default_bytes_per_event(),
            records_per_batch: default_records_per_batch(),
            bytes_per_batch: default_bytes_per_batch(),
            retry_budget: default_retry_budget(),
            log_lines_per_second: default_log_lines_per_second(),
            log_line_bytes: default_log_line_bytes(),
            recycle_memory: default_recycle_memory(),
        }
    }
}

fn default_recycle_memory() -> u64 {
    Limits::default().recycle_memory
}

fn default_records_per_event() -> u64 {
    OutputLimits::default().records_per_event
}
fn default_bytes_per_event() -> u64 {
    OutputLimits::default().bytes_per_event
}
fn default_records_per_batch() -> u64 {
    OutputLimits::default().records_per_batch
}
fn default_bytes_per_batch() -> u64 {
    OutputLimits::default().bytes_per_batch
}
fn default_retry_budget() -> Duration {
    Limits::default().retry_budget
}
fn default_log_lines_per_second() -> u32 {
    Limits::default().log_lines_per_second
}
fn default_log_line_bytes() -> u64 {
    Limits::default().log_line_bytes as u64
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
    /// Most bytes of records the transform stage may have handed on that
    /// the sink has not taken over yet; past it the stage waits (and so
    /// does reading from CVP). The sink's own queue bound adds to it.
    #[serde(default = "default_max_pending_bytes", deserialize_with = "de_size")]
    pub max_pending_bytes: u64,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            batch_size: default_batch_size(),
            default_value: DefaultValue::default(),
            max_pending_bytes: default_max_pending_bytes(),
        }
    }
}

fn default_max_pending_bytes() -> u64 {
    // As much as the Kafka sink's queue (max_queue_size) holds.
    8 << 20
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
