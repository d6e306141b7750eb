//! `cvp-stream transform test`: runs one component over recorded events and
//! prints what it would produce, without CVP or Kafka. The events go through
//! the same merge as the live source and the same chain as `run`.

use crate::cli::TransformTestArgs;
use crate::config::{Config, SeedArgs};
use crate::event::SourceEvent;
use crate::source::EventCache;
use crate::transform::{Chain, Outcome};
use anyhow::{anyhow, bail, Context, Result};
use std::collections::BTreeMap;
use std::io::Write;

/// The events `transform test` uses when given no `--events`.
const BUILT_IN_EVENTS: &str = include_str!("../../simulator/testdata/sample-events.jsonl");

pub fn run(args: TransformTestArgs) -> Result<()> {
    let config = config_for(&args)?;
    let mut chain = Chain::load(&config)?;
    let (source, text) = match &args.events {
        Some(path) => (
            path.display().to_string(),
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?,
        ),
        None => (
            "the built-in sample events".to_string(),
            BUILT_IN_EVENTS.to_string(),
        ),
    };
    let events = replay(&text, &source)?;
    // In batches of pipeline.batch_size, as `run` hands them over.
    let outcomes: Vec<Outcome> = events
        .chunks(config.pipeline.batch_size)
        .flat_map(|batch| chain.process(batch))
        .collect();

    let mut out = std::io::stdout().lock();
    let mut failures = 0;
    for (ev, outcome) in events.iter().zip(outcomes) {
        let op = format!("{:?}", ev.op).to_uppercase();
        match outcome {
            Outcome::Produce(records) if records.is_empty() => {
                writeln!(out, "{} {op}: dropped", ev.key())?
            }
            Outcome::Produce(records) => {
                for r in records {
                    writeln!(out, "{} {op}: {}", ev.key(), crate::sink::describe(&r))?;
                }
            }
            Outcome::Failed {
                transform, error, ..
            } => {
                failures += 1;
                writeln!(out, "{} {op}: error in {transform}: {error}", ev.key())?;
            }
        }
    }
    if failures > 0 {
        bail!(
            "the transform failed on {failures} of {} events",
            events.len()
        );
    }
    Ok(())
}

/// A config with just this transform; `--config k=v` values are YAML, so
/// `sites={a: b}` and `fields=[key, title]` give maps and lists.
fn config_for(args: &TransformTestArgs) -> Result<Config> {
    let mut map = BTreeMap::new();
    for kv in &args.config {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("--config {kv:?}: expected KEY=VALUE"))?;
        let value: serde_yaml::Value =
            serde_yaml::from_str(v).unwrap_or_else(|_| serde_yaml::Value::String(v.to_string()));
        map.insert(k.to_string(), value);
    }
    let name = args
        .component
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "transform".into());
    // JSON is YAML: the config map goes in without escaping worries.
    let yaml = format!(
        "source: {{ cvp: {{ address: \"unused:443\", tls: {{ enabled: false }} }} }}\ntransforms:\n  - name: {}\n    path: {}\n    config: {}\nsink: {{ kafka: {{ brokers: unused, topic: {} }} }}\n",
        serde_json::to_string(&name)?,
        serde_json::to_string(&args.component.display().to_string())?,
        serde_json::to_string(&map)?,
        serde_json::to_string(&args.topic)?,
    );
    Config::parse(&yaml, &SeedArgs::default())
}

/// JSONL of EventStreamResponse (protobuf JSON), merged as CVP's stream is
/// merged by `run`. Every operation is kept.
fn replay(text: &str, source: &str) -> Result<Vec<SourceEvent>> {
    let mut cache = EventCache::new(1_000_000);
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let resp = cvp_proto::json::parse_stream_response(line)
            .map_err(|e| anyhow!("{source}:{}: {e}", i + 1))?;
        events.extend(cache.apply(resp));
    }
    if events.is_empty() {
        bail!("{source} holds no events");
    }
    Ok(events)
}
