//! Helpers for the MQTT and AMQP sink tests: a loopback TCP proxy the test
//! can cut and restore (the shared system servers are never stopped), the
//! in-process pipeline run against the simulator, unique names per run, and
//! the scripted events whose records are known exactly.

#![allow(dead_code)] // each test file uses its own subset

use cvp_simulator::SimHandle;
use cvp_stream::config::ConfigBuilder;
use cvp_stream::delivery::{CheckpointConfig, DeliveryStats};
use cvp_stream::event::Op;
use cvp_stream::pipeline::Pipeline;
use cvp_stream::sinks::SinkConfig;
use cvp_stream::sources::cvp::Resume;
use cvp_stream::transforms::TransformConfig;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "tok-mqttamqp";

/// A name no other run uses: `prefix` and a random suffix.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:012x}", rand::random::<u64>() & 0xffff_ffff_ffff)
}

/// Fails (never skips) with a clear message when `addr` does not answer.
pub async fn require_server(what: &str, addr: &str) {
    match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => panic!("{what} is not reachable at {addr} ({e}); these tests need it running (see the brief / CI setup)"),
        Err(_) => panic!("{what} did not answer at {addr} within 5s; these tests need it running"),
    }
}

/// A loopback TCP proxy to `upstream`: `cut` drops every connection and
/// refuses new ones (a server gone away), `restore` lets them through again.
pub struct Proxy {
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    generation: Arc<Mutex<CancellationToken>>,
    /// Connections accepted and passed through, in all.
    pub connections: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Proxy {
    pub async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let generation = Arc::new(Mutex::new(CancellationToken::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let upstream = upstream.to_string();
        {
            let (cut, generation, connections, stop) = (
                cut.clone(),
                generation.clone(),
                connections.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let (mut client, _) = tokio::select! {
                        a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
                        _ = stop.cancelled() => return,
                    };
                    if cut.load(Ordering::SeqCst) {
                        drop(client); // refused: closed at once
                        continue;
                    }
                    let token = generation.lock().unwrap().clone();
                    let upstream = upstream.clone();
                    connections.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(&upstream).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = token.cancelled() => {}
                        }
                    });
                }
            });
        }
        Proxy {
            addr,
            cut,
            generation,
            connections,
            stop,
        }
    }

    /// The server goes away: open connections are dropped, new ones closed.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        let mut g = self.generation.lock().unwrap();
        g.cancel();
        *g = CancellationToken::new();
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.generation.lock().unwrap().cancel();
    }
}

fn rfc3339(ns: i64) -> String {
    humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(ns as u64)).to_string()
}

pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// One recording line: event `key` created at `created`, changed at
/// `updated`, with `description` (which identifies the change).
pub fn entry(op: &str, key: &str, created: i64, updated: i64, description: &str) -> String {
    serde_json::json!({
        "type": op,
        "time": rfc3339(updated),
        "value": {
            "key": { "key": key, "timestamp": rfc3339(created) },
            "severity": "EVENT_SEVERITY_ERROR",
            "title": format!("Title of {key}"),
            "description": description,
            "eventType": "TEST_EVENT",
            "lastUpdatedTime": rfc3339(updated),
        }
    })
    .to_string()
}

pub fn parse(line: &str) -> cvp_proto::event::EventStreamResponse {
    cvp_proto::json::parse_stream_response(line).unwrap()
}

/// `n` live UPDATED events, keys `ev-0001`..., a millisecond apart, an hour
/// ago, starting at `base`.
pub fn live_events_at(n: usize, base: i64, op: &str) -> Vec<String> {
    (1..=n)
        .map(|i| {
            let t = base + i as i64 * 1_000_000;
            entry(op, &format!("ev-{i:04}"), t, t, &format!("event {i}"))
        })
        .collect()
}

pub fn live_events(n: usize) -> Vec<String> {
    live_events_at(n, now_ns() - 3_600_000_000_000, "UPDATED")
}

pub async fn simulator(lines: &[String]) -> SimHandle {
    simulator_at(lines, 0.0).await
}

/// The live feed at `rate` events/s (0: as fast as it goes).
pub async fn simulator_at(lines: &[String], rate: f64) -> SimHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    cvp_simulator::Simulator::start(
        cvp_simulator::SimOptions {
            token: Some(TOKEN.into()),
            script: lines.iter().map(|l| parse(l)).collect(),
            rate,
            ..cvp_simulator::SimOptions::default()
        },
        listener,
    )
    .await
    .expect("simulator")
}

/// The pipeline (no transform: key = event key, value = the event as
/// JSON) from `sim` into `sink`, until the simulator has sent its feed and
/// every record is settled. With `checkpoint`, resumes from it and keeps it.
pub async fn run_pipeline(
    sim: SimHandle,
    sink: SinkConfig,
    transforms: Vec<TransformConfig>,
    checkpoint: Option<&Path>,
    shutdown: CancellationToken,
) -> anyhow::Result<DeliveryStats> {
    run_pipeline_counting(
        sim,
        sink,
        transforms,
        checkpoint,
        shutdown,
        Default::default(),
    )
    .await
}

/// [`run_pipeline`], keeping `sent` up to date with the live events the
/// simulator has sent (how far the source got: backpressure shows there).
pub async fn run_pipeline_counting(
    sim: SimHandle,
    sink: SinkConfig,
    transforms: Vec<TransformConfig>,
    checkpoint: Option<&Path>,
    shutdown: CancellationToken,
    sent: Arc<AtomicU64>,
) -> anyhow::Result<DeliveryStats> {
    let config = ConfigBuilder::new(sim.local_addr().to_string())
        .token(TOKEN)
        .plaintext()
        .operations([Op::Updated, Op::Deleted])
        .sink(sink);
    let mut config = transforms
        .into_iter()
        .fold(config, ConfigBuilder::transform)
        .build()?;
    if let Some(path) = checkpoint {
        config.checkpoint = Some(CheckpointConfig {
            path: path.to_path_buf(),
            interval: Duration::from_millis(50),
        });
    }
    let started = config.sink.start(&shutdown).await?;
    let resume_from =
        checkpoint.and_then(|p| cvp_stream::delivery::checkpoint::read(p).ok().flatten());
    let config = Arc::new(config);
    let mut pipeline = Pipeline::build_off_runtime(config, started).await?;
    if checkpoint.is_some() {
        pipeline.resume_from(Resume::new(resume_from.as_ref(), None));
    }
    let sim_task = tokio::spawn(async move {
        {
            let done = sim.wait_live_done();
            tokio::pin!(done);
            loop {
                tokio::select! {
                    _ = &mut done => break,
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {
                        sent.store(sim.stats().sent_updated, Ordering::SeqCst);
                    }
                }
            }
        }
        sent.store(sim.stats().sent_updated, Ordering::SeqCst);
        // A feed with no live part is "done" at once: the source must have
        // had the initial state (its end marker) before the stream ends.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while sim.stats().sent_initial_sync_complete == 0 && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sim.shutdown().await;
    });
    let stats = pipeline.run(shutdown, true).await;
    let _ = sim_task.await;
    stats
}
