//! The container a task runs in: Nomad's `createContainerConfig`, as a pure
//! function from the start request, the task's `config {}` block, the plugin
//! config and facts about the engine to a bollard [`ContainerCreateBody`].
//!
//! Nothing here talks to Docker. Host access goes through [`HostFiles`]
//! only (a seccomp profile named in `security_opt`, the host's resolv.conf,
//! the effective cpuset of the task's cgroup, the kernel's last capability
//! number), and the files the container needs (`/etc/hosts`,
//! `/etc/resolv.conf`) come back in [`ContainerSpec::files`] for the caller
//! to write before it creates the container.
//!
//! Rules are applied in Nomad's order, so the first error a bad config
//! produces is the one Nomad would report, with Nomad's wording.

mod hosts;
mod mounts;
mod network;
mod paths;
mod ports;
mod resources;
mod security;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use bollard::models::{
    ContainerCreateBody, DeviceRequest, HealthConfig, HostConfig, HostConfigCgroupnsModeEnum,
    HostConfigLogConfig,
};

use super::engine::EngineFacts;
use crate::config::PluginConfig;
use crate::config::task::TaskConfig;
use crate::driver::NodeCompute;
use crate::driver::task::TaskRequest;

/// The label every task container carries: the allocation it belongs to.
pub const ALLOC_ID_LABEL: &str = "com.hashicorp.nomad.alloc_id";

/// Prefix of the optional Nomad metadata labels (`extra_labels`).
pub const LABEL_PREFIX: &str = "com.hashicorp.nomad.";

/// Label of the network isolation spec naming the pause container whose
/// network namespace the group's tasks join.
pub const SANDBOX_CONTAINER_LABEL: &str = "docker_sandbox_container_id";

/// Device-plugin variable that asks for the GPU runtime.
pub const NVIDIA_VISIBLE_DEVICES: &str = "NVIDIA_VISIBLE_DEVICES";

/// Name of the allocation's shared hosts file, directly in the alloc dir.
pub const HOSTS_FILE: &str = "hosts";

/// Name of the task's generated resolv.conf, in the task dir.
pub const RESOLV_CONF_FILE: &str = "resolv.conf";

/// Warning for the task config key Nomad ignores.
pub const CPUSET_CPUS_WARNING: &str = "cpuset_cpus is no longer supported";

/// Largest `cpu_cfs_period` Nomad accepts, in microseconds.
pub const MAX_CPU_CFS_PERIOD: i64 = 1_000_000;

/// Everything the mapping reads.
#[derive(Debug, Clone, Copy)]
pub struct SpecInputs<'a> {
    /// The start request.
    pub task: &'a TaskRequest,
    /// The task's docker `config {}` block.
    pub config: &'a TaskConfig,
    /// The plugin config.
    pub plugin: &'a PluginConfig,
    /// What the engine is (runtimes, cgroup version).
    pub engine: &'a EngineFacts,
    /// The node's CPU capacity (SetConfig's topology).
    pub compute: NodeCompute,
    /// Number of CPUs of the host (Go's `runtime.NumCPU`), for the CFS quota.
    pub host_cpus: i64,
    /// Image reference or id to run, already pulled or loaded.
    pub image: &'a str,
    /// What a GPU runtime policy chose; `None` applies the native rule.
    pub gpu: Option<&'a GpuChoice>,
}

/// A GPU runtime policy's choice for a task, in place of the native rule
/// (`nvidia_runtime` when `NVIDIA_VISIBLE_DEVICES` is set). The runtime is
/// still checked against the engine's runtimes and `allow_runtimes`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuChoice {
    /// The policy module that chose, for error messages.
    pub policy: String,
    /// The runtime; `None` keeps the task's own (or the engine default).
    pub runtime: Option<String>,
    /// Device requests (CDI and the like) for the engine.
    pub device_requests: Vec<GpuDeviceRequest>,
}

/// One device request of a [`GpuChoice`] (Docker's `DeviceRequests`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GpuDeviceRequest {
    /// Device driver (`cdi`, `nvidia`); empty for the engine's default.
    pub driver: String,
    /// Number of devices, -1 for all.
    pub count: i64,
    /// Specific device ids.
    pub device_ids: Vec<String>,
    /// Capability sets.
    pub capabilities: Vec<Vec<String>>,
    /// Driver options.
    pub options: Vec<(String, String)>,
}

impl GpuDeviceRequest {
    fn to_engine(&self) -> DeviceRequest {
        DeviceRequest {
            driver: non_empty(&self.driver),
            count: Some(self.count),
            device_ids: Some(self.device_ids.clone()),
            capabilities: Some(self.capabilities.clone()),
            options: Some(self.options.iter().cloned().collect()),
        }
    }
}

/// Read access to the host files the mapping needs. A trait so tests can
/// hand in a fake.
pub trait HostFiles {
    /// The whole file as UTF-8 text.
    fn read_to_string(&self, path: &Path) -> std::io::Result<String>;

    /// Why `path`, which lies lexically inside `root`, leads out of it on
    /// the real filesystem (a symlink in it, relative or absolute, that
    /// resolves outside `root`), or `None` when it stays inside. A path
    /// that does not exist yet stays inside unless an existing part of it
    /// leads out.
    fn leads_out(&self, root: &Path, path: &Path) -> Option<String>;
}

/// [`HostFiles`] backed by the real filesystem.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealHostFiles;

impl HostFiles for RealHostFiles {
    fn read_to_string(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn leads_out(&self, root: &Path, path: &Path) -> Option<String> {
        crate::confine::leads_out(root, path)
    }
}

/// The container to create.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerSpec {
    /// Container name: `<task name with / replaced by _>-<alloc_id>`.
    pub name: String,
    /// The create request.
    pub body: ContainerCreateBody,
    /// Files to write before creating the container, bind-mounted by `body`:
    /// `<alloc_dir>/hosts` ([`HOSTS_FILE`]) and `<task_dir>/resolv.conf`
    /// ([`RESOLV_CONF_FILE`]). The hosts file is shared by the allocation's
    /// tasks, which may edit it: like Nomad, write it only when it does not
    /// exist yet. The resolv.conf is the task's own and is always written.
    pub files: Vec<(PathBuf, String)>,
    /// Things worth logging that do not stop the task.
    pub warnings: Vec<String>,
}

/// A task config (or request) the container cannot be built from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SpecError {
    /// The task config key concerned (`pids_limit`, `mount`, …), or "" when
    /// the fault is not in the task config.
    pub key: String,
    /// What is wrong, in Nomad's words.
    pub message: String,
}

impl SpecError {
    fn new(key: &str, message: impl Into<String>) -> Self {
        Self {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

/// The task config's `volumes` as (source, destination, read-only), with
/// sources resolved the way the container gets them; malformed entries are
/// left out (building the container reports them). For policies to see.
pub fn volumes(task: &TaskRequest, config: &TaskConfig) -> Vec<(String, String, bool)> {
    let task_dir = paths::join(&task.alloc_dir.to_string_lossy(), &task.name);
    let host_paths = config.volume_driver.is_empty();
    config
        .volumes
        .iter()
        .filter_map(|volume| mounts::split_volume(volume))
        .map(|(src, dst, mode)| {
            (
                mounts::volume_source(&task_dir, host_paths, src),
                dst.to_owned(),
                mode.split(',').any(|option| option == "ro"),
            )
        })
        .collect()
}

/// The privilege rules a task config must pass, checked on their own: an
/// admission policy's patch goes through them before the image is pulled,
/// so a patch can never grant what the plugin config forbids (privileged
/// mode, capabilities outside `allow_caps`, runtimes outside
/// `allow_runtimes`, a pids limit above the plugin's).
pub fn check_privileges(
    config: &TaskConfig,
    plugin: &PluginConfig,
    host: &dyn HostFiles,
) -> Result<(), SpecError> {
    if config.privileged && !plugin.allow_privileged {
        return Err(SpecError::new(
            "privileged",
            "Docker privileged mode is disabled on this Nomad agent",
        ));
    }
    security::capabilities(&plugin.allow_caps, &config.cap_add, &config.cap_drop, host)?;
    if !config.runtime.is_empty() && !plugin.allow_runtimes.contains(&config.runtime) {
        return Err(SpecError::new(
            "runtime",
            format!(
                "requested runtime {} is not allowed",
                quote(&config.runtime)
            ),
        ));
    }
    resources::pids_limit(config.pids_limit, plugin.pids_limit)?;
    Ok(())
}

/// Builds the container for a task, as Nomad's docker driver does.
pub fn container_spec(
    inputs: &SpecInputs<'_>,
    host: &dyn HostFiles,
) -> Result<ContainerSpec, SpecError> {
    let SpecInputs {
        task,
        config,
        plugin,
        engine,
        compute,
        host_cpus,
        image,
        gpu,
    } = *inputs;
    let mut warnings = Vec::new();
    let mut files = Vec::new();
    let alloc_dir = task.alloc_dir.to_string_lossy().into_owned();
    let task_dir = paths::join(&alloc_dir, &task.name);

    let env = ports::env_list(task, &config.port_map);

    let (memory, memory_reservation) = memory_limits(
        config.memory_hard_limit,
        task.resources.memory_mb,
        task.resources.memory_max_mb,
    );
    if memory > 0 && memory_reservation > memory {
        return Err(SpecError::new(
            "memory_hard_limit",
            format!(
                "task memory requirements exceed driver hard limit of {} MB",
                config.memory_hard_limit
            ),
        ));
    }

    let binds = mounts::binds(task, config, &plugin.volumes, host)?;
    let runtime = security::runtime(task, config, plugin, engine, gpu)?;
    if !config.isolation.is_empty() {
        return Err(SpecError::new(
            "isolation",
            format!(
                "Failed to create container configuration, cannot use isolation mode \"{}\" on {}",
                config.isolation,
                std::env::consts::OS
            ),
        ));
    }
    let pids_limit = resources::pids_limit(config.pids_limit, plugin.pids_limit)?;

    let linux = &task.resources.linux;
    let cpu_shares = cpu_shares(linux.cpu_shares, compute.total_compute);
    let cpuset_cpus = if linux.cpuset_cpus.is_empty() {
        resources::cgroup_cpuset(&linux.cpuset_cgroup, engine, host).unwrap_or_else(|err| {
            warnings.push(format!(
                "failed to read cpuset from cgroup, ignoring: {err}"
            ));
            String::new()
        })
    } else {
        linux.cpuset_cpus.clone()
    };
    if !config.cpuset_cpus.is_empty() {
        warnings.push(CPUSET_CPUS_WARNING.to_owned());
    }
    let cpu_limit = resources::cpu_hard_limit(config, linux, host_cpus)?;
    // Nomad turns swapping off except on cgroup v1 hosts where it cannot
    // write its own cgroup's memory.swappiness (we never write there).
    let memory_swappiness = (engine.cgroup_version != "1").then_some(0);
    let log_config = log_config(config, plugin);

    if config.privileged && !plugin.allow_privileged {
        return Err(SpecError::new(
            "privileged",
            "Docker privileged mode is disabled on this Nomad agent",
        ));
    }
    let (cap_add, cap_drop) =
        security::capabilities(&plugin.allow_caps, &config.cap_add, &config.cap_drop, host)?;

    let devices = mounts::devices(task, config)?;
    let mut docker_mounts = mounts::config_mounts(task, config, plugin.volumes.enabled, host)?;

    let mut extra_hosts = config.extra_hosts.clone();
    if config.network_mode.is_empty()
        && let Some(content) = hosts::etc_hosts(task.network_isolation.as_ref(), &extra_hosts)?
    {
        let path = paths::join(&alloc_dir, HOSTS_FILE);
        docker_mounts.push(mounts::file_mount("/etc/hosts", &path, false));
        files.push((PathBuf::from(path), content));
        // Docker refuses extra_hosts next to a mounted /etc/hosts.
        extra_hosts.clear();
    }

    let mut dns = Vec::new();
    let mut dns_search = Vec::new();
    let mut dns_options = Vec::new();
    if let Some(dns_config) = &task.dns {
        let content = hosts::resolv_conf(dns_config, host)?;
        let path = paths::join(&task_dir, RESOLV_CONF_FILE);
        docker_mounts.push(mounts::file_mount("/etc/resolv.conf", &path, true));
        files.push((PathBuf::from(path), content));
    } else {
        dns_search.clone_from(&config.dns_search_domains);
        dns_options.clone_from(&config.dns_options);
        for server in &config.dns_servers {
            match network::parse_addr(server) {
                Some(addr) => dns.push(addr),
                None => warnings.push(format!(
                    "invalid ip address for container dns server: {server}"
                )),
            }
        }
    }

    docker_mounts.extend(task.mounts.iter().map(mounts::nomad_mount));

    let modes = &plugin.allowed_modes;
    for (field, allowed, desired) in [
        ("ipc_mode", &modes.ipc, &config.ipc_mode),
        ("pid_mode", &modes.pid, &config.pid_mode),
        ("uts_mode", &modes.uts, &config.uts_mode),
        ("userns_mode", &modes.userns, &config.userns_mode),
    ] {
        security::validate_namespace(allowed, plugin.allow_privileged, field, desired)?;
    }

    let security_opt = security::security_opts(&config.security_opt, host)?;
    let ulimits = security::ulimits(&config.ulimit)?;
    let network_mode = network::network_mode(task, config);
    let published = ports::published(task, config, &network_mode)?;
    let cmd = command(config)?;

    let mut labels: HashMap<String, String> = config
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    labels.extend(nomad_labels(task, &plugin.extra_labels));

    let networking_config = network::networking_config(config, &network_mode)?;
    let cgroupns_mode = cgroupns_mode(&config.cgroupns)?;

    let host_config = HostConfig {
        binds: Some(binds),
        cgroupns_mode,
        oom_score_adj: non_zero(config.oom_score_adj),
        storage_opt: non_empty_map(&config.storage_opt),
        volume_driver: non_empty(&config.volume_driver),
        runtime: non_empty(&runtime),
        group_add: non_empty_vec(&config.group_add),
        memory: Some(memory),
        memory_reservation: Some(memory_reservation),
        memory_swap: Some(memory),
        memory_swappiness,
        cpu_shares: Some(cpu_shares),
        cpuset_cpus: non_empty(&cpuset_cpus),
        pids_limit: Some(pids_limit),
        init: config.init.then_some(true),
        cpu_period: cpu_limit.map(|(period, _)| period),
        cpu_quota: cpu_limit.map(|(_, quota)| quota),
        log_config: Some(log_config),
        privileged: Some(config.privileged),
        cap_add: Some(cap_add),
        cap_drop: Some(cap_drop),
        shm_size: non_zero(config.shm_size),
        devices: (!devices.is_empty()).then_some(devices),
        mounts: (!docker_mounts.is_empty()).then_some(docker_mounts),
        dns: (!dns.is_empty()).then_some(dns),
        dns_search: non_empty_vec(&dns_search),
        dns_options: non_empty_vec(&dns_options),
        ipc_mode: non_empty(&config.ipc_mode),
        pid_mode: non_empty(&config.pid_mode),
        uts_mode: non_empty(&config.uts_mode),
        userns_mode: non_empty(&config.userns_mode),
        extra_hosts: non_empty_vec(&extra_hosts),
        security_opt: non_empty_vec(&security_opt),
        sysctls: non_empty_map(&config.sysctl),
        ulimits: (!ulimits.is_empty()).then_some(ulimits),
        readonly_rootfs: Some(config.readonly_rootfs),
        network_mode: Some(network_mode),
        port_bindings: published.port_bindings(),
        device_requests: gpu
            .filter(|choice| !choice.device_requests.is_empty())
            .map(|choice| {
                choice
                    .device_requests
                    .iter()
                    .map(GpuDeviceRequest::to_engine)
                    .collect()
            }),
        ..HostConfig::default()
    };

    let body = ContainerCreateBody {
        image: Some(image.to_owned()),
        entrypoint: non_empty_vec(&config.entrypoint),
        hostname: non_empty(&config.hostname),
        user: non_empty(&task.user),
        tty: Some(config.tty),
        open_stdin: Some(config.interactive),
        working_dir: non_empty(&config.work_dir),
        exposed_ports: published.exposed_ports(),
        cmd,
        labels: Some(labels),
        env: Some(env),
        healthcheck: config.healthchecks.disable.then(|| HealthConfig {
            test: Some(vec!["NONE".to_owned()]),
            ..HealthConfig::default()
        }),
        host_config: Some(host_config),
        networking_config,
        ..ContainerCreateBody::default()
    };

    Ok(ContainerSpec {
        name: container_name(task),
        body,
        files,
        warnings,
    })
}

/// The container name: `<task name with "/" replaced by "_">-<alloc_id>`.
pub fn container_name(task: &TaskRequest) -> String {
    format!("{}-{}", task.name.replace('/', "_"), task.alloc_id)
}

/// The labels Nomad puts on a task container: the alloc id, plus the
/// metadata labels whose short names (`job_name`, `task_name`, …) match one
/// of the plugin's `extra_labels` globs (`*` wildcards). `parent_job_id` is
/// only added when the job has a parent.
pub fn nomad_labels(task: &TaskRequest, extra_label_globs: &[String]) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([(ALLOC_ID_LABEL.to_owned(), task.alloc_id.clone())]);
    let candidates = [
        ("job_name", &task.job_name),
        ("job_id", &task.job_id),
        ("parent_job_id", &task.parent_job_id),
        ("task_group_name", &task.task_group_name),
        ("task_name", &task.name),
        ("namespace", &task.namespace),
        ("node_name", &task.node_name),
        ("node_id", &task.node_id),
    ];
    for (short, value) in candidates {
        if short == "parent_job_id" && value.is_empty() {
            continue;
        }
        if extra_label_globs
            .iter()
            .any(|pattern| network::glob(pattern, short))
        {
            labels.insert(format!("{LABEL_PREFIX}{short}"), value.clone());
        }
    }
    labels
}

/// Nomad's `memoryLimits`: the container's hard memory limit and its
/// reservation, in bytes, from the task config's `memory_hard_limit` and the
/// task's `memory`/`memory_max` (MB). `memory_max_mb == -1` means no hard
/// limit at all (the reservation is the task memory); otherwise the hard
/// limit is the larger of `memory_hard_limit` and `memory_max`, and when
/// both are zero the task memory is the hard limit with no reservation.
pub fn memory_limits(hard_limit_mb: i64, memory_mb: i64, memory_max_mb: i64) -> (i64, i64) {
    if memory_max_mb == -1 {
        return (0, mb_to_bytes(memory_mb));
    }
    let high = hard_limit_mb.max(memory_max_mb);
    if high == 0 {
        (mb_to_bytes(memory_mb), 0)
    } else {
        (mb_to_bytes(high), mb_to_bytes(memory_mb))
    }
}

fn mb_to_bytes(mb: i64) -> i64 {
    mb.saturating_mul(1024 * 1024)
}

/// Largest cgroup v1 `cpu.shares` value.
pub const MAX_CPU_SHARES: i64 = 262_144;
/// Smallest cgroup v1 `cpu.shares` value.
pub const MIN_CPU_SHARES: i64 = 2;

/// Nomad's CPU share normalisation: at least 2; on nodes whose total compute
/// (MHz) exceeds the kernel's largest share value, the task's share of the
/// node scaled to that value (at least 2).
pub fn cpu_shares(requested: i64, total_compute: u64) -> i64 {
    if requested < MIN_CPU_SHARES {
        return MIN_CPU_SHARES;
    }
    if total_compute < MAX_CPU_SHARES.unsigned_abs() {
        return requested;
    }
    // Computed in floating point and truncated toward zero, as Nomad does.
    let scaled = (requested as f64 / total_compute as f64 * MAX_CPU_SHARES as f64) as i64;
    scaled.max(MIN_CPU_SHARES)
}

/// `Cmd`: `[command] + args` when a command is set (it must be non-empty
/// and carry no surrounding white space), else `args` when there are any.
fn command(config: &TaskConfig) -> Result<Option<Vec<String>>, SpecError> {
    if config.command.is_empty() {
        return Ok(non_empty_vec(&config.args));
    }
    let trimmed = config.command.trim();
    if trimmed.is_empty() {
        return Err(SpecError::new(
            "command",
            format!("command empty: {}", quote(&config.command)),
        ));
    }
    if trimmed.len() != config.command.len() {
        return Err(SpecError::new(
            "command",
            format!(
                "command contains extra white space: {}",
                quote(&config.command)
            ),
        ));
    }
    let mut cmd = Vec::with_capacity(config.args.len() + 1);
    cmd.push(config.command.clone());
    cmd.extend(config.args.iter().cloned());
    Ok(Some(cmd))
}

/// The log driver: the task's `logging.type`, else `logging.driver`, with
/// its `config`; when the task names no driver and gives no config at all,
/// the plugin's `logging`.
fn log_config(config: &TaskConfig, plugin: &PluginConfig) -> HostConfigLogConfig {
    let logging = &config.logging;
    let driver = if logging.r#type.is_empty() {
        &logging.driver
    } else {
        &logging.r#type
    };
    if driver.is_empty() && logging.config.is_none() {
        return HostConfigLogConfig {
            typ: non_empty(&plugin.logging.r#type),
            config: non_empty_map(&plugin.logging.config),
        };
    }
    HostConfigLogConfig {
        typ: non_empty(driver),
        config: logging
            .config
            .as_ref()
            .map(|c| c.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
    }
}

/// `cgroupns`: "" (engine default), `host` or `private`.
fn cgroupns_mode(mode: &str) -> Result<Option<HostConfigCgroupnsModeEnum>, SpecError> {
    match mode {
        "" => Ok(None),
        "host" => Ok(Some(HostConfigCgroupnsModeEnum::HOST)),
        "private" => Ok(Some(HostConfigCgroupnsModeEnum::PRIVATE)),
        other => Err(SpecError::new(
            "cgroupns",
            format!("invalid cgroup namespace mode: {other}"),
        )),
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

fn non_zero(n: i64) -> Option<i64> {
    (n != 0).then_some(n)
}

fn non_empty_vec(v: &[String]) -> Option<Vec<String>> {
    (!v.is_empty()).then(|| v.to_vec())
}

fn non_empty_map(map: &BTreeMap<String, String>) -> Option<HashMap<String, String>> {
    (!map.is_empty()).then(|| map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// Go's `%q`: a double-quoted string with Go escapes, so error texts quote
/// values exactly as Nomad does.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if u32::from(c) < 0x80 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", u32::from(c)));
            }
            c if c.is_control() => {
                let n = u32::from(c);
                if n <= 0xFFFF {
                    out.push_str(&format!("\\u{n:04x}"));
                } else {
                    out.push_str(&format!("\\U{n:08x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
