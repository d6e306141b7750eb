//! Builds CVP's server-side `partial_eq_filter` from the config, so unwanted
//! events never leave CVP.

use super::config::{FilterConfig, SeverityName};
use cvp_proto::event::{Event, EventSeverity};

/// Filters are alternatives (OR); the fields set within one must all match
/// (AND). So the config's lists become their cross product.
pub fn partial_eq_filters(cfg: &FilterConfig) -> Vec<Event> {
    let severities: Vec<Option<i32>> = if cfg.severity.is_empty() {
        vec![None]
    } else {
        cfg.severity
            .iter()
            .map(|s| Some(severity(*s) as i32))
            .collect()
    };
    let types: Vec<Option<&String>> = if cfg.event_type.is_empty() {
        vec![None]
    } else {
        cfg.event_type.iter().map(Some).collect()
    };
    if severities == [None] && types == [None] {
        return Vec::new();
    }
    let mut filters = Vec::new();
    for s in &severities {
        for t in &types {
            filters.push(Event {
                severity: s.unwrap_or(0),
                event_type: t.cloned(),
                ..Default::default()
            });
        }
    }
    filters
}

fn severity(s: SeverityName) -> EventSeverity {
    match s {
        SeverityName::Debug => EventSeverity::Debug,
        SeverityName::Info => EventSeverity::Info,
        SeverityName::Warning => EventSeverity::Warning,
        SeverityName::Error => EventSeverity::Error,
        SeverityName::Critical => EventSeverity::Critical,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_product() {
        let cfg = FilterConfig {
            severity: vec![SeverityName::Error, SeverityName::Critical],
            event_type: vec!["A".into()],
        };
        let f = partial_eq_filters(&cfg);
        assert_eq!(f.len(), 2);
        assert_eq!(f[1].severity, EventSeverity::Critical as i32);
        assert_eq!(f[1].event_type.as_deref(), Some("A"));
        assert!(partial_eq_filters(&FilterConfig::default()).is_empty());
    }
}
