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

use crate::bindings::{Input, KafkaRecord, Output, WitEvent};
use crate::error::LoadError;
use crate::runtime::{Fault, Instance, LoadedTransform, Runtime};
use crate::spec::TransformSpec;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

/// An event the chain can hand to transforms.
pub trait ChainEvent {
    /// The event as the WIT world describes it.
    fn to_wit(&self) -> WitEvent;
    /// Names the event in log lines about it.
    fn key(&self) -> &str;
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

    /// One outcome per event, in order. `first_record` makes the record an
    /// event starts down the chain with (what is produced when the chain is
    /// empty).
    pub fn process<E: ChainEvent>(
        &mut self,
        batch: &[E],
        first_record: impl Fn(&E) -> KafkaRecord,
    ) -> Vec<Outcome> {
        let mut outcomes: Vec<Option<Outcome>> = (0..batch.len()).map(|_| None).collect();
        self.process_each(batch, first_record, |done| {
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
        first_record: impl Fn(&E) -> KafkaRecord,
        mut emit: impl FnMut(Vec<(usize, Outcome)>),
    ) {
        let mut pending: Vec<usize> = (0..batch.len()).collect();
        while !pending.is_empty() {
            let events: Vec<&E> = pending.iter().map(|&i| &batch[i]).collect();
            let outcomes = self.round(&events, &first_record);
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
    fn round<E: ChainEvent>(
        &mut self,
        batch: &[&E],
        first_record: &impl Fn(&E) -> KafkaRecord,
    ) -> Vec<Option<Outcome>> {
        let mut failed: Vec<Option<Failure>> = vec![None; batch.len()];
        let mut deferred = vec![false; batch.len()];
        // (event index, record) pairs still travelling down the chain.
        let mut current: Vec<(usize, KafkaRecord)> = batch
            .iter()
            .enumerate()
            .map(|(i, ev)| (i, first_record(ev)))
            .collect();
        if !self.stages.is_empty() {
            let mut events: Vec<Option<WitEvent>> =
                batch.iter().map(|e| Some(e.to_wit())).collect();
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
        for (i, rec) in current {
            if let Some(Outcome::Produce(records)) = &mut outcomes[i] {
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
    fn run<E: ChainEvent>(
        &mut self,
        current: Vec<(usize, KafkaRecord)>,
        events: &mut [Option<WitEvent>],
        batch: &[&E],
        failed: &mut [Option<Failure>],
        deferred: &mut [bool],
        observer: &dyn ChainObserver,
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
                    _ => batch[i].to_wit(),
                },
            };
            owners.push(i);
            inputs.push(Input { event, record });
        }

        let (results, why) = self.call(&inputs, &owners, observer);
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

        let mut next = Vec::with_capacity(inputs.len());
        // Events that came in with records and leave with none were dropped
        // by this transform; `owners` is in event order.
        let mut dropped = 0;
        let mut last_owner = None;
        let mut kept_last = false;
        for ((input, i), result) in inputs.into_iter().zip(owners).zip(results) {
            if events[i].is_none() {
                events[i] = Some(input.event);
            }
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
        inputs: &[Input],
        owners: &[usize],
        observer: &dyn ChainObserver,
    ) -> (Vec<Option<Answer>>, Option<String>) {
        let limits = self.loaded.limits().clone();
        let mut spent = Spent::default();
        if let [input] = inputs {
            return (vec![Some(self.call_one(input, observer))], None);
        }
        let fault = match self.call_once(inputs, observer) {
            Ok(outputs) => {
                let mut results = Vec::with_capacity(inputs.len());
                for (k, o) in outputs.into_iter().enumerate() {
                    let answer = answer(o);
                    if !spent.add(&answer, &limits) && owners[k] != owners[0] {
                        return (cut(results, inputs.len(), owners), Some(spent.why(&limits)));
                    }
                    results.push(Some(answer));
                }
                return (results, None);
            }
            Err(fault) => fault,
        };
        tracing::warn!(
            transform = &*self.loaded.name,
            "transform {fault} on a batch of {}; retrying its events one by one",
            inputs.len()
        );
        let until = Instant::now() + limits.retry_budget;
        let mut results = Vec::with_capacity(inputs.len());
        for (k, input) in inputs.iter().enumerate() {
            // Stop only between events, and after one: every round settles
            // something.
            let new_event = k > 0 && owners[k] != owners[k - 1];
            if new_event && Instant::now() >= until {
                let why = format!(
                    "retrying a faulted batch took its whole limits.retry_budget ({})",
                    humantime::format_duration(limits.retry_budget)
                );
                return (cut(results, inputs.len(), owners), Some(why));
            }
            let answer = self.call_one(input, observer);
            if !spent.add(&answer, &limits) && owners[k] != owners[0] {
                return (cut(results, inputs.len(), owners), Some(spent.why(&limits)));
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
    fn call_one(
        &mut self,
        input: &Input,
        observer: &dyn ChainObserver,
    ) -> Result<Vec<KafkaRecord>, CallError> {
        let was_used = self.instance.as_ref().is_some_and(|i| i.calls() > 0);
        let mut result = self.call_once(std::slice::from_ref(input), observer);
        if was_used && matches!(result, Err(Fault::Memory(_))) {
            result = self.call_once(std::slice::from_ref(input), observer);
        }
        match result {
            Ok(mut out) => answer(out.remove(0)),
            Err(fault) => Err(CallError {
                reason: fault.reason(),
                error: fault.to_string(),
            }),
        }
    }

    fn call_once(
        &mut self,
        inputs: &[Input],
        observer: &dyn ChainObserver,
    ) -> Result<Vec<Result<Output, String>>, Fault> {
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
        let result = instance.process(inputs);
        observer.called(self.index, started.elapsed());
        result.inspect_err(|_| {
            // wasmtime will not re-enter an instance that trapped: start over.
            self.instance = None;
        })
    }
}

/// One input's records, or why it failed.
type Answer = Result<Vec<KafkaRecord>, CallError>;

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
            self.bytes += records.iter().map(crate::output::record_bytes).sum::<u64>();
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
        Ok(Output::Records(r)) => Ok(r),
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
