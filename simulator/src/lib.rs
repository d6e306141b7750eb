//! A CloudVision `arista.event.v1.EventService` simulator: a real gRPC
//! server (plus CVP's REST login on the same port) for demos, integration
//! tests and benchmarks of cvp-stream. It serves the inventory
//! (`arista.inventory.v1.DeviceService`) and tags
//! (`arista.tag.v2.TagAssignmentService`) of the devices its events name
//! too (`inventory.rs`).
//!
//! It keeps a current state and a timeline of changes; `Subscribe` streams
//! the state as INITIAL, then INITIAL_SYNC_COMPLETE, then a single global
//! live feed (generated or scripted) that starts once the first subscriber
//! has synced.

mod auth;
mod feed;
mod generate;
mod inventory;
mod login;
mod script;
mod service;
mod state;
mod stats;
mod tls;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cvp_proto::event::event_service_server::EventServiceServer;
use cvp_proto::event::EventStreamResponse;
use cvp_proto::inventory::device_service_server::DeviceServiceServer;
use cvp_proto::tag::tag_assignment_service_server::TagAssignmentServiceServer;
use cvp_proto::Operation;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::service::Routes;
use tonic::transport::server::TcpIncoming;
use tonic::transport::Server;
use tracing::{info, warn};

pub use script::load_jsonl;

/// `n` generated events in their full (merged) state, as the live feed would
/// produce them: new events and changes to earlier ones. For benchmarks of
/// the host's stages that need realistic events without a server.
pub fn sample_events(n: usize, seed: u64) -> Vec<cvp_proto::event::Event> {
    let mut g = Generator::new(seed, false);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let c = g.live();
        if c.op != Operation::Deleted {
            out.push((*c.full).clone());
        }
    }
    out
}
pub use stats::SimStats;
pub use tls::{self_signed_ca_as_server, test_pki, TestPki, TlsIdentity};

use crate::auth::Auth;
use crate::feed::Source;
use crate::generate::Generator;
use crate::inventory::{Inventory, InventoryService};
use crate::service::Service;
use crate::state::{Hub, Inner};
use crate::stats::Counters;

/// How the simulator behaves. See the field docs; `Default` gives a small
/// generated, unauthenticated, plaintext simulator.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// If set, gRPC calls must carry `authorization: Bearer <token>` (this
    /// token or a session token from the REST login).
    pub token: Option<String>,
    /// Username/password accepted by the REST login; `None` disables login
    /// (404). When set, gRPC calls need a bearer token even if `token` is
    /// `None` (as on a real CVP).
    pub credentials: Option<(String, String)>,
    /// Serve TLS (h2 and http/1.1 via ALPN).
    pub tls: Option<TlsIdentity>,
    /// Generated events present as the current state.
    pub initial: usize,
    /// Generated live updates streamed after the initial sync.
    pub updates: u64,
    /// Live updates per second; 0.0 = as fast as possible.
    pub rate: f64,
    /// Scripted mode: INITIAL entries are the starting state, UPDATED and
    /// DELETED entries the live feed (sent verbatim). When non-empty,
    /// `initial` and `updates` are ignored.
    pub script: Vec<EventStreamResponse>,
    /// Seed for deterministic generation.
    pub seed: u64,
    /// Generated changes to existing events carry only the key and the
    /// changed fields, as real CVP may send.
    pub partial_updates: bool,
    /// Generated changes carry the wall-clock time (last-updated time and
    /// key timestamp) instead of simulated times from 2026-01-01, so a
    /// receiver can measure latency from them (`cvp-stream bench`).
    pub wall_clock: bool,
    /// Generate the whole live feed before serving, so that while it plays
    /// the simulator only sends (benchmarks measure the receiver, not the
    /// generator). Ignored with `wall_clock`, whose times must be fresh.
    pub prepare: bool,
    /// Hostile: the first this many Subscribe calls never answer (no
    /// response headers, no error, the connection kept open), as a CVP
    /// whose handler is stuck. Later calls are served.
    pub hang_subscribes: u64,
    /// Hostile: Subscribe sends the current state and then nothing more,
    /// ever (no INITIAL_SYNC_COMPLETE): an initial sync that stalls.
    pub stall_initial_sync: bool,
    /// Synthetic devices served by the inventory besides those the events
    /// name (for memory tests).
    pub inventory_devices: usize,
    /// Interface tags spread over the synthetic devices.
    pub inventory_interface_tags: usize,
    /// Serve `TagAssignmentService` (without it a call answers
    /// UNIMPLEMENTED, as an older CVP does).
    pub tag_service: bool,
    /// Every this many live changes, one inventory change: a rename, a
    /// tag assigned, the tag removed, the name back; 0: none.
    pub inventory_churn: u64,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            token: None,
            credentials: None,
            tls: None,
            initial: 10,
            updates: 100,
            rate: 10.0,
            script: Vec::new(),
            seed: 1,
            partial_updates: true,
            wall_clock: false,
            prepare: false,
            hang_subscribes: 0,
            stall_initial_sync: false,
            inventory_devices: 0,
            inventory_interface_tags: 0,
            tag_service: true,
            inventory_churn: 0,
        }
    }
}

/// The simulator; see [`Simulator::start`].
pub struct Simulator;

impl Simulator {
    /// Serves on `listener` until [`SimHandle::shutdown`] or drop. Binds
    /// nothing itself.
    pub async fn start(opts: SimOptions, listener: TcpListener) -> anyhow::Result<SimHandle> {
        let local_addr = listener.local_addr()?;
        let mut inner = Inner::default();
        let (source, live_total) = if opts.script.is_empty() {
            let mut g =
                Generator::new(opts.seed, opts.partial_updates).with_wall_clock(opts.wall_clock);
            for _ in 0..opts.initial {
                inner.apply(g.initial());
            }
            let total = usize::try_from(opts.updates).context("too many updates")?;
            if opts.prepare && !opts.wall_clock {
                let live: Vec<_> = (0..total).map(|_| g.live()).collect();
                (Source::Prepared(live.into_iter()), total)
            } else {
                (Source::Generated(g), total)
            }
        } else {
            for (i, e) in opts.script.iter().enumerate() {
                script::check_entry(e).with_context(|| format!("script entry {}", i + 1))?;
            }
            let (init, live): (Vec<_>, Vec<_>) = opts
                .script
                .into_iter()
                .partition(|e| e.r#type == Operation::Initial as i32);
            for e in &init {
                if let Some(c) = script::to_change(&inner, e) {
                    inner.apply(c);
                }
            }
            let total = live.len();
            (Source::Script(live.into_iter()), total)
        };
        let mut hub = Hub::new(inner, live_total);
        hub.hang_subscribes = std::sync::atomic::AtomicU64::new(opts.hang_subscribes);
        hub.stall_initial_sync = opts.stall_initial_sync;
        let hub = Arc::new(hub);
        let counters = Arc::new(Counters::default());
        let (shutdown_tx, shutdown_rx) = watch::channel(false);

        let auth = Arc::new(Auth::new(
            opts.token,
            opts.credentials.is_some(),
            counters.clone(),
        ));
        let service = Service {
            hub: hub.clone(),
            counters: counters.clone(),
            shutdown: shutdown_rx.clone(),
        };
        let check = auth.clone();
        let grpc = EventServiceServer::with_interceptor(service, move |req| check.check(req));
        let inventory = Arc::new(Inventory::new(
            opts.inventory_devices,
            opts.inventory_interface_tags,
        ));
        let inv_service = InventoryService {
            inventory: inventory.clone(),
            counters: counters.clone(),
            shutdown: shutdown_rx.clone(),
        };
        let check = auth.clone();
        let mut grpc = Routes::new(grpc).add_service(DeviceServiceServer::with_interceptor(
            inv_service.clone(),
            move |req| check.check(req),
        ));
        if opts.tag_service {
            let check = auth.clone();
            grpc = grpc.add_service(TagAssignmentServiceServer::with_interceptor(
                inv_service,
                move |req| check.check(req),
            ));
        }
        // gRPC and the REST login share the port, as on CVP.
        let router =
            grpc.into_axum_router()
                .merge(login::router(opts.credentials, auth, counters.clone()));
        let routes = Routes::from(router);
        let mut builder = Server::builder().accept_http1(true);
        let signal = {
            let mut rx = shutdown_rx.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let tls = opts.tls.is_some();
        let server = match &opts.tls {
            None => {
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                let router = builder.add_routes(routes);
                tokio::spawn(
                    async move { router.serve_with_incoming_shutdown(incoming, signal).await },
                )
            }
            Some(id) => {
                let acceptor = tls::acceptor(id)?;
                let incoming = tls::incoming(listener, acceptor, shutdown_rx.clone());
                let router = builder.add_routes(routes);
                tokio::spawn(
                    async move { router.serve_with_incoming_shutdown(incoming, signal).await },
                )
            }
        };
        let churn = (opts.inventory_churn > 0).then(|| (inventory.clone(), opts.inventory_churn));
        let feed = tokio::spawn(feed::run(
            hub.clone(),
            source,
            opts.rate,
            churn,
            shutdown_rx,
        ));
        info!(
            addr = %local_addr,
            tls,
            state = hub.live_start,
            live = live_total,
            rate = opts.rate,
            "CVP simulator serving"
        );
        Ok(SimHandle {
            local_addr,
            hub,
            inventory,
            counters,
            shutdown: shutdown_tx,
            server: Some(server),
            feed: Some(feed),
        })
    }
}

type ServerTask = JoinHandle<Result<(), tonic::transport::Error>>;

/// A running simulator. Dropping it stops serving, like [`SimHandle::shutdown`]
/// without waiting.
pub struct SimHandle {
    local_addr: SocketAddr,
    hub: Arc<Hub>,
    inventory: Arc<Inventory>,
    counters: Arc<Counters>,
    shutdown: watch::Sender<bool>,
    server: Option<ServerTask>,
    feed: Option<JoinHandle<()>>,
}

impl SimHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stats(&self) -> SimStats {
        self.counters.snapshot()
    }

    /// When the live feed started emitting (after the first subscriber's
    /// initial sync); `None` before. Benchmarks count from here.
    pub fn live_started(&self) -> Option<std::time::Instant> {
        self.hub.live_started.get().copied()
    }

    /// Resolves once every live change has been handed to at least one
    /// subscriber's stream (at once if there are none).
    pub async fn wait_live_done(&self) {
        let target = self.hub.live_start + self.hub.live_total;
        let mut rx = self.hub.delivered.subscribe();
        let _ = rx.wait_for(|d| *d >= target).await;
    }

    /// Ends every open Subscribe stream with UNAVAILABLE, as a CVP restart
    /// or a network cut would. With `refuse`, new subscriptions fail too
    /// until [`SimHandle::accept_subscriptions`]: changes made meanwhile
    /// happen while every client is away.
    pub fn reset_streams(&self, refuse: bool) {
        self.hub
            .refusing
            .store(refuse, std::sync::atomic::Ordering::SeqCst);
        self.hub.reset.send_modify(|g| *g += 1);
    }

    pub fn accept_subscriptions(&self) {
        self.hub
            .refusing
            .store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Applies one change now, as if CVP had raised it: an entry in the
    /// shape of a recording line (INITIAL entries are not allowed here).
    pub fn apply(&self, change: &EventStreamResponse) -> anyhow::Result<()> {
        script::check_entry(change)?;
        anyhow::ensure!(
            change.r#type != Operation::Initial as i32,
            "apply takes UPDATED or DELETED changes"
        );
        self.hub.append(|inner| {
            if let Some(c) = script::to_change(inner, change) {
                inner.apply(c);
            }
        });
        Ok(())
    }

    /// Renames a device in the inventory (its hostname and FQDN), streamed
    /// as CVP does: the key and the changed fields only.
    pub fn rename_device(&self, serial: &str, hostname: &str) {
        self.inventory.rename(serial, hostname);
    }

    /// Adds or replaces a device in the inventory, as given.
    pub fn set_device(&self, device: cvp_proto::inventory::Device) {
        self.inventory.set_device(device);
    }

    /// Removes a device from the inventory.
    pub fn remove_device(&self, serial: &str) {
        self.inventory.remove_device(serial);
    }

    /// Assigns a user tag in the mainline: to the device, or to one of its
    /// interfaces.
    pub fn assign_tag(&self, serial: &str, interface: Option<&str>, label: &str, value: &str) {
        self.inventory.assign(inventory::assignment(
            serial,
            interface,
            label,
            value,
            cvp_proto::tag::CreatorType::User,
        ));
    }

    /// Assigns a system tag (CREATOR_TYPE_SYSTEM).
    pub fn assign_system_tag(&self, serial: &str, label: &str, value: &str) {
        self.inventory.assign(inventory::assignment(
            serial,
            None,
            label,
            value,
            cvp_proto::tag::CreatorType::System,
        ));
    }

    /// Removes a tag assignment.
    pub fn remove_tag(&self, serial: &str, interface: Option<&str>, label: &str, value: &str) {
        self.inventory.unassign(inventory::assignment(
            serial,
            interface,
            label,
            value,
            cvp_proto::tag::CreatorType::Unspecified,
        ));
    }

    /// Ends the open DeviceService and TagAssignmentService streams with
    /// UNAVAILABLE (the event stream is untouched); clients resubscribe.
    pub fn reset_inventory_streams(&self) {
        self.inventory.reset_streams();
    }

    /// Stops serving and ends open streams.
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        if let Some(feed) = self.feed.take() {
            feed.abort();
        }
        if let Some(mut server) = self.server.take() {
            // Graceful shutdown waits for connections to finish; a client
            // that stops reading could hold it forever, so cap the wait.
            match tokio::time::timeout(Duration::from_secs(5), &mut server).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => warn!(error = %e, "simulator server failed"),
                Ok(Err(e)) => warn!(error = %e, "simulator server task failed"),
                Err(_) => {
                    warn!("simulator connections did not close in 5s; aborting");
                    server.abort();
                }
            }
        }
        info!(addr = %self.local_addr, "CVP simulator stopped");
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        if let Some(feed) = self.feed.take() {
            feed.abort();
        }
    }
}
