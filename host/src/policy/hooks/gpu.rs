//! `gpu-runtime`: the runtime and device requests of a task that asks for
//! GPUs.

use serde::{Deserialize, Serialize};

use super::{
    Budget, DeviceMount, KeyValue, MAX_NAME, MAX_REASON, Refusal, TaskIdentity, identity_to_wit,
    key_values_to_wit, non_empty, plain_name,
};
use crate::policy::bindings::gpu_runtime as wit;

/// Device requests one answer may carry.
pub const MAX_DEVICE_REQUESTS: usize = 16;
/// Device ids, capability sets or options one device request may carry.
pub const MAX_DEVICE_ITEMS: usize = 64;

/// What the host knows when it asks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Request {
    /// The task.
    pub task: TaskIdentity,
    /// Environment set by Nomad's device plugins.
    pub device_env: Vec<KeyValue>,
    /// The runtime the task asks for.
    pub requested_runtime: Option<String>,
    /// Host devices the task exposes.
    pub devices: Vec<DeviceMount>,
    /// Runtimes the engine reports.
    pub node_runtimes: Vec<String>,
    /// The plugin's `nvidia_runtime`.
    pub nvidia_runtime: String,
    /// The plugin's `allow_runtimes`.
    pub allow_runtimes: Vec<String>,
}

/// A device request (Docker's `DeviceRequests`, e.g. CDI).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct DeviceRequest {
    /// Device driver (`cdi`, `nvidia`).
    pub driver: String,
    /// Number of devices, -1 for all.
    pub count: i64,
    /// Specific device ids.
    pub device_ids: Vec<String>,
    /// Capability sets.
    pub capabilities: Vec<Vec<String>>,
    /// Driver options.
    pub options: Vec<KeyValue>,
}

/// The chosen runtime and devices.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Selection {
    /// OCI runtime, none for the engine's default.
    pub runtime: Option<String>,
    /// Device requests.
    pub device_requests: Vec<DeviceRequest>,
}

/// A guest's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", content = "value", rename_all = "kebab-case")]
pub enum Decision {
    /// Use this selection.
    Select(Selection),
    /// No opinion: the native rule decides.
    Abstain,
    /// The task cannot run.
    Reject(String),
}

impl Request {
    pub(crate) fn to_wit(&self) -> wit::Request {
        wit::Request {
            task: identity_to_wit(&self.task),
            device_env: key_values_to_wit(&self.device_env),
            requested_runtime: self.requested_runtime.clone(),
            devices: self.devices.iter().map(DeviceMount::to_wit).collect(),
            node_runtimes: self.node_runtimes.clone(),
            nvidia_runtime: self.nvidia_runtime.clone(),
            allow_runtimes: self.allow_runtimes.clone(),
        }
    }
}

impl Decision {
    pub(crate) fn from_wit(raw: wit::Decision, budget: &mut Budget) -> Result<Self, Refusal> {
        Ok(match raw {
            wit::Decision::Abstain => Self::Abstain,
            wit::Decision::Reject(message) => {
                Self::Reject(budget.text("the rejection message", message, MAX_REASON)?)
            }
            wit::Decision::Select(selection) => {
                let runtime = match selection.runtime {
                    Some(runtime) => {
                        let runtime = budget.text("the runtime", runtime, MAX_NAME)?;
                        if !plain_name(&runtime) {
                            return Err(Refusal::Invalid(format!(
                                "the runtime {runtime:?} is not a valid runtime name"
                            )));
                        }
                        Some(runtime)
                    }
                    None => None,
                };
                budget.list(
                    "device-requests",
                    &selection.device_requests,
                    MAX_DEVICE_REQUESTS,
                )?;
                let device_requests = selection
                    .device_requests
                    .into_iter()
                    .map(|request| DeviceRequest::from_wit(request, budget))
                    .collect::<Result<_, _>>()?;
                Self::Select(Selection {
                    runtime,
                    device_requests,
                })
            }
        })
    }
}

impl DeviceRequest {
    fn from_wit(raw: wit::DeviceRequest, budget: &mut Budget) -> Result<Self, Refusal> {
        let driver = budget.text("a device request's driver", raw.driver, MAX_NAME)?;
        if !plain_name(&driver) {
            return Err(Refusal::Invalid(format!(
                "a device request's driver {driver:?} is not a valid name"
            )));
        }
        if raw.count < -1 {
            return Err(Refusal::Invalid(format!(
                "a device request's count is {}; it must be -1 (all) or more",
                raw.count
            )));
        }
        let device_ids = budget.strings(
            "a device request's device-ids",
            raw.device_ids,
            MAX_DEVICE_ITEMS,
            non_empty,
        )?;
        budget.list(
            "a device request's capabilities",
            &raw.capabilities,
            MAX_DEVICE_ITEMS,
        )?;
        let capabilities = raw
            .capabilities
            .into_iter()
            .map(|set| budget.strings("a capability set", set, MAX_DEVICE_ITEMS, non_empty))
            .collect::<Result<_, _>>()?;
        let options = budget.pairs(
            "a device request's options",
            raw.options,
            MAX_DEVICE_ITEMS,
            non_empty,
        )?;
        Ok(Self {
            driver,
            count: raw.count,
            device_ids,
            capabilities,
            options,
        })
    }
}
