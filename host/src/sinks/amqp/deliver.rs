//! From deliveries to publisher confirms. Every record not yet confirmed
//! is numbered and kept; its confirm is awaited concurrently with the
//! others. When the connection is lost, every unconfirmed record is
//! published again on the next one (its confirm may have been lost with
//! the connection: a duplicate, never a loss). Records are only taken from
//! the channel while fewer than `max_in_flight` are unconfirmed: that bounds
//! memory and pushes back to CVP while RabbitMQ is slow or away.

use super::{render, AmqpSink};
// A record not yet acknowledged is kept as the ledger handed it over.
use crate::delivery::ToSend as Entry;
use crate::delivery::{dead_letter, Delivery, DeliveryStats, Ledger};
use crate::metrics;
use anyhow::Result;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::tcp::OwnedTLSConfig;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const SINK: &str = "amqp";

struct State {
    ledger: Ledger,
    next_id: u64,
    /// Every record not yet confirmed, by number (publish order).
    unacked: BTreeMap<u64, Entry>,
    /// Not yet published on the current connection.
    to_send: BTreeSet<u64>,
}

type Confirm = Pin<Box<dyn Future<Output = (u64, lapin::Result<Confirmation>)> + Send>>;
type Connecting = Pin<Box<dyn Future<Output = lapin::Result<(Connection, Channel)>> + Send>>;

impl AmqpSink {
    pub async fn run(
        self,
        mut rx: mpsc::Receiver<Vec<Delivery>>,
        ledger: Ledger,
        shutdown: CancellationToken,
    ) -> Result<DeliveryStats> {
        let every = ledger.progress_interval();
        let mut st = State {
            ledger,
            next_id: 0,
            unacked: BTreeMap::new(),
            to_send: BTreeSet::new(),
        };
        st.ledger
            .count_topics(std::iter::once(&self.topic).chain(&self.dead_letter_topic));
        let (lost_tx, mut lost_rx) = mpsc::unbounded_channel::<u64>();
        let mut generation = 0u64;
        let mut conn: Option<(Connection, Channel)> = None;
        let mut connecting: Option<Connecting> = Some(self.connect(Duration::ZERO));
        let mut pending: FuturesUnordered<Confirm> = FuturesUnordered::new();
        let mut backoff = Duration::from_millis(100);
        let mut outage_logged = false;
        // After a nack, a pause before sending again (a queue refusing
        // more, e.g. at its max-length with reject-publish).
        let mut hold_until = Instant::now();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rx_open = true;
        let mut stopping = false;
        let mut drain_until: Option<Instant> = None;
        let mut result: Result<()> = Ok(());

        loop {
            if drain_until.is_none()
                && (!rx_open || (stopping && st.unacked.len() >= self.max_in_flight))
            {
                drain_until = Some(Instant::now() + self.flush_timeout);
            }
            if drain_until.is_some() && st.unacked.is_empty() {
                break;
            }
            // Publish what waits, while connected.
            let sent = match &conn {
                Some((_, channel)) if Instant::now() >= hold_until => {
                    self.send(channel, &mut st, &mut pending).await
                }
                _ => Ok(()),
            };
            if let Err(e) = sent {
                self.lost(&e.to_string(), &mut st, &mut pending, &mut outage_logged);
                conn = None;
                connecting = Some(self.connect(backoff));
            }
            let take = drain_until.is_none() && st.unacked.len() < self.max_in_flight;
            let deadline = drain_until.unwrap_or_else(|| Instant::now() + self.flush_timeout);
            tokio::select! {
                _ = tick.tick() => {
                    st.ledger.publish_progress();
                    publish_in_flight(st.unacked.len());
                }
                _ = shutdown.cancelled(), if !stopping => stopping = true,
                _ = tokio::time::sleep_until(deadline), if drain_until.is_some() => {
                    tracing::error!(
                        "RabbitMQ did not confirm {} record(s) within sink.amqp.flush_timeout ({}); the checkpoint stops before them, so a restart sends them again",
                        st.unacked.len(),
                        humantime::format_duration(self.flush_timeout)
                    );
                    break;
                }
                _ = tokio::time::sleep_until(hold_until), if hold_until > Instant::now() => {}
                r = async { connecting.as_mut().expect("guarded").await }, if connecting.is_some() => {
                    connecting = None;
                    match r {
                        Ok((c, ch)) => {
                            generation += 1;
                            watch_connection(&c, lost_tx.clone(), generation);
                            if outage_logged {
                                tracing::info!(server = %self.server, "reconnected to RabbitMQ; re-sending {} unconfirmed record(s)", st.to_send.len());
                            } else {
                                tracing::info!(server = %self.server, "connected to RabbitMQ");
                            }
                            outage_logged = false;
                            backoff = Duration::from_millis(100);
                            set_up(true);
                            conn = Some((c, ch));
                        }
                        Err(e) => {
                            self.lost(&e.to_string(), &mut st, &mut pending, &mut outage_logged);
                            connecting = Some(self.connect(backoff));
                            backoff = (backoff * 2).min(Duration::from_secs(5));
                        }
                    }
                }
                Some(g) = lost_rx.recv() => {
                    if g == generation && conn.is_some() {
                        self.lost("the connection closed", &mut st, &mut pending, &mut outage_logged);
                        conn = None;
                        connecting = Some(self.connect(backoff));
                    }
                }
                Some((id, r)) = pending.next(), if !pending.is_empty() => {
                    match r {
                        Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => st.acked(id),
                        Ok(Confirmation::Ack(Some(ret))) => {
                            let why = format!(
                                "no queue took it (returned: {} {})",
                                ret.reply_code, ret.reply_text
                            );
                            st.refused(id, &why, &self);
                        }
                        Ok(Confirmation::Nack(_)) => {
                            tracing::warn!("RabbitMQ refused (nack) a record; sending it again shortly");
                            st.to_send.insert(id);
                            hold_until = Instant::now() + Duration::from_millis(500);
                        }
                        Err(e) => {
                            if conn.is_some() {
                                self.lost(&e.to_string(), &mut st, &mut pending, &mut outage_logged);
                                conn = None;
                                connecting = Some(self.connect(backoff));
                            }
                        }
                    }
                    if st.unacked.is_empty() || st.ledger.stats.produced.is_multiple_of(256) {
                        publish_in_flight(st.unacked.len());
                    }
                }
                batch = rx.recv(), if take && rx_open => match batch {
                    None => rx_open = false,
                    Some(batch) => {
                        for d in batch {
                            if let Err(e) = st.deliver(d, &self) {
                                result = Err(e);
                                break;
                            }
                        }
                        if result.is_err() {
                            break;
                        }
                        publish_in_flight(st.unacked.len());
                    }
                },
            }
        }
        drop(pending);
        if let Some((c, _)) = conn {
            let _ = tokio::time::timeout(Duration::from_secs(2), c.close(200, "cvp-stream stops"))
                .await;
        }
        set_up(false);
        publish_in_flight(st.unacked.len());
        let stats = st.ledger.finish();
        result.map(|()| stats)
    }

    /// A connection with a channel in confirm mode, after `delay`.
    fn connect(&self, delay: Duration) -> Connecting {
        let uri = self.uri.clone();
        let tls = OwnedTLSConfig {
            identity: None,
            cert_chain: self.ca_pem.clone(),
        };
        Box::pin(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let props = ConnectionProperties::default()
                .with_connection_name(LongString::from("cvp-stream"));
            let conn = Connection::connect_uri_with_config(uri, props, tls).await?;
            let channel = conn.create_channel().await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            Ok((conn, channel))
        })
    }

    /// The connection is gone: every unconfirmed record is sent again on
    /// the next (the old confirms will not come).
    fn lost(
        &self,
        why: &str,
        st: &mut State,
        pending: &mut FuturesUnordered<Confirm>,
        outage_logged: &mut bool,
    ) {
        set_up(false);
        *pending = FuturesUnordered::new();
        st.to_send = st.unacked.keys().copied().collect();
        if !*outage_logged {
            tracing::warn!(
                server = %self.server,
                "RabbitMQ is unreachable ({why}); {} record(s) wait for it and are re-sent (check sink.amqp.url and credentials)",
                st.unacked.len()
            );
            *outage_logged = true;
        } else {
            tracing::debug!("RabbitMQ reconnect failed: {why}");
        }
    }

    /// Publishes every waiting record; `Err`: the channel is unusable.
    async fn send(
        &self,
        channel: &Channel,
        st: &mut State,
        pending: &mut FuturesUnordered<Confirm>,
    ) -> lapin::Result<()> {
        while let Some(id) = st.to_send.pop_first() {
            let Some(e) = st.unacked.get(&id) else {
                continue;
            };
            let r = &e.record;
            let exchange = render(&self.exchange, &r.topic, r.key.as_deref());
            let routing_key = render(&self.routing_key, &r.topic, r.key.as_deref());
            let mut headers = FieldTable::default();
            if let (Some(name), Some(key)) = (&self.key_header, &r.key) {
                headers.insert(
                    ShortString::from(name.as_str()),
                    AMQPValue::LongString(LongString::from(key.clone())),
                );
            }
            for h in &r.headers {
                headers.insert(
                    ShortString::from(h.key.as_str()),
                    AMQPValue::LongString(LongString::from(h.value.clone())),
                );
            }
            let mut props = BasicProperties::default().with_headers(headers);
            if self.persistent {
                props = props.with_delivery_mode(2);
            }
            let options = BasicPublishOptions {
                mandatory: self.mandatory,
                ..BasicPublishOptions::default()
            };
            let payload = r.value.as_deref().unwrap_or_default();
            match channel
                .basic_publish(&exchange, &routing_key, options, payload, props)
                .await
            {
                Ok(confirm) => pending.push(Box::pin(async move { (id, confirm.await) })),
                Err(e) => {
                    st.to_send.insert(id);
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

impl State {
    fn deliver(&mut self, d: Delivery, sink: &AmqpSink) -> Result<()> {
        for out in self.ledger.accept(d, sink.dead_letter_topic.as_deref())? {
            self.queue(out);
        }
        Ok(())
    }

    fn queue(&mut self, e: Entry) {
        let id = self.next_id;
        self.next_id += 1;
        self.unacked.insert(id, e);
        self.to_send.insert(id);
    }

    fn acked(&mut self, id: u64) {
        if let Some(e) = self.unacked.remove(&id) {
            self.ledger
                .acknowledged(e.seq, e.changed_at, &e.record.topic);
        }
    }

    /// RabbitMQ returned the record: no queue took it.
    fn refused(&mut self, id: u64, error: &str, sink: &AmqpSink) {
        let Some(e) = self.unacked.remove(&id) else {
            return;
        };
        let topic = e.record.topic.clone();
        let key = e.event_key.clone();
        match sink.dead_letter_topic.clone().filter(|_| !e.dead_letter) {
            Some(dlq) => {
                tracing::error!(event_key = key, topic, "RabbitMQ did not route the record for event {key}: {error}; sending it to the dead-letter topic {dlq}");
                let letter = dead_letter::undeliverable(&dlq, &key, e.record, error, false);
                dead_letter::count("amqp", "undeliverable");
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
                    "RabbitMQ did not route the record for event {key}: {error}{}",
                    if e.dead_letter {
                        " (it was a dead letter; it is lost)"
                    } else {
                        " (no sink.amqp.dead_letter_topic: it is lost; check the exchange, bindings and sink.amqp.routing_key)"
                    }
                );
                self.ledger.given_up(e.seq, &topic);
            }
        }
    }
}

/// Tells the loop (by generation) when connection `generation` fails, and
/// logs RabbitMQ's flow control (a memory or disk alarm blocks publishers).
fn watch_connection(c: &Connection, lost: mpsc::UnboundedSender<u64>, generation: u64) {
    let mut events = c.events_listener();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                ev = events.next() => match ev {
                    Some(lapin::Event::Error(_)) => {
                        let _ = lost.send(generation);
                        return;
                    }
                    Some(lapin::Event::ConnectionBlocked(why)) => tracing::warn!(
                        "RabbitMQ blocks publishing ({why}): records wait (a memory or disk alarm on the server)"
                    ),
                    Some(lapin::Event::ConnectionUnblocked) => {
                        tracing::info!("RabbitMQ takes records again")
                    }
                    Some(_) => {}
                    None => return,
                },
                _ = lost.closed() => return,
            }
        }
    });
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
