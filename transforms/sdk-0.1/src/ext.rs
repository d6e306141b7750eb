//! Helpers on the generated types. They live in this crate, so plain inherent
//! impls work and no extension trait needs importing.

use crate::{Event, Header, Severity};

impl Event {
    /// The value of the event type's field `name` in `data`, if present.
    pub fn data_get(&self, name: &str) -> Option<&str> {
        self.data
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the event is at least as severe as `min`.
    ///
    /// A severity newer than this contract (a `severity_code` this version
    /// does not name) counts as at least as severe as anything: better to
    /// pass on an alert nobody understands than to drop it.
    pub fn severity_at_least(&self, min: Severity) -> bool {
        let unknown = self.severity == Severity::Unspecified && self.severity_code != 0;
        unknown || self.severity >= min
    }
}

impl Severity {
    /// Every named severity, least severe first (the order `Ord` uses).
    pub const ALL: [Severity; 6] = [
        Severity::Unspecified,
        Severity::Debug,
        Severity::Info,
        Severity::Warning,
        Severity::Error,
        Severity::Critical,
    ];

    /// The lower-case name: `unspecified`, `debug`, `info`, `warning`,
    /// `error` or `critical`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Unspecified => "unspecified",
            Severity::Debug => "debug",
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }

    /// Parses a name as [`Severity::as_str`] gives it, ignoring case.
    pub fn parse(name: &str) -> Option<Severity> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(name.trim()))
    }

    /// The `EventSeverity` protobuf number.
    pub fn code(self) -> i32 {
        match self {
            Severity::Unspecified => 0,
            Severity::Info => 1,
            Severity::Warning => 2,
            Severity::Error => 3,
            Severity::Critical => 4,
            Severity::Debug => 5,
        }
    }
}

impl Header {
    /// A header whose value is the UTF-8 bytes of `value`.
    pub fn text(key: impl Into<String>, value: impl AsRef<str>) -> Header {
        Header {
            key: key.into(),
            value: value.as_ref().as_bytes().to_vec(),
        }
    }

    /// The value as text, if it is UTF-8.
    pub fn value_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.value).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Operation;

    fn event(severity: Severity, code: i32) -> Event {
        Event {
            key: "k".into(),
            timestamp: 0,
            operation: Operation::Updated,
            severity,
            severity_code: code,
            title: String::new(),
            description: String::new(),
            event_type: String::new(),
            rule_id: String::new(),
            data: vec![("a".into(), "1".into()), ("b".into(), "2".into())],
            components: vec![],
            last_updated_time: 0,
            delete_time: 0,
            metadata: vec![],
        }
    }

    #[test]
    fn severity_names_round_trip_and_order() {
        for s in Severity::ALL {
            assert_eq!(Severity::parse(&s.as_str().to_uppercase()), Some(s));
        }
        assert!(Severity::ALL.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(Severity::parse("fatal"), None);
    }

    #[test]
    fn unknown_severity_counts_as_severe() {
        assert!(event(Severity::Unspecified, 7).severity_at_least(Severity::Critical));
        assert!(!event(Severity::Unspecified, 0).severity_at_least(Severity::Info));
        assert!(event(Severity::Error, 3).severity_at_least(Severity::Warning));
        assert!(!event(Severity::Info, 1).severity_at_least(Severity::Warning));
        // DEBUG (code 5) is the least severe, not "newer than critical".
        assert!(!event(Severity::Debug, 5).severity_at_least(Severity::Info));
    }

    #[test]
    fn data_and_headers() {
        assert_eq!(event(Severity::Info, 1).data_get("b"), Some("2"));
        assert_eq!(event(Severity::Info, 1).data_get("c"), None);
        let h = Header::text("k", "vé");
        assert_eq!(h.value, "vé".as_bytes());
        assert_eq!(h.value_str(), Some("vé"));
    }
}
