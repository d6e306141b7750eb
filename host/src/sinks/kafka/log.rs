//! librdkafka's own log lines, into our log. While a broker is down it
//! repeats the same complaint every few hundred milliseconds per broker
//! thread; one line per distinct message per minute says the same thing.

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::ProducerContext;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const REPEAT_EVERY: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct KafkaContext {
    last_said: Mutex<HashMap<String, Instant>>,
}

impl KafkaContext {
    /// True when `text` was not logged within the last minute.
    fn fresh(&self, text: &str) -> bool {
        let Ok(mut seen) = self.last_said.lock() else {
            return true;
        };
        let now = Instant::now();
        // Bounded: old entries go once they may be said again.
        if seen.len() > 256 {
            seen.retain(|_, at| now.duration_since(*at) < REPEAT_EVERY);
        }
        match seen.get(text) {
            Some(at) if now.duration_since(*at) < REPEAT_EVERY => false,
            _ => {
                seen.insert(text.to_string(), now);
                true
            }
        }
    }
}

impl ClientContext for KafkaContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        // Broker names and counters vary between repeats of one complaint;
        // the facility plus the message without its "host:port/id: " prefix
        // is what repeats.
        let gist = log_message.split_once(": ").map_or(log_message, |(_, m)| m);
        if !self.fresh(&format!("{fac} {gist}")) {
            return;
        }
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(target: "librdkafka", "{fac}: {log_message}")
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(target: "librdkafka", "{fac}: {log_message}")
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", "{fac}: {log_message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(target: "librdkafka", "{fac}: {log_message}"),
        }
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if self.fresh(reason) {
            tracing::error!(target: "librdkafka", "{error}: {reason}");
        }
    }
}

impl ProducerContext for KafkaContext {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &DeliveryResult<'_>, _: ()) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_suppressed() {
        let c = KafkaContext::default();
        assert!(c.fresh("a"));
        assert!(!c.fresh("a"));
        assert!(c.fresh("b"));
    }
}
