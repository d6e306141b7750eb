//! The subcommands: `run`, `validate`, `simulate` and `demo`.

use crate::cli::{DemoArgs, RunArgs, SimulateArgs};
use crate::config::{Config, SeedArgs};
use crate::pipeline::Pipeline;
use crate::secret::Secret;
use crate::sink::{KafkaSink, Sink, SinkStats, StdoutSink};
use crate::transform::builtin;
use anyhow::{anyhow, Context, Result};
use cvp_simulator::{SimOptions, Simulator, TlsIdentity};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub async fn run(args: RunArgs, shutdown: CancellationToken) -> Result<()> {
    let seed = SeedArgs {
        server: args.server,
        username: args.username,
        password: args.password.map(Secret::new),
    };
    let config = Arc::new(load_config(&args.config, &seed)?);
    // Up first, so /health answers while the transforms compile.
    if let Some(admin) = &config.admin {
        crate::admin::serve(admin.listen, shutdown.clone()).await?;
    }
    let checkpoint = match &config.checkpoint {
        Some(c) => crate::checkpoint::read(&c.path)?,
        None => None,
    };
    if checkpoint.is_some() && args.since.is_some() {
        tracing::info!("a checkpoint exists: resuming from it, not from --since");
    }
    let kafka = KafkaSink::new(&config.sink.kafka)?.with_checkpoint(config.checkpoint.as_ref());
    kafka.probe(&config.sink.kafka.topic).await;
    kafka.watch_broker(shutdown.clone());
    let mut pipeline = Pipeline::build_off_runtime(config.clone(), Sink::Kafka(kafka)).await?;
    pipeline.resume_from(crate::source::Resume::new(checkpoint.as_ref(), args.since));
    crate::metrics::get().set_transforms_loaded();
    tracing::info!(
        cvp = %config.source.cvp.address,
        topic = %config.sink.kafka.topic,
        transforms = ?config.transforms.iter().map(|t| t.name.as_str()).collect::<Vec<_>>(),
        "cvp-stream started"
    );
    let stats = pipeline.run(shutdown, false).await?;
    summary(&stats);
    Ok(())
}

pub fn validate(path: &Path) -> Result<()> {
    let config = load_config(path, &SeedArgs::default())?;
    // Building the pipeline loads, type-checks and initialises every
    // transform and checks the TLS files and credentials, without connecting.
    let pipeline = Pipeline::build(&config, Sink::Stdout(StdoutSink))?;
    drop(pipeline);
    // librdkafka checks its properties when the producer is made; made last
    // and dropped at once, it has no time to try the brokers.
    drop(KafkaSink::new(&config.sink.kafka)?);
    println!(
        "{}: OK ({} transform{}{})",
        path.display(),
        config.transforms.len(),
        if config.transforms.len() == 1 {
            ""
        } else {
            "s"
        },
        if config.transforms.is_empty() {
            String::new()
        } else {
            format!(
                ": {}",
                config
                    .transforms
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(" -> ")
            )
        }
    );
    Ok(())
}

pub fn test(path: &Path) -> Result<()> {
    let config = load_config(path, &SeedArgs::default())?;
    crate::pipeline_test::run(&config)
}

fn load_config(path: &Path, seed: &SeedArgs) -> Result<Config> {
    let mut config = Config::load(path, seed)?;
    config.resolve_paths(path.parent().unwrap_or(Path::new(".")));
    Ok(config)
}

pub async fn simulate(args: SimulateArgs, shutdown: CancellationToken) -> Result<()> {
    let mut opts = SimOptions {
        token: args.token.clone(),
        credentials: match (&args.username, &args.password) {
            (Some(u), Some(p)) => Some((u.clone(), p.clone())),
            (Some(_), None) => {
                return Err(anyhow!("--username needs --password (or CVP_SIM_PASSWORD)"))
            }
            _ => None,
        },
        initial: args.initial,
        updates: args.updates,
        rate: args.rate,
        seed: args.seed,
        ..SimOptions::default()
    };
    if let Some(path) = &args.events {
        opts.script = cvp_simulator::load_jsonl(path)?;
    }
    if let Some(ca_path) = &args.tls_self_signed {
        let pki = cvp_simulator::test_pki(&["localhost", "127.0.0.1", "::1"])?;
        std::fs::write(ca_path, &pki.ca_pem)
            .with_context(|| format!("cannot write {}", ca_path.display()))?;
        tracing::info!(
            "TLS with a self-signed CA; trust it with tls.ca_file: {}",
            ca_path.display()
        );
        opts.tls = Some(pki.identity);
    } else if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        opts.tls = Some(TlsIdentity {
            cert_pem: read_text(cert)?,
            key_pem: read_text(key)?,
        });
    }
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let handle = Simulator::start(opts, listener).await?;
    // Machine-readable first line: scripts and tests wait for it.
    println!("cvp-simulator listening on {}", handle.local_addr());
    shutdown.cancelled().await;
    handle.shutdown().await;
    Ok(())
}

fn read_text(path: &PathBuf) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
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

    let transforms: Vec<(String, PathBuf)> = if args.no_transform {
        Vec::new()
    } else if args.transforms.is_empty() {
        vec![(
            "title-to-key".into(),
            PathBuf::from(builtin::TITLE_TO_KEY_PATH),
        )]
    } else {
        args.transforms
            .iter()
            .map(|p| {
                (
                    p.file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    p.clone(),
                )
            })
            .collect()
    };
    let mut yaml = format!(
        "source: {{ cvp: {{ address: \"{addr}\", token: \"{token}\", tls: {{ enabled: false }} }} }}\nsink: {{ kafka: {{ brokers: {:?}, topic: {:?} }} }}\ntransforms:\n",
        args.brokers.as_deref().unwrap_or("unused:9092"),
        args.topic
    );
    if transforms.is_empty() {
        yaml.push_str("  []\n");
    }
    for (name, path) in &transforms {
        yaml.push_str(&format!(
            "  - {{ name: {name:?}, path: {:?} }}\n",
            path.display().to_string()
        ));
    }
    let config = Arc::new(Config::parse(&yaml, &SeedArgs::default())?);
    let sink = match &args.brokers {
        Some(_) => {
            let kafka = KafkaSink::new(&config.sink.kafka)?;
            kafka.probe(&config.sink.kafka.topic).await;
            Sink::Kafka(kafka)
        }
        None => Sink::Stdout(StdoutSink),
    };
    let pipeline = Pipeline::build_off_runtime(config.clone(), sink).await?;
    tracing::info!(
        "demo: simulated CVP on {addr}, transforms [{}]; press Ctrl-C to stop",
        transforms
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", ")
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
    summary(&stats?);
    Ok(())
}

fn summary(s: &SinkStats) {
    tracing::info!(
        events = s.events,
        records = s.produced,
        dropped = s.dropped,
        transform_failures = s.failed_transform,
        delivery_failures = s.failed_delivery,
        "stopped"
    );
}
