//! GPU runtime selection: when Nomad's device plugin hands a task GPUs
//! (`NVIDIA_VISIBLE_DEVICES`), pick either the NVIDIA OCI runtime
//! (`mode = "runtime"`, the native rule made stricter) or CDI device
//! requests (`mode = "cdi"`, no special runtime needed).
//!
//! The decision logic is [`decide`], a plain function of the configuration
//! and the request; the hook only reads the config and logs the outcome.
//! See README.md for the config keys.

use wasmdock_guest_sdk::gpu_runtime::{Decision, DeviceRequest, Request, Selection};
use wasmdock_guest_sdk::limits::{MAX_REASON, clip};
use wasmdock_guest_sdk::{GpuRuntime, host};

/// The variable Nomad's NVIDIA device plugin sets for a task with GPUs.
const GPU_ENV: &str = "NVIDIA_VISIBLE_DEVICES";
/// The CDI device kind used when `cdi_kind` is not set.
const DEFAULT_CDI_KIND: &str = "nvidia.com/gpu";
/// More device ids than this in one task is certainly a mistake (and the
/// host takes at most 64 per device request).
const MAX_DEVICE_IDS: usize = 64;
/// Longest device id accepted from the environment, in bytes.
const MAX_DEVICE_ID_LEN: usize = 128;

/// How GPUs are handed to the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Through an OCI runtime (the NVIDIA container runtime).
    Runtime,
    /// Through CDI device requests, with the engine's default runtime.
    Cdi,
}

/// This module's `config { }` block, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Config {
    mode: Mode,
    /// `runtime`: overrides the plugin's `nvidia_runtime` in runtime mode.
    runtime: Option<String>,
    /// `cdi_kind`: the CDI kind in front of each device id.
    cdi_kind: String,
}

impl Config {
    /// Reads the config through `get` (the host's `config-get`). A value the
    /// module cannot use is an error: GPU tasks are rejected rather than
    /// started with a guess.
    fn load(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let mode = match get("mode").as_deref().map(str::trim) {
            None | Some("" | "runtime") => Mode::Runtime,
            Some("cdi") => Mode::Cdi,
            Some(other) => {
                return Err(format!(
                    "config mode = {other:?} is not supported (use \"runtime\" or \"cdi\")"
                ));
            }
        };
        let runtime = get("runtime")
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty());
        if let Some(runtime) = &runtime
            && (runtime.len() > 128 || !runtime.chars().all(is_runtime_char))
        {
            return Err(format!(
                "config runtime = {runtime:?} is not a runtime name (letters, digits, '.', '_', '-')"
            ));
        }
        let cdi_kind = get("cdi_kind")
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty())
            .unwrap_or_else(|| DEFAULT_CDI_KIND.to_owned());
        if !cdi_kind.contains('/') || !cdi_kind.chars().all(is_cdi_kind_char) {
            return Err(format!(
                "config cdi_kind = {cdi_kind:?} is not a CDI kind like \"vendor.com/class\""
            ));
        }
        Ok(Self {
            mode,
            runtime,
            cdi_kind,
        })
    }
}

fn is_runtime_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

fn is_cdi_kind_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/')
}

fn is_device_id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':')
}

/// The GPUs a task was given, from its device environment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Gpus {
    /// `NVIDIA_VISIBLE_DEVICES=all`.
    All,
    /// A list of indices or UUIDs.
    Ids(Vec<String>),
}

/// Reads `NVIDIA_VISIBLE_DEVICES` from the device environment: `None` when
/// unset, empty, `void` or `none` (no GPU for this task). The last entry
/// wins, as in a process environment.
fn visible_gpus(request: &Request) -> Result<Option<Gpus>, String> {
    let Some(value) = request
        .device_env
        .iter()
        .rev()
        .find(|kv| kv.key == GPU_ENV)
        .map(|kv| kv.value.trim())
    else {
        return Ok(None);
    };
    if value.is_empty() || value.eq_ignore_ascii_case("void") || value.eq_ignore_ascii_case("none")
    {
        return Ok(None);
    }
    let ids: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .collect();
    if ids.is_empty() {
        return Ok(None);
    }
    if ids.iter().any(|id| id.eq_ignore_ascii_case("all")) {
        return Ok(Some(Gpus::All));
    }
    if ids.len() > MAX_DEVICE_IDS {
        return Err(format!(
            "{GPU_ENV} lists {} devices, more than the {MAX_DEVICE_IDS} this policy accepts",
            ids.len()
        ));
    }
    if let Some(bad) = ids
        .iter()
        .find(|id| id.len() > MAX_DEVICE_ID_LEN || !id.chars().all(is_device_id_char))
    {
        return Err(clip(
            format!("{GPU_ENV} holds an invalid device id {bad:?}"),
            MAX_REASON,
        ));
    }
    Ok(Some(Gpus::Ids(
        ids.into_iter().map(str::to_owned).collect(),
    )))
}

/// Decides for one request. `Err` from the config is passed in so that a
/// misconfigured module rejects GPU tasks (and abstains for the rest).
fn decide(config: &Result<Config, String>, request: &Request) -> Decision {
    match decide_unclipped(config, request) {
        Decision::Reject(message) => Decision::Reject(clip(message, MAX_REASON)),
        other => other,
    }
}

fn decide_unclipped(config: &Result<Config, String>, request: &Request) -> Decision {
    let gpus = match visible_gpus(request) {
        Ok(Some(gpus)) => gpus,
        Ok(None) => return Decision::Abstain,
        Err(message) => return Decision::Reject(message),
    };
    let config = match config {
        Ok(config) => config,
        Err(message) => {
            return Decision::Reject(format!(
                "the gpu-runtime policy is misconfigured: {message}"
            ));
        }
    };
    let requested = request
        .requested_runtime
        .as_deref()
        .map(str::trim)
        .filter(|runtime| !runtime.is_empty());
    match config.mode {
        Mode::Runtime => select_runtime(config, request, requested),
        Mode::Cdi => Decision::Select(Selection {
            // CDI needs no special runtime: keep the task's own, if any
            // (the host still checks it against allow_runtimes).
            runtime: requested.map(str::to_owned),
            device_requests: vec![cdi_request(&config.cdi_kind, &gpus)],
        }),
    }
}

fn select_runtime(config: &Config, request: &Request, requested: Option<&str>) -> Decision {
    let chosen = config
        .runtime
        .as_deref()
        .unwrap_or_else(|| request.nvidia_runtime.trim());
    if chosen.is_empty() {
        return Decision::Reject(
            "the task requests GPUs but no GPU runtime is configured \
             (set the plugin's nvidia_runtime or this module's runtime)"
                .to_owned(),
        );
    }
    if let Some(requested) = requested
        && requested != chosen
    {
        return Decision::Reject(format!(
            "conflicting runtime requests: gpu runtime {chosen:?} conflicts with task runtime {requested:?}"
        ));
    }
    if !request.node_runtimes.iter().any(|r| r == chosen) {
        return Decision::Reject(format!(
            "requested docker runtime {chosen:?} was not found on this node (the engine has: {})",
            list_or_none(&request.node_runtimes)
        ));
    }
    if !request.allow_runtimes.iter().any(|r| r == chosen) {
        return Decision::Reject(format!(
            "requested runtime {chosen:?} is not allowed (allow_runtimes: {})",
            list_or_none(&request.allow_runtimes)
        ));
    }
    Decision::Select(Selection {
        runtime: Some(chosen.to_owned()),
        device_requests: Vec::new(),
    })
}

fn cdi_request(kind: &str, gpus: &Gpus) -> DeviceRequest {
    let device_ids = match gpus {
        Gpus::All => vec![format!("{kind}=all")],
        Gpus::Ids(ids) => ids.iter().map(|id| format!("{kind}={id}")).collect(),
    };
    DeviceRequest {
        driver: "cdi".to_owned(),
        count: 0,
        device_ids,
        capabilities: Vec::new(),
        options: Vec::new(),
    }
}

fn list_or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_owned()
    } else {
        items.join(", ")
    }
}

struct Policy;

impl GpuRuntime for Policy {
    fn select(request: Request) -> Decision {
        let config = Config::load(host::config);
        if let Err(message) = &config {
            host::error("gpu-runtime policy misconfigured", &[("error", message)]);
        }
        let decision = decide(&config, &request);
        let task = &request.task.task;
        let alloc = &request.task.alloc_id;
        match &decision {
            Decision::Select(selection) => {
                let runtime = selection.runtime.as_deref().unwrap_or("(engine default)");
                let devices = selection
                    .device_requests
                    .iter()
                    .flat_map(|dr| dr.device_ids.iter().map(String::as_str))
                    .collect::<Vec<_>>()
                    .join(",");
                host::info(
                    "selected GPU runtime",
                    &[
                        ("task", task),
                        ("alloc_id", alloc),
                        ("runtime", runtime),
                        ("cdi_devices", &devices),
                    ],
                );
            }
            Decision::Reject(reason) => host::warn(
                "rejected GPU task",
                &[("task", task), ("alloc_id", alloc), ("reason", reason)],
            ),
            Decision::Abstain => {
                host::debug("no GPUs requested; abstaining", &[("task", task)]);
            }
        }
        decision
    }
}

wasmdock_guest_sdk::export!(Policy => [gpu_runtime]);

#[cfg(test)]
mod tests {
    use super::*;
    use wasmdock_guest_sdk::{KeyValue, TaskIdentity};

    fn config(pairs: &[(&str, &str)]) -> Result<Config, String> {
        Config::load(|key| {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    fn request(gpus: Option<&str>, requested: Option<&str>) -> Request {
        Request {
            task: TaskIdentity {
                job: "train".into(),
                group: "g".into(),
                task: "t".into(),
                alloc_id: "0b6cbe6e-47a4-4c4c-9fa2-3a8a4ff4e0ad".into(),
                namespace: "default".into(),
                node_id: "n1".into(),
                node_name: "gpu-1".into(),
            },
            device_env: gpus
                .map(|value| {
                    vec![KeyValue {
                        key: GPU_ENV.into(),
                        value: value.into(),
                    }]
                })
                .unwrap_or_default(),
            requested_runtime: requested.map(Into::into),
            devices: Vec::new(),
            node_runtimes: vec!["runc".into(), "nvidia".into()],
            nvidia_runtime: "nvidia".into(),
            allow_runtimes: vec!["runc".into(), "nvidia".into()],
        }
    }

    fn runtime_of(decision: &Decision) -> Option<&str> {
        match decision {
            Decision::Select(selection) => selection.runtime.as_deref(),
            _ => None,
        }
    }

    fn reject_reason(decision: &Decision) -> &str {
        match decision {
            Decision::Reject(reason) => reason,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn abstains_without_gpus() {
        let cfg = config(&[]);
        for value in [None, Some(""), Some("void"), Some("NONE"), Some(" , ")] {
            assert!(
                matches!(decide(&cfg, &request(value, None)), Decision::Abstain),
                "{value:?}"
            );
        }
    }

    #[test]
    fn runtime_mode_uses_the_plugin_gpu_runtime() {
        let decision = decide(&config(&[]), &request(Some("0,1"), None));
        assert_eq!(runtime_of(&decision), Some("nvidia"));
        let Decision::Select(selection) = decision else {
            unreachable!()
        };
        assert!(selection.device_requests.is_empty());
    }

    #[test]
    fn runtime_mode_accepts_the_same_runtime_requested_by_the_task() {
        let decision = decide(&config(&[]), &request(Some("0"), Some("nvidia")));
        assert_eq!(runtime_of(&decision), Some("nvidia"));
    }

    #[test]
    fn runtime_mode_rejects_conflicting_requests() {
        let decision = decide(&config(&[]), &request(Some("0"), Some("runsc")));
        let reason = reject_reason(&decision);
        assert!(
            reason.starts_with("conflicting runtime requests"),
            "{reason}"
        );
        assert!(reason.contains("\"runsc\""), "{reason}");
    }

    #[test]
    fn runtime_mode_rejects_a_runtime_missing_from_the_node() {
        let cfg = config(&[("runtime", "nvidia-experimental")]);
        let mut req = request(Some("all"), None);
        req.allow_runtimes.push("nvidia-experimental".into());
        let reason = reject_reason(&decide(&cfg, &req)).to_owned();
        assert!(reason.contains("was not found on this node"), "{reason}");
        assert!(reason.contains("runc, nvidia"), "{reason}");
    }

    #[test]
    fn runtime_mode_rejects_a_runtime_that_is_not_allowed() {
        let mut req = request(Some("0"), None);
        req.allow_runtimes = vec!["runc".into()];
        let reason = reject_reason(&decide(&config(&[]), &req)).to_owned();
        assert!(reason.contains("is not allowed"), "{reason}");
    }

    #[test]
    fn runtime_mode_rejects_an_empty_runtime_name() {
        let mut req = request(Some("0"), None);
        req.nvidia_runtime = String::new();
        let reason = reject_reason(&decide(&config(&[]), &req)).to_owned();
        assert!(reason.contains("no GPU runtime is configured"), "{reason}");
    }

    #[test]
    fn config_runtime_overrides_the_plugin_setting() {
        let cfg = config(&[("runtime", "runc")]);
        let decision = decide(&cfg, &request(Some("0"), None));
        assert_eq!(runtime_of(&decision), Some("runc"));
    }

    #[test]
    fn cdi_mode_lists_each_device() {
        let cfg = config(&[("mode", "cdi")]);
        let Decision::Select(selection) = decide(&cfg, &request(Some("0, GPU-3f2a"), None)) else {
            panic!("expected a selection");
        };
        assert_eq!(selection.runtime, None);
        assert_eq!(selection.device_requests.len(), 1);
        let dr = &selection.device_requests[0];
        assert_eq!(dr.driver, "cdi");
        assert_eq!(
            dr.device_ids,
            ["nvidia.com/gpu=0", "nvidia.com/gpu=GPU-3f2a"]
        );
    }

    #[test]
    fn cdi_mode_all_and_custom_kind() {
        let cfg = config(&[("mode", "cdi"), ("cdi_kind", "example.com/accel")]);
        let Decision::Select(selection) = decide(&cfg, &request(Some("1,all"), Some("runc")))
        else {
            panic!("expected a selection");
        };
        assert_eq!(selection.runtime.as_deref(), Some("runc"));
        assert_eq!(
            selection.device_requests[0].device_ids,
            ["example.com/accel=all"]
        );
    }

    #[test]
    fn hostile_device_ids_are_rejected() {
        let cfg = config(&[("mode", "cdi")]);
        let reason = reject_reason(&decide(&cfg, &request(Some("0,x=y"), None))).to_owned();
        assert!(reason.contains("invalid device id"), "{reason}");
        let long = "7".repeat(MAX_DEVICE_ID_LEN + 1);
        let reason = reject_reason(&decide(&cfg, &request(Some(&long), None))).to_owned();
        assert!(reason.contains("invalid device id"), "{reason}");
        let many = vec!["1"; MAX_DEVICE_IDS + 1].join(",");
        let reason = reject_reason(&decide(&cfg, &request(Some(&many), None))).to_owned();
        assert!(reason.contains("more than"), "{reason}");
    }

    #[test]
    fn bad_config_rejects_gpu_tasks_only() {
        let cfg = config(&[("mode", "magic")]);
        assert!(cfg.is_err());
        let reason = reject_reason(&decide(&cfg, &request(Some("0"), None))).to_owned();
        assert!(reason.contains("misconfigured"), "{reason}");
        assert!(matches!(
            decide(&cfg, &request(None, None)),
            Decision::Abstain
        ));
        assert!(config(&[("cdi_kind", "no-slash")]).is_err());
        assert!(config(&[("runtime", "../bin/sh")]).is_err());
    }

    #[test]
    fn long_messages_are_clipped() {
        let mut req = request(Some("0"), None);
        req.node_runtimes = (0..2000).map(|i| format!("runtime-{i}")).collect();
        req.nvidia_runtime = "missing".into();
        let reason = reject_reason(&decide(&config(&[]), &req)).to_owned();
        assert!(
            reason.len() <= MAX_REASON && reason.ends_with('…'),
            "{}",
            reason.len()
        );
        assert_eq!(clip("é".repeat(10), 6), "é…");
    }

    #[test]
    fn last_env_entry_wins() {
        let mut req = request(Some("0"), None);
        req.device_env.push(KeyValue {
            key: GPU_ENV.into(),
            value: "void".into(),
        });
        assert!(matches!(decide(&config(&[]), &req), Decision::Abstain));
    }
}
