//! The MQTT sink against the real Mosquitto (127.0.0.1:1883), in-process:
//! the CVP simulator -> the pipeline -> `sink.mqtt`, read back with an
//! MQTT 5 subscriber of the test's own. Each test uses topics and client
//! ids of its own (a random suffix) and removes its session afterwards.
//! A missing Mosquitto fails the tests; it never skips them.
//!
//! The server is made unreachable with a loopback proxy the test controls
//! (`tests/support/mqttamqp.rs`); the shared Mosquitto is never stopped.
//! The tests run one at a time (`SERIAL`): the sink's metrics are the
//! process's, and one test reads them.

#[path = "support/mqttamqp.rs"]
mod mqttamqp;

use cvp_stream::metrics;
use cvp_stream::sinks::mqtt::MqttProtocol;
use cvp_stream::sinks::{MqttConfig, SinkConfig};
use cvp_stream::transforms::TransformConfig;
use mqttamqp::{
    entry, live_events, now_ns, parse, require_server, run_pipeline, run_pipeline_counting,
    simulator, simulator_at, unique, Proxy,
};
use rumqttc::v5;
use rumqttc::v5::mqttbytes::QoS;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const MOSQUITTO: &str = "127.0.0.1:1883";

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A message as the subscriber got it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Got {
    topic: String,
    payload: Vec<u8>,
    properties: Vec<(String, String)>,
    retain: bool,
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

    /// (event key, description): what identifies a change.
    fn identity(&self) -> (String, String) {
        let v = self.json();
        (
            v["key"]["key"].as_str().unwrap_or("").to_string(),
            v["description"].as_str().unwrap_or("").to_string(),
        )
    }
}

/// An independent MQTT 5 subscriber (its own connection, straight to
/// Mosquitto), collecting everything under `filter`.
struct Subscriber {
    got: Arc<Mutex<Vec<Got>>>,
    stop: CancellationToken,
}

impl Subscriber {
    async fn start(filter: &str) -> Subscriber {
        require_server("Mosquitto (MQTT)", MOSQUITTO).await;
        let mut o = v5::MqttOptions::new(unique("sub"), "127.0.0.1", 1883);
        o.set_keep_alive(Duration::from_secs(5));
        let (client, mut events) = v5::AsyncClient::new(o, 100);
        client
            .subscribe(filter, QoS::AtLeastOnce)
            .await
            .expect("subscribe");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let ev = tokio::time::timeout_at(deadline.into(), events.poll())
                .await
                .unwrap_or_else(|_| panic!("Mosquitto at {MOSQUITTO} did not confirm the subscription within 10s"))
                .unwrap_or_else(|e| panic!("Mosquitto at {MOSQUITTO} is not reachable ({e}); these tests need it running"));
            if let v5::Event::Incoming(v5::mqttbytes::v5::Packet::SubAck(_)) = ev {
                break;
            }
        }
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        {
            let (got, stop) = (got.clone(), stop.clone());
            tokio::spawn(async move {
                let _client = client; // the event loop ends when it drops
                loop {
                    let ev = tokio::select! {
                        ev = events.poll() => ev,
                        _ = stop.cancelled() => return,
                    };
                    match ev {
                        Ok(v5::Event::Incoming(v5::mqttbytes::v5::Packet::Publish(p))) => {
                            got.lock().unwrap().push(Got {
                                topic: String::from_utf8_lossy(&p.topic).into_owned(),
                                payload: p.payload.to_vec(),
                                properties: p
                                    .properties
                                    .map(|p| p.user_properties)
                                    .unwrap_or_default(),
                                retain: p.retain,
                            })
                        }
                        Ok(_) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            });
        }
        Subscriber { got, stop }
    }

    fn all(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until `n` messages have arrived (within `within`), then a
    /// moment more so that extra ones would show.
    async fn wait_for(&self, n: usize, within: Duration) -> Vec<Got> {
        let deadline = Instant::now() + within;
        while self.got.lock().unwrap().len() < n {
            assert!(
                Instant::now() < deadline,
                "only {} of {n} messages arrived within {within:?}",
                self.got.lock().unwrap().len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.all()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Removes the sink's session from Mosquitto (which persists sessions).
async fn forget_session(client_id: &str) {
    let mut o = v5::MqttOptions::new(client_id, "127.0.0.1", 1883);
    o.set_clean_start(true).set_session_expiry_interval(Some(0));
    let (client, mut events) = v5::AsyncClient::new(o, 10);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Ok(ev) = events.poll().await {
            if let v5::Event::Incoming(v5::mqttbytes::v5::Packet::ConnAck(_)) = ev {
                let _ = client.disconnect().await;
            }
            if let v5::Event::Outgoing(rumqttc::Outgoing::Disconnect) = ev {
                break;
            }
        }
    })
    .await;
}

fn sink_config(server: &str, prefix: &str, protocol: MqttProtocol) -> MqttConfig {
    let mut c = MqttConfig::new(format!("mqtt://{server}"), "events");
    c.protocol = protocol;
    c.client_id = unique("cvp-stream-test");
    c.topic_template = format!("{prefix}/{{topic}}/{{key}}");
    c.session_expiry = Duration::from_secs(120);
    c.keep_alive = Duration::from_secs(5);
    c.flush_timeout = Duration::from_secs(45);
    c
}

fn route_by_type() -> TransformConfig {
    let mut t = TransformConfig::new(
        "route",
        format!("{}/route_by_type.wasm", env!("CVP_STREAM_WASM_DIR")),
    );
    t.config.insert(
        "routes".into(),
        serde_yaml::from_str("{ TEST_EVENT: routed }").unwrap(),
    );
    t
}

/// The exact messages: topic from the template, the event as JSON, the
/// key and route-by-type's headers as user properties (MQTT 5), retain off.
async fn exact_records(protocol: MqttProtocol) {
    let _serial = SERIAL.lock().await;
    let prefix = unique("cvptest");
    let sub = Subscriber::start(&format!("{prefix}/#")).await;
    let lines = live_events(25);
    let sim = simulator(&lines).await;
    let cfg = sink_config(MOSQUITTO, &prefix, protocol);
    let client_id = cfg.client_id.clone();
    let stats = run_pipeline(
        sim,
        SinkConfig::Mqtt(cfg),
        vec![route_by_type()],
        None,
        CancellationToken::new(),
    )
    .await
    .expect("pipeline");
    assert_eq!(stats.produced, 25, "{stats:?}");
    assert_eq!(stats.failed_delivery, 0);
    let got = sub.wait_for(25, Duration::from_secs(20)).await;
    forget_session(&client_id).await;

    let expected: Vec<Got> = lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let key = v["value"]["key"]["key"].as_str().unwrap().to_string();
            let properties = match protocol {
                MqttProtocol::V5 => vec![
                    ("key".to_string(), key.clone()),
                    ("cvp-event-type".to_string(), "TEST_EVENT".to_string()),
                    ("cvp-severity".to_string(), "error".to_string()),
                    ("cvp-event-key".to_string(), key.clone()),
                ],
                MqttProtocol::V311 => vec![],
            };
            Got {
                topic: format!("{prefix}/routed/{key}"),
                payload: Vec::new(),
                properties,
                retain: false,
            }
        })
        .collect();
    assert_eq!(got.len(), expected.len(), "nothing more, nothing twice");
    for ((g, e), line) in got.iter().zip(&expected).zip(&lines) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(g.json(), v["value"], "value on {}", g.topic);
        assert_eq!(
            Got {
                payload: Vec::new(),
                ..g.clone()
            },
            *e
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_records_mqtt5() {
    exact_records(MqttProtocol::V5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_records_mqtt311() {
    exact_records(MqttProtocol::V311).await;
}

/// Tally of identities, and the duplicates in it.
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
    let series = format!("cvp_stream_{family}{{sink=\"mqtt\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as i64)
        .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
}

/// Mosquitto goes away mid-run (every connection dropped, new ones refused
/// for 3 s) and comes back, with MQTT 5, 3.1.1, and a session that expired
/// meanwhile: every event arrives, none is lost; duplicates
/// (re-sent records whose PUBACK was lost) are counted and at most what
/// was in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_unreachable_mid_run_loses_nothing() {
    // The third round: a 1 s session expiry, so Mosquitto has forgotten
    // the session when the sink comes back (session_present = false) and
    // the sink itself must publish again what was unacknowledged.
    for (protocol, expiry) in [
        (MqttProtocol::V5, 120),
        (MqttProtocol::V311, 120),
        (MqttProtocol::V5, 1),
    ] {
        let _serial = SERIAL.lock().await;
        let prefix = unique("cvptest");
        let sub = Subscriber::start(&format!("{prefix}/#")).await;
        let proxy = Proxy::start(MOSQUITTO).await;
        let lines = live_events(1500);
        let sim = simulator_at(&lines, 500.0).await;
        let mut cfg = sink_config(&proxy.addr.to_string(), &prefix, protocol);
        cfg.max_in_flight = 200;
        cfg.session_expiry = Duration::from_secs(expiry);
        let client_id = cfg.client_id.clone();
        let run = tokio::spawn(run_pipeline(
            sim,
            SinkConfig::Mqtt(cfg),
            vec![],
            None,
            CancellationToken::new(),
        ));
        let deadline = Instant::now() + Duration::from_secs(20);
        while sub.all().len() < 300 {
            assert!(Instant::now() < deadline, "no traffic before the cut");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        proxy.cut();
        let cut_at = sub.all().len();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(gauge("sink_up"), 0, "sink_up while Mosquitto is away");
        proxy.restore();
        let stats = tokio::time::timeout(Duration::from_secs(50), run)
            .await
            .expect("the pipeline ends after the outage")
            .unwrap()
            .expect("pipeline");
        let got = sub.wait_for(1500, Duration::from_secs(20)).await;
        forget_session(&client_id).await;
        assert_eq!(stats.produced, 1500, "{stats:?}");
        assert_eq!(stats.failed_delivery, 0);
        assert!(
            proxy.connections.load(Ordering::SeqCst) >= 2,
            "the sink reconnected"
        );
        assert!(cut_at < 1500, "the cut came mid-run");
        let (t, duplicates) = tally(&got);
        let distinct: BTreeMap<_, _> = t.keys().map(|k| (k.clone(), 1)).collect();
        assert_eq!(distinct, expected_tally(&lines), "every event, none lost");
        eprintln!(
            "{protocol:?}, session expiry {expiry}s: {duplicates} duplicate(s) after the outage"
        );
        assert!(
            duplicates <= 200,
            "duplicates ({duplicates}) are at most the records in flight (200)"
        );
    }
}

/// With Mosquitto away from the start, the sink takes no more than
/// `max_in_flight` records (plus the batch that reached it): CVP's stream
/// stalls (backpressure) instead of memory growing. When the server is
/// back, everything arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_bounded_while_server_away() {
    let _serial = SERIAL.lock().await;
    let prefix = unique("cvptest");
    let sub = Subscriber::start(&format!("{prefix}/#")).await;
    let proxy = Proxy::start(MOSQUITTO).await;
    proxy.cut();
    let total = 20_000;
    let lines = live_events(total);
    let sim = simulator(&lines).await;
    let sent = Arc::new(AtomicU64::new(0));
    let mut cfg = sink_config(&proxy.addr.to_string(), &prefix, MqttProtocol::V5);
    cfg.max_in_flight = 50;
    let client_id = cfg.client_id.clone();
    let run = tokio::spawn(run_pipeline_counting(
        sim,
        SinkConfig::Mqtt(cfg),
        vec![],
        None,
        CancellationToken::new(),
        sent.clone(),
    ));
    // Until CVP's stream stalls: nothing more sent for a whole second.
    let mut last = 0;
    let mut peak_in_flight = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        peak_in_flight = peak_in_flight.max(gauge("sink_in_flight"));
        let sent = sent.load(Ordering::SeqCst);
        if sent == last && sent > 0 {
            break;
        }
        last = sent;
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
    // Every record was acknowledged by the server (PUBACK): the sink's
    // promise. The subscriber reads what Mosquitto forwards, and Mosquitto
    // drops messages for a subscriber more than `max_queued_messages`
    // (1,000) behind, which a loaded machine can make this one after the
    // burst: so what arrived is checked as a subset, without duplicates.
    assert_eq!(stats.produced, total as u64);
    let deadline = Instant::now() + Duration::from_secs(20);
    while sub.all().len() < total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = sub.all();
    forget_session(&client_id).await;
    let (t, duplicates) = tally(&got);
    assert_eq!(duplicates, 0, "nothing was sent before the server came");
    let expected = expected_tally(&lines);
    assert!(
        t.keys().all(|k| expected.contains_key(k)),
        "only the events sent arrived"
    );
    assert!(!got.is_empty(), "the subscriber saw the burst");
}

/// A first run delivers 30 events and keeps its checkpoint; while it is
/// down 4 events change at CVP; a second run from the checkpoint sends
/// exactly those 4, and nothing from before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_from_checkpoint() {
    let _serial = SERIAL.lock().await;
    let prefix = unique("cvptest");
    let sub = Subscriber::start(&format!("{prefix}/#")).await;
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("checkpoint.json");
    let lines = live_events(30);
    let cfg = sink_config(MOSQUITTO, &prefix, MqttProtocol::V5);
    let client_id = cfg.client_id.clone();
    let first = run_pipeline(
        simulator(&lines).await,
        SinkConfig::Mqtt(cfg),
        vec![],
        Some(&cp),
        CancellationToken::new(),
    )
    .await
    .expect("first run");
    assert_eq!(first.produced, 30);
    sub.wait_for(30, Duration::from_secs(20)).await;

    // CVP's state when the second run subscribes: the 30 events, 4 of
    // them changed since.
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
    let mut cfg = sink_config(MOSQUITTO, &prefix, MqttProtocol::V5);
    cfg.client_id = client_id.clone();
    let second = run_pipeline(
        simulator(&state).await,
        SinkConfig::Mqtt(cfg),
        vec![],
        Some(&cp),
        CancellationToken::new(),
    )
    .await
    .expect("second run");
    assert_eq!(second.produced, 4, "{second:?}");
    let got = sub.wait_for(34, Duration::from_secs(20)).await;
    forget_session(&client_id).await;
    let (t, duplicates) = tally(&got);
    assert_eq!(duplicates, 0, "{t:?}");
    assert_eq!(t, expected);
}

/// `validate` checks the block without connecting.
#[test]
fn validate_checks_offline() {
    let c = MqttConfig::new("mqtt://127.0.0.1:1", "t");
    SinkConfig::Mqtt(c).check_offline().expect("valid offline");
    let mut c = MqttConfig::new("mqtt://127.0.0.1:1", "t");
    c.topic_template = "a/#".into();
    let e = SinkConfig::Mqtt(c).check_offline().unwrap_err().to_string();
    assert!(e.contains("sink.mqtt.topic_template"), "{e}");
    let yaml = "url: mqtt://x\ntopic: t\npassword: hunter2\nusername: u\n";
    let c: MqttConfig = serde_yaml::from_str(yaml).unwrap();
    assert!(!format!("{c:?}").contains("hunter2"));
    assert!(serde_yaml::from_str::<MqttConfig>("url: mqtt://x\ntopic: t\nnope: 1\n").is_err());
}

/// Mosquitto goes away mid-run and the service is stopped while it is
/// away: the run ends within the flush timeout, and the checkpoint stops
/// before the records still held. The next run (server back) resumes from
/// it and sends exactly those: every event arrives; the only duplicates are
/// records Mosquitto had taken when the connection was cut before their
/// PUBACK came back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_while_server_away_then_restart() {
    let _serial = SERIAL.lock().await;
    let prefix = unique("cvptest");
    let sub = Subscriber::start(&format!("{prefix}/#")).await;
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("checkpoint.json");
    let proxy = Proxy::start(MOSQUITTO).await;
    let lines = live_events(40);
    let sent = Arc::new(AtomicU64::new(0));
    let mut cfg = sink_config(&proxy.addr.to_string(), &prefix, MqttProtocol::V5);
    cfg.flush_timeout = Duration::from_secs(2);
    let client_id = cfg.client_id.clone();
    let shutdown = CancellationToken::new();
    let sim = simulator_at(&lines, 20.0).await;
    let run = run_pipeline_counting(
        sim,
        SinkConfig::Mqtt(cfg),
        vec![],
        Some(&cp),
        shutdown.clone(),
        sent.clone(),
    );
    let stop = async {
        let deadline = Instant::now() + Duration::from_secs(20);
        while sub.all().len() < 10 || !cp.exists() {
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
        Instant::now()
    };
    let (first, stopped) = tokio::join!(tokio::time::timeout(Duration::from_secs(40), run), stop);
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
    let mut cfg = sink_config(MOSQUITTO, &prefix, MqttProtocol::V5);
    cfg.client_id = client_id.clone();
    let second = run_pipeline(
        simulator(&state).await,
        SinkConfig::Mqtt(cfg),
        vec![],
        Some(&cp),
        CancellationToken::new(),
    )
    .await
    .expect("second run");
    assert_eq!(first.produced + second.produced, 40, "{first:?} {second:?}");
    let got = sub.wait_for(40, Duration::from_secs(20)).await;
    forget_session(&client_id).await;
    let (t, duplicates) = tally(&got);
    let distinct: BTreeMap<_, _> = t.keys().map(|k| (k.clone(), 1)).collect();
    assert_eq!(distinct, expected_tally(&lines), "every event, none lost");
    eprintln!("{duplicates} duplicate(s) across the restart");
    assert!(duplicates <= 40 - first.produced as usize);
}
