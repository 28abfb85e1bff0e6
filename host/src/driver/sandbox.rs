//! CreateNetwork / DestroyNetwork: the per-allocation pause container whose
//! network namespace the client wires up (Nomad's "infra" container).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::Driver;
use super::error::{DriverError, Result};
use super::task::{NetworkIsolation, NetworkMode};
use crate::docker::{DockerError, reference};

/// Label the client reads the pause container's id from.
pub const SANDBOX_CONTAINER_LABEL: &str = "docker_sandbox_container_id";
/// Label the client reads the requested hostname from.
pub const SANDBOX_HOSTNAME_LABEL: &str = "docker_sandbox_hostname";
/// Label every container of an allocation carries.
pub const ALLOC_ID_LABEL: &str = "com.hashicorp.nomad.alloc_id";
/// Name prefix of pause containers.
pub const PAUSE_PREFIX: &str = "nomad_init_";

/// Pause containers the driver knows about (the reconciler leaves them be).
#[derive(Debug, Default)]
pub struct PauseContainers(Mutex<HashSet<String>>);

impl PauseContainers {
    /// Remembers a pause container.
    pub fn track(&self, id: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.to_owned());
    }

    /// Forgets a pause container.
    pub fn untrack(&self, id: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    /// Every tracked pause container id.
    pub fn ids(&self) -> HashSet<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Driver {
    /// Makes (or finds) the allocation's pause container and returns its
    /// isolation spec, and whether it was created now.
    pub async fn create_network(
        &self,
        alloc_id: &str,
        hostname: &str,
    ) -> Result<(NetworkIsolation, bool)> {
        let config = self.require_config()?;
        let docker = self
            .docker()
            .await
            .map_err(|e| DriverError::docker("cannot reach Docker", &e))?;
        let name = format!("{PAUSE_PREFIX}{alloc_id}");
        let spec = |id: &str, sandbox_key: String| {
            let mut labels = BTreeMap::from([(SANDBOX_CONTAINER_LABEL.to_owned(), id.to_owned())]);
            if !hostname.is_empty() {
                labels.insert(SANDBOX_HOSTNAME_LABEL.to_owned(), hostname.to_owned());
            }
            NetworkIsolation {
                mode: NetworkMode::Group,
                path: sandbox_key,
                labels,
                hosts: None,
            }
        };
        match docker.inspect_container(&name).await {
            Ok(existing) if existing.running => {
                self.pauses.track(&existing.id);
                return Ok((spec(&existing.id, existing.sandbox_key), false));
            }
            Ok(stopped) => {
                let _ = docker.remove_container(&stopped.id, true).await;
            }
            Err(DockerError::NotFound(_)) => {}
            Err(err) => {
                return Err(DriverError::docker(
                    "failed to inspect the pause container",
                    &err,
                ));
            }
        }

        let image = reference::parse(&config.plugin.infra_image).map_err(|m| {
            DriverError::InvalidConfig(crate::config::ConfigError::new("infra_image", m))
        })?;
        let full = image.full();
        let present = if image.is_latest() {
            None
        } else {
            docker
                .image_id(&full)
                .await
                .map_err(|e| DriverError::docker("failed to inspect the infra image", &e))?
        };
        let image_id = match present {
            Some(id) => id,
            None => {
                let timeout = config.plugin.infra_image_pull_timeout.get();
                let activity = config.plugin.pull_activity_timeout.get();
                docker
                    .pull_image(
                        &image.repository,
                        &image.tag,
                        None,
                        timeout,
                        activity,
                        &mut |_| {},
                    )
                    .await
                    .map_err(|e| {
                        DriverError::recoverable(format!(
                            "failed to pull infra image `{full}`: {e}"
                        ))
                    })?;
                docker
                    .image_id(&full)
                    .await
                    .map_err(|e| DriverError::docker("failed to inspect the infra image", &e))?
                    .unwrap_or_default()
            }
        };
        self.images.acquire(&image_id, alloc_id);

        let labels = BTreeMap::from([(ALLOC_ID_LABEL.to_owned(), alloc_id.to_owned())]);
        let id = docker
            .create_pause_container(&name, &full, hostname, &labels)
            .await
            .map_err(|e| DriverError::docker("failed to create the pause container", &e))?;
        if let Err(err) = docker.start_container(&id).await {
            let _ = docker.remove_container(&id, true).await;
            return Err(DriverError::docker(
                "failed to start the pause container",
                &err,
            ));
        }
        let facts = docker
            .inspect_container(&id)
            .await
            .map_err(|e| DriverError::docker("failed to inspect the pause container", &e))?;
        self.pauses.track(&id);
        tracing::info!(alloc_id, container_id = %id, "created network pause container");
        Ok((spec(&id, facts.sandbox_key), true))
    }

    /// Removes the allocation's pause container.
    pub async fn destroy_network(
        &self,
        alloc_id: &str,
        isolation: &NetworkIsolation,
    ) -> Result<()> {
        let config = self.require_config()?;
        let Some(id) = isolation
            .labels
            .get(SANDBOX_CONTAINER_LABEL)
            .filter(|id| !id.is_empty())
        else {
            return Err(DriverError::InvalidRequest(format!(
                "the isolation spec has no {SANDBOX_CONTAINER_LABEL} label"
            )));
        };
        let docker = self
            .docker()
            .await
            .map_err(|e| DriverError::docker("cannot reach Docker", &e))?;
        // The spec comes from the client: only the alloc's own pause
        // container is removed, never another container it names (the
        // engine also takes unique id prefixes).
        let found = match docker.inspect_container(id).await {
            Ok(facts) => Some(facts),
            Err(DockerError::NotFound(_)) => None,
            Err(err) => {
                return Err(DriverError::docker(
                    "failed to inspect the pause container",
                    &err,
                ));
            }
        };
        if let Some(facts) = &found {
            let expected = format!("{PAUSE_PREFIX}{alloc_id}");
            let is_pause = if alloc_id.is_empty() {
                facts.name.starts_with(PAUSE_PREFIX)
            } else {
                facts.name == expected
            };
            if !is_pause {
                return Err(DriverError::InvalidRequest(format!(
                    "container {id:?} is {:?}, not the pause container of alloc {alloc_id:?} ({expected:?}); left alone",
                    facts.name
                )));
            }
        }
        self.pauses.untrack(id);
        if let Some(facts) = &found {
            self.pauses.untrack(&facts.id);
            if let Err(err) = docker
                .stop_container(&facts.id, Duration::from_secs(1))
                .await
            {
                tracing::debug!(container_id = %facts.id, error = %err, "stopping the pause container failed");
            }
            match docker.remove_container(&facts.id, true).await {
                Ok(()) | Err(DockerError::NotFound(_)) => {}
                Err(err) => {
                    return Err(DriverError::docker(
                        "failed to remove the pause container",
                        &err,
                    ));
                }
            }
        }
        if config.plugin.gc.image
            && let Ok(Some(image_id)) = docker.image_id(&config.plugin.infra_image).await
        {
            self.release_image(&image_id, alloc_id).await;
        }
        Ok(())
    }

    /// Finds pause containers made before a restart (running, labelled,
    /// named `nomad_init_…`) so nothing mistakes them for strays.
    pub async fn rediscover_pause_containers(&self) {
        let Ok(docker) = self.docker().await else {
            return;
        };
        match docker.list_containers(ALLOC_ID_LABEL, false).await {
            Ok(containers) => {
                for container in containers {
                    if container
                        .names
                        .iter()
                        .any(|n| n.trim_start_matches('/').starts_with(PAUSE_PREFIX))
                    {
                        tracing::info!(container_id = %container.id, "rediscovered network pause container");
                        self.pauses.track(&container.id);
                    }
                }
            }
            Err(err) => tracing::warn!(error = %err, "cannot list pause containers"),
        }
    }
}
