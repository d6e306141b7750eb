//! The RabbitMQ (AMQP 0-9-1) sink against the real RabbitMQ
//! (127.0.0.1:5672, guest/guest), in-process: the CVP simulator -> the
//! pipeline -> `sink.amqp`, read back from queues the test declares (names
//! with a random suffix, deleted afterwards) with a connection of its own.
//! A missing RabbitMQ fails the tests; it never skips them.
//!
//! The server is made unreachable with a loopback proxy the test controls
//! (`tests/support/mqttamqp.rs`); the shared RabbitMQ is never stopped.
//! The tests run one at a time (`SERIAL`): the sink's metrics are the
//! process's, and some tests read them.

#[path = "support/mqttamqp.rs"]
mod mqttamqp;

use cvp_stream::metrics;
use cvp_stream::sinks::{AmqpConfig, SinkConfig};
use cvp_stream::transforms::TransformConfig;
use lapin::options::{BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties};
use mqttamqp::{
    entry, live_events, now_ns, parse, require_server, run_pipeline, run_pipeline_counting,
    simulator, simulator_at, unique, Proxy,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const RABBITMQ: &str = "127.0.0.1:5672";

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A message as read back.
#[derive(Debug, Clone)]
struct Got {
    exchange: String,
    routing_key: String,
    payload: Vec<u8>,
    headers: BTreeMap<String, String>,
    delivery_mode: Option<u8>,
}

impl Got {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.payload)
            )
        })
    }

    fn identity(&self) -> (String, String) {
        let v = self.json();
        (
            v["key"]["key"].as_str().unwrap_or("").to_string(),
            v["description"].as_str().unwrap_or("").to_string(),
        )
    }
}

/// The test's own connection: declares queues, reads them, deletes them.
struct Reader {
    _conn: Connection,
    channel: Channel,
    queues: Vec<String>,
}

impl Reader {
    async fn start() -> Reader {
        require_server("RabbitMQ (AMQP)", RABBITMQ).await;
        let conn = Connection::connect(
            &format!("amqp://guest:guest@{RABBITMQ}/%2f"),
            ConnectionProperties::default(),
        )
        .await
        .unwrap_or_else(|e| {
            panic!("RabbitMQ at {RABBITMQ} refused guest/guest ({e}); these tests need it running")
        });
        let channel = conn.create_channel().await.expect("channel");
        Reader {
            _conn: conn,
            channel,
            queues: Vec::new(),
        }
    }

    async fn declare(&mut self, name: &str) {
        self.channel
            .queue_declare(name, QueueDeclareOptions::default(), FieldTable::default())
            .await
            .expect("queue.declare");
        self.queues.push(name.to_string());
    }

    /// Everything in `queue` now.
    async fn drain(&self, queue: &str) -> Vec<Got> {
        let mut out = Vec::new();
        while let Some(m) = self
            .channel
            .basic_get(queue, BasicGetOptions { no_ack: true })
            .await
            .expect("basic.get")
        {
            let d = m.delivery;
            let headers = d
                .properties
                .headers()
                .as_ref()
                .map(|t| {
                    t.inner()
                        .iter()
                        .map(|(k, v)| {
                            let v = match v {
                                AMQPValue::LongString(s) => {
                                    String::from_utf8_lossy(s.as_bytes()).into_owned()
                                }
                                other => format!("{other:?}"),
                            };
                            (k.to_string(), v)
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push(Got {
                exchange: d.exchange.to_string(),
                routing_key: d.routing_key.to_string(),
                payload: d.data,
                headers,
                delivery_mode: *d.properties.delivery_mode(),
            });
        }
        out
    }

    /// Reads `queue` until `n` messages came (within `within`), then a
    /// moment more so that extra ones would show.
    async fn read(&self, queue: &str, n: usize, within: Duration) -> Vec<Got> {
        let deadline = Instant::now() + within;
        let mut got = Vec::new();
        while got.len() < n {
            got.extend(self.drain(queue).await);
            assert!(
                Instant::now() < deadline || got.len() >= n,
                "only {} of {n} messages arrived in {queue} within {within:?}",
                got.len()
            );
            if got.len() < n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        got.extend(self.drain(queue).await);
        got
    }

    async fn cleanup(&self) {
        for q in &self.queues {
            let _ = self
                .channel
                .queue_delete(q, QueueDeleteOptions::default())
                .await;
        }
    }
}

fn sink_config(server: &str, topic: &str) -> AmqpConfig {
    let mut c = AmqpConfig::new(format!("amqp://{server}/%2f"), topic);
    c.heartbeat = Duration::from_secs(5);
    c.flush_timeout = Duration::from_secs(45);
    c
}

fn route_to(queue: &str) -> TransformConfig {
    let mut t = TransformConfig::new(
        "route",
        format!("{}/route_by_type.wasm", env!("CVP_STREAM_WASM_DIR")),
    );
    t.config.insert(
        "routes".into(),
        serde_yaml::from_str(&format!("{{ TEST_EVENT: {queue} }}")).unwrap(),
    );
    t
}

fn tally(got: &[Got]) -> (BTreeMap<(String, String), usize>, usize) {
    let mut t = BTreeMap::new();
    for g in got {
        *t.entry(g.identity()).or_insert(0) += 1;
    }
    let dups = t.values().map(|n| n - 1).sum();
    (t, dups)
}

fn expected_tally(lines: &[String]) -> BTreeMap<(String, String), usize> {
    lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                (
                    v["value"]["key"]["key"].as_str().unwrap().to_string(),
                    v["value"]["description"].as_str().unwrap().to_string(),
                ),
                1,
            )
        })
        .collect()
}

fn gauge(family: &str) -> i64 {
    let text = metrics::get().encode();
    let series = format!("cvp_stream_{family}{{sink=\"amqp\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as i64)
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
}

/// The exact messages: routed by the record's topic (route-by-type sends
/// every event to the test's queue through the default exchange), the
/// event as JSON, the key and the transform's headers as AMQP headers,
/// persistent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_records() {
    let _serial = SERIAL.lock().await;
    let mut reader = Reader::start().await;
    let queue = unique("cvptest");
    reader.declare(&queue).await;
    let lines = live_events(25);
    let stats = run_pipeline(
        simulator(&lines).await,
        SinkConfig::Amqp(sink_config(RABBITMQ, "unused")),
        vec![route_to(&queue)],
        None,
        CancellationToken::new(),
    )
    .await
    .expect("pipeline");
    let got = reader.read(&queue, 25, Duration::from_secs(20)).await;
    reader.cleanup().await;
    assert_eq!(stats.produced, 25, "{stats:?}");
    assert_eq!(stats.failed_delivery, 0);
    assert_eq!(got.len(), 25, "nothing more, nothing twice");
    for (g, line) in got.iter().zip(&lines) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let key = v["value"]["key"]["key"].as_str().unwrap().to_string();
        assert_eq!(g.json(), v["value"]);
        assert_eq!(g.exchange, "");
        assert_eq!(g.routing_key, queue);
        assert_eq!(g.delivery_mode, Some(2), "persistent");
        let expected: BTreeMap<String, String> = [
            ("key", key.as_str()),
            ("cvp-event-type", "TEST_EVENT"),
            ("cvp-severity", "error"),
            ("cvp-event-key", key.as_str()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(g.headers, expected);
    }
}

/// Records no queue takes come back (mandatory) and count as failures:
/// each goes to the dead-letter queue, saying why and where it was going.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unroutable_records_are_dead_lettered() {
    let _serial = SERIAL.lock().await;
    let mut reader = Reader::start().await;
    let missing = unique("cvptest-nowhere");
    let dlq = unique("cvptest-dlq");
    reader.declare(&dlq).await;
    let lines = live_events(10);
    let mut cfg = sink_config(RABBITMQ, &missing);
    cfg.dead_letter_topic = Some(dlq.clone());
    let stats = run_pipeline(
        simulator(&lines).await,
        SinkConfig::Amqp(cfg),
        vec![],
        None,
        CancellationToken::new(),
    )
    .await
    .expect("pipeline");
    let got = reader.read(&dlq, 10, Duration::from_secs(20)).await;
    reader.cleanup().await;
    assert_eq!(stats.failed_delivery, 10, "{stats:?}");
    assert_eq!(stats.produced, 10, "the dead letters were confirmed");
    assert_eq!(got.len(), 10);
    let (t, _) = tally(&got);
    assert_eq!(t, expected_tally(&lines));
    for g in &got {
        assert_eq!(g.headers["cvp-dead-letter-reason"], "undeliverable");
        assert_eq!(g.headers["cvp-original-topic"], missing);
        assert!(
            g.headers["cvp-error"].contains("NO_ROUTE"),
            "{:?}",
            g.headers
        );
    }
}

/// RabbitMQ goes away mid-run (connections dropped, new ones refused for
/// 3 s) and comes back: every event arrives, none lost; duplicates (re-sent
/// records whose confirm was lost) are counted and at most what was in
/// flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_unreachable_mid_run_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let mut reader = Reader::start().await;
    let queue = unique("cvptest");
    reader.declare(&queue).await;
    let proxy = Proxy::start(RABBITMQ).await;
    let lines = live_events(1500);
    let mut cfg = sink_config(&proxy.addr.to_string(), &queue);
    cfg.max_in_flight = 200;
    let run = tokio::spawn(run_pipeline(
        simulator_at(&lines, 500.0).await,
        SinkConfig::Amqp(cfg),
        vec![],
        None,
        CancellationToken::new(),
    ));
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 300 {
        got.extend(reader.drain(&queue).await);
        assert!(Instant::now() < deadline, "no traffic before the cut");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(gauge("sink_up"), 0, "sink_up while RabbitMQ is away");
    proxy.restore();
    let stats = tokio::time::timeout(Duration::from_secs(50), run)
        .await
        .expect("the pipeline ends after the outage")
        .unwrap()
        .expect("pipeline");
    let rest = reader
        .read(
            &queue,
            1500usize.saturating_sub(got.len()),
            Duration::from_secs(20),
        )
        .await;
    got.extend(rest);
    reader.cleanup().await;
    assert_eq!(stats.produced, 1500, "{stats:?}");
    assert_eq!(stats.failed_delivery, 0);
    assert!(
        proxy.connections.load(Ordering::SeqCst) >= 2,
        "it reconnected"
    );
    let (t, duplicates) = tally(&got);
    let distinct: BTreeMap<_, _> = t.keys().map(|k| (k.clone(), 1)).collect();
    assert_eq!(distinct, expected_tally(&lines), "every event, none lost");
    eprintln!("{duplicates} duplicate(s) after the outage");
    assert!(
        duplicates <= 200,
        "duplicates ({duplicates}) are at most the records in flight (200)"
    );
}

/// With RabbitMQ away from the start, the sink holds no more than
/// `max_in_flight` records (plus the batch that reached it) and CVP's
/// stream stalls; once it is back everything arrives, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bounded_while_server_away() {
    let _serial = SERIAL.lock().await;
    let mut reader = Reader::start().await;
    let queue = unique("cvptest");
    reader.declare(&queue).await;
    let proxy = Proxy::start(RABBITMQ).await;
    proxy.cut();
    let total = 20_000;
    let lines = live_events(total);
    let sent = Arc::new(AtomicU64::new(0));
    let mut cfg = sink_config(&proxy.addr.to_string(), &queue);
    cfg.max_in_flight = 50;
    let run = tokio::spawn(run_pipeline_counting(
        simulator(&lines).await,
        SinkConfig::Amqp(cfg),
        vec![],
        None,
        CancellationToken::new(),
        sent.clone(),
    ));
    let mut last = 0;
    let mut peak_in_flight = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak_in_flight = peak_in_flight.max(gauge("sink_in_flight"));
        let now = sent.load(Ordering::SeqCst);
        if now == last && now > 0 {
            break;
        }
        last = now;
        assert!(Instant::now() < deadline, "CVP's stream never stalled");
    }
    assert!(
        (last as usize) < total,
        "the source stalled before the end ({last} of {total} sent)"
    );
    assert_eq!(gauge("sink_up"), 0);
    assert!(
        peak_in_flight <= 50 + 256,
        "records held by the sink: {peak_in_flight} (max_in_flight 50 + one batch of 256)"
    );
    proxy.restore();
    let stats = tokio::time::timeout(Duration::from_secs(50), run)
        .await
        .expect("the pipeline ends once the server is back")
        .unwrap()
        .expect("pipeline");
    let got = reader.read(&queue, total, Duration::from_secs(20)).await;
    reader.cleanup().await;
    assert_eq!(stats.produced, total as u64);
    let (t, duplicates) = tally(&got);
    assert_eq!(duplicates, 0, "nothing was sent before the server came");
    assert_eq!(t, expected_tally(&lines));
}

/// A first run delivers 30 events and keeps its checkpoint; while it is
/// down 4 events change at CVP; a second run from the checkpoint sends
/// exactly those 4, and nothing from before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_from_checkpoint() {
    let _serial = SERIAL.lock().await;
    let mut reader = Reader::start().await;
    let queue = unique("cvptest");
    reader.declare(&queue).await;
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("checkpoint.json");
    let lines = live_events(30);
    let first = run_pipeline(
        simulator(&lines).await,
        SinkConfig::Amqp(sink_config(RABBITMQ, &queue)),
        vec![],
        Some(&cp),
        CancellationToken::new(),
    )
    .await
    .expect("first run");
    assert_eq!(first.produced, 30);
    let mut got = reader.read(&queue, 30, Duration::from_secs(20)).await;

    let mut expected = expected_tally(&lines);
    let state: Vec<String> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let e = parse(l).value.unwrap();
            let key = e.key.as_ref().unwrap();
            let created = key.timestamp.as_ref().unwrap();
            let created = created.seconds * 1_000_000_000 + created.nanos as i64;
            let name = key.key.clone().unwrap_or_default();
            if [2, 15, 16, 28].contains(&(i + 1)) {
                let desc = format!("changed while away {}", i + 1);
                expected.insert((name.clone(), desc.clone()), 1);
                entry("INITIAL", &name, created, now_ns() + i as i64, &desc)
            } else {
                let updated = e.last_updated_time.as_ref().unwrap();
                let updated = updated.seconds * 1_000_000_000 + updated.nanos as i64;
                entry(
                    "INITIAL",
                    &name,
                    created,
                    updated,
                    e.description.as_deref().unwrap_or(""),
                )
            }
        })
        .collect();
    let second = run_pipeline(
        simulator(&state).await,
        SinkConfig::Amqp(sink_config(RABBITMQ, &queue)),
        vec![],
        Some(&cp),
        CancellationToken::new(),
    )
    .await
    .expect("second run");
    got.extend(reader.read(&queue, 4, Duration::from_secs(20)).await);
    reader.cleanup().await;
    assert_eq!(second.produced, 4, "{second:?}");
    let (t, duplicates) = tally(&got);
    assert_eq!(duplicates, 0, "{t:?}");
    assert_eq!(t, expected);
}

/// `validate` checks the block without connecting; the password never shows.
#[test]
fn validate_checks_offline() {
    SinkConfig::Amqp(AmqpConfig::new("amqp://127.0.0.1:1", "t"))
        .check_offline()
        .expect("valid offline");
    let mut c = AmqpConfig::new("amqp://127.0.0.1:1", "t");
    c.routing_key = "{what}".into();
    let e = SinkConfig::Amqp(c).check_offline().unwrap_err().to_string();
    assert!(e.contains("sink.amqp.routing_key"), "{e}");
    let c: AmqpConfig =
        serde_yaml::from_str("url: amqp://x\ntopic: t\nusername: u\npassword: hunter2\n").unwrap();
    assert!(!format!("{c:?}").contains("hunter2"));
    assert!(serde_yaml::from_str::<AmqpConfig>("url: amqp://x\ntopic: t\nnope: 1\n").is_err());
}

/// RabbitMQ goes away mid-run and the service is stopped while it is away:
/// the run ends within the flush timeout, and the checkpoint stops before
/// the records still held. The next run (server back) resumes from it and
/// sends exactly those: every event arrives; the only duplicates are
/// records RabbitMQ had taken when the connection was cut before their
/// confirm came back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_while_server_away_then_restart() {
    let _serial = SERIAL.lock().await;
    let mut reader = Reader::start().await;
    let queue = unique("cvptest");
    reader.declare(&queue).await;
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("checkpoint.json");
    let proxy = Proxy::start(RABBITMQ).await;
    let lines = live_events(40);
    let sent = Arc::new(AtomicU64::new(0));
    let mut cfg = sink_config(&proxy.addr.to_string(), &queue);
    cfg.flush_timeout = Duration::from_secs(2);
    let shutdown = CancellationToken::new();
    let sim = simulator_at(&lines, 20.0).await;
    let run = run_pipeline_counting(
        sim,
        SinkConfig::Amqp(cfg),
        vec![],
        Some(&cp),
        shutdown.clone(),
        sent.clone(),
    );
    let stop = async {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while got.len() < 10 || !cp.exists() {
            got.extend(reader.drain(&queue).await);
            assert!(Instant::now() < deadline, "no traffic before the cut");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        proxy.cut();
        while sent.load(Ordering::SeqCst) < 40 {
            assert!(
                Instant::now() < deadline,
                "the simulator did not send its feed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        shutdown.cancel();
        (Instant::now(), got)
    };
    let (first, (stopped, mut got)) =
        tokio::join!(tokio::time::timeout(Duration::from_secs(40), run), stop);
    let first = first
        .expect("shutdown ends the run within the flush timeout")
        .expect("first run");
    assert!(stopped.elapsed() < Duration::from_secs(10));
    assert!(first.produced >= 10 && first.produced < 40, "{first:?}");

    // CVP's state at the second start: the same 40 events.
    let state: Vec<String> = lines
        .iter()
        .map(|l| l.replace("\"UPDATED\"", "\"INITIAL\""))
        .collect();
    let second = run_pipeline(
        simulator(&state).await,
        SinkConfig::Amqp(sink_config(RABBITMQ, &queue)),
        vec![],
        Some(&cp),
        CancellationToken::new(),
    )
    .await
    .expect("second run");
    assert_eq!(first.produced + second.produced, 40, "{first:?} {second:?}");
    let rest = 40usize.saturating_sub(got.len());
    got.extend(reader.read(&queue, rest, Duration::from_secs(20)).await);
    reader.cleanup().await;
    let (t, duplicates) = tally(&got);
    let distinct: BTreeMap<_, _> = t.keys().map(|k| (k.clone(), 1)).collect();
    assert_eq!(distinct, expected_tally(&lines), "every event, none lost");
    eprintln!("{duplicates} duplicate(s) across the restart");
    assert!(duplicates <= 40 - first.produced as usize);
}
