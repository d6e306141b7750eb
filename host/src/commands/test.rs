//! `cvp-stream test --config FILE`: the config's `tests:` cases, each an
//! event run through the configured transform chain and compared with the
//! records it should produce. Non-zero exit on any mismatch, so a CI job can
//! guard a pipeline the way `vector test` does.

use crate::config::{Config, ExpectedRecord, SeedArgs, TestCase};
use crate::event::SourceEvent;
use crate::sinks::describe;
use crate::transforms::TransformStage;
use anyhow::{anyhow, bail, Result};
use clap::Args;
use cvp_transform_engine::{Failure, KafkaRecord, Outcome};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct TestArgs {
    /// The YAML config file.
    #[arg(long, short = 'c')]
    pub config: PathBuf,
}

pub fn test(args: TestArgs) -> Result<()> {
    let config = Config::load(&args.config, &SeedArgs::default())?;
    run(&config)
}

fn run(config: &Config) -> Result<()> {
    if config.tests.is_empty() {
        bail!("the config has no tests: section (see config/example.yaml)");
    }
    let mut chain = TransformStage::load(
        &config.transforms,
        &config.pipeline,
        config.sink.default_topic(),
    )?;
    let mut failed = 0;
    for case in &config.tests {
        let event = event_of(case)?;
        let outcome = chain.process(std::slice::from_ref(&event)).pop();
        match outcome.map(|o| check(case, o)) {
            Some(Ok(())) => println!("ok    {}", case.name),
            Some(Err(why)) => {
                failed += 1;
                println!("FAIL  {}: {why}", case.name);
            }
            None => bail!("the chain returned nothing for {:?}", case.name),
        }
    }
    let total = config.tests.len();
    println!("{} passed, {failed} failed", total - failed);
    if failed > 0 {
        bail!("{failed} of {total} pipeline tests failed");
    }
    Ok(())
}

fn event_of(case: &TestCase) -> Result<SourceEvent> {
    let json = serde_json::to_string(&serde_json::json!({ "value": case.event }))?;
    let resp = cvp_proto::json::parse_stream_response(&json)
        .map_err(|e| anyhow!("tests: {:?}: event: {e}", case.name))?;
    Ok(SourceEvent {
        event: std::sync::Arc::new(resp.value.unwrap_or_default()),
        op: case.operation,
        seq: 0,
        enrichment: None,
    })
}

fn check(case: &TestCase, outcome: Outcome) -> Result<(), String> {
    match (outcome, &case.expect, &case.expect_error) {
        (
            Outcome::Failed(Failure {
                transform, error, ..
            }),
            _,
            Some(want),
        ) if error.contains(want.as_str()) => {
            let _ = transform;
            Ok(())
        }
        (
            Outcome::Failed(Failure {
                transform, error, ..
            }),
            _,
            _,
        ) => Err(format!("{transform} failed: {error}")),
        (Outcome::Produce(records), _, Some(want)) => Err(format!(
            "expected an error containing {want:?}, got {} record(s){}",
            records.len(),
            listing(&records)
        )),
        (Outcome::Produce(records), Some(expect), None) => {
            if records.len() != expect.len() {
                return Err(format!(
                    "expected {} record(s), got {}{}",
                    expect.len(),
                    records.len(),
                    listing(&records)
                ));
            }
            for (i, (got, want)) in records.iter().zip(expect).enumerate() {
                matches(got, want)
                    .map_err(|why| format!("record {}: {why}; got {}", i + 1, describe(got)))?;
            }
            Ok(())
        }
        (Outcome::Produce(_), None, None) => Err("no expectation".into()),
    }
}

fn listing(records: &[KafkaRecord]) -> String {
    records
        .iter()
        .map(|r| format!("\n        {}", describe(r)))
        .collect()
}

/// How a failure reads: `"text"`, or `null` for a Kafka null (never Rust's
/// `Some("...")`).
fn shown(b: &Option<Vec<u8>>) -> String {
    match b {
        Some(b) => format!("{:?}", String::from_utf8_lossy(b)),
        None => "null".into(),
    }
}

fn matches(got: &KafkaRecord, want: &ExpectedRecord) -> Result<(), String> {
    let text = |b: &Option<Vec<u8>>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
    if let Some(topic) = &want.topic {
        if &got.topic != topic {
            return Err(format!("topic is {:?}, expected {topic:?}", got.topic));
        }
    }
    if let Some(key) = &want.key {
        if text(&got.key).as_ref() != Some(key) {
            return Err(format!("key is {}, expected {key:?}", shown(&got.key)));
        }
    }
    if let Some(value) = &want.value {
        if text(&got.value).as_ref() != Some(value) {
            return Err(format!(
                "value is {}, expected {value:?}",
                shown(&got.value)
            ));
        }
    }
    if let Some(expected) = &want.value_json {
        let expected = serde_json::to_value(expected).map_err(|e| e.to_string())?;
        let actual: Option<serde_json::Value> = got
            .value
            .as_deref()
            .and_then(|v| serde_json::from_slice(v).ok());
        match actual {
            None => return Err(format!("value is not JSON: {}", shown(&got.value))),
            Some(actual) => {
                let mut diffs = Vec::new();
                json_diff("", &expected, &actual, &mut diffs);
                if !diffs.is_empty() {
                    return Err(format!("value_json differs: {}", diffs.join("; ")));
                }
            }
        }
    }
    // `headers:` is the whole set: a header the transform added and the
    // test does not name is a difference too.
    if let Some(headers) = &want.headers {
        let actual: std::collections::BTreeMap<String, String> = got
            .headers
            .iter()
            .map(|h| {
                (
                    h.key.clone(),
                    String::from_utf8_lossy(&h.value).into_owned(),
                )
            })
            .collect();
        let mut diffs = Vec::new();
        for (k, v) in headers {
            match actual.get(k) {
                None => diffs.push(format!("header {k:?} missing (expected {v:?})")),
                Some(a) if a != v => diffs.push(format!("header {k:?} is {a:?}, expected {v:?}")),
                Some(_) => {}
            }
        }
        for (k, a) in &actual {
            if !headers.contains_key(k) {
                diffs.push(format!("header {k:?} = {a:?} not expected"));
            }
        }
        if !diffs.is_empty() {
            return Err(diffs.join("; "));
        }
    }
    Ok(())
}

/// The places where `actual` differs from `expected`, as JSON paths
/// (`.a.b[2]`): a field-level diff instead of two whole documents.
fn json_diff(
    path: &str,
    expected: &serde_json::Value,
    actual: &serde_json::Value,
    out: &mut Vec<String>,
) {
    use serde_json::Value;
    const MOST: usize = 10;
    if out.len() >= MOST {
        return;
    }
    let at = if path.is_empty() { "." } else { path };
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                let p = format!("{path}.{k}");
                match a.get(k) {
                    Some(av) => json_diff(&p, ev, av, out),
                    None => out.push(format!("{p} missing (expected {ev})")),
                }
            }
            for (k, av) in a {
                if !e.contains_key(k) {
                    out.push(format!("{path}.{k} = {av} not expected"));
                }
            }
        }
        (Value::Array(e), Value::Array(a)) if e.len() == a.len() => {
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                json_diff(&format!("{path}[{i}]"), ev, av, out);
            }
        }
        (e, a) if e != a => out.push(format!("{at} is {a}, expected {e}")),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_differences_are_named_by_path() {
        let e = serde_json::json!({"a": 1, "b": {"c": [1, 2]}, "d": "x"});
        let a = serde_json::json!({"a": 2, "b": {"c": [1, 3]}, "e": true});
        let mut out = Vec::new();
        json_diff("", &e, &a, &mut out);
        assert_eq!(
            out,
            vec![
                ".a is 2, expected 1",
                ".b.c[1] is 3, expected 2",
                ".d missing (expected \"x\")",
                ".e = true not expected",
            ]
        );
    }
}
