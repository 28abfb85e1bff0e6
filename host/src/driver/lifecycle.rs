//! WaitTask, StopTask, DestroyTask, InspectTask, SignalTask, and the exit
//! watcher every task has.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::Driver;
use super::error::{DriverError, Result};
use super::handle::{ExitResult, TaskHandle};
use super::logging::LOG_DRAIN_TIMEOUT;
use super::network::DriverNetwork;
use super::signals;
use crate::docker::{Docker, DockerError};

/// How long the exit watcher's inspect may take.
const EXIT_INSPECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pause between the exit watcher's attempts while the engine is
/// away: a task stopped right after the engine comes back is seen exiting
/// within this, and a failed attempt on a local socket costs nothing.
const EXIT_WAIT_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Nomad's task states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Neither known running nor exited.
    Unknown,
    /// Running.
    Running,
    /// Ended.
    Exited,
}

/// What InspectTask reports.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskStatus {
    /// Task id.
    pub id: String,
    /// Task name.
    pub name: String,
    /// State.
    pub state: TaskState,
    /// Start time.
    pub started_at: SystemTime,
    /// End time, or the Unix epoch while running.
    pub completed_at: SystemTime,
    /// Exit result, default while running.
    pub exit: ExitResult,
    /// The container id.
    pub container_id: String,
    /// The network override.
    pub network: Option<DriverNetwork>,
    /// Driver attributes besides the container id: the policy hooks'
    /// counters (`policy.<module>.<hook>.calls|errors|timeouts|p50_us|p99_us`).
    pub attributes: Vec<(String, String)>,
}

impl Driver {
    /// Watches the container until it stops, then records the exit result.
    /// Engine hiccups (restart, timeout) are retried; a container removed
    /// behind our back ends the task with an error.
    pub(crate) fn spawn_exit_watcher(&self, docker: Docker, handle: Arc<TaskHandle>) {
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(500);
            let mut failures = 0u32;
            let code = loop {
                let waited = tokio::select! {
                    waited = docker.wait_container(&handle.container_id) => waited,
                    () = handle.workers().cancelled() => return,
                };
                match waited {
                    Ok(code) => break Ok(code),
                    Err(DockerError::NotFound(message)) => {
                        break Err(format!("container removed: {message}"));
                    }
                    Err(err) => {
                        if failures == 0 {
                            tracing::warn!(task_id = %handle.task.id, error = %err, "waiting for the container failed; retrying");
                        } else {
                            tracing::debug!(task_id = %handle.task.id, error = %err, failures, "waiting for the container failed again; retrying");
                        }
                        failures += 1;
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            () = handle.workers().cancelled() => return,
                        }
                        backoff = (backoff * 2).min(EXIT_WAIT_BACKOFF_MAX);
                    }
                }
            };
            let result = match code {
                Err(message) => ExitResult {
                    exit_code: 0,
                    signal: 0,
                    oom_killed: false,
                    err: Some(message),
                },
                Ok(exit_code) => {
                    let oom_killed = match tokio::time::timeout(
                        EXIT_INSPECT_TIMEOUT,
                        docker.inspect_container(&handle.container_id),
                    )
                    .await
                    {
                        Ok(Ok(facts)) => facts.oom_killed,
                        Ok(Err(err)) => {
                            tracing::warn!(task_id = %handle.task.id, error = %err, "cannot inspect the exited container");
                            false
                        }
                        Err(_) => false,
                    };
                    let err = if oom_killed {
                        Some("OOM Killed".to_owned())
                    } else if exit_code != 0 {
                        Some(format!(
                            "Docker container exited with non-zero exit code: {exit_code}"
                        ))
                    } else {
                        None
                    };
                    ExitResult {
                        exit_code,
                        signal: 0,
                        oom_killed,
                        err,
                    }
                }
            };
            // The client may stop logmon once it sees the exit: let the
            // container's last lines reach the FIFOs first.
            handle.mark_container_stopped();
            if !handle.logs_drained(LOG_DRAIN_TIMEOUT).await {
                tracing::warn!(task_id = %handle.task.id, "the container's last log lines were not forwarded in time");
            }
            tracing::info!(task_id = %handle.task.id, container_id = %handle.container_id, exit_code = result.exit_code, oom_killed = result.oom_killed, "task exited");
            handle.set_exit(result);
        });
    }

    /// Blocks until the task exits; every caller gets the same result.
    pub async fn wait_task(&self, id: &str) -> Result<ExitResult> {
        let handle = self.tasks.get(id)?;
        Ok(handle.wait().await)
    }

    /// Stops a task: with no signal, Docker's stop (image STOPSIGNAL or
    /// SIGTERM, then SIGKILL after `timeout`); with a signal, send it, wait
    /// up to `timeout` for the exit, then kill.
    pub async fn stop_task(&self, id: &str, timeout: Duration, signal: &str) -> Result<()> {
        let handle = self.tasks.get(id)?;
        if handle.exit().is_some() {
            return Ok(());
        }
        let docker = self
            .docker()
            .await
            .map_err(|e| DriverError::docker("cannot reach Docker", &e))?;
        let container = handle.container_id.clone();
        let stop_failed = |err: DockerError| {
            DriverError::Failed(format!("Failed to stop container {container}: {err}"))
        };
        if signal.is_empty() {
            return docker
                .stop_container(&handle.container_id, timeout)
                .await
                .map_err(stop_failed);
        }
        let signal = signals::parse(signal).map_err(DriverError::InvalidRequest)?;
        match docker.kill_container(&handle.container_id, signal).await {
            Ok(())
            | Err(DockerError::NotFound(_) | DockerError::NotModified | DockerError::Conflict(_)) =>
                {}
            Err(err) => return Err(stop_failed(err)),
        }
        if tokio::time::timeout(timeout, handle.wait()).await.is_err() {
            docker
                .stop_container(&handle.container_id, Duration::ZERO)
                .await
                .map_err(stop_failed)?;
        }
        Ok(())
    }

    /// Removes a task. A running task needs `force`; a container already
    /// removed out of band is fine.
    pub async fn destroy_task(&self, id: &str, force: bool) -> Result<()> {
        let handle = self.tasks.get(id)?;
        let config = self.require_config()?;
        let docker = self
            .docker()
            .await
            .map_err(|e| DriverError::docker("cannot reach Docker", &e))?;
        match docker.inspect_container(&handle.container_id).await {
            Err(DockerError::NotFound(_)) => {
                tracing::debug!(task_id = id, "container was removed out of band");
            }
            Err(err) => {
                return Err(DriverError::docker(
                    "failed to inspect container state",
                    &err,
                ));
            }
            Ok(facts) if facts.running && !force => {
                return Err(DriverError::InvalidRequest(
                    "must call StopTask for the given task before Destroy or set force to true"
                        .to_owned(),
                ));
            }
            Ok(facts) => {
                if facts.running {
                    docker
                        .stop_container(&handle.container_id, Duration::ZERO)
                        .await
                        .map_err(|e| DriverError::docker("failed to stop the container", &e))?;
                }
                if config.plugin.gc.container
                    && let Err(err) = docker.remove_container(&handle.container_id, true).await
                {
                    tracing::warn!(task_id = id, error = %err, "failed to remove the container");
                }
            }
        }
        if handle.mark_destroyed() {
            self.release_image(&handle.image_id, id).await;
        }
        self.tasks.remove(id);
        Ok(())
    }

    /// The task's state as Docker and the handle know it.
    pub async fn inspect_task(&self, id: &str) -> Result<TaskStatus> {
        let handle = self.tasks.get(id)?;
        let (state, exit, completed_at) = match handle.exit() {
            Some((exit, at)) => (TaskState::Exited, exit, at),
            None => {
                let docker = self
                    .docker()
                    .await
                    .map_err(|e| DriverError::docker("cannot reach Docker", &e))?;
                let state = match docker.inspect_container(&handle.container_id).await {
                    Ok(facts) if facts.running => TaskState::Running,
                    Ok(facts) if facts.dead => TaskState::Exited,
                    _ => TaskState::Unknown,
                };
                (state, ExitResult::default(), SystemTime::UNIX_EPOCH)
            }
        };
        Ok(TaskStatus {
            id: handle.task.id.clone(),
            name: handle.task.name.clone(),
            state,
            started_at: handle.started_at,
            completed_at,
            exit,
            container_id: handle.container_id.clone(),
            network: handle.network.clone(),
            attributes: self
                .policy()
                .map(|policy| policy.attributes())
                .unwrap_or_default(),
        })
    }

    /// Sends a signal (`SIGHUP`, …) to the task.
    pub async fn signal_task(&self, id: &str, signal: &str) -> Result<()> {
        let handle = self.tasks.get(id)?;
        let signal = signals::parse(signal).map_err(DriverError::InvalidRequest)?;
        let docker = self
            .docker()
            .await
            .map_err(|e| DriverError::docker("cannot reach Docker", &e))?;
        docker
            .kill_container(&handle.container_id, signal)
            .await
            .map_err(|e| {
                DriverError::Failed(format!(
                    "failed to signal container {}: {e}",
                    handle.container_id
                ))
            })
    }
}
