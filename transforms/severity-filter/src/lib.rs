//! Drops events less severe than `min_severity`.

use cvp_transform_sdk::{export_transform, Config, Event, KafkaRecord, Severity, Transform};

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

    fn transform(
        &mut self,
        event: &Event,
        record: KafkaRecord,
    ) -> Result<Vec<KafkaRecord>, String> {
        if event.severity_at_least(self.min) {
            Ok(vec![record])
        } else {
            Ok(vec![])
        }
    }
}

export_transform!(SeverityFilter);
