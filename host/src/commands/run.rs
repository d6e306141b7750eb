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
    };
    let config = Arc::new(Config::load(&args.config, &seed)?);
    // Up first, so /health answers while the transforms compile.
    if let Some(admin) = &config.admin {
        crate::admin::serve(admin.listen, shutdown.clone()).await?;
    }
    let checkpoint = match &config.checkpoint {
        Some(c) => crate::delivery::checkpoint::read(&c.path)?,
        None => None,
    };
    if checkpoint.is_some() && args.since.is_some() {
        tracing::info!("a checkpoint exists: resuming from it, not from --since");
    }
    crate::metrics::get().set_sink(config.sink.name());
    let sink = config.sink.start(&shutdown).await?;
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
    Ok(())
}
