//! `cvp-stream run`: subscribe to CVP, transform, deliver; until a signal.

use crate::config::{Config, SeedArgs};
use crate::pipeline::Pipeline;
use crate::secret::Secret;
use crate::sources::cvp::Resume;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

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
    /// Trust this CA certificate (PEM) for CVP, as source.cvp.tls.ca_file:
    /// a private CA, or the self-signed certificate many lab CVPs serve.
    #[arg(long, value_name = "PEM")]
    pub ca_file: Option<PathBuf>,
    /// Do not verify CVP's certificate (source.cvp.tls.insecure_skip_verify;
    /// labs only: anyone on the path can read the credentials).
    #[arg(long, conflicts_with = "ca_file")]
    pub insecure: bool,
    /// With no checkpoint yet: also forward the events that changed within
    /// this window before start-up (e.g. `24h`), not only new ones.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub since: Option<std::time::Duration>,
}

pub async fn run(args: RunArgs, shutdown: CancellationToken) -> Result<()> {
    let seed = SeedArgs {
        server: args.server,
        username: args.username,
        password: args.password.map(Secret::new),
        ca_file: args.ca_file,
        insecure: args.insecure,
    };
    let config = Arc::new(Config::load(&args.config, &seed)?);
    // Up first, so /health answers while the transforms compile.
    if let Some(admin) = &config.admin {
        crate::admin::serve(admin.listen, shutdown.clone()).await?;
    }
    let mut checkpoint = match &config.checkpoint {
        Some(c) => crate::delivery::checkpoint::read(&c.path)?,
        None => None,
    };
    crate::metrics::get().set_sink(config.sink.name());
    let sink = config.sink.start(&shutdown).await?;
    // With exactly_once Kafka holds the checkpoint, committed with the
    // records; read once the sink has fenced any former instance.
    if let Some(kafka) = config.sink.kafka() {
        if let Some(eos) = &kafka.exactly_once {
            checkpoint = crate::sinks::kafka::read_checkpoint(kafka, eos).await?;
        }
    }
    if checkpoint.is_some() && args.since.is_some() {
        tracing::info!("a checkpoint exists: resuming from it, not from --since");
    }
    let mut pipeline = Pipeline::build_off_runtime(config.clone(), sink).await?;
    pipeline.resume_from(Resume::new(checkpoint.as_ref(), args.since));
    crate::metrics::get().set_transforms_loaded();
    tracing::info!(
        cvp = %config.source.cvp.address,
        sink = config.sink.name(),
        topic = %config.sink.default_topic(),
        transforms = ?config.transforms.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        "cvp-stream started"
    );
    let stats = pipeline.run(shutdown, false).await?;
    super::summary(&stats);
    if stats.checkpoint_failed {
        if let Some(cp) = &config.checkpoint {
            anyhow::bail!(
                "the last checkpoint could not be written to {} (see above): a restart resends what was delivered since the last one that was",
                cp.path.display()
            );
        }
    }
    Ok(())
}
