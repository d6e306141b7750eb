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
