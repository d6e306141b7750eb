//! Helpers on the generated types. They live in this crate, so plain inherent
//! impls work and no extension trait needs importing.

use crate::{Header, Severity};

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

    #[test]
    fn severity_names_round_trip_and_order() {
        for s in Severity::ALL {
            assert_eq!(Severity::parse(&s.as_str().to_uppercase()), Some(s));
        }
        assert!(Severity::ALL.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(Severity::parse("fatal"), None);
    }

    #[test]
    fn headers() {
        let h = Header::text("k", "vé");
        assert_eq!(h.value, "vé".as_bytes());
        assert_eq!(h.value_str(), Some("vé"));
    }
}
