//! The task configuration: the `config {}` block of a Nomad task that uses
//! this driver.
//!
//! Every key of Nomad's docker driver task config, with the same HCL types
//! and defaults. [`schema`] is what TaskConfigSchema returns; [`TaskConfig`]
//! is what StartTask decodes from `msgpack_driver_config`. For example
//!
//! ```hcl
//! config {
//!   image = "busybox:1"
//!   port_map {
//!     http = 80
//!   }
//! }
//! ```
//!
//! decodes to a [`TaskConfig`] whose `image` is `"busybox:1"`, whose
//! `port_map` is `{http: 80}` and whose other keys hold their defaults
//! (`cpu_cfs_period` 100000, `mount` empty, …).
//!
//! Map-ish keys (`labels`, `port_map`, `sysctl`, `ulimit`, `logging.config`,
//! `volume_options.labels`, `driver_config.options`) are `list(map(T))`
//! attributes, as in Nomad, so that both `port_map { http = 80 }` and
//! `port_map = { http = 80 }` are accepted; they arrive as a list of maps
//! that the decoder merges, later keys winning.
//!
//! Decoding checks what needs neither Docker nor the plugin config (types,
//! unknown keys, a non-empty `image`, `image_pull_timeout` syntax); the rest
//! of Nomad's task checks happen where the container is built.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

use super::duration::{self, GoDuration};
use super::hclspec::{
    Lit, Spec, Type, attr, block, block_attrs, block_list, default, object, required_attr,
};
use super::{ConfigError, cty};

/// Nomad's `cpu_cfs_period` default, in microseconds.
pub const DEFAULT_CPU_CFS_PERIOD: i64 = 100_000;

/// Nomad's default mount `type`.
pub const DEFAULT_MOUNT_TYPE: &str = "volume";

/// The error message for an empty `image`, word for word Nomad's.
pub const IMAGE_REQUIRED: &str = "image name required for docker driver";

/// The decoded task configuration. Field names are the HCL keys.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaskConfig {
    /// Image reference; required and non-empty, a leading `https://` removed.
    pub image: String,
    /// Advertise the container's global IPv6 address instead of its IPv4 one.
    pub advertise_ipv6_address: bool,
    /// Arguments appended to `command` (or the image's command).
    pub args: Vec<String>,
    /// Registry credentials for pulling `image`.
    pub auth: RegistryAuth,
    /// Fall back to an anonymous pull when the credentials fail.
    pub auth_soft_fail: bool,
    /// Capabilities to add (each must be in the plugin's `allow_caps`).
    pub cap_add: Vec<String>,
    /// Capabilities to drop.
    pub cap_drop: Vec<String>,
    /// Cgroup namespace mode (`host` or `private`).
    pub cgroupns: String,
    /// Command to run instead of the image's.
    pub command: String,
    /// Accepted for compatibility; Nomad parses it and uses the plugin's
    /// value instead. Unsigned like Nomad's, so a negative count is an error.
    pub container_exists_attempts: u64,
    /// CFS period in microseconds for `cpu_hard_limit`.
    pub cpu_cfs_period: i64,
    /// Enforce the CPU reservation as a hard quota.
    pub cpu_hard_limit: bool,
    /// Accepted for compatibility; Nomad ignores it with a warning.
    pub cpuset_cpus: String,
    /// Host devices to expose.
    pub devices: Vec<Device>,
    /// resolv.conf options.
    pub dns_options: Vec<String>,
    /// resolv.conf search domains.
    pub dns_search_domains: Vec<String>,
    /// DNS servers.
    pub dns_servers: Vec<String>,
    /// Entrypoint replacing the image's.
    pub entrypoint: Vec<String>,
    /// Extra `/etc/hosts` entries, `host:ip`.
    pub extra_hosts: Vec<String>,
    /// Always pull `image`, even when it is present locally.
    pub force_pull: bool,
    /// Supplementary groups of the container's user.
    pub group_add: Vec<String>,
    /// Image health check settings.
    pub healthchecks: Healthchecks,
    /// Container hostname.
    pub hostname: String,
    /// Pull timeout for `image`. `None` when the task does not set it (or sets
    /// it to `""`), meaning "use the plugin's `image_pull_timeout`".
    ///
    /// Nomad's schema has no default here and its driver falls back to the
    /// plugin value when the string is empty, so the schema carries no
    /// default either and "unset" stays visible; resolve it with
    /// [`TaskConfig::image_pull_timeout_or`]. (Older Nomad releases defaulted
    /// the task key to `"5m"` in the schema, which made a plugin-level value
    /// unreachable; §5.3 of the specification follows the newer behaviour.)
    /// The syntax is checked when the task config is decoded, where Nomad
    /// only checks it when it actually pulls.
    #[serde(deserialize_with = "optional_duration")]
    pub image_pull_timeout: Option<GoDuration>,
    /// Run an init process (`docker run --init`).
    pub init: bool,
    /// Keep stdin open.
    pub interactive: bool,
    /// IPC namespace mode.
    pub ipc_mode: String,
    /// Static IPv4 address on a user-defined network.
    pub ipv4_address: String,
    /// Static IPv6 address on a user-defined network.
    pub ipv6_address: String,
    /// Windows isolation (`process`, `hyperv`); an error on other systems.
    pub isolation: String,
    /// Container labels.
    pub labels: BTreeMap<String, String>,
    /// Image archive in the task's `local/` directory to `docker load`.
    pub load: String,
    /// Container log driver.
    pub logging: TaskLogging,
    /// Container MAC address.
    pub mac_address: String,
    /// Memory hard limit in MB (memory oversubscription).
    pub memory_hard_limit: i64,
    /// Mounts, the repeated-block syntax `mount { … }`.
    pub mount: Vec<Mount>,
    /// Mounts, the pre-1.0 list syntax `mounts = [{ … }]`; applied after
    /// `mount`.
    pub mounts: Vec<Mount>,
    /// Network-scoped aliases of the container.
    pub network_aliases: Vec<String>,
    /// Docker network mode (`bridge`, `host`, `none`, `container:<id>`, a
    /// network name).
    pub network_mode: String,
    /// OOM score adjustment of the container's processes.
    pub oom_score_adj: i64,
    /// PID namespace mode.
    pub pid_mode: String,
    /// Cap on the container's pids; 0 means the plugin's `pids_limit`, which
    /// also bounds a non-zero value.
    pub pids_limit: i64,
    /// Legacy port mapping: port label to container port.
    pub port_map: BTreeMap<String, i64>,
    /// Labels of group network ports to publish.
    pub ports: Vec<String>,
    /// Run privileged (needs the plugin's `allow_privileged`).
    pub privileged: bool,
    /// Mount the root filesystem read-only.
    pub readonly_rootfs: bool,
    /// OCI runtime (must be in the plugin's `allow_runtimes`).
    pub runtime: String,
    /// Docker security options (`seccomp=…`, `no-new-privileges`, …).
    pub security_opt: Vec<String>,
    /// Size of `/dev/shm` in bytes.
    pub shm_size: i64,
    /// Storage driver options.
    pub storage_opt: BTreeMap<String, String>,
    /// Namespaced kernel parameters.
    pub sysctl: BTreeMap<String, String>,
    /// Allocate a pseudo-TTY.
    pub tty: bool,
    /// Resource limits, `name = "soft[:hard]"`.
    pub ulimit: BTreeMap<String, String>,
    /// User namespace mode.
    pub userns_mode: String,
    /// UTS namespace mode.
    pub uts_mode: String,
    /// Volume driver for `volumes` sources (named volumes).
    pub volume_driver: String,
    /// Bind mounts, `src:dst[:mode]`.
    pub volumes: Vec<String>,
    /// Working directory.
    pub work_dir: String,
}

impl Default for TaskConfig {
    /// The value of a body that sets nothing; `image` is then empty, which
    /// [`TaskConfig::from_msgpack`] rejects.
    fn default() -> Self {
        Self {
            image: String::new(),
            advertise_ipv6_address: false,
            args: Vec::new(),
            auth: RegistryAuth::default(),
            auth_soft_fail: false,
            cap_add: Vec::new(),
            cap_drop: Vec::new(),
            cgroupns: String::new(),
            command: String::new(),
            container_exists_attempts: 0,
            cpu_cfs_period: DEFAULT_CPU_CFS_PERIOD,
            cpu_hard_limit: false,
            cpuset_cpus: String::new(),
            devices: Vec::new(),
            dns_options: Vec::new(),
            dns_search_domains: Vec::new(),
            dns_servers: Vec::new(),
            entrypoint: Vec::new(),
            extra_hosts: Vec::new(),
            force_pull: false,
            group_add: Vec::new(),
            healthchecks: Healthchecks::default(),
            hostname: String::new(),
            image_pull_timeout: None,
            init: false,
            interactive: false,
            ipc_mode: String::new(),
            ipv4_address: String::new(),
            ipv6_address: String::new(),
            isolation: String::new(),
            labels: BTreeMap::new(),
            load: String::new(),
            logging: TaskLogging::default(),
            mac_address: String::new(),
            memory_hard_limit: 0,
            mount: Vec::new(),
            mounts: Vec::new(),
            network_aliases: Vec::new(),
            network_mode: String::new(),
            oom_score_adj: 0,
            pid_mode: String::new(),
            pids_limit: 0,
            port_map: BTreeMap::new(),
            ports: Vec::new(),
            privileged: false,
            readonly_rootfs: false,
            runtime: String::new(),
            security_opt: Vec::new(),
            shm_size: 0,
            storage_opt: BTreeMap::new(),
            sysctl: BTreeMap::new(),
            tty: false,
            ulimit: BTreeMap::new(),
            userns_mode: String::new(),
            uts_mode: String::new(),
            volume_driver: String::new(),
            volumes: Vec::new(),
            work_dir: String::new(),
        }
    }
}

/// `auth { username, password, email, server_address }`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryAuth {
    /// Registry user name.
    pub username: String,
    /// Registry password.
    pub password: String,
    /// Accepted for compatibility; Nomad ignores it.
    pub email: String,
    /// Registry address.
    pub server_address: String,
}

/// `healthchecks { disable }`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Healthchecks {
    /// Disable the image's HEALTHCHECK (`Test = ["NONE"]`).
    pub disable: bool,
}

/// `logging { type, driver, config {} }`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TaskLogging {
    /// Docker log driver name.
    pub r#type: String,
    /// Older spelling of `type`, used when `type` is empty.
    pub driver: String,
    /// Log driver options. `None` when the key is absent: Nomad uses the
    /// plugin's `logging` only when the driver name is empty *and* the
    /// options are absent, so `Some` of an empty map (`config {}`) is kept
    /// apart from `None`.
    pub config: Option<BTreeMap<String, String>>,
}

/// One `devices { host_path, container_path, cgroup_permissions }` block.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Device {
    /// Device path on the host; Nomad requires it when the container is
    /// built.
    pub host_path: String,
    /// Path in the container; empty means `host_path`.
    pub container_path: String,
    /// Cgroup permissions (`[rwm]*`); empty means `rwm`.
    pub cgroup_permissions: String,
}

/// One `mount { … }` block or `mounts = [{ … }]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Mount {
    /// `volume` (the default), `bind` or `tmpfs`; checked when the container
    /// is built. An explicit `""` is kept; Nomad treats it as `volume`.
    pub r#type: String,
    /// Path in the container.
    pub target: String,
    /// Volume name or host path; must be empty for tmpfs.
    pub source: String,
    /// Mount read-only.
    pub readonly: bool,
    /// Options of a `bind` mount.
    pub bind_options: BindOptions,
    /// Options of a `tmpfs` mount.
    pub tmpfs_options: TmpfsOptions,
    /// Options of a `volume` mount.
    pub volume_options: VolumeOptions,
}

impl Default for Mount {
    fn default() -> Self {
        Self {
            r#type: DEFAULT_MOUNT_TYPE.to_owned(),
            target: String::new(),
            source: String::new(),
            readonly: false,
            bind_options: BindOptions::default(),
            tmpfs_options: TmpfsOptions::default(),
            volume_options: VolumeOptions::default(),
        }
    }
}

/// `bind_options { propagation }`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BindOptions {
    /// Mount propagation (`rprivate`, `rshared`, …).
    pub propagation: String,
}

/// `tmpfs_options { size, mode }`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TmpfsOptions {
    /// Size in bytes (0 = unlimited).
    pub size: i64,
    /// File mode of the tmpfs root.
    pub mode: i64,
}

/// `volume_options { no_copy, labels, driver_config {} }`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VolumeOptions {
    /// Do not copy the image's content at the target into a new volume.
    pub no_copy: bool,
    /// Labels of a volume created for the mount.
    pub labels: BTreeMap<String, String>,
    /// Volume driver of a volume created for the mount.
    pub driver_config: VolumeDriverConfig,
}

/// `driver_config { name, options {} }`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VolumeDriverConfig {
    /// Volume driver name.
    pub name: String,
    /// Volume driver options.
    pub options: BTreeMap<String, String>,
}

/// A Go duration string where absent and `""` both mean "not set", as in
/// Nomad's fallback to the plugin value.
fn optional_duration<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<GoDuration>, D::Error> {
    match Option::<String>::deserialize(deserializer)?.as_deref() {
        None | Some("") => Ok(None),
        Some(text) => duration::parse(text)
            .map(|d| Some(GoDuration::new(d)))
            .map_err(serde::de::Error::custom),
    }
}

impl TaskConfig {
    /// Decodes StartTask's `msgpack_driver_config`. Errors name the key that
    /// is wrong: types, unknown keys, an empty `image` (after removing a
    /// leading `https://`, once, as Nomad does) and a malformed
    /// `image_pull_timeout`.
    pub fn from_msgpack(bytes: &[u8]) -> Result<Self, ConfigError> {
        let mut config: Self = cty::decode(bytes)?;
        if let Some(rest) = config.image.strip_prefix("https://") {
            config.image = rest.to_owned();
        }
        if config.image.is_empty() {
            return Err(ConfigError::new("image", IMAGE_REQUIRED));
        }
        Ok(config)
    }

    /// The pull timeout of `image`: the task's own, else `plugin_default`
    /// (the plugin config's `image_pull_timeout`).
    pub fn image_pull_timeout_or(&self, plugin_default: GoDuration) -> GoDuration {
        self.image_pull_timeout.unwrap_or(plugin_default)
    }
}

/// The body of a `mount` / `mounts` block.
fn mount_schema() -> Spec {
    let string = || Type::String;
    object([
        default(attr("type", string()), Lit::str(DEFAULT_MOUNT_TYPE)),
        attr("target", string()),
        attr("source", string()),
        attr("readonly", Type::Bool),
        block("bind_options", object([attr("propagation", string())])),
        block(
            "tmpfs_options",
            object([attr("size", Type::Number), attr("mode", Type::Number)]),
        ),
        block(
            "volume_options",
            object([
                attr("no_copy", Type::Bool),
                attr("labels", Type::list_of_maps(string())),
                block(
                    "driver_config",
                    object([
                        attr("name", string()),
                        attr("options", Type::list_of_maps(string())),
                    ]),
                ),
            ]),
        ),
    ])
}

/// The schema returned by TaskConfigSchema (Nomad's `taskConfigSpec`).
pub fn schema() -> Spec {
    let string = || Type::String;
    let strings = || Type::list(Type::String);
    object([
        required_attr("image", string()),
        attr("advertise_ipv6_address", Type::Bool),
        attr("args", strings()),
        block(
            "auth",
            object([
                attr("username", string()),
                attr("password", string()),
                attr("email", string()),
                attr("server_address", string()),
            ]),
        ),
        attr("auth_soft_fail", Type::Bool),
        attr("cap_add", strings()),
        attr("cap_drop", strings()),
        attr("cgroupns", string()),
        attr("command", string()),
        attr("container_exists_attempts", Type::Number),
        default(
            attr("cpu_cfs_period", Type::Number),
            Lit::Int(DEFAULT_CPU_CFS_PERIOD),
        ),
        attr("cpu_hard_limit", Type::Bool),
        attr("cpuset_cpus", string()),
        block_list(
            "devices",
            object([
                attr("host_path", string()),
                attr("container_path", string()),
                attr("cgroup_permissions", string()),
            ]),
        ),
        attr("dns_options", strings()),
        attr("dns_search_domains", strings()),
        attr("dns_servers", strings()),
        attr("entrypoint", strings()),
        attr("extra_hosts", strings()),
        attr("force_pull", Type::Bool),
        attr("group_add", strings()),
        block("healthchecks", object([attr("disable", Type::Bool)])),
        attr("hostname", string()),
        // No default: unset falls back to the plugin's value.
        attr("image_pull_timeout", string()),
        attr("init", Type::Bool),
        attr("interactive", Type::Bool),
        attr("ipc_mode", string()),
        attr("ipv4_address", string()),
        attr("ipv6_address", string()),
        attr("isolation", string()),
        attr("labels", Type::list_of_maps(string())),
        attr("load", string()),
        block(
            "logging",
            object([
                attr("type", string()),
                attr("driver", string()),
                attr("config", Type::list_of_maps(string())),
            ]),
        ),
        attr("mac_address", string()),
        attr("memory_hard_limit", Type::Number),
        block_list("mount", mount_schema()),
        block_list("mounts", mount_schema()),
        attr("network_aliases", strings()),
        attr("network_mode", string()),
        attr("oom_score_adj", Type::Number),
        attr("pid_mode", string()),
        attr("pids_limit", Type::Number),
        attr("port_map", Type::list_of_maps(Type::Number)),
        attr("ports", strings()),
        attr("privileged", Type::Bool),
        attr("readonly_rootfs", Type::Bool),
        attr("runtime", string()),
        attr("security_opt", strings()),
        attr("shm_size", Type::Number),
        block_attrs("storage_opt", string()),
        attr("sysctl", Type::list_of_maps(string())),
        attr("tty", Type::Bool),
        attr("ulimit", Type::list_of_maps(string())),
        attr("userns_mode", string()),
        attr("uts_mode", string()),
        attr("volume_driver", string()),
        attr("volumes", strings()),
        attr("work_dir", string()),
    ])
}
