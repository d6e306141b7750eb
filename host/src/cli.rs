//! Command-line interface. Also accepts the Go seed's invocation
//! (`-server`, `-yamlfile`, `-username`, `-password`, single dash) by
//! rewriting it into `run` before clap sees it.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "cvp-stream", version = version_text(), about = "Stream Arista CloudVision events into Kafka through WebAssembly transforms")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log level (error, warn, info, debug, trace) or a full filter such as
    /// `cvp_stream=debug,rdkafka=warn`. RUST_LOG wins when set.
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
}

fn version_text() -> &'static str {
    concat!(
        env!("CARGO_PKG_VERSION"),
        " (transform WIT cvp-stream:transform@0.1.0; accepts 0.1.x)"
    )
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Subscribe to CVP and produce every event, transformed, to Kafka.
    Run(RunArgs),
    /// Check a config: parse it, and load, type-check and initialise every transform.
    Validate(ConfigArg),
    /// Serve a simulated CVP EventService (for trying transforms and for tests).
    Simulate(SimulateArgs),
    /// Run the whole pipeline on a built-in simulated CVP with the stock
    /// title-to-key transform, printing each record (or producing to --brokers).
    Demo(DemoArgs),
    /// Run the config's `tests:` cases through its transform chain.
    Test(ConfigArg),
    /// Work with transform components.
    #[command(subcommand)]
    Transform(TransformCommand),
    /// Measure throughput, the transform stage, latency and start-up on
    /// this machine (see BENCHMARKS.md).
    Bench(BenchArgs),
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Live events per throughput run.
    #[arg(long, default_value_t = 500_000)]
    pub events: u64,
    /// Throughput runs per scenario; the median is reported.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Also measure against this real Kafka cluster (the topic must exist).
    #[arg(long)]
    pub brokers: Option<String>,
    #[arg(long, default_value = "cvp-events")]
    pub topic: String,
    /// Events per second for the latency run.
    #[arg(long, default_value_t = 10_000.0)]
    pub latency_rate: f64,
    /// Length of the latency run.
    #[arg(long, default_value_t = 10.0)]
    pub latency_seconds: f64,
    /// Events for the transform-stage measurement.
    #[arg(long, default_value_t = 100_000)]
    pub stage_events: usize,
    /// Only these parts (default: all).
    #[arg(long, value_delimiter = ',', value_parser = ["stage", "throughput", "latency", "startup"])]
    pub only: Vec<String>,
}

impl BenchArgs {
    pub fn wants(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == part)
    }
}

#[derive(Subcommand, Debug)]
pub enum TransformCommand {
    /// Run a component over sample events and print what it would produce
    /// (topic, key, value, headers), drop, or fail on.
    Test(TransformTestArgs),
    /// Create a working transform project to start from.
    New(TransformNewArgs),
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

#[derive(Args, Debug)]
pub struct TransformNewArgs {
    /// The transform's name: lower-case letters, digits and dashes.
    pub name: String,
    #[arg(long, value_enum)]
    pub lang: Lang,
    /// Where to create it (default: a folder named NAME).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// The Rust SDK crate (transforms/sdk in cvp-stream's source), when the
    /// binary was built elsewhere.
    #[arg(long)]
    pub sdk: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct TransformTestArgs {
    /// The component (.wasm), or builtin:title-to-key.
    pub component: PathBuf,
    /// A `config:` entry for the transform, KEY=VALUE; VALUE is YAML, so
    /// `sites={JPE1: dc1}` gives a map. Repeatable.
    #[arg(long = "config", value_name = "KEY=VALUE")]
    pub config: Vec<String>,
    /// JSONL of EventStreamResponse (protobuf JSON), e.g. a CVP recording;
    /// default: a built-in set of sample events.
    #[arg(long)]
    pub events: Option<PathBuf>,
    /// The topic of the record the transform receives.
    #[arg(long, default_value = "cvp-events")]
    pub topic: String,
}

#[derive(Args, Debug)]
pub struct ConfigArg {
    /// The YAML config file.
    #[arg(long, short = 'c')]
    pub config: PathBuf,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The YAML config file (the seed's `--yamlfile` works too).
    #[arg(long, short = 'c', alias = "yamlfile")]
    pub config: PathBuf,
    /// The seed's `--server host:port`: overrides source.cvp.address.
    #[arg(long)]
    pub server: Option<String>,
    /// The seed's `--username`: log in to CVP with a password.
    #[arg(long)]
    pub username: Option<String>,
    /// Prefer the CVP_PASSWORD environment variable: arguments show in `ps`.
    #[arg(long, env = "CVP_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// With no checkpoint yet: also forward the events that changed within
    /// this window before start-up (e.g. `24h`), not only new ones.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub since: Option<std::time::Duration>,
}

#[derive(Args, Debug, Clone)]
pub struct SimulateArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: String,
    /// Require this bearer token on every call.
    #[arg(long, env = "CVP_SIM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Accept this username on the REST login (with --password).
    #[arg(long)]
    pub username: Option<String>,
    #[arg(long, env = "CVP_SIM_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Serve TLS with a fresh self-signed CA; its certificate is written to
    /// this file for clients' `tls.ca_file`.
    #[arg(long, value_name = "CA_FILE")]
    pub tls_self_signed: Option<PathBuf>,
    /// Serve TLS with this certificate chain (PEM) ...
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// ... and this private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Generated events present at start (the initial state).
    #[arg(long, default_value_t = 10)]
    pub initial: usize,
    /// Generated live updates after the initial sync.
    #[arg(long, default_value_t = 100)]
    pub updates: u64,
    /// Live updates per second (0: as fast as possible).
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// Play these events instead (JSONL of EventStreamResponse, protobuf JSON).
    #[arg(long)]
    pub events: Option<PathBuf>,
    /// Seed for generated events.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Produce to this Kafka cluster instead of printing.
    #[arg(long)]
    pub brokers: Option<String>,
    /// Topic for --brokers.
    #[arg(long, default_value = "cvp-events")]
    pub topic: String,
    /// Play these events (JSONL) instead of generated ones.
    #[arg(long)]
    pub events: Option<PathBuf>,
    /// Generated live updates.
    #[arg(long, default_value_t = 20)]
    pub updates: u64,
    /// Live updates per second (0: as fast as possible).
    #[arg(long, default_value_t = 20.0)]
    pub rate: f64,
    /// Use these transforms (in order) instead of the built-in title-to-key.
    #[arg(long = "transform")]
    pub transforms: Vec<PathBuf>,
    /// Forward the raw merged events as JSON (no transform).
    #[arg(long, conflicts_with = "transforms")]
    pub no_transform: bool,
}

/// Rewrites the seed's Go-style flags (`-server x`) to clap's (`--server x`)
/// and, when no subcommand is given but seed flags are, inserts `run`.
pub fn normalize_args(args: Vec<String>) -> Vec<String> {
    const SEED_FLAGS: [&str; 4] = ["server", "yamlfile", "username", "password"];
    let mut out: Vec<String> = args
        .into_iter()
        .map(|a| {
            let bare = a.strip_prefix('-').filter(|r| !r.starts_with('-'));
            match bare {
                Some(rest)
                    if SEED_FLAGS
                        .iter()
                        .any(|f| rest == *f || rest.starts_with(&format!("{f}="))) =>
                {
                    format!("-{a}")
                }
                _ => a,
            }
        })
        .collect();
    let has_subcommand = out.iter().skip(1).any(|a| {
        [
            "run",
            "validate",
            "simulate",
            "demo",
            "transform",
            "test",
            "help",
        ]
        .contains(&a.as_str())
    });
    let has_seed_flag = out.iter().any(|a| {
        SEED_FLAGS
            .iter()
            .any(|f| a == &format!("--{f}") || a.starts_with(&format!("--{f}=")))
    });
    if !has_subcommand && has_seed_flag {
        out.insert(1.min(out.len()), "run".to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn seed_invocation_becomes_run() {
        let args = normalize_args(v(
            "main --server cvp:8443 --yamlfile c.yaml -username ansible -password ansible",
        ));
        assert_eq!(args, v("main run --server cvp:8443 --yamlfile c.yaml --username ansible --password ansible"));
        let cli = Cli::try_parse_from(args).unwrap();
        assert!(
            matches!(cli.command, Command::Run(RunArgs { ref username, .. }) if username.as_deref() == Some("ansible"))
        );
    }

    #[test]
    fn ordinary_invocation_untouched() {
        assert_eq!(
            normalize_args(v("cvp-stream run -c x.yaml")),
            v("cvp-stream run -c x.yaml")
        );
    }
}
