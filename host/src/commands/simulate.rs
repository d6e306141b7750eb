//! `cvp-stream simulate`: serve a simulated CVP (EventService, the
//! inventory's DeviceService, TagAssignmentService and the REST login) for
//! trying transforms and for tests.

use anyhow::{anyhow, Context, Result};
use clap::Args;
use cvp_simulator::{SimOptions, Simulator, TlsIdentity};
use std::path::{Path, PathBuf};
use tokio_util::sync::CancellationToken;

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
    /// Synthetic devices in the inventory besides those the events name.
    #[arg(long, default_value_t = 0)]
    pub inventory_devices: usize,
    /// Interface tags spread over the synthetic devices.
    #[arg(long, default_value_t = 0)]
    pub interface_tags: usize,
    /// Every N live updates, an inventory change (a rename, a tag assigned,
    /// the tag removed, the name back); 0: none.
    #[arg(long, default_value_t = 0)]
    pub inventory_churn: u64,
    /// Answer TagAssignmentService with UNIMPLEMENTED, as an older CVP.
    #[arg(long)]
    pub no_tag_service: bool,
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
        inventory_devices: args.inventory_devices,
        inventory_interface_tags: args.interface_tags,
        inventory_churn: args.inventory_churn,
        tag_service: !args.no_tag_service,
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

fn read_text(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}
