//! `hashicorp.nomad.plugins.drivers.proto.Driver`: one thin function per RPC
//! calling the driver core.
//!
//! This version answers `Init`, `Capabilities` and `Shutdown`; every other
//! RPC reports UNIMPLEMENTED with the RPC's name until the task lifecycle
//! lands.

use std::sync::Arc;

use tonic::{Request, Response, Status, Streaming};

use super::BoxStream;
use super::proto::drivers::{self as pb, driver_server};
use crate::driver::Driver;

/// The Driver service over a shared [`Driver`].
#[derive(Debug, Clone)]
pub struct DriverService {
    driver: Arc<Driver>,
}

impl DriverService {
    /// Serves `driver`.
    pub fn new(driver: Arc<Driver>) -> Self {
        Self { driver }
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> driver_server::DriverServer<Self> {
        driver_server::DriverServer::new(self)
            .max_decoding_message_size(super::MAX_DECODING_MESSAGE_SIZE)
    }
}

fn not_yet<T>(rpc: &str) -> Result<T, Status> {
    Err(Status::unimplemented(format!(
        "{rpc} is not implemented by this version of wasmdock"
    )))
}

#[tonic::async_trait]
impl driver_server::Driver for DriverService {
    async fn init(
        &self,
        _request: Request<pb::InitRequest>,
    ) -> Result<Response<pb::InitResponse>, Status> {
        Ok(Response::new(pb::InitResponse {}))
    }

    async fn task_config_schema(
        &self,
        _request: Request<pb::TaskConfigSchemaRequest>,
    ) -> Result<Response<pb::TaskConfigSchemaResponse>, Status> {
        not_yet("TaskConfigSchema")
    }

    async fn capabilities(
        &self,
        _request: Request<pb::CapabilitiesRequest>,
    ) -> Result<Response<pb::CapabilitiesResponse>, Status> {
        use pb::driver_capabilities::{FsIsolation, MountConfigs};
        use pb::network_isolation_spec::NetworkIsolationMode as Mode;
        let caps = self.driver.capabilities();
        Ok(Response::new(pb::CapabilitiesResponse {
            capabilities: Some(pb::DriverCapabilities {
                send_signals: true,
                exec: true,
                fs_isolation: FsIsolation::Image.into(),
                network_isolation_modes: vec![
                    Mode::Host.into(),
                    Mode::Group.into(),
                    Mode::Task.into(),
                ],
                must_create_network: true,
                mount_configs: MountConfigs::UnknownMounts.into(),
                // Nomad's own gRPC server forgets this field; we send it so the
                // client really skips logmon.
                disable_log_collection: caps.disable_log_collection,
                dynamic_workload_users: false,
            }),
        }))
    }

    type FingerprintStream = BoxStream<pb::FingerprintResponse>;

    async fn fingerprint(
        &self,
        _request: Request<pb::FingerprintRequest>,
    ) -> Result<Response<Self::FingerprintStream>, Status> {
        not_yet("Fingerprint")
    }

    async fn recover_task(
        &self,
        _request: Request<pb::RecoverTaskRequest>,
    ) -> Result<Response<pb::RecoverTaskResponse>, Status> {
        not_yet("RecoverTask")
    }

    async fn start_task(
        &self,
        _request: Request<pb::StartTaskRequest>,
    ) -> Result<Response<pb::StartTaskResponse>, Status> {
        not_yet("StartTask")
    }

    async fn wait_task(
        &self,
        _request: Request<pb::WaitTaskRequest>,
    ) -> Result<Response<pb::WaitTaskResponse>, Status> {
        not_yet("WaitTask")
    }

    async fn stop_task(
        &self,
        _request: Request<pb::StopTaskRequest>,
    ) -> Result<Response<pb::StopTaskResponse>, Status> {
        not_yet("StopTask")
    }

    async fn destroy_task(
        &self,
        _request: Request<pb::DestroyTaskRequest>,
    ) -> Result<Response<pb::DestroyTaskResponse>, Status> {
        not_yet("DestroyTask")
    }

    async fn inspect_task(
        &self,
        _request: Request<pb::InspectTaskRequest>,
    ) -> Result<Response<pb::InspectTaskResponse>, Status> {
        not_yet("InspectTask")
    }

    type TaskStatsStream = BoxStream<pb::TaskStatsResponse>;

    async fn task_stats(
        &self,
        _request: Request<pb::TaskStatsRequest>,
    ) -> Result<Response<Self::TaskStatsStream>, Status> {
        not_yet("TaskStats")
    }

    type TaskEventsStream = BoxStream<pb::DriverTaskEvent>;

    async fn task_events(
        &self,
        _request: Request<pb::TaskEventsRequest>,
    ) -> Result<Response<Self::TaskEventsStream>, Status> {
        not_yet("TaskEvents")
    }

    async fn shutdown(
        &self,
        _request: Request<pb::ShutdownRequest>,
    ) -> Result<Response<pb::ShutdownResponse>, Status> {
        // Nomad sends this before killing the plugin; the process exits on
        // GRPCController.Shutdown or SIGTERM, which follow.
        Ok(Response::new(pb::ShutdownResponse {}))
    }

    async fn signal_task(
        &self,
        _request: Request<pb::SignalTaskRequest>,
    ) -> Result<Response<pb::SignalTaskResponse>, Status> {
        not_yet("SignalTask")
    }

    async fn exec_task(
        &self,
        _request: Request<pb::ExecTaskRequest>,
    ) -> Result<Response<pb::ExecTaskResponse>, Status> {
        not_yet("ExecTask")
    }

    type ExecTaskStreamingStream = BoxStream<pb::ExecTaskStreamingResponse>;

    async fn exec_task_streaming(
        &self,
        _request: Request<Streaming<pb::ExecTaskStreamingRequest>>,
    ) -> Result<Response<Self::ExecTaskStreamingStream>, Status> {
        not_yet("ExecTaskStreaming")
    }

    async fn create_network(
        &self,
        _request: Request<pb::CreateNetworkRequest>,
    ) -> Result<Response<pb::CreateNetworkResponse>, Status> {
        not_yet("CreateNetwork")
    }

    async fn destroy_network(
        &self,
        _request: Request<pb::DestroyNetworkRequest>,
    ) -> Result<Response<pb::DestroyNetworkResponse>, Status> {
        not_yet("DestroyNetwork")
    }
}
