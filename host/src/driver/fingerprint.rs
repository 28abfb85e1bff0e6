//! Fingerprint: is the engine there, healthy, and what can it do.
//!
//! Health follows Nomad's docker driver: an engine never reached is
//! UNDETECTED ("Failed to connect to docker daemon"); one that was reached
//! before and is gone now is UNHEALTHY; reachable is HEALTHY ("Healthy").

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::Driver;

/// How often the stream sends a fingerprint after the first.
pub const FINGERPRINT_PERIOD: Duration = Duration::from_secs(30);

/// Nomad's health states for a driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Not found on this node.
    Undetected,
    /// Found before, not working now.
    Unhealthy,
    /// Working.
    Healthy,
}

/// An attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Attribute {
    /// A string.
    String(String),
    /// An integer.
    Int(i64),
    /// A boolean.
    Bool(bool),
}

/// One fingerprint.
#[derive(Debug, Clone, PartialEq)]
pub struct Fingerprint {
    /// Health.
    pub health: Health,
    /// Why, in a few words.
    pub description: String,
    /// Node attributes, keyed `driver.<name>…`.
    pub attributes: BTreeMap<String, Attribute>,
}

/// What earlier fingerprints saw.
#[derive(Debug, Default)]
pub struct History {
    /// The engine answered at least once.
    detected: AtomicBool,
    /// The last fingerprint was healthy.
    healthy: AtomicBool,
    /// The engine lists the configured GPU runtime (never cleared, as in Nomad).
    gpu_runtime: AtomicBool,
}

impl History {
    /// Whether the driver is healthy right now (detected and last check good).
    pub fn healthy(&self) -> bool {
        self.detected.load(Ordering::Relaxed) && self.healthy.load(Ordering::Relaxed)
    }

    /// Whether the configured GPU runtime was ever seen.
    pub fn gpu_runtime(&self) -> bool {
        self.gpu_runtime.load(Ordering::Relaxed)
    }
}

impl Driver {
    /// Checks the engine once and builds the fingerprint.
    pub async fn fingerprint(self: &std::sync::Arc<Self>) -> Fingerprint {
        let name = self.name().to_owned();
        let key = |suffix: &str| format!("driver.{name}.{suffix}");
        let config = self
            .configured()
            .map(|c| c.plugin.clone())
            .unwrap_or_default();
        let facts = match self.docker().await {
            Ok(docker) => docker.facts().await.map(|facts| (docker, facts)),
            Err(err) => Err(err),
        };
        let (docker, facts) = match facts {
            Ok(found) => found,
            Err(err) => {
                self.reset_docker().await;
                let was_detected = self.fingerprint.detected.load(Ordering::Relaxed);
                let was_healthy = self.fingerprint.healthy.swap(false, Ordering::Relaxed);
                if was_healthy || !was_detected {
                    tracing::warn!(error = %err, "Docker engine is not reachable");
                }
                return Fingerprint {
                    health: if was_detected {
                        Health::Unhealthy
                    } else {
                        Health::Undetected
                    },
                    description: "Failed to connect to docker daemon".to_owned(),
                    attributes: BTreeMap::new(),
                };
            }
        };
        if !self.fingerprint.healthy.swap(true, Ordering::Relaxed) {
            tracing::info!(version = %facts.version, runtimes = ?facts.runtimes, "Docker engine is healthy");
        }
        self.fingerprint.detected.store(true, Ordering::Relaxed);
        self.start_background_once().await;
        if facts.has_runtime(&config.nvidia_runtime) {
            self.fingerprint.gpu_runtime.store(true, Ordering::Relaxed);
        }

        let mut attributes = BTreeMap::new();
        attributes.insert(format!("driver.{name}"), Attribute::Bool(true));
        attributes.insert(key("version"), Attribute::String(facts.version.clone()));
        attributes.insert(key("os_type"), Attribute::String(facts.os_type.clone()));
        attributes.insert(key("runtimes"), Attribute::String(facts.runtimes.join(",")));
        if config.allow_privileged {
            attributes.insert(key("privileged.enabled"), Attribute::Bool(true));
        }
        if config.pids_limit > 0 {
            attributes.insert(key("pids.limit"), Attribute::Int(config.pids_limit));
        }
        if config.volumes.enabled {
            attributes.insert(key("volumes.enabled"), Attribute::Bool(true));
        }
        match docker.bridge_gateway().await {
            Ok(Some(gateway)) => {
                attributes.insert(key("bridge_ip"), Attribute::String(gateway));
            }
            Ok(None) => {}
            Err(err) => tracing::debug!(error = %err, "no bridge network gateway"),
        }
        if cfg!(target_os = "linux") && !nix::unistd::geteuid().is_root() {
            attributes.insert(key("cpuset_management.disabled"), Attribute::Bool(true));
        }
        Fingerprint {
            health: Health::Healthy,
            description: "Healthy".to_owned(),
            attributes,
        }
    }
}
