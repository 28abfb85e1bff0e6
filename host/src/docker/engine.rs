//! What the engine is: version, runtimes, cgroup setup, bridge gateway.
//! Used by Fingerprint and by StartTask (GPU runtime, cgroup version).

use std::time::Duration;

use super::{Docker, Result, bounded};

/// Timeout of the fingerprint's engine calls.
const FINGERPRINT_TIMEOUT: Duration = Duration::from_secs(10);

/// Facts about the engine the driver decides with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineFacts {
    /// Server version (`20.10.24+dfsg1`).
    pub version: String,
    /// `linux` or `windows`.
    pub os_type: String,
    /// Runtime names, sorted.
    pub runtimes: Vec<String>,
    /// `cgroupfs` or `systemd`.
    pub cgroup_driver: String,
    /// `1` or `2`.
    pub cgroup_version: String,
}

impl EngineFacts {
    /// Whether the engine uses cgroup v2.
    pub fn cgroup_v2(&self) -> bool {
        self.cgroup_version == "2"
    }

    /// Whether the engine has a runtime named `name`.
    pub fn has_runtime(&self, name: &str) -> bool {
        self.runtimes.iter().any(|r| r == name)
    }
}

impl Docker {
    /// Version and `docker info` in one go.
    pub async fn facts(&self) -> Result<EngineFacts> {
        let version = bounded(FINGERPRINT_TIMEOUT, self.api().version()).await?;
        let info = bounded(FINGERPRINT_TIMEOUT, self.api().info()).await?;
        let mut runtimes: Vec<String> = info.runtimes.unwrap_or_default().into_keys().collect();
        runtimes.sort();
        Ok(EngineFacts {
            version: version.version.or(info.server_version).unwrap_or_default(),
            os_type: info.os_type.or(version.os).unwrap_or_default(),
            runtimes,
            cgroup_driver: info
                .cgroup_driver
                .map(|d| d.to_string())
                .unwrap_or_default(),
            cgroup_version: info
                .cgroup_version
                .map(|v| v.to_string())
                .unwrap_or_default(),
        })
    }

    /// The gateway of the default `bridge` network, if it has one.
    pub async fn bridge_gateway(&self) -> Result<Option<String>> {
        let network = bounded(
            FINGERPRINT_TIMEOUT,
            self.api().inspect_network("bridge", None),
        )
        .await?;
        Ok(network
            .ipam
            .and_then(|ipam| ipam.config)
            .and_then(|configs| configs.into_iter().next())
            .and_then(|config| config.gateway)
            .filter(|gateway| !gateway.is_empty()))
    }
}
