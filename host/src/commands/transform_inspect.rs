//! `cvp-stream transform inspect`: prints events exactly as a transform of
//! contract 0.2 receives them, every field by its WIT name, for the fields
//! a component declares (or `--reads`, or all of them). What to write a
//! transform against, without reading the WIT file first.

use super::transform_test::{load_events, EventsArg};
use crate::transforms::{convert, PipelineConfig, TransformConfig, TransformStage};
use anyhow::{anyhow, Result};
use clap::Args;
use cvp_transform_engine::{Contract, EventView, Reads, TagView};
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct TransformInspectArgs {
    /// A component (.wasm): show the events as it receives them (only the
    /// fields it declared are filled). Without one, every field.
    pub component: Option<PathBuf>,
    #[command(flatten)]
    pub events: EventsArg,
    /// Show the events as a transform that declared these fields receives
    /// them, e.g. `--reads title,data.deviceId`.
    #[arg(long, value_delimiter = ',', conflicts_with = "component")]
    pub reads: Vec<String>,
    /// How many events to show.
    #[arg(long, default_value_t = 3)]
    pub limit: usize,
    /// The topic of the record the transform receives.
    #[arg(long, default_value = "cvp-events")]
    pub topic: String,
}

pub fn run(args: TransformInspectArgs) -> Result<()> {
    let reads = match (&args.component, args.reads.is_empty()) {
        (Some(path), _) => {
            let name = path
                .file_stem()
                .map_or("transform".into(), |s| s.to_string_lossy().into_owned());
            let t = TransformConfig::new(name, path.clone());
            let stage = TransformStage::load(
                std::slice::from_ref(&t),
                &PipelineConfig::default(),
                &args.topic,
            )?;
            let (_, contract, reads) = stage.reads().remove(0);
            if contract == Contract::V01 {
                println!("# {} is built for contract 0.1: it receives every field, as the 0.1 record (wit/0.1/transform.wit)", path.display());
            }
            reads
        }
        (None, false) => Reads::parse(&args.reads).map_err(|e| anyhow!("--reads {e}"))?,
        (None, true) => Reads::all(),
    };
    println!("# {}", declared(&reads));
    let events = load_events(&args.events)?;
    for ev in events.iter().take(args.limit) {
        let view = convert::view(ev, &reads);
        let input = json!({
            "event": event_json(&view),
            "record": {
                "topic": args.topic,
                "key": ev.key(),
                "value": if reads.value { json!("(the event as JSON, unless pipeline.default_value: none)") } else { Value::Null },
                "headers": [],
            },
        });
        println!("{}", serde_json::to_string_pretty(&input)?);
    }
    Ok(())
}

/// Which fields are filled, in words.
fn declared(r: &Reads) -> String {
    let mut names: Vec<String> = [
        ("title", r.title),
        ("description", r.description),
        ("event-type", r.event_type),
        ("rule-id", r.rule_id),
        ("components", r.components),
        ("metadata", r.metadata),
        ("json", r.json),
        ("devices", r.devices),
        ("interfaces", r.interfaces),
        ("link", r.link),
        ("value", r.value),
        ("headers", r.headers),
    ]
    .into_iter()
    .filter(|(_, on)| *on)
    .map(|(n, _)| n.to_string())
    .collect();
    match &r.data {
        cvp_transform_engine::DataReads::None => {}
        cvp_transform_engine::DataReads::All => names.push("data".into()),
        cvp_transform_engine::DataReads::Named(d) => {
            names.extend(d.iter().map(|n| format!("data.{n}")))
        }
    }
    format!(
        "reads: {}. key, timestamp, operation, severity, severity-code, last-updated-time and delete-time are always filled; undeclared fields arrive as none (null here).",
        if names.is_empty() { "nothing more".to_string() } else { names.join(", ") }
    )
}

/// An enum case as the WIT file names it (`warning`), from its Rust
/// debug form (`Severity::Warning`).
fn case(v: impl std::fmt::Debug) -> String {
    let debug = format!("{v:?}");
    let name = debug.rsplit("::").next().unwrap_or(&debug);
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('-');
        }
        out.extend(c.to_lowercase());
    }
    out
}

fn pairs(p: &[(&str, &str)]) -> Value {
    Value::Array(p.iter().map(|(k, v)| json!([k, v])).collect())
}

fn tags(t: &[TagView<'_>]) -> Value {
    Value::Array(
        t.iter()
            .map(|t| json!({"label": t.label, "value": t.value, "creator": case(t.creator)}))
            .collect(),
    )
}

/// The WIT `event` record as JSON, field names as the WIT file spells them.
pub fn event_json(v: &EventView<'_>) -> Value {
    json!({
        "key": v.key,
        "timestamp": v.timestamp,
        "operation": case(v.operation),
        "severity": case(v.severity),
        "severity-code": v.severity_code,
        "last-updated-time": v.last_updated_time,
        "delete-time": v.delete_time,
        "title": v.title,
        "description": v.description,
        "event-type": v.event_type,
        "rule-id": v.rule_id,
        "data": v.data.as_deref().map(pairs),
        "components": v.components.as_ref().map(|c| c.iter().map(|c| json!({"kind": c.kind, "fields": pairs(&c.fields)})).collect::<Vec<_>>()),
        "metadata": v.metadata.as_ref().map(|m| m.iter().map(|g| pairs(g)).collect::<Vec<_>>()),
        "json": v.json.as_ref().map(|j| String::from_utf8_lossy(j).into_owned()),
        "devices": v.devices.as_ref().map(|d| d.iter().map(|d| json!({
            "id": d.id,
            "hostname": d.hostname,
            "fqdn": d.fqdn,
            "model": d.model,
            "software-version": d.software_version,
            "hardware-revision": d.hardware_revision,
            "system-mac-address": d.system_mac_address,
            "streaming-status": case(d.streaming_status),
            "tags": tags(&d.tags),
        })).collect::<Vec<_>>()),
        "interfaces": v.interfaces.as_ref().map(|i| i.iter().map(|i| json!({
            "device-id": i.device_id,
            "interface-id": i.interface_id,
            "tags": tags(&i.tags),
        })).collect::<Vec<_>>()),
        "link": v.link,
    })
}
