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
use cvp_transform_engine::{Chain, ChainObserver, KafkaRecord};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use reload::ReloadRequest;
use std::path::PathBuf;
use std::time::Duration;

pub struct TransformStage {
    chain: Chain,
    /// Where the first record goes (the sink's default topic).
    default_topic: String,
    /// Whether the first record carries the event as JSON
    /// (`pipeline.default_value`).
    json_value: bool,
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
            default_topic: default_topic.to_string(),
            json_value,
            policies: transforms.iter().map(|t| t.on_error).collect(),
        })
    }

    /// The record produced when no transform says otherwise: key = the CVP
    /// event key (so an event and its updates share a partition), value = the
    /// merged event as protobuf JSON (unless `pipeline.default_value` says
    /// the first transform does not need it).
    pub fn default_record(&self, ev: &SourceEvent) -> KafkaRecord {
        first_record(&self.default_topic, self.json_value, ev)
    }

    /// The engine's outcome per event, in order: for tools that show them.
    pub fn process(&mut self, batch: &[SourceEvent]) -> Vec<cvp_transform_engine::Outcome> {
        let (topic, json) = (&self.default_topic, self.json_value);
        self.chain
            .process(batch, |ev| first_record(topic, json, ev))
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
        let (topic, json) = (&self.default_topic, self.json_value);
        let policies = &self.policies;
        self.chain.process_each(
            batch,
            |ev| first_record(topic, json, ev),
            |done| {
                emit(
                    done.into_iter()
                        .map(|(i, outcome)| (i, delivery(&batch[i], outcome, policies)))
                        .collect(),
                )
            },
        );
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
        self.json_value
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

fn first_record(topic: &str, json: bool, ev: &SourceEvent) -> KafkaRecord {
    KafkaRecord {
        topic: topic.to_string(),
        key: Some(ev.key().as_bytes().to_vec()),
        value: json.then(|| crate::enrichment::default_value(ev)),
        headers: Vec::new(),
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
        let ev = SourceEvent {
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
        };
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
