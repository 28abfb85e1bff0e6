//! `hashicorp.nomad.plugins.drivers.proto.Driver`: one thin function per RPC
//! calling the driver core.
//!

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::proto::drivers::{self as pb, driver_server};
use super::{BoxStream, convert};
use crate::driver::Driver;
use crate::driver::fingerprint::FINGERPRINT_PERIOD;
use crate::driver::state::STATE_VERSION;
use crate::lifecycle::Shutdown;

/// The Driver service over a shared [`Driver`].
#[derive(Debug, Clone)]
pub struct DriverService {
    driver: Arc<Driver>,
    shutdown: Shutdown,
}

impl DriverService {
    /// Serves `driver`; streams end on `shutdown`.
    pub fn new(driver: Arc<Driver>, shutdown: Shutdown) -> Self {
        Self { driver, shutdown }
    }

    /// The tonic server for this service.
    pub fn into_server(self) -> driver_server::DriverServer<Self> {
        driver_server::DriverServer::new(self)
            .max_decoding_message_size(super::MAX_DECODING_MESSAGE_SIZE)
    }
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
        Ok(Response::new(pb::TaskConfigSchemaResponse {
            spec: Some(convert::spec(&crate::config::task::schema())),
        }))
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
        let (sender, receiver) = mpsc::channel(1);
        let driver = Arc::clone(&self.driver);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let fingerprint = convert::fingerprint(&driver.fingerprint().await);
                if sender.send(Ok(fingerprint)).await.is_err() {
                    break;
                }
                tokio::select! {
                    () = tokio::time::sleep(FINGERPRINT_PERIOD) => {}
                    () = sender.closed() => break,
                    () = shutdown.wait() => break,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn recover_task(
        &self,
        request: Request<pb::RecoverTaskRequest>,
    ) -> Result<Response<pb::RecoverTaskResponse>, Status> {
        let request = request.into_inner();
        let handle = request
            .handle
            .ok_or_else(|| Status::invalid_argument("RecoverTask needs a handle"))?;
        let config = handle.config.ok_or_else(|| {
            Status::invalid_argument("RecoverTask needs the handle's task config")
        })?;
        let mut task = convert::task_request(&config);
        if !request.task_id.is_empty() {
            task.id = request.task_id;
        }
        self.driver.recover_task(task, &handle.driver_state).await?;
        Ok(Response::new(pb::RecoverTaskResponse {}))
    }

    async fn start_task(
        &self,
        request: Request<pb::StartTaskRequest>,
    ) -> Result<Response<pb::StartTaskResponse>, Status> {
        let config = request
            .into_inner()
            .task
            .ok_or_else(|| Status::invalid_argument("StartTask needs a task"))?;
        let task = convert::task_request(&config);
        let started = self
            .driver
            .start_task(task, &config.msgpack_driver_config)
            .await?;
        let handle = &started.handle;
        Ok(Response::new(pb::StartTaskResponse {
            result: pb::start_task_response::Result::Success.into(),
            driver_error_msg: String::new(),
            handle: Some(pb::TaskHandle {
                version: i32::try_from(STATE_VERSION).unwrap_or(1),
                config: Some(config),
                state: pb::TaskState::Running.into(),
                driver_state: handle.driver_state().encode(),
            }),
            network_override: handle.network.as_ref().map(convert::network_override),
        }))
    }

    async fn wait_task(
        &self,
        request: Request<pb::WaitTaskRequest>,
    ) -> Result<Response<pb::WaitTaskResponse>, Status> {
        let result = self.driver.wait_task(&request.into_inner().task_id).await?;
        Ok(Response::new(pb::WaitTaskResponse {
            result: Some(convert::exit_result(&result)),
            err: result.err.unwrap_or_default(),
        }))
    }

    async fn stop_task(
        &self,
        request: Request<pb::StopTaskRequest>,
    ) -> Result<Response<pb::StopTaskResponse>, Status> {
        let request = request.into_inner();
        let timeout = convert::duration(request.timeout.as_ref());
        self.driver
            .stop_task(&request.task_id, timeout, &request.signal)
            .await?;
        Ok(Response::new(pb::StopTaskResponse {}))
    }

    async fn destroy_task(
        &self,
        request: Request<pb::DestroyTaskRequest>,
    ) -> Result<Response<pb::DestroyTaskResponse>, Status> {
        let request = request.into_inner();
        self.driver
            .destroy_task(&request.task_id, request.force)
            .await?;
        Ok(Response::new(pb::DestroyTaskResponse {}))
    }

    async fn inspect_task(
        &self,
        request: Request<pb::InspectTaskRequest>,
    ) -> Result<Response<pb::InspectTaskResponse>, Status> {
        let status = self
            .driver
            .inspect_task(&request.into_inner().task_id)
            .await?;
        Ok(Response::new(convert::inspect_response(&status)))
    }

    type TaskStatsStream = BoxStream<pb::TaskStatsResponse>;

    async fn task_stats(
        &self,
        request: Request<pb::TaskStatsRequest>,
    ) -> Result<Response<Self::TaskStatsStream>, Status> {
        let request = request.into_inner();
        let interval = convert::duration(request.collection_interval.as_ref());
        let samples = self.driver.task_stats(&request.task_id, interval).await?;
        let stream = samples.map(|usage| {
            Ok(pb::TaskStatsResponse {
                stats: Some(convert::task_stats(&usage)),
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    type TaskEventsStream = BoxStream<pb::DriverTaskEvent>;

    async fn task_events(
        &self,
        _request: Request<pb::TaskEventsRequest>,
    ) -> Result<Response<Self::TaskEventsStream>, Status> {
        let mut events = self.driver.events.subscribe();
        let (sender, receiver) = mpsc::channel(16);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    event = events.recv() => event,
                    () = sender.closed() => break,
                    () = shutdown.wait() => break,
                };
                match event {
                    Ok(event) => {
                        if sender.send(Ok(convert::task_event(&event))).await.is_err() {
                            break;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(
                            missed,
                            "a TaskEvents consumer fell behind; dropped its oldest events"
                        );
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
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
        request: Request<pb::SignalTaskRequest>,
    ) -> Result<Response<pb::SignalTaskResponse>, Status> {
        let request = request.into_inner();
        self.driver
            .signal_task(&request.task_id, &request.signal)
            .await?;
        Ok(Response::new(pb::SignalTaskResponse {}))
    }

    async fn exec_task(
        &self,
        request: Request<pb::ExecTaskRequest>,
    ) -> Result<Response<pb::ExecTaskResponse>, Status> {
        let request = request.into_inner();
        let timeout = convert::duration(request.timeout.as_ref());
        let outcome = self
            .driver
            .exec_task(&request.task_id, &request.command, timeout)
            .await?;
        Ok(Response::new(pb::ExecTaskResponse {
            stdout: outcome.stdout,
            stderr: outcome.stderr,
            result: Some(convert::exit_result(&outcome.exit)),
        }))
    }

    type ExecTaskStreamingStream = BoxStream<pb::ExecTaskStreamingResponse>;

    async fn exec_task_streaming(
        &self,
        request: Request<Streaming<pb::ExecTaskStreamingRequest>>,
    ) -> Result<Response<Self::ExecTaskStreamingStream>, Status> {
        let stream =
            super::exec::exec_streaming(Arc::clone(&self.driver), request.into_inner()).await?;
        Ok(Response::new(stream))
    }

    async fn create_network(
        &self,
        request: Request<pb::CreateNetworkRequest>,
    ) -> Result<Response<pb::CreateNetworkResponse>, Status> {
        let request = request.into_inner();
        if request.alloc_id.is_empty() {
            return Err(Status::invalid_argument("CreateNetwork needs an alloc_id"));
        }
        let (isolation, created) = self
            .driver
            .create_network(&request.alloc_id, &request.hostname)
            .await?;
        Ok(Response::new(pb::CreateNetworkResponse {
            isolation_spec: Some(convert::isolation_spec(&isolation)),
            created,
        }))
    }

    async fn destroy_network(
        &self,
        request: Request<pb::DestroyNetworkRequest>,
    ) -> Result<Response<pb::DestroyNetworkResponse>, Status> {
        let request = request.into_inner();
        let spec = request
            .isolation_spec
            .ok_or_else(|| Status::invalid_argument("DestroyNetwork needs the isolation spec"))?;
        self.driver
            .destroy_network(&request.alloc_id, &convert::isolation(&spec))
            .await?;
        Ok(Response::new(pb::DestroyNetworkResponse {}))
    }
}
