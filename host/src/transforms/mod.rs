//! The transform stage: the configured chain of WebAssembly components
//! (run by `cvp-transform-engine`), the record each event starts down it
//! with, and each failure marked with its transform's `on_error` policy for
//! the sink.
//!
//! `config.rs` is the `transforms:` and `pipeline:` blocks, `builtin.rs` the
//! transforms compiled into the binary, `convert.rs` how a CVP event reads
//! in WIT terms, `reload.rs` hot reload.

pub mod builtin;
pub mod config;
pub mod convert;
pub mod reload;

pub use config::{DefaultValue, PipelineConfig, TransformConfig};

use crate::delivery::{Delivery, OnError, Outcome, TransformFailure};
use crate::event::{Op, SourceEvent};
use crate::metrics;
use anyhow::Result;
use cvp_transform_engine::{Chain, ChainObserver, First, KafkaRecord};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use reload::ReloadRequest;
use std::path::PathBuf;
use std::time::Duration;

pub struct TransformStage {
    chain: Chain,
    /// The record each event starts with: the sink's default topic, and
    /// the event as JSON unless `pipeline.default_value` says otherwise
    /// (built only when a transform reads it or a record keeps it).
    first: First,
    /// Each transform's `on_error`, by position in the chain.
    policies: Vec<OnError>,
}

impl TransformStage {
    /// Compiles, checks and initialises every transform. Runs wasmtime:
    /// call it off the async runtime (see `main.rs`).
    pub fn load(
        transforms: &[TransformConfig],
        pipeline: &PipelineConfig,
        default_topic: &str,
    ) -> Result<TransformStage> {
        let specs = transforms
            .iter()
            .map(TransformConfig::spec)
            .collect::<Result<Vec<_>>>()?;
        let observer = ChainMetrics::new(transforms);
        let chain = Chain::load(&specs, Box::new(observer))?;
        let json_value = match (pipeline.default_value, transforms.first()) {
            (_, None) | (DefaultValue::Json, _) => true,
            (DefaultValue::None, _) => false,
            (DefaultValue::Auto, Some(first)) => !builtin::sets_own_value(&first.path),
        };
        Ok(TransformStage {
            chain,
            first: First {
                topic: default_topic.to_string(),
                default_value: json_value,
            },
            policies: transforms.iter().map(|t| t.on_error).collect(),
        })
    }

    /// The record produced when no transform says otherwise: key = the CVP
    /// event key (so an event and its updates share a partition), value = the
    /// merged event as protobuf JSON (unless `pipeline.default_value` says
    /// the first transform does not need it).
    pub fn default_record(&self, ev: &SourceEvent) -> KafkaRecord {
        self.first.record(ev)
    }

    /// The engine's outcome per event, in order: for tools that show them.
    pub fn process(&mut self, batch: &[SourceEvent]) -> Vec<cvp_transform_engine::Outcome> {
        self.chain.process(batch, &self.first)
    }

    /// What each transform declared it reads (`transform inspect`).
    pub fn reads(
        &self,
    ) -> Vec<(
        String,
        cvp_transform_engine::Contract,
        cvp_transform_engine::Reads,
    )> {
        self.chain.reads()
    }

    /// What the sink is to deliver for each event of `batch`: its records,
    /// or its failure with the policy that applies.
    pub fn deliveries(&mut self, batch: &[SourceEvent]) -> Vec<Delivery> {
        let mut all: Vec<Option<Delivery>> = (0..batch.len()).map(|_| None).collect();
        self.settle(batch, |done| {
            for (i, d) in done {
                all[i] = Some(d);
            }
        });
        all.into_iter().flatten().collect()
    }

    /// [`TransformStage::deliveries`] handed to `send` as they are settled
    /// (see `Chain::process_each`): a batch whose retries take long sends
    /// its healthy events first.
    pub fn deliveries_each(&mut self, batch: &[SourceEvent], mut send: impl FnMut(Vec<Delivery>)) {
        self.settle(batch, |done| {
            send(done.into_iter().map(|(_, d)| d).collect())
        });
    }

    fn settle(&mut self, batch: &[SourceEvent], mut emit: impl FnMut(Vec<(usize, Delivery)>)) {
        let policies = &self.policies;
        self.chain.process_each(batch, &self.first, |done| {
            emit(
                done.into_iter()
                    .map(|(i, outcome)| (i, delivery(&batch[i], outcome, policies)))
                    .collect(),
            )
        });
    }

    /// Applies a reload request; between batches, so nothing is in flight.
    pub fn reload(&mut self, request: ReloadRequest) {
        match request {
            ReloadRequest::All => self.chain.reload(true),
            ReloadRequest::Changed => self.chain.reload(false),
            ReloadRequest::Nothing => {}
        }
    }

    /// The transform files to watch for changes (built-ins excluded).
    pub fn watched_files(&self) -> Vec<PathBuf> {
        self.chain.watched_files()
    }

    #[cfg(test)]
    fn json_value(&self) -> bool {
        self.first.default_value
    }
}

/// The sink's view of one event's outcome.
fn delivery(
    ev: &SourceEvent,
    outcome: cvp_transform_engine::Outcome,
    policies: &[OnError],
) -> Delivery {
    Delivery {
        seq: ev.seq,
        event_key: ev.key().to_string(),
        changed_at: (ev.op != Op::Deleted).then(|| ev.time()),
        outcome: match outcome {
            cvp_transform_engine::Outcome::Produce(records) => Outcome::Records(records),
            cvp_transform_engine::Outcome::Failed(f) => {
                let policy = policies.get(f.stage).copied().unwrap_or_default();
                Outcome::Failed(TransformFailure {
                    // Only an event bound for the dead-letter topic
                    // pays for this encoding.
                    event_json: (policy == OnError::DeadLetter)
                        .then(|| crate::enrichment::default_value(ev)),
                    transform: f.transform,
                    reason: f.reason,
                    error: f.error,
                    policy,
                })
            }
        },
        held: Default::default(),
    }
}

/// The chain's reports, as this service's metrics; every series a transform
/// can have exists at 0 from its start, so a dashboard shows 0, not "no
/// data", and rate() sees the first one.
struct ChainMetrics {
    names: Vec<String>,
    call_duration: Vec<Histogram>,
    filtered: Vec<Counter>,
    logs_suppressed: Vec<Counter>,
}

const FAILURE_REASONS: [&str; 6] = ["trap", "timeout", "memory", "contract", "output", "error"];

impl ChainMetrics {
    fn new(transforms: &[TransformConfig]) -> ChainMetrics {
        let m = metrics::get();
        for t in transforms {
            for reason in FAILURE_REASONS {
                let _ = m.transform_failures.get_or_create(&metrics::labels([
                    ("transform", &t.name),
                    ("reason", reason),
                ]));
            }
            match t.on_error {
                OnError::Drop => {
                    let _ = m.events_dropped.get_or_create(&metrics::labels([
                        ("transform", &t.name),
                        ("reason", "error"),
                    ]));
                }
                OnError::DeadLetter => {
                    for reason in FAILURE_REASONS {
                        let _ = m.events_dead_lettered.get_or_create(&metrics::labels([
                            ("transform", &t.name),
                            ("reason", reason),
                        ]));
                    }
                }
                OnError::Stop => {}
            }
        }
        ChainMetrics {
            names: transforms.iter().map(|t| t.name.clone()).collect(),
            call_duration: transforms
                .iter()
                .map(|t| {
                    m.transform_call_duration
                        .get_or_create(&metrics::labels([("transform", &t.name)]))
                        .clone()
                })
                .collect(),
            filtered: transforms
                .iter()
                .map(|t| {
                    m.events_dropped
                        .get_or_create(&metrics::labels([
                            ("transform", &t.name),
                            ("reason", "filtered"),
                        ]))
                        .clone()
                })
                .collect(),
            logs_suppressed: transforms
                .iter()
                .map(|t| {
                    m.transform_log_lines_suppressed
                        .get_or_create(&metrics::labels([("transform", &t.name)]))
                        .clone()
                })
                .collect(),
        }
    }
}

impl ChainObserver for ChainMetrics {
    fn called(&self, stage: usize, elapsed: Duration) {
        if let Some(h) = self.call_duration.get(stage) {
            h.observe(elapsed.as_secs_f64());
        }
    }

    fn failed(&self, stage: usize, reason: &'static str) {
        if let Some(name) = self.names.get(stage) {
            metrics::get()
                .transform_failures
                .get_or_create(&metrics::labels([("transform", name), ("reason", reason)]))
                .inc();
        }
    }

    fn dropped(&self, stage: usize, events: u64) {
        if let Some(c) = self.filtered.get(stage) {
            c.inc_by(events);
        }
    }

    fn logs_suppressed(&self, stage: usize, lines: u64) {
        if let Some(c) = self.logs_suppressed.get(stage) {
            c.inc_by(lines);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cvp_proto::event::{Event, EventKey};

    fn stage(default_value: DefaultValue, transforms: &[TransformConfig]) -> TransformStage {
        let pipeline = PipelineConfig {
            default_value,
            ..PipelineConfig::default()
        };
        TransformStage::load(transforms, &pipeline, "t").expect("chain")
    }

    fn value_of(stage: &mut TransformStage) -> Option<Vec<u8>> {
        let ev = sample();
        match stage.process(std::slice::from_ref(&ev)).remove(0) {
            cvp_transform_engine::Outcome::Produce(mut r) if r.len() == 1 => r.remove(0).value,
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    /// severity-filter passes the record through untouched, so what it
    /// returns is the default record's value.
    #[test]
    fn default_value_json_none_and_auto() {
        let mut filter = TransformConfig::new(
            "f",
            format!("{}/severity_filter.wasm", env!("CVP_STREAM_WASM_DIR")),
        );
        filter
            .config
            .insert("min_severity".into(), serde_yaml::Value::from("info"));
        let filter = [filter];
        let json = value_of(&mut stage(DefaultValue::Auto, &filter)).expect("a JSON value");
        assert!(
            json.starts_with(b"{\"key\":{\"key\":\"k1\""),
            "{}",
            String::from_utf8_lossy(&json)
        );
        assert_eq!(
            value_of(&mut stage(DefaultValue::Json, &filter)),
            Some(json)
        );
        assert_eq!(value_of(&mut stage(DefaultValue::None, &filter)), None);
        // Auto skips the encoding for the built-in title-to-key, which sets
        // its own value; the record is what it always was.
        let stock = [TransformConfig::new("t", builtin::TITLE_TO_KEY_PATH)];
        assert!(!stage(DefaultValue::Auto, &stock).json_value());
        assert_eq!(
            value_of(&mut stage(DefaultValue::Auto, &stock)),
            Some(b"D".to_vec())
        );
        // With no transform the default record is the record: always JSON.
        assert!(value_of(&mut stage(DefaultValue::None, &[])).is_some());
    }

    /// An event that counts how often its default value is built.
    struct Counting<'a>(&'a SourceEvent, &'a std::cell::Cell<u32>);

    impl cvp_transform_engine::ChainEvent for Counting<'_> {
        fn to_wit(&self) -> cvp_transform_engine::WitEvent {
            self.0.to_wit()
        }
        fn view(&self, reads: &cvp_transform_engine::Reads) -> cvp_transform_engine::EventView<'_> {
            self.0.view(reads)
        }
        fn key(&self) -> &str {
            self.0.key()
        }
        fn default_value(&self) -> Option<Vec<u8>> {
            self.1.set(self.1.get() + 1);
            self.0.default_value()
        }
    }

    fn sample() -> SourceEvent {
        SourceEvent {
            event: std::sync::Arc::new(Event {
                key: Some(EventKey {
                    key: Some("k1".into()),
                    timestamp: None,
                }),
                title: Some("T".into()),
                description: Some("D".into()),
                severity: 4,
                ..Default::default()
            }),
            op: Op::Updated,
            seq: 0,
            enrichment: None,
        }
    }

    fn wasm(name: &str) -> TransformConfig {
        TransformConfig::new(name, format!("{}/{name}.wasm", env!("CVP_STREAM_WASM_DIR")))
    }

    /// Contract 0.2: the default value (the event as JSON) is built only
    /// when a transform reads it or a record keeps it. Title-to-key replaces
    /// it without reading it: never built. Severity-filter keeps the record:
    /// built once, at the end. The 0.1 title-to-key receives every field:
    /// built for it.
    #[test]
    fn the_default_value_is_built_only_when_read_or_kept() {
        let ev = sample();
        let built = std::cell::Cell::new(0);
        let first = First {
            topic: "t".into(),
            default_value: true,
        };
        let run = |specs: &[TransformConfig]| {
            built.set(0);
            let specs: Vec<_> = specs.iter().map(|t| t.spec().unwrap()).collect();
            let mut chain =
                Chain::load(&specs, Box::new(cvp_transform_engine::NoObserver)).unwrap();
            let out = chain.process(&[Counting(&ev, &built)], &first);
            (built.get(), format!("{out:?}"))
        };
        let (n, out) = run(&[wasm("title_to_key")]);
        assert_eq!(n, 0, "title-to-key 0.2 never needs the JSON value: {out}");
        assert!(out.contains("value: Some([68])"), "{out}");
        let mut filter = wasm("severity_filter");
        filter
            .config
            .insert("min_severity".into(), serde_yaml::Value::from("info"));
        let (n, out) = run(&[filter.clone(), wasm("title_to_key")]);
        assert_eq!(n, 0, "{out}");
        let (n, _) = run(&[filter]);
        assert_eq!(n, 1, "kept to the end: built once");
        let (n, out) = run(&[wasm("title_to_key_01")]);
        assert_eq!(n, 1, "a 0.1 transform receives the value");
        assert!(out.contains("value: Some([68])"), "{out}");
    }

    /// An instance whose linear memory passed `limits.recycle_memory` is
    /// replaced after its call: the leaking 0.1 fixture (1 MiB an event)
    /// never reaches its 48 MiB cap, because it is recycled past 16 MiB.
    #[test]
    fn an_instance_past_its_high_water_mark_is_recycled() {
        struct Recycles(std::sync::Arc<std::sync::atomic::AtomicU32>);
        impl ChainObserver for Recycles {
            fn recycled(&self, _stage: usize) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            fn failed(&self, _stage: usize, reason: &'static str) {
                panic!("an event failed: {reason}");
            }
        }
        let mut leak = wasm("misbehave");
        leak.config.insert("mode".into(), "leak".into());
        leak.limits.memory = 48 << 20;
        leak.limits.recycle_memory = 16 << 20;
        let count = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let mut chain =
            Chain::load(&[leak.spec().unwrap()], Box::new(Recycles(count.clone()))).unwrap();
        let first = First {
            topic: "t".into(),
            default_value: true,
        };
        let ev = sample();
        for _ in 0..100 {
            let out = chain.process(std::slice::from_ref(&ev), &first);
            assert!(matches!(&out[0], cvp_transform_engine::Outcome::Produce(r) if r.len() == 1));
        }
        let n = count.load(std::sync::atomic::Ordering::Relaxed);
        assert!(
            (4..=10).contains(&n),
            "recycled {n} times in 100 MiB of leaks"
        );
    }

    /// The compilation cache serves a second load and replaces a bad entry
    /// (tested here, where a real component is at hand).
    #[test]
    fn second_load_comes_from_the_cache_and_a_bad_entry_is_replaced() {
        use cvp_transform_engine::CompileCache;
        use wasmtime::Engine;
        let engine = Engine::new(wasmtime::Config::new().wasm_component_model(true)).unwrap();
        let bytes = builtin::TITLE_TO_KEY;
        let dir = tempfile::tempdir().unwrap();
        let cache = CompileCache::at(dir.path().to_path_buf(), u64::MAX);
        let entries = || std::fs::read_dir(dir.path()).unwrap().count();
        cache.load(&engine, bytes).unwrap();
        assert_eq!(entries(), 1);
        let path = cache.entry(&engine, bytes);
        let modified = std::fs::metadata(&path).unwrap().modified().unwrap();
        cache.load(&engine, bytes).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            modified,
            "served from the cache, not written again"
        );
        std::fs::write(&path, b"not machine code").unwrap();
        cache.load(&engine, bytes).unwrap();
        assert_ne!(std::fs::read(&path).unwrap(), b"not machine code");
        // Other bytes (an empty component), another entry.
        cache.load(&engine, b"\0asm\x0d\0\x01\0").unwrap();
        assert_eq!(entries(), 2);
    }
}
