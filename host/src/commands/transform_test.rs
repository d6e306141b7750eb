//! `cvp-stream transform test`: runs one component over recorded events and
//! prints what it would produce, without CVP or Kafka. The events go through
//! the same merge as the live source and the same chain as `run`.

use crate::event::SourceEvent;
use crate::sinks::describe;
use crate::sinks::stdout::printable;
use crate::sources::cvp::EventCache;
use crate::transforms::{PipelineConfig, TransformConfig, TransformStage};
use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use cvp_transform_engine::{Failure, Outcome};
use std::io::Write;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct TransformTestArgs {
    /// The component (.wasm), or builtin:title-to-key.
    pub component: PathBuf,
    /// A `config:` entry for the transform, KEY=VALUE; VALUE is YAML, so
    /// `sites={JPE1: dc1}` gives a map. Repeatable.
    #[arg(long = "config", value_name = "KEY=VALUE")]
    pub config: Vec<String>,
    #[command(flatten)]
    pub events: EventsArg,
    /// The topic of the record the transform receives.
    #[arg(long, default_value = "cvp-events")]
    pub topic: String,
    /// Print each value on the lines after its record, JSON indented.
    #[arg(long, conflicts_with = "jsonl")]
    pub pretty: bool,
    /// One JSON object per record (or drop, or failure), for tools.
    #[arg(long)]
    pub jsonl: bool,
}

/// Where the events come from (`transform test` and `transform inspect`).
#[derive(Args, Debug)]
pub struct EventsArg {
    /// JSONL of EventStreamResponse (protobuf JSON), e.g. a CVP recording;
    /// default: a built-in set of sample events.
    #[arg(long)]
    pub events: Option<PathBuf>,
}

/// The events `transform test` uses when given no `--events`.
const BUILT_IN_EVENTS: &str = include_str!("../../../simulator/testdata/sample-events.jsonl");

/// The events `--events` names (or the built-in ones), merged as `run`
/// merges CVP's stream.
pub fn load_events(arg: &EventsArg) -> Result<Vec<SourceEvent>> {
    let (source, text) = match &arg.events {
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
    replay(&text, &source)
}

pub fn run(args: TransformTestArgs) -> Result<()> {
    let transform = transform_for(&args)?;
    let pipeline = PipelineConfig::default();
    let mut chain = TransformStage::load(std::slice::from_ref(&transform), &pipeline, &args.topic)?;
    let events = load_events(&args.events)?;
    // In batches of pipeline.batch_size, as `run` hands them over.
    let outcomes: Vec<Outcome> = events
        .chunks(pipeline.batch_size)
        .flat_map(|batch| chain.process(batch))
        .collect();

    let mut out = std::io::stdout().lock();
    let mut failures = 0;
    for (ev, outcome) in events.iter().zip(outcomes) {
        let op = format!("{:?}", ev.op).to_uppercase();
        if let Outcome::Failed(_) = outcome {
            failures += 1;
        }
        if args.jsonl {
            for line in jsonl(ev.key(), &op, outcome) {
                writeln!(out, "{line}")?;
            }
            continue;
        }
        match outcome {
            Outcome::Produce(records) if records.is_empty() => {
                writeln!(out, "{} {op}: dropped", printable(ev.key()))?
            }
            Outcome::Produce(records) => {
                for r in records {
                    if args.pretty {
                        let mut head = r.clone();
                        head.value = None;
                        let line = describe(&head);
                        let line = line.strip_suffix("  value=null").unwrap_or(&line);
                        writeln!(out, "{} {op}: {line}", printable(ev.key()))?;
                        writeln!(out, "{}", pretty_value(r.value.as_deref()))?;
                    } else {
                        writeln!(out, "{} {op}: {}", printable(ev.key()), describe(&r))?;
                    }
                }
            }
            Outcome::Failed(Failure {
                transform, error, ..
            }) => {
                writeln!(
                    out,
                    "{} {op}: error in {transform}: {}",
                    printable(ev.key()),
                    printable(&error)
                )?;
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

/// The transform with its `--config k=v` values, which are YAML, so
/// `sites={a: b}` and `fields=[key, title]` give maps and lists.
fn transform_for(args: &TransformTestArgs) -> Result<TransformConfig> {
    let name = args
        .component
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "transform".into());
    let mut transform = TransformConfig::new(name, args.component.clone());
    for kv in &args.config {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("--config {kv:?}: expected KEY=VALUE"))?;
        let value: serde_yaml::Value =
            serde_yaml::from_str(v).unwrap_or_else(|_| serde_yaml::Value::String(v.to_string()));
        transform.config.insert(k.to_string(), value);
    }
    transform.validate()?;
    Ok(transform)
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

/// A value on lines of its own, indented: JSON pretty-printed, other text
/// as it is (escaped), `null` for a null value.
fn pretty_value(value: Option<&[u8]>) -> String {
    let Some(bytes) = value else {
        return "    value: null".into();
    };
    let text = match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(json) => serde_json::to_string_pretty(&json).unwrap_or_default(),
        Err(_) => printable(&String::from_utf8_lossy(bytes)).into_owned(),
    };
    let mut out = String::from("    value:");
    for line in text.lines() {
        out.push_str("\n      ");
        out.push_str(line);
    }
    out
}

/// One JSON object per record, drop or failure: the value as JSON when it
/// is JSON, else as text; headers as an object of text values.
fn jsonl(event: &str, op: &str, outcome: Outcome) -> Vec<String> {
    use serde_json::{json, Value};
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match outcome {
        Outcome::Produce(records) if records.is_empty() => {
            vec![json!({"event": event, "operation": op, "dropped": true}).to_string()]
        }
        Outcome::Produce(records) => records
            .into_iter()
            .map(|r| {
                let value = r.value.as_deref().map(|v| {
                    serde_json::from_slice::<Value>(v).unwrap_or_else(|_| Value::String(text(v)))
                });
                let headers: serde_json::Map<String, Value> = r
                    .headers
                    .iter()
                    .map(|h| (h.key.clone(), Value::String(text(&h.value))))
                    .collect();
                json!({
                    "event": event,
                    "operation": op,
                    "topic": r.topic,
                    "key": r.key.as_deref().map(text),
                    "headers": headers,
                    "value": value,
                })
                .to_string()
            })
            .collect(),
        Outcome::Failed(f) => vec![json!({
            "event": event,
            "operation": op,
            "error": {"transform": f.transform, "reason": f.reason, "message": f.error},
        })
        .to_string()],
    }
}
