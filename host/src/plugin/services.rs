//! The go-plugin services every plugin process serves next to its own:
//! the controller (graceful shutdown), stdio and broker.

use std::future::Future as _;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio_stream::{Stream, StreamExt as _};
use tokio_util::sync::WaitForCancellationFutureOwned;
use tonic::{Request, Response, Status, Streaming};

use crate::lifecycle::Shutdown;
use crate::rpc::BoxStream;
use crate::rpc::proto::plugin::{
    ConnInfo, Empty, StdioData, grpc_broker_server, grpc_controller_server, grpc_stdio_server,
};

/// `plugin.GRPCController`: Shutdown asks the process to exit with status 0.
#[derive(Debug, Clone)]
pub struct Controller {
    shutdown: Shutdown,
}

impl Controller {
    /// A controller triggering `shutdown`.
    pub fn new(shutdown: Shutdown) -> Self {
        Self { shutdown }
    }
}

#[tonic::async_trait]
impl grpc_controller_server::GrpcController for Controller {
    async fn shutdown(&self, _request: Request<Empty>) -> Result<Response<Empty>, Status> {
        self.shutdown.trigger("GRPCController.Shutdown");
        Ok(Response::new(Empty {}))
    }
}

/// `plugin.GRPCStdio`: go-plugin forwards a plugin's stdout and stderr here.
/// Our stdout carries nothing after the handshake and our stderr goes to the
/// agent directly, so the stream stays open and empty until shutdown.
#[derive(Debug, Clone)]
pub struct Stdio {
    shutdown: Shutdown,
}

impl Stdio {
    /// A stdio service that ends its streams on `shutdown`.
    pub fn new(shutdown: Shutdown) -> Self {
        Self { shutdown }
    }
}

#[tonic::async_trait]
impl grpc_stdio_server::GrpcStdio for Stdio {
    type StreamStdioStream = BoxStream<StdioData>;

    async fn stream_stdio(
        &self,
        _request: Request<()>,
    ) -> Result<Response<Self::StreamStdioStream>, Status> {
        Ok(Response::new(async_stream_until(self.shutdown.clone())))
    }
}

/// `plugin.GRPCBroker`: brokering extra connections is never used by task
/// drivers; the stream is accepted, drained and held open until shutdown.
#[derive(Debug, Clone)]
pub struct Broker {
    shutdown: Shutdown,
}

impl Broker {
    /// A broker that ends its streams on `shutdown`.
    pub fn new(shutdown: Shutdown) -> Self {
        Self { shutdown }
    }
}

#[tonic::async_trait]
impl grpc_broker_server::GrpcBroker for Broker {
    type StartStreamStream = BoxStream<ConnInfo>;

    async fn start_stream(
        &self,
        request: Request<Streaming<ConnInfo>>,
    ) -> Result<Response<Self::StartStreamStream>, Status> {
        let mut inbound = request.into_inner();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    item = inbound.next() => match item {
                        Some(Ok(info)) => tracing::debug!(service_id = info.service_id, "ignoring broker request"),
                        _ => break,
                    },
                    () = shutdown.wait() => break,
                }
            }
        });
        Ok(Response::new(async_stream_until(self.shutdown.clone())))
    }
}

/// A stream that yields nothing and ends when `shutdown` is triggered.
fn async_stream_until<T: Send + 'static>(shutdown: Shutdown) -> BoxStream<T> {
    Box::pin(UntilShutdown::<T> {
        wait: Box::pin(shutdown.token().clone().cancelled_owned()),
        item: PhantomData,
    })
}

struct UntilShutdown<T> {
    wait: Pin<Box<WaitForCancellationFutureOwned>>,
    item: PhantomData<fn() -> T>,
}

impl<T> Stream for UntilShutdown<T> {
    type Item = Result<T, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.wait.as_mut().poll(cx).map(|()| None)
    }
}
