//! The hooks' inputs and decisions as host types: what the driver hands a
//! policy and what it gets back, checked.
//!
//! Each hook has a module with its input, its decision, the conversion to
//! the generated WIT types, and the validation of what a guest returns: a
//! guest's answer is untrusted input, so every string and list is charged
//! against the call's output budget and checked for shape before the driver
//! sees it. The same types (kebab-case JSON) are what `policy eval` reads
//! and prints.

pub mod admission;
#[doc(hidden)]
pub mod fuzzing;
pub mod gpu;
pub mod reconciler;
pub mod stats;

use serde::{Deserialize, Serialize};

use super::bindings::types as wit;
use crate::config::policy::Hook;

/// A name and a value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyValue {
    /// The name.
    pub key: String,
    /// The value.
    pub value: String,
}

impl KeyValue {
    /// A pair from anything string-like.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// Who a task is: the driver's own type.
pub use crate::stats::TaskIdentity;

/// A filesystem mount.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Mount {
    /// Host path or volume name.
    pub source: String,
    /// Path in the container.
    pub target: String,
    /// Read-only.
    pub read_only: bool,
}

/// A host device exposed to a container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct DeviceMount {
    /// Path on the host.
    pub host_path: String,
    /// Path in the container.
    pub container_path: String,
    /// cgroup permissions (`rwm`).
    pub permissions: String,
}

/// The input of one hook call.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// `reconciler-match`.
    ReconcilerMatch(reconciler::Container),
    /// `gpu-runtime`.
    GpuRuntime(gpu::Request),
    /// `stats-transform`.
    StatsTransform(stats::Input),
    /// `task-admission`.
    TaskAdmission(admission::Request),
}

impl Input {
    /// The hook this input is for.
    pub fn hook(&self) -> Hook {
        match self {
            Self::ReconcilerMatch(_) => Hook::ReconcilerMatch,
            Self::GpuRuntime(_) => Hook::GpuRuntime,
            Self::StatsTransform(_) => Hook::StatsTransform,
            Self::TaskAdmission(_) => Hook::TaskAdmission,
        }
    }

    /// Reads a hook's input from JSON (kebab-case field names, as in WIT).
    pub fn from_json(hook: Hook, json: &str) -> Result<Self, String> {
        fn parse<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, String> {
            let mut de = serde_json::Deserializer::from_str(json);
            serde_path_to_error::deserialize(&mut de).map_err(|error| {
                let path = error.path().to_string();
                if path == "." {
                    error.inner().to_string()
                } else {
                    format!("{path}: {}", error.inner())
                }
            })
        }
        Ok(match hook {
            Hook::ReconcilerMatch => Self::ReconcilerMatch(parse(json)?),
            Hook::GpuRuntime => Self::GpuRuntime(parse(json)?),
            Hook::StatsTransform => Self::StatsTransform(parse(json)?),
            Hook::TaskAdmission => Self::TaskAdmission(parse(json)?),
        })
    }
}

/// The decision of one hook call.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Output {
    /// `reconciler-match`.
    ReconcilerMatch(reconciler::Decision),
    /// `gpu-runtime`.
    GpuRuntime(gpu::Decision),
    /// `stats-transform`: the sample to send, or none to drop it.
    StatsTransform(stats::Transformed),
    /// `task-admission`.
    TaskAdmission(admission::Decision),
}

/// Why a guest's answer was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// The answer is larger than the output cap.
    TooLarge,
    /// The answer breaks a rule of the contract.
    Invalid(String),
}

/// Charges a guest's answer against the output cap and checks its pieces.
#[derive(Debug)]
pub(crate) struct Budget {
    left: usize,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Self {
        Self { left: limit }
    }

    /// Charges `bytes` (plus a little per item, so empty items still cost).
    pub(crate) fn charge(&mut self, bytes: usize) -> Result<(), Refusal> {
        let cost = bytes.saturating_add(8);
        if cost > self.left {
            self.left = 0;
            return Err(Refusal::TooLarge);
        }
        self.left -= cost;
        Ok(())
    }

    /// Charges and checks one string: at most `max` bytes, no NUL.
    pub(crate) fn text(&mut self, what: &str, text: String, max: usize) -> Result<String, Refusal> {
        self.charge(text.len())?;
        if text.len() > max {
            return Err(Refusal::Invalid(format!(
                "{what} is {} bytes long; at most {max} are allowed",
                text.len()
            )));
        }
        if text.contains('\0') {
            return Err(Refusal::Invalid(format!("{what} contains a NUL character")));
        }
        Ok(text)
    }

    /// Charges a list's items at their in-memory size, then checks its
    /// length: a huge list is too large before it is malformed.
    pub(crate) fn list<T>(&mut self, what: &str, list: &[T], max: usize) -> Result<(), Refusal> {
        self.charge(list.len().saturating_mul(std::mem::size_of::<T>()))?;
        if list.len() > max {
            return Err(Refusal::Invalid(format!(
                "{what} has {} entries; at most {max} are allowed",
                list.len()
            )));
        }
        Ok(())
    }

    /// Charges and checks a list of pairs.
    pub(crate) fn pairs(
        &mut self,
        what: &str,
        pairs: Vec<wit::KeyValue>,
        max: usize,
        key_ok: fn(&str) -> bool,
    ) -> Result<Vec<KeyValue>, Refusal> {
        self.list(what, &pairs, max)?;
        pairs
            .into_iter()
            .map(|pair| {
                let key = self.text(what, pair.key, MAX_NAME)?;
                if !key_ok(&key) {
                    return Err(Refusal::Invalid(format!(
                        "{what} has an invalid name {key:?}"
                    )));
                }
                let value = self.text(what, pair.value, MAX_VALUE)?;
                Ok(KeyValue { key, value })
            })
            .collect()
    }

    /// Charges and checks a list of strings.
    pub(crate) fn strings(
        &mut self,
        what: &str,
        list: Vec<String>,
        max: usize,
        item_ok: fn(&str) -> bool,
    ) -> Result<Vec<String>, Refusal> {
        self.list(what, &list, max)?;
        list.into_iter()
            .map(|item| {
                let item = self.text(what, item, MAX_NAME)?;
                if !item_ok(&item) {
                    return Err(Refusal::Invalid(format!(
                        "{what} has an invalid entry {item:?}"
                    )));
                }
                Ok(item)
            })
            .collect()
    }
}

/// Longest name (label key, env name, runtime, capability) a guest may return.
pub(crate) const MAX_NAME: usize = 256;
/// Longest value (label or env value) a guest may return.
pub(crate) const MAX_VALUE: usize = 16 * 1024;
/// Longest reason or message a guest may return.
pub(crate) const MAX_REASON: usize = 4096;

/// Any non-empty name.
pub(crate) fn non_empty(name: &str) -> bool {
    !name.is_empty()
}

/// A runtime, driver or capability name: letters, digits, `.`, `_`, `-`.
pub(crate) fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// An environment variable name: not empty, no `=`.
pub(crate) fn env_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('=')
}

pub(crate) fn key_values_to_wit(pairs: &[KeyValue]) -> Vec<wit::KeyValue> {
    pairs
        .iter()
        .map(|pair| wit::KeyValue {
            key: pair.key.clone(),
            value: pair.value.clone(),
        })
        .collect()
}

pub(crate) fn identity_to_wit(identity: &TaskIdentity) -> wit::TaskIdentity {
    wit::TaskIdentity {
        job: identity.job.clone(),
        group: identity.group.clone(),
        task: identity.task.clone(),
        alloc_id: identity.alloc_id.clone(),
        namespace: identity.namespace.clone(),
        node_id: identity.node_id.clone(),
        node_name: identity.node_name.clone(),
    }
}

impl Mount {
    pub(crate) fn to_wit(&self) -> wit::Mount {
        wit::Mount {
            source: self.source.clone(),
            target: self.target.clone(),
            read_only: self.read_only,
        }
    }
}

impl DeviceMount {
    pub(crate) fn to_wit(&self) -> wit::DeviceMount {
        wit::DeviceMount {
            host_path: self.host_path.clone(),
            container_path: self.container_path.clone(),
            permissions: self.permissions.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_refuses_oversized_answers_before_judging_their_shape() {
        let mut budget = Budget::new(100);
        assert_eq!(
            budget.text("reason", "x".repeat(50), 10),
            Err(Refusal::Invalid(
                "reason is 50 bytes long; at most 10 are allowed".into()
            ))
        );
        let mut budget = Budget::new(100);
        assert_eq!(
            budget.text("reason", "x".repeat(500), 10),
            Err(Refusal::TooLarge)
        );
        let mut budget = Budget::new(100);
        assert!(matches!(
            budget.text("reason", "a\0b".into(), 10),
            Err(Refusal::Invalid(_))
        ));
    }

    #[test]
    fn names_are_checked() {
        assert!(plain_name("nvidia") && plain_name("io.containerd.runc.v2"));
        assert!(!plain_name("") && !plain_name("run c") && !plain_name("a/b"));
        assert!(env_name("PATH") && !env_name("A=B") && !env_name(""));
    }

    #[test]
    fn inputs_read_kebab_case_json_and_name_the_bad_field() {
        let input = Input::from_json(
            Hook::TaskAdmission,
            r#"{"image": "busybox:1", "task": {"alloc-id": "a1", "job": "web"}}"#,
        )
        .unwrap();
        let Input::TaskAdmission(request) = input else {
            panic!("wrong hook")
        };
        assert_eq!(request.image, "busybox:1");
        assert_eq!(request.task.alloc_id, "a1");
        let error =
            Input::from_json(Hook::TaskAdmission, r#"{"task": {"alloc_id": "a1"}}"#).unwrap_err();
        assert!(
            error.contains("task") && error.contains("alloc_id"),
            "{error}"
        );
    }
}
