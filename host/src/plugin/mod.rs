//! The go-plugin process shell: how Nomad launches, reaches and stops us.
//!
//! Sequence: check the magic cookie → bind a fresh unix socket → serve every
//! gRPC service on it → print the handshake line → run until SIGTERM or
//! `GRPCController.Shutdown` → stop, remove the socket, exit 0. The process
//! outlives its client's connections so an agent can reattach after a crash.

pub mod handshake;
pub mod services;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::Server;

use crate::driver::Driver;
use crate::lifecycle::{self, Shutdown};
use crate::rpc::base::BaseService;
use crate::rpc::driver::DriverService;
use crate::rpc::proto::plugin::{grpc_broker_server, grpc_controller_server, grpc_stdio_server};
use handshake::PluginSocket;

/// How long in-flight calls get to finish after shutdown is triggered. The
/// go-plugin client kills us 2 s after asking us to stop.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(1500);

/// Options of the plugin process.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Driver name reported by PluginInfo.
    pub name: String,
}

/// Runs the plugin until it is told to stop. The caller has checked the
/// magic cookie and installed logging.
pub async fn serve(options: ServeOptions) -> anyhow::Result<()> {
    let shutdown = Shutdown::new();
    lifecycle::install_signal_handlers(&shutdown).context("cannot install signal handlers")?;
    handshake::check_protocol_versions();

    let socket = PluginSocket::bind_from_env()?;
    let listener = socket.listener()?;
    let driver = Arc::new(Driver::new(options.name));

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_service_status("plugin", tonic_health::ServingStatus::Serving)
        .await;

    let router = Server::builder()
        .add_service(health_service)
        .add_service(grpc_controller_server::GrpcControllerServer::new(
            services::Controller::new(shutdown.clone()),
        ))
        .add_service(grpc_stdio_server::GrpcStdioServer::new(
            services::Stdio::new(shutdown.clone()),
        ))
        .add_service(grpc_broker_server::GrpcBrokerServer::new(
            services::Broker::new(shutdown.clone()),
        ))
        .add_service(BaseService::new(Arc::clone(&driver)).into_server())
        .add_service(DriverService::new(Arc::clone(&driver), shutdown.clone()).into_server());

    let stop = shutdown.clone();
    let server = tokio::spawn(
        router.serve_with_incoming_shutdown(UnixListenerStream::new(listener), async move {
            stop.wait().await
        }),
    );

    handshake::announce(socket.path())?;
    tracing::info!(
        name = driver.name(),
        version = driver.version(),
        socket = %socket.path().display(),
        "plugin started"
    );

    shutdown.wait().await;
    driver.stop_background();
    match tokio::time::timeout(DRAIN_TIMEOUT, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(err))) => tracing::warn!(
            error = &err as &dyn std::error::Error,
            "gRPC server ended with an error"
        ),
        Ok(Err(err)) => tracing::warn!(error = %err, "gRPC server task failed"),
        Err(_) => tracing::debug!("in-flight calls did not finish in time; exiting anyway"),
    }
    drop(socket);
    tracing::info!("plugin stopped");
    Ok(())
}
