//! The admin endpoint: `/metrics` for Prometheus, `/health` (the process
//! answers and its CVP source is not stuck) and `/ready` (connected to CVP,
//! Kafka reachable, transforms loaded) for orchestrators' probes.

use crate::metrics;
use anyhow::{anyhow, Result};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

/// The `admin:` block; the endpoint is off when it is absent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// host:port, e.g. `0.0.0.0:9464` (9464 is the port Prometheus's
    /// exporter registry suggests for this kind of service).
    pub listen: SocketAddr,
}

/// Binds now (so a taken port is a start-up error, not a log line later)
/// and serves until `shutdown`.
pub async fn serve(listen: SocketAddr, shutdown: CancellationToken) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow!("admin.listen: cannot listen on {listen}: {e}"))?;
    let local = listener.local_addr().unwrap_or(listen);
    tracing::info!("serving /metrics, /health and /ready on http://{local}");
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/health", get(health))
        .route("/ready", get(ready));
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!("the admin endpoint stopped: {e}");
        }
    });
    Ok(())
}

async fn metrics_text() -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            // prometheus-client writes OpenMetrics (counters' `_total`
            // suffix, `# EOF`); saying so keeps Prometheus's types right.
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics::get().encode(),
    )
}

/// A liveness probe: failing it gets the process restarted, so it fails
/// only for what a restart mends (a source stuck waiting for CVP), not for
/// an outage of CVP or the sink (`/ready` says those).
async fn health() -> impl IntoResponse {
    match metrics::get().cvp_stuck() {
        None => (StatusCode::OK, "ok\n".to_string()),
        Some(waited) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "unhealthy: the CVP source has waited {} for CVP without progress (source.cvp.stuck_after)\n",
                humantime::format_duration(std::time::Duration::from_secs(waited.as_secs()))
            ),
        ),
    }
}

async fn ready() -> impl IntoResponse {
    match metrics::get().not_ready() {
        None => (StatusCode::OK, "ready\n".to_string()),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}
