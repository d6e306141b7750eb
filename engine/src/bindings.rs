//! Host-side bindings generated from the WIT contract, one module per
//! version this engine runs: `v02` (`wit/transform.wit`, the current one)
//! and `v01` (`wit/0.1/transform.wit`, still accepted, deprecated). Both
//! worlds' host imports live in one linker: their interface names carry the
//! version, so they never clash.

pub mod v01 {
    wasmtime::component::bindgen!({
        path: "../wit/0.1",
        world: "transform",
    });
}

pub mod v02 {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "transform",
    });
}

pub use v01::cvp_stream::transform::host::Level;
// The engine's record type is 0.1's `kafka-record`: the same four fields
// the 0.2 contract patches.
pub use v01::cvp_stream::transform::types::{
    Component as WitComponent, Event as WitEvent, Header, Input, KafkaRecord,
    Operation as WitOperation, Output, Severity as WitSeverity,
};

/// The WIT package this host implements.
pub const WIT_PACKAGE: &str = "cvp-stream:transform";
/// The contract versions this engine runs, newest first.
pub const WIT_VERSIONS: [&str; 2] = ["0.2.0", "0.1.0"];
/// The current one.
pub const WIT_VERSION: &str = WIT_VERSIONS[0];

/// Which contract a component was built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contract {
    V01,
    V02,
}

impl Contract {
    /// Pre-1.0 semver: a component is compatible with the version of the
    /// same minor number (0.2.x runs as 0.2).
    pub fn of_version(v: &str) -> Option<Contract> {
        let minor: Vec<&str> = v.split('.').take(2).collect();
        match minor.as_slice() {
            ["0", "1"] => Some(Contract::V01),
            ["0", "2"] => Some(Contract::V02),
            _ => None,
        }
    }
}

/// Whether this engine runs a component built for version `v`.
pub fn version_is_compatible(v: &str) -> bool {
    Contract::of_version(v).is_some()
}
