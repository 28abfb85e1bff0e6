//! `driver_state`: what we store in Nomad's task handle so a relaunched
//! plugin can re-adopt the task (RecoverTask). The format is ours, versioned
//! JSON; Nomad treats it as opaque bytes.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::network::DriverNetwork;

/// Current format version.
pub const STATE_VERSION: u32 = 1;

/// What a recovered task needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriverState {
    /// Format version.
    pub version: u32,
    /// The container.
    pub container_id: String,
    /// The image id the container runs (for image reference counts).
    pub image_id: String,
    /// Network override reported at start.
    pub network: Option<DriverNetwork>,
    /// Unix seconds (with fraction) when the container was started.
    pub started_at: f64,
    /// The log holder directory the task's FIFOs and checkpoint are in;
    /// absent when its logs are not forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_dir: Option<String>,
    /// Room for later fields without a version bump.
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
}

impl DriverState {
    /// Encodes for the task handle.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// When the container was started, as a point in time: a `started_at`
    /// that is negative or beyond what the system clock can represent (the
    /// state is untrusted bytes) reads as the Unix epoch.
    pub fn started_at_time(&self) -> SystemTime {
        Duration::try_from_secs_f64(self.started_at)
            .ok()
            .and_then(|since| UNIX_EPOCH.checked_add(since))
            .unwrap_or(UNIX_EPOCH)
    }

    /// Decodes a handle's `driver_state`, refusing other versions clearly.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        #[derive(Deserialize)]
        struct Version {
            version: Option<u32>,
        }
        let version: Version = serde_json::from_slice(bytes).map_err(|e| {
            format!(
                "driver_state is not wasmdock state (was the task started by another driver?): {e}"
            )
        })?;
        match version.version {
            Some(STATE_VERSION) => serde_json::from_slice(bytes)
                .map_err(|e| format!("driver_state version {STATE_VERSION} is malformed: {e}")),
            other => Err(format!(
                "driver_state version {other:?} is not supported (this plugin reads {STATE_VERSION})"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_foreign_state() {
        let state = DriverState {
            version: STATE_VERSION,
            container_id: "abc".to_owned(),
            image_id: "sha256:1".to_owned(),
            network: Some(DriverNetwork {
                port_map: BTreeMap::from([("http".to_owned(), 80)]),
                ip: "172.17.0.2".to_owned(),
                auto_advertise: false,
            }),
            started_at: 1.5,
            log_dir: Some("/run/wasmdock/wasmdock".to_owned()),
            extra: BTreeMap::new(),
        };
        assert_eq!(DriverState::decode(&state.encode()), Ok(state));
        assert!(
            DriverState::decode(b"\x83\xa2ID")
                .unwrap_err()
                .contains("not wasmdock state")
        );
        assert!(
            DriverState::decode(br#"{"version":9}"#)
                .unwrap_err()
                .contains("version Some(9)")
        );
        assert!(
            DriverState::decode(br#"{"version":1}"#)
                .unwrap_err()
                .contains("malformed")
        );
        assert!(DriverState::decode(b"").is_err());
    }

    #[test]
    fn any_started_at_reads_as_a_point_in_time() {
        let state = |started_at: &str| {
            DriverState::decode(
                format!(
                    r#"{{"version":1,"container_id":"c","image_id":"i","network":null,"started_at":{started_at}}}"#
                )
                .as_bytes(),
            )
            .unwrap()
        };
        assert_eq!(
            state("1.5").started_at_time(),
            UNIX_EPOCH + Duration::from_millis(1500)
        );
        // Beyond the clock's range (it once overflowed and panicked).
        for far in ["1e19", "1.8e19", "1e300", "-1", "-1e300"] {
            assert_eq!(state(far).started_at_time(), UNIX_EPOCH, "{far}");
        }
    }
}
