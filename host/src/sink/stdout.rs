//! Prints each record instead of producing it: the demo's default, and a
//! quick way to see what a transform chain does.

use super::{failed, Delivery, SharedAcks, SinkStats};
use crate::transform::bindings::KafkaRecord;
use crate::transform::Outcome;
use anyhow::Result;
use std::io::Write;
use tokio::sync::mpsc;

#[derive(Default)]
pub struct StdoutSink;

impl StdoutSink {
    pub async fn run(
        self,
        mut rx: mpsc::Receiver<Vec<Delivery>>,
        acks: SharedAcks,
    ) -> Result<SinkStats> {
        let mut stats = SinkStats::default();
        let stdout = std::io::stdout();
        while let Some(batch) = rx.recv().await {
            // Printed is as delivered as this sink gets.
            {
                let mut acks = acks.lock();
                for d in &batch {
                    acks.expect(d.seq, 0);
                }
            }
            let mut out = stdout.lock();
            for d in batch {
                stats.events += 1;
                match d.outcome {
                    Outcome::Produce(records) if records.is_empty() => stats.dropped += 1,
                    Outcome::Produce(records) => {
                        for r in records {
                            stats.produced += 1;
                            let _ = writeln!(out, "{}", describe(&r));
                        }
                    }
                    Outcome::Failed {
                        transform,
                        error,
                        policy,
                        ..
                    } => {
                        failed(&d.event_key, &transform, &error, policy, &mut stats)?;
                        if policy == crate::config::OnError::DeadLetter {
                            let _ = writeln!(
                                out,
                                "dead letter: event {} ({transform}: {error})",
                                d.event_key
                            );
                        }
                    }
                }
            }
            let _ = out.flush();
        }
        Ok(stats)
    }
}

/// One record as a line of text: `TOPIC  key="..."  value="..."  headers=[k=v]`.
pub fn describe(r: &KafkaRecord) -> String {
    let text = |b: &Option<Vec<u8>>| match b {
        Some(b) => format!("{:?}", String::from_utf8_lossy(b)),
        None => "null".to_string(),
    };
    let headers: Vec<String> = r
        .headers
        .iter()
        .map(|h| format!("{}={}", h.key, String::from_utf8_lossy(&h.value)))
        .collect();
    format!(
        "{}  key={}  value={}{}",
        r.topic,
        text(&r.key),
        text(&r.value),
        if headers.is_empty() {
            String::new()
        } else {
            format!("  headers=[{}]", headers.join(", "))
        }
    )
}
