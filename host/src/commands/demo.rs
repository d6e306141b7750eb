//! `cvp-stream demo`: the built-in simulator, the stock transform (or the
//! given chain) and a printing sink (or any sink, by URL), in one process.

use crate::config::ConfigBuilder;
use crate::pipeline::Pipeline;
use crate::sinks::{KafkaConfig, Sink, SinkConfig, StdoutSink};
use crate::transforms::{builtin, TransformConfig};
use anyhow::{Context, Result};
use clap::Args;
use cvp_simulator::{SimOptions, Simulator};
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Produce to this Kafka cluster instead of printing.
    #[arg(long, conflicts_with = "sink")]
    pub brokers: Option<String>,
    /// Deliver to this server instead of printing: kafka://HOST:PORT,
    /// nats://HOST:PORT, mqtt://HOST:PORT, redis://HOST:PORT or
    /// amqp://USER:PASS@HOST:PORT (every sink's defaults).
    #[arg(long, value_name = "URL")]
    pub sink: Option<String>,
    /// The default topic (subject, stream, routing key) for --brokers/--sink.
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

pub async fn demo(args: DemoArgs, shutdown: CancellationToken) -> Result<()> {
    let token = format!("demo-{:016x}", rand::random::<u64>());
    let mut opts = SimOptions {
        token: Some(token.clone()),
        initial: 5,
        updates: args.updates,
        rate: args.rate,
        ..SimOptions::default()
    };
    if let Some(path) = &args.events {
        opts.script = cvp_simulator::load_jsonl(path)?;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot open a loopback port")?;
    let sim = Simulator::start(opts, listener).await?;
    let addr = sim.local_addr();

    let transforms: Vec<TransformConfig> = if args.no_transform {
        Vec::new()
    } else if args.transforms.is_empty() {
        vec![TransformConfig::new(
            "title-to-key",
            builtin::TITLE_TO_KEY_PATH,
        )]
    } else {
        args.transforms
            .iter()
            .map(|p| {
                let name = p
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                TransformConfig::new(name, p.clone())
            })
            .collect()
    };
    let names: Vec<String> = transforms.iter().map(|t| t.name.clone()).collect();
    let url = match (&args.brokers, &args.sink) {
        (Some(brokers), _) => Some(format!("kafka://{brokers}")),
        (None, url) => url.clone(),
    };
    let sink_config = match &url {
        Some(url) => SinkConfig::from_url(url, &args.topic)?,
        None => SinkConfig::Kafka(KafkaConfig::new("unused:9092", &args.topic)),
    };
    let config = transforms
        .into_iter()
        .fold(
            ConfigBuilder::new(addr.to_string())
                .token(&token)
                .plaintext(),
            ConfigBuilder::transform,
        )
        .sink(sink_config)
        .build()?;
    let config = Arc::new(config);
    let sink = match &url {
        Some(_) => config.sink.start(&shutdown).await?,
        None => Sink::Stdout(StdoutSink),
    };
    let pipeline = Pipeline::build_off_runtime(config.clone(), sink).await?;
    tracing::info!(
        "demo: simulated CVP on {addr}, transforms [{}]; press Ctrl-C to stop",
        names.join(", ")
    );

    // When the simulator has played every update, end its streams: the
    // pipeline then drains and stops by itself.
    let stop_sim = shutdown.child_token();
    let sim_task = tokio::spawn(async move {
        tokio::select! {
            _ = sim.wait_live_done() => {}
            _ = stop_sim.cancelled() => {}
        }
        sim.shutdown().await;
    });
    let stats = pipeline.run(shutdown.clone(), true).await;
    shutdown.cancel();
    let _ = sim_task.await;
    super::summary(&stats?);
    Ok(())
}
