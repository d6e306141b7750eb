//! {{name}}: a cvp-stream transform.
//!
//! As generated, it passes every record on with a header
//! `x-transform: {{name}}` added, and drops events less severe than the
//! `min_severity` config key when one is given. Change `transform` below to
//! make it do what you need; the guide is transforms/README.md in the
//! cvp-stream repository.

use cvp_transform_sdk::{
    export_transform, log, Config, Event, Header, KafkaRecord, Severity, Transform,
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

    /// Called once per event with the record produced for it so far (the
    /// first transform in a chain gets the default one: the configured topic,
    /// key = event key, value = the event as JSON, no headers).
    ///
    /// Return `Ok(vec![record])` to pass it on (changed or not), `Ok(vec![])`
    /// to drop it, several records to fan out, or `Err(message)` when this
    /// event cannot be transformed (the host applies `on_error`). Do not
    /// panic: a panic fails the whole batch and loses the instance's state.
    fn transform(
        &mut self,
        event: &Event,
        mut record: KafkaRecord,
    ) -> Result<Vec<KafkaRecord>, String> {
        // Filter. `severity_at_least` also keeps events whose severity is
        // newer than this contract, rather than dropping what it cannot name.
        if let Some(min) = self.min_severity {
            if !event.severity_at_least(min) {
                return Ok(vec![]);
            }
        }

        // Rewrite. The record's `topic`, `key` and `value` (bytes; `None` is
        // a Kafka null) can be changed here too, e.g.
        //   record.key = Some(event.title.as_bytes().to_vec());
        // The event's fields: event.key, event.severity, event.title,
        // event.description, event.event_type, event.data_get("deviceId"), ...
        record.headers.push(Header::text("x-transform", NAME));

        Ok(vec![record])
    }
}

export_transform!(Transformer);
