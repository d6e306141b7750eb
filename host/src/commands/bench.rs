//! `cvp-stream bench` (built with `--features bench`): measures this
//! machine; the harness itself is `crate::bench`.

use clap::Args;

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
    /// Also measure with `exactly_once` against this Kafka cluster, which
    /// must have transactions (`scripts/bench` runs nisshi 0.7 here and
    /// passes it as --brokers too, for the same broker without).
    #[arg(long, value_name = "BROKERS")]
    pub exactly_once_brokers: Option<String>,
    /// Also measure throughput into this sink, by URL (`nats://`, `mqtt://`,
    /// `redis://`, `amqp://`; repeatable): stock title-to-key, the same
    /// generator. Each run uses names of its own and removes them after.
    #[arg(long = "sink", value_name = "URL")]
    pub sinks: Vec<String>,
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
    #[arg(long, value_delimiter = ',', value_parser = ["stage", "throughput", "latency", "startup", "enrichment"])]
    pub only: Vec<String>,
}

impl BenchArgs {
    pub fn wants(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == part)
    }
}

pub async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    crate::bench::run(args).await
}
