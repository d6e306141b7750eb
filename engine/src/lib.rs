//! The transform engine: the wasmtime host for the `cvp-stream:transform`
//! WIT world (`wit/transform.wit`). It loads components (compiled once,
//! cached on disk, type-checked against the world), runs each in a sandbox
//! with a memory cap, a per-call deadline, bounded output and a bounded
//! log, and chains them so that every
//! input passes through each transform in turn, fan-out composing down the
//! chain.
//!
//! It knows nothing of its caller, the way Fluvio's SmartEngine does: where
//! events come from (CloudVision) and where records go (Kafka, a terminal)
//! are the caller's business. It takes [`TransformSpec`]s, events that can
//! describe themselves in WIT terms ([`ChainEvent`]), and a first record per
//! event; it returns an [`Outcome`] per event and reports what it did to a
//! [`ChainObserver`].

pub mod bindings;
mod cache;
mod chain;
pub mod contract;
mod error;
mod output;
mod runtime;
mod spec;

pub use bindings::{
    Contract, Header, Input, KafkaRecord, Output, WitComponent, WitEvent, WitOperation,
    WitSeverity, WIT_PACKAGE, WIT_VERSION, WIT_VERSIONS,
};
pub use cache::CompileCache;
pub use chain::{Chain, ChainEvent, ChainObserver, Failure, First, NoObserver, Outcome};
pub use contract::{
    ComponentView, DataReads, DeviceView, EventView, InterfaceView, Operation02, Reads, Severity02,
    StreamingStatus, TagCreator, TagView,
};
pub use error::{LoadError, Problem};
pub use output::{clip, record_bytes};
pub use runtime::{Fault, Instance, LoadedTransform, Runtime};
pub use spec::{Code, Limits, OutputLimits, TransformSpec};
