//! Write cvp-stream transforms in Rust, against contract 0.1: frozen, kept
//! so that the host's support for 0.1 components stays tested (the
//! misbehave fixture is built with it). New transforms use `sdk/` (0.2).
//!
//! A transform is a type implementing [`Transform`], exported with
//! [`export_transform!`] from a `cdylib` crate built for `wasm32-wasip2`:
//!
//! ```ignore
//! use cvp_transform_sdk_01::{export_transform, Config, Event, KafkaRecord, Transform};
//!
//! struct TitleToKey;
//!
//! impl Transform for TitleToKey {
//!     fn new(_config: &Config) -> Result<Self, String> {
//!         Ok(TitleToKey)
//!     }
//!
//!     fn transform(&mut self, event: &Event, mut record: KafkaRecord) -> Result<Vec<KafkaRecord>, String> {
//!         record.key = Some(event.title.as_bytes().to_vec());
//!         Ok(vec![record])
//!     }
//! }
//!
//! export_transform!(TitleToKey);
//! ```
//!
//! The contract itself is `wit/transform.wit` at the root of the repository;
//! the types re-exported here are generated from it.

mod config;
mod ext;
pub mod log;

/// Bindings generated from `wit/transform.wit`. Public only because
/// [`export_transform!`] expands in the transform's crate and must reach them.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "transform",
        path: "../../wit/0.1",
        // The export macro expands in each transform's crate, not here, so
        // the `#[export_name]` functions land in the cdylib that the
        // component is made from.
        pub_export_macro: true,
        export_macro_name: "__export_transform_world",
        default_bindings_module: "cvp_transform_sdk_01::bindings",
    });
}

pub use bindings::cvp_stream::transform::host::Level;
pub use bindings::cvp_stream::transform::types::{
    Component, Event, Header, Input, KafkaRecord, Operation, Output, Severity, Timestamp,
};
pub use config::Config;

/// A transform: built once per component instance, then called for every
/// event in every batch.
pub trait Transform: Sized + 'static {
    /// Builds the transform from its `config:` map. An error stops the host's
    /// start-up (or `cvp-stream validate`) and is shown to the user, so name
    /// the offending key and value.
    fn new(config: &Config) -> Result<Self, String>;

    /// Turns one event and the record produced for it so far into the records
    /// to produce: `vec![record]` to pass it on (changed or not), an empty
    /// vector to drop it, several to fan out. An `Err` makes the host apply
    /// the transform's `on_error` policy to this event only.
    fn transform(&mut self, event: &Event, record: KafkaRecord)
        -> Result<Vec<KafkaRecord>, String>;
}

/// Exports a [`Transform`] as the component's `transformer` interface.
///
/// Use it once, at the root of a `cdylib` crate.
#[macro_export]
macro_rules! export_transform {
    ($ty:ty) => {
        // Scoped so the glue cannot clash with the transform's own items.
        const _: () = {
            ::std::thread_local! {
                static INSTANCE: $crate::__private::Slot<$ty> =
                    const { $crate::__private::Slot::new(::core::option::Option::None) };
            }

            struct CvpTransformGuest;

            impl $crate::__private::Guest for CvpTransformGuest {
                fn init() -> ::core::result::Result<(), ::std::string::String> {
                    $crate::__private::init(&INSTANCE)
                }

                fn process(
                    batch: ::std::vec::Vec<$crate::Input>,
                ) -> ::std::vec::Vec<$crate::Output> {
                    $crate::__private::process(&INSTANCE, batch)
                }
            }

            $crate::bindings::__export_transform_world!(
                CvpTransformGuest with_types_in $crate::bindings
            );
        };
    };
}

/// Support for [`export_transform!`]; not part of the API.
#[doc(hidden)]
pub mod __private {
    use std::cell::RefCell;
    use std::thread::LocalKey;

    pub use crate::bindings::exports::cvp_stream::transform::transformer::Guest;
    use crate::{Config, Input, Output, Transform};

    pub type Slot<T> = RefCell<Option<T>>;

    /// Panic messages go to WASI stderr, which a host with an empty WASI
    /// context throws away; the host's log keeps them next to the trap.
    fn forward_panics() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                // One line, message first: the host shows it as the reason
                // the event failed.
                let payload = info.payload();
                let message = payload
                    .downcast_ref::<&str>()
                    .copied()
                    .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                    .unwrap_or("(no message)");
                let at = info
                    .location()
                    .map(|l| format!(" (at {}:{})", l.file(), l.line()))
                    .unwrap_or_default();
                crate::log::error(format!("panic: {message}{at}"))
            }));
        });
    }

    pub fn init<T: Transform>(slot: &'static LocalKey<Slot<T>>) -> Result<(), String> {
        forward_panics();
        let transform = T::new(&Config::from_host())?;
        slot.with(|cell| *cell.borrow_mut() = Some(transform));
        Ok(())
    }

    pub fn process<T: Transform>(
        slot: &'static LocalKey<Slot<T>>,
        batch: Vec<Input>,
    ) -> Vec<Output> {
        slot.with(|cell| {
            let mut instance = cell.borrow_mut();
            if instance.is_none() {
                forward_panics();
                // The host is meant to call `init` first; building here keeps
                // a host that does not from meeting an empty transform.
                match T::new(&Config::from_host()) {
                    Ok(transform) => *instance = Some(transform),
                    // Not cached: one output per input is still owed, and the
                    // next batch may as well try again.
                    Err(e) => {
                        let message = format!("init failed: {e}");
                        return batch
                            .iter()
                            .map(|_| Output::Error(message.clone()))
                            .collect();
                    }
                }
            }
            let transform = instance.as_mut().expect("built above");
            batch
                .into_iter()
                .map(
                    |Input { event, record }| match transform.transform(&event, record) {
                        Ok(records) => Output::Records(records),
                        Err(message) => Output::Error(message),
                    },
                )
                .collect()
        })
    }
}
