//! How CVP's event stream is read: prost, as tonic's generated client does,
//! except that a message larger than `source.cvp.max_event_size` is not
//! decoded whole. Only its head is read (the operation, the event's key,
//! severity, type and times); the rest is skipped without allocating. One
//! 59 MiB event with 1.1 million components took the process from 17 MB to
//! 1.2 GB once decoded, merged, encoded as JSON and handed to transforms.
//!
//! gRPC's own limit (`max_message_size`) still bounds what is buffered: a
//! message above it cannot be read at all, not even for its key.

use cvp_proto::event::{Event, EventKey, EventStreamRequest, EventStreamResponse};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::ProstEncoder;

/// One message of the stream.
// Nearly every item is a `Whole`; boxing it would cost an allocation each.
#[allow(clippy::large_enum_variant)]
pub enum Incoming {
    Whole(EventStreamResponse),
    /// A message of `size` bytes, over the limit: its head only.
    TooLarge {
        head: EventStreamResponse,
        size: usize,
    },
}

/// The Subscribe call's codec; see the module doc.
pub struct EventCodec {
    pub max_event: usize,
}

impl Codec for EventCodec {
    type Encode = EventStreamRequest;
    type Decode = Incoming;
    type Encoder = ProstEncoder<EventStreamRequest>;
    type Decoder = EventDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        EventDecoder {
            max_event: self.max_event,
        }
    }
}

pub struct EventDecoder {
    max_event: usize,
}

impl Decoder for EventDecoder {
    type Item = Incoming;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Incoming>, Status> {
        use prost::bytes::Buf;
        let size = buf.remaining();
        let bad =
            |e: prost::DecodeError| Status::internal(format!("undecodable message from CVP: {e}"));
        Ok(Some(if size > self.max_event {
            Incoming::TooLarge {
                head: ResponseHead::decode(buf).map_err(bad)?.into(),
                size,
            }
        } else {
            Incoming::Whole(EventStreamResponse::decode(buf).map_err(bad)?)
        }))
    }
}

/// `EventStreamResponse` with only the fields of `EventHead`: prost skips
/// the others (data, components, notes, metadata...) as unknown fields.
#[derive(Clone, PartialEq, Message)]
struct ResponseHead {
    #[prost(message, optional, tag = "1")]
    value: Option<EventHead>,
    #[prost(message, optional, tag = "2")]
    time: Option<prost_types::Timestamp>,
    #[prost(int32, tag = "3")]
    r#type: i32,
}

/// The fields of `Event` that say which event it is and when, with the
/// same tags.
#[derive(Clone, PartialEq, Message)]
struct EventHead {
    #[prost(message, optional, tag = "1")]
    key: Option<EventKey>,
    #[prost(int32, tag = "2")]
    severity: i32,
    #[prost(message, optional, tag = "5")]
    event_type: Option<String>,
    #[prost(message, optional, tag = "10")]
    last_updated_time: Option<prost_types::Timestamp>,
    #[prost(message, optional, tag = "13")]
    delete_time: Option<prost_types::Timestamp>,
}

impl From<ResponseHead> for EventStreamResponse {
    fn from(h: ResponseHead) -> Self {
        EventStreamResponse {
            value: h.value.map(|v| {
                head_event(
                    v.key,
                    v.severity,
                    v.event_type,
                    v.last_updated_time,
                    v.delete_time,
                )
            }),
            time: h.time,
            r#type: h.r#type,
        }
    }
}

/// An event with only the fields that identify it (the head of an event
/// too large to forward).
pub fn head_of(ev: &Event) -> Event {
    head_event(
        ev.key.clone(),
        ev.severity,
        ev.event_type.clone(),
        ev.last_updated_time,
        ev.delete_time,
    )
}

fn head_event(
    key: Option<EventKey>,
    severity: i32,
    event_type: Option<String>,
    last_updated_time: Option<prost_types::Timestamp>,
    delete_time: Option<prost_types::Timestamp>,
) -> Event {
    Event {
        key,
        severity,
        event_type,
        last_updated_time,
        delete_time,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cvp_proto::event::EventData;
    use cvp_proto::Operation;

    /// The head of a big message is the same as the whole message's head,
    /// and a message under the limit is decoded whole.
    #[test]
    fn head_matches_the_whole() {
        let mut ev = Event {
            key: Some(EventKey {
                key: Some("k".into()),
                timestamp: Some(prost_types::Timestamp {
                    seconds: 5,
                    nanos: 6,
                }),
            }),
            severity: 3,
            title: Some("T".into()),
            event_type: Some("BIG".into()),
            last_updated_time: Some(prost_types::Timestamp {
                seconds: 7,
                nanos: 0,
            }),
            ..Default::default()
        };
        ev.data = Some(EventData {
            data: (0..1000).map(|i| (i.to_string(), "x".repeat(50))).collect(),
        });
        let resp = EventStreamResponse {
            value: Some(ev.clone()),
            time: ev.last_updated_time,
            r#type: Operation::Updated as i32,
        };
        let bytes = resp.encode_to_vec();
        let head: EventStreamResponse = ResponseHead::decode(bytes.as_slice()).unwrap().into();
        assert_eq!(head.value, Some(head_of(&ev)));
        assert_eq!((head.time, head.r#type), (resp.time, resp.r#type));
        assert_eq!(head_of(&ev).title, None);
    }
}
