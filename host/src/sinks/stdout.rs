//! Prints each record instead of producing it: the demo's default, and a
//! quick way to see what a transform chain does.

use crate::delivery::{policy, Delivery, DeliveryStats, Ledger, OnError, Outcome};
use anyhow::Result;
use cvp_transform_engine::KafkaRecord;
use std::io::Write;
use tokio::sync::mpsc;

#[derive(Default)]
pub struct StdoutSink;

impl StdoutSink {
    pub async fn run(
        self,
        mut rx: mpsc::Receiver<Vec<Delivery>>,
        mut ledger: Ledger,
    ) -> Result<DeliveryStats> {
        let stdout = std::io::stdout();
        while let Some(batch) = rx.recv().await {
            // Printed is as delivered as this sink gets.
            for d in &batch {
                ledger.expect(d.seq, 0);
            }
            let stats = &mut ledger.stats;
            let mut out = stdout.lock();
            for d in batch {
                stats.events += 1;
                match d.outcome {
                    Outcome::Records(records) if records.is_empty() => stats.dropped += 1,
                    Outcome::Records(records) => {
                        for r in records {
                            stats.produced += 1;
                            let _ = writeln!(out, "{}", describe(&r));
                        }
                    }
                    Outcome::Failed(f) => {
                        policy::transform_failed(&d.event_key, &f, stats)?;
                        if f.policy == OnError::DeadLetter {
                            let _ = writeln!(
                                out,
                                "dead letter: event {} ({}: {})",
                                d.event_key, f.transform, f.error
                            );
                        }
                    }
                }
            }
            let _ = out.flush();
        }
        Ok(ledger.finish())
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
