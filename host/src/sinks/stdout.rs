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

/// One record as a line of text:
/// `TOPIC  key="..."  headers=[k=v]  value="..."`. The value comes last: it
/// is the long part, and the rest stays readable before it.
pub fn describe(r: &KafkaRecord) -> String {
    let text = |b: &Option<Vec<u8>>| match b {
        Some(b) => format!("{:?}", String::from_utf8_lossy(b)),
        None => "null".to_string(),
    };
    format!(
        "{}  key={}{}  value={}",
        printable(&r.topic),
        text(&r.key),
        describe_headers(r),
        text(&r.value),
    )
}

/// `  headers=[k=v, ...]`, or nothing when there are none.
pub fn describe_headers(r: &KafkaRecord) -> String {
    if r.headers.is_empty() {
        return String::new();
    }
    let headers: Vec<String> = r
        .headers
        .iter()
        .map(|h| {
            format!(
                "{}={}",
                printable(&h.key),
                printable(&String::from_utf8_lossy(&h.value))
            )
        })
        .collect();
    format!("  headers=[{}]", headers.join(", "))
}

/// `s` with control characters escaped (`\n`, `\u{1b}`, ...): what a
/// transform chose must not move the cursor, colour or clear a terminal, or
/// forge a line of output.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    std::borrow::Cow::Owned(
        s.chars()
            .map(|c| {
                if c.is_control() {
                    c.escape_default().to_string()
                } else {
                    c.to_string()
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use cvp_transform_engine::Header;

    /// Topics and headers a transform chose print escaped; ordinary text
    /// prints as it is.
    #[test]
    fn control_characters_are_escaped() {
        let r = KafkaRecord {
            topic: "t\u{1b}[2J\nforged".into(),
            key: Some(b"k".to_vec()),
            value: None,
            headers: vec![Header {
                key: "h\r".into(),
                value: b"v\0".to_vec(),
            }],
        };
        let line = describe(&r);
        assert!(!line.chars().any(char::is_control), "{line:?}");
        assert_eq!(
            line,
            "t\\u{1b}[2J\\nforged  key=\"k\"  headers=[h\\r=v\\u{0}]  value=null"
        );
        assert_eq!(printable("plain: ü"), "plain: ü");
    }
}
