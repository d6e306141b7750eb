//! What the service counts, for Prometheus. One process-wide set of metrics
//! (`metrics::get()`), recorded where things happen (source, transform
//! chain, sink) and served by `admin.rs`.
//!
//! Hot paths record per batch, not per event, and keep handles to labelled
//! series instead of looking them up each time: a `Family` look-up takes a
//! lock and hashes the labels.

use prometheus_client::encoding::EncodeLabelValue;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

type Labels = Vec<(&'static str, String)>;

/// Where the CVP subscription is: `disconnected`, `syncing` (the initial
/// state is arriving) or `live`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, EncodeLabelValue)]
#[allow(non_camel_case_types)] // label values are lower case on the wire
pub enum StreamState {
    disconnected,
    syncing,
    live,
}

pub struct Metrics {
    registry: Registry,
    pub events_received: Family<Labels, Counter>,
    pub records_produced: Family<Labels, Counter>,
    pub events_dropped: Family<Labels, Counter>,
    pub events_dead_lettered: Family<Labels, Counter>,
    pub transform_failures: Family<Labels, Counter>,
    pub transform_call_duration: Family<Labels, Histogram>,
    pub kafka_queue_depth: Gauge,
    pub kafka_delivery_duration: Histogram,
    pub kafka_delivery_failures: Family<Labels, Counter>,
    pub kafka_broker_up: Gauge,
    /// Every sink alike, labelled `sink` (kafka, nats, mqtt, redis, amqp).
    pub sink_up: Family<Labels, Gauge>,
    pub sink_records_delivered: Family<Labels, Counter>,
    pub sink_delivery_failures: Family<Labels, Counter>,
    pub sink_in_flight: Family<Labels, Gauge>,
    pub cvp_reconnects: Counter,
    stream_state: Family<Vec<(&'static str, StreamState)>, Gauge>,
    checkpoint_lag: Gauge<f64, std::sync::atomic::AtomicU64>,
    last_delivered: Gauge<f64, std::sync::atomic::AtomicU64>,
    ready: Gauge,
    /// Nanoseconds since the epoch of the last event Kafka fully
    /// acknowledged, in order; 0 before the first.
    last_delivered_nanos: AtomicI64,
    transforms_loaded: AtomicBool,
    cvp_live: AtomicBool,
    /// With `exactly_once.standby`: `role{role="active"|"standby"}`, a
    /// state set; absent without it.
    role: Family<Vec<(&'static str, &'static str)>, Gauge>,
    /// 0: no election; 1: standby; 2: active.
    role_now: std::sync::atomic::AtomicU8,
    /// The last checkpoint write failed (cleared by the next that works).
    checkpoint_failing: AtomicBool,
    pub checkpoint_write_failures: Counter,
    /// The configured sink, whose `sink_up` /ready follows; none for the
    /// printing sink.
    sink: std::sync::OnceLock<&'static str>,
    pub cvp_events_future_dated: Counter,
    /// Since when (ns since the epoch) the CVP source has waited for CVP in
    /// a step that should end soon; 0 when it is not (see `cvp_waiting`).
    cvp_waiting_since: AtomicI64,
    /// `source.cvp.stuck_after` in ns; 0 (no source running): never stuck.
    cvp_stuck_after: AtomicI64,
    pub cvp_events_too_large: Counter,
    /// Guest log lines beyond a transform's allowance, not written.
    pub transform_log_lines_suppressed: Family<Labels, Counter>,
    /// Bytes of records the transform stage has handed on and the sink
    /// has not yet taken over (`pipeline.max_pending_bytes` bounds it).
    pub pipeline_pending_bytes: Gauge,
    /// Devices the enrichment store holds (inventory or tags).
    pub enrichment_devices: Gauge,
    /// Tag assignments (device and interface) the store holds.
    pub enrichment_tag_assignments: Gauge,
    /// Events the source sent on, by `result` (`enriched`,
    /// `device_unknown`, `no_device`); each label a fixed word.
    pub enrichment_events: Family<Labels, Counter>,
    /// Changes applied after a subscription's initial sync, by `source`.
    pub enrichment_changes: Family<Labels, Counter>,
    /// Devices or assignments left out over `max_devices` /
    /// `max_tag_assignments`, by `source`.
    pub enrichment_over_limit: Family<Labels, Counter>,
    enrichment_sync_state: Family<Labels, Gauge>,
}

/// The states of an enrichment subscription (`enrichment_sync_state`):
/// `unavailable` is a CVP without the service, or a token without the
/// permission, which is not retried.
pub const ENRICHMENT_STATES: [&str; 4] = ["disconnected", "syncing", "live", "unavailable"];

fn histogram_latency() -> Histogram {
    // 50 µs .. ~13 s: a batch through a Rust guest takes tens of µs, a
    // Kafka acknowledgement during an outage takes seconds.
    Histogram::new(exponential_buckets(50e-6, 2.0, 19))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("cvp_stream");
        let events_received = Family::<Labels, Counter>::default();
        registry.register(
            "events_received",
            "Events received from CVP, by operation and severity (before the operations filter)",
            events_received.clone(),
        );
        let records_produced = Family::<Labels, Counter>::default();
        registry.register(
            "records_produced",
            "Records Kafka acknowledged, by topic",
            records_produced.clone(),
        );
        let events_dropped = Family::<Labels, Counter>::default();
        registry.register(
            "events_dropped",
            "Events that produced no record, by transform and reason (filtered: the transform returned none; error: it failed and its on_error is drop)",
            events_dropped.clone(),
        );
        let events_dead_lettered = Family::<Labels, Counter>::default();
        registry.register(
            "events_dead_lettered",
            "Events sent to the dead-letter topic, by transform and reason",
            events_dead_lettered.clone(),
        );
        let transform_failures = Family::<Labels, Counter>::default();
        registry.register(
            "transform_failures",
            "Events a transform failed on, by transform and reason (trap, timeout, memory, error)",
            transform_failures.clone(),
        );
        let transform_call_duration =
            Family::<Labels, Histogram>::new_with_constructor(histogram_latency as fn() -> _);
        registry.register(
            "transform_call_duration_seconds",
            "Duration of one call into a transform (one batch of events)",
            transform_call_duration.clone(),
        );
        let kafka_queue_depth = Gauge::default();
        registry.register(
            "kafka_queue_depth",
            "Records handed to the producer and not yet acknowledged by Kafka",
            kafka_queue_depth.clone(),
        );
        let kafka_delivery_duration = histogram_latency();
        registry.register(
            "kafka_delivery_duration_seconds",
            "From handing a record to the producer to Kafka's acknowledgement",
            kafka_delivery_duration.clone(),
        );
        let kafka_delivery_failures = Family::<Labels, Counter>::default();
        registry.register(
            "kafka_delivery_failures",
            "Records Kafka did not accept, by topic",
            kafka_delivery_failures.clone(),
        );
        let role = Family::<Vec<(&'static str, &'static str)>, Gauge>::default();
        registry.register(
            "role",
            "With sink.kafka.exactly_once.standby: 1 for the role this instance has (active: it delivers; standby: it waits to take over)",
            role.clone(),
        );
        let kafka_broker_up = Gauge::default();
        registry.register(
            "kafka_broker_up",
            "1 when the last metadata request to the Kafka cluster succeeded",
            kafka_broker_up.clone(),
        );
        let sink_up = Family::<Labels, Gauge>::default();
        registry.register(
            "sink_up",
            "1 when the sink's server is reachable (Kafka: the last metadata request succeeded; others: connected)",
            sink_up.clone(),
        );
        let sink_records_delivered = Family::<Labels, Counter>::default();
        registry.register(
            "sink_records_delivered",
            "Records the sink's server acknowledged, by sink and topic (subject, stream, exchange)",
            sink_records_delivered.clone(),
        );
        let sink_delivery_failures = Family::<Labels, Counter>::default();
        registry.register(
            "sink_delivery_failures",
            "Records the sink's server did not accept, by sink and topic",
            sink_delivery_failures.clone(),
        );
        let sink_in_flight = Family::<Labels, Gauge>::default();
        registry.register(
            "sink_in_flight",
            "Records sent and not yet acknowledged, by sink",
            sink_in_flight.clone(),
        );
        let cvp_reconnects = Counter::default();
        registry.register(
            "cvp_reconnects",
            "Times the CVP subscription was re-established after it ended or failed",
            cvp_reconnects.clone(),
        );
        let stream_state = Family::<Vec<(&'static str, StreamState)>, Gauge>::default();
        registry.register(
            "cvp_stream_state",
            "The CVP subscription's state: 1 for the current one of disconnected, syncing, live",
            stream_state.clone(),
        );
        let checkpoint_lag = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "checkpoint_lag_seconds",
            "Now minus the time of the last event whose records Kafka fully acknowledged (in order)",
            checkpoint_lag.clone(),
        );
        let last_delivered = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "last_delivered_event_timestamp_seconds",
            "Time of the last event whose records Kafka fully acknowledged (in order)",
            last_delivered.clone(),
        );
        let ready = Gauge::default();
        registry.register(
            "ready",
            "1 when connected to CVP, Kafka is reachable and the transforms are loaded (as /ready)",
            ready.clone(),
        );
        let build_info = Family::<Labels, Gauge>::default();
        registry.register(
            "build_info",
            "The running version and the transform WIT version it implements",
            build_info.clone(),
        );
        build_info
            .get_or_create(&vec![
                ("version", env!("CARGO_PKG_VERSION").to_string()),
                ("wit_version", cvp_transform_engine::WIT_VERSION.to_string()),
            ])
            .set(1);
        let cvp_events_future_dated = Counter::default();
        registry.register(
            "cvp_events_future_dated",
            "Events dated beyond now plus source.cvp.future_tolerance: forwarded, but not allowed to move the resume point",
            cvp_events_future_dated.clone(),
        );
        let cvp_events_too_large = Counter::default();
        registry.register(
            "cvp_events_too_large",
            "Events over source.cvp.max_event_size (as sent, or merged with their updates): not forwarded; their key and head go to the dead-letter topic",
            cvp_events_too_large.clone(),
        );

        let checkpoint_write_failures = Counter::default();
        registry.register(
            "checkpoint_write_failures",
            "Checkpoint writes that failed (the file keeps the older progress; /ready is 503 until one succeeds)",
            checkpoint_write_failures.clone(),
        );
        let transform_log_lines_suppressed = Family::<Labels, Counter>::default();
        registry.register(
            "transform_log_lines_suppressed",
            "Guest log lines not written: beyond the transform's limits.log_lines_per_second",
            transform_log_lines_suppressed.clone(),
        );
        let pipeline_pending_bytes = Gauge::default();
        registry.register(
            "pipeline_pending_bytes",
            "Bytes of records between the transform stage and the sink (bounded by pipeline.max_pending_bytes)",
            pipeline_pending_bytes.clone(),
        );

        let enrichment_devices = Gauge::default();
        registry.register(
            "enrichment_devices",
            "Devices the enrichment store knows (from CVP's inventory, or its tags)",
            enrichment_devices.clone(),
        );
        let enrichment_tag_assignments = Gauge::default();
        registry.register(
            "enrichment_tag_assignments",
            "Device and interface tag assignments the enrichment store holds",
            enrichment_tag_assignments.clone(),
        );
        let enrichment_events = Family::<Labels, Counter>::default();
        registry.register(
            "enrichment_events",
            "Events sent on with enrichment on, by result: enriched (every device it names is known), device_unknown (sent on without the unknown ones), no_device",
            enrichment_events.clone(),
        );
        let enrichment_changes = Family::<Labels, Counter>::default();
        registry.register(
            "enrichment_changes",
            "Inventory or tag changes applied after the initial sync, by source (inventory, tags)",
            enrichment_changes.clone(),
        );
        let enrichment_over_limit = Family::<Labels, Counter>::default();
        registry.register(
            "enrichment_over_limit",
            "Devices or tag assignments not kept: over enrich.max_devices or enrich.max_tag_assignments, by source",
            enrichment_over_limit.clone(),
        );
        let enrichment_sync_state = Family::<Labels, Gauge>::default();
        registry.register(
            "enrichment_sync_state",
            "Each enrichment subscription's state, by source: 1 for the current one of disconnected, syncing, live, unavailable",
            enrichment_sync_state.clone(),
        );

        let m = Metrics {
            registry,
            events_received,
            records_produced,
            events_dropped,
            events_dead_lettered,
            transform_failures,
            transform_call_duration,
            kafka_queue_depth,
            kafka_delivery_duration,
            kafka_delivery_failures,
            kafka_broker_up,
            sink_up,
            sink_records_delivered,
            sink_delivery_failures,
            sink_in_flight,
            cvp_reconnects,
            stream_state,
            checkpoint_lag,
            last_delivered,
            ready,
            last_delivered_nanos: AtomicI64::new(0),
            transforms_loaded: AtomicBool::new(false),
            cvp_live: AtomicBool::new(false),
            role,
            role_now: std::sync::atomic::AtomicU8::new(0),
            checkpoint_failing: AtomicBool::new(false),
            checkpoint_write_failures,
            sink: std::sync::OnceLock::new(),
            cvp_events_future_dated,
            cvp_waiting_since: AtomicI64::new(0),
            cvp_stuck_after: AtomicI64::new(0),
            cvp_events_too_large,
            transform_log_lines_suppressed,
            pipeline_pending_bytes,
            enrichment_devices,
            enrichment_tag_assignments,
            enrichment_events,
            enrichment_changes,
            enrichment_over_limit,
            enrichment_sync_state,
        };
        m.set_stream_state(StreamState::disconnected);
        m
    }

    /// One series per state, exactly one of them 1 (Prometheus's
    /// "state set"), so a dashboard can show the state and alert on it.
    pub fn set_stream_state(&self, now: StreamState) {
        for s in [
            StreamState::disconnected,
            StreamState::syncing,
            StreamState::live,
        ] {
            self.stream_state
                .get_or_create(&vec![("state", s)])
                .set((s == now) as i64);
        }
        self.cvp_live
            .store(now != StreamState::disconnected, Ordering::Relaxed);
    }

    /// The state of the enrichment subscription `source` (`inventory` or
    /// `tags`), as a state set like `cvp_stream_state`.
    pub fn set_enrichment_state(&self, source: &'static str, now: &str) {
        for s in ENRICHMENT_STATES {
            self.enrichment_sync_state
                .get_or_create(&labels([("source", source), ("state", s)]))
                .set((s == now) as i64);
        }
    }

    /// The sink this process delivers to: /ready follows its `sink_up`,
    /// whose series exist from now on.
    pub fn set_sink(&self, name: &'static str) {
        let _ = self.sink.set(name);
        let l = labels([("sink", name)]);
        let _ = self.sink_up.get_or_create(&l);
        let _ = self.sink_in_flight.get_or_create(&l);
    }

    /// This instance's role in its exactly_once group (`standby.rs`).
    pub fn set_role(&self, active: bool) {
        for (name, is) in [("active", active), ("standby", !active)] {
            self.role
                .get_or_create(&vec![("role", name)])
                .set(is as i64);
        }
        self.role_now
            .store(if active { 2 } else { 1 }, Ordering::Relaxed);
    }

    /// `active` or `standby` with `exactly_once.standby`; `None` without.
    pub fn role(&self) -> Option<&'static str> {
        match self.role_now.load(Ordering::Relaxed) {
            1 => Some("standby"),
            2 => Some("active"),
            _ => None,
        }
    }

    pub fn set_transforms_loaded(&self) {
        self.transforms_loaded.store(true, Ordering::Relaxed);
    }

    pub fn set_delivered_up_to(&self, event_nanos: i64) {
        if event_nanos > 0 {
            self.last_delivered_nanos
                .fetch_max(event_nanos, Ordering::Relaxed);
        }
    }

    pub fn set_checkpoint_written(&self, ok: bool) {
        if !ok {
            self.checkpoint_write_failures.inc();
        }
        self.checkpoint_failing.store(!ok, Ordering::Relaxed);
    }

    /// The CVP source waits for CVP in a step that should end soon (a
    /// subscription starting, an initial sync in progress): from now, or
    /// from now again after progress.
    pub fn cvp_waiting(&self) {
        self.cvp_waiting_since
            .store(unix_nanos().max(1), Ordering::Relaxed);
    }

    /// The source waits for nothing that has to come soon (it is live,
    /// where silence is normal, backing off, or waiting for the sink).
    pub fn cvp_not_waiting(&self) {
        self.cvp_waiting_since.store(0, Ordering::Relaxed);
    }

    pub fn set_cvp_stuck_after(&self, bound: std::time::Duration) {
        self.cvp_stuck_after.store(
            i64::try_from(bound.as_nanos()).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
    }

    /// How long the CVP source has been stuck, once past
    /// `source.cvp.stuck_after` (`/health` fails then).
    pub fn cvp_stuck(&self) -> Option<std::time::Duration> {
        let since = self.cvp_waiting_since.load(Ordering::Relaxed);
        let bound = self.cvp_stuck_after.load(Ordering::Relaxed);
        let waited = unix_nanos().saturating_sub(since);
        (since > 0 && bound > 0 && waited > bound)
            .then(|| std::time::Duration::from_nanos(waited as u64))
    }

    /// Why the service is not ready, or `None` when it is.
    pub fn not_ready(&self) -> Option<&'static str> {
        if !self.transforms_loaded.load(Ordering::Relaxed) {
            Some("transforms not loaded")
        } else if self.checkpoint_failing.load(Ordering::Relaxed) {
            Some("the checkpoint cannot be written (see the log)")
        } else if !self.cvp_live.load(Ordering::Relaxed) {
            Some("not connected to CVP")
        } else if self.kafka_broker_up.get() == 0 && self.sink.get().is_none_or(|s| *s == "kafka") {
            Some("Kafka not reachable")
        } else if let Some(sink) = self.sink.get().filter(|s| **s != "kafka") {
            if self.sink_up.get_or_create(&labels([("sink", sink)])).get() == 0 {
                Some("the sink's server is not reachable")
            } else {
                None
            }
        } else {
            None
        }
    }

    /// The text exposition, with the derived gauges brought up to date.
    pub fn encode(&self) -> String {
        let delivered = self.last_delivered_nanos.load(Ordering::Relaxed);
        if delivered > 0 {
            let secs = delivered as f64 / 1e9;
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(secs);
            self.last_delivered.set(secs);
            self.checkpoint_lag.set((now - secs).max(0.0));
        }
        self.ready.set(self.not_ready().is_none() as i64);
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The process's metrics. Created on first use, so commands that never
/// serve them pay nothing but a few allocations.
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

fn unix_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// A label set from pairs, for the `Family` look-ups above.
pub fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, v.to_string())).collect()
}

/// Distinct `topic` label values kept; later topics count under `other`.
/// A transform may choose a topic per event, and every value is a series
/// Prometheus keeps forever.
pub const MAX_TOPIC_SERIES: usize = 200;

/// The `topic` label for a topic: transforms choose topics, so the text is
/// escaped for the exposition (prometheus-client writes label values as
/// given: a `"` or a line break in one forged series and an early `# EOF`),
/// and past [`MAX_TOPIC_SERIES`] distinct topics it is `other`.
pub fn topic(topic: &str) -> String {
    static TOPICS: OnceLock<LabelValues> = OnceLock::new();
    TOPICS
        .get_or_init(|| LabelValues::new(MAX_TOPIC_SERIES))
        .label(topic)
}

/// The values one label has taken, up to a bound.
pub struct LabelValues {
    seen: std::sync::Mutex<std::collections::HashSet<String>>,
    max: usize,
}

impl LabelValues {
    pub fn new(max: usize) -> LabelValues {
        LabelValues {
            seen: Default::default(),
            max,
        }
    }

    /// `value` escaped, or `other` once `max` distinct values are taken.
    pub fn label(&self, value: &str) -> String {
        let label = escape_label(value);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.contains(&label) {
            return label;
        }
        if seen.len() >= self.max {
            return "other".to_string();
        }
        seen.insert(label.clone());
        label
    }
}

/// OpenMetrics escapes `\`, `"` and line feeds in label values; other
/// control characters (NUL, CR, ANSI escapes) are written as `\xNN`, so a
/// scrape and a terminal see them as text.
fn escape_label(value: &str) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {
                let _ = write!(out, "\\\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A topic a hostile transform chose cannot add lines or series to the
    /// exposition, and a topic per event folds into `other`.
    #[test]
    fn topics_are_escaped_and_bounded() {
        let m = Metrics::new();
        let topics = LabelValues::new(5);
        let forged = "t\"} 1\ncvp_stream_ready 1\n# EOF\n\0\r\x1b[2J";
        m.sink_records_delivered
            .get_or_create(&labels([
                ("sink", "kafka"),
                ("topic", &topics.label(forged)),
            ]))
            .inc();
        let text = m.encode();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.iter().filter(|l| **l == "# EOF").count(), 1);
        assert_eq!(lines.last(), Some(&"# EOF"));
        assert!(!text.contains('\0') && !text.contains('\r') && !text.contains('\x1b'));
        let series = lines
            .iter()
            .find(|l| l.starts_with("cvp_stream_sink_records_delivered_total{"))
            .unwrap();
        assert_eq!(
            *series,
            r#"cvp_stream_sink_records_delivered_total{sink="kafka",topic="t\"} 1\ncvp_stream_ready 1\n# EOF\n\\x00\\x0d\\x1b[2J"} 1"#
        );
        for n in 0..50 {
            let _ = topics.label(&format!("per-event-{n}"));
        }
        assert_eq!(topics.label("per-event-3"), "per-event-3");
        assert_eq!(topics.label("per-event-4"), "other");
        assert_eq!(
            topics.label(forged),
            escape_label(forged),
            "a topic seen keeps its series"
        );
    }

    #[test]
    fn exposition_names_and_state_set() {
        let m = Metrics::new();
        m.events_received
            .get_or_create(&labels([("operation", "updated"), ("severity", "error")]))
            .inc_by(3);
        m.set_stream_state(StreamState::live);
        m.transform_call_duration
            .get_or_create(&labels([("transform", "t")]))
            .observe(0.001);
        let text = m.encode();
        assert!(
            text.contains(
                "cvp_stream_events_received_total{operation=\"updated\",severity=\"error\"} 3"
            ),
            "{text}"
        );
        assert!(text.contains("cvp_stream_cvp_stream_state{state=\"live\"} 1"));
        assert!(text.contains("cvp_stream_cvp_stream_state{state=\"syncing\"} 0"));
        assert!(
            text.contains("cvp_stream_transform_call_duration_seconds_count{transform=\"t\"} 1")
        );
        assert!(text.contains("cvp_stream_build_info{version=\""));
        // Not ready: nothing loaded, no broker seen.
        assert!(text.contains("cvp_stream_ready 0"));
    }

    #[test]
    fn ready_needs_all_three() {
        let m = Metrics::new();
        assert_eq!(m.not_ready(), Some("transforms not loaded"));
        m.set_transforms_loaded();
        assert_eq!(m.not_ready(), Some("not connected to CVP"));
        m.set_stream_state(StreamState::syncing);
        assert_eq!(m.not_ready(), Some("Kafka not reachable"));
        m.kafka_broker_up.set(1);
        assert_eq!(m.not_ready(), None);
        m.set_stream_state(StreamState::disconnected);
        assert_eq!(m.not_ready(), Some("not connected to CVP"));
    }

    #[test]
    fn lag_follows_the_last_delivered_event() {
        let m = Metrics::new();
        let ten_s_ago = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as i64
            - 10_000_000_000;
        m.set_delivered_up_to(ten_s_ago);
        let text = m.encode();
        let lag: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("cvp_stream_checkpoint_lag_seconds "))
            .unwrap()
            .parse()
            .unwrap();
        assert!((10.0..20.0).contains(&lag), "{lag}");
    }

    #[test]
    fn stuck_only_while_waiting_past_the_bound() {
        let m = Metrics::new();
        m.cvp_waiting();
        assert_eq!(m.cvp_stuck(), None, "no bound set: never stuck");
        m.set_cvp_stuck_after(std::time::Duration::from_nanos(1));
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(m.cvp_stuck().is_some());
        m.cvp_not_waiting();
        assert_eq!(m.cvp_stuck(), None);
    }

    /// The Grafana dashboard in deploy/ asks only for series this exports.
    #[test]
    fn dashboard_uses_only_exported_metrics() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/grafana/cvp-stream-dashboard.json"
        );
        let dashboard = std::fs::read_to_string(path).expect("the dashboard");
        let _: serde_json::Value = serde_json::from_str(&dashboard).expect("valid JSON");
        // A family appears in the exposition once it has a series.
        let m = Metrics::new();
        let l = labels([("x", "1")]);
        for f in [
            &m.events_received,
            &m.records_produced,
            &m.events_dropped,
            &m.events_dead_lettered,
            &m.transform_failures,
            &m.kafka_delivery_failures,
        ] {
            f.get_or_create(&l).inc();
        }
        m.transform_call_duration.get_or_create(&l).observe(1.0);
        let text = m.encode();
        let mut names: Vec<&str> = dashboard
            .match_indices("cvp_stream_")
            // Not the inner match of `cvp_stream_cvp_stream_state`.
            .filter(|(i, _)| {
                !dashboard[..*i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            })
            .map(|(i, _)| {
                let rest = &dashboard[i..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
                    .unwrap_or(rest.len());
                &rest[..end]
            })
            .collect();
        names.sort();
        names.dedup();
        assert!(names.len() >= 10, "{names:?}");
        for name in names {
            let base = ["_total", "_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            assert!(
                text.contains(&format!("# TYPE {base} ")),
                "the dashboard uses {name}, which is not exported:\n{text}"
            );
        }
    }
}
