//! The pub/sub sinks under the bench: each gets names of its own for the
//! run (a JetStream stream, a queue, a Redis stream, an MQTT topic) on the
//! server `--sink URL` names, made before and removed after, so a run
//! leaves the shared servers as it found them.

use crate::sinks::SinkConfig;
use anyhow::{anyhow, Context, Result};

pub struct SinkUnderTest {
    pub label: String,
    pub config: SinkConfig,
}

/// A sink configured from `url`, delivering to `topic`, with what its
/// server needs to accept every record.
pub async fn prepare(url: &str, topic: &str) -> Result<SinkUnderTest> {
    let mut config = SinkConfig::from_url(url, topic)?;
    match &mut config {
        SinkConfig::Nats(c) => {
            // Memory storage: a bench should not fill the server's disk.
            if let Some(s) = &mut c.stream {
                s.name = format!("CVP_BENCH_{}", topic.replace(['.', '-'], "_"));
                s.storage = "memory".into();
            }
        }
        SinkConfig::Amqp(c) => {
            // The default exchange routes by queue name: the queue must exist
            // or every message comes back (mandatory).
            let (_conn, channel) = amqp_channel(c).await?;
            channel
                .queue_declare(
                    topic,
                    lapin::options::QueueDeclareOptions::default(),
                    lapin::types::FieldTable::default(),
                )
                .await
                .context("declaring the bench queue")?;
        }
        _ => {}
    }
    Ok(SinkUnderTest {
        label: format!("{} ({url})", config.name()),
        config,
    })
}

/// Removes what [`prepare`] and the run left on the server.
pub async fn cleanup(sut: &SinkUnderTest, topic: &str) {
    let result: Result<()> = async {
        match &sut.config {
            SinkConfig::Nats(c) => {
                if let Some(s) = &c.stream {
                    let client = async_nats::connect(c.url.as_str()).await?;
                    let js = async_nats::jetstream::new(client);
                    let _ = js.delete_stream(&s.name).await;
                }
            }
            SinkConfig::Amqp(c) => {
                let (_conn, channel) = amqp_channel(c).await?;
                channel
                    .queue_delete(topic, lapin::options::QueueDeleteOptions::default())
                    .await?;
            }
            SinkConfig::Redis(c) => {
                let client = redis::Client::open(c.url.as_str())?;
                let mut conn = client.get_multiplexed_async_connection().await?;
                let _: () = redis::cmd("DEL")
                    .arg(format!("{}{topic}", c.stream_prefix))
                    .query_async(&mut conn)
                    .await?;
            }
            _ => {}
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        eprintln!("bench: cleaning up after {}: {e:#}", sut.label);
    }
}

async fn amqp_channel(c: &crate::sinks::AmqpConfig) -> Result<(lapin::Connection, lapin::Channel)> {
    let conn = lapin::Connection::connect_uri(c.uri()?, lapin::ConnectionProperties::default())
        .await
        .map_err(|e| anyhow!("cannot reach RabbitMQ at {}: {e}", c.url))?;
    let channel = conn.create_channel().await?;
    Ok((conn, channel))
}
