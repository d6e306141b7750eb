//! The admin endpoint: `/metrics` for Prometheus, `/health` (the process
//! answers and its CVP source is not stuck) and `/ready` (connected to CVP,
//! Kafka reachable, transforms loaded; or a standby, waiting to take over)
//! for orchestrators' probes. Bounded
//! against slow or many clients: a header timeout, a connection lifetime
//! and a connection cap.

use crate::metrics;
use anyhow::{anyhow, Result};
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// The `admin:` block; the endpoint is off when it is absent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// host:port, e.g. `0.0.0.0:9464` (9464 is the port Prometheus's
    /// exporter registry suggests for this kind of service).
    pub listen: SocketAddr,
}

/// Connections served at once. More wait in the kernel's accept queue,
/// where they hold none of this process's file descriptors: 2,000 slow
/// clients once took every descriptor, and the checkpoint write and the CVP
/// reconnect then failed with "Too many open files".
const MAX_CONNECTIONS: usize = 64;
/// A client has this long to send its request headers (a slow-loris
/// client would otherwise hold its connection forever).
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// No connection lives longer, keep-alive included: a scrape or a probe
/// takes milliseconds.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

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
    // hyper's own connection loop rather than `axum::serve`, which has no
    // header timeout, lifetime or connection cap.
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return,
                },
                _ = shutdown.cancelled() => return,
            };
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        // Out of descriptors, most likely: wait for some
                        // to close rather than spin.
                        tracing::warn!("the admin endpoint cannot accept a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = shutdown.cancelled() => return,
            };
            let service = TowerToHyperService::new(app.clone());
            tokio::spawn(async move {
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service);
                let _ = tokio::time::timeout(CONNECTION_LIFETIME, connection).await;
                drop(permit);
            });
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
    let role = metrics::get().role();
    // A standby waiting to take over is ready for what it is: it reaches
    // no CVP and sends nothing until then (and a rolling update must not
    // wait on it forever).
    if role == Some("standby") {
        return (
            StatusCode::OK,
            "ready: standby (another instance of the exactly_once group is active; this one takes over if it goes)\n".to_string(),
        );
    }
    match metrics::get().not_ready() {
        None if role.is_some() => (StatusCode::OK, "ready: active\n".to_string()),
        None => (StatusCode::OK, "ready\n".to_string()),
        Some(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}
