//! The NATS JetStream sink against the real server (127.0.0.1:4222, with
//! JetStream), run in-process: the CVP simulator -> the pipeline -> the
//! sink, read back with the client's own stream API. Each test has its own
//! stream and subjects (random suffix), deleted at the end. The server is
//! made unreachable through a loopback proxy the test controls; the system
//! service itself is never stopped.

#[path = "support/natsredis.rs"]
mod natsredis;
mod support;

use async_nats::jetstream;
use async_nats::jetstream::message::StreamMessage;
use cvp_stream::sinks::nats::StreamSpec;
use cvp_stream::sinks::{NatsConfig, SinkConfig};
use cvp_stream::transforms::TransformConfig;
use natsredis::{delivered, description, feed, title, title_to_key, unique, Proxy};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const SERVER: &str = "127.0.0.1:4222";
const LIMIT: Duration = Duration::from_secs(40);

/// A JetStream context on the real server, or a clear failure.
async fn jetstream() -> jetstream::Context {
    let client = tokio::time::timeout(
        Duration::from_secs(5),
        async_nats::connect(format!("nats://{SERVER}")),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .unwrap_or_else(|| {
        panic!("NATS is not reachable on {SERVER}: these tests need nats-server with JetStream (-js) running there")
    });
    jetstream::new(client)
}

/// A test's stream and subject prefix, deleted when dropped.
struct TestStream {
    js: jetstream::Context,
    name: String,
    prefix: String,
}

impl TestStream {
    fn new(js: &jetstream::Context) -> TestStream {
        let id = unique("");
        TestStream {
            js: js.clone(),
            name: format!("CVPTEST_{id}"),
            prefix: format!("cvptest.{id}."),
        }
    }

    /// The sink's config for this stream, reaching NATS at `addr`.
    fn sink(&self, addr: &str, topic: &str) -> NatsConfig {
        let mut cfg = NatsConfig::new(format!("nats://{addr}"), topic);
        cfg.subject_prefix = self.prefix.clone();
        cfg.stream = Some(StreamSpec {
            name: self.name.clone(),
            subjects: Vec::new(),
            duplicate_window: Duration::from_secs(120),
            storage: "file".into(),
        });
        cfg.ack_timeout = Duration::from_secs(1);
        cfg.flush_timeout = Duration::from_secs(20);
        cfg
    }

    /// Every message the stream holds, in order.
    async fn all(&self) -> Vec<StreamMessage> {
        let mut s = self.js.get_stream(&self.name).await.expect("the stream");
        let info = s.info().await.expect("stream info").state.clone();
        let mut out = Vec::new();
        for seq in info.first_sequence..=info.last_sequence {
            if info.messages == 0 {
                break;
            }
            let m = s.get_raw_message(seq).await.expect("a stored message");
            out.push(m);
        }
        out
    }

    async fn count(&self) -> u64 {
        let mut s = self.js.get_stream(&self.name).await.expect("the stream");
        s.info().await.expect("stream info").state.messages
    }
}

impl Drop for TestStream {
    fn drop(&mut self) {
        let (js, name) = (self.js.clone(), self.name.clone());
        // Drop cannot await: delete on a thread of its own, and wait.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let _ = tokio::time::timeout(Duration::from_secs(5), js.delete_stream(&name)).await;
            });
        })
        .join();
    }
}

/// A message as read back: subject, headers (name -> values), payload.
#[derive(Debug, PartialEq, Eq, Clone)]
struct Msg {
    subject: String,
    headers: BTreeMap<String, Vec<String>>,
    payload: String,
}

fn read(sm: &StreamMessage) -> Msg {
    Msg {
        subject: sm.subject.to_string(),
        headers: sm
            .headers
            .iter()
            .map(|(k, vs)| {
                (
                    k.to_string(),
                    vs.iter().map(|v| v.as_str().to_string()).collect(),
                )
            })
            .collect(),
        payload: String::from_utf8(sm.payload.to_vec()).unwrap(),
    }
}

fn wasm_transform(name: &str, file: &str, config: &[(&str, serde_yaml::Value)]) -> TransformConfig {
    let mut t = TransformConfig::new(name, support::wasm(file));
    for (k, v) in config {
        t.config.insert(k.to_string(), v.clone());
    }
    t
}

/// The sample recording through route-by-type and title-to-key: each record
/// on the subject its topic names (after the prefix), its headers as NATS
/// headers, its key in `Cvp-Key`, a `Nats-Msg-Id`, its value as payload;
/// exactly the six expected, in order, counted in the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_arrive_exactly() {
    let js = jetstream().await;
    let ts = TestStream::new(&js);
    let topic = unique("events");
    let intf = unique("intf");
    let script = cvp_simulator::load_jsonl(&support::sample_events()).unwrap();
    let sim = natsredis::simulator(script, 0.0).await;
    let routes: serde_yaml::Value = serde_yaml::from_str(&format!(
        "{{ HIGH_INTF_OUT_UTIL: {intf}, HIGH_INTF_IN_UTIL: {intf} }}"
    ))
    .unwrap();
    let transforms = vec![
        wasm_transform("route", "route_by_type", &[("routes", routes)]),
        title_to_key(),
    ];
    let cfg = ts.sink(SERVER, &topic);
    let config = natsredis::config(&sim, transforms, SinkConfig::Nats(cfg), None);
    let stats = tokio::time::timeout(
        LIMIT,
        natsredis::run_to_end(config, sim, CancellationToken::new()),
    )
    .await
    .expect("the run ends")
    .expect("the run succeeds");
    assert_eq!(
        (stats.events, stats.produced, stats.failed_delivery),
        (6, 6, 0)
    );

    let expected: Vec<Msg> = support::sample_live()
        .iter()
        .filter(|e| e["type"] == "UPDATED")
        .map(|e| {
            let v = &e["value"];
            let event_type = v["eventType"].as_str().unwrap();
            let t = if event_type.starts_with("HIGH_INTF") {
                &intf
            } else {
                &topic
            };
            let severity = match v["severity"].as_str() {
                Some(s) => s.trim_start_matches("EVENT_SEVERITY_").to_lowercase(),
                None => "unspecified".into(),
            };
            let key = v["key"]["key"].as_str().unwrap();
            let h = |k: &str, v: &str| (k.to_string(), vec![v.to_string()]);
            Msg {
                subject: format!("{}{t}", ts.prefix),
                headers: BTreeMap::from([
                    h("cvp-event-type", event_type),
                    h("cvp-severity", &severity),
                    h("cvp-event-key", key),
                    h("Cvp-Key", v["title"].as_str().unwrap_or("")),
                ]),
                payload: v["description"].as_str().unwrap_or("").to_string(),
            }
        })
        .collect();
    assert_eq!(expected.len(), 6);
    let got: Vec<Msg> = ts.all().await.iter().map(read).collect();
    // Nats-Msg-Id: present and distinct; checked apart from the rest.
    let ids: std::collections::BTreeSet<_> = got
        .iter()
        .map(|m| m.headers.get("Nats-Msg-Id").expect("a Nats-Msg-Id")[0].clone())
        .collect();
    assert_eq!(ids.len(), 6, "{ids:?}");
    let without_id: Vec<Msg> = got
        .into_iter()
        .map(|mut m| {
            m.headers.remove("Nats-Msg-Id");
            m
        })
        .collect();
    assert_eq!(without_id, expected);
    assert_eq!(delivered("nats", &topic), 2);
    assert_eq!(delivered("nats", &intf), 4);
}

/// Events that are `title-{i}` / `description of event {i}` under the prefix.
fn expected_titles(n: usize) -> Vec<String> {
    (0..n).map(title).collect()
}

/// What the stream holds: per key, how often; and whether each payload
/// matches its key.
async fn keys(ts: &TestStream, topic: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for m in ts.all().await.iter().map(read) {
        assert_eq!(m.subject, format!("{}{topic}", ts.prefix));
        let key = m.headers["Cvp-Key"][0].clone();
        let i: usize = key.trim_start_matches("title-").parse().unwrap();
        assert_eq!(m.payload, description(i));
        *out.entry(key).or_insert(0) += 1;
    }
    out
}

/// Mid-run, the server's answers are lost for 2.5 s (records stored, not
/// acknowledged), then it is unreachable (every connection dropped and
/// refused) for 2 s, and comes back: every event is delivered, none lost,
/// and the duplicate window removes every resend (duplicates: 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_unreachable_mid_run_loses_nothing() {
    const N: usize = 400;
    const IN_FLIGHT: usize = 64;
    let js = jetstream().await;
    let ts = TestStream::new(&js);
    let topic = unique("events");
    let proxy = Proxy::start(SERVER).await;
    let sim = natsredis::simulator(feed(0..N, "UPDATED"), 200.0).await;
    let mut cfg = ts.sink(&proxy.addr.to_string(), &topic);
    cfg.max_in_flight = IN_FLIGHT;
    let config = natsredis::config(&sim, vec![title_to_key()], SinkConfig::Nats(cfg), None);
    let run = tokio::spawn(natsredis::run_to_end(config, sim, CancellationToken::new()));

    natsredis::eventually("100 records acknowledged", LIMIT, || {
        delivered("nats", &topic) >= 100
    })
    .await;
    // First the answers are lost (records stored, never acknowledged),
    // then the server is unreachable altogether.
    proxy.swallow_replies();
    let at_cut = delivered("nats", &topic);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Nothing is acknowledged while the server is away.
    assert!(delivered("nats", &topic) <= at_cut + IN_FLIGHT as u64);
    proxy.restore();

    let stats = tokio::time::timeout(LIMIT, run)
        .await
        .expect("the run ends")
        .unwrap()
        .expect("the run succeeds");
    assert_eq!(stats.events, N as u64);
    assert_eq!(stats.produced, N as u64, "every record acknowledged");
    assert_eq!(stats.failed_delivery, 0);
    let got = keys(&ts, &topic).await;
    let lost: Vec<_> = expected_titles(N)
        .into_iter()
        .filter(|t| !got.contains_key(t))
        .collect();
    let duplicates: usize = got.values().map(|n| n - 1).sum();
    assert_eq!(lost, Vec::<String>::new(), "lost records");
    assert_eq!(duplicates, 0, "the duplicate window removes resends");
    assert_eq!(got.len(), N);
}

/// With the server away, the sink takes no more than `max_in_flight`
/// records and the channel backs up to the source: the simulator stops
/// being read long before its feed ends. Back, everything arrives once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_bounds_memory_while_server_is_away() {
    const N: usize = 40_000;
    const BATCH: usize = 64;
    const IN_FLIGHT: usize = 256;
    let js = jetstream().await;
    let ts = TestStream::new(&js);
    let topic = unique("events");
    let proxy = Proxy::start(SERVER).await;
    let sim = natsredis::simulator(feed(0..N, "UPDATED"), 0.0).await;
    let mut cfg = ts.sink(&proxy.addr.to_string(), &topic);
    cfg.max_in_flight = IN_FLIGHT;
    let mut config = natsredis::config(&sim, vec![title_to_key()], SinkConfig::Nats(cfg), None);
    config.pipeline.batch_size = BATCH;
    let (ender, sent) = natsredis::end_when_done(sim, CancellationToken::new());
    let run = tokio::spawn(natsredis::run(config, CancellationToken::new()));

    natsredis::eventually("the first record acknowledged", LIMIT, || {
        delivered("nats", &topic) >= 1
    })
    .await;
    proxy.cut();
    // Once the pipeline is full, the simulator's sends stop growing.
    let mut last = *sent.borrow();
    let mut still = 0;
    natsredis::eventually("the source to stall", LIMIT, || {
        let now = *sent.borrow();
        still = if now == last { still + 1 } else { 0 };
        last = now;
        still >= 50 // 1 s without a send
    })
    .await;
    // What the sink holds: at most max_in_flight, plus the one batch it
    // took below the bound. (Every test here bounds it at most so.)
    let in_flight = natsredis::in_flight("nats");
    assert!(
        in_flight <= (IN_FLIGHT + BATCH) as i64,
        "{in_flight} records held by the sink"
    );
    eprintln!("the source stalled after {last} of {N} events; the sink holds {in_flight}");
    assert!(
        (last as usize) < N / 2,
        "the source kept sending while the server was away: {last} of {N}"
    );
    proxy.restore();
    let stats = tokio::time::timeout(Duration::from_secs(55), run)
        .await
        .expect("the run ends")
        .unwrap()
        .expect("the run succeeds");
    let _ = ender.await;
    assert_eq!((stats.events, stats.produced), (N as u64, N as u64));
    assert_eq!(ts.count().await, N as u64, "each record once");
}

/// The pipeline is shut down while the server's answers are lost (records
/// stored, not acknowledged), then started again from its checkpoint with the
/// server back and more events at CVP: every event is in the stream
/// exactly once (the checkpoint never passed the unacknowledged ones; the
/// duplicate window drops what was stored but not acknowledged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_from_checkpoint_loses_nothing() {
    const FIRST: usize = 300;
    const MORE: usize = 50;
    let js = jetstream().await;
    let ts = TestStream::new(&js);
    let topic = unique("events");
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("checkpoint.json");
    let proxy = Proxy::start(SERVER).await;

    // First run: cut mid-feed, then shut down.
    let sim = natsredis::simulator(feed(0..FIRST, "UPDATED"), 200.0).await;
    let mut cfg = ts.sink(&proxy.addr.to_string(), &topic);
    cfg.max_in_flight = 32;
    cfg.flush_timeout = Duration::from_secs(1);
    let config = natsredis::config(&sim, vec![title_to_key()], SinkConfig::Nats(cfg), Some(&cp));
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(natsredis::run_to_end(config, sim, shutdown.clone()));
    natsredis::eventually("80 records acknowledged", LIMIT, || {
        delivered("nats", &topic) >= 80
    })
    .await;
    // Stored but never acknowledged: what a restart sends again.
    proxy.swallow_replies();
    tokio::time::sleep(Duration::from_millis(500)).await;
    shutdown.cancel();
    let first = tokio::time::timeout(LIMIT, run)
        .await
        .expect("the first run ends")
        .unwrap()
        .expect("the first run succeeds");
    assert!(
        (first.produced as usize) < FIRST,
        "the first run should have stopped early: {first:?}"
    );
    assert!(cp.exists(), "a checkpoint was written");

    // Second run: CVP's state holds the first events; more follow live.
    proxy.restore();
    let mut script = feed(0..FIRST, "INITIAL");
    script.extend(feed(FIRST..FIRST + MORE, "UPDATED"));
    let sim = natsredis::simulator(script, 0.0).await;
    let mut cfg = ts.sink(&proxy.addr.to_string(), &topic);
    cfg.max_in_flight = 32;
    let config = natsredis::config(&sim, vec![title_to_key()], SinkConfig::Nats(cfg), Some(&cp));
    let second = tokio::time::timeout(
        LIMIT,
        natsredis::run_to_end(config, sim, CancellationToken::new()),
    )
    .await
    .expect("the second run ends")
    .expect("the second run succeeds");
    assert_eq!(second.failed_delivery, 0);

    let got = keys(&ts, &topic).await;
    let lost: Vec<_> = expected_titles(FIRST + MORE)
        .into_iter()
        .filter(|t| !got.contains_key(t))
        .collect();
    let duplicates: usize = got.values().map(|n| n - 1).sum();
    assert_eq!(lost, Vec::<String>::new(), "lost across the restart");
    assert_eq!(
        duplicates, 0,
        "resent records are dropped by the duplicate window"
    );
}

/// `validate` checks the block without connecting, and says what to fix;
/// secrets never show.
#[test]
fn check_offline_says_what_to_fix() {
    let mut cfg = NatsConfig::new("nats://127.0.0.1:1", "events");
    cfg.token = Some(cvp_stream::secret::Secret::new("tok-very-secret"));
    SinkConfig::Nats(cfg)
        .check_offline()
        .expect("a good block passes");

    let mut cfg = NatsConfig::new("nats://127.0.0.1:1", "events");
    cfg.creds_file = Some("/nonexistent/user.creds".into());
    let e = SinkConfig::Nats(cfg)
        .check_offline()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sink.nats.creds_file") && e.contains("/nonexistent/user.creds"),
        "{e}"
    );

    let mut cfg = NatsConfig::new("nats://127.0.0.1:1", "events");
    cfg.user = Some("u".into());
    cfg.password = Some(cvp_stream::secret::Secret::new("pw-very-secret"));
    cfg.token = Some(cvp_stream::secret::Secret::new("tok-very-secret"));
    let e = SinkConfig::Nats(cfg).check_offline().unwrap_err();
    let text = format!("{e:#} {e:?}");
    assert!(text.contains("only one"), "{text}");
    assert!(!text.contains("very-secret"), "{text}");

    let yaml = "url: nats://127.0.0.1:4222\ntopic: t\nsubject_prefix: cvp.\nstream: { name: CVP }\ntls: { ca_file: /nonexistent/ca.pem }\n";
    let parsed: NatsConfig = serde_yaml::from_str(yaml).unwrap();
    let e = SinkConfig::Nats(parsed)
        .check_offline()
        .unwrap_err()
        .to_string();
    assert!(e.contains("sink.nats.tls.ca_file"), "{e}");
    assert!(serde_yaml::from_str::<NatsConfig>("topic: t\nbogus: 1\n").is_err());
}

/// Token auth against a server of the test's own (the shared one has no
/// credentials): the right token delivers every record; a wrong one
/// delivers nothing, and the run still ends at shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_auth() {
    const N: usize = 20;
    let token = unique("tok-");
    let server = natsredis::PrivateServer::start("nats-server", |port, dir| {
        [
            "-a",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "--auth",
            &token,
            "-js",
            "-sd",
            &dir.display().to_string(),
        ]
        .map(String::from)
        .to_vec()
    });
    let addr = format!("127.0.0.1:{}", server.port);
    let client = async_nats::ConnectOptions::with_token(token.clone())
        .connect(format!("nats://{addr}"))
        .await
        .expect("the private server takes its token");
    let js = jetstream::new(client);
    let ts = TestStream::new(&js);
    let topic = unique("events");

    let sim = natsredis::simulator(feed(0..N, "UPDATED"), 0.0).await;
    let mut cfg = ts.sink(&addr, &topic);
    cfg.token = Some(cvp_stream::secret::Secret::new(token.clone()));
    let config = natsredis::config(&sim, vec![title_to_key()], SinkConfig::Nats(cfg), None);
    let stats = tokio::time::timeout(
        LIMIT,
        natsredis::run_to_end(config, sim, CancellationToken::new()),
    )
    .await
    .expect("the run ends")
    .expect("the run succeeds");
    assert_eq!(stats.produced, N as u64);
    assert_eq!(keys(&ts, &topic).await.len(), N);

    // A wrong token: nothing is delivered; shutdown still ends the run.
    let other = unique("events");
    let sim = natsredis::simulator(feed(0..N, "UPDATED"), 0.0).await;
    let mut cfg = ts.sink(&addr, &other);
    cfg.token = Some(cvp_stream::secret::Secret::new("not-the-token"));
    cfg.flush_timeout = Duration::from_millis(500);
    let config = natsredis::config(&sim, vec![title_to_key()], SinkConfig::Nats(cfg), None);
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(natsredis::run_to_end(config, sim, shutdown.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    shutdown.cancel();
    let stats = tokio::time::timeout(LIMIT, run)
        .await
        .expect("the run ends at shutdown")
        .unwrap()
        .expect("the run ends cleanly");
    assert_eq!(stats.produced, 0);
    assert_eq!(delivered("nats", &other), 0);
}

/// A record NATS cannot take (its topic is no valid subject) goes to the
/// dead-letter topic in its place, with headers that say why; the others
/// arrive as usual and nothing is left unsettled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undeliverable_record_is_dead_lettered() {
    let js = jetstream().await;
    let ts = TestStream::new(&js);
    let topic = unique("events");
    let dlq = unique("dlq");
    let script = cvp_simulator::load_jsonl(&support::sample_events()).unwrap();
    let sim = natsredis::simulator(script, 0.0).await;
    let routes: serde_yaml::Value =
        serde_yaml::from_str("{ HIGH_INTF_OUT_UTIL: \"not a subject\" }").unwrap();
    let transforms = vec![
        wasm_transform("route", "route_by_type", &[("routes", routes)]),
        title_to_key(),
    ];
    let mut cfg = ts.sink(SERVER, &topic);
    cfg.dead_letter_topic = Some(dlq.clone());
    let config = natsredis::config(&sim, transforms, SinkConfig::Nats(cfg), None);
    let stats = tokio::time::timeout(
        LIMIT,
        natsredis::run_to_end(config, sim, CancellationToken::new()),
    )
    .await
    .expect("the run ends")
    .expect("the run succeeds");
    // Two HIGH_INTF_OUT_UTIL records replaced by their dead letters.
    assert_eq!(
        (stats.events, stats.produced, stats.failed_delivery),
        (6, 6, 2)
    );
    let got: Vec<Msg> = ts.all().await.iter().map(read).collect();
    let letters: Vec<&Msg> = got
        .iter()
        .filter(|m| m.subject == format!("{}{dlq}", ts.prefix))
        .collect();
    assert_eq!(letters.len(), 2, "{got:#?}");
    for m in &letters {
        let h = |k: &str| m.headers.get(k).map(|v| v[0].as_str());
        assert_eq!(h("cvp-dead-letter-reason"), Some("undeliverable"));
        assert_eq!(h("cvp-original-topic"), Some("not a subject"));
        assert_eq!(h("cvp-event-type"), Some("HIGH_INTF_OUT_UTIL"));
        assert!(h("cvp-error").unwrap().contains("not a valid NATS subject"));
    }
    assert_eq!(got.len(), 6);
    assert_eq!(delivered("nats", &dlq), 2);
}
