//! The `policy` section of the plugin config: WebAssembly policy modules.
//!
//! ```hcl
//! policy {
//!   module {
//!     name           = "image-allowlist"
//!     path           = "/opt/nomad/policies/image_allowlist.wasm"
//!     sha256         = "9f86d0…"                # optional pin of the file
//!     hooks          = ["task-admission"]     # default: every hook it exports
//!     failure_policy = "fail"                 # or "ignore", "native"
//!     deadline       = "100ms"
//!     memory_limit_mb = 64
//!     config { allowed = "registry.local/*" } # values the module can read
//!   }
//! }
//! ```
//!
//! This module only decodes and validates; the policy host loads modules at
//! the long-lived launch, never on Nomad's throwaway validation launches.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use super::duration::GoDuration;
use super::hclspec::{
    Lit, Spec, Type, attr, block, block_attrs, block_list, default, object, required_attr,
};

/// Longest deadline a hook call may be given.
pub const MAX_DEADLINE: Duration = Duration::from_secs(10);
/// Largest linear-memory limit a module may be given, in MiB.
pub const MAX_MEMORY_LIMIT_MB: u64 = 4096;
/// Default per-call deadline.
pub const DEFAULT_DEADLINE: GoDuration = GoDuration::from_millis(100);
/// Default linear-memory limit, in MiB.
pub const DEFAULT_MEMORY_LIMIT_MB: u64 = 64;

/// `policy { module { … } … }`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// The modules, in the order they were written.
    pub module: Vec<PolicyModule>,
}

/// One WebAssembly policy module.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyModule {
    /// Unique name used in logs, task events and errors.
    pub name: String,
    /// Absolute path of the component file.
    pub path: String,
    /// Expected SHA-256 of the file (lowercase hex), if pinned.
    pub sha256: Option<String>,
    /// Hooks this module serves; empty means every hook it exports.
    pub hooks: Vec<Hook>,
    /// What happens when the module fails (trap, deadline, bad output).
    pub failure_policy: FailurePolicy,
    /// Wall-clock budget of one hook call.
    pub deadline: GoDuration,
    /// Linear-memory limit in MiB.
    pub memory_limit_mb: u64,
    /// Values the module reads through its config import.
    pub config: BTreeMap<String, String>,
}

impl Default for PolicyModule {
    fn default() -> Self {
        Self {
            name: String::new(),
            path: String::new(),
            sha256: None,
            hooks: Vec::new(),
            failure_policy: FailurePolicy::default(),
            deadline: DEFAULT_DEADLINE,
            memory_limit_mb: DEFAULT_MEMORY_LIMIT_MB,
            config: BTreeMap::new(),
        }
    }
}

/// The decision points a policy module can serve (one WIT interface each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hook {
    /// Does a container found by the reconciler belong to us?
    ReconcilerMatch,
    /// Which runtime or device requests a GPU task gets.
    GpuRuntime,
    /// Rewrite or drop a stats sample.
    StatsTransform,
    /// Allow, deny or patch a task before its container is created.
    TaskAdmission,
}

impl Hook {
    /// Every hook, in a stable order.
    pub const ALL: [Hook; 4] = [
        Self::ReconcilerMatch,
        Self::GpuRuntime,
        Self::StatsTransform,
        Self::TaskAdmission,
    ];

    /// The name used in configuration and in the WIT package.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ReconcilerMatch => "reconciler-match",
            Self::GpuRuntime => "gpu-runtime",
            Self::StatsTransform => "stats-transform",
            Self::TaskAdmission => "task-admission",
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the driver does when a module fails instead of answering.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailurePolicy {
    /// Fail closed: the decision fails (for admission, the task fails).
    #[default]
    Fail,
    /// Fail open: carry on as if the module had abstained.
    Ignore,
    /// Fall back to the driver's native rule for this decision.
    Native,
}

impl FailurePolicy {
    /// The name used in configuration.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Fail => "fail",
            Self::Ignore => "ignore",
            Self::Native => "native",
        }
    }
}

/// The schema of the `policy` block.
pub(super) fn schema() -> Spec {
    block(
        "policy",
        object([block_list(
            "module",
            object([
                required_attr("name", Type::String),
                required_attr("path", Type::String),
                attr("sha256", Type::String),
                attr("hooks", Type::list(Type::String)),
                default(attr("failure_policy", Type::String), Lit::str("fail")),
                default(attr("deadline", Type::String), Lit::str("100ms")),
                default(attr("memory_limit_mb", Type::Number), Lit::Int(64)),
                block_attrs("config", Type::String),
            ]),
        )]),
    )
}

/// Checks what serde cannot: required keys, formats, ranges and uniqueness.
pub(super) fn validate(policy: &PolicyConfig) -> Result<(), ConfigError> {
    let mut names = BTreeSet::new();
    for (index, module) in policy.module.iter().enumerate() {
        let at = |key: &str| format!("policy.module[{index}].{key}");
        let label = if module.name.is_empty() {
            format!("policy module #{}", index + 1)
        } else {
            format!("policy module {:?}", module.name)
        };
        let fail = |key: &str, message: String| {
            Err(ConfigError::new(at(key), format!("{label}: {message}")))
        };
        if module.name.is_empty() {
            return fail("name", "name is required".to_owned());
        }
        if !module
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return fail(
                "name",
                "name may only contain letters, digits, '-' and '_'".to_owned(),
            );
        }
        if !names.insert(module.name.as_str()) {
            return fail("name", "another module already has this name".to_owned());
        }
        if module.path.is_empty() {
            return fail("path", "path is required".to_owned());
        }
        if !Path::new(&module.path).is_absolute() {
            return fail(
                "path",
                format!("path must be absolute, got {:?}", module.path),
            );
        }
        if let Some(sha) = &module.sha256
            && (sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return fail("sha256", "sha256 must be 64 hexadecimal digits".to_owned());
        }
        let mut seen = BTreeSet::new();
        if let Some(hook) = module.hooks.iter().find(|h| !seen.insert(**h)) {
            return fail("hooks", format!("hook \"{hook}\" is listed twice"));
        }
        let deadline = module.deadline.get();
        if deadline.is_zero() || deadline > MAX_DEADLINE {
            return fail(
                "deadline",
                format!(
                    "deadline must be greater than 0s and at most {}",
                    GoDuration::new(MAX_DEADLINE)
                ),
            );
        }
        if module.memory_limit_mb == 0 || module.memory_limit_mb > MAX_MEMORY_LIMIT_MB {
            return fail(
                "memory_limit_mb",
                format!("memory_limit_mb must be between 1 and {MAX_MEMORY_LIMIT_MB}"),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::super::PluginConfig;
    use super::super::cty::encode_json;

    /// A module that passes validation, named `name`, with `changes` on top.
    fn module(name: &str, changes: &Value) -> Value {
        let mut module = json!({
            "name": name,
            "path": format!("/opt/policies/{name}.wasm"),
            "hooks": ["task-admission"],
        });
        if let (Some(module), Some(changes)) = (module.as_object_mut(), changes.as_object()) {
            module.extend(changes.clone());
        }
        module
    }

    /// SetConfig's decoding of a `policy` block with a valid first module
    /// and `second` after it.
    fn decode(second: &Value) -> Result<PluginConfig, super::ConfigError> {
        let config = json!({ "policy": { "module": [module("first", &json!({})), second] } });
        PluginConfig::from_msgpack(&encode_json(&config))
    }

    #[test]
    fn a_valid_policy_block_decodes() {
        let config = decode(&module(
            "second",
            &json!({
                "sha256": "ab".repeat(32),
                "hooks": ["gpu-runtime", "stats-transform"],
                "failure_policy": "native",
                "deadline": "10s",
                "memory_limit_mb": 4096,
            }),
        ))
        .expect("valid");
        assert_eq!(config.policy.module.len(), 2);
        let second = &config.policy.module[1];
        assert_eq!(second.failure_policy, super::FailurePolicy::Native);
        assert_eq!(second.deadline.get(), super::MAX_DEADLINE);
        assert_eq!(second.memory_limit_mb, super::MAX_MEMORY_LIMIT_MB);
    }

    /// Every mistake in a module is refused with an error whose key is the
    /// module's (by index) and the offending key, and whose text names the
    /// module and what is wrong.
    #[test]
    fn each_invalid_module_key_is_refused_naming_the_module_and_the_key() {
        let cases: [(&str, Value, &str, &str, &str); 15] = [
            (
                "relative path",
                module("rel", &json!({ "path": "policies/rel.wasm" })),
                "policy.module[1].path",
                "policy module \"rel\"",
                "path must be absolute, got \"policies/rel.wasm\"",
            ),
            (
                "empty path",
                module("nopath", &json!({ "path": "" })),
                "policy.module[1].path",
                "policy module \"nopath\"",
                "path is required",
            ),
            (
                "empty name",
                module("", &json!({})),
                "policy.module[1].name",
                "policy module #2",
                "name is required",
            ),
            (
                "bad character in the name",
                module("a b", &json!({})),
                "policy.module[1].name",
                "policy module \"a b\"",
                "name may only contain letters, digits, '-' and '_'",
            ),
            (
                "duplicate name",
                module("first", &json!({})),
                "policy.module[1].name",
                "policy module \"first\"",
                "another module already has this name",
            ),
            (
                "sha256 too short",
                module("short-pin", &json!({ "sha256": "abc123" })),
                "policy.module[1].sha256",
                "policy module \"short-pin\"",
                "sha256 must be 64 hexadecimal digits",
            ),
            (
                "sha256 not hex",
                module("bad-pin", &json!({ "sha256": "g".repeat(64) })),
                "policy.module[1].sha256",
                "policy module \"bad-pin\"",
                "sha256 must be 64 hexadecimal digits",
            ),
            (
                "unknown hook",
                module(
                    "hooked",
                    &json!({ "hooks": ["task-admission", "pre-start"] }),
                ),
                "policy.module[1].hooks[1]",
                "policy.module[1]",
                "unknown variant `pre-start`",
            ),
            (
                "a hook listed twice",
                module(
                    "twice",
                    &json!({ "hooks": ["gpu-runtime", "task-admission", "gpu-runtime"] }),
                ),
                "policy.module[1].hooks",
                "policy module \"twice\"",
                "hook \"gpu-runtime\" is listed twice",
            ),
            (
                "deadline 0s",
                module("instant", &json!({ "deadline": "0s" })),
                "policy.module[1].deadline",
                "policy module \"instant\"",
                "deadline must be greater than 0s and at most 10s",
            ),
            (
                "deadline over 10s",
                module("slow", &json!({ "deadline": "10.001s" })),
                "policy.module[1].deadline",
                "policy module \"slow\"",
                "deadline must be greater than 0s and at most 10s",
            ),
            (
                "memory_limit_mb 0",
                module("no-memory", &json!({ "memory_limit_mb": 0 })),
                "policy.module[1].memory_limit_mb",
                "policy module \"no-memory\"",
                "memory_limit_mb must be between 1 and 4096",
            ),
            (
                "memory_limit_mb over 4096",
                module("greedy", &json!({ "memory_limit_mb": 4097 })),
                "policy.module[1].memory_limit_mb",
                "policy module \"greedy\"",
                "memory_limit_mb must be between 1 and 4096",
            ),
            (
                "unknown failure_policy",
                module("retrying", &json!({ "failure_policy": "retry" })),
                "policy.module[1].failure_policy",
                "policy.module[1]",
                "unknown variant `retry`",
            ),
            (
                "unknown key",
                module("typo", &json!({ "dealine": "1s" })),
                "policy.module[1].dealine",
                "policy.module[1]",
                "unknown field `dealine`",
            ),
        ];
        for (what, second, key, names_module, says) in cases {
            let err = decode(&second).expect_err(what);
            assert_eq!(err.key, key, "{what}: {err}");
            let message = err.to_string();
            for needle in [key, names_module, says] {
                assert!(
                    message.contains(needle),
                    "{what}: {message:?} should contain {needle:?}"
                );
            }
        }
    }
}
