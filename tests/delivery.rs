//! Delivery under faults: each test counts what went in (changes made in
//! the simulated CVP) and what came out (records on the real broker), and
//! asserts that nothing was lost and nothing sent twice.
//!
//! Each change has a description of its own, so a record is identified by
//! (event key, description), read back from the JSON value the host writes
//! when no transform is configured.

mod support;

use cvp_simulator::SimHandle;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::{eventually, finish, free_port, http_get, metric, transform, Broker, Host, Record};

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

fn rfc3339(ns: i64) -> String {
    humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::from_nanos(ns as u64)).to_string()
}

/// One recording line: an event `key` created at `created`, last changed at
/// `updated`, with `description`.
fn entry(op: &str, key: &str, created: i64, updated: i64, description: &str) -> String {
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

fn parse(line: &str) -> cvp_proto::event::EventStreamResponse {
    cvp_proto::json::parse_stream_response(line).unwrap()
}

/// `n` live UPDATED events with fresh keys, a millisecond apart, in the
/// recent past; every `every`th one's description carries MISBEHAVE.
fn live_events(n: usize, every: usize) -> (Vec<String>, i64) {
    let base = now_ns() - 3_600_000_000_000;
    let lines = (1..=n)
        .map(|i| {
            let t = base + i as i64 * 1_000_000;
            let desc = if every > 0 && i % every == 0 {
                format!("event {i} MISBEHAVE")
            } else {
                format!("event {i}")
            };
            entry("UPDATED", &format!("ev-{i:04}"), t, t, &desc)
        })
        .collect();
    (lines, base)
}

async fn simulator(lines: &[String]) -> SimHandle {
    support::scripted_simulator("tok-d", lines.iter().map(|l| parse(l)).collect()).await
}

/// No transform (value = the event as JSON), UPDATED and DELETED.
fn raw_config(cvp: &str, broker: &Broker, topic: &str, extra: &str) -> String {
    format!(
        "source:\n  cvp:\n    address: \"{cvp}\"\n    token: tok-d\n    tls: {{ enabled: false }}\n    operations: [updated, deleted]\n    max_backoff: 1s\nsink:\n  kafka:\n    brokers: \"{}\"\n    topic: {topic}\n{extra}",
        broker.addr
    )
}

type Id = (String, String);

/// (key, description) of a record the host wrote with no transform.
fn identity(r: &Record) -> Id {
    let v = r.value_json();
    (
        v["key"]["key"].as_str().unwrap_or("").to_string(),
        v["description"].as_str().unwrap_or("").to_string(),
    )
}

/// How often each identity arrived.
fn tally(records: &[Record]) -> BTreeMap<Id, usize> {
    let mut t = BTreeMap::new();
    for r in records {
        *t.entry(identity(r)).or_insert(0) += 1;
    }
    t
}

/// Asserts that no identity in `tally` arrived more than once.
fn assert_none_twice(tally: &BTreeMap<Id, usize>) {
    let duplicates: usize = tally.values().map(|n| n - 1).sum();
    assert_eq!(duplicates, 0, "sent twice: {tally:?}");
}

/// A change to an event that exists, made now.
fn change(key: &str, created_line: &str, n: usize) -> (String, Id) {
    let created = parse(created_line)
        .value
        .unwrap()
        .key
        .unwrap()
        .timestamp
        .unwrap();
    let created_ns = created.seconds * 1_000_000_000 + created.nanos as i64;
    let t = now_ns() + n as i64 * 1_000_000;
    let desc = format!("changed while away {n}");
    let line = entry("UPDATED", key, created_ns, t, &desc);
    (line, (key.to_string(), desc))
}

/// CVP's stream is cut; while the host is away, 5 events change, one is
/// created and one deleted. CVP's Subscribe only resends its current state
/// (INITIAL), so the host must see in it what changed: all 7 changes
/// arrive, once, and nothing from before is sent again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_reset_with_changes_during_the_gap() {
    let broker = Broker::start();
    broker.create_topic("gap", 1);
    let (lines, _) = live_events(30, 0);
    let sim = simulator(&lines).await;
    let host = Host::run(
        &raw_config(&sim.local_addr().to_string(), &broker, "gap", ""),
        &[],
    );
    let before = broker.consume(&host, "gap", 30);
    assert_eq!(tally(&before).len(), 30);

    sim.reset_streams(true);
    host.wait_for_log("CVP stream failed");
    let mut expected = tally(&before);
    for (n, i) in [3usize, 7, 11, 19, 23].iter().enumerate() {
        let (line, id) = change(&format!("ev-{i:04}"), &lines[i - 1], n);
        sim.apply(&parse(&line)).unwrap();
        expected.insert(id, 1);
    }
    let t = now_ns() + 100_000_000;
    let created = entry("UPDATED", "ev-new", t, t, "created while away");
    sim.apply(&parse(&created)).unwrap();
    expected.insert(("ev-new".into(), "created while away".into()), 1);
    let gone = &lines[29];
    let deleted = gone.replace("\"UPDATED\"", "\"DELETED\"");
    sim.apply(&parse(&deleted)).unwrap();
    sim.accept_subscriptions();

    let after = broker.consume(&host, "gap", 37);
    let log = host.stop_cleanly();
    let all = broker.all("gap");
    assert_eq!(
        all.len(),
        37,
        "30 before + 5 changed + 1 created + 1 deleted, once each"
    );
    // The deletion carries the event's last state (as a DELETED from CVP
    // would): its identity is the one delivered before, now twice.
    let mut got = tally(&after);
    let deleted_id = identity(&before[29]);
    assert_eq!(got.get(&deleted_id), Some(&2), "{log}");
    got.insert(deleted_id, 1);
    assert_eq!(got, expected, "log:\n{log}");
}

/// The host is killed with SIGKILL (no shutdown, no final checkpoint);
/// 4 events change while it is down; a new host with the same checkpoint
/// forwards exactly those 4, and nothing delivered before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_and_restart_resume_from_the_checkpoint() {
    let broker = Broker::start();
    broker.create_topic("resume", 1);
    let (lines, _) = live_events(40, 0);
    let sim = simulator(&lines).await;
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("checkpoint.json");
    let yaml = raw_config(
        &sim.local_addr().to_string(),
        &broker,
        "resume",
        &format!(
            "checkpoint:\n  path: {:?}\n  interval: 50ms\n",
            cp.display().to_string()
        ),
    );
    let host = Host::run(&yaml, &[]);
    let before = broker.consume(&host, "resume", 40);
    // The last event's time: once the checkpoint holds it, all 40 are safe.
    let last = parse(&lines[39]).value.unwrap().last_updated_time.unwrap();
    let last_ns = last.seconds * 1_000_000_000 + last.nanos as i64;
    eventually(&host, "the checkpoint to reach the 40th event", || {
        let text = std::fs::read_to_string(&cp).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        (v["delivered_up_to"].as_i64()? >= last_ns).then_some(())
    });
    host.signal(libc::SIGKILL);
    drop(host);

    let mut expected = tally(&before);
    let mut newest = 0;
    for (n, i) in [2usize, 15, 16, 33].iter().enumerate() {
        let (line, id) = change(&format!("ev-{i:04}"), &lines[i - 1], n);
        let t = parse(&line).value.unwrap().last_updated_time.unwrap();
        newest = newest.max(t.seconds * 1_000_000_000 + t.nanos as i64);
        sim.apply(&parse(&line)).unwrap();
        expected.insert(id, 1);
    }
    let host = Host::run(&yaml, &[]);
    broker.consume(&host, "resume", 44);
    let log = host.stop_cleanly();
    // A graceful stop writes the checkpoint last: it covers everything.
    let cp: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cp).unwrap()).unwrap();
    assert_eq!(cp["delivered_up_to"].as_i64(), Some(newest), "{cp}");
    let all = broker.all("resume");
    let got = tally(&all);
    assert_none_twice(&got);
    assert_eq!(got, expected, "log:\n{log}");
}

/// The file checkpoint's bound on duplicates (issue 15), at a rate where
/// it matters: 1,000 events/s with a 500 ms interval. While events flow,
/// each write follows the last by about one interval (a second "has the
/// interval passed" check once skipped every other tick, doubling what a
/// crash resends). After a SIGKILL, what the restart sends again is at most
/// what was acknowledged after the last write, and that is at most about
/// one interval's worth of events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_resends_at_most_one_checkpoint_interval() {
    const RATE: f64 = 1000.0;
    const INTERVAL: Duration = Duration::from_millis(500);
    // Scheduling on a loaded 2-core machine delays a tick; a skipped tick
    // doubles the gap.
    let slack = INTERVAL.mul_f64(1.6);
    let broker = Broker::start();
    broker.create_topic("bound", 1);
    let (_sim, addr) = support::simulator(cvp_simulator::SimOptions {
        token: Some("tok-d".into()),
        initial: 100,
        updates: 10_000_000,
        rate: RATE,
        wall_clock: true,
        ..cvp_simulator::SimOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let cp = dir.path().join("checkpoint.json");
    let yaml = raw_config(
        &addr,
        &broker,
        "bound",
        &format!(
            "checkpoint:\n  path: {:?}\n  interval: {}ms\n",
            cp.display().to_string(),
            INTERVAL.as_millis()
        ),
    );
    // UPDATED only: a deletion's record is the event's last state, which
    // would look like a record sent again.
    let yaml = yaml.replace("operations: [updated, deleted]", "operations: [updated]");
    let read_cp = || -> Option<serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(&cp).ok()?).ok()
    };
    let host = Host::run(&yaml, &[]);
    eventually(&host, "a first checkpoint", &read_cp);

    // Watch the writes for 4 s (about 8 intervals).
    let watch = std::time::Instant::now();
    let mut last_change = watch;
    let mut last = read_cp().unwrap()["delivered_up_to"].as_i64();
    let mut widest = Duration::ZERO;
    while watch.elapsed() < Duration::from_secs(4) {
        std::thread::sleep(Duration::from_millis(5));
        let now = read_cp().and_then(|v| v["delivered_up_to"].as_i64());
        if now.is_some() && now != last {
            widest = widest.max(last_change.elapsed());
            last_change = std::time::Instant::now();
            last = now;
        }
    }
    assert!(
        widest <= slack,
        "checkpoint writes {widest:?} apart with a {INTERVAL:?} interval"
    );

    host.signal(libc::SIGKILL);
    drop(host);
    let saved = read_cp().unwrap();
    let up_to = saved["delivered_up_to"].as_i64().unwrap();
    let also: std::collections::HashSet<(String, i64)> =
        serde_json::from_value(saved["also_delivered"].clone()).unwrap();
    let before = broker.all("bound");
    // Acknowledged after the last write: all a restart may send again.
    let unsaved = before
        .iter()
        .map(event_of)
        .filter(|e| e.1 > up_to && !also.contains(e))
        .count();
    let bound = (RATE * slack.as_secs_f64()) as usize;
    assert!(
        unsaved <= bound,
        "{unsaved} records acknowledged after the last checkpoint; at most {bound} expected"
    );

    let host = Host::run(&yaml, &[]);
    broker.consume(&host, "bound", before.len() + 1000);
    host.stop_cleanly();
    let sent_before: std::collections::HashSet<(String, i64)> =
        before.iter().map(event_of).collect();
    let resent = broker.all("bound")[before.len()..]
        .iter()
        .filter(|r| sent_before.contains(&event_of(r)))
        .count();
    eprintln!(
        "widest gap between writes {widest:?}; {unsaved} acknowledged after the last write; {resent} sent again"
    );
    assert!(
        resent <= unsaved,
        "{resent} sent again; only the {unsaved} acknowledged after the last checkpoint may be"
    );
}

/// (event key, last-updated time in ns) of a record written with no
/// transform: how a checkpoint names an event.
fn event_of(r: &Record) -> (String, i64) {
    let v = r.value_json();
    let t = v["lastUpdatedTime"]
        .as_str()
        .unwrap_or("1970-01-01T00:00:00Z");
    let t = humantime::parse_rfc3339(t).unwrap();
    (
        v["key"]["key"].as_str().unwrap_or("").to_string(),
        t.duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64,
    )
}

/// Exactly once (`sink.kafka.exactly_once`), the host killed with SIGKILL
/// in the middle of a burst (500 events/s, a transaction committed every
/// 100 ms) and restarted. On librdkafka's mock cluster: tansu 0.6 cannot
/// commit a transaction (it has no EndTxn; the next test), and the mock
/// commits but writes no transaction markers, so here a read-committed
/// consumer also sees the records of the transaction the kill left open
/// (a real Kafka hides them). What this shows: Kafka holds the checkpoint,
/// committed with the records; the restart resumes from it; every event
/// arrives; and the only events sent twice are those after the last
/// committed checkpoint, the open transaction's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_resumes_from_the_checkpoint_kafka_committed() {
    let broker = Broker::mock();
    broker.create_topic("eos", 1);
    // The mock has no CreateTopics: made as an operator would.
    broker.create_topic("eos-checkpoints", 1);
    let (lines, _) = live_events(2000, 0);
    let (_sim, addr) = support::simulator(cvp_simulator::SimOptions {
        token: Some("tok-d".into()),
        script: lines.iter().map(|l| parse(l)).collect(),
        rate: 500.0,
        ..cvp_simulator::SimOptions::default()
    })
    .await;
    let yaml = raw_config(&addr, &broker, "eos", "").replace(
        "    topic: eos\n",
        "    topic: eos\n    exactly_once: { group: eos-test, checkpoint_topic: eos-checkpoints }\n",
    );
    let host = Host::run(&yaml, &[]);
    broker.consume(&host, "eos", 600);
    host.signal(libc::SIGKILL);
    drop(host);

    // The checkpoint the last committed transaction carried.
    let checkpoints: Vec<Record> = broker
        .all("eos-checkpoints")
        .into_iter()
        .filter(|r| r.key.as_deref() == Some(&b"eos-test"[..]))
        .collect();
    let committed = checkpoints
        .last()
        .expect("a committed checkpoint")
        .value_json();
    let up_to = committed["delivered_up_to"].as_i64().unwrap();
    let also: std::collections::HashSet<(String, i64)> =
        serde_json::from_value(committed["also_delivered"].clone()).unwrap();
    let at_kill = broker.all("eos").len();
    assert!(at_kill < 2000, "the kill came after the burst");

    let host = Host::run(&yaml, &[]);
    let want = tally(&broker_records_before(&lines));
    eventually(&host, "every event", || {
        (tally(&broker.all("eos")).len() == want.len()).then_some(())
    });
    let log = host.stop_cleanly();
    let all = broker.all("eos");
    let got = tally(&all);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "log:\n{log}"
    );
    let mut seen = std::collections::HashSet::new();
    let mut twice = 0;
    for r in &all {
        let e = event_of(r);
        if !seen.insert(e.clone()) {
            twice += 1;
            assert!(
                e.1 > up_to && !also.contains(&e),
                "{e:?} sent again though the committed checkpoint ({up_to}) covers it"
            );
        }
    }
    eprintln!(
        "{at_kill} records at the kill; {} checkpoints committed; {twice} sent again, all after the last one",
        checkpoints.len()
    );
}

/// tansu 0.6 registers a transactional producer but has no EndTxn: with
/// exactly_once the first commit fails, and the service stops with one
/// line that says what the broker lacks (it does not go on unguarded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_on_a_broker_without_transactions_is_one_clear_line() {
    let broker = Broker::start();
    broker.create_topic("notxn", 1);
    let (lines, _) = live_events(20, 0);
    let sim = simulator(&lines).await;
    let yaml = raw_config(&sim.local_addr().to_string(), &broker, "notxn", "").replace(
        "    topic: notxn\n",
        "    topic: notxn\n    exactly_once: { group: notxn }\n",
    );
    let host = Host::run(&yaml, &[]);
    let (status, log) = host.wait_exit();
    assert!(!status.success(), "{log}");
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.contains("this Kafka cluster does not support transactions"),
        "{log}"
    );
}

/// Kafka stops answering for 30 s while events keep coming (the broker
/// is frozen: a hung broker or a network partition). The host holds the
/// records (it retries for as long as it takes), says it is not ready, and
/// when the broker answers again every one of them arrives.
///
/// (Not a stop and restart: tansu's in-memory storage forgets the topic and
/// the idempotent producer's id across a restart, which a real Kafka keeps
/// on disk; /ready across a real restart is in tests/ops.rs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_of_30s_loses_nothing() {
    let broker = Broker::start();
    broker.create_topic("outage", 1);
    let (lines, _) = live_events(10, 0);
    let sim = simulator(&lines).await;
    let admin = format!("127.0.0.1:{}", free_port());
    let yaml = raw_config(
        &sim.local_addr().to_string(),
        &broker,
        "outage",
        &format!("admin:\n  listen: \"{admin}\"\n"),
    );
    let host = Host::run(&yaml, &[]);
    broker.consume(&host, "outage", 10);

    broker.freeze();
    eventually(&host, "the host to see Kafka gone", || {
        (http_get(&admin, "/ready").0 == 503).then_some(())
    });
    let mut expected = tally(&broker_records_before(&lines));
    for n in 0..25 {
        let i = n % 10 + 1;
        let (line, id) = change(&format!("ev-{i:04}"), &lines[i - 1], n);
        sim.apply(&parse(&line)).unwrap();
        expected.insert(id, 1);
    }
    let text = eventually(&host, "the 25 changes held for Kafka", || {
        let (_, text) = http_get(&admin, "/metrics");
        (metric(&text, "cvp_stream_kafka_queue_depth") == Some(25.0)).then_some(text)
    });
    assert_eq!(
        metric(&text, "cvp_stream_records_produced_total{topic=\"outage\"}"),
        Some(10.0)
    );
    // The outage itself: what the scenario is, not a wait for a signal.
    std::thread::sleep(Duration::from_secs(30));
    broker.thaw();

    broker.consume(&host, "outage", 35);
    eventually(&host, "/ready again", || {
        (http_get(&admin, "/ready").0 == 200).then_some(())
    });
    let log = host.stop_cleanly();
    let got = tally(&broker.all("outage"));
    assert_none_twice(&got);
    assert_eq!(got, expected, "every change arrived; log:\n{log}");
}

/// The identities of the scripted events, as the host writes them.
fn broker_records_before(lines: &[String]) -> Vec<Record> {
    lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Record {
                topic: String::new(),
                key: None,
                value: Some(serde_json::to_vec(&v["value"]).unwrap()),
                headers: Vec::new(),
            }
        })
        .collect()
}

/// A misbehaving transform with `on_error: dead_letter`, triggered by every
/// 10th of 50 events: 45 records on the topic, 5 dead letters with the
/// event as JSON and headers saying which transform failed and how.
fn every_tenth_event_goes_to_the_dead_letter_topic(mode: &str, limits: &str, failure: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let broker = Broker::start();
    broker.create_topic("main", 1);
    broker.create_topic("dlq", 1);
    let (lines, _) = live_events(50, 10);
    let sim = rt.block_on(simulator(&lines));
    let transforms = "transforms:\n".to_string()
        + &transform(
            "bad",
            "misbehave",
            &format!(
                "    config: {{ mode: {mode} }}\n    on_error: dead_letter\n    limits: {limits}\n"
            ),
        );
    let yaml = raw_config(
        &sim.local_addr().to_string(),
        &broker,
        "main",
        "    dead_letter_topic: dlq\n",
    ) + &transforms;
    let host = Host::run(&yaml, &[]);
    let main = broker.consume(&host, "main", 45);
    let dead = broker.consume(&host, "dlq", 5);
    // The topics hold what was consumed (45 and 5 records), nothing more.
    finish(&broker, host, &[("main", &main), ("dlq", &dead)]);
    assert!(main.iter().all(|r| !identity(r).1.contains("MISBEHAVE")));
    let keys: Vec<String> = dead.iter().map(Record::key_text).collect();
    assert_eq!(
        keys,
        ["ev-0010", "ev-0020", "ev-0030", "ev-0040", "ev-0050"]
    );
    for r in &dead {
        assert_eq!(
            r.header("cvp-dead-letter-reason").as_deref(),
            Some("transform-failed")
        );
        assert_eq!(r.header("cvp-transform").as_deref(), Some("bad"));
        assert_eq!(r.header("cvp-failure").as_deref(), Some(failure), "{r:?}");
        assert_eq!(r.header("cvp-event-key"), Some(r.key_text()));
        assert!(r.header("cvp-error").is_some_and(|e| !e.is_empty()));
        // The whole event, ready to replay.
        assert_eq!(
            r.value_json()["key"]["key"].as_str(),
            Some(r.key_text().as_str())
        );
        assert!(identity(r).1.contains("MISBEHAVE"));
    }
}

#[test]
fn trap_on_every_tenth_event_is_dead_lettered() {
    every_tenth_event_goes_to_the_dead_letter_topic("trap", "{}", "trap");
}

#[test]
fn endless_loop_is_dead_lettered() {
    every_tenth_event_goes_to_the_dead_letter_topic("spin", "{ timeout: 200ms }", "timeout");
}

#[test]
fn allocation_until_the_cap_is_dead_lettered() {
    every_tenth_event_goes_to_the_dead_letter_topic("hog", "{ memory: 32MiB }", "memory");
}

/// A record Kafka will never take (larger than the broker's limit, here a
/// producer limit of 2 KiB below a 3 KiB value) goes to the dead-letter
/// topic without its value, with its size and original topic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_large_record_is_dead_lettered() {
    let broker = Broker::start();
    broker.create_topic("small", 1);
    broker.create_topic("dlq", 1);
    let t = now_ns() - 1_000_000_000;
    let big = "x".repeat(3000);
    let lines = vec![
        entry("UPDATED", "fits", t, t, "small"),
        entry("UPDATED", "too-big", t + 1, t + 1, &big),
    ];
    let sim = simulator(&lines).await;
    let yaml = raw_config(
        &sim.local_addr().to_string(),
        &broker,
        "small",
        "    dead_letter_topic: dlq\n    properties: { message.max.bytes: 2048 }\n",
    );
    let host = Host::run(&yaml, &[]);
    let ok = broker.consume(&host, "small", 1);
    assert_eq!(ok[0].key_text(), "fits");
    let dead = broker.consume(&host, "dlq", 1);
    finish(&broker, host, &[("small", &ok)]);
    let d = &dead[0];
    assert_eq!(d.key_text(), "too-big");
    assert_eq!(d.value, None);
    assert_eq!(
        d.header("cvp-dead-letter-reason").as_deref(),
        Some("undeliverable")
    );
    assert_eq!(d.header("cvp-original-topic").as_deref(), Some("small"));
    let size: usize = d.header("cvp-original-size").unwrap().parse().unwrap();
    assert!(size > 3000, "{size}");
}

/// What a CVP may send that a careless reader trips on: no title or
/// description, empty strings, an unknown severity (a newer CVP), a huge
/// data map, non-ASCII text. Every event gets through, through the stock
/// transform and as JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_events_from_cvp_pass_through() {
    let broker = Broker::start();
    broker.create_topic("odd", 1);
    broker.create_topic("odd-json", 1);
    let t = now_ns() - 1_000_000_000;
    let ts = rfc3339(t);
    let huge: serde_json::Map<String, serde_json::Value> = (0..20_000)
        .map(|i| (format!("k{i}"), serde_json::Value::from(format!("v{i}"))))
        .collect();
    let lines = [
        // Only a key: no title, description, severity or anything else.
        serde_json::json!({"type": "UPDATED", "value": {"key": {"key": "bare", "timestamp": ts}}}),
        serde_json::json!({"type": "UPDATED", "value": {"key": {"key": "empty", "timestamp": ts},
            "title": "", "description": "", "eventType": ""}}),
        serde_json::json!({"type": "UPDATED", "value": {"key": {"key": "future", "timestamp": ts},
            "title": "From a newer CVP", "description": "severity 42", "severity": 42}}),
        serde_json::json!({"type": "UPDATED", "value": {"key": {"key": "huge", "timestamp": ts},
            "title": "Huge", "description": "20000 data entries", "data": {"data": huge}}}),
        serde_json::json!({"type": "UPDATED", "value": {"key": {"key": "utf8", "timestamp": ts},
            "title": "Intérêt dépassé — 東京 DC 🚨", "description": "Ελληνικά\u{0}nul"}}),
    ]
    .map(|v| v.to_string());
    // One simulator per host: each host must see the events live.
    let (sim, sim_raw) = (simulator(&lines).await, simulator(&lines).await);
    let stock = "transforms:\n".to_string() + &transform("t", "title_to_key", "");
    let host = Host::run(
        &(raw_config(&sim.local_addr().to_string(), &broker, "odd", "") + &stock),
        &[],
    );
    let raw = Host::run(
        &raw_config(&sim_raw.local_addr().to_string(), &broker, "odd-json", ""),
        &[],
    );
    let got = broker.consume(&host, "odd", 5);
    let json = broker.consume(&raw, "odd-json", 5);
    for h in [host, raw] {
        h.stop_cleanly();
    }
    let pairs: Vec<(String, String)> = got
        .iter()
        .map(|r| {
            (
                r.key_text(),
                String::from_utf8(r.value.clone().unwrap_or_default()).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [
            ("", ""),
            ("", ""),
            ("From a newer CVP", "severity 42"),
            ("Huge", "20000 data entries"),
            ("Intérêt dépassé — 東京 DC 🚨", "Ελληνικά\u{0}nul"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
    );
    let keys: Vec<String> = json.iter().map(Record::key_text).collect();
    assert_eq!(keys, ["bare", "empty", "future", "huge", "utf8"]);
    assert_eq!(json[2].value_json()["severity"], serde_json::json!(42));
    assert_eq!(
        json[3].value_json()["data"]["data"]
            .as_object()
            .map(|m| m.len()),
        Some(20_000)
    );
    assert_eq!(
        json[4].value_json()["title"],
        "Intérêt dépassé — 東京 DC 🚨"
    );
}

/// SIGTERM while Kafka is away and the producer's queue is full: the host
/// does not wait for a Kafka that may never come back. It stops within its
/// flush timeout, and says that what it could not hand over is sent after
/// the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_kafka_away_and_the_queue_full_ends() {
    let nobody = Broker::start();
    let away = nobody.addr.clone();
    drop(nobody); // the address now refuses connections
    let (lines, _) = live_events(20_000, 0);
    let sim = simulator(&lines).await;
    let admin = format!("127.0.0.1:{}", free_port());
    let yaml = format!(
        "source:\n  cvp:\n    address: \"{}\"\n    token: tok-d\n    tls: {{ enabled: false }}\nsink:\n  kafka:\n    brokers: \"{away}\"\n    topic: t\n    max_queue_size: 1MiB\n    flush_timeout: 2s\nadmin:\n  listen: \"{admin}\"\n",
        sim.local_addr()
    );
    let host = Host::run(&yaml, &[]);
    // Full: records are held and no more are taken (the count stops).
    let mut last = -1.0;
    eventually(&host, "the producer queue to fill up", || {
        let (_, text) = http_get(&admin, "/metrics");
        let depth = metric(&text, "cvp_stream_kafka_queue_depth")?;
        let steady = depth > 100.0 && depth == last;
        last = depth;
        steady.then_some(())
    });
    let started = std::time::Instant::now();
    let log = host.stop_cleanly();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        log.contains("shutting down while Kafka takes nothing"),
        "{log}"
    );
}
