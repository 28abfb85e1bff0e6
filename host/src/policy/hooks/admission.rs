//! `task-admission`: allow, deny or patch a task before its container is
//! created.
//!
//! A patch is checked here for shape; whether it stays within what the
//! plugin config permits (capabilities, runtimes) is checked where it is
//! applied, against that config.

use serde::{Deserialize, Serialize};

use super::{
    Budget, DeviceMount, KeyValue, MAX_NAME, MAX_REASON, Mount, Refusal, TaskIdentity, env_name,
    identity_to_wit, key_values_to_wit, non_empty, plain_name,
};
use crate::policy::bindings::task_admission as wit;

/// Entries one patch list may carry.
pub const MAX_PATCH_ENTRIES: usize = 64;

/// The task's resources.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Resources {
    /// CPU shares (MHz).
    pub cpu_shares: i64,
    /// Memory (MiB).
    pub memory_mb: i64,
    /// Memory hard limit (MiB), 0 when unset.
    pub memory_max_mb: i64,
    /// CPU hard limit.
    pub cpu_hard_limit: bool,
    /// Pids limit, 0 when unset.
    pub pids_limit: i64,
}

/// The task's security-relevant options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Security {
    /// Privileged.
    pub privileged: bool,
    /// Added capabilities.
    pub cap_add: Vec<String>,
    /// Dropped capabilities.
    pub cap_drop: Vec<String>,
    /// `--security-opt` values.
    pub security_opt: Vec<String>,
    /// Requested runtime.
    pub runtime: Option<String>,
    /// Requested network mode.
    pub network_mode: Option<String>,
}

/// The task as it would start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Request {
    /// The task.
    pub task: TaskIdentity,
    /// Image reference as written.
    pub image: String,
    /// Labels.
    pub labels: Vec<KeyValue>,
    /// Environment.
    pub env: Vec<KeyValue>,
    /// Mounts.
    pub mounts: Vec<Mount>,
    /// Host devices.
    pub devices: Vec<DeviceMount>,
    /// Resources.
    pub resources: Resources,
    /// Security options.
    pub security: Security,
}

/// Changes to apply before the container is created.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Patch {
    /// Labels to set.
    pub set_labels: Vec<KeyValue>,
    /// Environment to set.
    pub set_env: Vec<KeyValue>,
    /// Environment to remove.
    pub unset_env: Vec<String>,
    /// Runtime to use.
    pub runtime: Option<String>,
    /// Memory hard limit (MiB).
    pub memory_max_mb: Option<i64>,
    /// Pids limit.
    pub pids_limit: Option<i64>,
    /// Capabilities to drop.
    pub cap_drop: Vec<String>,
    /// Capabilities to add.
    pub cap_add: Vec<String>,
    /// Security options to add.
    pub security_opt: Vec<String>,
}

/// A guest's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "decision", content = "value", rename_all = "kebab-case")]
pub enum Decision {
    /// Start as is.
    Allow,
    /// Do not start; the reason is shown to the task's owner.
    Deny(String),
    /// Start with these changes.
    Patch(Patch),
}

impl Request {
    pub(crate) fn to_wit(&self) -> wit::Request {
        let resources = &self.resources;
        let security = &self.security;
        wit::Request {
            task: identity_to_wit(&self.task),
            image: self.image.clone(),
            labels: key_values_to_wit(&self.labels),
            env: key_values_to_wit(&self.env),
            mounts: self.mounts.iter().map(Mount::to_wit).collect(),
            devices: self.devices.iter().map(DeviceMount::to_wit).collect(),
            resources: wit::Resources {
                cpu_shares: resources.cpu_shares,
                memory_mb: resources.memory_mb,
                memory_max_mb: resources.memory_max_mb,
                cpu_hard_limit: resources.cpu_hard_limit,
                pids_limit: resources.pids_limit,
            },
            security: wit::Security {
                privileged: security.privileged,
                cap_add: security.cap_add.clone(),
                cap_drop: security.cap_drop.clone(),
                security_opt: security.security_opt.clone(),
                runtime: security.runtime.clone(),
                network_mode: security.network_mode.clone(),
            },
        }
    }
}

/// Security options a patch may add: they may tighten a task, never loosen
/// it (`unconfined` profiles, disabled labelling, `no-new-privileges:false`).
/// No `seccomp` option either: its value is a file the plugin would read
/// from the host, which a guest must not choose.
pub(crate) fn tightening_security_opt(option: &str) -> bool {
    let lower = option.to_ascii_lowercase();
    !lower.is_empty()
        && !lower.starts_with("seccomp")
        && !lower.contains("unconfined")
        && lower != "label=disable"
        && lower != "label:disable"
        && !lower.starts_with("no-new-privileges=false")
        && !lower.starts_with("no-new-privileges:false")
}

impl Decision {
    pub(crate) fn from_wit(raw: wit::Decision, budget: &mut Budget) -> Result<Self, Refusal> {
        Ok(match raw {
            wit::Decision::Allow => Self::Allow,
            wit::Decision::Deny(reason) => {
                Self::Deny(budget.text("the reason", reason, MAX_REASON)?)
            }
            wit::Decision::Patch(patch) => Self::Patch(Patch::from_wit(patch, budget)?),
        })
    }
}

impl Patch {
    fn from_wit(raw: wit::Patch, budget: &mut Budget) -> Result<Self, Refusal> {
        let runtime = match raw.runtime {
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
        if let Some(memory) = raw.memory_max_mb
            && memory <= 0
        {
            return Err(Refusal::Invalid(format!(
                "memory-max-mb is {memory}; it must be greater than 0"
            )));
        }
        if let Some(pids) = raw.pids_limit
            && pids <= 0
        {
            return Err(Refusal::Invalid(format!(
                "pids-limit is {pids}; it must be greater than 0"
            )));
        }
        Ok(Self {
            set_labels: budget.pairs("set-labels", raw.set_labels, MAX_PATCH_ENTRIES, non_empty)?,
            set_env: budget.pairs("set-env", raw.set_env, MAX_PATCH_ENTRIES, env_name)?,
            unset_env: budget.strings("unset-env", raw.unset_env, MAX_PATCH_ENTRIES, env_name)?,
            runtime,
            memory_max_mb: raw.memory_max_mb,
            pids_limit: raw.pids_limit,
            cap_drop: budget.strings("cap-drop", raw.cap_drop, MAX_PATCH_ENTRIES, plain_name)?,
            cap_add: budget.strings("cap-add", raw.cap_add, MAX_PATCH_ENTRIES, plain_name)?,
            security_opt: budget.strings(
                "security-opt",
                raw.security_opt,
                MAX_PATCH_ENTRIES,
                tightening_security_opt,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn patch() -> wit::Patch {
        wit::Patch {
            set_labels: vec![],
            set_env: vec![],
            unset_env: vec![],
            runtime: None,
            memory_max_mb: None,
            pids_limit: None,
            cap_drop: vec![],
            cap_add: vec![],
            security_opt: vec![],
        }
    }

    #[test]
    fn patches_may_tighten_but_not_loosen_security() {
        assert!(tightening_security_opt("no-new-privileges"));
        assert!(tightening_security_opt("apparmor=docker-default"));
        for loose in [
            "seccomp=unconfined",
            "apparmor=Unconfined",
            "label=disable",
            "no-new-privileges:false",
            "seccomp=/etc/shadow",
            "",
        ] {
            assert!(!tightening_security_opt(loose), "{loose}");
        }
        let mut raw = patch();
        raw.security_opt = vec!["seccomp=unconfined".into()];
        assert!(matches!(
            Decision::from_wit(wit::Decision::Patch(raw), &mut Budget::new(65536)),
            Err(Refusal::Invalid(_))
        ));
    }

    #[test]
    fn malformed_patches_are_refused() {
        let mut raw = patch();
        raw.set_env = vec![crate::policy::bindings::types::KeyValue {
            key: "A=B".into(),
            value: "x".into(),
        }];
        assert!(Decision::from_wit(wit::Decision::Patch(raw), &mut Budget::new(65536)).is_err());
        let mut raw = patch();
        raw.memory_max_mb = Some(0);
        assert!(Decision::from_wit(wit::Decision::Patch(raw), &mut Budget::new(65536)).is_err());
        let mut raw = patch();
        raw.runtime = Some("../runc".into());
        assert!(Decision::from_wit(wit::Decision::Patch(raw), &mut Budget::new(65536)).is_err());
        let mut raw = patch();
        raw.set_labels = vec![crate::policy::bindings::types::KeyValue {
            key: "team".into(),
            value: "payments".into(),
        }];
        assert_eq!(
            Decision::from_wit(wit::Decision::Patch(raw), &mut Budget::new(65536)),
            Ok(Decision::Patch(Patch {
                set_labels: vec![KeyValue::new("team", "payments")],
                ..Patch::default()
            }))
        );
    }
}
