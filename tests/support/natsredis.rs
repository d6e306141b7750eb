//! Shared parts of the NATS and Redis sink tests: a loopback TCP proxy the
//! test can cut and restore (the server made unreachable without touching
//! the shared system service), scripted CVP feeds whose records are known
//! exactly, and the in-process pipeline run against them.

#![allow(dead_code)] // each test file uses its own subset

use cvp_proto::event::EventStreamResponse;
use cvp_simulator::{SimHandle, SimOptions, Simulator};
use cvp_stream::config::{Config, ConfigBuilder};
use cvp_stream::delivery::{CheckpointConfig, DeliveryStats};
use cvp_stream::pipeline::Pipeline;
use cvp_stream::sinks::SinkConfig;
use cvp_stream::sources::cvp::Resume;
use cvp_stream::transforms::TransformConfig;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "tok-natsredis";

/// A name no other test or run uses: `prefix` and a random suffix.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{:08x}", rand::random::<u32>())
}

/// A TCP proxy on a loopback port in front of `upstream`. `cut` drops every
/// connection and refuses new ones (each is closed at once) until `restore`;
/// `swallow_replies` lets requests through but drops what the server says
/// (stored, never acknowledged: the case that makes resends).
pub struct Proxy {
    pub addr: std::net::SocketAddr,
    cut: Arc<AtomicBool>,
    swallow: Arc<AtomicBool>,
    generation: Arc<Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl Proxy {
    pub async fn start(upstream: &str) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let swallow = Arc::new(AtomicBool::new(false));
        let generation = Arc::new(Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        let upstream = upstream.to_string();
        {
            let (cut, generation, stop) = (cut.clone(), generation.clone(), stop.clone());
            let swallow = swallow.clone();
            tokio::spawn(async move {
                loop {
                    let conn = tokio::select! {
                        c = listener.accept() => c,
                        _ = stop.cancelled() => return,
                    };
                    let Ok((client, _)) = conn else { continue };
                    if cut.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let token = generation.lock().unwrap().clone();
                    let upstream = upstream.clone();
                    let swallow = swallow.clone();
                    tokio::spawn(async move {
                        let Ok(server) = TcpStream::connect(&upstream).await else {
                            return;
                        };
                        let (mut client_rx, mut client_tx) = client.into_split();
                        let (mut server_rx, mut server_tx) = server.into_split();
                        let up = tokio::io::copy(&mut client_rx, &mut server_tx);
                        let down = async {
                            use tokio::io::{AsyncReadExt, AsyncWriteExt};
                            let mut buf = vec![0u8; 64 * 1024];
                            loop {
                                let n = match server_rx.read(&mut buf).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => n,
                                };
                                if swallow.load(Ordering::SeqCst) {
                                    continue;
                                }
                                if client_tx.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        };
                        tokio::select! {
                            _ = up => {}
                            _ = down => {}
                            _ = token.cancelled() => {}
                        }
                    });
                }
            });
        }
        Proxy {
            addr,
            cut,
            swallow,
            generation,
            stop,
        }
    }

    /// The server is unreachable: open connections dropped, new ones closed.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        let mut g = self.generation.lock().unwrap();
        g.cancel();
        *g = CancellationToken::new();
    }

    /// Requests still reach the server; its answers are dropped.
    pub fn swallow_replies(&self) {
        self.swallow.store(true, Ordering::SeqCst);
    }

    /// Everything passes again, and new connections are accepted.
    pub fn restore(&self) {
        self.swallow.store(false, Ordering::SeqCst);
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        self.generation.lock().unwrap().cancel();
    }
}

/// The record event `i` of a [`feed`] becomes with `title_to_key`.
pub fn title(i: usize) -> String {
    format!("title-{i}")
}

pub fn description(i: usize) -> String {
    format!("description of event {i}")
}

/// A time (ns-precise RFC 3339) `i` ms after a fixed base.
fn time(i: usize) -> String {
    let ms = i % 1000;
    let s = (i / 1000) % 60;
    let m = i / 60_000;
    format!("2026-11-20T10:{m:02}:{s:02}.{ms:03}Z")
}

/// Script lines for events `range`, each with its own key, as `kind`
/// (INITIAL or UPDATED) entries with increasing times.
pub fn feed(range: std::ops::Range<usize>, kind: &str) -> Vec<EventStreamResponse> {
    range
        .map(|i| {
            let t = time(i);
            let line = format!(
                r#"{{"value":{{"key":{{"key":"ev-{i:06}","timestamp":"{t}"}},"severity":"EVENT_SEVERITY_WARNING","title":"{}","description":"{}","eventType":"TEST_EVENT","lastUpdatedTime":"{t}","ruleId":"TEST_EVENT"}},"time":"{t}","type":"{kind}"}}"#,
                title(i),
                description(i)
            );
            cvp_proto::json::parse_stream_response(&line).expect("a valid script line")
        })
        .collect()
}

/// The simulator serving `script`, at `rate` live events a second (0: as
/// fast as the host reads).
pub async fn simulator(script: Vec<EventStreamResponse>, rate: f64) -> SimHandle {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    Simulator::start(
        SimOptions {
            token: Some(TOKEN.into()),
            script,
            rate,
            ..SimOptions::default()
        },
        listener,
    )
    .await
    .expect("simulator")
}

/// The config: the simulator at `sim`, `transforms` in order, `sink`.
pub fn config(
    sim: &SimHandle,
    transforms: Vec<TransformConfig>,
    sink: SinkConfig,
    checkpoint: Option<&Path>,
) -> Config {
    let mut b = ConfigBuilder::new(sim.local_addr().to_string())
        .token(TOKEN)
        .plaintext();
    for t in transforms {
        b = b.transform(t);
    }
    let mut config = b.sink(sink).build().expect("a valid config");
    config.checkpoint = checkpoint.map(|path| CheckpointConfig {
        path: path.to_path_buf(),
        interval: Duration::from_millis(50),
    });
    config
}

/// The stock transform: key = title, value = description.
pub fn title_to_key() -> TransformConfig {
    TransformConfig::new("title-to-key", "builtin:title-to-key")
}

/// Ends the simulator once its live feed is sent (so a `once` run ends when
/// every record is settled), or at `shutdown`. Meanwhile the receiver tells
/// how many live events it has handed to the pipeline.
pub fn end_when_done(
    sim: SimHandle,
    shutdown: CancellationToken,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::watch::Receiver<u64>,
) {
    let (tx, rx) = tokio::sync::watch::channel(0);
    let task = tokio::spawn(async move {
        {
            let done = sim.wait_live_done();
            tokio::pin!(done);
            loop {
                let _ = tx.send(sim.stats().sent_updated);
                tokio::select! {
                    _ = &mut done => break,
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                }
            }
        }
        let _ = tx.send(sim.stats().sent_updated);
        sim.shutdown().await;
    });
    (task, rx)
}

/// Runs the pipeline until the simulator ends its stream (`once`), resuming
/// from the checkpoint if there is one; or until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> anyhow::Result<DeliveryStats> {
    let checkpoint = match &config.checkpoint {
        Some(c) => cvp_stream::delivery::checkpoint::read(&c.path)?,
        None => None,
    };
    let sink = config.sink.start(&shutdown).await?;
    let config = Arc::new(config);
    let mut pipeline = Pipeline::build_off_runtime(config, sink).await?;
    pipeline.resume_from(Resume::new(checkpoint.as_ref(), None));
    pipeline.run(shutdown, true).await
}

/// [`end_when_done`] and [`run`] together.
pub async fn run_to_end(
    config: Config,
    sim: SimHandle,
    shutdown: CancellationToken,
) -> anyhow::Result<DeliveryStats> {
    let (ender, _) = end_when_done(sim, shutdown.clone());
    let stats = run(config, shutdown).await;
    let _ = ender.await;
    stats
}

/// Polls `check` every 20 ms until it holds, failing after `limit` with `what`.
pub async fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of a sink counter for `sink` and `topic` in this process.
pub fn delivered(sink: &str, topic: &str) -> u64 {
    cvp_stream::metrics::get()
        .sink_records_delivered
        .get_or_create(&cvp_stream::metrics::labels([
            ("sink", sink),
            ("topic", topic),
        ]))
        .get()
}

/// The sink's in-flight gauge in this process.
pub fn in_flight(sink: &str) -> i64 {
    cvp_stream::metrics::get()
        .sink_in_flight
        .get_or_create(&cvp_stream::metrics::labels([("sink", sink)]))
        .get()
}

/// A server of our own on a free loopback port (for what the shared one
/// is not set up for: credentials), stopped when dropped.
pub struct PrivateServer {
    child: std::process::Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl PrivateServer {
    /// Runs `program` with the arguments `args` makes from (port, a temp
    /// dir), and waits until the port accepts connections.
    pub fn start(program: &str, args: impl FnOnce(u16, &Path) -> Vec<String>) -> PrivateServer {
        let dir = tempfile::tempdir().unwrap();
        let port = super::support::free_port();
        let child = std::process::Command::new(program)
            .args(args(port, dir.path()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {program} ({e}): it is installed with the server these tests use"
                )
            });
        let mut server = PrivateServer {
            child,
            port,
            _dir: dir,
        };
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("{program} exited ({status}) before it listened on port {port}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{program} did not come up on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
