//! The YAML configuration at its top level: the blocks, each owned by the
//! component it configures (`sources::SourceConfig`, `sinks::SinkConfig`,
//! ...), checks that span blocks, `${ENV}` interpolation (`interpolate.rs`),
//! a bound on nesting (`depth.rs`), the Go seed tool's older
//! `kafka_broker`/`kafka_topic` file, the `tests:`
//! cases of `cvp-stream test`, and a builder for configs made in code
//! (`builder.rs`).
//!
//! Every struct denies unknown keys so a typo is an error that names the key
//! and its line instead of a setting silently ignored.

mod builder;
mod depth;
mod interpolate;
pub mod units;

pub use builder::ConfigBuilder;
pub use interpolate::interpolate;

use crate::admin::AdminConfig;
use crate::delivery::{CheckpointConfig, OnError};
use crate::event::Op;
use crate::secret::Secret;
use crate::sinks::SinkConfig;
use crate::sources::SourceConfig;
use crate::transforms::{builtin, PipelineConfig, TransformConfig};
use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;

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
    /// `--ca-file`: trust this CA (or self-signed certificate) for CVP.
    pub ca_file: Option<std::path::PathBuf>,
    /// `--insecure`: do not verify CVP's certificate (labs).
    pub insecure: bool,
}

impl Config {
    /// Reads, interpolates and parses a config file, and resolves relative
    /// transform paths against its folder. Errors name the file, and the
    /// line where the YAML is wrong.
    pub fn load(path: &Path, seed: &SeedArgs) -> Result<Config> {
        let raw = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let mut config =
            Self::parse(&raw, seed).with_context(|| format!("config {}", path.display()))?;
        config.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        Ok(config)
    }

    /// As [`Config::load`], for `demo --config`: variables that are not
    /// set stand for a placeholder (the demo uses neither CVP's nor the
    /// sink's settings, where credentials live), and nothing is validated
    /// yet (the demo replaces those blocks first).
    pub fn load_for_demo(path: &Path) -> Result<Config> {
        let raw = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config {}", path.display()))?;
        let text = interpolate(&raw, |name| {
            Some(std::env::var(name).unwrap_or_else(|_| format!("demo-{name}")))
        })?;
        let parsed = (|| -> Result<Config> {
            depth::check(&text)?;
            if is_seed_file(&text) {
                let file: SeedFile = serde_yaml::from_str(&text).map_err(yaml_error)?;
                let seed = SeedArgs {
                    server: Some("demo:443".into()),
                    ..SeedArgs::default()
                };
                Config::from_seed(file, &seed)
            } else {
                serde_yaml::from_str::<Config>(&text).map_err(yaml_error)
            }
        })();
        let mut config = parsed.with_context(|| format!("config {}", path.display()))?;
        config.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        Ok(config)
    }

    pub fn parse(raw: &str, seed: &SeedArgs) -> Result<Config> {
        let text = interpolate(raw, |name| std::env::var(name).ok())?;
        depth::check(&text)?;
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
        Ok(ConfigBuilder::new(server)
            .transform(TransformConfig::new(
                "title-to-key",
                builtin::TITLE_TO_KEY_PATH,
            ))
            .kafka(brokers, file.kafka_topic)
            .into_config())
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
        if let Some(ca) = &seed.ca_file {
            cvp.tls.ca_file = Some(ca.clone());
        }
        if seed.insecure {
            cvp.tls.insecure_skip_verify = true;
        }
    }

    /// Each block checks itself; what spans blocks is checked here.
    pub(crate) fn validate(&mut self) -> Result<()> {
        self.source.cvp.validate()?;
        self.sink.validate()?;
        if self.pipeline.batch_size == 0 {
            bail!("pipeline.batch_size must be at least 1");
        }
        if let Some(t) = self
            .transforms
            .iter()
            .find(|t| t.on_error == OnError::DeadLetter)
        {
            if self.sink.dead_letter_topic().is_none() {
                bail!(
                    "transform {:?} has on_error: dead_letter but sink.{}.dead_letter_topic is not set",
                    t.name,
                    self.sink.name()
                );
            }
        }
        if let Some(cp) = &self.checkpoint {
            if self.sink.kafka().is_some_and(|k| k.exactly_once.is_some()) {
                bail!("checkpoint: and sink.kafka.exactly_once both keep the resume point; with exactly_once Kafka keeps it: remove the checkpoint block");
            }
            cp.validate()?;
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
            t.validate()?;
        }
        Ok(())
    }

    /// Resolves relative transform paths against the config file's folder,
    /// so a config works from any working directory.
    pub fn resolve_paths(&mut self, base: &Path) {
        for t in &mut self.transforms {
            t.resolve_path(base);
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

#[cfg(test)]
mod tests {
    use super::units::parse_size;
    use super::*;
    use std::time::Duration;

    const MINIMAL: &str = "source: { cvp: { address: \"cvp:443\", token: abc } }\nsink: { kafka: { brokers: \"b:9092\", topic: t } }\n";

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

    /// The builder makes what the same YAML makes.
    #[test]
    fn builder_matches_yaml() {
        let built = ConfigBuilder::new("cvp:443")
            .token("abc")
            .kafka("b:9092", "t")
            .build()
            .unwrap();
        let parsed = Config::parse(MINIMAL, &SeedArgs::default()).unwrap();
        assert_eq!(format!("{built:?}"), format!("{parsed:?}"));
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
    fn seed_file_with_seed_flags() {
        let seed = SeedArgs {
            server: Some("cvp.lab:8443".into()),
            username: Some("ansible".into()),
            password: Some(Secret::new("pw")),
            ca_file: Some("/etc/cvp/ca.pem".into()),
            insecure: false,
        };
        let c = Config::parse(
            "kafka_broker: \"127.0.0.1\"\nkafka_topic: \"test\"\n",
            &seed,
        )
        .unwrap();
        let kafka = c.sink.kafka().expect("a Kafka sink");
        assert_eq!(kafka.brokers, "127.0.0.1:9092");
        assert_eq!(kafka.topic, "test");
        assert_eq!(c.source.cvp.address, "cvp.lab:8443");
        assert_eq!(c.source.cvp.username.as_deref(), Some("ansible"));
        assert_eq!(
            c.source.cvp.tls.ca_file.as_deref(),
            Some(Path::new("/etc/cvp/ca.pem"))
        );
        assert!(!c.source.cvp.tls.insecure_skip_verify);
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

    /// 200 KB of nesting took libyaml past a minute (its time grows with
    /// length times depth); now it is refused at once, naming the line.
    #[test]
    fn deep_nesting_is_refused_before_parsing() {
        let deep = format!(
            "{MINIMAL}pipeline: {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let e = Config::parse(&deep, &SeedArgs::default())
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "line 3: nested more than 64 levels deep; no cvp-stream setting needs that"
        );
    }

    #[test]
    fn debug_output_hides_secrets() {
        let c = Config::parse(MINIMAL, &SeedArgs::default()).unwrap();
        assert!(!format!("{c:?}").contains("abc"));
    }
}
