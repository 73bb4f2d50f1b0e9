//! The same GuardLayer in front of a tonic gRPC server: a unary call with a valid
//! token reaches the service with the verified claims; without one, the client
//! sees `Unauthenticated` (tonic maps the 401).

mod common;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;

use bearer_guard::VerifiedToken;
use bytes::{Buf, BufMut, Bytes};
use common::*;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Request, Response, Status};

/// Messages are raw bytes: no protobuf needed to exercise the transport.
#[derive(Clone, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// `/test.Whoami/Get`: answers with the verified token's subject.
#[derive(Clone)]
struct Whoami;

impl tonic::server::NamedService for Whoami {
    const NAME: &'static str = "test.Whoami";
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl tower::Service<http::Request<tonic::body::Body>> for Whoami {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        let sub = req
            .extensions()
            .get::<VerifiedToken>()
            .and_then(|t| t.subject().map(str::to_owned))
            .unwrap_or_default();
        Box::pin(async move {
            let handler = tower::service_fn(move |_: Request<Bytes>| {
                let sub = sub.clone();
                async move { Ok::<_, Status>(Response::new(Bytes::from(sub))) }
            });
            Ok(tonic::server::Grpc::new(RawCodec).unary(handler, req).await)
        })
    }
}

async fn call(url: &str, token: Option<&str>) -> Result<Bytes, Status> {
    let channel = tonic::transport::Channel::from_shared(url.to_owned())
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let mut request = Request::new(Bytes::from_static(b"hi"));
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().expect("ascii");
        request.metadata_mut().insert("authorization", value);
    }
    let path = http::uri::PathAndQuery::from_static("/test.Whoami/Get");
    grpc.unary(request, path, RawCodec)
        .await
        .map(Response::into_inner)
}

#[tokio::test]
async fn guard_layer_protects_a_tonic_server() {
    let (_clock, server, guard) = fixture().await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .layer(guard.layer())
            .add_service(Whoami)
            .serve_with_incoming(incoming),
    );

    let token = svc_token(&server).await;
    assert_eq!(call(&url, Some(&token)).await.expect("accepted"), "svc");
    assert_eq!(
        call(&url, None).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    assert_eq!(
        call(&url, Some("x.y.z")).await.unwrap_err().code(),
        Code::Unauthenticated
    );
}
