//! The transform chain: every event passes through the configured transforms
//! in order, a batch at a time. Each transform sees the event and each record
//! the previous one produced for it, so fan-out composes down the chain.

pub mod bindings;
pub mod builtin;
mod cache;
pub mod convert;
pub mod reload;
pub mod runtime;

use crate::config::{Config, DefaultValue, OnError, TransformConfig};
use crate::event::SourceEvent;
use crate::metrics;
use anyhow::Result;
use bindings::{Input, KafkaRecord, Output, WitEvent};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use runtime::{Fault, Instance, LoadedTransform, Runtime};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

/// Why a transform failed on an event: the metrics' reason label, and the
/// message.
type Failure = (&'static str, String);
/// Which transform failed on an event, why, and its policy.
type StageFailure = (String, Failure, OnError);

/// What became of one event.
#[derive(Debug)]
pub enum Outcome {
    /// Records to produce, in order. Empty: every transform's choice was to drop it.
    Produce(Vec<KafkaRecord>),
    /// A transform failed on this event; `policy` says what to do about it.
    Failed {
        transform: String,
        /// trap, timeout, memory, contract or error (the guest returned one).
        reason: &'static str,
        error: String,
        policy: OnError,
    },
}

pub struct Chain {
    topic: String,
    /// Whether the default record carries the event as JSON
    /// (`pipeline.default_value`).
    json_value: bool,
    stages: Vec<Stage>,
    /// Kept for reloads; `None` when there are no transforms.
    runtime: Option<Runtime>,
}

struct Stage {
    config: TransformConfig,
    /// The file's modification time when it was loaded (None: built in).
    modified: Option<SystemTime>,
    loaded: LoadedTransform,
    instance: Option<Instance>,
    on_error: OnError,
    /// This transform's series, looked up once.
    call_duration: Histogram,
    filtered: Counter,
}

impl Stage {
    fn build(runtime: &Runtime, config: &TransformConfig) -> Result<Stage> {
        let modified = modified(&config.path);
        let loaded = runtime.load(config)?;
        let instance = loaded.instantiate()?;
        let m = metrics::get();
        let name = metrics::labels([("transform", &config.name)]);
        let filtered = metrics::labels([("transform", &config.name), ("reason", "filtered")]);
        // Every series this transform can have, at 0 from the start: a
        // dashboard shows 0, not "no data", and rate() sees the first one.
        for reason in ["trap", "timeout", "memory", "contract", "error"] {
            let _ = m.transform_failures.get_or_create(&metrics::labels([
                ("transform", &config.name),
                ("reason", reason),
            ]));
        }
        match config.on_error {
            OnError::Drop => {
                let _ = m.events_dropped.get_or_create(&metrics::labels([
                    ("transform", &config.name),
                    ("reason", "error"),
                ]));
            }
            OnError::DeadLetter => {
                for reason in ["trap", "timeout", "memory", "contract", "error"] {
                    let _ = m.events_dead_lettered.get_or_create(&metrics::labels([
                        ("transform", &config.name),
                        ("reason", reason),
                    ]));
                }
            }
            OnError::Stop => {}
        }
        Ok(Stage {
            config: config.clone(),
            modified,
            loaded,
            instance: Some(instance),
            on_error: config.on_error,
            call_duration: m.transform_call_duration.get_or_create(&name).clone(),
            filtered: m.events_dropped.get_or_create(&filtered).clone(),
        })
    }
}

/// When a transform's file last changed; `None` for built-ins and files
/// that cannot be read (the load itself reports those).
pub fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Chain {
    /// Compiles, checks and instantiates every transform in the config.
    pub fn load(config: &Config) -> Result<Chain> {
        let mut stages = Vec::with_capacity(config.transforms.len());
        let runtime = if config.transforms.is_empty() {
            None
        } else {
            Some(Runtime::new()?)
        };
        if let Some(runtime) = &runtime {
            for t in &config.transforms {
                stages.push(Stage::build(runtime, t)?);
            }
        }
        let json_value = match (config.pipeline.default_value, config.transforms.first()) {
            (_, None) | (DefaultValue::Json, _) => true,
            (DefaultValue::None, _) => false,
            (DefaultValue::Auto, Some(first)) => !builtin::sets_own_value(&first.path),
        };
        Ok(Chain {
            topic: config.sink.kafka.topic.clone(),
            json_value,
            stages,
            runtime,
        })
    }

    /// Loads transforms again: every one when `all` (SIGHUP), else those
    /// whose file changed since it was loaded. One that fails to load or
    /// initialise keeps its running version, and the log says why. Called
    /// between batches, so no event is in flight in the chain.
    pub fn reload(&mut self, all: bool) {
        let Some(runtime) = &self.runtime else {
            tracing::info!("reload requested, but there are no transforms");
            return;
        };
        for stage in &mut self.stages {
            let now = modified(&stage.config.path);
            if !all && now == stage.modified {
                continue;
            }
            let name = stage.config.name.clone();
            match Stage::build(runtime, &stage.config) {
                Ok(fresh) => {
                    *stage = fresh;
                    tracing::info!(transform = %name, "reloaded transform {name} from {}", stage.config.path.display());
                }
                Err(e) => {
                    // Do not retry the same bytes on every poll.
                    stage.modified = now;
                    tracing::error!(transform = %name, "cannot reload transform {name}, keeping the running version: {e:#}");
                }
            }
        }
    }

    /// The files to watch for changes (built-ins excluded).
    pub fn watched_files(&self) -> Vec<PathBuf> {
        self.stages
            .iter()
            .filter(|s| s.modified.is_some())
            .map(|s| s.config.path.clone())
            .collect()
    }

    /// The record produced when no transform says otherwise: key = the CVP
    /// event key (so an event and its updates share a partition), value = the
    /// merged event as protobuf JSON (unless `pipeline.default_value` says
    /// the first transform does not need it).
    pub fn default_record(&self, ev: &SourceEvent) -> KafkaRecord {
        KafkaRecord {
            topic: self.topic.clone(),
            key: Some(ev.key().as_bytes().to_vec()),
            value: self
                .json_value
                .then(|| cvp_proto::json::event_to_json(&ev.event)),
            headers: Vec::new(),
        }
    }

    /// One outcome per event, in order.
    pub fn process(&mut self, batch: &[SourceEvent]) -> Vec<Outcome> {
        let mut failed: Vec<Option<StageFailure>> = vec![None; batch.len()];
        // (event index, record) pairs still travelling down the chain.
        let mut current: Vec<(usize, KafkaRecord)> = batch
            .iter()
            .enumerate()
            .map(|(i, ev)| (i, self.default_record(ev)))
            .collect();
        if !self.stages.is_empty() {
            let mut events: Vec<Option<WitEvent>> =
                batch.iter().map(|e| Some(convert::to_wit(e))).collect();
            for stage in &mut self.stages {
                if current.is_empty() {
                    break;
                }
                current = stage.run(
                    std::mem::take(&mut current),
                    &mut events,
                    batch,
                    &mut failed,
                );
            }
        }
        let mut outcomes: Vec<Outcome> = failed
            .into_iter()
            .map(|f| match f {
                Some((transform, (reason, error), policy)) => Outcome::Failed {
                    transform,
                    reason,
                    error,
                    policy,
                },
                None => Outcome::Produce(Vec::new()),
            })
            .collect();
        for (i, rec) in current {
            if let Outcome::Produce(records) = &mut outcomes[i] {
                records.push(rec);
            }
        }
        outcomes
    }
}

impl Stage {
    /// Runs one transform over the records in flight and returns the records
    /// it produced. Events it fails on are marked in `failed` and their
    /// records leave the chain.
    fn run(
        &mut self,
        current: Vec<(usize, KafkaRecord)>,
        events: &mut [Option<WitEvent>],
        batch: &[SourceEvent],
        failed: &mut [Option<StageFailure>],
    ) -> Vec<(usize, KafkaRecord)> {
        // Move each event into its first input and clone only for fan-out,
        // so a 1:1 chain copies nothing; the events are moved back after.
        let mut owners = Vec::with_capacity(current.len());
        let mut inputs: Vec<Input> = Vec::with_capacity(current.len());
        for (i, record) in current {
            // Records of one event are contiguous, so a fan-out copy clones
            // the input just before it.
            let event = match events[i].take() {
                Some(e) => e,
                None => match (owners.last(), inputs.last()) {
                    (Some(&o), Some(prev)) if o == i => prev.event.clone(),
                    _ => convert::to_wit(&batch[i]),
                },
            };
            owners.push(i);
            inputs.push(Input { event, record });
        }

        let results = self.call(&inputs);

        let mut next = Vec::with_capacity(inputs.len());
        // Events that came in with records and leave with none were dropped
        // by this transform; `owners` is in event order.
        let mut dropped = 0;
        let mut last_owner = None;
        let mut kept_last = false;
        for ((input, i), result) in inputs.into_iter().zip(owners).zip(results) {
            if last_owner != Some(i) {
                if last_owner.is_some() && !kept_last {
                    dropped += 1;
                }
                last_owner = Some(i);
                kept_last = false;
            }
            if events[i].is_none() {
                events[i] = Some(input.event);
            }
            if failed[i].is_some() {
                kept_last = true; // counted as a failure, not a drop
                continue;
            }
            match result {
                Ok(records) => {
                    kept_last |= !records.is_empty();
                    next.extend(records.into_iter().map(|r| (i, r)));
                }
                Err((reason, error)) => {
                    kept_last = true;
                    metrics::get()
                        .transform_failures
                        .get_or_create(&metrics::labels([
                            ("transform", &*self.loaded.name),
                            ("reason", reason),
                        ]))
                        .inc();
                    tracing::error!(
                        event_key = batch[i].key(),
                        transform = &*self.loaded.name,
                        policy = ?self.on_error,
                        "transform failed on event {}: {error}",
                        batch[i].key()
                    );
                    failed[i] =
                        Some((self.loaded.name.to_string(), (reason, error), self.on_error));
                }
            }
        }
        if last_owner.is_some() && !kept_last {
            dropped += 1;
        }
        if dropped > 0 {
            self.filtered.inc_by(dropped);
        }
        // An event that failed loses every record, including ones produced
        // from its other fan-out branches: all or nothing per event.
        next.retain(|(i, _)| failed[*i].is_none());
        next
    }

    /// Calls the transform on a batch; on a fault, rebuilds the instance and
    /// retries the inputs one by one so that only the culprit fails.
    fn call(&mut self, inputs: &[Input]) -> Vec<Result<Vec<KafkaRecord>, Failure>> {
        if let [input] = inputs {
            return vec![self.call_one(input)];
        }
        match self.call_once(inputs) {
            Ok(outputs) => outputs.into_iter().map(output_to_result).collect(),
            Err(fault) => {
                tracing::warn!(
                    transform = &*self.loaded.name,
                    "transform {fault} on a batch of {}; retrying its events one by one",
                    inputs.len()
                );
                inputs.iter().map(|input| self.call_one(input)).collect()
            }
        }
    }

    /// One input alone. A fault on an instance that earlier calls had used
    /// may be the instance's doing, not this event's (a guest heap that grows
    /// over many events reaches the memory cap on whichever event comes
    /// next), so the event gets a second try on a fresh instance before it
    /// is blamed.
    fn call_one(&mut self, input: &Input) -> Result<Vec<KafkaRecord>, Failure> {
        let was_used = self.instance.as_ref().is_some_and(|i| i.calls() > 0);
        let mut result = self.call_once(std::slice::from_ref(input));
        if result.is_err() && was_used {
            result = self.call_once(std::slice::from_ref(input));
        }
        match result {
            Ok(mut out) => output_to_result(out.remove(0)),
            Err(fault) => Err((fault.reason(), fault.to_string())),
        }
    }

    fn call_once(&mut self, inputs: &[Input]) -> Result<Vec<Output>, Fault> {
        let instance = match self.instance.as_mut() {
            Some(i) => i,
            None => {
                let fresh = self
                    .loaded
                    .instantiate()
                    .map_err(|e| Fault::Trap(format!("{e:#}")))?;
                self.instance.insert(fresh)
            }
        };
        let started = Instant::now();
        let result = instance.process(inputs);
        self.call_duration.observe(started.elapsed().as_secs_f64());
        result.inspect_err(|_| {
            // wasmtime will not re-enter an instance that trapped: start over.
            self.instance = None;
        })
    }
}

fn output_to_result(o: Output) -> Result<Vec<KafkaRecord>, Failure> {
    match o {
        Output::Records(r) => Ok(r),
        Output::Error(e) => Err(("error", format!("returned an error: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Op, SeedArgs};
    use cvp_proto::event::{Event, EventKey};

    fn chain(default_value: &str, transforms: &str) -> Chain {
        let yaml = format!(
            "source: {{ cvp: {{ address: \"127.0.0.1:1\", tls: {{ enabled: false }} }} }}\nsink: {{ kafka: {{ brokers: \"b:9092\", topic: t }} }}\npipeline: {{ default_value: {default_value} }}\ntransforms: {transforms}\n"
        );
        let config = Config::parse(&yaml, &SeedArgs::default()).expect("config");
        Chain::load(&config).expect("chain")
    }

    fn value_of(chain: &mut Chain) -> Option<Vec<u8>> {
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
        };
        match chain.process(std::slice::from_ref(&ev)).remove(0) {
            Outcome::Produce(mut r) if r.len() == 1 => r.remove(0).value,
            other => panic!("unexpected outcome {other:?}"),
        }
    }

    /// severity-filter passes the record through untouched, so what it
    /// returns is the default record's value.
    #[test]
    fn default_value_json_none_and_auto() {
        let filter = format!(
            "[{{ name: f, path: \"{}/severity_filter.wasm\", config: {{ min_severity: info }} }}]",
            env!("CVP_STREAM_WASM_DIR")
        );
        let json = value_of(&mut chain("auto", &filter)).expect("a JSON value");
        assert!(
            json.starts_with(b"{\"key\":{\"key\":\"k1\""),
            "{}",
            String::from_utf8_lossy(&json)
        );
        assert_eq!(value_of(&mut chain("json", &filter)), Some(json));
        assert_eq!(value_of(&mut chain("none", &filter)), None);
        // Auto skips the encoding for the built-in title-to-key, which sets
        // its own value; the record is what it always was.
        let stock = "[{ name: t, path: \"builtin:title-to-key\" }]";
        assert!(!chain("auto", stock).json_value);
        assert_eq!(value_of(&mut chain("auto", stock)), Some(b"D".to_vec()));
        // With no transform the default record is the record: always JSON.
        assert!(value_of(&mut chain("none", "[]")).is_some());
    }
}
