//! StartTask: decode the task's config, make sure the image is there, build
//! the container, create and start it, and track it.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::Driver;
use super::error::{DriverError, Result};
use super::handle::TaskHandle;
use super::images::{self, PullTicket};
use super::logging::Resume;
use super::network::{DriverNetwork, detect_ip};
use super::task::TaskRequest;
use crate::config::ConfigError;
use crate::config::PluginConfig;
use crate::config::task::TaskConfig;
use crate::docker::image::{PullError, PullProgress, RegistryAuth};
use crate::docker::spec::{self, ContainerSpec, HOSTS_FILE, RealHostFiles, SpecInputs};
use crate::docker::{Docker, DockerError, auth, reference};

/// How often a long pull reports its progress as a task event.
const PULL_PROGRESS_EVERY: Duration = Duration::from_secs(120);
/// Retries of engine calls that failed for a transient reason.
const TRANSIENT_RETRIES: u32 = 5;

/// What StartTask hands back to Nomad.
#[derive(Debug)]
pub struct Started {
    /// The tracked task.
    pub handle: Arc<TaskHandle>,
}

/// `50 ms · 2^attempt`, at most a minute (Nomad's create/start backoff).
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(50)
        .saturating_mul(2u32.saturating_pow(attempt))
        .min(Duration::from_secs(60))
}

impl Driver {
    /// Starts a task.
    pub async fn start_task(&self, task: TaskRequest, driver_config: &[u8]) -> Result<Started> {
        // One start per task id at a time: concurrent starts would race for
        // the container name, removing each other's containers.
        let Some(_claim) = self.tasks.claim(&task.id) else {
            return Err(DriverError::AlreadyStarted(task.id));
        };
        let configured = self.require_config()?;
        let mut config = TaskConfig::from_msgpack(driver_config)?;
        let mut task = task;
        // Before anything is pulled: a denied image never reaches the node.
        self.admit(&mut task, &mut config, &configured.plugin)
            .await?;
        let docker = self
            .docker()
            .await
            .map_err(|e| DriverError::docker("failed to connect to Docker", &e))?;
        let facts = docker
            .facts()
            .await
            .map_err(|e| DriverError::docker("failed to get docker info", &e))?;

        // The image is referenced from here on, so a scheduled removal
        // cannot take it away while the container is being made.
        let image_id = self.ensure_image(&docker, &task, &config).await?;
        match self
            .make_container(&docker, &task, &config, &configured, &facts, &image_id)
            .await
        {
            Ok(started) => Ok(started),
            Err(err) => {
                self.release_image(&image_id, &task.id).await;
                Err(err)
            }
        }
    }

    /// Builds, creates and starts the container, then tracks the task.
    async fn make_container(
        &self,
        docker: &Docker,
        task: &TaskRequest,
        config: &TaskConfig,
        configured: &super::Configured,
        facts: &crate::docker::engine::EngineFacts,
        image_id: &str,
    ) -> Result<Started> {
        let docker = docker.clone();
        let compute = configured
            .agent
            .as_ref()
            .map(|a| a.compute)
            .unwrap_or_default();
        let host_cpus =
            std::thread::available_parallelism().map_or(1, |n| i64::try_from(n.get()).unwrap_or(1));
        let gpu = self
            .choose_gpu(task, config, &configured.plugin, facts)
            .await?;
        let inputs = SpecInputs {
            task,
            config,
            plugin: &configured.plugin,
            engine: facts,
            compute,
            host_cpus,
            image: image_id,
            gpu: gpu.as_ref(),
        };
        let spec = spec::container_spec(&inputs, &RealHostFiles).map_err(|e| {
            DriverError::InvalidConfig(ConfigError::new(
                e.key,
                format!(
                    "Failed to create container configuration for image {:?} ({image_id:?}): {}",
                    config.image, e.message
                ),
            ))
        })?;
        for warning in &spec.warnings {
            tracing::warn!(task_id = %task.id, "{warning}");
        }
        write_files(&spec).await?;

        let container_id = self
            .create_container(&docker, &spec, &configured.plugin.container_exists_attempts)
            .await?;
        if let Err(err) = self.start_container(&docker, &container_id).await {
            if let Err(remove) = docker.remove_container(&container_id, true).await {
                tracing::warn!(container_id, error = %remove, "failed to remove the container that did not start");
            }
            return Err(err);
        }
        let facts = match docker.inspect_container(&container_id).await {
            Ok(facts) => facts,
            Err(err) => {
                let _ = docker.remove_container(&container_id, true).await;
                return Err(DriverError::recoverable(format!(
                    "failed to inspect started container {container_id}: {err}"
                )));
            }
        };
        let (ip, auto_advertise) = detect_ip(&facts.networks, config.advertise_ipv6_address);
        // Always reported, as Nomad's driver does, even with no address.
        let network = Some(DriverNetwork {
            port_map: config.port_map.clone(),
            ip,
            auto_advertise,
        });

        let handle = Arc::new(TaskHandle::new(
            task.clone(),
            container_id,
            image_id.to_owned(),
            network,
            SystemTime::now(),
        ));
        // A fresh container: forward its output from the beginning.
        let resume = Resume::Fresh { facts: &facts };
        if let Err(err) = self.start_log_forwarding(&docker, &handle, resume).await {
            let _ = docker.remove_container(&handle.container_id, true).await;
            return Err(err);
        }
        let (handle, inserted) = self.tasks.insert(handle);
        if !inserted {
            return Err(DriverError::AlreadyStarted(handle.task.id.clone()));
        }
        self.spawn_exit_watcher(docker, Arc::clone(&handle));
        tracing::info!(task_id = %handle.task.id, container_id = %handle.container_id, "task started");
        Ok(Started { handle })
    }

    /// Makes sure the task's image is present and returns its id: pulled
    /// when forced, when the tag is `latest` or when it is missing; loaded
    /// from the task dir with `load`. Concurrent starts share one pull.
    async fn ensure_image(
        &self,
        docker: &Docker,
        task: &TaskRequest,
        config: &TaskConfig,
    ) -> Result<String> {
        let image = reference::parse(&config.image)
            .map_err(|message| DriverError::InvalidConfig(ConfigError::new("image", message)))?;
        let full = image.full();
        let mut pull = config.force_pull || image.is_latest();
        // Twice at most: a removal of an unused image may win the race
        // between our lookup and our reference, and then we pull it back.
        for _ in 0..2 {
            if !pull
                && let Some(id) = self.local_image(docker, &full).await?
                && self.take_image(docker, &full, &id, &task.id).await?
            {
                return Ok(id);
            }
            if !config.load.is_empty() {
                let archive = task.task_dir().join("local").join(&config.load);
                docker.load_image(&archive).await.map_err(|e| {
                    DriverError::recoverable(format!(
                        "failed to load image {}: {e}",
                        archive.display()
                    ))
                })?;
            } else {
                self.pull_shared(docker, task, config, &image).await?;
            }
            let id = self.local_image(docker, &full).await?.ok_or_else(|| {
                if config.load.is_empty() {
                    DriverError::recoverable(format!("image {full} missing after pull"))
                } else {
                    DriverError::unrecoverable(format!(
                        "image {full} is not in the loaded archive {}",
                        config.load
                    ))
                }
            })?;
            if self.take_image(docker, &full, &id, &task.id).await? {
                return Ok(id);
            }
            pull = false;
        }
        Err(DriverError::recoverable(format!(
            "image {full} keeps disappearing while the task starts"
        )))
    }

    async fn local_image(&self, docker: &Docker, full: &str) -> Result<Option<String>> {
        docker
            .image_id(full)
            .await
            .map_err(|e| DriverError::docker("failed to inspect image", &e))
    }

    /// Takes a reference on `id` for `task_id` (cancelling a scheduled
    /// removal), waiting out a removal in progress; false if the image is
    /// gone by then.
    async fn take_image(
        &self,
        docker: &Docker,
        full: &str,
        id: &str,
        task_id: &str,
    ) -> Result<bool> {
        let lock = self.images.image_lock(id);
        let _guard = lock.lock().await;
        if self.local_image(docker, full).await?.as_deref() != Some(id) {
            return Ok(false);
        }
        self.images.acquire(id, task_id);
        Ok(true)
    }

    /// Pulls `image`, or waits for the pull of it already in flight and
    /// shares its outcome.
    async fn pull_shared(
        &self,
        docker: &Docker,
        task: &TaskRequest,
        config: &TaskConfig,
        image: &reference::ImageRef,
    ) -> Result<()> {
        let full = image.full();
        self.events
            .emit(task, "Downloading image", &[("image", &full)]);
        let outcome = match self.images.join_pull(&full) {
            PullTicket::Follower(receiver) => images::follow(receiver).await,
            PullTicket::Leader(leader) => {
                let outcome =
                    self.pull(docker, task, config, image)
                        .await
                        .map_err(|err| match err {
                            DriverError::Recoverable {
                                message,
                                recoverable,
                            } => (message, recoverable),
                            other => (other.to_string(), false),
                        });
                leader.finish(outcome.clone());
                outcome
            }
        };
        outcome.map_err(|(message, recoverable)| DriverError::Recoverable {
            message,
            recoverable,
        })
    }

    async fn pull(
        &self,
        docker: &Docker,
        task: &TaskRequest,
        config: &TaskConfig,
        image: &reference::ImageRef,
    ) -> Result<()> {
        let configured = self.require_config()?;
        let full = image.full();
        let auth = registry_auth(config, &configured.plugin, &image.repository).await?;
        let timeout = config
            .image_pull_timeout_or(configured.plugin.image_pull_timeout)
            .get();
        let activity = configured.plugin.pull_activity_timeout.get();
        let started = Instant::now();
        let mut last_report = Instant::now();
        let mut report = |progress: &PullProgress| {
            if last_report.elapsed() >= PULL_PROGRESS_EVERY {
                last_report = Instant::now();
                let message = format!(
                    "Docker image pull progress: Pulled {}/{} layers: {} waiting/{} pulling",
                    progress.done, progress.layers, progress.waiting, progress.pulling
                );
                self.events.emit(task, message, &[("image", &full)]);
            }
        };
        let result = docker
            .pull_image(
                &image.repository,
                &image.tag,
                auth,
                timeout,
                activity,
                &mut report,
            )
            .await;
        match result {
            Ok(()) => {
                tracing::info!(image = %full, elapsed_ms = started.elapsed().as_millis() as u64, "pulled image");
                Ok(())
            }
            Err(err) => {
                if matches!(err, PullError::Inactive(_)) {
                    tracing::warn!(image = %full, "image pull aborted due to inactivity");
                }
                let message = format!("Failed to pull `{full}`: {err}");
                let recoverable = !image_not_found(&message);
                Err(DriverError::Recoverable {
                    message,
                    recoverable,
                })
            }
        }
    }

    /// Creates the container; a name already taken by a running container
    /// is adopted, a stopped one is removed and the create retried.
    async fn create_container(
        &self,
        docker: &Docker,
        spec: &ContainerSpec,
        attempts: &i64,
    ) -> Result<String> {
        let max_conflicts = u32::try_from(*attempts).unwrap_or(0);
        let (mut conflicts, mut transient) = (0u32, 0u32);
        loop {
            let err = match docker.create_container(&spec.name, spec.body.clone()).await {
                Ok(id) => return Ok(id),
                Err(err) => err,
            };
            let failed = |err: &DockerError, recoverable: bool| DriverError::Recoverable {
                message: format!("failed to create container: {err}"),
                recoverable,
            };
            match &err {
                e if e.message().to_lowercase().contains("duplicate mount point") => {
                    return Err(failed(e, true));
                }
                DockerError::Conflict(_) => {
                    match docker.inspect_container(&spec.name).await {
                        Ok(existing) if existing.running => {
                            tracing::info!(container_id = %existing.id, name = %spec.name, "adopting the running container that has the task's name");
                            return Ok(existing.id);
                        }
                        Ok(existing) => {
                            if let Err(remove) = docker.remove_container(&existing.id, true).await {
                                tracing::warn!(container_id = %existing.id, error = %remove, "failed to purge the stopped container with the task's name");
                            }
                        }
                        Err(DockerError::NotFound(_)) => {}
                        Err(inspect) => return Err(failed(&inspect, inspect.is_transient())),
                    }
                    if conflicts >= max_conflicts {
                        return Err(failed(&err, true));
                    }
                    tokio::time::sleep(backoff(conflicts)).await;
                    conflicts += 1;
                }
                DockerError::NotFound(_) => return Err(failed(&err, true)),
                e if e.is_transient() && transient < TRANSIENT_RETRIES => {
                    tokio::time::sleep(backoff(transient)).await;
                    transient += 1;
                }
                e => return Err(failed(e, e.is_transient())),
            }
        }
    }

    async fn start_container(&self, docker: &Docker, id: &str) -> Result<()> {
        let mut attempt = 0;
        loop {
            match docker.start_container(id).await {
                Ok(()) | Err(DockerError::Conflict(_)) => return Ok(()),
                Err(err) if err.is_transient() && attempt < TRANSIENT_RETRIES => {
                    tokio::time::sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(err) => {
                    return Err(DriverError::Recoverable {
                        message: format!("Failed to start container {id}: {err}"),
                        recoverable: err.is_transient(),
                    });
                }
            }
        }
    }
}

/// Nomad's test for a pull error retrying cannot fix: the engine said
/// `Error: image <name> not found`.
fn image_not_found(message: &str) -> bool {
    message.find("Error: image ").is_some_and(|at| {
        let rest = &message[at + "Error: image ".len()..];
        rest.find(" not found").is_some_and(|end| end > 0)
    })
}

/// Registry credentials for a pull: the task's `auth` block, else the
/// plugin's docker config file, else its credential helper. A lookup that
/// fails fails the start, unless the task set `auth_soft_fail`.
async fn registry_auth(
    config: &TaskConfig,
    plugin: &PluginConfig,
    repository: &str,
) -> Result<Option<RegistryAuth>> {
    let own = &config.auth;
    if !own.username.is_empty() || !own.password.is_empty() || !own.server_address.is_empty() {
        return Ok(Some(RegistryAuth {
            username: own.username.clone(),
            password: own.password.clone(),
            server_address: own.server_address.clone(),
        }));
    }
    let host = auth::registry_host(repository);
    let soft = |message: String| {
        if config.auth_soft_fail {
            tracing::warn!(
                repository,
                "continuing without registry credentials: {message}"
            );
            Ok(None)
        } else {
            Err(DriverError::unrecoverable(format!(
                "Failed to find docker auth for repo {repository:?}: {message}"
            )))
        }
    };
    if !plugin.auth.config.is_empty() {
        match auth::from_config_file(std::path::Path::new(&plugin.auth.config), &host).await {
            Ok(Some(found)) => return Ok(Some(found)),
            Ok(None) => {}
            Err(message) => return soft(message),
        }
    }
    if !plugin.auth.helper.is_empty() {
        return match auth::from_helper(&plugin.auth.helper, &host).await {
            Ok(found) => Ok(Some(found)),
            Err(message) => soft(message),
        };
    }
    Ok(None)
}

/// Writes the files the container spec binds. The allocation's hosts file
/// is shared by its tasks and written once; resolv.conf is per task.
async fn write_files(spec: &ContainerSpec) -> Result<()> {
    for (path, contents) in &spec.files {
        if path.file_name().is_some_and(|name| name == HOSTS_FILE)
            && tokio::fs::try_exists(path).await.unwrap_or(false)
        {
            continue;
        }
        tokio::fs::write(path, contents)
            .await
            .map_err(|e| DriverError::Failed(format!("failed to write {}: {e}", path.display())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_nomads_image_not_found_error_is_final() {
        assert!(image_not_found(
            "Failed to pull `x`: Error: image library/x:1 not found"
        ));
        assert!(!image_not_found(
            "Failed to pull `r/myimage:missing`: manifest for r/myimage:missing not found"
        ));
        assert!(!image_not_found(
            "Failed to pull `x`: Error: image  not found"
        ));
        assert!(!image_not_found("connection refused"));
    }
}
