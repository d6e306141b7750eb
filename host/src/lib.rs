//! `cvp-stream` as a library: CloudVision events -> WebAssembly transforms
//! -> Kafka. The binary (`main.rs`) parses the command line and calls in;
//! tests and the bench use the same parts in-process.
//!
//! Reading order, the path of an event:
//!
//! 1. `sources/` — where events come from (`sources/cvp/`: subscribe, merge
//!    partial updates, resume after a gap);
//! 2. `transforms/` — the transform stage, running the chain of components
//!    in `cvp-transform-engine` (the wasmtime host, a crate of its own);
//! 3. `sinks/` — where records go (`sinks/kafka/`, `sinks/stdout.rs`);
//! 4. `delivery/` — what every sink shares: acknowledgement tracking, the
//!    checkpoint, `on_error` and dead letters.
//!
//! `pipeline.rs` joins the stages; `config/` is the file's top level (each
//! block lives beside the component it configures); `commands/` has a file
//! per subcommand; `admin.rs` and `metrics.rs` are for operators.

// The path of an event, in order.
pub mod delivery;
pub mod enrichment;
pub mod event;
pub mod pipeline;
pub mod sinks;
pub mod sources;
pub mod transforms;

// Around it.
pub mod admin;
#[cfg(feature = "bench")]
pub mod bench;
pub mod cli;
pub mod commands;
pub mod config;
pub mod metrics;
pub mod progress;
pub mod secret;
