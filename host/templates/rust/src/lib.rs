//! {{name}}: a cvp-stream transform (contract 0.2).
//!
//! As generated, it passes every record on with a header
//! `x-transform: {{name}}` added, and drops events less severe than the
//! `min_severity` config key when one is given. Change `reads` and
//! `transform` below to make it do what you need; the guide is
//! transforms/README.md in the cvp-stream repository, and
//! `cvp-stream transform inspect` prints events as a transform receives them.

use cvp_transform_sdk::{
    export_transform, log, Config, Event, Output, Patch, Record, Severity, Transform,
};

/// The transform's name, as in the `x-transform` header and its log lines.
const NAME: &str = "{{name}}";

/// The transform's state: built once per component instance by `new`, then
/// kept across events and batches (a place for counters and caches too).
struct Transformer {
    /// Events less severe than this are dropped; `None` keeps them all.
    min_severity: Option<Severity>,
}

impl Transform for Transformer {
    /// Reads the `config:` map of this transform in the host's YAML file.
    /// Scalars arrive as text (`config.get("key")`); lists and maps as JSON
    /// text (`config.get_json::<T>("key")`). An `Err` stops the host's
    /// start-up (and `cvp-stream validate`) with this message, so name the
    /// key and the value. Add your own config keys here.
    fn new(config: &Config) -> Result<Self, String> {
        let min_severity = match config.get("min_severity") {
            None => None,
            Some(name) => match Severity::parse(name) {
                Some(min) if min != Severity::Unspecified => Some(min),
                _ => {
                    return Err(format!(
                        "min_severity: invalid value {name:?} \
                         (expected debug, info, warning, error or critical)"
                    ))
                }
            },
        };
        log::debug(match min_severity {
            Some(min) => format!("{NAME}: dropping events below {}", min.as_str()),
            None => format!("{NAME}: keeping every event"),
        });
        Ok(Transformer { min_severity })
    }

    /// The fields this transform reads; the host fills only these, and
    /// reading another one is an error that names it. The event's key,
    /// times, operation and severity, and the record's topic and key, are
    /// always there. Others: "title", "description", "event-type",
    /// "rule-id", "data" (or one field: "data.deviceId"), "components",
    /// "metadata", "json" (the whole event), "devices" and "interfaces"
    /// (CloudVision's inventory and tags), "link", and the record's "value"
    /// and "headers".
    fn reads(&self) -> Vec<String> {
        cvp_transform_sdk::fields(&[])
    }

    /// Called once per event with the record produced for it so far (the
    /// first transform in a chain gets the default one: the configured
    /// topic, key = event key, value = the event as JSON, no headers).
    ///
    /// Return `Output::Keep` to pass it on unchanged, `Output::one(patch)`
    /// to change it, `Output::Records(patches)` to fan out (e.g.
    /// `Patch::copy_to("other-topic")`), `Output::Drop` to drop it, or
    /// `Err(message)` when this event cannot be transformed (the host
    /// applies `on_error`).
    fn transform(&mut self, event: &Event, _record: &Record) -> Result<Output, String> {
        // Filter. `severity_at_least` also keeps events whose severity is
        // newer than this contract, rather than dropping what it cannot name.
        if let Some(min) = self.min_severity {
            if !event.severity_at_least(min) {
                return Ok(Output::Drop);
            }
        }

        // Rewrite: a patch names only what changes, e.g.
        //   Patch::new().key(event.title().unwrap_or_default())  (declare "title")
        //   .topic("alerts").value(...).null_value().remove_header("k")
        Ok(Output::one(Patch::new().header("x-transform", NAME)))
    }
}

export_transform!(Transformer);
