//! The YAML configuration: its shape, `${ENV}` interpolation, defaults, and
//! the Go seed tool's older `kafka_broker`/`kafka_topic` file.
//!
//! Every struct denies unknown keys so a typo is an error that names the key
//! and its line instead of a setting silently ignored.

use crate::secret::Secret;
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub source: SourceConfig,
    #[serde(default)]
    pub transforms: Vec<TransformConfig>,
    pub sink: SinkConfig,
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// The HTTP endpoint for Prometheus and health probes; off when absent.
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// Where delivery progress is kept across restarts; off when absent.
    #[serde(default)]
    pub checkpoint: Option<CheckpointConfig>,
    /// Cases for `cvp-stream test`; `run` ignores them.
    #[serde(default)]
    pub tests: Vec<TestCase>,
}

/// One case of `cvp-stream test`: an event in, the records expected out.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestCase {
    pub name: String,
    /// The event as CVP sends it, in protobuf JSON (as in a recording).
    pub event: serde_yaml::Value,
    #[serde(default = "default_test_operation")]
    pub operation: Op,
    /// The records, in order (`[]`: dropped). Fields left out are not checked.
    pub expect: Option<Vec<ExpectedRecord>>,
    /// Instead of records: a transform fails with a message containing this.
    pub expect_error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedRecord {
    pub topic: Option<String>,
    pub key: Option<String>,
    pub value: Option<String>,
    /// The value parsed as JSON equals this (key order does not matter).
    pub value_json: Option<serde_yaml::Value>,
    /// These headers, exactly (as text).
    pub headers: Option<BTreeMap<String, String>>,
}

fn default_test_operation() -> Op {
    Op::Updated
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    pub cvp: CvpConfig,
}

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    #[serde(default = "yes")]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Initial,
    Updated,
    Deleted,
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

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransformConfig {
    pub name: String,
    pub path: PathBuf,
    /// Handed to the transform through `host.config()`.
    #[serde(default)]
    pub config: BTreeMap<String, serde_yaml::Value>,
    #[serde(default)]
    pub on_error: OnError,
    #[serde(default)]
    pub limits: Limits,
}

/// What happens to an event when a transform traps, times out, runs out of
/// memory or returns an error for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnError {
    /// Log the error with the event key and go on with the next event.
    #[default]
    Drop,
    /// Stop the pipeline (exit non-zero) without producing the event.
    Stop,
    /// Produce the event (as JSON) to `sink.kafka.dead_letter_topic`, with
    /// headers saying which transform failed and why, and go on.
    DeadLetter,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest linear memory an instance may grow to, e.g. `64MiB`.
    #[serde(default = "default_memory", deserialize_with = "de_size")]
    pub memory: u64,
    /// Longest a single call into the transform may run.
    #[serde(default = "default_call_timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: default_memory(),
            timeout: default_call_timeout(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    pub kafka: KafkaConfig,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    pub brokers: String,
    pub topic: String,
    /// Passed to librdkafka as they are (SASL, SSL, batching, ...), after
    /// and so over our defaults.
    #[serde(default)]
    pub properties: BTreeMap<String, Scalar>,
    /// How long shutdown waits for outstanding deliveries.
    #[serde(default = "default_flush_timeout", with = "humantime_serde")]
    pub flush_timeout: Duration,
    /// Where records go that cannot be delivered (too large, topic not
    /// authorised) and events whose transform failed with `on_error:
    /// dead_letter`. Without it such records are logged and counted.
    #[serde(default)]
    pub dead_letter_topic: Option<String>,
    /// Most data librdkafka queues while Kafka is slow or down; when full,
    /// the host stops reading from CVP (backpressure) instead of growing.
    #[serde(default = "default_queue_size", deserialize_with = "de_size")]
    pub max_queue_size: u64,
}

fn default_queue_size() -> u64 {
    // Each queued record costs librdkafka and the sink several times its
    // payload; 8 MiB of payload is ~15,000 records, plenty to batch.
    8 << 20
}

/// Progress that survives a restart: the last event Kafka fully
/// acknowledged (in order), written atomically and fsynced.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    pub path: PathBuf,
    /// How often it is written while events flow (and always at shutdown).
    #[serde(default = "default_checkpoint_interval", with = "humantime_serde")]
    pub interval: Duration,
}

fn default_checkpoint_interval() -> Duration {
    Duration::from_secs(1)
}

/// `/metrics` (Prometheus), `/health` (the process is up) and `/ready`
/// (connected to CVP, Kafka reachable, transforms loaded).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// host:port, e.g. `0.0.0.0:9464` (9464 is the port Prometheus's
    /// exporter registry suggests for this kind of service).
    pub listen: std::net::SocketAddr,
}

#[derive(Debug, Deserialize)]
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

/// A YAML scalar written as text, so `linger.ms: 5` and `"5"` both work.
#[derive(Debug, Clone)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_yaml::Value::deserialize(d)? {
            serde_yaml::Value::String(s) => Ok(Scalar(s)),
            serde_yaml::Value::Number(n) => Ok(Scalar(n.to_string())),
            serde_yaml::Value::Bool(b) => Ok(Scalar(b.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "expected a string, number or boolean, found {}",
                yaml_kind(&other)
            ))),
        }
    }
}

fn yaml_kind(v: &serde_yaml::Value) -> &'static str {
    match v {
        serde_yaml::Value::Null => "nothing",
        serde_yaml::Value::Bool(_) => "a boolean",
        serde_yaml::Value::Number(_) => "a number",
        serde_yaml::Value::String(_) => "a string",
        serde_yaml::Value::Sequence(_) => "a list",
        serde_yaml::Value::Mapping(_) => "a map",
        serde_yaml::Value::Tagged(_) => "a tagged value",
    }
}

mod humantime_serde {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!("bad duration {s:?} ({e}); use e.g. 500ms, 10s, 2m"))
        })
    }
}

/// Sizes such as `64MiB`, `512KiB`, `1GiB`, or a plain number of bytes.
fn de_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let Scalar(s) = Scalar::deserialize(d)?;
    parse_size(&s)
        .ok_or_else(|| serde::de::Error::custom(format!("bad size {s:?}; use e.g. 64MiB")))
}

pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" => 1 << 10,
        "MiB" | "M" | "MB" => 1 << 20,
        "GiB" | "G" | "GB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn yes() -> bool {
    true
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
fn default_memory() -> u64 {
    128 << 20
}
fn default_call_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_flush_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_batch_size() -> usize {
    256
}

/// The Go seed's file: `kafka_broker` and `kafka_topic`, with CVP given on
/// the command line.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedFile {
    kafka_broker: String,
    kafka_topic: String,
}

/// What the seed's command line supplied (`--server`, `--username`, ...).
#[derive(Debug, Default)]
pub struct SeedArgs {
    pub server: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
}

impl Config {
    /// Reads, interpolates and parses a config file. Errors name the file,
    /// and the line where the YAML is wrong.
    pub fn load(path: &Path, seed: &SeedArgs) -> Result<Config> {
        let raw = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        Self::parse(&raw, seed).with_context(|| format!("config {}", path.display()))
    }

    pub fn parse(raw: &str, seed: &SeedArgs) -> Result<Config> {
        let text = interpolate(raw, |name| std::env::var(name).ok())?;
        let mut config = if is_seed_file(&text) {
            let file: SeedFile = serde_yaml::from_str(&text).map_err(yaml_error)?;
            Config::from_seed(file, seed)?
        } else {
            serde_yaml::from_str::<Config>(&text).map_err(yaml_error)?
        };
        config.apply_seed_args(seed);
        config.validate()?;
        Ok(config)
    }

    fn from_seed(file: SeedFile, seed: &SeedArgs) -> Result<Config> {
        let Some(server) = seed.server.clone() else {
            bail!("this is a seed-style file (kafka_broker/kafka_topic): give CVP with --server HOST:PORT");
        };
        // The seed's `kafka_broker: "127.0.0.1"` carried no port.
        let brokers = if file.kafka_broker.contains(':') {
            file.kafka_broker
        } else {
            format!("{}:9092", file.kafka_broker)
        };
        // The seed wrote key = title, value = description: the stock transform.
        let yaml = format!(
            "source: {{ cvp: {{ address: {server:?} }} }}\ntransforms: [ {{ name: title-to-key, path: {:?} }} ]\nsink: {{ kafka: {{ brokers: {brokers:?}, topic: {:?} }} }}\n",
            crate::transform::builtin::TITLE_TO_KEY_PATH,
            file.kafka_topic
        );
        serde_yaml::from_str(&yaml).map_err(yaml_error)
    }

    fn apply_seed_args(&mut self, seed: &SeedArgs) {
        let cvp = &mut self.source.cvp;
        if let Some(server) = &seed.server {
            cvp.address = server.clone();
        }
        if let Some(user) = &seed.username {
            cvp.username = Some(user.clone());
        }
        if let Some(pw) = &seed.password {
            cvp.password = Some(pw.clone());
        }
    }

    fn validate(&mut self) -> Result<()> {
        let cvp = &mut self.source.cvp;
        if cvp.address.trim().is_empty() {
            bail!("source.cvp.address is empty");
        }
        if cvp.username.is_some() && cvp.password.is_none() {
            match std::env::var("CVP_PASSWORD") {
                Ok(pw) => cvp.password = Some(Secret::new(pw)),
                Err(_) => bail!("source.cvp.username is set but no password: set CVP_PASSWORD or source.cvp.password"),
            }
        }
        let credentials = [
            cvp.token.is_some(),
            cvp.token_file.is_some(),
            cvp.username.is_some(),
        ];
        if credentials.iter().filter(|c| **c).count() > 1 {
            bail!("source.cvp: give only one of token, token_file and username/password");
        }
        if cvp.operations.is_empty() {
            bail!("source.cvp.operations is empty: nothing would be forwarded (use [updated])");
        }
        if cvp.cache_size == 0 {
            bail!("source.cvp.cache_size must be at least 1");
        }
        if self.sink.kafka.topic.trim().is_empty() {
            bail!("sink.kafka.topic is empty");
        }
        if self.pipeline.batch_size == 0 {
            bail!("pipeline.batch_size must be at least 1");
        }
        if let Some(t) = self
            .transforms
            .iter()
            .find(|t| t.on_error == OnError::DeadLetter)
        {
            if self.sink.kafka.dead_letter_topic.is_none() {
                bail!(
                    "transform {:?} has on_error: dead_letter but sink.kafka.dead_letter_topic is not set",
                    t.name
                );
            }
        }
        if let Some(cp) = &self.checkpoint {
            let dir = cp.path.parent().filter(|d| !d.as_os_str().is_empty());
            if let Some(dir) = dir.filter(|d| !d.is_dir()) {
                bail!(
                    "checkpoint.path {}: the directory {} does not exist",
                    cp.path.display(),
                    dir.display()
                );
            }
        }
        if self.sink.kafka.max_queue_size < 1 << 20 {
            bail!("sink.kafka.max_queue_size must be at least 1MiB");
        }
        for t in &self.tests {
            if t.expect.is_some() == t.expect_error.is_some() {
                bail!(
                    "tests: {:?} needs exactly one of expect and expect_error",
                    t.name
                );
            }
        }
        let mut names = std::collections::HashSet::new();
        for t in &self.transforms {
            if !names.insert(t.name.as_str()) {
                bail!(
                    "transforms: the name {:?} is used twice; names must be unique",
                    t.name
                );
            }
            if t.limits.memory < (1 << 20) {
                bail!("transforms[{}].limits.memory is below 1MiB", t.name);
            }
        }
        Ok(())
    }

    /// Resolves relative transform paths against the config file's folder,
    /// so a config works from any working directory.
    pub fn resolve_paths(&mut self, base: &Path) {
        for t in &mut self.transforms {
            let builtin = t
                .path
                .to_str()
                .is_some_and(|p| p.starts_with(crate::transform::builtin::PREFIX));
            if !builtin && t.path.is_relative() && !t.path.exists() {
                t.path = base.join(&t.path);
            }
        }
    }
}

fn is_seed_file(text: &str) -> bool {
    matches!(
        serde_yaml::from_str::<serde_yaml::Value>(text),
        Ok(serde_yaml::Value::Mapping(m)) if m.contains_key("kafka_broker") || m.contains_key("kafka_topic")
    )
}

/// serde_yaml already says "at line L column C"; keep it on one line.
fn yaml_error(e: serde_yaml::Error) -> anyhow::Error {
    anyhow::anyhow!("{}", e.to_string().replace('\n', " "))
}

/// Replaces `${NAME}` and `${NAME:-default}` with environment values before
/// parsing, line by line so that a missing variable is reported with its line.
/// `$${` escapes a literal `${`.
pub fn interpolate(raw: &str, env: impl Fn(&str) -> Option<String>) -> Result<String> {
    let mut out = String::with_capacity(raw.len());
    for (lineno, line) in raw.split_inclusive('\n').enumerate() {
        // Comments are left alone: documentation that mentions `${NAME}`
        // must not demand that NAME be set.
        let (line, comment) = line.split_at(comment_start(line));
        let mut rest = line;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos..];
            if let Some(stripped) = after.strip_prefix("$${") {
                out.push_str("${");
                rest = stripped;
            } else if let Some(body) = after.strip_prefix("${") {
                let Some(end) = body.find('}') else {
                    bail!("line {}: unclosed ${{ in {:?}", lineno + 1, line.trim_end());
                };
                let expr = &body[..end];
                let (name, default) = match expr.split_once(":-") {
                    Some((n, d)) => (n, Some(d)),
                    None => (expr, None),
                };
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    bail!(
                        "line {}: bad variable name {:?} in ${{...}}",
                        lineno + 1,
                        name
                    );
                }
                match (env(name), default) {
                    (Some(v), _) => out.push_str(&v),
                    (None, Some(d)) => out.push_str(d),
                    (None, None) => bail!(
                        "line {}: environment variable {name} is not set (use ${{{name}:-default}} for a default)",
                        lineno + 1
                    ),
                }
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = &after[1..];
            }
        }
        out.push_str(rest);
        out.push_str(comment);
    }
    Ok(out)
}

/// Where a YAML comment begins on `line` (its length if none): a `#` at
/// the start or after white space, outside quotes.
fn comment_start(line: &str) -> usize {
    let mut quote = None;
    let mut prev = ' ';
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '#') if prev.is_whitespace() => return i,
            (None, '"' | '\'') => quote = Some(c),
            // In double quotes a backslash escapes the next character.
            (Some('"'), '\\') if prev != '\\' => {}
            (Some(q), c) if c == q && !(q == '"' && prev == '\\') => quote = None,
            _ => {}
        }
        prev = if prev == '\\' && c == '\\' { ' ' } else { c };
    }
    line.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "source: { cvp: { address: \"cvp:443\", token: abc } }\nsink: { kafka: { brokers: \"b:9092\", topic: t } }\n";

    #[test]
    fn comments_are_not_interpolated() {
        let env = |n: &str| (n == "SET").then(|| "v".to_string());
        let text = "a: ${SET} # not ${UNSET}\n# ${UNSET} either\nb: \"x # ${SET}\"\nc: 'it''s ${SET}' # ${UNSET}\nd: x#${SET}\n";
        assert_eq!(
            interpolate(text, env).unwrap(),
            "a: v # not ${UNSET}\n# ${UNSET} either\nb: \"x # v\"\nc: 'it''s v' # ${UNSET}\nd: x#v\n"
        );
    }

    /// Every shipped example parses, with the environment it documents.
    #[test]
    fn shipped_examples_parse() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let seed = SeedArgs {
            server: Some("cvp.example.com:443".into()),
            ..SeedArgs::default()
        };
        for file in [
            "config/example.yaml",
            "config/seed.yaml",
            "config/pipeline-tests.yaml",
            "deploy/systemd/config.yaml",
        ] {
            let raw = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
            let text = interpolate(&raw, |n| Some(format!("value-of-{n}"))).unwrap();
            Config::parse(&text, &seed).unwrap_or_else(|e| panic!("{file}: {e:#}"));
            // Variables named only in comments are not required.
            interpolate(&raw, |_| None).unwrap_or_else(|e| panic!("{file}: {e:#}"));
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(MINIMAL, &SeedArgs::default()).unwrap();
        assert_eq!(c.source.cvp.operations, vec![Op::Updated]);
        assert!(c.source.cvp.tls.enabled);
        assert_eq!(c.pipeline.batch_size, 256);
        assert!(c.transforms.is_empty());
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let raw = "source:\n  cvp:\n    address: x\n    tokn: abc\nsink: { kafka: { brokers: b, topic: t } }\n";
        let err = format!(
            "{:#}",
            Config::parse(raw, &SeedArgs::default()).unwrap_err()
        );
        assert!(err.contains("unknown field `tokn`"), "{err}");
        assert!(err.contains("line 4"), "{err}");
    }

    #[test]
    fn interpolation_with_defaults_and_escapes() {
        let env = |n: &str| (n == "A").then(|| "1".to_string());
        assert_eq!(
            interpolate("x: ${A} ${B:-2} $${C} $5\n", env).unwrap(),
            "x: 1 2 ${C} $5\n"
        );
        let err = interpolate("a: 1\nb: ${MISSING}\n", env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") && err.contains("MISSING"), "{err}");
    }

    #[test]
    fn seed_file_with_seed_flags() {
        let seed = SeedArgs {
            server: Some("cvp.lab:8443".into()),
            username: Some("ansible".into()),
            password: Some(Secret::new("pw")),
        };
        let c = Config::parse(
            "kafka_broker: \"127.0.0.1\"\nkafka_topic: \"test\"\n",
            &seed,
        )
        .unwrap();
        assert_eq!(c.sink.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(c.sink.kafka.topic, "test");
        assert_eq!(c.source.cvp.address, "cvp.lab:8443");
        assert_eq!(c.source.cvp.username.as_deref(), Some("ansible"));
        assert_eq!(c.transforms[0].path, Path::new("builtin:title-to-key"));
        let err =
            Config::parse("kafka_broker: x\nkafka_topic: t\n", &SeedArgs::default()).unwrap_err();
        assert!(err.to_string().contains("--server"));
    }

    #[test]
    fn sizes_and_limits() {
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("12 parsecs"), None);
        let raw = format!("{MINIMAL}transforms:\n  - name: a\n    path: a.wasm\n    limits: {{ memory: 8MiB, timeout: 250ms }}\n");
        let c = Config::parse(&raw, &SeedArgs::default()).unwrap();
        assert_eq!(c.transforms[0].limits.memory, 8 << 20);
        assert_eq!(c.transforms[0].limits.timeout, Duration::from_millis(250));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c = Config::parse(MINIMAL, &SeedArgs::default()).unwrap();
        assert!(!format!("{c:?}").contains("abc"));
    }
}
