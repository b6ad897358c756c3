//! The demo's gRPC messages and services, written out by hand with prost and tonic's
//! generic server and client (no protoc step):
//!
//! ```proto
//! package epro;
//! service Reports { rpc Submit(SubmitReport) returns (Submitted); }   // epro-service
//! service Data { rpc Store(StoreReport) returns (Stored); }          // data-service
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll};

use strand_instrument::grpc::{GrpcClientLayer, GrpcService};
use tonic::codegen::{BoxFuture, http};
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};
use tonic_prost::ProstCodec;

/// A patient's answers to a questionnaire.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SubmitReport {
    /// The patient.
    #[prost(uint64, tag = "1")]
    pub patient_id: u64,
    /// One score (0–10) per question.
    #[prost(uint32, repeated, tag = "2")]
    pub answers: Vec<u32>,
}

/// The stored report.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Submitted {
    /// Its id.
    #[prost(uint64, tag = "1")]
    pub report_id: u64,
    /// Total score.
    #[prost(uint32, tag = "2")]
    pub score: u32,
}

/// A validated report to store.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StoreReport {
    /// The patient.
    #[prost(uint64, tag = "1")]
    pub patient_id: u64,
    /// Total score.
    #[prost(uint32, tag = "2")]
    pub score: u32,
    /// The answers as JSON.
    #[prost(string, tag = "3")]
    pub answers_json: String,
}

/// Where it was stored.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Stored {
    /// Its id.
    #[prost(uint64, tag = "1")]
    pub report_id: u64,
}

/// `/epro.Reports/Submit`.
pub const SUBMIT: &str = "/epro.Reports/Submit";
/// `/epro.Data/Store`.
pub const STORE: &str = "/epro.Data/Store";

type Handler<Req, Resp> = Arc<dyn Fn(Req) -> BoxFuture<Resp, Status> + Send + Sync>;

/// A gRPC service with one unary method, served by an async function.
pub struct UnaryServer<Req, Resp> {
    name: &'static str,
    path: &'static str,
    handler: Handler<Req, Resp>,
}

impl<Req, Resp> Clone for UnaryServer<Req, Resp> {
    fn clone(&self) -> Self {
        Self { name: self.name, path: self.path, handler: self.handler.clone() }
    }
}

impl<Req, Resp> UnaryServer<Req, Resp> {
    /// Serves `path` of service `name` with `handler`.
    pub fn new<F, Fut>(name: &'static str, path: &'static str, handler: F) -> Self
    where
        F: Fn(Req) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
    {
        Self { name, path, handler: Arc::new(move |req| Box::pin(handler(req))) }
    }
}

struct Call<Req, Resp>(Handler<Req, Resp>);

impl<Req: Send + 'static, Resp: Send + 'static> UnaryService<Req> for Call<Req, Resp> {
    type Response = Resp;
    type Future = BoxFuture<Response<Resp>, Status>;

    fn call(&mut self, request: Request<Req>) -> Self::Future {
        let fut = (self.0)(request.into_inner());
        Box::pin(async move { fut.await.map(Response::new) })
    }
}

impl<Req, Resp, B> tower::Service<http::Request<B>> for UnaryServer<Req, Resp>
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            if req.uri().path() != this.path {
                return Ok(Status::unimplemented(format!("no method {}", req.uri().path())).into_http());
            }
            let mut grpc = Grpc::new(ProstCodec::<Resp, Req>::default());
            Ok(grpc.unary(Call(this.handler), req).await)
        })
    }
}

/// `NamedService` needs a constant name; the demo's two services each get a type.
macro_rules! named {
    ($ty:ident, $name:literal, $req:ty, $resp:ty) => {
        /// A named gRPC service for tonic's router.
        #[derive(Clone)]
        pub struct $ty(pub UnaryServer<$req, $resp>);

        impl NamedService for $ty {
            const NAME: &'static str = $name;
        }

        impl<B> tower::Service<http::Request<B>> for $ty
        where
            B: tonic::codegen::Body + Send + 'static,
            B::Error: Into<tonic::codegen::StdError> + Send + 'static,
        {
            type Response = http::Response<tonic::body::Body>;
            type Error = Infallible;
            type Future = BoxFuture<Self::Response, Infallible>;

            fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
                tower::Service::<http::Request<B>>::poll_ready(&mut self.0, cx)
            }

            fn call(&mut self, req: http::Request<B>) -> Self::Future {
                self.0.call(req)
            }
        }
    };
}

named!(ReportsService, "epro.Reports", SubmitReport, Submitted);
named!(DataService, "epro.Data", StoreReport, Stored);

/// A traced client channel to `url` (connected on first use).
pub fn channel(url: &str) -> anyhow::Result<GrpcService<Channel>> {
    let channel = Endpoint::from_shared(url.to_owned())?.connect_lazy();
    Ok(tower::Layer::layer(&GrpcClientLayer, channel))
}

/// Calls a unary method.
pub async fn unary<Req, Resp>(
    channel: &GrpcService<Channel>,
    path: &'static str,
    req: Req,
) -> Result<Resp, Status>
where
    Req: prost::Message + Send + Sync + 'static,
    Resp: prost::Message + Default + Send + Sync + 'static,
{
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.map_err(|e| Status::unavailable(format!("connecting: {e}")))?;
    let path = http::uri::PathAndQuery::from_static(path);
    grpc.unary(Request::new(req), path, ProstCodec::<Req, Resp>::default()).await.map(Response::into_inner)
}
