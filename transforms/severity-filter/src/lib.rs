//! Drops events less severe than `min_severity`.

use cvp_transform_sdk::{export_transform, Config, Event, Output, Record, Severity, Transform};

struct SeverityFilter {
    min: Severity,
}

impl Transform for SeverityFilter {
    fn new(config: &Config) -> Result<Self, String> {
        let name = config.get_or("min_severity", "warning");
        match Severity::parse(name) {
            // Filtering at "unspecified" would keep everything, which is
            // more likely a typo'd config than an intent.
            Some(min) if min != Severity::Unspecified => Ok(SeverityFilter { min }),
            _ => Err(format!(
                "min_severity: invalid value {name:?} (expected debug, info, warning, error or critical)"
            )),
        }
    }

    /// Severity is always given: it reads nothing more.
    fn reads(&self) -> Vec<String> {
        Vec::new()
    }

    fn transform(&mut self, event: &Event, _record: &Record) -> Result<Output, String> {
        Ok(if event.severity_at_least(self.min) {
            Output::Keep
        } else {
            Output::Drop
        })
    }
}

export_transform!(SeverityFilter);
