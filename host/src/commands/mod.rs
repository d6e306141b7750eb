//! The subcommands, a file each, each with its arguments beside its code.
//! `cli.rs` lists them for clap; `main.rs` dispatches.
//!
//! | command | file |
//! | --- | --- |
//! | `run` | `run.rs` |
//! | `validate` | `validate.rs` |
//! | `test` (a config's `tests:`) | `test.rs` |
//! | `transform test` | `transform_test.rs` |
//! | `transform new` | `transform_new.rs` |
//! | `transform inspect` | `transform_inspect.rs` |
//! | `simulate` (feature `simulator`) | `simulate.rs` |
//! | `demo` (feature `simulator`) | `demo.rs` |
//! | `bench` (feature `bench`) | `bench.rs` |

#[cfg(feature = "bench")]
pub mod bench;
#[cfg(feature = "simulator")]
pub mod demo;
pub mod run;
#[cfg(feature = "simulator")]
pub mod simulate;
pub mod test;
pub mod transform_inspect;
pub mod transform_new;
pub mod transform_test;
pub mod validate;

use crate::delivery::DeliveryStats;

/// The end-of-run line of `run` and `demo`.
fn summary(s: &DeliveryStats) {
    tracing::info!(
        events = s.events,
        records = s.produced,
        dropped = s.dropped,
        transform_failures = s.failed_transform,
        delivery_failures = s.failed_delivery,
        "stopped"
    );
}
