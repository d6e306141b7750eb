//! From deliveries to PUBACKs. One task both publishes and drives rumqttc's
//! event loop, so it knows exactly what the loop holds when a connection
//! drops: each record is numbered, matched to its packet id when the loop
//! writes it (writes happen in publish order), and settled in the ledger
//! when that packet id is acknowledged.
//!
//! While disconnected nothing new is handed to rumqttc; after a reconnect
//! in the same session rumqttc re-sends what it holds, and when the server
//! has lost the session the sink publishes every unacknowledged record
//! again. Records are only taken from the channel while fewer than
//! `max_in_flight` are unacknowledged: that bounds memory and pushes back
//! to CVP while the server is slow or away.

use super::client::{Loop, Message, MqttEvent};
use super::{render_topic, MqttSink, Publisher};
// A record not yet acknowledged is kept as the ledger handed it over.
use crate::delivery::ToSend as Entry;
use crate::delivery::{dead_letter, Delivery, DeliveryStats, Ledger};
use crate::metrics;
use anyhow::Result;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const SINK: &str = "mqtt";

/// The books of the records in flight.
struct State {
    ledger: Ledger,
    next_id: u64,
    /// Every record not yet acknowledged, by number (publish order).
    unacked: BTreeMap<u64, Entry>,
    /// Not yet handed to rumqttc (disconnected, or its queue was full).
    to_send: VecDeque<u64>,
    /// Handed to rumqttc, not yet written (so without a packet id).
    awaiting_pkid: VecDeque<u64>,
    by_pkid: HashMap<u16, u64>,
    connected: bool,
}

type Poll = Pin<Box<dyn Future<Output = (Loop, Result<MqttEvent, String>)> + Send>>;

impl MqttSink {
    pub async fn run(
        self,
        mut rx: mpsc::Receiver<Vec<Delivery>>,
        ledger: Ledger,
        shutdown: CancellationToken,
    ) -> Result<DeliveryStats> {
        let MqttSink {
            events,
            publisher: sink,
        } = self;
        let (max_in_flight, flush_timeout) = (sink.max_in_flight, sink.flush_timeout);
        let every = ledger.progress_interval();
        let mut st = State {
            ledger,
            next_id: 0,
            unacked: BTreeMap::new(),
            to_send: VecDeque::new(),
            awaiting_pkid: VecDeque::new(),
            by_pkid: HashMap::new(),
            connected: false,
        };
        st.ledger
            .count_topics(std::iter::once(&sink.topic).chain(&sink.dead_letter_topic));
        // One poll in flight at all times, kept across the select below.
        let mut poll: Poll = Box::pin(events.poll(Duration::ZERO));
        let mut backoff = Duration::from_millis(100);
        let mut outage_logged = false;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rx_open = true;
        let mut stopping = false;
        let mut drain_until: Option<Instant> = None;
        let mut result: Result<()> = Ok(());

        loop {
            // Drain once nothing more comes, or on shutdown while full
            // (the server away): bounded by the flush timeout.
            if drain_until.is_none()
                && (!rx_open || (stopping && st.unacked.len() >= max_in_flight))
            {
                drain_until = Some(Instant::now() + flush_timeout);
            }
            if drain_until.is_some() && st.unacked.is_empty() {
                break;
            }
            let take = drain_until.is_none() && st.unacked.len() < max_in_flight;
            let deadline = drain_until.unwrap_or_else(|| Instant::now() + flush_timeout);
            tokio::select! {
                _ = tick.tick() => {
                    st.ledger.publish_progress();
                    publish_in_flight(st.unacked.len());
                }
                _ = shutdown.cancelled(), if !stopping => stopping = true,
                _ = tokio::time::sleep_until(deadline), if drain_until.is_some() => {
                    tracing::error!(
                        "the MQTT server did not acknowledge {} record(s) within sink.mqtt.flush_timeout ({}); the checkpoint stops before them, so a restart sends them again",
                        st.unacked.len(),
                        humantime::format_duration(flush_timeout)
                    );
                    break;
                }
                (events, event) = &mut poll => {
                    let delay = match event {
                        Ok(ev) => {
                            if let MqttEvent::Connected { session_present } = ev {
                                backoff = Duration::from_millis(100);
                                if outage_logged {
                                    tracing::info!(server = %sink.server, "reconnected to the MQTT server");
                                } else {
                                    tracing::info!(server = %sink.server, "connected to the MQTT server");
                                }
                                outage_logged = false;
                                st.connected(session_present);
                            } else {
                                st.event(ev, &sink);
                            }
                            Duration::ZERO
                        }
                        Err(e) => {
                            if !outage_logged {
                                tracing::warn!(
                                    server = %sink.server,
                                    "the MQTT server is unreachable ({e}); {} record(s) wait for it and are re-sent (check sink.mqtt.url)",
                                    st.unacked.len()
                                );
                                outage_logged = true;
                            } else {
                                tracing::debug!("MQTT reconnect failed: {e}");
                            }
                            st.disconnected();
                            let d = backoff;
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                            d
                        }
                    };
                    if let Err(e) = st.send(&sink) {
                        result = Err(e);
                        break;
                    }
                    poll = Box::pin(events.poll(delay));
                }
                batch = rx.recv(), if take && rx_open => match batch {
                    None => rx_open = false,
                    Some(batch) => {
                        for d in batch {
                            if let Err(e) = st.deliver(d, &sink) {
                                result = Err(e);
                                break;
                            }
                        }
                        if result.is_err() {
                            break;
                        }
                        if let Err(e) = st.send(&sink) {
                            result = Err(e);
                            break;
                        }
                        publish_in_flight(st.unacked.len());
                    }
                },
            }
        }
        sink.client.disconnect();
        drop(poll);
        metrics::get()
            .sink_up
            .get_or_create(&metrics::labels([("sink", SINK)]))
            .set(0);
        publish_in_flight(st.unacked.len());
        let stats = st.ledger.finish();
        result.map(|()| stats)
    }
}

impl State {
    /// One event's outcome: its records queued, or its failure per policy.
    fn deliver(&mut self, d: Delivery, sink: &Publisher) -> Result<()> {
        for out in self.ledger.accept(d, sink.dead_letter_topic.as_deref())? {
            self.queue(out);
        }
        Ok(())
    }

    fn queue(&mut self, e: Entry) {
        let id = self.next_id;
        self.next_id += 1;
        self.unacked.insert(id, e);
        self.to_send.push_back(id);
    }

    /// Hands what waits to rumqttc, while connected and it has room.
    fn send(&mut self, sink: &Publisher) -> Result<()> {
        while self.connected {
            let Some(&id) = self.to_send.front() else {
                break;
            };
            let Some(e) = self.unacked.get(&id) else {
                self.to_send.pop_front();
                continue;
            };
            let r = &e.record;
            let topic = if e.dead_letter {
                r.topic.clone()
            } else {
                render_topic(&sink.template, &r.topic, r.key.as_deref())
            };
            if topic.is_empty() || topic.len() > 65_535 {
                // The server would drop the connection over it (and
                // rumqttc re-send it forever): refused here instead.
                self.to_send.pop_front();
                if let Some(e) = self.unacked.remove(&id) {
                    let why = format!(
                        "its MQTT topic is {} (check sink.mqtt.topic_template and the transforms' topics)",
                        if topic.is_empty() { "empty" } else { "longer than 65535 bytes" }
                    );
                    self.refused(e, &why, sink);
                }
                continue;
            }
            let mut properties = Vec::new();
            if sink.v5 {
                if let (Some(name), Some(key)) = (&sink.key_property, &r.key) {
                    properties.push((name.clone(), String::from_utf8_lossy(key).into_owned()));
                }
                for h in &r.headers {
                    properties.push((
                        h.key.clone(),
                        String::from_utf8_lossy(&h.value).into_owned(),
                    ));
                }
            }
            let m = Message {
                topic,
                payload: r.value.clone().unwrap_or_default(),
                properties,
                retain: sink.retain,
            };
            if !sink.client.try_publish(m)? {
                break; // rumqttc's queue is full: after its next event
            }
            self.to_send.pop_front();
            self.awaiting_pkid.push_back(id);
        }
        Ok(())
    }

    fn connected(&mut self, session_present: bool) {
        self.connected = true;
        set_up(true);
        let handed_over = !self.by_pkid.is_empty() || !self.awaiting_pkid.is_empty();
        if !session_present && handed_over {
            // The server has no session for us (new, expired, or lost with
            // a restart), and rumqttc dropped what it held: publish every
            // unacknowledged record again, in order.
            tracing::warn!(
                "the MQTT server kept no session for sink.mqtt.client_id: re-sending {} unacknowledged record(s)",
                self.by_pkid.len() + self.awaiting_pkid.len()
            );
            self.by_pkid.clear();
            self.awaiting_pkid.clear();
            self.to_send = self.unacked.keys().copied().collect();
        }
    }

    fn disconnected(&mut self) {
        self.connected = false;
        set_up(false);
    }

    fn event(&mut self, ev: MqttEvent, sink: &Publisher) {
        match ev {
            MqttEvent::Sent(pkid) => {
                // A packet id we know is rumqttc re-sending in the session;
                // a new one is the oldest publish not yet written.
                if !self.by_pkid.contains_key(&pkid) {
                    if let Some(id) = self.awaiting_pkid.pop_front() {
                        self.by_pkid.insert(pkid, id);
                    }
                }
            }
            MqttEvent::Acked { pkid, refused } => {
                let Some(id) = self.by_pkid.remove(&pkid) else {
                    tracing::debug!(pkid, "PUBACK for a packet id not in flight");
                    return;
                };
                let Some(e) = self.unacked.remove(&id) else {
                    return;
                };
                match refused {
                    None => {
                        self.ledger
                            .acknowledged(e.seq, e.changed_at, &e.record.topic);
                    }
                    Some(error) => self.refused(e, &error, sink),
                }
                if self.unacked.is_empty() || self.ledger.stats.produced.is_multiple_of(256) {
                    publish_in_flight(self.unacked.len());
                }
            }
            MqttEvent::Connected { .. } | MqttEvent::Other => {}
        }
    }

    /// The server will not take the record (MQTT 5 PUBACK reason).
    fn refused(&mut self, e: Entry, error: &str, sink: &Publisher) {
        let topic = e.record.topic.clone();
        let key = e.event_key.clone();
        match sink.dead_letter_topic.clone().filter(|_| !e.dead_letter) {
            Some(dlq) => {
                tracing::error!(event_key = key, topic, "the MQTT server will not take the record for event {key}: {error}; sending it to the dead-letter topic {dlq}");
                let letter = dead_letter::undeliverable(&dlq, &key, e.record, error, false);
                dead_letter::count("mqtt", "undeliverable");
                self.ledger.replaced_by_dead_letter(e.seq, &topic);
                self.queue(Entry {
                    seq: e.seq,
                    event_key: key,
                    changed_at: None,
                    index: 0,
                    record: letter,
                    dead_letter: true,
                });
            }
            None => {
                tracing::error!(
                    event_key = key,
                    topic,
                    "the MQTT server will not take the record for event {key}: {error}{}",
                    if e.dead_letter {
                        " (it was a dead letter; it is lost)"
                    } else {
                        " (no sink.mqtt.dead_letter_topic: it is lost)"
                    }
                );
                self.ledger.given_up(e.seq, &topic);
            }
        }
    }
}

fn set_up(up: bool) {
    metrics::get()
        .sink_up
        .get_or_create(&metrics::labels([("sink", SINK)]))
        .set(up as i64);
}

fn publish_in_flight(n: usize) {
    metrics::get()
        .sink_in_flight
        .get_or_create(&metrics::labels([("sink", SINK)]))
        .set(n as i64);
}
