//! The command line: the subcommands (each defined beside its code in
//! `commands/`) and the global flags. Also accepts the Go seed's invocation
//! (`-server`, `-yamlfile`, `-username`, `-password`, single dash) by
//! rewriting it into `run` before clap sees it.

#[cfg(feature = "bench")]
use crate::commands::bench;
#[cfg(feature = "simulator")]
use crate::commands::{demo, simulate};
use crate::commands::{run, test, transform_inspect, transform_new, transform_test, validate};
use clap::{Parser, Subcommand, ValueEnum};

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
        " (transform WIT cvp-stream:transform@0.2.0; runs components built for 0.2.x and, deprecated, 0.1.x)"
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
    Run(run::RunArgs),
    /// Check a config: parse it, and load, type-check and initialise every transform.
    Validate(validate::ValidateArgs),
    /// Serve a simulated CVP EventService (for trying transforms and for tests).
    #[cfg(feature = "simulator")]
    Simulate(simulate::SimulateArgs),
    /// Run the whole pipeline on a built-in simulated CVP with the stock
    /// title-to-key transform, printing each record (or producing to --brokers).
    #[cfg(feature = "simulator")]
    Demo(demo::DemoArgs),
    /// Run the config's `tests:` cases through its transform chain.
    Test(test::TestArgs),
    /// Work with transform components.
    #[command(subcommand)]
    Transform(TransformCommand),
    /// Measure throughput, the transform stage, latency and start-up on
    /// this machine (see BENCHMARKS.md).
    #[cfg(feature = "bench")]
    Bench(bench::BenchArgs),
}

#[derive(Subcommand, Debug)]
pub enum TransformCommand {
    /// Run a component over sample events and print what it would produce
    /// (topic, key, value, headers), drop, or fail on.
    Test(transform_test::TransformTestArgs),
    /// Create a working transform project to start from.
    New(transform_new::TransformNewArgs),
    /// Print sample events exactly as a transform receives them (contract
    /// 0.2), every field named: for a component, the fields it declares.
    Inspect(transform_inspect::TransformInspectArgs),
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
            matches!(cli.command, Command::Run(run::RunArgs { ref username, .. }) if username.as_deref() == Some("ansible"))
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
