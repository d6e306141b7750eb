//! `cvp-stream run`: subscribe to CVP, transform, deliver; until a signal.
//! With `sink.kafka.exactly_once.standby`, only while this instance is its
//! group's active one.

use crate::config::{Config, SeedArgs};
use crate::pipeline::Pipeline;
use crate::secret::Secret;
use crate::sinks::kafka::{Aborted, Election, Fenced};
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
        server: args.server.clone(),
        username: args.username.clone(),
        password: args.password.clone().map(Secret::new),
        ca_file: args.ca_file.clone(),
        insecure: args.insecure,
    };
    let config = Arc::new(Config::load(&args.config, &seed)?);
    // Up first, so /health answers while the transforms compile.
    if let Some(admin) = &config.admin {
        crate::admin::serve(admin.listen, shutdown.clone()).await?;
    }
    crate::metrics::get().set_sink(config.sink.name());
    let exactly_once = config
        .sink
        .kafka()
        .and_then(|k| Some((k, k.exactly_once.as_ref()?)));
    let Some((kafka, eos)) = exactly_once else {
        return deliver(&args, &config, shutdown).await;
    };

    // Exactly once: a transaction Kafka did not commit is aborted, and
    // delivery begins again from the checkpoint it last committed. With a
    // standby, this instance delivers only while Kafka's consumer group
    // says it is the active one, and stands by again when it is not
    // (another took over, or fenced it), until a signal.
    let mut election = match eos.standby {
        true => Some(Election::join(kafka, eos).await?),
        false => None,
    };
    let result = loop {
        if let Some(election) = &mut election {
            crate::metrics::get().set_role(false);
            tracing::info!(
                group = %eos.group,
                "standby: waiting to take over (another instance of the group is active, or the election is under way)"
            );
            if !election.until_active(&shutdown).await {
                break Ok(());
            }
            crate::metrics::get().set_role(true);
            tracing::info!(group = %eos.group, "active: this instance delivers for the group now");
        }
        let term = shutdown.child_token();
        let watch = election.as_ref().map(|election| {
            let lost = election.until_lost();
            let stop = term.clone();
            tokio::spawn(async move {
                lost.await;
                stop.cancel();
            })
        });
        let delivered = deliver(&args, &config, term).await;
        if let Some(watch) = watch {
            watch.abort();
        }
        if shutdown.is_cancelled() {
            break delivered;
        }
        let active = election.as_ref().is_none_or(Election::is_active);
        match delivered {
            Ok(()) if election.is_none() => break Ok(()),
            Err(e) if election.is_none() && !e.is::<Aborted>() => break Err(e),
            Err(e) if e.is::<Fenced>() => tracing::warn!("no longer active: {e}"),
            Err(e) if active => {
                tracing::warn!("{e}; delivery begins again from the last committed checkpoint")
            }
            other => {
                tracing::warn!(
                    "no longer active: Kafka's group coordinator gave the group to another instance (this one was unreachable or stopped for longer than session_timeout, {})",
                    humantime::format_duration(eos.session_timeout)
                );
                if let Err(e) = other {
                    tracing::debug!("how delivery ended: {e}");
                }
            }
        }
        // Not at once: whatever made Kafka refuse may need a moment, and
        // a fenced instance's group membership learns within a heartbeat
        // (a third of session_timeout) that another is active; going on
        // before would fence that one in turn (safe, but a needless
        // hand-over).
        let pause = match &election {
            Some(_) => eos.session_timeout / 2,
            None => std::time::Duration::from_secs(1),
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shutdown.cancelled() => break Ok(()),
        }
    };
    // Leaving, not timing out: a standby takes over at once.
    if let Some(election) = election {
        election.leave().await;
    }
    result
}

/// Subscribes, transforms and delivers until `shutdown`: the whole of a
/// run, or one term as the active instance of an exactly_once group.
async fn deliver(args: &RunArgs, config: &Arc<Config>, shutdown: CancellationToken) -> Result<()> {
    let mut checkpoint = match &config.checkpoint {
        Some(c) => crate::delivery::checkpoint::read(&c.path)?,
        None => None,
    };
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
