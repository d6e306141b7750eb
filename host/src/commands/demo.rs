//! `cvp-stream demo`: the built-in simulator, the stock transform (or the
//! given chain, or a real config's chain) and a printing sink (or any sink,
//! by URL), in one process.

use crate::config::{Config, ConfigBuilder};
use crate::event::Op;
use crate::pipeline::Pipeline;
use crate::secret::Secret;
use crate::sinks::{KafkaConfig, Sink, SinkConfig, StdoutSink};
use crate::sources::cvp::CvpConfig;
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
    /// Try a real config without CVP or Kafka: its transforms (with their
    /// configs and limits), `pipeline` and `source.cvp.operations`/`filter`
    /// run against the simulator, printing (or to --sink). Its CVP, sink,
    /// admin and checkpoint settings are not used; variables it names need
    /// not be set.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["transforms", "no_transform"])]
    pub config: Option<PathBuf>,
    /// Which operations to forward, e.g. `initial,updated,deleted` (default:
    /// the config's, else `updated` as `run`'s default; a recording's
    /// INITIAL and DELETED events are left out unless named here).
    #[arg(long, value_delimiter = ',', value_parser = parse_op, value_name = "OPS")]
    pub operations: Vec<Op>,
}

/// `--brokers` or `--sink` as one URL; none: print.
fn sink_url(args: &DemoArgs) -> Option<String> {
    match (&args.brokers, &args.sink) {
        (Some(brokers), _) => Some(format!("kafka://{brokers}")),
        (None, url) => url.clone(),
    }
}

fn parse_op(s: &str) -> Result<Op, String> {
    serde_yaml::from_str(&s.trim().to_ascii_lowercase())
        .map_err(|_| format!("{s:?} is not one of initial, updated, deleted"))
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

    if let Some(path) = &args.config {
        return from_config(path, &args, addr, token, sim, shutdown).await;
    }
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
    let url = sink_url(&args);
    let sink_config = match &url {
        Some(url) => SinkConfig::from_url(url, &args.topic)?,
        None => SinkConfig::Kafka(KafkaConfig::new("unused:9092", &args.topic)),
    };
    let mut builder = transforms.into_iter().fold(
        ConfigBuilder::new(addr.to_string())
            .token(&token)
            .plaintext(),
        ConfigBuilder::transform,
    );
    if !args.operations.is_empty() {
        builder = builder.operations(args.operations.iter().copied());
    }
    let config = builder.sink(sink_config).build()?;
    play(config, url.is_some(), names, addr, sim, shutdown).await
}

/// `demo --config FILE`: the file's chain, pipeline and operations, with
/// the simulator for CVP and the printing sink (or `--sink`) for its sink.
async fn from_config(
    path: &std::path::Path,
    args: &DemoArgs,
    addr: std::net::SocketAddr,
    token: String,
    sim: cvp_simulator::SimHandle,
    shutdown: CancellationToken,
) -> Result<()> {
    let mut config = Config::load_for_demo(path)?;
    let file_cvp = std::mem::replace(&mut config.source.cvp, CvpConfig::new(addr.to_string()));
    let cvp = &mut config.source.cvp;
    cvp.token = Some(Secret::new(token));
    cvp.tls.enabled = false;
    cvp.operations = if args.operations.is_empty() {
        file_cvp.operations
    } else {
        args.operations.clone()
    };
    cvp.filter = file_cvp.filter;
    cvp.cache_size = file_cvp.cache_size;
    // The simulator serves inventory and tags too: the config's enrichment
    // shows in what is printed.
    cvp.enrich = file_cvp.enrich;
    config.admin = None;
    config.checkpoint = None;
    let url = sink_url(args);
    if let Some(url) = &url {
        config.sink = SinkConfig::from_url(url, &args.topic)?;
    }
    config.validate()?;
    let names = config.transforms.iter().map(|t| t.name.clone()).collect();
    play(config, url.is_some(), names, addr, sim, shutdown).await
}

/// Runs `config` against the simulator until it has played every update:
/// to the configured sink when `to_sink`, else printing.
async fn play(
    config: Config,
    to_sink: bool,
    names: Vec<String>,
    addr: std::net::SocketAddr,
    sim: cvp_simulator::SimHandle,
    shutdown: CancellationToken,
) -> Result<()> {
    let config = Arc::new(config);
    let sink = match to_sink {
        true => config.sink.start(&shutdown).await?,
        false => Sink::Stdout(StdoutSink),
    };
    let ops: Vec<String> = config
        .source
        .cvp
        .operations
        .iter()
        .map(|o| format!("{o:?}").to_lowercase())
        .collect();
    let pipeline = Pipeline::build_off_runtime(config.clone(), sink).await?;
    tracing::info!(
        "demo: simulated CVP on {addr}, transforms [{}], forwarding {} (--operations initial,updated,deleted for all); press Ctrl-C to stop",
        names.join(", "),
        ops.join(", ")
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
