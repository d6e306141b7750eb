//! The whole pipeline, in this process: the built-in simulator serving on
//! loopback, the source, the transform chain and the Kafka sink, exactly as
//! `run` wires them.

use crate::config::{units::ScalarText, ConfigBuilder};
use crate::delivery::{DeliveryObserver, DeliveryStats};
use crate::event::Op;
use crate::pipeline::Pipeline;
use crate::sinks::kafka::ExactlyOnceConfig;
use crate::sinks::{KafkaConfig, KafkaSink, Sink, SinkConfig};
use crate::transforms::{builtin, TransformConfig};
use anyhow::{anyhow, bail, Context, Result};
use cvp_simulator::{SimOptions, Simulator};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// What the bench learns from the sink: when the first and last records
/// were acknowledged and, when asked, each record's latency.
#[derive(Default)]
struct AckLog {
    inner: Mutex<AckTimes>,
    /// Keep a latency sample per record (ns from the change at CVP to the
    /// acknowledgement): exact percentiles, which the metrics' histogram
    /// buckets are too coarse for.
    samples: bool,
}

#[derive(Default)]
struct AckTimes {
    first: Option<Instant>,
    last: Option<Instant>,
    latency_ns: Vec<i64>,
}

impl DeliveryObserver for AckLog {
    fn acknowledged(&self, changed_at: Option<i64>) {
        let now = Instant::now();
        let mut t = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        t.first.get_or_insert(now);
        t.last = Some(now);
        if let (true, Some(at)) = (self.samples, changed_at) {
            let wall = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as i64);
            t.latency_ns.push(wall - at);
        }
    }
}

pub enum Kafka {
    /// librdkafka's mock cluster, in this process: what the host costs,
    /// without a broker's.
    Mock,
    /// The same with `exactly_once`: a record counts when its transaction
    /// is committed (every 100 ms, or 10,000 records).
    MockExactlyOnce,
    /// A real broker (tansu in `scripts/bench`).
    Broker(String),
    /// A real broker with transactions, `exactly_once`; each run a group
    /// of its own, so that none resumes from another's checkpoint.
    BrokerExactlyOnce(String),
}

impl Kafka {
    pub fn describe(&self) -> String {
        match self {
            Kafka::Mock => "mock cluster".into(),
            Kafka::MockExactlyOnce => "mock cluster, exactly_once".into(),
            Kafka::Broker(b) => format!("broker {b}"),
            Kafka::BrokerExactlyOnce(b) => format!("broker {b}, exactly_once"),
        }
    }

    fn sink_config(&self, topic: &str) -> SinkConfig {
        SinkConfig::Kafka(self.config(topic))
    }

    fn config(&self, topic: &str) -> KafkaConfig {
        match self {
            Kafka::Mock | Kafka::MockExactlyOnce => {
                let mut k = KafkaConfig::new("mock:9092", topic);
                k.properties
                    .insert("test.mock.num.brokers".into(), ScalarText("1".into()));
                if matches!(self, Kafka::MockExactlyOnce) {
                    let mut eos = ExactlyOnceConfig::new("cvp-bench");
                    eos.checkpoint_topic = "cvp-bench-checkpoints".into();
                    k.exactly_once = Some(eos);
                }
                k
            }
            Kafka::Broker(b) => KafkaConfig::new(b.as_str(), topic),
            Kafka::BrokerExactlyOnce(b) => {
                static RUN: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut k = KafkaConfig::new(b.as_str(), topic);
                k.exactly_once = Some(ExactlyOnceConfig::new(format!(
                    "cvp-bench-{}-{run}",
                    std::process::id()
                )));
                k
            }
        }
    }
}

/// A transform chain to measure.
pub struct Scenario {
    pub name: &'static str,
    pub transforms: Vec<TransformConfig>,
}

/// The example components build.rs builds next to the stock one.
fn example(file: &str) -> String {
    format!("{}/{file}", env!("CVP_STREAM_WASM_DIR"))
}

impl Scenario {
    pub fn all() -> Vec<Scenario> {
        vec![
            Scenario {
                name: "none",
                transforms: vec![],
            },
            Scenario::stock(),
            Scenario::three(),
        ]
    }

    pub fn stock() -> Scenario {
        Scenario {
            name: "title-to-key",
            transforms: vec![TransformConfig::new(
                "title-to-key",
                builtin::TITLE_TO_KEY_PATH,
            )],
        }
    }

    /// Three example transforms. severity-filter drops events with no known
    /// severity: here, updates to events the merge cache has evicted (they
    /// carry only the changed fields). The others pass through all three.
    pub fn three() -> Scenario {
        Scenario {
            name: "severity-filter, title-to-key, route-by-type",
            transforms: vec![
                {
                    let mut t =
                        TransformConfig::new("severity-filter", example("severity_filter.wasm"));
                    t.config
                        .insert("min_severity".into(), serde_yaml::Value::from("info"));
                    t
                },
                TransformConfig::new("title-to-key", builtin::TITLE_TO_KEY_PATH),
                TransformConfig::new("route-by-type", example("route_by_type.wasm")),
            ],
        }
    }
}

pub struct Throughput {
    pub events: u64,
    pub records: u64,
    pub seconds: f64,
    /// From the first event sent to the first record acknowledged: at
    /// start the idempotent producer waits about 0.5 s for its producer id.
    pub first_ack: f64,
    /// Events/s between the first and the last acknowledgement.
    pub steady: f64,
    /// CPU time of the whole process (simulator included) over the run's
    /// wall time: how many of the cores it kept busy.
    pub cores: f64,
}

/// Where the events come from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// The built-in simulator, as `demo` runs it.
    Simulator,
    /// Messages encoded up front (`frames.rs`): the host alone.
    Frames,
}

/// `events` live events as fast as the feed can send them.
pub async fn throughput(
    kafka: &Kafka,
    scenario: &Scenario,
    events: u64,
    topic: &str,
    feed: Feed,
) -> Result<Throughput> {
    throughput_from(&kafka.sink_config(topic), scenario, events, feed).await
}

/// The same into any sink.
pub async fn throughput_into(
    sink: &SinkConfig,
    scenario: &Scenario,
    events: u64,
) -> Result<Throughput> {
    throughput_from(sink, scenario, events, Feed::Simulator).await
}

async fn throughput_from(
    sink: &SinkConfig,
    scenario: &Scenario,
    events: u64,
    feed: Feed,
) -> Result<Throughput> {
    let log = Arc::new(AckLog::default());
    let (stats, started, cores) = match feed {
        Feed::Simulator => pipeline(sink, scenario, events, 0.0, log.clone()).await?,
        Feed::Frames => from_frames(sink, scenario, events, log.clone()).await?,
    };
    let times = log.inner.lock().unwrap_or_else(|p| p.into_inner());
    let (Some(first), Some(last)) = (times.first, times.last) else {
        bail!("no record was acknowledged");
    };
    Ok(Throughput {
        events: stats.events,
        records: stats.produced,
        seconds: last.duration_since(started).as_secs_f64(),
        first_ack: first.duration_since(started).as_secs_f64(),
        steady: stats.produced.saturating_sub(1) as f64
            / last.duration_since(first).as_secs_f64().max(1e-9),
        cores,
    })
}

/// CPU seconds this process has used (user + system), from /proc; 0
/// where that cannot be read.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name, which is in parentheses and may hold spaces.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13
    // after the name; in clock ticks of 1/100 s on Linux.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

pub struct Latency {
    pub samples: usize,
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// Samples from the first second are left out: they include the producer
/// learning the topic's partitions.
pub async fn latency(kafka: &Kafka, rate: f64, seconds: f64, topic: &str) -> Result<Latency> {
    let events = (rate * seconds) as u64;
    let log = Arc::new(AckLog {
        samples: true,
        ..AckLog::default()
    });
    pipeline(
        &kafka.sink_config(topic),
        &Scenario::stock(),
        events,
        rate,
        log.clone(),
    )
    .await?;
    let mut ns = std::mem::take(
        &mut log
            .inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .latency_ns,
    );
    let warm_up = (rate as usize).min(ns.len() / 2);
    let mut ns = ns.split_off(warm_up);
    if ns.is_empty() {
        bail!("no latency samples");
    }
    ns.sort_unstable();
    let at = |q: f64| ns[((ns.len() - 1) as f64 * q).round() as usize] as f64 / 1e6;
    Ok(Latency {
        samples: ns.len(),
        p50: at(0.5),
        p99: at(0.99),
        p999: at(0.999),
        max: at(1.0),
    })
}

/// Runs the pipeline on pre-encoded frames until all `events` are settled.
async fn from_frames(
    sink: &SinkConfig,
    scenario: &Scenario,
    events: u64,
    log: Arc<AckLog>,
) -> Result<(DeliveryStats, Instant, f64)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot open a loopback port")?;
    let addr = listener.local_addr()?;
    let frames = super::frames::Frames::new(events);
    let stop = CancellationToken::new();
    let server = tokio::spawn(frames.clone().serve(listener, stop.clone()));
    let config = config_for(addr, None, scenario, sink)?;
    let watch = CancellationToken::new();
    let _stop_watch = watch.clone().drop_guard();
    let sink = start_sink(&config, &watch).await?;
    let mut pipeline = Pipeline::build_off_runtime(config, sink).await?;
    pipeline.observe_deliveries(log);
    let (cpu, wall) = (cpu_seconds(), Instant::now());
    // The stream ends after the last frame; `once` ends the run there.
    let stats = pipeline.run(CancellationToken::new(), true).await?;
    let cores = (cpu_seconds() - cpu) / wall.elapsed().as_secs_f64();
    stop.cancel();
    let _ = server.await;
    let started = frames
        .started()
        .ok_or_else(|| anyhow!("the feed was never subscribed to"))?;
    all_settled(&stats, events)?;
    Ok((stats, started, cores))
}

/// The config `run` would read for `scenario` against CVP at `addr`.
/// Deletions make records too, so every event is one record.
fn config_for(
    addr: std::net::SocketAddr,
    token: Option<&str>,
    scenario: &Scenario,
    sink: &SinkConfig,
) -> Result<Arc<crate::config::Config>> {
    let mut cvp = ConfigBuilder::new(addr.to_string())
        .plaintext()
        .operations([Op::Updated, Op::Deleted]);
    if let Some(token) = token {
        cvp = cvp.token(token);
    }
    let config = scenario
        .transforms
        .iter()
        .cloned()
        .fold(cvp, ConfigBuilder::transform)
        .sink(sink.clone())
        .build()?;
    Ok(Arc::new(config))
}

/// The sink as `run` starts it. Kafka's health watcher would outlive the
/// run (and keep its producer): the bench only probes. Other sinks stop
/// theirs with `watch`.
async fn start_sink(config: &crate::config::Config, watch: &CancellationToken) -> Result<Sink> {
    Ok(match &config.sink {
        SinkConfig::Kafka(k) => {
            let kafka = KafkaSink::new(k)?;
            kafka.probe().await;
            kafka.begin(k).await?;
            Sink::Kafka(kafka)
        }
        other => other.start(watch).await?,
    })
}

/// Every event sent reached the sink and none failed.
fn all_settled(stats: &DeliveryStats, events: u64) -> Result<()> {
    if stats.events != events || stats.failed_delivery > 0 || stats.failed_transform > 0 {
        bail!(
            "the run lost events: {events} sent, {} received, {} delivery and {} transform failures",
            stats.events,
            stats.failed_delivery,
            stats.failed_transform
        );
    }
    Ok(())
}

/// Runs the pipeline until the simulator has sent `events` live events and
/// every record is settled. Returns the sink's stats and when the live feed
/// started.
async fn pipeline(
    sink: &SinkConfig,
    scenario: &Scenario,
    events: u64,
    rate: f64,
    log: Arc<AckLog>,
) -> Result<(DeliveryStats, Instant, f64)> {
    let token = format!("bench-{:016x}", rand::random::<u64>());
    let opts = SimOptions {
        token: Some(token.clone()),
        initial: 0,
        updates: events,
        rate,
        wall_clock: log.samples,
        prepare: true,
        ..SimOptions::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot open a loopback port")?;
    let sim = Simulator::start(opts, listener).await?;
    let config = config_for(sim.local_addr(), Some(&token), scenario, sink)?;
    let watch = CancellationToken::new();
    let _stop_watch = watch.clone().drop_guard();
    let sink = start_sink(&config, &watch).await?;
    let mut pipeline = Pipeline::build_off_runtime(config, sink).await?;
    pipeline.observe_deliveries(log);

    // Once every live event is on the wire, end the stream: the pipeline
    // then drains, and returns when Kafka has acknowledged everything.
    let shutdown = CancellationToken::new();
    let sim_task = tokio::spawn(async move {
        sim.wait_live_done().await;
        let started = sim.live_started();
        sim.shutdown().await;
        started
    });
    let (cpu, wall) = (cpu_seconds(), Instant::now());
    let stats = pipeline.run(shutdown, true).await?;
    let cores = (cpu_seconds() - cpu) / wall.elapsed().as_secs_f64();
    let started = sim_task
        .await
        .map_err(|e| anyhow!("simulator task: {e}"))?
        .ok_or_else(|| anyhow!("the simulator's live feed never started"))?;
    all_settled(&stats, events)?;
    Ok((stats, started, cores))
}
