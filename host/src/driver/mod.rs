//! The driver core: Nomad's driver semantics, independent of gRPC. The `rpc`
//! module translates wire messages into calls on [`Driver`]; nothing here
//! sees protobuf types, and the engine is reached only through `docker`.
//!
//! One file per verb, named after Nomad's RPCs: `fingerprint`, `start`,
//! `lifecycle` (wait, stop, destroy, inspect, signal), `recover`; `logging`
//! runs a task's log forwarding; `stats` its TaskStats streams; `policy`
//! is where policy modules take part in those decisions.

pub mod error;
pub mod events;
pub mod exec;
pub mod fingerprint;
pub mod handle;
pub mod images;
pub mod lifecycle;
pub mod logging;
pub mod network;
pub mod policy;
pub mod recover;
pub mod sandbox;
pub mod signals;
pub mod start;
pub mod state;
pub mod stats;
pub mod store;
pub mod task;

use std::sync::{Arc, RwLock};

use crate::config::{ConfigError, PluginConfig};
use crate::docker::{Docker, DockerError};
use error::{DriverError, Result};
use events::Events;
use store::TaskStore;

/// The plugin API version drivers speak (`v0.1.0` is the only one Nomad has).
pub const API_VERSION: &str = "v0.1.0";

/// Default driver name; `--name` changes it (e.g. `docker` to stand in for
/// Nomad's built-in driver).
pub const DEFAULT_NAME: &str = "wasmdock";

/// Settings the Nomad agent sends with SetConfig on the long-lived launch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentConfig {
    /// Lowest port the client hands out.
    pub client_min_port: u32,
    /// Highest port the client hands out.
    pub client_max_port: u32,
    /// CPU capacity of the node.
    pub compute: NodeCompute,
}

/// One CPU core of the node's topology, speeds in MHz.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CoreSpeed {
    /// Base speed, 0 if unknown.
    pub base: u64,
    /// Maximum speed, 0 if unknown.
    pub max: u64,
    /// Guessed speed.
    pub guess: u64,
}

/// The node's CPU capacity as Nomad computes it from the client topology.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeCompute {
    /// Number of cores (disabled ones included).
    pub num_cores: u32,
    /// Total compute in MHz.
    pub total_compute: u64,
}

impl NodeCompute {
    /// Nomad's `Topology.Compute()`: the override when set, else the sum of
    /// every core's speed (base, else max, else guessed), disabled cores too.
    pub fn from_topology(cores: &[CoreSpeed], override_total_compute: u64) -> Self {
        let total_compute = if override_total_compute > 0 {
            override_total_compute
        } else {
            cores
                .iter()
                .map(|c| {
                    if c.base > 0 {
                        c.base
                    } else if c.max > 0 {
                        c.max
                    } else {
                        c.guess
                    }
                })
                .sum()
        };
        Self {
            num_cores: u32::try_from(cores.len()).unwrap_or(u32::MAX),
            total_compute,
        }
    }
}

/// What SetConfig established; replaced as a whole by the next SetConfig.
#[derive(Debug, Clone, PartialEq)]
pub struct Configured {
    /// The validated plugin config.
    pub plugin: PluginConfig,
    /// Agent settings; absent on Nomad's validation launches.
    pub agent: Option<AgentConfig>,
    /// The API version Nomad chose.
    pub api_version: String,
}

/// Static capabilities and config-derived flags reported to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Whether the client should skip logmon for our tasks.
    pub disable_log_collection: bool,
}

/// The driver: identity, the configuration SetConfig gave it, the tracked
/// tasks and the engine connection. The config lives as long as the
/// process, so a reattaching agent (which does not call SetConfig again)
/// finds it intact.
#[derive(Debug)]
pub struct Driver {
    name: String,
    configured: RwLock<Option<Arc<Configured>>>,
    /// The engine connection, made on first use (never by SetConfig).
    docker: tokio::sync::Mutex<Option<Docker>>,
    /// Tracked tasks.
    pub(crate) tasks: TaskStore,
    /// Task events for the TaskEvents streams.
    pub(crate) events: Events,
    /// Fingerprint history (health transitions, GPU runtime seen).
    pub(crate) fingerprint: fingerprint::History,
    /// Pull locks and image reference counts.
    pub(crate) images: Arc<images::Images>,
    /// Network pause containers.
    pub(crate) pauses: sandbox::PauseContainers,
    /// The node's log FIFO holder for the configured directory.
    log_holder: std::sync::Mutex<Option<crate::logs::holder::Holder>>,
    /// Applied to every stats sample (policies replace it).
    stats_transform: RwLock<Arc<dyn crate::stats::transform::StatsTransform>>,
    /// The one inotify watcher of json-file logs.
    log_watcher: std::sync::OnceLock<Option<crate::logs::jsonfile::Watcher>>,
    /// The WebAssembly policy modules, loaded once on the long-lived
    /// launch (the first Fingerprint or StartTask, whichever comes first);
    /// their reload watcher beside them.
    policy: tokio::sync::OnceCell<policy::PolicyLoad>,
    policy_watcher: std::sync::Mutex<Option<crate::policy::reload::Watcher>>,
    /// Cancels background work at shutdown.
    background: tokio_util::sync::CancellationToken,
    /// Whether start-up work (pause container rediscovery, the reconciler)
    /// has run; it runs on the first Fingerprint, never on SetConfig.
    started_background: std::sync::atomic::AtomicBool,
}

impl Driver {
    /// A driver reporting `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            configured: RwLock::new(None),
            docker: tokio::sync::Mutex::new(None),
            tasks: TaskStore::default(),
            events: Events::default(),
            fingerprint: fingerprint::History::default(),
            images: Arc::default(),
            pauses: sandbox::PauseContainers::default(),
            log_holder: std::sync::Mutex::new(None),
            log_watcher: std::sync::OnceLock::new(),
            stats_transform: RwLock::new(Arc::new(crate::stats::transform::Unchanged)),
            policy: tokio::sync::OnceCell::new(),
            policy_watcher: std::sync::Mutex::new(None),
            background: tokio_util::sync::CancellationToken::new(),
            started_background: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The driver name used in jobspecs and node attributes.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The plugin's own version.
    pub fn version(&self) -> &'static str {
        env!("CARGO_PKG_VERSION")
    }

    /// Decodes and validates a plugin config and makes it current. Cheap and
    /// free of side effects: Nomad calls it twice on throwaway validation
    /// processes, so nothing may be started from here.
    pub fn set_config(
        &self,
        msgpack: &[u8],
        agent: Option<AgentConfig>,
        api_version: &str,
    ) -> Result<Arc<Configured>, ConfigError> {
        let plugin = PluginConfig::from_msgpack(msgpack)?;
        let configured = Arc::new(Configured {
            plugin,
            agent,
            api_version: api_version.to_owned(),
        });
        let mut slot = self
            .configured
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let endpoint_changed = slot.as_ref().is_none_or(|old| {
            old.plugin.endpoint != configured.plugin.endpoint
                || old.plugin.tls != configured.plugin.tls
        });
        *slot = Some(Arc::clone(&configured));
        drop(slot);
        if endpoint_changed {
            // Reconnect lazily with the new endpoint.
            if let Ok(mut docker) = self.docker.try_lock() {
                *docker = None;
            }
        }
        Ok(configured)
    }

    /// The current configuration, if SetConfig has succeeded.
    pub fn configured(&self) -> Option<Arc<Configured>> {
        self.configured
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The current configuration, or the error RPCs report before SetConfig.
    pub(crate) fn require_config(&self) -> Result<Arc<Configured>> {
        self.configured().ok_or(DriverError::NotConfigured)
    }

    /// Capabilities as of the current configuration.
    pub fn capabilities(&self) -> Capabilities {
        Capabilities {
            disable_log_collection: self
                .configured()
                .is_some_and(|c| c.plugin.disable_log_collection),
        }
    }

    /// The engine connection, connecting (and agreeing on an API version)
    /// on first use. A failed attempt is retried on the next call.
    pub(crate) async fn docker(&self) -> Result<Docker, DockerError> {
        let mut slot = self.docker.lock().await;
        if let Some(docker) = slot.as_ref() {
            return Ok(docker.clone());
        }
        let config = self
            .configured()
            .map(|c| c.plugin.clone())
            .unwrap_or_default();
        let docker = Docker::connect(&config)?.negotiate().await?;
        *slot = Some(docker.clone());
        Ok(docker)
    }

    /// Start-up work of the long-lived plugin process, run once from the
    /// first Fingerprint (SetConfig also runs on throwaway processes).
    pub(crate) async fn start_background_once(self: &Arc<Self>) {
        if self
            .started_background
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        self.rediscover_pause_containers().await;
        self.policies().await;
        tokio::spawn(crate::reconciler::run(
            Arc::clone(self),
            self.background.child_token(),
        ));
    }

    /// The policy modules, loading them on first use. Admission and GPU
    /// selection await this, so a StartTask that arrives before the first
    /// Fingerprint is still judged by them. Before SetConfig there is
    /// nothing to load and nothing is remembered.
    pub(crate) async fn policies(&self) -> &policy::PolicyLoad {
        static OFF: policy::PolicyLoad = policy::PolicyLoad::Off;
        if self.configured().is_none() {
            return &OFF;
        }
        self.policy.get_or_init(|| self.load_policies()).await
    }

    /// Loads the configured policy modules (compiling takes CPU, so it runs
    /// on a blocking thread) and starts watching their files. A module that
    /// fails to load is logged by the policy host; its failure policy then
    /// applies to its hooks. When the host itself cannot start, every
    /// module is unavailable and each one's failure policy applies to the
    /// hooks it was configured for: a module that fails closed keeps
    /// failing closed.
    async fn load_policies(&self) -> policy::PolicyLoad {
        let Some(configured) = self.configured() else {
            return policy::PolicyLoad::Off;
        };
        let plugin = &configured.plugin;
        if plugin.policy.module.is_empty() {
            return policy::PolicyLoad::Off;
        }
        let cache_dir =
            crate::logs::holder::directory(&plugin.run_dir, &self.name).join("policy-cache");
        let settings = crate::policy::HostSettings {
            cache_dir: Some(cache_dir),
            ..crate::policy::HostSettings::default()
        };
        let config = plugin.policy.clone();
        let built =
            tokio::task::spawn_blocking(move || crate::policy::PolicyHost::new(settings, &config))
                .await;
        let error = match built {
            Ok(Ok(host)) => {
                let host = Arc::new(host);
                match crate::policy::reload::Watcher::start(
                    Arc::clone(&host),
                    crate::policy::reload::DEFAULT_INTERVAL,
                ) {
                    Ok(watcher) => {
                        *self
                            .policy_watcher
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(watcher)
                    }
                    Err(error) => {
                        tracing::warn!("policy modules will not reload on change: {error}")
                    }
                }
                self.install_policy_hooks(&host);
                return policy::PolicyLoad::Ready(host);
            }
            Ok(Err(error)) => error.to_string(),
            Err(error) => format!("its start-up thread failed: {error}"),
        };
        let load = policy::PolicyLoad::Broken {
            error: format!("the policy host cannot start: {error}"),
            modules: plugin.policy.module.clone(),
        };
        tracing::error!(
            "the policy host cannot start: {error}; every policy module is unavailable and its failure_policy applies"
        );
        self.install_broken_policy_hooks(&load);
        load
    }

    /// The policy host, when policy modules are configured and loaded.
    pub fn policy(&self) -> Option<Arc<crate::policy::PolicyHost>> {
        match self.policy.get() {
            Some(policy::PolicyLoad::Ready(host)) => Some(Arc::clone(host)),
            _ => None,
        }
    }

    /// Stops background work (the reconciler, policy reloads); the plugin
    /// is going away.
    pub fn stop_background(&self) {
        self.background.cancel();
        drop(
            self.policy_watcher
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take(),
        );
    }

    /// Forgets the engine connection (after the engine went away), so the
    /// next call negotiates again.
    pub(crate) async fn reset_docker(&self) {
        *self.docker.lock().await = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compute_prefers_override_then_base_max_guess() {
        let cores = [
            CoreSpeed {
                base: 2000,
                max: 3000,
                guess: 1000,
            },
            CoreSpeed {
                base: 0,
                max: 3000,
                guess: 1000,
            },
            CoreSpeed {
                base: 0,
                max: 0,
                guess: 1000,
            },
        ];
        assert_eq!(
            NodeCompute::from_topology(&cores, 0),
            NodeCompute {
                num_cores: 3,
                total_compute: 6000
            }
        );
        assert_eq!(
            NodeCompute::from_topology(&cores, 1234),
            NodeCompute {
                num_cores: 3,
                total_compute: 1234
            }
        );
        assert_eq!(NodeCompute::from_topology(&[], 0), NodeCompute::default());
    }
}
