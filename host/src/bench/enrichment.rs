//! What enrichment (`source.cvp.enrich`) costs end to end: the same run as
//! `end_to_end`'s throughput (the simulator flat out, the whole pipeline,
//! librdkafka's mock cluster), with and without the inventory and tags
//! joined onto each event, alternated within one bench run so the ratio
//! holds on a noisy machine. The simulator's inventory has the ten devices
//! its events name plus 1,000 more with 10,000 interface tags, and changes
//! every 1,000 events (a rename, a tag assigned, removed), so the store is
//! written while it is read.

use crate::config::{units::ScalarText, ConfigBuilder};
use crate::delivery::DeliveryObserver;
use crate::event::Op;
use crate::pipeline::Pipeline;
use crate::sinks::{KafkaConfig, KafkaSink, Sink, SinkConfig};
use crate::sources::cvp::EnrichConfig;
use crate::transforms::{builtin, TransformConfig};
use anyhow::{anyhow, bail, Context, Result};
use cvp_simulator::{SimOptions, Simulator};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// The last acknowledgement's time.
#[derive(Default)]
struct LastAck(Mutex<Option<Instant>>);

impl DeliveryObserver for LastAck {
    fn acknowledged(&self, _changed_at: Option<i64>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
    }
}

/// The per-event CPU cost, on one thread, without the pipeline around it
/// (so other load on the machine does not blur it): the JSON value
/// without and with the `enrichment` object, and the source's join.
/// `n` generated events, the store holding their ten devices with tags.
pub fn per_event(n: usize) -> Result<()> {
    use crate::enrichment::{default_value, Creator, Device, Streaming, Tag};
    use crate::event::SourceEvent;
    use crate::sources::cvp::directory::{Assignment, Directory};
    let events: Vec<SourceEvent> = cvp_simulator::sample_events(n, 7)
        .into_iter()
        .map(|e| SourceEvent {
            event: Arc::new(e),
            op: Op::Updated,
            seq: 0,
            enrichment: None,
        })
        .collect();
    let mut ids: Vec<String> = events
        .iter()
        .filter_map(|e| e.event.data.as_ref()?.data.get("deviceId").cloned())
        .collect();
    ids.sort();
    ids.dedup();
    let dir = Directory::new(
        &EnrichConfig {
            tags: vec!["*".into()],
            ..EnrichConfig::default()
        },
        "cvp.example.com:443",
    );
    let devices = ids
        .iter()
        .map(|id| Device {
            id: id.clone(),
            hostname: Some(format!("host-{id}.dc1")),
            fqdn: Some(format!("host-{id}.dc1.example.net")),
            model: Some("DCS-7050SX3-48YC8".into()),
            software_version: Some("4.30.2F".into()),
            hardware_revision: Some("11.01".into()),
            system_mac_address: Some("00:1c:73:00:00:01".into()),
            streaming: Streaming::Active,
            tags: Vec::new(),
        })
        .collect();
    dir.replace_inventory(devices, 0);
    let tag = |id: &String, intf: Option<String>, label: &str, value: String| Assignment {
        device_id: id.clone(),
        interface_id: intf,
        tag: Tag {
            label: label.into(),
            value,
            creator: Creator::User,
        },
    };
    let mut tags = Vec::new();
    for id in &ids {
        tags.push(tag(id, None, "site", "dc1".into()));
        tags.push(tag(id, None, "role", "leaf".into()));
        for port in 49..=52 {
            tags.push(tag(
                id,
                Some(format!("Ethernet{port}/1")),
                "circuit-id",
                format!("C-{id}-{port}"),
            ));
        }
    }
    dir.replace_tags(tags, 0);
    // Batch by batch, as the pipeline goes: memory is reused, as there
    // (holding every enriched event at once measured page faults).
    let (mut json, mut join, mut enriched_json, mut drop_cost) = (0.0, 0.0, 0.0, 0.0);
    let mut bytes = (0usize, 0usize);
    for chunk in events.chunks(256) {
        let mut batch = chunk.to_vec();
        // Once untimed, so both timed passes find the events in cache.
        for e in &batch {
            std::hint::black_box(default_value(e));
        }
        let t0 = Instant::now();
        for e in &batch {
            bytes.0 += default_value(e).len();
        }
        let t1 = Instant::now();
        dir.enrich(&mut batch);
        let t2 = Instant::now();
        for e in &batch {
            bytes.1 += default_value(e).len();
        }
        let t3 = Instant::now();
        drop(batch);
        let t4 = Instant::now();
        json += (t1 - t0).as_secs_f64();
        join += (t2 - t1).as_secs_f64();
        enriched_json += (t3 - t2).as_secs_f64();
        drop_cost += (t4 - t3).as_secs_f64();
    }
    let per = |s: f64| s * 1e6 / n as f64;
    let (json, join, enriched_json, drop_cost) =
        (per(json), per(join), per(enriched_json), per(drop_cost));
    println!("| step | µs per event |");
    println!("| --- | ---: |");
    println!(
        "| JSON value, as before (average {} bytes) | {json:.3} |",
        bytes.0 / n
    );
    println!("| the source's join (`Directory::enrich`, batches of 256) | {join:.3} |");
    println!(
        "| JSON value with the `enrichment` object (average {} bytes) | {enriched_json:.3} |",
        bytes.1 / n
    );
    println!("| dropping the enriched events | {drop_cost:.3} |");
    println!(
        "| **enrichment's own cost** (join + the larger JSON + drop, less the plain JSON) | **{:.3}** ({:.0}% of the plain JSON value) |",
        join + enriched_json + drop_cost - json,
        (join + enriched_json + drop_cost - json) / json * 100.0
    );
    Ok(())
}

/// Prints the table: for no transform (the JSON value, which then carries
/// the `enrichment` object) and the stock transform, the median events/s
/// of `runs` runs without and with enrichment, and their ratio.
pub async fn report(events: u64, runs: usize) -> Result<()> {
    println!("| transforms | events | without (events/s) | with (events/s) | with / without |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for stock in [false, true] {
        let (mut without, mut with) = (Vec::new(), Vec::new());
        for _ in 0..runs.max(1) {
            without.push(throughput(events, stock, false).await?);
            with.push(throughput(events, stock, true).await?);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (a, b) = (median(&mut without), median(&mut with));
        println!(
            "| {} | {events} | {a:.0} | {b:.0} | {:.3} |",
            if stock {
                "title-to-key"
            } else {
                "none (JSON value)"
            },
            b / a
        );
    }
    Ok(())
}

/// Events per second from the live feed's start to the last record
/// acknowledged.
async fn throughput(events: u64, stock: bool, enrich: bool) -> Result<f64> {
    let token = format!("bench-{:016x}", rand::random::<u64>());
    let opts = SimOptions {
        token: Some(token.clone()),
        initial: 0,
        updates: events,
        rate: 0.0,
        prepare: true,
        inventory_devices: 1_000,
        inventory_interface_tags: 10_000,
        inventory_churn: 1_000,
        ..SimOptions::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("cannot open a loopback port")?;
    let sim = Simulator::start(opts, listener).await?;
    let mut kafka = KafkaConfig::new("mock:9092", "cvp-bench-enrichment");
    kafka
        .properties
        .insert("test.mock.num.brokers".into(), ScalarText("1".into()));
    let mut builder = ConfigBuilder::new(sim.local_addr().to_string())
        .token(&token)
        .plaintext()
        .operations([Op::Updated, Op::Deleted]);
    if stock {
        builder = builder.transform(TransformConfig::new(
            "title-to-key",
            builtin::TITLE_TO_KEY_PATH,
        ));
    }
    let mut config = builder.sink(SinkConfig::Kafka(kafka.clone())).build()?;
    if enrich {
        config.source.cvp.enrich = Some(EnrichConfig {
            tags: vec!["*".into()],
            ..EnrichConfig::default()
        });
    }
    let sink = KafkaSink::new(&kafka)?;
    sink.probe().await;
    sink.begin(&kafka).await?;
    let mut pipeline = Pipeline::build_off_runtime(Arc::new(config), Sink::Kafka(sink)).await?;
    let last = Arc::new(LastAck::default());
    pipeline.observe_deliveries(last.clone());
    let sim_task = tokio::spawn(async move {
        sim.wait_live_done().await;
        let started = sim.live_started();
        sim.shutdown().await;
        started
    });
    let stats = pipeline.run(CancellationToken::new(), true).await?;
    let started = sim_task
        .await
        .map_err(|e| anyhow!("simulator task: {e}"))?
        .ok_or_else(|| anyhow!("the simulator's live feed never started"))?;
    if stats.events != events || stats.failed_delivery > 0 {
        bail!(
            "the run lost events: {events} sent, {} received, {} failed",
            stats.events,
            stats.failed_delivery
        );
    }
    let last = last
        .0
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .ok_or_else(|| anyhow!("no record was acknowledged"))?;
    Ok(events as f64 / last.duration_since(started).as_secs_f64().max(1e-9))
}
