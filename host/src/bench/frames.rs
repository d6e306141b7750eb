//! A stand-in for CVP that costs the bench almost nothing: a gRPC
//! `EventService/Subscribe` that sends messages encoded once, up front, as
//! they are, instead of the simulator's stream, which builds and encodes
//! every message as it goes (it tops out near 120,000 events/s on the core
//! the host also needs). Hand-written on tonic's server parts, with a codec
//! that passes bytes through: what is measured is the host, not the load
//! generator. Subscribe only; every other method is UNIMPLEMENTED.

use bytes::{BufMut, Bytes};
use cvp_proto::event::{EventStreamRequest, EventStreamResponse};
use cvp_proto::Operation;
use prost::Message;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::codec::{Codec, EncodeBuf, Encoder};
use tonic::codegen::{http, BoxFuture, Context, Poll, Service, StdError};
use tonic::server::{Grpc, NamedService, ServerStreamingService};
use tonic::{Response, Status};

/// Distinct messages encoded up front; a longer feed repeats them (each is
/// still an update the host merges and delivers).
const DISTINCT: usize = 20_000;

#[derive(Clone)]
pub struct Frames {
    frames: Arc<Vec<Bytes>>,
    count: u64,
    /// When the first Subscribe came: the feed's start.
    started: Arc<OnceLock<Instant>>,
}

impl Frames {
    /// `count` UPDATED messages of generated events, encoded now.
    pub fn new(count: u64) -> Frames {
        let n = usize::try_from(count).unwrap_or(DISTINCT).min(DISTINCT);
        let frames = cvp_simulator::sample_events(n.max(1), 11)
            .into_iter()
            .map(|event| {
                let time = event.last_updated_time;
                Bytes::from(
                    EventStreamResponse {
                        value: Some(event),
                        time,
                        r#type: Operation::Updated as i32,
                    }
                    .encode_to_vec(),
                )
            })
            .collect();
        Frames {
            frames: Arc::new(frames),
            count,
            started: Arc::new(OnceLock::new()),
        }
    }

    pub fn started(&self) -> Option<Instant> {
        self.started.get().copied()
    }

    /// Serves on `listener` until `stop`.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        stop: CancellationToken,
    ) -> anyhow::Result<()> {
        tonic::transport::Server::builder()
            .add_service(self)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                stop.cancelled_owned(),
            )
            .await?;
        Ok(())
    }
}

/// Bytes out as they are; requests decoded as usual.
struct Passthrough;

impl Codec for Passthrough {
    type Encode = Bytes;
    type Decode = EventStreamRequest;
    type Encoder = Raw;
    type Decoder = tonic_prost::ProstDecoder<EventStreamRequest>;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Self::Decoder {
        Default::default()
    }
}

struct Raw;

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put(item);
        Ok(())
    }
}

type FrameStream = Pin<Box<dyn futures::Stream<Item = Result<Bytes, Status>> + Send>>;

impl ServerStreamingService<EventStreamRequest> for Frames {
    type Response = Bytes;
    type ResponseStream = FrameStream;
    type Future = std::future::Ready<Result<Response<FrameStream>, Status>>;

    fn call(&mut self, _request: tonic::Request<EventStreamRequest>) -> Self::Future {
        self.started.get_or_init(Instant::now);
        let frames = self.frames.clone();
        let stream = futures::stream::iter(
            (0..self.count).map(move |i| Ok(frames[(i as usize) % frames.len()].clone())),
        );
        std::future::ready(Ok(Response::new(Box::pin(stream))))
    }
}

impl NamedService for Frames {
    const NAME: &'static str = "arista.event.v1.EventService";
}

impl<B> Service<http::Request<B>> for Frames
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let svc = self.clone();
        if req.uri().path() == "/arista.event.v1.EventService/Subscribe" {
            Box::pin(async move { Ok(Grpc::new(Passthrough).server_streaming(svc, req).await) })
        } else {
            Box::pin(async move {
                let mut response = http::Response::new(tonic::body::Body::default());
                let headers = response.headers_mut();
                headers.insert(
                    Status::GRPC_STATUS,
                    (tonic::Code::Unimplemented as i32).into(),
                );
                headers.insert(
                    http::header::CONTENT_TYPE,
                    tonic::metadata::GRPC_CONTENT_TYPE,
                );
                Ok(response)
            })
        }
    }
}
