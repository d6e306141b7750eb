//! The transform chain: every event passes through the loaded transforms in
//! order, a batch at a time. Each transform sees the event and each record
//! the previous one produced for it, so fan-out composes down the chain.
//!
//! A fault (trap, timeout, memory) costs the event it happened on, never the
//! chain: the instance is rebuilt and the batch retried one event at a time,
//! each tried once, so only the culprit fails. Those retries have a budget
//! (`limits.retry_budget`): the events not reached when it is spent wait
//! for the next round, a fresh call with the events after them, so a batch
//! full of looping events delivers its healthy ones as it goes instead of
//! holding them all.

use crate::bindings::{Contract, Input, KafkaRecord, Output, WitEvent};
use crate::contract::{Draft, EventView, InputView, Output02, Reads};
use crate::error::LoadError;
use crate::runtime::{Fault, Instance, LoadedTransform, Runtime};
use crate::spec::TransformSpec;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// An event the chain can hand to transforms.
pub trait ChainEvent {
    /// The event as contract 0.1 describes it: every field, owned.
    fn to_wit(&self) -> WitEvent;
    /// The event as contract 0.2 describes it: the optional fields that
    /// `reads` names, the others `None`, borrowed from the event.
    fn view(&self, reads: &Reads) -> EventView<'_>;
    /// Names the event in log lines about it.
    fn key(&self) -> &str;
    /// Its default record value (the event as JSON), built only when a
    /// transform reads it or a record keeps it to the end of the chain.
    fn default_value(&self) -> Option<Vec<u8>>;
}

/// The record every event starts down the chain with: `topic`, key = the
/// event's key, no headers, and value = [`ChainEvent::default_value`] when
/// `default_value` is set (else a null value).
#[derive(Debug, Clone)]
pub struct First {
    pub topic: String,
    pub default_value: bool,
}

impl First {
    fn draft<E: ChainEvent>(&self, ev: &E) -> Draft {
        Draft {
            record: KafkaRecord {
                topic: self.topic.clone(),
                key: Some(ev.key().as_bytes().to_vec()),
                value: None,
                headers: Vec::new(),
            },
            lazy: self.default_value,
        }
    }

    /// The record an event becomes when no transform changes it.
    pub fn record<E: ChainEvent>(&self, ev: &E) -> KafkaRecord {
        let mut d = self.draft(ev);
        d.materialise(|| ev.default_value());
        d.record
    }
}

/// What the chain reports as it works: the caller's metrics. Transforms
/// are named by their position in the chain.
pub trait ChainObserver: Send {
    /// A call into transform `stage` (a whole batch, or one retried event)
    /// returned after `elapsed`.
    fn called(&self, _stage: usize, _elapsed: Duration) {}
    /// Transform `stage` failed on an event; `reason` is [`Fault::reason`]
    /// or `error` (the guest returned one).
    fn failed(&self, _stage: usize, _reason: &'static str) {}
    /// Transform `stage` dropped `events` events (returned no records).
    fn dropped(&self, _stage: usize, _events: u64) {}
    /// Transform `stage` logged `lines` lines beyond its allowance, which
    /// were not written.
    fn logs_suppressed(&self, _stage: usize, _lines: u64) {}
    /// Transform `stage`'s instance was replaced by a fresh one because
    /// its linear memory (which never shrinks) passed the high-water mark.
    fn recycled(&self, _stage: usize) {}
}

/// Reports nothing: for tools that only look at the outcomes.
pub struct NoObserver;
impl ChainObserver for NoObserver {}

/// What became of one event.
#[derive(Debug)]
pub enum Outcome {
    /// Records to produce, in order. Empty: a transform dropped it.
    Produce(Vec<KafkaRecord>),
    /// A transform failed on this event.
    Failed(Failure),
}

/// A transform that failed on an event, and why.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Its position in the chain.
    pub stage: usize,
    pub transform: String,
    /// trap, timeout, memory, contract, output (too much of it) or error
    /// (the guest returned one).
    pub reason: &'static str,
    pub error: String,
}

pub struct Chain {
    stages: Vec<Stage>,
    /// Kept for reloads; `None` when there are no transforms.
    runtime: Option<Runtime>,
    observer: Box<dyn ChainObserver>,
}

struct Stage {
    index: usize,
    spec: TransformSpec,
    /// The file's modification time when it was loaded (None: embedded).
    modified: Option<SystemTime>,
    loaded: LoadedTransform,
    instance: Option<Instance>,
    /// What the transform declared it reads (its first instance's answer).
    reads: Arc<Reads>,
    /// Past this many bytes of linear memory an instance is replaced after
    /// its call: `limits.recycle_memory`, but never less than twice what a
    /// fresh instance holds (or a large interpreter would be rebuilt on
    /// every call).
    recycle_at: u64,
    /// Log lines suppressed since the last warning about them, and when
    /// that was: the warning itself must not flood.
    suppressed: u64,
    suppressed_since: Instant,
}

/// How often at most the log says a transform's lines were suppressed.
const SUPPRESSED_REPORT: Duration = Duration::from_secs(10);

impl Stage {
    fn build(runtime: &Runtime, index: usize, spec: &TransformSpec) -> Result<Stage, LoadError> {
        let modified = spec.code.modified();
        let loaded = runtime.load(spec)?;
        let instance = loaded.instantiate()?;
        Ok(Stage {
            index,
            spec: spec.clone(),
            modified,
            reads: instance.reads().clone(),
            recycle_at: spec
                .limits
                .recycle_memory
                .max(instance.memory_in_use().saturating_mul(2)),
            loaded,
            instance: Some(instance),
            suppressed: 0,
            // The first suppression is reported at once.
            suppressed_since: Instant::now()
                .checked_sub(SUPPRESSED_REPORT)
                .unwrap_or_else(Instant::now),
        })
    }
}

impl Chain {
    /// Compiles, checks, instantiates and initialises every transform.
    pub fn load(
        specs: &[TransformSpec],
        observer: Box<dyn ChainObserver>,
    ) -> anyhow::Result<Chain> {
        let runtime = if specs.is_empty() {
            None
        } else {
            Some(Runtime::new()?)
        };
        let mut stages = Vec::with_capacity(specs.len());
        if let Some(runtime) = &runtime {
            for (i, spec) in specs.iter().enumerate() {
                stages.push(Stage::build(runtime, i, spec)?);
            }
        }
        Ok(Chain {
            stages,
            runtime,
            observer,
        })
    }

    /// How many transforms it has.
    pub fn len(&self) -> usize {
        self.stages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stages.is_empty()
    }

    /// Loads transforms again: every one when `all` (SIGHUP), else those
    /// whose file changed since it was loaded. One that fails to load or
    /// initialise keeps its running version, and the log says why. Call it
    /// between batches, when no event is in flight in the chain.
    pub fn reload(&mut self, all: bool) {
        let Some(runtime) = &self.runtime else {
            tracing::info!("reload requested, but there are no transforms");
            return;
        };
        for stage in &mut self.stages {
            let now = stage.spec.code.modified();
            if !all && now == stage.modified {
                continue;
            }
            let name = stage.spec.name.clone();
            match Stage::build(runtime, stage.index, &stage.spec) {
                Ok(fresh) => {
                    *stage = fresh;
                    tracing::info!(transform = %name, "reloaded transform {name} from {}", stage.spec.code.describe());
                }
                Err(e) => {
                    // Do not retry the same bytes on every poll.
                    stage.modified = now;
                    tracing::error!(transform = %name, "cannot reload transform {name}, keeping the running version: {e}");
                }
            }
        }
    }

    /// The files to watch for changes (embedded code excluded).
    pub fn watched_files(&self) -> Vec<PathBuf> {
        self.stages
            .iter()
            .filter_map(|s| s.spec.code.file().map(PathBuf::from))
            .collect()
    }

    /// What each transform declared it reads, in chain order.
    pub fn reads(&self) -> Vec<(String, Contract, Reads)> {
        self.stages
            .iter()
            .map(|s| {
                (
                    s.spec.name.clone(),
                    s.loaded.contract(),
                    s.reads.as_ref().clone(),
                )
            })
            .collect()
    }

    /// One outcome per event, in order. `first` is the record an event
    /// starts down the chain with (what is produced when the chain is
    /// empty).
    pub fn process<E: ChainEvent>(&mut self, batch: &[E], first: &First) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = (0..batch.len()).map(|_| None).collect();
        self.process_each(batch, first, |done| {
            for (i, o) in done {
                outcomes[i] = Some(o);
            }
        });
        outcomes.into_iter().flatten().collect()
    }

    /// Like [`Chain::process`], but hands over the outcomes as they are
    /// settled, `(index in batch, outcome)`, a round at a time: when faults
    /// spend a transform's retry budget, the events settled so far are
    /// handed over before the others are tried again. An event's records
    /// come in one round; the events of a key keep their order. An event
    /// that waits goes down the whole chain again in the next round, so the
    /// transforms before the one that held it back see it twice (as after
    /// a restart: delivery is at least once).
    pub fn process_each<E: ChainEvent>(
        &mut self,
        batch: &[E],
        first: &First,
        mut emit: impl FnMut(Vec<(usize, Outcome)>),
    ) {
        let mut pending: Vec<usize> = (0..batch.len()).collect();
        while !pending.is_empty() {
            let events: Vec<&E> = pending.iter().map(|&i| &batch[i]).collect();
            let outcomes = self.round(&events, first);
            let mut done = Vec::with_capacity(outcomes.len());
            let mut rest = Vec::new();
            for (i, o) in pending.into_iter().zip(outcomes) {
                match o {
                    Some(o) => done.push((i, o)),
                    None => rest.push(i),
                }
            }
            emit(done);
            pending = rest;
        }
    }

    /// One pass down the chain; `None` for the events a transform's retry
    /// budget left for the next round. At least one event is settled.
    fn round<E: ChainEvent>(&mut self, batch: &[&E], first: &First) -> Vec<Option<Outcome>> {
        let mut failed: Vec<Option<Failure>> = vec![None; batch.len()];
        let mut deferred = vec![false; batch.len()];
        // (event index, record) pairs still travelling down the chain.
        let mut current: Vec<(usize, Draft)> = batch
            .iter()
            .enumerate()
            .map(|(i, ev)| (i, first.draft(*ev)))
            .collect();
        if !self.stages.is_empty() {
            // 0.1's owned events, made the first time a 0.1 transform
            // needs them.
            let mut events: Vec<Option<WitEvent>> = batch.iter().map(|_| None).collect();
            for stage in &mut self.stages {
                if current.is_empty() {
                    break;
                }
                current = stage.run(
                    std::mem::take(&mut current),
                    &mut events,
                    batch,
                    &mut failed,
                    &mut deferred,
                    self.observer.as_ref(),
                );
            }
        }
        let mut outcomes: Vec<Option<Outcome>> = failed
            .into_iter()
            .zip(&deferred)
            .map(|(f, &later)| match f {
                Some(failure) => Some(Outcome::Failed(failure)),
                None if later => None,
                None => Some(Outcome::Produce(Vec::new())),
            })
            .collect();
        for (i, mut draft) in current {
            if let Some(Outcome::Produce(records)) = &mut outcomes[i] {
                draft.materialise(|| batch[i].default_value());
                records.push(draft.record);
            }
        }
        outcomes
    }
}

impl Stage {
    /// Runs one transform over the records in flight and returns the records
    /// it produced. Events it fails on are marked in `failed` and their
    /// records leave the chain.
    fn run<E: ChainEvent>(
        &mut self,
        current: Vec<(usize, Draft)>,
        events: &mut [Option<WitEvent>],
        batch: &[&E],
        failed: &mut [Option<Failure>],
        deferred: &mut [bool],
        observer: &dyn ChainObserver,
    ) -> Vec<(usize, Draft)> {
        let owners: Vec<usize> = current.iter().map(|(i, _)| *i).collect();
        let (results, why) = match self.loaded.contract() {
            Contract::V01 => self.run_v01(current, events, batch, &owners, observer),
            Contract::V02 => self.run_v02(current, batch, &owners, observer),
        };
        self.report_suppressed_logs(observer);
        // This event and every later one wait for the next round, whole
        // (their records here are dropped).
        let cut = results.iter().position(Option::is_none).map(|k| owners[k]);
        if let Some(cut) = cut {
            tracing::debug!(
                transform = &*self.loaded.name,
                "transform {}: {}; {} events wait for the next call",
                self.loaded.name,
                why.unwrap_or_default(),
                owners
                    .iter()
                    .filter(|&&o| o >= cut)
                    .collect::<std::collections::BTreeSet<_>>()
                    .len()
            );
            for &o in owners.iter().filter(|&&o| o >= cut) {
                deferred[o] = true;
            }
        }

        let mut next = Vec::with_capacity(owners.len());
        // Events that came in with records and leave with none were dropped
        // by this transform; `owners` is in event order.
        let mut dropped = 0;
        let mut last_owner = None;
        let mut kept_last = false;
        for (i, result) in owners.into_iter().zip(results) {
            if deferred[i] {
                continue;
            }
            let Some(result) = result else {
                continue;
            };
            if last_owner != Some(i) {
                if last_owner.is_some() && !kept_last {
                    dropped += 1;
                }
                last_owner = Some(i);
                kept_last = false;
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
                Err(CallError { reason, error }) => {
                    kept_last = true;
                    observer.failed(self.index, reason);
                    tracing::error!(
                        event_key = batch[i].key(),
                        transform = &*self.loaded.name,
                        "transform failed on event {}: {error}",
                        batch[i].key()
                    );
                    failed[i] = Some(Failure {
                        stage: self.index,
                        transform: self.loaded.name.to_string(),
                        reason,
                        error,
                    });
                }
            }
        }
        if last_owner.is_some() && !kept_last {
            dropped += 1;
        }
        if dropped > 0 {
            observer.dropped(self.index, dropped);
        }
        // An event that failed loses every record, including ones produced
        // from its other fan-out branches: all or nothing per event.
        next.retain(|(i, _)| failed[*i].is_none() && !deferred[*i]);
        next
    }

    /// A 0.1 transform gets every field, owned, and the value built. Each
    /// event is moved into its first input and cloned only for fan-out, so
    /// a 1:1 chain of 0.1 transforms copies nothing; the events are moved
    /// back after.
    fn run_v01<E: ChainEvent>(
        &mut self,
        current: Vec<(usize, Draft)>,
        events: &mut [Option<WitEvent>],
        batch: &[&E],
        owners: &[usize],
        observer: &dyn ChainObserver,
    ) -> (Vec<Option<Answer>>, Option<String>) {
        let mut inputs: Vec<Input> = Vec::with_capacity(current.len());
        for (k, (i, mut draft)) in current.into_iter().enumerate() {
            draft.materialise(|| batch[i].default_value());
            // Records of one event are contiguous, so a fan-out copy clones
            // the input just before it.
            let event = match events[i].take() {
                Some(e) => e,
                None => match inputs.last() {
                    Some(prev) if k > 0 && owners[k - 1] == i => prev.event.clone(),
                    _ => batch[i].to_wit(),
                },
            };
            inputs.push(Input {
                event,
                record: draft.record,
            });
        }
        let r = self.call(&Batch::V01(&inputs), owners, observer);
        for (input, &i) in inputs.into_iter().zip(owners) {
            if events[i].is_none() {
                events[i] = Some(input.event);
            }
        }
        r
    }

    /// A 0.2 transform gets what it declared, borrowed from the event and
    /// the record; the default value is built only when it reads it.
    fn run_v02<E: ChainEvent>(
        &mut self,
        current: Vec<(usize, Draft)>,
        batch: &[&E],
        owners: &[usize],
        observer: &dyn ChainObserver,
    ) -> (Vec<Option<Answer>>, Option<String>) {
        let reads = self.reads.clone();
        let mut drafts: Vec<Draft> = current.into_iter().map(|(_, d)| d).collect();
        if reads.value {
            for (d, &i) in drafts.iter_mut().zip(owners) {
                d.materialise(|| batch[i].default_value());
            }
        }
        let mut inputs: Vec<InputView<'_>> = Vec::with_capacity(drafts.len());
        for (k, (d, &i)) in drafts.iter().zip(owners).enumerate() {
            let event = match inputs.last() {
                Some(prev) if k > 0 && owners[k - 1] == i => prev.event.clone(),
                _ => batch[i].view(&reads),
            };
            inputs.push(InputView {
                event,
                record: d.view(&reads),
            });
        }
        let default_value = |k: usize| batch[owners[k]].default_value();
        self.call(
            &Batch::V02 {
                inputs: &inputs,
                bases: &drafts,
                default_value: &default_value,
            },
            owners,
            observer,
        )
    }

    /// Counts the log lines the guest was refused, and says so in the log
    /// at most every [`SUPPRESSED_REPORT`].
    fn report_suppressed_logs(&mut self, observer: &dyn ChainObserver) {
        let n = self.loaded.take_suppressed_logs();
        if n > 0 {
            observer.logs_suppressed(self.index, n);
            self.suppressed += n;
        }
        if self.suppressed > 0 && self.suppressed_since.elapsed() >= SUPPRESSED_REPORT {
            let limits = self.loaded.limits();
            tracing::warn!(
                transform = &*self.loaded.name,
                "transform {} logged too much: {} lines suppressed in the last {}s (limits.log_lines_per_second is {})",
                self.loaded.name,
                self.suppressed,
                self.suppressed_since.elapsed().as_secs(),
                limits.log_lines_per_second
            );
            self.suppressed = 0;
            self.suppressed_since = Instant::now();
        }
    }

    /// Calls the transform on a batch; on a fault, rebuilds the instance and
    /// retries the inputs one by one so that only the culprit fails. The
    /// inputs from the event at which the call's output reached the batch
    /// limits, or the retries their budget, are `None`: they wait for the
    /// next round (`owners` says whose each input is, and whole events
    /// wait). Also says why some wait.
    fn call(
        &mut self,
        inputs: &Batch<'_, '_>,
        owners: &[usize],
        observer: &dyn ChainObserver,
    ) -> (Vec<Option<Answer>>, Option<String>) {
        let limits = self.loaded.limits().clone();
        let mut spent = Spent::default();
        let len = inputs.len();
        if len == 1 {
            return (vec![Some(self.call_one(inputs, observer))], None);
        }
        let fault = match self.call_once(inputs, observer) {
            Ok(answers) => {
                let mut results = Vec::with_capacity(len);
                for (k, answer) in answers.into_iter().enumerate() {
                    if !spent.add(&answer, &limits) && owners[k] != owners[0] {
                        return (cut(results, len, owners), Some(spent.why(&limits)));
                    }
                    results.push(Some(answer));
                }
                return (results, None);
            }
            Err(fault) => fault,
        };
        tracing::warn!(
            transform = &*self.loaded.name,
            "transform {fault} on a batch of {len}; retrying its events one by one",
        );
        let until = Instant::now() + limits.retry_budget;
        let mut results = Vec::with_capacity(len);
        for k in 0..len {
            // Stop only between events, and after one: every round settles
            // something.
            let new_event = k > 0 && owners[k] != owners[k - 1];
            if new_event && Instant::now() >= until {
                let why = format!(
                    "retrying a faulted batch took its whole limits.retry_budget ({})",
                    humantime::format_duration(limits.retry_budget)
                );
                return (cut(results, len, owners), Some(why));
            }
            let answer = self.call_one(&inputs.one(k), observer);
            if !spent.add(&answer, &limits) && owners[k] != owners[0] {
                return (cut(results, len, owners), Some(spent.why(&limits)));
            }
            results.push(Some(answer));
        }
        (results, None)
    }

    /// One input alone, tried once. The exception is running out of memory
    /// on an instance that earlier calls had used: a guest heap that grows
    /// over many events reaches the cap on whichever event comes next, so
    /// that event gets a fresh instance before it is blamed. (A trap or a
    /// timeout is the event's own doing; trying it again only doubles what
    /// a looping event costs every other one.)
    fn call_one(&mut self, input: &Batch<'_, '_>, observer: &dyn ChainObserver) -> Answer {
        let was_used = self.instance.as_ref().is_some_and(|i| i.calls() > 0);
        let mut result = self.call_once(input, observer);
        if was_used && matches!(result, Err(Fault::Memory(_))) {
            result = self.call_once(input, observer);
        }
        match result {
            Ok(mut out) => out.remove(0),
            Err(fault) => Err(CallError {
                reason: fault.reason(),
                error: fault.to_string(),
            }),
        }
    }

    fn call_once(
        &mut self,
        inputs: &Batch<'_, '_>,
        observer: &dyn ChainObserver,
    ) -> Result<Vec<Answer>, Fault> {
        let instance = match self.instance.as_mut() {
            Some(i) => i,
            None => {
                let fresh = self
                    .loaded
                    .instantiate()
                    .map_err(|e| Fault::Trap(e.to_string()))?;
                self.instance.insert(fresh)
            }
        };
        let started = Instant::now();
        let result = match inputs {
            Batch::V01(inputs) => instance
                .process(inputs)
                .map(|outputs| outputs.into_iter().map(answer).collect()),
            Batch::V02 {
                inputs: views,
                bases,
                default_value,
            } => instance.process_v02(views).map(|outputs| {
                outputs
                    .into_iter()
                    .enumerate()
                    .map(|(k, o)| {
                        answer_v02(
                            o,
                            &bases[k],
                            &|| default_value(k),
                            &self.loaded.limits().output,
                        )
                    })
                    .collect()
            }),
        };
        observer.called(self.index, started.elapsed());
        if result.is_err() {
            // wasmtime will not re-enter an instance that trapped: start over.
            self.instance = None;
        } else if instance.memory_in_use() > self.recycle_at {
            tracing::debug!(
                transform = &*self.loaded.name,
                "transform {}: its instance holds {} MiB of linear memory (recycled above {} MiB); starting a fresh one",
                self.loaded.name,
                instance.memory_in_use() >> 20,
                self.recycle_at >> 20
            );
            self.instance = None;
            observer.recycled(self.index);
        }
        result
    }
}

/// What one call is given: 0.1's owned inputs, or 0.2's borrowed views with
/// the records they describe (the patches apply to those).
enum Batch<'b, 'a> {
    V01(&'b [Input]),
    V02 {
        inputs: &'b [InputView<'a>],
        bases: &'b [Draft],
        /// The default value of input `k`'s event.
        default_value: &'b dyn Fn(usize) -> Option<Vec<u8>>,
    },
}

impl Batch<'_, '_> {
    fn len(&self) -> usize {
        match self {
            Batch::V01(i) => i.len(),
            Batch::V02 { inputs, .. } => inputs.len(),
        }
    }

    /// Input `k` alone.
    fn one(&self, k: usize) -> Batch<'_, '_> {
        match self {
            Batch::V01(i) => Batch::V01(std::slice::from_ref(&i[k])),
            Batch::V02 {
                inputs,
                bases,
                default_value,
            } => Batch::V02 {
                inputs: std::slice::from_ref(&inputs[k]),
                bases: std::slice::from_ref(&bases[k]),
                default_value: *default_value,
            },
        }
    }
}

/// One input's records, or why it failed.
type Answer = Result<Vec<Draft>, CallError>;

/// `results` for the inputs before the event of input `results.len()`,
/// and `None` from that event on.
fn cut(mut results: Vec<Option<Answer>>, len: usize, owners: &[usize]) -> Vec<Option<Answer>> {
    let at = results.len();
    let start = owners[..at]
        .iter()
        .rposition(|&o| o != owners[at])
        .map_or(0, |p| p + 1);
    results.truncate(start);
    results.resize_with(len, || None);
    results
}

/// What one call's answers have added up to, against the batch limits.
#[derive(Default)]
struct Spent {
    records: u64,
    bytes: u64,
}

impl Spent {
    /// Counts `answer`; `false` once the call is past a limit. (The first
    /// event of a call always goes, so every call settles one.)
    fn add(&mut self, answer: &Answer, limits: &crate::spec::Limits) -> bool {
        if let Ok(records) = answer {
            self.records += records.len() as u64;
            self.bytes += records
                .iter()
                .map(|d| crate::output::record_bytes(&d.record))
                .sum::<u64>();
        }
        self.records <= limits.output.records_per_batch
            && self.bytes <= limits.output.bytes_per_batch
    }

    fn why(&self, limits: &crate::spec::Limits) -> String {
        format!(
            "a call's output reached limits.records_per_batch ({}) or bytes_per_batch ({} bytes)",
            limits.output.records_per_batch, limits.output.bytes_per_batch
        )
    }
}

/// Why one input failed: the failure metrics' reason label, and the message.
struct CallError {
    reason: &'static str,
    error: String,
}

/// One input's answer: its records, the error the guest returned, or the
/// limit its output broke.
fn answer(o: Result<Output, String>) -> Answer {
    match o {
        Ok(Output::Records(r)) => Ok(r.into_iter().map(Draft::built).collect()),
        Ok(Output::Error(e)) => Err(CallError {
            reason: "error",
            error: format!("returned an error: {e}"),
        }),
        Err(why) => Err(CallError {
            reason: "output",
            error: why,
        }),
    }
}

/// A 0.2 answer: the patches applied to the input's record, held to the
/// per-event output limits (0.1's are checked as they are copied out).
/// A record kept several times gets its default value built once, before
/// it is copied, so that what it costs is counted.
fn answer_v02(
    o: Output02,
    base: &Draft,
    default_value: &dyn Fn() -> Option<Vec<u8>>,
    limits: &crate::spec::OutputLimits,
) -> Answer {
    let patches = match o {
        Output02::Keep => return Ok(vec![base.clone()]),
        Output02::Error(e) => {
            return Err(CallError {
                reason: "error",
                error: format!(
                    "returned an error: {}",
                    crate::output::clip(&e, crate::output::MAX_MESSAGE)
                ),
            })
        }
        Output02::Records(p) => p,
    };
    if patches.len() as u64 > limits.records_per_event {
        return Err(CallError {
            reason: "output",
            error: format!(
                "returned {} records for one event (limits.records_per_event is {})",
                patches.len(),
                limits.records_per_event
            ),
        });
    }
    let built;
    let base = if patches.len() > 1 && base.lazy {
        let mut b = base.clone();
        b.materialise(default_value);
        built = b;
        &built
    } else {
        base
    };
    let drafts: Vec<Draft> = patches.into_iter().map(|p| base.patched(p)).collect();
    let bytes: u64 = drafts
        .iter()
        .map(|d| crate::output::record_bytes(&d.record))
        .sum();
    if bytes > limits.bytes_per_event {
        return Err(CallError {
            reason: "output",
            error: format!(
                "returned more than {} bytes for one event (limits.bytes_per_event)",
                limits.bytes_per_event
            ),
        });
    }
    Ok(drafts)
}
