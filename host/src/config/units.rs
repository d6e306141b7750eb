//! Value types shared by every component's config: sizes (`64MiB`) and YAML
//! scalars taken as text (`linger.ms: 5` and `"5"` alike). Durations use the
//! `humantime-serde` crate (`500ms`, `10s`, `2m`).

use serde::Deserialize;

/// A YAML scalar written as text, so `linger.ms: 5` and `"5"` both work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalarText(pub String);

impl<'de> Deserialize<'de> for ScalarText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_yaml::Value::deserialize(d)? {
            serde_yaml::Value::String(s) => Ok(ScalarText(s)),
            serde_yaml::Value::Number(n) => Ok(ScalarText(n.to_string())),
            serde_yaml::Value::Bool(b) => Ok(ScalarText(b.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "expected a string, number or boolean, found {}",
                yaml_kind(&other)
            ))),
        }
    }
}

fn yaml_kind(v: &serde_yaml::Value) -> &'static str {
    match v {
        serde_yaml::Value::Null => "nothing",
        serde_yaml::Value::Bool(_) => "a boolean",
        serde_yaml::Value::Number(_) => "a number",
        serde_yaml::Value::String(_) => "a string",
        serde_yaml::Value::Sequence(_) => "a list",
        serde_yaml::Value::Mapping(_) => "a map",
        serde_yaml::Value::Tagged(_) => "a tagged value",
    }
}

/// Sizes such as `64MiB`, `512KiB`, `1GiB`, or a plain number of bytes,
/// for `#[serde(deserialize_with = "...")]`.
pub fn de_size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let ScalarText(s) = ScalarText::deserialize(d)?;
    parse_size(&s)
        .ok_or_else(|| serde::de::Error::custom(format!("bad size {s:?}; use e.g. 64MiB")))
}

pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "KB" => 1 << 10,
        "MiB" | "M" | "MB" => 1 << 20,
        "GiB" | "G" | "GB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// For `#[serde(default = "...")]` on switches that are on unless turned off.
pub fn enabled() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64MiB"), Some(64 << 20));
        assert_eq!(parse_size("1024"), Some(1024));
        assert_eq!(parse_size("12 parsecs"), None);
    }
}
