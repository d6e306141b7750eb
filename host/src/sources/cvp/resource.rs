//! One subscription to a CVP resource API other than events (the inventory
//! in `inventory.rs`, tags in `tags.rs`), on its own task beside the event
//! stream, with the event stream's address, credentials and TLS: connect,
//! Subscribe, stage the initial state until INITIAL_SYNC_COMPLETE and hand
//! it to the store whole, then apply each change; reconnect with backoff
//! when the stream ends. A CVP that does not serve the API (an older
//! release, or a token without the permission) is said once, and the
//! events flow without what it would have added.

use super::connect::Conn;
use super::directory::Directory;
use super::error::SessionError;
use crate::metrics;
use anyhow::Result;
use futures::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How a resource's messages reach the store: the parts `inventory.rs`
/// and `tags.rs` differ in.
pub(super) trait Resource: Send + 'static {
    /// The metrics' `source` label and the logs' name.
    const NAME: &'static str;
    /// The service, for the one line that says CVP lacks it.
    const SERVICE: &'static str;
    /// The Subscribe call's path.
    const PATH: &'static str;
    type Request: prost::Message + Clone + Send + Sync + 'static;
    type Response: prost::Message + Default + Send + 'static;

    fn request(&self) -> Self::Request;
    /// The message's `arista.subscriptions.Operation`.
    fn operation(resp: &Self::Response) -> i32;
    /// A subscription starts: its initial state follows.
    fn begin(&mut self) {}
    /// A message of the initial state, kept until the sync completes (or
    /// put in the store at once, when nothing is there to replace).
    fn stage(&mut self, resp: Self::Response, dir: &Directory);
    /// The initial state is whole: it replaces what the store had.
    fn synced(&mut self, dir: &Directory) -> usize;
    /// A change after the initial sync.
    fn apply(&mut self, resp: Self::Response, dir: &Directory);
}

/// How long before asking again a CVP that lacked the service: an upgrade
/// or a new permission is picked up without a restart, quietly.
const RETRY_UNAVAILABLE: Duration = Duration::from_secs(600);

/// Keeps `resource` subscribed until `shutdown`; `synced` turns true once
/// its first initial sync is in the store, or once CVP is found not to
/// serve it (the event stream's start-up wait ends either way).
pub(super) async fn run<R: Resource>(
    mut resource: R,
    mut conn: Conn,
    dir: Arc<Directory>,
    synced: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let m = metrics::get();
    let min_backoff = Duration::from_millis(500);
    let mut backoff = min_backoff;
    let mut said_unavailable = false;
    loop {
        m.set_enrichment_state(R::NAME, "disconnected");
        let started = Instant::now();
        let result = tokio::select! {
            r = session(&mut resource, &mut conn, &dir, &synced) => r,
            _ = shutdown.cancelled() => return,
        };
        let wait = match result {
            Ok(()) => {
                // Info, not warning: when CVP goes away the event stream
                // says so already, and at the end of a demo or bench the
                // simulator closes these a moment before they are stopped.
                tracing::info!(cvp = %conn.target.authority(), "CVP closed the {} stream; reconnecting", R::NAME);
                min_backoff
            }
            Err(SessionError::Status(s))
                if matches!(
                    s.code(),
                    tonic::Code::Unimplemented | tonic::Code::PermissionDenied
                ) =>
            {
                m.set_enrichment_state(R::NAME, "unavailable");
                if !said_unavailable {
                    said_unavailable = true;
                    tracing::warn!(
                        cvp = %conn.target.authority(),
                        "CVP does not serve {} to this token ({:?}: {}): an older CVP release, or a token without the permission; events go on without {} (asked again every {})",
                        R::SERVICE,
                        s.code(),
                        s.message().replace('\n', " "),
                        R::NAME,
                        humantime::format_duration(RETRY_UNAVAILABLE)
                    );
                }
                synced.send_replace(true);
                RETRY_UNAVAILABLE
            }
            Err(e) => {
                if e.refused() {
                    conn.credentials.invalidate();
                }
                if started.elapsed() > Duration::from_secs(60) {
                    backoff = min_backoff;
                }
                let wait = super::jitter(backoff);
                tracing::warn!(
                    cvp = %conn.target.authority(),
                    "CVP {} stream failed: {}; reconnecting in {}",
                    R::NAME,
                    e.to_string().replace('\n', " "),
                    humantime::format_duration(Duration::from_millis(wait.as_millis() as u64))
                );
                backoff = (backoff * 2).min(conn.max_backoff);
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// One subscription, from the call to the stream's end (`Ok`) or failure.
async fn session<R: Resource>(
    resource: &mut R,
    conn: &mut Conn,
    dir: &Directory,
    synced: &watch::Sender<bool>,
) -> Result<(), SessionError> {
    let m = metrics::get();
    let mut stream = tokio::time::timeout(conn.subscribe_timeout, subscribe(resource, conn))
        .await
        .map_err(|_| SessionError::SubscribeTimeout {
            authority: conn.target.authority(),
            after: conn.subscribe_timeout,
        })??;
    m.set_enrichment_state(R::NAME, "syncing");
    resource.begin();
    let mut syncing = true;
    while let Some(item) = stream.next().await {
        let resp = item?;
        let op = R::operation(&resp);
        if op == cvp_proto::Operation::InitialSyncComplete as i32 {
            let n = resource.synced(dir);
            tracing::info!(
                cvp = %conn.target.authority(),
                "CVP {} synced: {n} kept",
                R::NAME
            );
            syncing = false;
            m.set_enrichment_state(R::NAME, "live");
            synced.send_replace(true);
        } else if syncing {
            resource.stage(resp, dir);
        } else {
            resource.apply(resp, dir);
        }
    }
    Ok(())
}

async fn subscribe<R: Resource>(
    resource: &R,
    conn: &mut Conn,
) -> Result<tonic::codec::Streaming<R::Response>, SessionError> {
    let (mut grpc, request) = super::connect::open(conn, resource.request()).await?;
    let path = http::uri::PathAndQuery::from_static(R::PATH);
    let codec = tonic_prost::ProstCodec::<R::Request, R::Response>::default();
    Ok(grpc
        .server_streaming(request, path, codec)
        .await?
        .into_inner())
}
