//! Write cvp-stream transforms in Rust, against contract 0.2
//! (`wit/transform.wit`).
//!
//! A transform is a type implementing [`Transform`], exported with
//! [`export_transform!`] from a `cdylib` crate built for `wasm32-wasip2`.
//! It names the fields it reads; the host fills only those, and reading
//! another one panics with a message that says which name to add (the
//! event then fails under the transform's `on_error`), so a forgotten
//! declaration shows at the first event instead of as a silently empty
//! value. It answers with changes to the record, not a whole new one:
//!
//! ```ignore
//! use cvp_transform_sdk::{export_transform, Config, Event, Output, Patch, Record, Transform};
//!
//! struct TitleToKey;
//!
//! impl Transform for TitleToKey {
//!     fn new(_config: &Config) -> Result<Self, String> {
//!         Ok(TitleToKey)
//!     }
//!
//!     fn reads(&self) -> Vec<String> {
//!         cvp_transform_sdk::fields(&["title", "description"])
//!     }
//!
//!     fn transform(&mut self, event: &Event, _record: &Record) -> Result<Output, String> {
//!         let title = event.title().unwrap_or_default();
//!         let description = event.description().unwrap_or_default();
//!         Ok(Output::one(Patch::new().key(title).value(description)))
//!     }
//! }
//!
//! export_transform!(TitleToKey);
//! ```

mod config;
mod event;
mod ext;
pub mod log;
mod patch;

/// Bindings generated from `wit/transform.wit`. Public only because
/// [`export_transform!`] expands in the transform's crate and must reach them.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "transform",
        // A link to the repository's wit/ here; a real copy in a project
        // that `cvp-stream transform new` wrote.
        path: "wit",
        // The export macro expands in each transform's crate, not here, so
        // the `#[export_name]` functions land in the cdylib that the
        // component is made from.
        pub_export_macro: true,
        export_macro_name: "__export_transform_world",
        default_bindings_module: "cvp_transform_sdk::bindings",
    });
}

pub use bindings::cvp_stream::transform::host::Level;
pub use bindings::cvp_stream::transform::types::{
    Component, Device, Header, Interface, Operation, Severity, StreamingStatus, Tag, TagCreator,
    Timestamp,
};
pub use config::Config;
pub use event::{tag, Declared, Event, Record};
pub use patch::{Output, Patch};

/// The names of the fields a transform reads, as [`Transform::reads`]
/// returns them.
pub fn fields(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// A transform: built once per component instance, then called for every
/// event in every batch.
pub trait Transform: Sized + 'static {
    /// Builds the transform from its `config:` map. An error stops the host's
    /// start-up (or `cvp-stream validate`) and is shown to the user, so name
    /// the offending key and value.
    fn new(config: &Config) -> Result<Self, String>;

    /// The fields it reads (see `event` and `outgoing` in
    /// `wit/transform.wit`): "title", "description", "event-type",
    /// "rule-id", "data" or "data.NAME", "components", "metadata", "json",
    /// "devices", "interfaces", "link", and of the record "value" and
    /// "headers". `key`, the times, `operation` and `severity`, and the
    /// record's topic and key, are always there. Called once, after
    /// [`Transform::new`], so it may depend on the config.
    fn reads(&self) -> Vec<String>;

    /// What to make of one event and its record so far: keep it, change it,
    /// fan it out, drop it. An `Err` makes the host apply the transform's
    /// `on_error` policy to this event only.
    fn transform(&mut self, event: &Event, record: &Record) -> Result<Output, String>;
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
                fn init() -> ::core::result::Result<
                    ::std::vec::Vec<::std::string::String>,
                    ::std::string::String,
                > {
                    $crate::__private::init(&INSTANCE)
                }

                fn process(
                    batch: ::std::vec::Vec<$crate::__private::Input>,
                ) -> ::std::vec::Vec<$crate::__private::WitOutput> {
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

    pub use crate::bindings::cvp_stream::transform::types::{Input, Output as WitOutput};
    pub use crate::bindings::exports::cvp_stream::transform::transformer::Guest;
    use crate::{Config, Declared, Event, Record, Transform};

    /// The transform and what it declared.
    pub type Slot<T> = RefCell<Option<(T, Declared)>>;

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

    fn build<T: Transform>() -> Result<(T, Declared, Vec<String>), String> {
        forward_panics();
        let transform = T::new(&Config::from_host())?;
        let reads = transform.reads();
        let declared = Declared::new(&reads);
        Ok((transform, declared, reads))
    }

    pub fn init<T: Transform>(slot: &'static LocalKey<Slot<T>>) -> Result<Vec<String>, String> {
        let (transform, declared, reads) = build::<T>()?;
        slot.with(|cell| *cell.borrow_mut() = Some((transform, declared)));
        Ok(reads)
    }

    pub fn process<T: Transform>(
        slot: &'static LocalKey<Slot<T>>,
        batch: Vec<Input>,
    ) -> Vec<WitOutput> {
        slot.with(|cell| {
            let mut instance = cell.borrow_mut();
            if instance.is_none() {
                // The host calls `init` first (it needs the field list);
                // building here keeps any other caller from meeting an
                // empty transform.
                match build::<T>() {
                    Ok((transform, declared, _)) => *instance = Some((transform, declared)),
                    Err(e) => {
                        let message = format!("init failed: {e}");
                        return batch
                            .iter()
                            .map(|_| WitOutput::Error(message.clone()))
                            .collect();
                    }
                }
            }
            let (transform, declared) = instance.as_mut().expect("built above");
            batch
                .into_iter()
                .map(|input| {
                    let event = Event::new(&input.event, declared);
                    let record = Record::new(&input.record, declared);
                    match transform.transform(&event, &record) {
                        Ok(output) => output.into_wit(),
                        Err(message) => WitOutput::Error(message),
                    }
                })
                .collect()
        })
    }
}
