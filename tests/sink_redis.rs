//! The Redis Streams sink against the real server (127.0.0.1:6379), run
//! in-process: the CVP simulator -> the pipeline -> the sink, read back
//! with XRANGE through the redis crate's own client. Each test has its own
//! streams (random suffix), deleted at the end. The server is made
//! unreachable through a loopback proxy the test controls; the system
//! service itself is never stopped.

#[path = "support/natsredis.rs"]
mod natsredis;
mod support;

use cvp_stream::sinks::{RedisConfig, SinkConfig};
use cvp_stream::transforms::TransformConfig;
use natsredis::{delivered, description, feed, title, title_to_key, unique, Proxy};
use redis::aio::MultiplexedConnection;
use redis::streams::StreamRangeReply;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const SERVER: &str = "127.0.0.1:6379";
const LIMIT: Duration = Duration::from_secs(40);

/// A connection to the real server, or a clear failure.
async fn connect() -> MultiplexedConnection {
    let client = redis::Client::open(format!("redis://{SERVER}")).unwrap();
    tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection_with_config(
            // Reading back a large stream takes a while.
            &redis::AsyncConnectionConfig::new()
                .set_response_timeout(Some(Duration::from_secs(30))),
        ),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .unwrap_or_else(|| {
        panic!("Redis is not reachable on {SERVER}: these tests need redis-server running there")
    })
}

/// A test's stream prefix; its streams are deleted when dropped.
struct TestStreams {
    conn: MultiplexedConnection,
    prefix: String,
}

impl TestStreams {
    async fn new() -> TestStreams {
        TestStreams {
            conn: connect().await,
            prefix: unique("cvptest:") + ":",
        }
    }

    fn sink(&self, addr: &str, topic: &str) -> RedisConfig {
        let mut cfg = RedisConfig::new(format!("redis://{addr}"), topic);
        cfg.stream_prefix = self.prefix.clone();
        cfg.response_timeout = Duration::from_secs(1);
        cfg.flush_timeout = Duration::from_secs(20);
        cfg
    }

    /// Every entry of the stream for `topic`, in order: fields as text.
    async fn all(&self, topic: &str) -> Vec<BTreeMap<String, String>> {
        let mut conn = self.conn.clone();
        let reply: StreamRangeReply = redis::cmd("XRANGE")
            .arg(format!("{}{topic}", self.prefix))
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .expect("XRANGE");
        reply
            .ids
            .into_iter()
            .map(|e| {
                e.map
                    .into_iter()
                    .map(|(k, v)| {
                        let bytes: Vec<u8> = redis::from_redis_value(v).expect("bytes");
                        (k, String::from_utf8(bytes).unwrap())
                    })
                    .collect()
            })
            .collect()
    }

    async fn len(&self, topic: &str) -> u64 {
        let mut conn = self.conn.clone();
        redis::cmd("XLEN")
            .arg(format!("{}{topic}", self.prefix))
            .query_async(&mut conn)
            .await
            .expect("XLEN")
    }
}

impl Drop for TestStreams {
    fn drop(&mut self) {
        let pattern = format!("{}*", self.prefix);
        // Drop cannot await: a blocking connection of its own.
        if let Ok(client) = redis::Client::open(format!("redis://{SERVER}")) {
            if let Ok(mut c) = client.get_connection() {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(&pattern)
                    .query(&mut c)
                    .unwrap_or_default();
                for k in keys {
                    let _: redis::RedisResult<()> = redis::cmd("DEL").arg(k).query(&mut c);
                }
            }
        }
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
/// an entry of the stream its topic names (after the prefix), with fields
/// key, value and `header:NAME` per header; exactly the six expected, in
/// order, counted in the metrics; MAXLEN ~ accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_arrive_exactly() {
    let ts = TestStreams::new().await;
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
    let mut cfg = ts.sink(SERVER, &topic);
    cfg.maxlen = Some(1000);
    let config = natsredis::config(&sim, transforms, SinkConfig::Redis(cfg), None);
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

    let expected = |want_intf: bool| -> Vec<BTreeMap<String, String>> {
        support::sample_live()
            .iter()
            .filter(|e| e["type"] == "UPDATED")
            .filter(|e| {
                e["value"]["eventType"]
                    .as_str()
                    .unwrap()
                    .starts_with("HIGH_INTF")
                    == want_intf
            })
            .map(|e| {
                let v = &e["value"];
                let severity = match v["severity"].as_str() {
                    Some(s) => s.trim_start_matches("EVENT_SEVERITY_").to_lowercase(),
                    None => "unspecified".into(),
                };
                let h = |k: &str, v: &str| (k.to_string(), v.to_string());
                BTreeMap::from([
                    h("key", v["title"].as_str().unwrap_or("")),
                    h("value", v["description"].as_str().unwrap_or("")),
                    h("header:cvp-event-type", v["eventType"].as_str().unwrap()),
                    h("header:cvp-severity", &severity),
                    h("header:cvp-event-key", v["key"]["key"].as_str().unwrap()),
                ])
            })
            .collect()
    };
    assert_eq!(ts.all(&intf).await, expected(true));
    assert_eq!(ts.all(&topic).await, expected(false));
    assert_eq!(delivered("redis", &topic), 2);
    assert_eq!(delivered("redis", &intf), 4);
}

/// Per key, how often the stream for `topic` holds it; each value checked
/// against its key.
async fn keys(ts: &TestStreams, topic: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for m in ts.all(topic).await {
        let key = m["key"].clone();
        let i: usize = key.trim_start_matches("title-").parse().unwrap();
        assert_eq!(m["value"], description(i));
        *out.entry(key).or_insert(0) += 1;
    }
    out
}

/// (lost keys, duplicates) of events 0..n in what the stream holds.
fn tally(got: &BTreeMap<String, usize>, n: usize) -> (Vec<String>, usize) {
    let lost = (0..n).map(title).filter(|t| !got.contains_key(t)).collect();
    (lost, got.values().map(|c| c - 1).sum())
}

/// Mid-run, Redis's replies are lost for 2.5 s (entries added, never
/// answered), then it is unreachable (every connection dropped and refused)
/// for 2 s, and comes back: every event is delivered, none lost; records
/// whose reply was lost are added again, at most max_in_flight of them per
/// response_timeout that the replies were lost for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_unreachable_mid_run_loses_nothing() {
    const N: usize = 400;
    const IN_FLIGHT: usize = 64;
    let ts = TestStreams::new().await;
    let topic = unique("events");
    let proxy = Proxy::start(SERVER).await;
    let sim = natsredis::simulator(feed(0..N, "UPDATED"), 200.0).await;
    let mut cfg = ts.sink(&proxy.addr.to_string(), &topic);
    cfg.max_in_flight = IN_FLIGHT;
    let config = natsredis::config(&sim, vec![title_to_key()], SinkConfig::Redis(cfg), None);
    let run = tokio::spawn(natsredis::run_to_end(config, sim, CancellationToken::new()));

    natsredis::eventually("100 records acknowledged", LIMIT, || {
        delivered("redis", &topic) >= 100
    })
    .await;
    // First the answers are lost (records stored, never acknowledged),
    // then the server is unreachable altogether.
    proxy.swallow_replies();
    let at_cut = delivered("redis", &topic);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    proxy.cut();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Nothing is acknowledged while the server is away.
    assert!(delivered("redis", &topic) <= at_cut + IN_FLIGHT as u64);
    proxy.restore();

    let stats = tokio::time::timeout(LIMIT, run)
        .await
        .expect("the run ends")
        .unwrap()
        .expect("the run succeeds");
    assert_eq!(
        (stats.events, stats.produced, stats.failed_delivery),
        (N as u64, N as u64, 0)
    );
    let (lost, duplicates) = tally(&keys(&ts, &topic).await, N);
    assert_eq!(lost, Vec::<String>::new(), "lost records");
    // 2.5 s of lost replies at a 1 s response timeout: at most three
    // rounds of what was in flight.
    assert!(
        duplicates <= 3 * IN_FLIGHT,
        "{duplicates} duplicates: more than three rounds of what was in flight"
    );
    eprintln!("duplicates after the outage: {duplicates}");
}

/// With Redis away, the sink takes no more than `max_in_flight` records and
/// the channel backs up to the source: the simulator stops being read long
/// before its feed ends. Back, everything arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backpressure_bounds_memory_while_server_is_away() {
    const N: usize = 40_000;
    const BATCH: usize = 64;
    const IN_FLIGHT: usize = 256;
    let ts = TestStreams::new().await;
    let topic = unique("events");
    let proxy = Proxy::start(SERVER).await;
    let sim = natsredis::simulator(feed(0..N, "UPDATED"), 0.0).await;
    let mut cfg = ts.sink(&proxy.addr.to_string(), &topic);
    cfg.max_in_flight = IN_FLIGHT;
    let mut config = natsredis::config(&sim, vec![title_to_key()], SinkConfig::Redis(cfg), None);
    config.pipeline.batch_size = BATCH;
    let (ender, sent) = natsredis::end_when_done(sim, CancellationToken::new());
    let run = tokio::spawn(natsredis::run(config, CancellationToken::new()));

    natsredis::eventually("the first record acknowledged", LIMIT, || {
        delivered("redis", &topic) >= 1
    })
    .await;
    proxy.cut();
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
    let in_flight = natsredis::in_flight("redis");
    assert!(
        in_flight <= (IN_FLIGHT + BATCH) as i64,
        "{in_flight} records held by the sink"
    );
    eprintln!("the source stalled after {last} of {N} events; the sink holds {in_flight}");
    assert!(
        (last as usize) < N / 2,
        "the source kept sending while Redis was away: {last} of {N}"
    );
    proxy.restore();
    let stats = tokio::time::timeout(Duration::from_secs(55), run)
        .await
        .expect("the run ends")
        .unwrap()
        .expect("the run succeeds");
    let _ = ender.await;
    assert_eq!((stats.events, stats.produced), (N as u64, N as u64));
    let (lost, duplicates) = tally(&keys(&ts, &topic).await, N);
    assert_eq!(lost, Vec::<String>::new(), "lost records");
    // Resent are what the sink held, unanswered, when Redis went away: at
    // most max_in_flight plus the batch it took below the bound (asserted
    // above), not max_in_flight alone (CI once saw 281 of 320).
    assert!(
        duplicates <= IN_FLIGHT + BATCH,
        "{duplicates} duplicates: more than the sink may hold"
    );
    assert_eq!(ts.len(&topic).await as usize, N + duplicates);
}

/// The pipeline is shut down while Redis's replies are lost (entries added,
/// not answered), then started again from its checkpoint with Redis back and
/// more events at CVP: every event is in the stream (the checkpoint never
/// passed the unanswered ones); resends are bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_from_checkpoint_loses_nothing() {
    const FIRST: usize = 300;
    const MORE: usize = 50;
    const IN_FLIGHT: usize = 32;
    let ts = TestStreams::new().await;
    let topic = unique("events");
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("checkpoint.json");
    let proxy = Proxy::start(SERVER).await;

    let sim = natsredis::simulator(feed(0..FIRST, "UPDATED"), 200.0).await;
    let mut cfg = ts.sink(&proxy.addr.to_string(), &topic);
    cfg.max_in_flight = IN_FLIGHT;
    cfg.flush_timeout = Duration::from_secs(1);
    let config = natsredis::config(
        &sim,
        vec![title_to_key()],
        SinkConfig::Redis(cfg),
        Some(&cp),
    );
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(natsredis::run_to_end(config, sim, shutdown.clone()));
    natsredis::eventually("80 records acknowledged", LIMIT, || {
        delivered("redis", &topic) >= 80
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

    proxy.restore();
    let mut script = feed(0..FIRST, "INITIAL");
    script.extend(feed(FIRST..FIRST + MORE, "UPDATED"));
    let sim = natsredis::simulator(script, 0.0).await;
    let mut cfg = ts.sink(&proxy.addr.to_string(), &topic);
    cfg.max_in_flight = IN_FLIGHT;
    let config = natsredis::config(
        &sim,
        vec![title_to_key()],
        SinkConfig::Redis(cfg),
        Some(&cp),
    );
    let second = tokio::time::timeout(
        LIMIT,
        natsredis::run_to_end(config, sim, CancellationToken::new()),
    )
    .await
    .expect("the second run ends")
    .expect("the second run succeeds");
    assert_eq!(second.failed_delivery, 0);

    let (lost, duplicates) = tally(&keys(&ts, &topic).await, FIRST + MORE);
    assert_eq!(lost, Vec::<String>::new(), "lost across the restart");
    // Resent: what was in flight at the cut (its reply lost), and what the
    // checkpoint had not yet covered.
    eprintln!("duplicates across the restart: {duplicates}");
    assert!(duplicates <= 2 * IN_FLIGHT + 64, "{duplicates} duplicates");
}

/// `validate` checks the block without connecting, and says what to fix;
/// secrets never show.
#[test]
fn check_offline_says_what_to_fix() {
    let mut cfg = RedisConfig::new("redis://127.0.0.1:1", "events");
    cfg.user = Some("u".into());
    cfg.password = Some(cvp_stream::secret::Secret::new("pw-very-secret"));
    assert!(!format!("{cfg:?}").contains("very-secret"));
    SinkConfig::Redis(cfg)
        .check_offline()
        .expect("a good block passes");

    let e = SinkConfig::Redis(RedisConfig::new("redis://u:pw-very-secret@h:6379", "t"))
        .check_offline()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sink.redis.user") && !e.contains("very-secret"),
        "{e}"
    );

    let yaml = "url: rediss://127.0.0.1:6379\ntopic: t\ntls: { ca_file: /nonexistent/ca.pem }\n";
    let parsed: RedisConfig = serde_yaml::from_str(yaml).unwrap();
    let e = SinkConfig::Redis(parsed)
        .check_offline()
        .unwrap_err()
        .to_string();
    assert!(e.contains("sink.redis.tls.ca_file"), "{e}");
    assert!(serde_yaml::from_str::<RedisConfig>("topic: t\nbogus: 1\n").is_err());
    let mut cfg = RedisConfig::new("redis://h", "t");
    cfg.maxlen = Some(0);
    assert!(SinkConfig::Redis(cfg).check_offline().is_err());
}

/// An ACL user and password against a server of the test's own (the
/// shared one has no credentials): the right password delivers every
/// record; a wrong one delivers nothing, and the run still ends at shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_user_and_password() {
    const N: usize = 20;
    let password = unique("pw-");
    let server = natsredis::PrivateServer::start("redis-server", |port, dir| {
        let conf = dir.join("redis.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndir {}\nuser default off\nuser cvp on >{password} ~* &* +@all\n",
                dir.display()
            ),
        )
        .unwrap();
        vec![conf.display().to_string()]
    });
    let addr = format!("127.0.0.1:{}", server.port);
    let topic = unique("events");

    let sim = natsredis::simulator(feed(0..N, "UPDATED"), 0.0).await;
    let mut cfg = RedisConfig::new(format!("redis://{addr}"), &topic);
    cfg.user = Some("cvp".into());
    cfg.password = Some(cvp_stream::secret::Secret::new(password.clone()));
    let config = natsredis::config(&sim, vec![title_to_key()], SinkConfig::Redis(cfg), None);
    let stats = tokio::time::timeout(
        LIMIT,
        natsredis::run_to_end(config, sim, CancellationToken::new()),
    )
    .await
    .expect("the run ends")
    .expect("the run succeeds");
    assert_eq!(stats.produced, N as u64);
    let client = redis::Client::open(format!("redis://cvp:{password}@{addr}")).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let len: u64 = redis::cmd("XLEN")
        .arg(&topic)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(len, N as u64);

    // A wrong password: nothing is delivered; shutdown still ends the run.
    let other = unique("events");
    let sim = natsredis::simulator(feed(0..N, "UPDATED"), 0.0).await;
    let mut cfg = RedisConfig::new(format!("redis://{addr}"), &other);
    cfg.user = Some("cvp".into());
    cfg.password = Some(cvp_stream::secret::Secret::new("not-the-password"));
    cfg.flush_timeout = Duration::from_millis(500);
    let config = natsredis::config(&sim, vec![title_to_key()], SinkConfig::Redis(cfg), None);
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
    assert_eq!(delivered("redis", &other), 0);
}

/// A record Redis will not take (its stream's name holds a string:
/// WRONGTYPE) goes to the dead-letter topic in its place, with fields that
/// say why; the others arrive as usual and nothing is left unsettled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_record_is_dead_lettered() {
    let ts = TestStreams::new().await;
    let topic = unique("events");
    let dlq = unique("dlq");
    let mut conn = ts.conn.clone();
    let _: () = redis::cmd("SET")
        .arg(format!("{}{topic}", ts.prefix))
        .arg("not a stream")
        .query_async(&mut conn)
        .await
        .unwrap();
    let sim = natsredis::simulator(feed(0..5, "UPDATED"), 0.0).await;
    let mut cfg = ts.sink(SERVER, &topic);
    cfg.dead_letter_topic = Some(dlq.clone());
    let config = natsredis::config(&sim, vec![title_to_key()], SinkConfig::Redis(cfg), None);
    let stats = tokio::time::timeout(
        LIMIT,
        natsredis::run_to_end(config, sim, CancellationToken::new()),
    )
    .await
    .expect("the run ends")
    .expect("the run succeeds");
    assert_eq!(
        (stats.events, stats.produced, stats.failed_delivery),
        (5, 5, 5)
    );
    // Dead letters keep no order among themselves (each is sent when its
    // refusal is settled): sorted by key.
    let mut letters = ts.all(&dlq).await;
    letters.sort_by(|a, b| a["key"].cmp(&b["key"]));
    assert_eq!(letters.len(), 5);
    for (i, m) in letters.iter().enumerate() {
        assert_eq!(m["key"], title(i));
        assert_eq!(m["value"], description(i));
        assert_eq!(m["header:cvp-dead-letter-reason"], "undeliverable");
        assert_eq!(m["header:cvp-original-topic"], topic);
        assert!(m["header:cvp-error"].contains("WRONGTYPE"), "{m:?}");
    }
    assert_eq!(delivered("redis", &dlq), 5);
}
