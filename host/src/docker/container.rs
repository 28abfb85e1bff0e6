//! Container lifecycle calls: create, start, inspect, wait, stop, kill,
//! remove, list.

use std::collections::BTreeMap;
use std::time::Duration;

use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use tokio_stream::StreamExt as _;

use super::{CALL_TIMEOUT, Docker, DockerError, Result, bounded};
use crate::reconciler::plan::{Candidate, MountPoint};

/// What the driver needs to know about a container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerFacts {
    /// Full id.
    pub id: String,
    /// Name without the leading `/`.
    pub name: String,
    /// Image id it runs.
    pub image_id: String,
    /// Whether it is running.
    pub running: bool,
    /// Host pid of its main process (0 when not running).
    pub pid: i64,
    /// Whether it is dead.
    pub dead: bool,
    /// Exit code once stopped.
    pub exit_code: i64,
    /// Whether the kernel OOM killer ended it.
    pub oom_killed: bool,
    /// RFC 3339 creation time as Docker reports it.
    pub created: String,
    /// The container's log driver (`json-file`, `local`, `none`, …).
    pub log_driver: String,
    /// Where the engine keeps the json-file log, on the engine's host.
    pub log_path: String,
    /// RFC 3339 start time as Docker reports it.
    pub started_at: String,
    /// RFC 3339 end time as Docker reports it.
    pub finished_at: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Attached networks.
    pub networks: Vec<NetworkFacts>,
    /// Network namespace path.
    pub sandbox_key: String,
}

/// One network a container is attached to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkFacts {
    /// Network name.
    pub name: String,
    /// IPv4 address.
    pub ip: String,
    /// Global IPv6 address.
    pub global_ipv6: String,
}

/// A container as listed (cheap, no inspect).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSummary {
    /// Full id.
    pub id: String,
    /// Names, each with a leading `/`.
    pub names: Vec<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Created, Unix seconds.
    pub created: i64,
    /// `running`, `exited`, ….
    pub state: String,
}

impl Docker {
    /// Creates a container named `name`; returns its id.
    pub async fn create_container(&self, name: &str, body: ContainerCreateBody) -> Result<String> {
        let options = CreateContainerOptionsBuilder::new().name(name).build();
        let created = bounded(
            CALL_TIMEOUT,
            self.api().create_container(Some(options), body),
        )
        .await?;
        Ok(created.id)
    }

    /// Starts a container; an already running one is fine.
    pub async fn start_container(&self, id: &str) -> Result<()> {
        match bounded(CALL_TIMEOUT, self.api().start_container(id, None)).await {
            Err(DockerError::NotModified) => Ok(()),
            other => other,
        }
    }

    /// Inspects a container by id or name.
    pub async fn inspect_container(&self, id: &str) -> Result<ContainerFacts> {
        let c = bounded(CALL_TIMEOUT, self.api().inspect_container(id, None)).await?;
        let state = c.state.unwrap_or_default();
        let settings = c.network_settings.unwrap_or_default();
        let mut networks: Vec<NetworkFacts> = settings
            .networks
            .unwrap_or_default()
            .into_iter()
            .map(|(name, endpoint)| NetworkFacts {
                name,
                ip: endpoint.ip_address.unwrap_or_default(),
                global_ipv6: endpoint.global_ipv6_address.unwrap_or_default(),
            })
            .collect();
        networks.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(ContainerFacts {
            id: c.id.unwrap_or_default(),
            name: c
                .name
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned(),
            image_id: c.image.unwrap_or_default(),
            running: state.running.unwrap_or(false),
            pid: state.pid.unwrap_or(0),
            dead: state.dead.unwrap_or(false),
            exit_code: state.exit_code.unwrap_or(0),
            oom_killed: state.oom_killed.unwrap_or(false),
            created: c.created.clone().unwrap_or_default(),
            log_driver: c
                .host_config
                .as_ref()
                .and_then(|h| h.log_config.as_ref())
                .and_then(|l| l.typ.clone())
                .unwrap_or_default(),
            log_path: c.log_path.clone().unwrap_or_default(),
            started_at: state.started_at.unwrap_or_default(),
            finished_at: state.finished_at.unwrap_or_default(),
            labels: c
                .config
                .and_then(|config| config.labels)
                .unwrap_or_default()
                .into_iter()
                .collect(),
            networks,
            sandbox_key: settings.sandbox_key.unwrap_or_default(),
        })
    }

    /// Waits, without a deadline, until the container is not running and
    /// returns its exit code.
    pub async fn wait_container(&self, id: &str) -> Result<i64> {
        let options = WaitContainerOptionsBuilder::new()
            .condition("not-running")
            .build();
        let mut stream = self.api().wait_container(id, Some(options));
        match stream.next().await {
            Some(Ok(response)) => Ok(response.status_code),
            // bollard reports non-zero exits as errors; they are results here.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(err)) => Err(err.into()),
            None => Err(DockerError::Transport(
                "the engine closed the wait without a result".to_owned(),
            )),
        }
    }

    /// Stops a container: the image's stop signal (or SIGTERM), then SIGKILL
    /// after `grace`. Not running or gone counts as done.
    pub async fn stop_container(&self, id: &str, grace: Duration) -> Result<()> {
        let secs = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptionsBuilder::new().t(secs).build();
        // The engine may take the whole grace period before it answers.
        let deadline = grace + CALL_TIMEOUT;
        match bounded(deadline, self.api().stop_container(id, Some(options))).await {
            Err(DockerError::NotModified | DockerError::NotFound(_)) => Ok(()),
            other => other,
        }
    }

    /// Sends `signal` (a name such as `SIGTERM`) to the container.
    pub async fn kill_container(&self, id: &str, signal: &str) -> Result<()> {
        let options = KillContainerOptionsBuilder::new().signal(signal).build();
        bounded(CALL_TIMEOUT, self.api().kill_container(id, Some(options))).await
    }

    /// Removes a container (and its anonymous volumes when `force`).
    pub async fn remove_container(&self, id: &str, force: bool) -> Result<()> {
        let options = RemoveContainerOptionsBuilder::new()
            .force(force)
            .v(force)
            .build();
        bounded(CALL_TIMEOUT, self.api().remove_container(id, Some(options))).await
    }

    /// Every running container, as the reconciler sees it (no inspect: the
    /// environment is left unknown).
    pub async fn list_running(&self, timeout: std::time::Duration) -> Result<Vec<Candidate>> {
        let options = ListContainersOptionsBuilder::new().all(false).build();
        let list = bounded(timeout, self.api().list_containers(Some(options))).await?;
        Ok(list
            .into_iter()
            .map(|c| Candidate {
                id: c.id.unwrap_or_default(),
                name: c
                    .names
                    .unwrap_or_default()
                    .first()
                    .map(|n| n.trim_start_matches('/').to_owned())
                    .unwrap_or_default(),
                image: c.image.unwrap_or_default(),
                labels: c.labels.unwrap_or_default().into_iter().collect(),
                env: None,
                mounts: c
                    .mounts
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|m| {
                        Some(MountPoint {
                            destination: m.destination?,
                            source: m
                                .name
                                .filter(|n| !n.is_empty())
                                .or(m.source)
                                .unwrap_or_default(),
                            read_only: m.rw == Some(false),
                        })
                    })
                    .collect(),
                created: c.created.unwrap_or(0),
                state: c.state.map(|s| s.to_string()).unwrap_or_default(),
            })
            .collect())
    }

    /// A container's environment (`K=V`).
    pub async fn container_env(
        &self,
        id: &str,
        timeout: std::time::Duration,
    ) -> Result<Vec<String>> {
        let c = bounded(timeout, self.api().inspect_container(id, None)).await?;
        Ok(c.config.and_then(|config| config.env).unwrap_or_default())
    }

    /// Removes a container (forced, with its anonymous volumes) within `timeout`.
    pub async fn remove_container_within(
        &self,
        id: &str,
        timeout: std::time::Duration,
    ) -> Result<()> {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        bounded(timeout, self.api().remove_container(id, Some(options))).await
    }

    /// Lists containers carrying `label` (`key` or `key=value`); all states
    /// when `all`, else running ones only.
    pub async fn list_containers(&self, label: &str, all: bool) -> Result<Vec<ContainerSummary>> {
        let filters =
            std::collections::HashMap::from([("label".to_owned(), vec![label.to_owned()])]);
        let options = ListContainersOptionsBuilder::new()
            .all(all)
            .filters(&filters)
            .build();
        let list = bounded(CALL_TIMEOUT, self.api().list_containers(Some(options))).await?;
        Ok(list
            .into_iter()
            .map(|c| ContainerSummary {
                id: c.id.unwrap_or_default(),
                names: c.names.unwrap_or_default(),
                labels: c.labels.unwrap_or_default().into_iter().collect(),
                created: c.created.unwrap_or(0),
                state: c.state.map(|s| s.to_string()).unwrap_or_default(),
            })
            .collect())
    }
}

impl Docker {
    /// Creates a network pause container: `image` with `hostname`, `labels`,
    /// no network of its own (the client sets the namespace up) and
    /// restarted unless stopped.
    pub async fn create_pause_container(
        &self,
        name: &str,
        image: &str,
        hostname: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<String> {
        use bollard::models::{HostConfig, RestartPolicy, RestartPolicyNameEnum};
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            hostname: (!hostname.is_empty()).then(|| hostname.to_owned()),
            labels: Some(labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
            host_config: Some(HostConfig {
                network_mode: Some("none".to_owned()),
                restart_policy: Some(RestartPolicy {
                    name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                    maximum_retry_count: None,
                }),
                ..HostConfig::default()
            }),
            ..ContainerCreateBody::default()
        };
        self.create_container(name, body).await
    }
}
