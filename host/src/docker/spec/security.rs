//! Privilege-related rules: runtime selection, namespace modes,
//! capabilities, security options (seccomp profiles inlined) and ulimits.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use bollard::models::ResourcesUlimits;

use super::{GpuChoice, HostFiles, NVIDIA_VISIBLE_DEVICES, SpecError, network, quote};
use crate::config::PluginConfig;
use crate::config::plugin::DEFAULT_ALLOW_CAPS;
use crate::config::task::TaskConfig;
use crate::docker::engine::EngineFacts;
use crate::driver::task::TaskRequest;

/// The OCI runtime: the task's `runtime`, replaced by the plugin's GPU
/// runtime when a device plugin handed out NVIDIA GPUs, or by what a GPU
/// runtime policy chose; either way it must be in `allow_runtimes` (""
/// always is: the engine default).
pub(super) fn runtime(
    task: &TaskRequest,
    config: &TaskConfig,
    plugin: &PluginConfig,
    engine: &EngineFacts,
    gpu: Option<&GpuChoice>,
) -> Result<String, SpecError> {
    if let Some(choice) = gpu {
        let runtime = choice
            .runtime
            .clone()
            .unwrap_or_else(|| config.runtime.clone());
        let by = format!("(chosen by GPU runtime policy {})", choice.policy);
        if !runtime.is_empty() && !engine.has_runtime(&runtime) {
            return Err(SpecError::new(
                "runtime",
                format!(
                    "requested docker runtime {} was not found {by}",
                    quote(&runtime)
                ),
            ));
        }
        if !runtime.is_empty() && !plugin.allow_runtimes.contains(&runtime) {
            return Err(SpecError::new(
                "runtime",
                format!("requested runtime {} is not allowed {by}", quote(&runtime)),
            ));
        }
        return Ok(runtime);
    }
    let mut runtime = config.runtime.clone();
    if task.device_env.contains_key(NVIDIA_VISIBLE_DEVICES) {
        let gpu = &plugin.nvidia_runtime;
        if !engine.has_runtime(gpu) {
            return Err(SpecError::new(
                "runtime",
                format!("requested docker runtime {} was not found", quote(gpu)),
            ));
        }
        if !runtime.is_empty() && &runtime != gpu {
            return Err(SpecError::new(
                "runtime",
                format!(
                    "conflicting runtime requests: gpu runtime {} conflicts with task runtime {}",
                    quote(gpu),
                    quote(&runtime)
                ),
            ));
        }
        runtime.clone_from(gpu);
    }
    if !runtime.is_empty() && !plugin.allow_runtimes.contains(&runtime) {
        return Err(SpecError::new(
            "runtime",
            format!("requested runtime {} is not allowed", quote(&runtime)),
        ));
    }
    Ok(runtime)
}

/// A namespace mode (`ipc_mode`, …) is allowed when empty, when the plugin
/// allows privileged containers, or when it matches one of the plugin's
/// `allowed_modes` globs.
pub(super) fn validate_namespace(
    allowed: &[String],
    allow_privileged: bool,
    field: &str,
    desired: &str,
) -> Result<(), SpecError> {
    if allow_privileged || desired.is_empty() {
        return Ok(());
    }
    if allowed
        .iter()
        .any(|pattern| network::glob(pattern, desired))
    {
        return Ok(());
    }
    Err(SpecError::new(
        field,
        format!("cannot apply {} configuration", quote(field)),
    ))
}

/// Linux capability names, lower case without `cap_`, by number.
const KNOWN_CAPS: [&str; 41] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

/// Where the kernel says which capability is its last.
const CAP_LAST_CAP: &str = "/proc/sys/kernel/cap_last_cap";

/// The capabilities `all` stands for: those the kernel knows (every known
/// one when the kernel cannot be asked).
fn supported_caps(host: &dyn HostFiles) -> &'static [&'static str] {
    let last = host
        .read_to_string(Path::new(CAP_LAST_CAP))
        .ok()
        .and_then(|text| text.trim().parse::<usize>().ok());
    match last {
        Some(last) => KNOWN_CAPS.get(..=last).unwrap_or(&KNOWN_CAPS),
        None => &KNOWN_CAPS,
    }
}

/// A capability name as Nomad compares them: trimmed, lower case, no
/// `cap_` prefix.
fn normalize(name: &str) -> String {
    let lower = name.trim().to_lowercase();
    match lower.strip_prefix("cap_") {
        Some(rest) => rest.to_owned(),
        None => lower,
    }
}

/// The normalised set of `names`, `all` expanded.
fn cap_set<S: AsRef<str>>(names: &[S], supported: &[&str]) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    for name in names {
        match normalize(name.as_ref()).as_str() {
            "" => {}
            "all" => set.extend(supported.iter().map(|c| (*c).to_owned())),
            other => {
                set.insert(other.to_owned());
            }
        }
    }
    set
}

/// `CapAdd` and `CapDrop`: every added capability must be allowed
/// (`allow_caps`); the adds go as asked (sorted, or `all`); the drops are
/// Docker's defaults the plugin does not allow, plus the task's own drops
/// (or `all`).
pub(super) fn capabilities(
    allow_caps: &[String],
    cap_add: &[String],
    cap_drop: &[String],
    host: &dyn HostFiles,
) -> Result<(Vec<String>, Vec<String>), SpecError> {
    let supported = supported_caps(host);
    let allow = cap_set(allow_caps, supported);
    let adds = cap_set(cap_add, supported);
    let missing: Vec<&str> = adds.difference(&allow).map(String::as_str).collect();
    if !missing.is_empty() {
        return Err(SpecError::new(
            "cap_add",
            format!(
                "driver does not allow the following capabilities: {}",
                missing.join(", ")
            ),
        ));
    }
    let has_all = |caps: &[String]| caps.iter().any(|c| normalize(c) == "all");

    let add = if has_all(cap_add) {
        vec!["all".to_owned()]
    } else {
        adds.into_iter().collect()
    };

    let drop = if has_all(cap_drop) {
        vec!["all".to_owned()]
    } else {
        let mut docker_defaults = cap_set(&DEFAULT_ALLOW_CAPS, supported);
        docker_defaults.insert("net_raw".to_owned());
        let mut drop: BTreeSet<String> = docker_defaults.difference(&allow).cloned().collect();
        drop.extend(cap_set(cap_drop, supported));
        drop.into_iter().collect()
    };
    Ok((add, drop))
}

/// `security_opt`: every entry is `key=value` (or `key:value`) except a
/// bare `no-new-privileges`; a `seccomp` profile path (anything but
/// `unconfined`) is replaced by the profile itself, as compact JSON.
pub(super) fn security_opts(
    opts: &[String],
    host: &dyn HostFiles,
) -> Result<Vec<String>, SpecError> {
    let fail = |message: String| {
        SpecError::new(
            "security_opt",
            format!("failed to parse security_opt configuration: {message}"),
        )
    };
    let mut out = Vec::with_capacity(opts.len());
    for opt in opts {
        let pair = match opt.split_once('=') {
            Some(pair) => Some(pair),
            None if opt == "no-new-privileges" => None,
            None => match opt.split_once(':') {
                Some(pair) => Some(pair),
                None => return Err(fail(format!("invalid security_opt: {}", quote(opt)))),
            },
        };
        match pair {
            Some(("seccomp", profile)) if profile != "unconfined" => {
                let text = host.read_to_string(Path::new(profile)).map_err(|err| {
                    fail(format!(
                        "opening seccomp profile ({profile}) failed: open {profile}: {err}"
                    ))
                })?;
                let json = compact_json(&text).map_err(|err| {
                    fail(format!(
                        "compacting json for seccomp profile ({profile}) failed: {err}"
                    ))
                })?;
                out.push(format!("seccomp={json}"));
            }
            _ => out.push(opt.clone()),
        }
    }
    Ok(out)
}

/// One JSON value with the insignificant white space removed, everything
/// else (key order, number spelling, escapes) kept as written.
fn compact_json(text: &str) -> Result<String, String> {
    serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(|err| err.to_string())?;
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            if c == '"' {
                in_string = true;
            }
            out.push(c);
        }
    }
    Ok(out)
}

/// `ulimit`: `name = "soft[:hard]"`, the hard limit defaulting to the soft
/// one. Sorted by name.
pub(super) fn ulimits(
    specs: &BTreeMap<String, String>,
) -> Result<Vec<ResourcesUlimits>, SpecError> {
    let fail = |message: String| {
        SpecError::new(
            "ulimit",
            format!("failed to parse ulimit configuration: {message}"),
        )
    };
    let mut out = Vec::with_capacity(specs.len());
    for (name, raw) in specs {
        if raw.is_empty() {
            return Err(fail(format!(
                "Malformed ulimit specification {name}: {}, cannot be empty",
                quote(raw)
            )));
        }
        let spec = if raw.contains(':') {
            raw.clone()
        } else {
            format!("{raw}:{raw}")
        };
        let (soft, hard) = spec.split_once(':').unwrap_or((spec.as_str(), ""));
        let soft: i64 = soft
            .parse()
            .map_err(|_| fail(format!("Malformed soft ulimit {name}: {spec}")))?;
        let hard: i64 = hard
            .parse()
            .map_err(|_| fail(format!("Malformed hard ulimit {name}: {spec}")))?;
        out.push(ResourcesUlimits {
            name: Some(name.clone()),
            soft: Some(soft),
            hard: Some(hard),
        });
    }
    Ok(out)
}
