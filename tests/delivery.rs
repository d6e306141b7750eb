//! Delivery under faults: each test counts what went in (changes made in
//! the simulated CVP) and what came out (records on the real broker), and
//! asserts that nothing was lost and nothing sent twice.
//!
//! Each change has a description of its own, so a record is identified by
//! (event key, description), read back from the JSON value the host writes
//! when no transform is configured.

mod support;

use cvp_simulator::SimHandle;
use std::collections::{BTreeMap, HashSet};
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
/// 100 ms) and restarted, on librdkafka's mock cluster. What this shows:
/// Kafka holds the checkpoint, committed with the records; the restart
/// resumes from it; every event arrives; and the only events sent twice
/// are those after the last committed checkpoint, the open transaction's
/// (the mock writes no transaction markers, so a read-committed consumer
/// sees them; a real Kafka hides them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_resumes_from_the_checkpoint_kafka_committed() {
    let broker = Broker::mock();
    broker.create_topic("eos", 1);
    // The mock has no CreateTopics: made as an operator would.
    broker.create_topic("eos-checkpoints", 1);
    let (lines, _) = live_events(2000, 0);
    let (_sim, cvp) = burst(&lines, 500.0).await;
    let yaml = exactly_once_config(&cvp, &broker, "eos", "eos-test", None);
    let host = Host::run(&yaml, &[]);
    broker.consume(&host, "eos", 600);
    host.signal(libc::SIGKILL);
    drop(host);
    let committed = last_checkpoint(&broker, "eos", "eos-test");
    assert!(
        broker.all("eos").len() < 2000,
        "the kill came after the burst"
    );

    let host = Host::run(&yaml, &[]);
    let twice = assert_once_but_after(&broker, &host, "eos", &lines, &committed);
    host.stop_cleanly();
    eprintln!("{twice} sent again, all after the last committed checkpoint");
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

/// The session timeout the standby tests give their groups: the least
/// Kafka's brokers accept by default.
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);

/// A simulator that plays `lines` live, `rate` a second.
async fn burst(lines: &[String], rate: f64) -> (SimHandle, String) {
    support::simulator(cvp_simulator::SimOptions {
        token: Some("tok-d".into()),
        script: lines.iter().map(|l| parse(l)).collect(),
        rate,
        ..cvp_simulator::SimOptions::default()
    })
    .await
}

/// `sink.kafka.exactly_once` for `group`, a transaction every 100 ms; with
/// `standby`, one of several instances, its admin endpoint on `admin`.
fn exactly_once_config(
    cvp: &str,
    broker: &Broker,
    topic: &str,
    group: &str,
    standby: Option<&str>,
) -> String {
    let (admin, ha) = match standby {
        Some(admin) => (
            format!("admin:\n  listen: \"{admin}\"\n"),
            format!(
                ", standby: true, session_timeout: {}s",
                SESSION_TIMEOUT.as_secs()
            ),
        ),
        None => (String::new(), String::new()),
    };
    raw_config(cvp, broker, topic, &admin).replace(
        &format!("    topic: {topic}\n"),
        &format!("    topic: {topic}\n    exactly_once: {{ group: {group}, checkpoint_topic: {topic}-checkpoints{ha} }}\n"),
    )
}

/// The role an instance's /metrics gives, if it answers.
fn role(admin: &str) -> Option<&'static str> {
    let (_, text) = http_get(admin, "/metrics");
    ["active", "standby"]
        .into_iter()
        .find(|r| metric(&text, &format!("cvp_stream_role{{role=\"{r}\"}}")) == Some(1.0))
}

fn loopback() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// Waits until a read-committed consumer sees every event of `lines` on
/// `topic`, then asserts that it sees each exactly once.
fn assert_each_once(broker: &Broker, host: &Host, topic: &str, lines: &[String]) {
    let twice = assert_once_but_after(broker, host, topic, lines, &(i64::MAX, HashSet::new()));
    assert_eq!(twice, 0);
}

/// What a checkpoint says was delivered: up to a time, and these after it.
type Committed = (i64, HashSet<(String, i64)>);

/// The checkpoint of `group` last written to `TOPIC-checkpoints`.
fn last_checkpoint(broker: &Broker, topic: &str, group: &str) -> Committed {
    let last = broker
        .all(&format!("{topic}-checkpoints"))
        .into_iter()
        .rfind(|r| r.key.as_deref() == Some(group.as_bytes()))
        .expect("a committed checkpoint")
        .value_json();
    (
        last["delivered_up_to"].as_i64().unwrap(),
        serde_json::from_value(last["also_delivered"].clone()).unwrap(),
    )
}

/// Waits until a read-committed consumer sees every event of `lines` on
/// `topic`, and asserts that an event it sees twice is one the checkpoint
/// `committed` (the last committed before a fault) does not cover: one of
/// the transaction the fault left open, which Kafka hides from
/// read-committed consumers and neither broker here does (the mock
/// writes no transaction markers; nisshi 0.7 lists no aborted
/// transactions in its fetch responses). Returns how many were sent twice.
fn assert_once_but_after(
    broker: &Broker,
    host: &Host,
    topic: &str,
    lines: &[String],
    committed: &Committed,
) -> usize {
    let want = tally(&broker_records_before(lines));
    eventually(host, "every event, committed", || {
        (tally(&broker.all(topic)).len() == want.len()).then_some(())
    });
    let all = broker.all(topic);
    let got = tally(&all);
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "log:\n{}",
        host.log()
    );
    let (up_to, also) = committed;
    let mut seen = HashSet::new();
    let mut twice = 0;
    for r in &all {
        let e = event_of(r);
        if !seen.insert(e.clone()) {
            twice += 1;
            assert!(
                e.1 > *up_to && !also.contains(&e),
                "{e:?} sent again though the committed checkpoint ({up_to}) covers it; log:\n{}",
                host.log()
            );
        }
    }
    twice
}

/// Two instances of one group started together: exactly one is active
/// (its /ready and /metrics say so; the other's say standby, and it never
/// reaches CVP), and a read-committed consumer sees every event once.
/// Then the active one is stopped cleanly (SIGTERM): it leaves the group,
/// so the standby takes over at once, not after the session timeout, and
/// sends nothing again. On nisshi: tansu 0.6 has no EndTxn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_two_started_together_one_is_active_and_a_clean_stop_hands_over() {
    let broker = Broker::nisshi();
    broker.create_topic("both", 1);
    let (lines, _) = live_events(600, 0);
    let (_sim, cvp) = burst(&lines, 200.0).await;
    let admins = [loopback(), loopback()];
    let mut hosts: Vec<Host> = admins
        .iter()
        .map(|admin| {
            Host::run(
                &exactly_once_config(&cvp, &broker, "both", "both", Some(admin)),
                &[],
            )
        })
        .collect();
    let first = eventually(&hosts[0], "one active, one standby", || {
        let r = (role(&admins[0])?, role(&admins[1])?);
        assert_ne!(r, ("active", "active"), "both active");
        (r.0 != r.1).then_some(if r.0 == "active" { 0 } else { 1 })
    });
    let (active, standby) = (hosts.remove(first), hosts.remove(0));
    let standby_admin = &admins[1 - first];
    assert_each_once(&broker, &active, "both", &lines);
    assert_eq!(role(&admins[first]), Some("active"));
    assert_eq!(role(standby_admin), Some("standby"));
    let (status, body) = http_get(standby_admin, "/ready");
    assert_eq!(
        (status, body.trim_end()),
        (200, "ready: standby (another instance of the exactly_once group is active; this one takes over if it goes)")
    );
    assert_eq!(
        http_get(&admins[first], "/ready"),
        (200, "ready: active\n".into())
    );

    let stopped = std::time::Instant::now();
    let log = active.stop_cleanly();
    eventually(&standby, "the standby to take over", || {
        (role(standby_admin) == Some("active")).then_some(())
    });
    let took = stopped.elapsed();
    assert!(
        took < SESSION_TIMEOUT,
        "took over {took:?} after a clean stop"
    );
    standby.wait_for_log("cvp-stream started");
    let standby_log = standby.stop_cleanly();
    assert!(log.contains("cvp-stream started"), "{log}");
    assert_eq!(
        standby_log.matches("cvp-stream started").count(),
        1,
        "{standby_log}"
    );
    let got = tally(&broker.all("both"));
    assert_none_twice(&got);
    assert_eq!(got.len(), lines.len());
    eprintln!("a clean stop handed over in {took:?}");
}

/// Two instances of group TOPIC delivering to `topic`: the first started
/// and active, then the second, standing by; the first has delivered 300
/// records.
fn active_then_standby(broker: &Broker, cvp: &str, topic: &str) -> [(Host, String); 2] {
    broker.create_topic(topic, 1);
    let start = |want: &str| {
        let admin = loopback();
        let host = Host::run(
            &exactly_once_config(cvp, broker, topic, topic, Some(&admin)),
            &[],
        );
        eventually(&host, &format!("an instance to be {want}"), || {
            (role(&admin) == Some(want)).then_some(())
        });
        (host, admin)
    };
    let active = start("active");
    let standby = start("standby");
    broker.consume(&active.0, topic, 300);
    [active, standby]
}

/// The active instance is killed (SIGKILL) in the middle of a burst: the
/// standby takes over within the session timeout (and the rebalance
/// after it), resumes from the checkpoint Kafka committed, and a
/// read-committed consumer sees every event exactly once: the killed
/// instance's open transaction is aborted by the standby's registration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_takes_over_when_the_active_is_killed_mid_burst() {
    let broker = Broker::nisshi();
    let (lines, _) = live_events(2000, 0);
    let (_sim, cvp) = burst(&lines, 500.0).await;
    let [(a, _), (b, b_admin)] = active_then_standby(&broker, &cvp, "killed");
    a.signal(libc::SIGKILL);
    let killed = std::time::Instant::now();
    drop(a);
    let committed = last_checkpoint(&broker, "killed", "killed");
    eventually(&b, "the standby to take over", || {
        (role(&b_admin) == Some("active")).then_some(())
    });
    let took = killed.elapsed();
    assert!(
        took < SESSION_TIMEOUT + Duration::from_secs(10),
        "took over after {took:?}"
    );
    let twice = assert_once_but_after(&broker, &b, "killed", &lines, &committed);
    let log = b.stop_cleanly();
    assert!(
        log.contains("active: this instance delivers for the group now"),
        "{log}"
    );
    eprintln!("the standby took over {took:?} after the kill; {twice} records of the killed one's open transaction");
}

/// The active instance is frozen (SIGSTOP: a long GC-like pause, a VM
/// migration) mid-burst; the standby takes over; then the former active
/// resumes, still believing it is active. Kafka fences it: it writes
/// nothing a read-committed consumer sees, says it is no longer active,
/// and stands by; every event arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_fences_a_frozen_active_that_comes_back() {
    let broker = Broker::nisshi();
    let (lines, _) = live_events(2000, 0);
    let (_sim, cvp) = burst(&lines, 250.0).await;
    let [(a, a_admin), (b, b_admin)] = active_then_standby(&broker, &cvp, "frozen");
    a.signal(libc::SIGSTOP);
    let committed = last_checkpoint(&broker, "frozen", "frozen");
    eventually(&b, "the standby to take over", || {
        (role(&b_admin) == Some("active")).then_some(())
    });
    // Taking over is registering the transactional id, which fences.
    b.wait_for_log("cvp-stream started");
    a.signal(libc::SIGCONT);
    eventually(&a, "the former active to stand by", || {
        (role(&a_admin) == Some("standby")).then_some(())
    });
    let log_a = a.wait_for_log("no longer active");
    let twice = assert_once_but_after(&broker, &b, "frozen", &lines, &committed);
    assert_eq!(role(&b_admin), Some("active"));
    let log_b = b.stop_cleanly();
    let log_a = format!("{log_a}{}", a.stop_cleanly());
    assert!(log_b.contains("active: this instance delivers"), "{log_b}");
    assert!(!log_a.contains("panicked"), "{log_a}");
    let said: Vec<&str> = log_a
        .lines()
        .filter(|l| l.contains("no longer active"))
        .collect();
    eprintln!("{twice} records of the frozen one's open transaction; it said: {said:?}");
}

/// The broker (nisshi keeping its state in PostgreSQL) is killed and
/// started again in the middle of a burst, transactions open: the host
/// rides it out, and a read-committed consumer sees every event exactly
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_through_a_broker_restart_mid_transaction() {
    let mut broker = Broker::nisshi_on_postgres("cvp_stream_test_restart");
    broker.create_topic("restart", 1);
    let (lines, _) = live_events(1500, 0);
    let (_sim, cvp) = burst(&lines, 300.0).await;
    let host = Host::run(
        &exactly_once_config(&cvp, &broker, "restart", "restart", None),
        &[],
    );
    broker.consume(&host, "restart", 300);
    let committed = last_checkpoint(&broker, "restart", "restart");
    broker.restart();
    let twice = assert_once_but_after(&broker, &host, "restart", &lines, &committed);
    let log = host.stop_cleanly();
    assert!(!log.contains("panicked"), "{log}");
    eprintln!("{twice} sent again, all after the last committed checkpoint");
}

/// CVP's stream is cut in the middle of a burst, a transaction open: the
/// host resubscribes, works out from CVP's current state what it has not
/// delivered, and a read-committed consumer sees every event exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exactly_once_through_a_cvp_stream_reset_mid_transaction() {
    let broker = Broker::nisshi();
    broker.create_topic("reset", 1);
    let (lines, _) = live_events(1500, 0);
    let (sim, cvp) = burst(&lines, 500.0).await;
    let host = Host::run(
        &exactly_once_config(&cvp, &broker, "reset", "reset", None),
        &[],
    );
    broker.consume(&host, "reset", 300);
    sim.reset_streams(false);
    host.wait_for_log("CVP stream failed");
    assert_each_once(&broker, &host, "reset", &lines);
    host.stop_cleanly();
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
