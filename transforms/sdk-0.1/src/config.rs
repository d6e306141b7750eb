use serde::de::DeserializeOwned;

use crate::bindings::cvp_stream::transform::host;

/// The transform's `config:` map from the host's YAML file.
///
/// Scalars arrive as their text (`42`, `true`, `warning`); lists and maps as
/// JSON text, to be read with [`Config::get_json`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    entries: Vec<(String, String)>,
}

impl Config {
    /// Asks the host for the configuration.
    pub fn from_host() -> Self {
        Self {
            entries: host::config(),
        }
    }

    /// A configuration from given pairs, e.g. to unit-test a transform's
    /// logic natively, without a host.
    pub fn from_pairs<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> Self
    where
        K: Into<String>,
        V: Into<String>,
    {
        Self {
            entries: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// The value of `key` as text, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key` as text, or `default` if unset.
    pub fn get_or<'a>(&'a self, key: &str, default: &'a str) -> &'a str {
        self.get(key).unwrap_or(default)
    }

    /// The value of `key` parsed as JSON: `Ok(None)` if unset, `Err` naming
    /// the key if it does not parse as `T`.
    pub fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, String> {
        self.get(key)
            .map(|text| serde_json::from_str(text).map_err(|e| format!("config `{key}`: {e}")))
            .transpose()
    }

    /// Every key and value, in the host's order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::Config;

    #[test]
    fn lookups() {
        let c = Config::from_pairs([("a", "1"), ("routes", r#"{"X":"t"}"#), ("bad", "{")]);
        assert_eq!(c.get("a"), Some("1"));
        assert_eq!(c.get("z"), None);
        assert_eq!(c.get_or("z", "d"), "d");
        assert_eq!(c.get_json::<u32>("a"), Ok(Some(1)));
        assert_eq!(c.get_json::<u32>("z"), Ok(None));
        let routes: BTreeMap<String, String> = c.get_json("routes").unwrap().unwrap();
        assert_eq!(routes["X"], "t");
        assert!(c
            .get_json::<BTreeMap<String, String>>("bad")
            .unwrap_err()
            .contains("`bad`"));
    }
}
