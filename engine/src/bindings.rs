//! Host-side bindings generated from `wit/transform.wit`, and the versions
//! of it this engine accepts.

wasmtime::component::bindgen!({
    path: "../wit/0.1",
    world: "transform",
});

pub use cvp_stream::transform::host::Level;
pub use cvp_stream::transform::types::{
    Component as WitComponent, Event as WitEvent, Header, Input, KafkaRecord,
    Operation as WitOperation, Output, Severity as WitSeverity,
};

/// The WIT package this host implements, and the versions it accepts.
pub const WIT_PACKAGE: &str = "cvp-stream:transform";
pub const WIT_VERSION: &str = "0.1.0";
/// Pre-1.0 semver: a component is compatible when built for the same minor
/// version (0.1.x).
pub fn version_is_compatible(v: &str) -> bool {
    v.split('.').take(2).eq(WIT_VERSION.split('.').take(2))
}
