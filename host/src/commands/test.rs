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

fn matches(got: &KafkaRecord, want: &ExpectedRecord) -> Result<(), String> {
    let text = |b: &Option<Vec<u8>>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
    if let Some(topic) = &want.topic {
        if &got.topic != topic {
            return Err(format!("topic is {:?}, expected {topic:?}", got.topic));
        }
    }
    if let Some(key) = &want.key {
        if text(&got.key).as_ref() != Some(key) {
            return Err(format!("key is {:?}, expected {key:?}", text(&got.key)));
        }
    }
    if let Some(value) = &want.value {
        if text(&got.value).as_ref() != Some(value) {
            return Err(format!(
                "value is {:?}, expected {value:?}",
                text(&got.value)
            ));
        }
    }
    if let Some(expected) = &want.value_json {
        let expected = serde_json::to_value(expected).map_err(|e| e.to_string())?;
        let actual: Option<serde_json::Value> = got
            .value
            .as_deref()
            .and_then(|v| serde_json::from_slice(v).ok());
        if actual.as_ref() != Some(&expected) {
            return Err(format!("value is not the JSON {expected}"));
        }
    }
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
        if &actual != headers {
            return Err(format!("headers are {actual:?}, expected {headers:?}"));
        }
    }
    Ok(())
}
