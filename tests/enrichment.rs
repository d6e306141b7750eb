//! Enrichment (issue 13) end to end: the CVP simulator (events, inventory,
//! tags) -> the pipeline in-process with `source.cvp.enrich` -> the Redis
//! sink (127.0.0.1:6379), read back with XRANGE; each record's value is the
//! default JSON, whose `enrichment` object is asserted exactly. Each step
//! waits for a signal (the store holding the change, the stream holding the
//! record), never for a while. The memory test runs the binary.

#[path = "support/natsredis.rs"]
mod natsredis;
mod support;

use cvp_simulator::{SimHandle, SimOptions, Simulator};
use cvp_stream::config::Config;
use cvp_stream::pipeline::Pipeline;
use cvp_stream::sinks::{RedisConfig, SinkConfig};
use cvp_stream::sources::cvp::{Directory, EnrichConfig};
use natsredis::unique;
use redis::aio::MultiplexedConnection;
use redis::streams::StreamRangeReply;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const SERVER: &str = "127.0.0.1:6379";
const LIMIT: Duration = Duration::from_secs(60);
const LEAF1: &str = "JPE19181520";

/// The simulator with no events of its own (the test applies them), its
/// inventory and tags as given.
async fn simulator(tag_service: bool) -> SimHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    Simulator::start(
        SimOptions {
            token: Some(natsredis::TOKEN.into()),
            initial: 0,
            updates: 0,
            tag_service,
            ..SimOptions::default()
        },
        listener,
    )
    .await
    .expect("simulator")
}

/// A running pipeline into a Redis stream of its own.
struct Run {
    sim: SimHandle,
    dir: Arc<Directory>,
    conn: MultiplexedConnection,
    stream: String,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<cvp_stream::delivery::DeliveryStats>>,
    /// Events applied so far, to name the next.
    applied: usize,
}

async fn start(sim: SimHandle, enrich: EnrichConfig) -> Run {
    let client = redis::Client::open(format!("redis://{SERVER}")).unwrap();
    let conn = tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .unwrap_or_else(|| panic!("Redis is not reachable on {SERVER}: these tests need it"));
    let topic = unique("enrich");
    let prefix = unique("cvptest:") + ":";
    let mut sink = RedisConfig::new(format!("redis://{SERVER}"), &topic);
    sink.stream_prefix = prefix.clone();
    let mut config: Config = natsredis::config(&sim, Vec::new(), SinkConfig::Redis(sink), None);
    config.source.cvp.enrich = Some(enrich);
    config.source.cvp.max_backoff = Duration::from_millis(500);
    let shutdown = CancellationToken::new();
    let sink = config.sink.start(&shutdown).await.expect("the sink starts");
    let pipeline = Pipeline::build_off_runtime(Arc::new(config), sink)
        .await
        .expect("the pipeline builds");
    let dir = pipeline.directory().expect("enrichment is on");
    let task = tokio::spawn(pipeline.run(shutdown.clone(), false));
    // The event stream is live (its snapshot taken): what is applied from
    // now on is a live change.
    natsredis::eventually("the event stream syncs", LIMIT, || {
        sim.stats().sent_initial_sync_complete >= 1
    })
    .await;
    Run {
        sim,
        dir,
        conn,
        stream: format!("{prefix}{topic}"),
        shutdown,
        task,
        applied: 0,
    }
}

impl Run {
    /// Raises event `n` on `device` (an interface event on `intf` when
    /// given), as CVP would, and waits until its record is in Redis.
    async fn event(&mut self, device: &str, intf: Option<&str>) -> Value {
        self.applied += 1;
        let n = self.applied;
        let t = format!("2026-11-20T10:00:{n:02}Z");
        let (components, data) = match intf {
            Some(i) => (
                format!(
                    r#"{{"components":[{{"type":"COMPONENT_TYPE_INTERFACE","components":{{"deviceId":"{device}","interfaceId":"{i}"}}}}]}}"#
                ),
                format!(r#"{{"data":{{"deviceId":"{device}","interfaceId":"{i}"}}}}"#),
            ),
            None => (
                format!(
                    r#"{{"components":[{{"type":"COMPONENT_TYPE_DEVICE","components":{{"deviceId":"{device}"}}}}]}}"#
                ),
                format!(r#"{{"data":{{"deviceId":"{device}"}}}}"#),
            ),
        };
        let line = format!(
            r#"{{"value":{{"key":{{"key":"ev-{n:04}","timestamp":"{t}"}},"severity":"EVENT_SEVERITY_WARNING","title":"t{n}","eventType":"TEST","components":{components},"data":{data},"lastUpdatedTime":"{t}"}},"time":"{t}","type":"UPDATED"}}"#
        );
        let change = cvp_proto::json::parse_stream_response(&line).expect("a valid entry");
        self.sim.apply(&change).expect("applied");
        let mut conn = self.conn.clone();
        let stream = self.stream.clone();
        let mut entries = Vec::new();
        let start = std::time::Instant::now();
        while entries.len() < n {
            assert!(
                start.elapsed() < LIMIT,
                "event {n} not in Redis within {LIMIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
            entries = read_all(&mut conn, &stream).await;
        }
        assert_eq!(entries.len(), n, "one record per event");
        let value: Value = serde_json::from_str(&entries[n - 1]).expect("a JSON value");
        assert_eq!(value["key"]["key"], format!("ev-{n:04}"));
        value
    }

    /// Waits until the store says `check` of `device`.
    async fn until(&self, what: &str, device: &str, check: impl Fn(&Value) -> bool) {
        let dir = self.dir.clone();
        natsredis::eventually(what, LIMIT, || {
            dir.device(device).is_some_and(|d| check(&device_json(&d)))
        })
        .await;
    }

    async fn stop(self) {
        self.shutdown.cancel();
        let stats = tokio::time::timeout(LIMIT, self.task)
            .await
            .expect("the run ends")
            .expect("the run task")
            .expect("the run succeeds");
        assert_eq!(stats.events as usize, self.applied);
        let mut conn = self.conn.clone();
        let _: redis::RedisResult<()> = redis::cmd("DEL")
            .arg(&self.stream)
            .query_async(&mut conn)
            .await;
        self.sim.shutdown().await;
    }
}

/// The `value` field of every entry of `stream`, in order.
async fn read_all(conn: &mut MultiplexedConnection, stream: &str) -> Vec<String> {
    let reply: StreamRangeReply = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(conn)
        .await
        .expect("XRANGE");
    reply
        .ids
        .into_iter()
        .map(|e| {
            let v = e.map.get("value").expect("a value field").clone();
            let bytes: Vec<u8> = redis::from_redis_value(v).expect("bytes");
            String::from_utf8(bytes).unwrap()
        })
        .collect()
}

/// A device as the JSON value carries it.
fn device_json(d: &cvp_stream::enrichment::Device) -> Value {
    let e = cvp_stream::enrichment::Enrichment {
        devices: vec![Arc::new(d.clone())],
        interfaces: Vec::new(),
        link: None,
    };
    let mut out = Vec::new();
    cvp_stream::enrichment::write_enrichment(&e, &mut out);
    let v: Value = serde_json::from_slice(&out).unwrap();
    v["devices"][0].clone()
}

/// leaf1.dc1 as the simulator's inventory has it, with `tags`.
fn leaf1(hostname: &str, tags: Value) -> Value {
    json!({
        "deviceId": LEAF1,
        "hostname": hostname,
        "fqdn": format!("{hostname}.example.net"),
        "model": "DCS-7050SX3-48YC8",
        "softwareVersion": "4.30.2F",
        "hardwareRevision": "11.01",
        "systemMacAddress": "00:1c:73:00:00:00",
        "streamingStatus": "active",
        "tags": tags,
    })
}

fn link(run: &Run, n: usize) -> String {
    // 2026-11-20T10:00:NNZ in ns.
    let ns = (1_795_168_800 + n as i64) * 1_000_000_000;
    format!(
        "https://{}/cv/events/ev-{n:04}?timestamp={ns}",
        run.sim.local_addr()
    )
}

fn enrich(tags: &[&str]) -> EnrichConfig {
    EnrichConfig {
        tags: tags.iter().map(|t| t.to_string()).collect(),
        ..EnrichConfig::default()
    }
}

/// A rename (CVP streams only the changed hostname and FQDN) applies to the
/// next event, and only to it: the first record keeps the old name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_after_a_rename_carries_the_new_hostname() {
    let mut run = start(simulator(true).await, enrich(&["site", "role"])).await;
    let tags = json!({"role": ["leaf"], "site": ["dc1"]});
    let first = run.event(LEAF1, None).await;
    assert_eq!(
        first["enrichment"],
        json!({"devices": [leaf1("leaf1.dc1", tags.clone())], "interfaces": [], "link": link(&run, 1)})
    );
    run.sim.rename_device(LEAF1, "leaf1-new.dc1");
    run.until("the rename reaches the store", LEAF1, |d| {
        d["hostname"] == "leaf1-new.dc1"
    })
    .await;
    let second = run.event(LEAF1, None).await;
    assert_eq!(
        second["enrichment"],
        json!({"devices": [leaf1("leaf1-new.dc1", tags)], "interfaces": [], "link": link(&run, 2)})
    );
    run.stop().await;
}

/// A device tag and an interface tag assigned mid-stream appear on the next
/// event, and are gone from the one after their removal; a system tag is
/// left out when only user tags are asked for, and so are labels not named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_assigned_mid_stream_appears_on_the_next_event() {
    let mut cfg = enrich(&["site", "role", "circuit-id"]);
    cfg.tag_creators = vec![cvp_stream::sources::cvp::config::CreatorName::User];
    let mut run = start(simulator(true).await, cfg).await;
    let intf = "Ethernet1";
    let interface = |tags: Value| json!([{"deviceId": LEAF1, "interfaceId": intf, "tags": tags}]);
    let base = json!({"role": ["leaf"], "site": ["dc1"]});
    let first = run.event(LEAF1, Some(intf)).await;
    assert_eq!(
        first["enrichment"],
        json!({"devices": [leaf1("leaf1.dc1", base.clone())], "interfaces": interface(json!({})), "link": link(&run, 1)})
    );

    // The system tag first: once the user tags after it are in the store,
    // it has been read (and left out).
    run.sim.assign_system_tag(LEAF1, "role", "system-role");
    run.sim.assign_tag(LEAF1, None, "site", "dc9");
    run.sim
        .assign_tag(LEAF1, Some(intf), "circuit-id", "C-NEW-1");
    run.sim.assign_tag(LEAF1, None, "rack", "r1");
    run.until("the tags reach the store", LEAF1, |d| {
        d["tags"]["site"] == json!(["dc1", "dc9"])
    })
    .await;
    let dir = run.dir.clone();
    natsredis::eventually("the interface tag reaches the store", LIMIT, || {
        dir.tag_assignments() >= 3
    })
    .await;
    let second = run.event(LEAF1, Some(intf)).await;
    assert_eq!(
        second["enrichment"],
        json!({
            "devices": [leaf1("leaf1.dc1", json!({"role": ["leaf"], "site": ["dc1", "dc9"]}))],
            "interfaces": interface(json!({"circuit-id": ["C-NEW-1"]})),
            "link": link(&run, 2)
        })
    );

    run.sim
        .remove_tag(LEAF1, Some(intf), "circuit-id", "C-NEW-1");
    run.sim.remove_tag(LEAF1, None, "site", "dc9");
    run.until("the removal reaches the store", LEAF1, |d| {
        d["tags"] == base
    })
    .await;
    let third = run.event(LEAF1, Some(intf)).await;
    assert_eq!(
        third["enrichment"],
        json!({"devices": [leaf1("leaf1.dc1", base.clone())], "interfaces": interface(json!({})), "link": link(&run, 3)})
    );
    run.stop().await;
}

/// The inventory's stream is reset mid-run and a device renamed while it
/// is down: the subscription comes back, its new initial sync replaces the
/// store's inventory (tags kept), and the next event has the new name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inventory_stream_reset_mid_run_recovers() {
    let mut run = start(simulator(true).await, enrich(&["site"])).await;
    let tags = json!({"site": ["dc1"]});
    let first = run.event(LEAF1, None).await;
    assert_eq!(
        first["enrichment"]["devices"],
        json!([leaf1("leaf1.dc1", tags.clone())])
    );
    assert_eq!(run.sim.stats().device_subscribes, 1);
    run.sim.reset_inventory_streams();
    run.sim.rename_device(LEAF1, "leaf1-after-reset.dc1");
    let sim_stats = || run.sim.stats().device_subscribes;
    natsredis::eventually("the inventory resubscribes", LIMIT, || sim_stats() >= 2).await;
    run.until("the resync brings the rename", LEAF1, |d| {
        d["hostname"] == "leaf1-after-reset.dc1"
    })
    .await;
    let second = run.event(LEAF1, None).await;
    assert_eq!(
        second["enrichment"]["devices"],
        json!([leaf1("leaf1-after-reset.dc1", tags)])
    );
    // Events flowed on meanwhile on their own stream.
    assert_eq!(run.sim.stats().subscribes, 1);
    run.stop().await;
}

/// A CVP without TagAssignmentService (UNIMPLEMENTED): every event is
/// delivered, with the inventory and without tags.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulator_without_the_tag_service_still_delivers_every_event() {
    let mut run = start(simulator(false).await, enrich(&["site", "role"])).await;
    for _ in 0..10 {
        let v = run.event(LEAF1, None).await;
        assert_eq!(
            v["enrichment"]["devices"],
            json!([leaf1("leaf1.dc1", json!({}))])
        );
    }
    // An event naming a device the inventory does not know goes on
    // without it.
    let v = run.event("UNKNOWN0001", Some("Ethernet7")).await;
    assert_eq!(
        v["enrichment"],
        json!({"devices": [], "interfaces": [{"deviceId": "UNKNOWN0001", "interfaceId": "Ethernet7", "tags": {}}], "link": link(&run, 11)})
    );
    assert_eq!(run.sim.stats().tag_subscribes, 0);
    run.stop().await;
}

/// `validate` checks the enrich block without connecting: a good one
/// passes, a wrong key or value is one line naming it.
#[test]
fn validate_checks_the_enrich_block_offline() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    let config = |enrich: &str| {
        format!(
            "source: {{ cvp: {{ address: \"127.0.0.1:1\", token: x, tls: {{ enabled: false }}, enrich: {enrich} }} }}\nsink: {{ kafka: {{ brokers: \"127.0.0.1:1\", topic: t }} }}\n"
        )
    };
    std::fs::write(&path, config("{ tags: [site, role], max_devices: 100 }")).unwrap();
    let (status, _, err) = support::run_config("validate", &path);
    assert!(status.success(), "{err}");
    for (enrich, says) in [
        ("{ tag: [site] }", "unknown field `tag`"),
        ("{ inventory: false }", "would join nothing"),
        ("{ ui_url: cvp.example.com }", "must start with https://"),
    ] {
        std::fs::write(&path, config(enrich)).unwrap();
        let (status, _, err) = support::run_config("validate", &path);
        assert!(!status.success(), "{enrich}: accepted");
        assert!(err.contains(says), "{enrich}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}

/// The resident set's peak (VmHWM) of a process, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM")
}

/// 10,000 devices and 100,000 interface tags (plus the named devices' own)
/// in the store of `cvp-stream run`, with 2,000 events through it: the peak
/// RSS stays within the host's 100 MiB budget. The same run without
/// enrichment is measured for the comparison in BENCHMARKS.md (printed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_devices_and_100k_interface_tags_fit_the_memory_budget() {
    let mut peaks = Vec::new();
    for enriched in [false, true] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sim = Simulator::start(
            SimOptions {
                token: Some(natsredis::TOKEN.into()),
                initial: 0,
                updates: 2_000,
                rate: 0.0,
                inventory_devices: 10_000,
                inventory_interface_tags: 100_000,
                ..SimOptions::default()
            },
            listener,
        )
        .await
        .unwrap();
        let stream = unique("enrich-mem");
        let enrich = if enriched {
            "\n    enrich: { inventory: true, tags: [\"*\"] }"
        } else {
            ""
        };
        let yaml = format!(
            "source:\n  cvp:\n    address: \"{}\"\n    token: {}\n    tls: {{ enabled: false }}{enrich}\nsink:\n  redis:\n    url: redis://{SERVER}\n    topic: {stream}\n",
            sim.local_addr(),
            natsredis::TOKEN
        );
        let host = support::Host::run(&yaml, &[]);
        if enriched {
            host.wait_for_log("CVP tags synced: 100080 kept");
        }
        let client = redis::Client::open(format!("redis://{SERVER}")).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let start = std::time::Instant::now();
        loop {
            let n: u64 = redis::cmd("XLEN")
                .arg(&stream)
                .query_async(&mut conn)
                .await
                .unwrap();
            // The feed's deletions produce no record with [updated]; the
            // live feed is done when the simulator says so.
            if n > 0 && sim.stats().sent_updated + sim.stats().sent_deleted >= 2_000 {
                let delivered_all = {
                    let m: u64 = redis::cmd("XLEN")
                        .arg(&stream)
                        .query_async(&mut conn)
                        .await
                        .unwrap();
                    m == sim.stats().sent_updated
                };
                if delivered_all {
                    break;
                }
            }
            assert!(
                start.elapsed() < LIMIT,
                "the events did not arrive; log:\n{}",
                host.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let peak = peak_rss_kib(host.pid());
        let _ = host.stop_cleanly();
        let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&stream).query_async(&mut conn).await;
        sim.shutdown().await;
        eprintln!(
            "peak RSS {} enrichment: {:.1} MiB",
            if enriched { "with" } else { "without" },
            peak as f64 / 1024.0
        );
        peaks.push(peak);
    }
    assert!(
        peaks[1] < 100 * 1024,
        "peak RSS with 10,000 devices and 100,000 interface tags: {} KiB, over 100 MiB",
        peaks[1]
    );
}
