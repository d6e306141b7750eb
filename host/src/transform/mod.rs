//! The transform chain: every event passes through the configured transforms
//! in order, a batch at a time. Each transform sees the event and each record
//! the previous one produced for it, so fan-out composes down the chain.

pub mod bindings;
pub mod builtin;
mod convert;
pub mod reload;
pub mod runtime;

use crate::config::{Config, OnError, TransformConfig};
use crate::event::SourceEvent;
use anyhow::Result;
use bindings::{Input, KafkaRecord, Output, WitEvent};
use runtime::{Fault, Instance, LoadedTransform, Runtime};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// What became of one event.
#[derive(Debug)]
pub enum Outcome {
    /// Records to produce, in order. Empty: every transform's choice was to drop it.
    Produce(Vec<KafkaRecord>),
    /// A transform failed on this event; `policy` says what to do about it.
    Failed {
        transform: String,
        error: String,
        policy: OnError,
    },
}

pub struct Chain {
    topic: String,
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
}

impl Stage {
    fn build(runtime: &Runtime, config: &TransformConfig) -> Result<Stage> {
        let modified = modified(&config.path);
        let loaded = runtime.load(config)?;
        let instance = loaded.instantiate()?;
        Ok(Stage {
            config: config.clone(),
            modified,
            loaded,
            instance: Some(instance),
            on_error: config.on_error,
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
        Ok(Chain {
            topic: config.sink.kafka.topic.clone(),
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
    /// merged event as protobuf JSON.
    pub fn default_record(&self, ev: &SourceEvent) -> KafkaRecord {
        KafkaRecord {
            topic: self.topic.clone(),
            key: Some(ev.key().as_bytes().to_vec()),
            value: Some(cvp_proto::json::event_to_json(&ev.event)),
            headers: Vec::new(),
        }
    }

    /// One outcome per event, in order.
    pub fn process(&mut self, batch: &[SourceEvent]) -> Vec<Outcome> {
        let mut failed: Vec<Option<(String, String, OnError)>> = vec![None; batch.len()];
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
                Some((transform, error, policy)) => Outcome::Failed {
                    transform,
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
        failed: &mut [Option<(String, String, OnError)>],
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
        for ((input, i), result) in inputs.into_iter().zip(owners).zip(results) {
            if events[i].is_none() {
                events[i] = Some(input.event);
            }
            if failed[i].is_some() {
                continue;
            }
            match result {
                Ok(records) => next.extend(records.into_iter().map(|r| (i, r))),
                Err(error) => {
                    tracing::error!(
                        event_key = batch[i].key(),
                        transform = &*self.loaded.name,
                        policy = ?self.on_error,
                        "transform failed on event {}: {error}",
                        batch[i].key()
                    );
                    failed[i] = Some((self.loaded.name.to_string(), error, self.on_error));
                }
            }
        }
        // An event that failed loses every record, including ones produced
        // from its other fan-out branches: all or nothing per event.
        next.retain(|(i, _)| failed[*i].is_none());
        next
    }

    /// Calls the transform on a batch; on a fault, rebuilds the instance and
    /// retries the inputs one by one so that only the culprit fails.
    fn call(&mut self, inputs: &[Input]) -> Vec<Result<Vec<KafkaRecord>, String>> {
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
    fn call_one(&mut self, input: &Input) -> Result<Vec<KafkaRecord>, String> {
        let was_used = self.instance.as_ref().is_some_and(|i| i.calls() > 0);
        let mut result = self.call_once(std::slice::from_ref(input));
        if result.is_err() && was_used {
            result = self.call_once(std::slice::from_ref(input));
        }
        match result {
            Ok(mut out) => output_to_result(out.remove(0)),
            Err(fault) => Err(fault.to_string()),
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
        instance.process(inputs).inspect_err(|_| {
            // wasmtime will not re-enter an instance that trapped: start over.
            self.instance = None;
        })
    }
}

fn output_to_result(o: Output) -> Result<Vec<KafkaRecord>, String> {
    match o {
        Output::Records(r) => Ok(r),
        Output::Error(e) => Err(format!("returned an error: {e}")),
    }
}
