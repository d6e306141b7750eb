//! The transform chain: every event passes through the configured transforms
//! in order, a batch at a time. Each transform sees the event and each record
//! the previous one produced for it, so fan-out composes down the chain.

pub mod bindings;
pub mod builtin;
mod convert;
pub mod runtime;

use crate::config::{Config, OnError};
use crate::event::SourceEvent;
use anyhow::Result;
use bindings::{Input, KafkaRecord, Output, WitEvent};
use runtime::{Fault, Instance, LoadedTransform, Runtime};

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
}

struct Stage {
    loaded: LoadedTransform,
    instance: Option<Instance>,
    on_error: OnError,
}

impl Chain {
    /// Compiles, checks and instantiates every transform in the config.
    pub fn load(config: &Config) -> Result<Chain> {
        let mut stages = Vec::with_capacity(config.transforms.len());
        if !config.transforms.is_empty() {
            let runtime = Runtime::new()?;
            for t in &config.transforms {
                let loaded = runtime.load(t)?;
                let instance = loaded.instantiate()?;
                stages.push(Stage {
                    loaded,
                    instance: Some(instance),
                    on_error: t.on_error,
                });
            }
        }
        Ok(Chain {
            topic: config.sink.kafka.topic.clone(),
            stages,
        })
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

        let results = self.call(&inputs, batch, &owners);

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
    fn call(
        &mut self,
        inputs: &[Input],
        batch: &[SourceEvent],
        owners: &[usize],
    ) -> Vec<Result<Vec<KafkaRecord>, String>> {
        match self.call_once(inputs) {
            Ok(outputs) => outputs.into_iter().map(output_to_result).collect(),
            Err(fault) if inputs.len() == 1 => vec![Err(fault.to_string())],
            Err(fault) => {
                tracing::warn!(
                    transform = &*self.loaded.name,
                    "transform {fault} on a batch of {}; retrying its events one by one",
                    inputs.len()
                );
                inputs
                    .iter()
                    .zip(owners)
                    .map(
                        |(input, &i)| match self.call_once(std::slice::from_ref(input)) {
                            Ok(mut out) => output_to_result(out.remove(0)),
                            Err(fault) => {
                                tracing::debug!(
                                    event_key = batch[i].key(),
                                    "isolated fault: {fault}"
                                );
                                Err(fault.to_string())
                            }
                        },
                    )
                    .collect()
            }
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
