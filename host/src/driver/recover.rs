//! RecoverTask: re-adopt a task after the plugin (or the agent) restarted,
//! from the `driver_state` we stored in Nomad's task handle.

use std::sync::Arc;

use super::Driver;
use super::error::{DriverError, Result};
use super::handle::TaskHandle;
use super::logging::Resume;
use super::state::DriverState;
use super::task::TaskRequest;

impl Driver {
    /// Tracks the task again and resumes waiting on its container. A task
    /// that exited while we were away reports its real exit code.
    pub async fn recover_task(&self, task: TaskRequest, driver_state: &[u8]) -> Result<()> {
        // A tracked task is recovered already; a start or recovery of the
        // same id in progress is refused rather than raced.
        let Some(_claim) = self.tasks.claim(&task.id) else {
            if self.tasks.contains(&task.id) {
                return Ok(());
            }
            return Err(DriverError::AlreadyStarted(task.id));
        };
        let state = DriverState::decode(driver_state).map_err(DriverError::InvalidRequest)?;
        let docker = self
            .docker()
            .await
            .map_err(|e| DriverError::docker("cannot reach Docker", &e))?;
        let facts = docker
            .inspect_container(&state.container_id)
            .await
            .map_err(|e| match e {
                crate::docker::DockerError::NotFound(_) => DriverError::NotFound(format!(
                    "cannot recover task {:?}: its container {:?} no longer exists",
                    task.id, state.container_id
                )),
                e => DriverError::Failed(format!(
                    "failed to inspect container for id {:?}: {e}",
                    state.container_id
                )),
            })?;
        let started_at = state.started_at_time();
        let handle = Arc::new(TaskHandle::new(
            task,
            state.container_id,
            state.image_id,
            state.network,
            started_at,
        ));
        // Resume forwarding exactly after what was forwarded before the
        // restart (Nomad re-sends the container's whole history).
        let resume = Resume::Recovered {
            log_dir: state.log_dir.as_deref(),
            facts: &facts,
        };
        if let Err(err) = self.start_log_forwarding(&docker, &handle, resume).await {
            // As Nomad does: a task whose logs cannot be forwarded is stopped,
            // and the client starts it again.
            let _ = docker
                .stop_container(&handle.container_id, std::time::Duration::ZERO)
                .await;
            return Err(err);
        }
        let (handle, inserted) = self.tasks.insert(handle);
        if inserted {
            // Image reference counts are rebuilt from recovered tasks, so a
            // restart does not leak images (Nomad forgets them).
            self.images.acquire(&handle.image_id, &handle.task.id);
            self.spawn_exit_watcher(docker, Arc::clone(&handle));
            tracing::info!(task_id = %handle.task.id, container_id = %handle.container_id, "task recovered");
        }
        Ok(())
    }
}
