//! Loading and running one transform component under wasmtime: compile once,
//! check it against our WIT world, and run instances with a memory cap (all
//! of an instance's memories together), a per-call deadline, bounded output
//! (`output.rs`) and a rate-limited log. A fault costs the instance, never
//! the host.

use crate::bindings::{self, v01, v02, Contract, Input, Level, Output};
use crate::contract::{InputView, Output02, Reads};
use crate::error::{LoadError, Problem};
use crate::output;
use crate::spec::{Code, Limits, TransformSpec};
use anyhow::{anyhow, Context, Result};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Func, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, Trap};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// How often the epoch advances; call deadlines are counted in these ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);
/// How much of a guest's stderr is kept to explain a trap (a panic message).
const STDERR_TAIL: usize = 4096;
/// Most linear memories and tables one instance may have. Ordinary
/// components have one or two memories and a table per core module; the
/// memory cap counts every memory anyway, so these only stop a component
/// made of thousands.
const MAX_MEMORIES: usize = 16;
const MAX_TABLES: usize = 64;
/// From this size on, a first compile is slow enough to announce.
const LARGE_COMPONENT: usize = 4 << 20;
/// Most table elements one instance may hold, all tables together (each
/// costs the host a pointer or two).
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

/// The wasmtime engine and linker shared by every transform.
pub struct Runtime {
    engine: Engine,
    linker: Linker<GuestState>,
    cache: Option<crate::cache::CompileCache>,
}

impl Runtime {
    pub fn new() -> Result<Self> {
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        // Epoch interruption costs far less per call than fuel and bounds
        // wall-clock time, which is what an operator cares about.
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| anyhow!("cannot start wasmtime: {e}"))?;
        let mut linker = Linker::new(&engine);
        // Guests built for wasm32-wasip2 import WASI even when unused; they get
        // an empty context: no files, sockets, environment or arguments.
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        v01::Transform::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;
        v02::Transform::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)?;

        let weak = engine.weak();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                // Ticks follow the clock, not the sleeps: on a busy machine
                // a 5 ms sleep lasts longer, and counting sleeps made a
                // 200 ms deadline last 330 ms.
                let start = Instant::now();
                let mut ticked = 0u128;
                while let Some(engine) = weak.upgrade() {
                    let due = start.elapsed().as_nanos() / EPOCH_TICK.as_nanos();
                    while ticked < due {
                        engine.increment_epoch();
                        ticked += 1;
                    }
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })
            .context("cannot start the transform timer thread")?;
        Ok(Runtime {
            engine,
            linker,
            cache: crate::cache::CompileCache::from_env(),
        })
    }

    /// Reads, compiles and type-checks a transform. Every failure is one line
    /// that names the transform and says what to fix.
    pub fn load(&self, spec: &TransformSpec) -> Result<LoadedTransform, LoadError> {
        let name = &spec.name;
        let code = spec.code.describe();
        let fail = |problem| LoadError::new(name, problem);
        let owned;
        let bytes: &[u8] = match &spec.code {
            Code::Embedded { bytes, .. } => bytes,
            Code::File(path) => {
                owned = std::fs::read(path).map_err(|error| {
                    fail(Problem::Unreadable {
                        code: code.clone(),
                        error,
                    })
                })?;
                &owned
            }
        };
        check_header(bytes, &code).map_err(fail)?;
        // A Python or JavaScript component is 12-18 MB and takes about 20 s
        // to compile the first time: say so before the wait, not after.
        let cached = self
            .cache
            .as_ref()
            .is_some_and(|c| c.entry(&self.engine, bytes).exists());
        if !cached && bytes.len() >= LARGE_COMPONENT {
            tracing::info!(
                transform = %name,
                "compiling transform {name} ({} MB): the first compile of a component this large takes about 20 s; later starts read it from the compilation cache",
                bytes.len() >> 20
            );
        }
        let compiled = match &self.cache {
            Some(cache) => cache.load(&self.engine, bytes),
            None => Component::new(&self.engine, bytes),
        };
        let component = compiled.map_err(|e| {
            fail(Problem::Invalid {
                code: code.clone(),
                detail: one_line(&e),
            })
        })?;
        let (contract, export) =
            check_world_version(&self.engine, &component, &code).map_err(fail)?;
        let pre = self.linker.instantiate_pre(&component).map_err(|e| {
            fail(Problem::MissingImport {
                code: code.clone(),
                detail: one_line(&e),
            })
        })?;
        let described = code.clone();
        let mismatch = |version: &'static str| {
            let code = described.clone();
            move |e: wasmtime::Error| {
                LoadError::new(
                    name,
                    Problem::WorldMismatch {
                        code,
                        package: bindings::WIT_PACKAGE,
                        version,
                        detail: one_line(&e),
                    },
                )
            }
        };
        let pre = match contract {
            Contract::V01 => {
                tracing::warn!(
                    transform = %name,
                    "transform {name} ({code}) is built for contract 0.1, which still runs but is deprecated: rebuild it against {}@{} (wit/transform.wit) so that it receives only the fields it reads",
                    bindings::WIT_PACKAGE,
                    bindings::WIT_VERSION
                );
                Pre::V01(v01::TransformPre::new(pre).map_err(mismatch("0.1.0"))?)
            }
            Contract::V02 => Pre::V02 {
                pre: v02::TransformPre::new(pre).map_err(mismatch(bindings::WIT_VERSION))?,
                export,
            },
        };
        Ok(LoadedTransform {
            name: Arc::from(name.as_str()),
            engine: self.engine.clone(),
            pre,
            limits: spec.limits.clone(),
            config: Arc::new(spec.config.clone()),
            log: Arc::new(LogGate::new(
                spec.limits.log_lines_per_second,
                spec.limits.log_line_bytes,
            )),
        })
    }
}

fn check_header(bytes: &[u8], code: &str) -> Result<(), Problem> {
    let code = code.to_string();
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(Problem::NotWasm { code });
    }
    // Core modules are version 1 with layer 0; components carry layer 1.
    if bytes[4..8] == [1, 0, 0, 0] {
        return Err(Problem::CoreModule { code });
    }
    Ok(())
}

/// Which contract a component was built for, and the full name of its
/// `transformer` export; says clearly when it was built for a version of
/// our WIT package this engine does not run, instead of a type-check error
/// about missing exports.
fn check_world_version(
    engine: &Engine,
    component: &Component,
    code: &str,
) -> Result<(Contract, String), Problem> {
    let prefix = format!("{}/transformer@", bindings::WIT_PACKAGE);
    let ty = component.component_type();
    let exports: Vec<&str> = ty.exports(engine).map(|(n, _)| n).collect();
    let found = exports
        .iter()
        .find_map(|n| n.strip_prefix(&prefix).map(|v| (*n, v)));
    match found {
        Some((export, v)) => match Contract::of_version(v) {
            Some(c) => Ok((c, export.to_string())),
            None => Err(Problem::OtherVersion {
                code: code.to_string(),
                package: bindings::WIT_PACKAGE,
                found: v.to_string(),
                accepted: "0.2.x and 0.1.x",
            }),
        },
        None => Err(Problem::NotATransform {
            code: code.to_string(),
            exports: exports.join(", "),
            package: bindings::WIT_PACKAGE,
        }),
    }
}

/// wasmtime's errors and ours both print their cause chain with `{:#}`.
fn one_line(e: &impl std::fmt::Display) -> String {
    format!("{e:#}").replace('\n', " ")
}

/// A compiled, type-checked transform, ready to instantiate cheaply.
pub struct LoadedTransform {
    pub name: Arc<str>,
    engine: Engine,
    pre: Pre,
    limits: Limits,
    config: Arc<Vec<(String, String)>>,
    /// Shared by every instance: a trap (a fresh instance) must not
    /// refill a flooding guest's allowance.
    log: Arc<LogGate>,
}

/// A component ready to instantiate, by contract.
enum Pre {
    V01(v01::TransformPre<GuestState>),
    V02 {
        pre: v02::TransformPre<GuestState>,
        /// `cvp-stream:transform/transformer@0.2.x`, as the component names it.
        export: String,
    },
}

/// An instance's exports, by contract.
enum Bound {
    V01(v01::Transform),
    V02 {
        bindings: v02::Transform,
        /// `process`, called with borrowed inputs (the generated binding
        /// takes owned ones, which would copy every string of the event).
        process: Func,
    },
}

impl LoadedTransform {
    /// The contract the component was built for.
    pub fn contract(&self) -> Contract {
        match self.pre {
            Pre::V01(_) => Contract::V01,
            Pre::V02 { .. } => Contract::V02,
        }
    }

    /// A fresh instance with `init` already called.
    pub fn instantiate(&self) -> Result<Instance, LoadError> {
        let stderr = TailPipe::default();
        let mut wasi = wasmtime_wasi::WasiCtxBuilder::new();
        wasi.stderr(stderr.clone());
        let state = GuestState {
            name: self.name.clone(),
            config: self.config.clone(),
            wasi: wasi.build(),
            table: ResourceTable::new(),
            memory_cap: self.limits.memory as usize,
            memory_total: 0,
            table_total: 0,
            hit_memory_cap: false,
            last_panic: None,
            log: self.log.clone(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| s);
        // What the host copies out of the guest per call (its result, or
        // one host call's arguments) is bounded here, before it is copied;
        // `output.rs` then counts it by event.
        store.set_hostcall_fuel(self.hostcall_fuel());
        let ticks = self.deadline_ticks();
        store.set_epoch_deadline(ticks);
        let bound = match &self.pre {
            Pre::V01(pre) => pre.instantiate(&mut store).map(Bound::V01),
            Pre::V02 { pre, export } => (|| {
                let instance = pre.instance_pre().instantiate(&mut store)?;
                let bindings = v02::Transform::new(&mut store, &instance)?;
                let iface = instance
                    .get_export_index(&mut store, None, export)
                    .ok_or_else(|| wasmtime::Error::msg(format!("no export {export}")))?;
                let index = instance
                    .get_export_index(&mut store, Some(&iface), "process")
                    .ok_or_else(|| {
                        wasmtime::Error::msg(format!("{export} exports no `process`"))
                    })?;
                let process = instance.get_func(&mut store, index).ok_or_else(|| {
                    wasmtime::Error::msg(format!("{export}'s `process` is not a function"))
                })?;
                Ok(Bound::V02 { bindings, process })
            })(),
        };
        let bound = bound.map_err(|e: wasmtime::Error| {
            let problem = if store.data().hit_memory_cap {
                Problem::Instantiate(format!(
                    "needs more than its memory limit of {} MiB",
                    self.limits.memory >> 20
                ))
            } else {
                Problem::Instantiate(one_line(&e))
            };
            LoadError::new(&self.name, problem)
        })?;
        let mut instance = Instance {
            calls: 0,
            store,
            bound,
            reads: Arc::new(Reads::all()),
            stderr,
            ticks,
            limits: self.limits.clone(),
        };
        match instance.call_init() {
            Ok(Ok(())) => Ok(instance),
            Ok(Err(msg)) => Err(LoadError::new(&self.name, Problem::InitRefused(msg))),
            Err(fault) => Err(LoadError::new(&self.name, Problem::InitFault(fault))),
        }
    }

    /// Twice `bytes_per_batch`: what `output.rs` counts is close to what
    /// wasmtime charges, and a call a little over the batch limit should
    /// fail by event, not whole.
    fn hostcall_fuel(&self) -> usize {
        usize::try_from(self.limits.output.bytes_per_batch.saturating_mul(2))
            .unwrap_or(usize::MAX)
            .max(1 << 20)
    }

    fn deadline_ticks(&self) -> u64 {
        (self.limits.timeout.as_nanos() / EPOCH_TICK.as_nanos()).max(1) as u64 + 1
    }
}

/// One running instance of a transform.
pub struct Instance {
    /// Calls made so far (`init` excluded).
    calls: u64,
    store: Store<GuestState>,
    bound: Bound,
    /// What it declared in `init` (everything, for 0.1).
    reads: Arc<Reads>,
    stderr: TailPipe,
    ticks: u64,
    limits: Limits,
}

impl Instance {
    fn call_init(&mut self) -> Result<Result<(), String>, Fault> {
        self.store.set_epoch_deadline(self.ticks);
        let r = match &self.bound {
            Bound::V01(b) => b
                .cvp_stream_transform_transformer()
                .call_init(&mut self.store)
                .map(|r| r.map(|()| Reads::all())),
            Bound::V02 { bindings, .. } => bindings
                .cvp_stream_transform_transformer()
                .call_init(&mut self.store)
                .map(|r| r.and_then(|names| Reads::parse(&names))),
        };
        match r {
            Ok(Ok(reads)) => {
                self.reads = Arc::new(reads);
                Ok(Ok(()))
            }
            Ok(Err(msg)) => Ok(Err(msg)),
            Err(e) => Err(self.classify(e)),
        }
    }

    /// What the instance declared it reads.
    pub fn reads(&self) -> &Arc<Reads> {
        &self.reads
    }

    /// The bytes its linear memories hold now (they never shrink).
    pub fn memory_in_use(&self) -> u64 {
        self.store.data().memory_total as u64
    }

    /// Runs one batch of a 0.1 transform: per input, its output or why it
    /// was refused (it broke an output limit). `Err` means the instance is
    /// unusable and must be replaced (wasmtime will not re-enter an
    /// instance that trapped).
    pub fn process(&mut self, batch: &[Input]) -> Result<Vec<Result<Output, String>>, Fault> {
        self.calls += 1;
        self.store.set_epoch_deadline(self.ticks);
        let Bound::V01(b) = &self.bound else {
            return Err(Fault::Contract("called as 0.1, built for 0.2".into()));
        };
        let outputs = b
            .cvp_stream_transform_transformer()
            .call_process(&mut self.store, batch)
            .map_err(|e| self.classify(e))?;
        one_per_input(outputs.len(), batch.len())?;
        Ok(output::check(outputs, &self.limits.output))
    }

    /// Runs one batch of a 0.2 transform, lowering the borrowed views
    /// straight into the guest. The output limits are checked by the
    /// caller, once the patches are applied.
    pub(crate) fn process_v02(&mut self, batch: &[InputView<'_>]) -> Result<Vec<Output02>, Fault> {
        self.calls += 1;
        self.store.set_epoch_deadline(self.ticks);
        let Bound::V02 { process, .. } = &self.bound else {
            return Err(Fault::Contract("called as 0.2, built for 0.1".into()));
        };
        let process = *process;
        // Type-checked per call (a batch, so per many events): the views
        // borrow from the caller and cannot be named in a stored TypedFunc.
        let typed = process
            .typed::<(&[InputView<'_>],), (Vec<Output02>,)>(&self.store)
            .map_err(|e| Fault::Contract(one_line(&e)))?;
        let (outputs,) = typed
            .call(&mut self.store, (batch,))
            .map_err(|e| self.classify(e))?;
        one_per_input(outputs.len(), batch.len())?;
        Ok(outputs)
    }

    pub fn calls(&self) -> u64 {
        self.calls
    }

    fn hostcall_fuel_bytes(&self) -> u64 {
        self.store.hostcall_fuel() as u64
    }

    fn classify(&mut self, e: wasmtime::Error) -> Fault {
        if self.store.data().hit_memory_cap {
            return Fault::Memory(self.limits.memory);
        }
        // wasmtime's words when a call's result (or a host call's
        // arguments) would copy more than the fuel allows.
        if format!("{e:#}").contains("fuel allocated for hostcalls has been exhausted") {
            return Fault::Output(self.hostcall_fuel_bytes());
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => Fault::Timeout(self.limits.timeout),
            _ => {
                let panic = self.store.data_mut().last_panic.take();
                // Errors are one line: a guest's message may not be.
                let stderr = panic.or_else(|| self.stderr.last_line()).map(|m| {
                    let line = m.split_whitespace().collect::<Vec<_>>().join(" ");
                    output::clip(&line, output::MAX_MESSAGE)
                });
                let trap = e.root_cause().to_string();
                Fault::Trap(match stderr {
                    Some(msg) => format!("{msg} ({trap})"),
                    None => trap,
                })
            }
        }
    }
}

/// The contract's one rule about a batch's answer.
fn one_per_input(outputs: usize, inputs: usize) -> Result<(), Fault> {
    if outputs == inputs {
        return Ok(());
    }
    Err(Fault::Contract(format!(
        "returned {outputs} outputs for {inputs} inputs (must be exactly one per input)"
    )))
}

/// Why a call into a transform failed as a whole.
#[derive(Debug, Clone)]
pub enum Fault {
    Trap(String),
    Timeout(Duration),
    Memory(u64),
    Contract(String),
    /// Handed the host more bytes in one go than it copies (twice
    /// `limits.bytes_per_batch`).
    Output(u64),
}

impl Fault {
    /// The `reason` label of the failure metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Fault::Trap(_) => "trap",
            Fault::Timeout(_) => "timeout",
            Fault::Memory(_) => "memory",
            Fault::Contract(_) => "contract",
            Fault::Output(_) => "output",
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Trap(m) => write!(f, "trapped: {m}"),
            Fault::Timeout(d) => write!(f, "timed out after {}", humantime::format_duration(*d)),
            Fault::Memory(cap) => write!(f, "exceeded its memory limit of {} MiB", cap >> 20),
            Fault::Contract(m) => write!(f, "broke the contract: {m}"),
            Fault::Output(max) => write!(
                f,
                "handed the host more than {} MiB at once (twice limits.bytes_per_batch)",
                max >> 20
            ),
        }
    }
}

/// Per-instance host state.
pub struct GuestState {
    name: Arc<str>,
    config: Arc<Vec<(String, String)>>,
    wasi: WasiCtx,
    table: ResourceTable,
    /// The cap on all linear memories together, and what they hold now
    /// (the limiter hears of each memory's growth, never the sum).
    memory_cap: usize,
    memory_total: usize,
    /// Elements in all tables together.
    table_total: usize,
    hit_memory_cap: bool,
    /// A panic message the guest logged (the Rust SDK's panic hook does)
    /// during the current call: the best explanation of the trap after it.
    last_panic: Option<String>,
    log: Arc<LogGate>,
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wasmtime::ResourceLimiter for GuestState {
    /// Called for each memory (its creation too, from 0): the cap is on
    /// the sum, or a component of seven memories holds seven caps.
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Past the memory's own maximum the growth fails anyway: do not
        // count it.
        if max.is_some_and(|m| desired > m) {
            return Ok(false);
        }
        let total = (self.memory_total - current.min(self.memory_total)).saturating_add(desired);
        if total > self.memory_cap {
            // Refuse the growth (the guest sees an allocation failure and
            // usually traps); remember why so the error can say so.
            self.hit_memory_cap = true;
            return Ok(false);
        }
        self.memory_total = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if max.is_some_and(|m| desired > m) {
            return Ok(false);
        }
        let total = (self.table_total - current.min(self.table_total)).saturating_add(desired);
        if total > MAX_TABLE_ELEMENTS {
            return Ok(false);
        }
        self.table_total = total;
        Ok(true)
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }
}

impl v02::cvp_stream::transform::host::Host for GuestState {
    fn log(&mut self, level: v02::cvp_stream::transform::host::Level, message: String) {
        use v02::cvp_stream::transform::host::Level as L;
        let level = match level {
            L::Trace => Level::Trace,
            L::Debug => Level::Debug,
            L::Info => Level::Info,
            L::Warn => Level::Warn,
            L::Error => Level::Error,
        };
        v01::cvp_stream::transform::host::Host::log(self, level, message)
    }

    fn config(&mut self) -> Vec<(String, String)> {
        self.config.as_ref().clone()
    }
}

impl v02::cvp_stream::transform::types::Host for GuestState {}

impl v01::cvp_stream::transform::host::Host for GuestState {
    fn log(&mut self, level: Level, message: String) {
        if level == Level::Error && message.starts_with("panic: ") {
            self.last_panic = Some(output::clip(&message, output::MAX_MESSAGE));
        }
        if !self.log.admit() {
            return;
        }
        let message = self.log.escape(&message);
        let transform = &*self.name;
        match level {
            Level::Trace => tracing::trace!(transform, "{message}"),
            Level::Debug => tracing::debug!(transform, "{message}"),
            Level::Info => tracing::info!(transform, "{message}"),
            Level::Warn => tracing::warn!(transform, "{message}"),
            Level::Error => tracing::error!(transform, "{message}"),
        }
    }

    fn config(&mut self) -> Vec<(String, String)> {
        self.config.as_ref().clone()
    }
}

impl v01::cvp_stream::transform::types::Host for GuestState {}

/// Keeps the last few KiB a guest wrote to stderr, so that a panic message
/// can be shown with the trap it caused, without letting a chatty guest grow
/// host memory.
#[derive(Clone, Default)]
struct TailPipe(Arc<Mutex<VecDeque<u8>>>);

impl TailPipe {
    fn last_line(&self) -> Option<String> {
        let buf = self.0.lock().ok()?;
        let bytes: Vec<u8> = buf.iter().copied().collect();
        let text = String::from_utf8_lossy(&bytes);
        text.lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("note:"))
            .map(str::to_string)
    }
}

impl wasmtime_wasi::cli::IsTerminal for TailPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for TailPipe {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(tokio::io::sink())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for TailPipe {
    async fn ready(&mut self) {}
}

impl OutputStream for TailPipe {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        if let Ok(mut buf) = self.0.lock() {
            buf.extend(bytes.iter());
            let excess = buf.len().saturating_sub(STDERR_TAIL);
            buf.drain(..excess);
        }
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

/// A transform's log allowance: a token bucket of `per_second` lines (as
/// many in a burst), lines cut to `max_bytes` with control characters
/// escaped, so that a guest can neither flood the host's log nor forge
/// lines in it (`\n` in a message would start one). Lines refused are
/// counted for the chain to report.
pub(crate) struct LogGate {
    per_second: f64,
    max_bytes: usize,
    bucket: Mutex<(f64, Instant)>,
    suppressed: AtomicU64,
}

impl LogGate {
    fn new(per_second: u32, max_bytes: usize) -> LogGate {
        LogGate {
            per_second: f64::from(per_second),
            max_bytes,
            bucket: Mutex::new((f64::from(per_second), Instant::now())),
            suppressed: AtomicU64::new(0),
        }
    }

    fn admit(&self) -> bool {
        let Ok(mut bucket) = self.bucket.lock() else {
            return false;
        };
        let (tokens, last) = &mut *bucket;
        let now = Instant::now();
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.per_second)
            .min(self.per_second);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    fn escape(&self, message: &str) -> String {
        let clipped = output::clip(message, self.max_bytes);
        if !clipped.chars().any(char::is_control) {
            return clipped;
        }
        let mut out = String::with_capacity(clipped.len() + 8);
        for c in clipped.chars() {
            if c.is_control() {
                out.extend(c.escape_default());
            } else {
                out.push(c);
            }
        }
        out
    }

    /// Lines refused since the last call.
    pub(crate) fn take_suppressed(&self) -> u64 {
        self.suppressed.swap(0, Ordering::Relaxed)
    }
}

impl LoadedTransform {
    /// Log lines refused since the last call, for the caller to report.
    pub fn take_suppressed_logs(&self) -> u64 {
        self.log.take_suppressed()
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(memory_cap: usize) -> GuestState {
        GuestState {
            name: Arc::from("t"),
            config: Arc::new(Vec::new()),
            wasi: wasmtime_wasi::WasiCtxBuilder::new().build(),
            table: ResourceTable::new(),
            memory_cap,
            memory_total: 0,
            table_total: 0,
            hit_memory_cap: false,
            last_panic: None,
            log: Arc::new(LogGate::new(10, 100)),
        }
    }

    /// A component of `n` core instances, each with a memory of `pages`
    /// 64 KiB pages.
    fn memories(n: usize, pages: u32) -> Vec<u8> {
        let instances: String = (0..n)
            .map(|i| format!("(core instance $i{i} (instantiate $m))\n"))
            .collect();
        wat::parse_str(format!(
            "(component (core module $m (memory {pages})) {instances})"
        ))
        .unwrap()
    }

    fn instantiate(bytes: &[u8], cap: usize) -> (wasmtime::Result<()>, GuestState) {
        let engine = Engine::new(wasmtime::Config::new().wasm_component_model(true)).unwrap();
        let component = Component::new(&engine, bytes).unwrap();
        let linker = Linker::<GuestState>::new(&engine);
        let mut store = Store::new(&engine, state(cap));
        store.limiter(|s| s);
        let r = linker.instantiate(&mut store, &component).map(|_| ());
        (r, store.into_data())
    }

    /// Seven memories of 20 MiB each are 140 MiB: over a 128 MiB cap,
    /// although each alone is under it.
    #[test]
    fn the_memory_cap_counts_every_memory_of_an_instance() {
        let (r, s) = instantiate(&memories(7, 320), 128 << 20);
        assert!(
            r.is_err(),
            "seven memories of 20 MiB went past a 128 MiB cap"
        );
        assert!(s.hit_memory_cap);
        let (r, s) = instantiate(&memories(6, 320), 128 << 20);
        r.expect("six of them fit");
        assert_eq!(s.memory_total, 6 * 320 * 65536);
    }

    /// Thousands of tiny memories are refused by their number.
    #[test]
    fn an_instance_has_few_memories() {
        let (r, _) = instantiate(&memories(MAX_MEMORIES + 1, 0), 128 << 20);
        assert!(r.is_err(), "{} memories were allowed", MAX_MEMORIES + 1);
        let (r, _) = instantiate(&memories(MAX_MEMORIES, 0), 128 << 20);
        r.expect("as many as allowed");
    }

    #[test]
    fn guest_log_lines_are_escaped_cut_and_rate_limited() {
        let gate = LogGate::new(3, 64);
        assert_eq!(
            gate.escape("a\nERROR forged\r\x1b[31m"),
            "a\\nERROR forged\\r\\u{1b}[31m"
        );
        let long = gate.escape(&"y".repeat(1000));
        assert!(
            long.starts_with(&"y".repeat(64)) && long.len() < 100,
            "{long}"
        );
        let admitted = (0..10).filter(|_| gate.admit()).count();
        assert_eq!(admitted, 3);
        assert_eq!(gate.take_suppressed(), 7);
        assert_eq!(gate.take_suppressed(), 0);
    }
}
