//! The transform stage alone, on generated events already in memory: what
//! crossing into WebAssembly costs against the same transform compiled
//! into this binary.

use super::end_to_end::Scenario;
use crate::event::{Op, SourceEvent};
use crate::transforms::{PipelineConfig, TransformConfig, TransformStage};
use anyhow::{bail, Result};
use cvp_transform_engine::{KafkaRecord, Outcome, Reads};
use std::hint::black_box;
use std::time::Instant;

/// As `run` hands batches to the chain (pipeline.batch_size).
const BATCH: usize = 256;
const TOPIC: &str = "cvp-events";

/// The same, natively, behind the 0.2 contract as a component: it gets the
/// view the host lowers (the fields title-to-key declares, borrowed; the
/// record without its value) and its patch is applied to the record. What
/// a transform linked into the host would cost.
fn native_behind_contract(reads: &Reads, ev: &SourceEvent) -> KafkaRecord {
    let view = black_box(crate::transforms::convert::view(ev, reads));
    let mut record = KafkaRecord {
        topic: TOPIC.to_string(),
        key: Some(view.key.as_bytes().to_vec()),
        value: None,
        headers: Vec::new(),
    };
    record.key = Some(view.title.unwrap_or_default().as_bytes().to_vec());
    record.value = Some(view.description.unwrap_or_default().as_bytes().to_vec());
    record
}

/// The stock transform's logic (transforms/title-to-key), natively: the
/// floor for any implementation of it.
fn native_title_to_key(ev: &SourceEvent) -> KafkaRecord {
    KafkaRecord {
        topic: TOPIC.to_string(),
        key: Some(ev.event.title.clone().unwrap_or_default().into_bytes()),
        value: Some(
            ev.event
                .description
                .clone()
                .unwrap_or_default()
                .into_bytes(),
        ),
        headers: Vec::new(),
    }
}

fn same(a: &KafkaRecord, b: &KafkaRecord) -> bool {
    a.topic == b.topic && a.key == b.key && a.value == b.value && a.headers.is_empty()
}

fn chain(transforms: &[TransformConfig]) -> Result<TransformStage> {
    TransformStage::load(transforms, &PipelineConfig::default(), TOPIC)
}

/// ns per event of `f` over every batch, best of three passes (the first
/// also warms caches and the guest's heap).
fn per_event(events: &[SourceEvent], mut f: impl FnMut(&[SourceEvent]) -> usize) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let mut records = 0;
        for batch in events.chunks(BATCH) {
            records += f(black_box(batch));
        }
        black_box(records);
        best = best.min(t.elapsed().as_nanos() as f64 / events.len() as f64);
    }
    best
}

fn produced(outcomes: Vec<Outcome>) -> usize {
    outcomes
        .into_iter()
        .map(|o| match o {
            Outcome::Produce(r) => r.len(),
            Outcome::Failed(f) => panic!("bench transform failed: {}", f.error),
        })
        .sum()
}

pub fn report(n: usize) -> Result<()> {
    let events: Vec<SourceEvent> = cvp_simulator::sample_events(n, 7)
        .into_iter()
        .enumerate()
        .map(|(i, event)| SourceEvent {
            event: std::sync::Arc::new(event),
            op: Op::Updated,
            seq: i as u64,
            enrichment: None,
        })
        .collect();
    let mut none = chain(&[])?;
    let mut wasm = chain(&Scenario::stock().transforms)?;
    // The previous release's build of it, from this build's guests.
    let mut wasm01 = chain(&[TransformConfig::new(
        "title-to-key-0.1",
        concat!(env!("CVP_STREAM_WASM_DIR"), "/title_to_key_01.wasm"),
    )])?;
    // Same records every way.
    let check: Vec<_> = events[..BATCH.min(n)].to_vec();
    for stage in [&mut wasm, &mut wasm01] {
        for (o, ev) in stage.process(&check).into_iter().zip(&check) {
            match o {
                Outcome::Produce(r) if r.len() == 1 && same(&r[0], &native_title_to_key(ev)) => {}
                other => bail!("WebAssembly and native title-to-key differ: {other:?}"),
            }
        }
    }
    let reads = Reads::parse(&["title", "description"]).map_err(anyhow::Error::msg)?;

    let native = per_event(&events, |b| {
        b.iter().map(native_title_to_key).map(|_| 1).sum()
    });
    let mut three = chain(&Scenario::three().transforms)?;
    let contract = per_event(&events, |b| {
        b.iter()
            .map(|ev| native_behind_contract(&reads, ev))
            .map(|_| 1)
            .sum()
    });
    let default_record = per_event(&events, |b| produced(none.process(b)));
    let stage = per_event(&events, |b| produced(wasm.process(b)));
    let stage01 = per_event(&events, |b| produced(wasm01.process(b)));
    let stage3 = per_event(&events, |b| produced(three.process(b)));
    println!("{n} generated events, batches of {BATCH}, best of 3 passes.\n");
    println!("| stage | ns per event | vs native | vs native behind the contract |");
    println!("| --- | ---: | ---: | ---: |");
    for (name, ns) in [
        ("native title-to-key, compiled in (the limit)", native),
        (
            "no transform: the default record (event as JSON)",
            default_record,
        ),
        (
            "native title-to-key behind the 0.2 contract (view of the declared fields, patch applied)",
            contract,
        ),
        ("WebAssembly title-to-key, contract 0.2 (the whole stage)", stage),
        (
            "WebAssembly title-to-key, contract 0.1 (the previous release's)",
            stage01,
        ),
        (
            "WebAssembly severity-filter, title-to-key, route-by-type",
            stage3,
        ),
    ] {
        println!(
            "| {name} | {ns:.0} | {:.2}x | {:.2}x |",
            ns / native,
            ns / contract
        );
    }
    Ok(())
}
