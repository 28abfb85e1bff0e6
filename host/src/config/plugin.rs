//! The agent-level plugin configuration: `plugin "…" { config { … } }`.
//!
//! Every key of Nomad's docker driver plugin config, with the same defaults
//! and the same SetConfig validation, plus the `policy` section for
//! WebAssembly policy modules. [`schema`] is what ConfigSchema returns;
//! [`PluginConfig`] is what SetConfig decodes. A test keeps the two in step:
//! the schema's defaults, decoded, must equal `PluginConfig::default()`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::duration::GoDuration;
use super::hclspec::{Lit, Spec, Type, attr, block, block_attrs, default, object};
use super::policy::{self, PolicyConfig};
use super::{ConfigError, cty};

/// Nomad's default `allow_caps`: Docker's default capabilities minus NET_RAW.
pub const DEFAULT_ALLOW_CAPS: [&str; 13] = [
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// Smallest `gc.dangling_containers.creation_grace` Nomad accepts.
pub const MIN_CREATION_GRACE: Duration = Duration::from_secs(60);
/// Smallest `pull_activity_timeout` Nomad accepts.
pub const MIN_PULL_ACTIVITY_TIMEOUT: Duration = Duration::from_secs(60);

/// The decoded and validated plugin configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginConfig {
    /// Docker endpoint; empty means DOCKER_HOST and friends.
    pub endpoint: String,
    /// Registry credentials sources.
    pub auth: AuthConfig,
    /// TLS material for `endpoint`.
    pub tls: TlsConfig,
    /// Globs of extra Nomad metadata labels to put on containers.
    pub extra_labels: Vec<String>,
    /// Default container log driver.
    pub logging: LoggingConfig,
    /// Image and container garbage collection.
    pub gc: GcConfig,
    /// Host volumes and volume drivers.
    pub volumes: VolumesConfig,
    /// Whether tasks may run privileged containers.
    pub allow_privileged: bool,
    /// Capabilities tasks may add.
    pub allow_caps: Vec<String>,
    /// Runtime used for tasks that request NVIDIA GPUs.
    pub nvidia_runtime: String,
    /// Runtimes tasks may select.
    pub allow_runtimes: Vec<String>,
    /// Image of the per-allocation network pause container.
    pub infra_image: String,
    /// Pull timeout of `infra_image`.
    pub infra_image_pull_timeout: GoDuration,
    /// Default pull timeout of task images.
    pub image_pull_timeout: GoDuration,
    /// Attempts when a container name is already taken.
    pub container_exists_attempts: i64,
    /// Accepted for compatibility; Nomad does not use it either.
    pub oom_score_adj: i64,
    /// Abort a pull when Docker reports no progress for this long.
    pub pull_activity_timeout: GoDuration,
    /// Node-wide cap on a container's pids (0 = none).
    pub pids_limit: i64,
    /// Whether Nomad should skip log collection for this driver's tasks.
    pub disable_log_collection: bool,
    /// Windows only; accepted for compatibility.
    pub windows_allow_insecure_container_admin: bool,
    /// Where task stats come from (wasmdock only).
    pub stats_source: StatsSource,
    /// Where the node's log FIFO holder keeps its socket and the log
    /// checkpoints (wasmdock only); empty means `/run/wasmdock` for root.
    pub run_dir: String,
    /// Namespace modes tasks may use without `allow_privileged`.
    pub allowed_modes: AllowedModes,
    /// WebAssembly policy modules.
    pub policy: PolicyConfig,
}

impl Default for PluginConfig {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            extra_labels: Vec::new(),
            logging: LoggingConfig {
                r#type: "json-file".to_owned(),
                config: BTreeMap::from([
                    ("max-file".to_owned(), "2".to_owned()),
                    ("max-size".to_owned(), "2m".to_owned()),
                ]),
            },
            gc: GcConfig::default(),
            volumes: VolumesConfig::default(),
            allow_privileged: false,
            allow_caps: DEFAULT_ALLOW_CAPS.iter().map(|c| (*c).to_owned()).collect(),
            nvidia_runtime: "nvidia".to_owned(),
            allow_runtimes: vec!["runc".to_owned(), "nvidia".to_owned()],
            infra_image: default_infra_image(),
            infra_image_pull_timeout: GoDuration::from_secs(300),
            image_pull_timeout: GoDuration::from_secs(300),
            container_exists_attempts: 5,
            oom_score_adj: 0,
            pull_activity_timeout: GoDuration::from_secs(120),
            pids_limit: 0,
            disable_log_collection: false,
            windows_allow_insecure_container_admin: false,
            stats_source: StatsSource::Auto,
            run_dir: String::new(),
            allowed_modes: AllowedModes::default(),
            policy: PolicyConfig::default(),
        }
    }
}

/// `stats_source`: where TaskStats samples come from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StatsSource {
    /// The container's cgroup files, else Docker's stats API.
    #[default]
    Auto,
    /// The container's cgroup files only.
    Cgroup,
    /// Docker's stats API only.
    Docker,
}

/// `auth { config, helper }`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Path of a docker `config.json`.
    pub config: String,
    /// Credential helper suffix (`docker-credential-<helper>`).
    pub helper: String,
}

/// `tls { cert, key, ca }`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Client certificate path.
    pub cert: String,
    /// Client key path.
    pub key: String,
    /// CA certificate path.
    pub ca: String,
}

/// `logging { type, config {} }`. A block that is present but empty means
/// Docker's own default driver; an absent block means json-file (see
/// [`PluginConfig::default`]), exactly as Nomad's schema defaults it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// Docker log driver name.
    pub r#type: String,
    /// Log driver options.
    pub config: BTreeMap<String, String>,
}

/// `gc { … }`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GcConfig {
    /// Remove images no task uses any more.
    pub image: bool,
    /// How long an unused image is kept.
    pub image_delay: GoDuration,
    /// Remove containers when their task is destroyed.
    pub container: bool,
    /// The dangling-container reconciler.
    pub dangling_containers: DanglingConfig,
}

impl Default for GcConfig {
    fn default() -> Self {
        Self {
            image: true,
            image_delay: GoDuration::from_secs(180),
            container: true,
            dangling_containers: DanglingConfig::default(),
        }
    }
}

/// `gc { dangling_containers { … } }`
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DanglingConfig {
    /// Whether the reconciler runs.
    pub enabled: bool,
    /// Time between passes.
    pub period: GoDuration,
    /// Containers younger than this are never removed.
    pub creation_grace: GoDuration,
    /// Only log what would be removed.
    pub dry_run: bool,
}

impl Default for DanglingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            period: GoDuration::from_secs(300),
            creation_grace: GoDuration::from_secs(300),
            dry_run: false,
        }
    }
}

/// `volumes { enabled, selinuxlabel }`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VolumesConfig {
    /// Allow host paths outside the alloc dir and volume drivers.
    pub enabled: bool,
    /// SELinux label appended to bind mounts.
    pub selinuxlabel: String,
}

/// `allowed_modes { pid, ipc, userns, uts }`: globs of namespace modes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AllowedModes {
    /// Allowed `pid_mode` values.
    pub pid: Vec<String>,
    /// Allowed `ipc_mode` values.
    pub ipc: Vec<String>,
    /// Allowed `userns_mode` values.
    pub userns: Vec<String>,
    /// Allowed `uts_mode` values.
    pub uts: Vec<String>,
}

/// Nomad's default infra image for this machine's architecture.
fn default_infra_image() -> String {
    format!("registry.k8s.io/pause-{}:3.3", go_arch())
}

/// Go's name (`GOARCH`) for the architecture we run on.
pub(super) fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64",
        "powerpc64le" => "ppc64le",
        other => other,
    }
}

impl PluginConfig {
    /// Decodes SetConfig's `msgpack_config` and validates it like Nomad's
    /// docker driver does. Errors name the key that is wrong.
    pub fn from_msgpack(bytes: &[u8]) -> Result<Self, ConfigError> {
        let mut config: Self = cty::decode(bytes)?;
        config.validate()?;
        config.infra_image = config.infra_image.trim_start_matches("https://").to_owned();
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let dangling = &self.gc.dangling_containers;
        if dangling.creation_grace.get() < MIN_CREATION_GRACE {
            return Err(ConfigError::new(
                "gc.dangling_containers.creation_grace",
                format!(
                    "creation_grace is less than minimum, {}",
                    GoDuration::new(MIN_CREATION_GRACE)
                ),
            ));
        }
        if dangling.period.get().is_zero() {
            return Err(ConfigError::new(
                "gc.dangling_containers.period",
                "period must be greater than zero",
            ));
        }
        if !self.run_dir.is_empty() && !std::path::Path::new(&self.run_dir).is_absolute() {
            return Err(ConfigError::new(
                "run_dir",
                format!("run_dir must be an absolute path, not {:?}", self.run_dir),
            ));
        }
        if self.pull_activity_timeout.get() < MIN_PULL_ACTIVITY_TIMEOUT {
            return Err(ConfigError::new(
                "pull_activity_timeout",
                format!(
                    "pull_activity_timeout is less than minimum, {}",
                    GoDuration::new(MIN_PULL_ACTIVITY_TIMEOUT)
                ),
            ));
        }
        let modes = &self.allowed_modes;
        for (field, values, valid) in [
            ("pid", &modes.pid, valid_pid_mode as fn(&str) -> bool),
            ("ipc", &modes.ipc, valid_ipc_mode),
            ("userns", &modes.userns, valid_host_only_mode),
            ("uts", &modes.uts, valid_host_only_mode),
        ] {
            if let Some(bad) = values.iter().find(|v| !valid(v)) {
                return Err(ConfigError::new(
                    format!("allowed_modes.{field}"),
                    format!(
                        "cannot apply allowed_modes configuration, {bad:?} is not a valid {field}_mode"
                    ),
                ));
            }
        }
        policy::validate(&self.policy)
    }
}

/// Docker's `PidMode.Valid`: "", `host`, or `container:<name>`.
fn valid_pid_mode(mode: &str) -> bool {
    let parts: Vec<&str> = mode.split(':').collect();
    match parts[0] {
        "" | "host" => true,
        "container" => parts.len() == 2 && !parts[1].is_empty(),
        _ => false,
    }
}

/// Docker's `IpcMode.Valid`.
fn valid_ipc_mode(mode: &str) -> bool {
    matches!(mode, "" | "none" | "private" | "host" | "shareable")
        || mode
            .split_once(':')
            .is_some_and(|(kind, _)| kind == "container")
}

/// Docker's `UsernsMode.Valid` and `UTSMode.Valid`: the part before any `:`
/// is empty or `host`.
fn valid_host_only_mode(mode: &str) -> bool {
    matches!(mode.split(':').next(), Some("" | "host"))
}

/// The schema returned by ConfigSchema.
pub fn schema() -> Spec {
    let string = || Type::String;
    let strings = || Type::list(Type::String);
    let dangling = object([
        default(attr("enabled", Type::Bool), Lit::Bool(true)),
        default(attr("period", string()), Lit::str("5m")),
        default(attr("creation_grace", string()), Lit::str("5m")),
        default(attr("dry_run", Type::Bool), Lit::Bool(false)),
    ]);
    let dangling_default = Lit::object(&[
        ("enabled", Lit::Bool(true)),
        ("period", Lit::str("5m")),
        ("creation_grace", Lit::str("5m")),
    ]);
    let gc = object([
        default(attr("image", Type::Bool), Lit::Bool(true)),
        default(attr("image_delay", string()), Lit::str("3m")),
        default(attr("container", Type::Bool), Lit::Bool(true)),
        Spec::Default {
            primary: Box::new(block("dangling_containers", dangling)),
            default: Box::new(Spec::Literal(dangling_default.clone())),
        },
    ]);
    let gc_default = Lit::object(&[
        ("image", Lit::Bool(true)),
        ("image_delay", Lit::str("3m")),
        ("container", Lit::Bool(true)),
        ("dangling_containers", dangling_default),
    ]);
    object([
        attr("endpoint", string()),
        block(
            "auth",
            object([attr("config", string()), attr("helper", string())]),
        ),
        block(
            "tls",
            object([
                attr("cert", string()),
                attr("key", string()),
                attr("ca", string()),
            ]),
        ),
        attr("extra_labels", strings()),
        default(
            block(
                "logging",
                object([attr("type", string()), block_attrs("config", string())]),
            ),
            Lit::object(&[
                ("type", Lit::str("json-file")),
                (
                    "config",
                    Lit::object(&[("max-file", Lit::str("2")), ("max-size", Lit::str("2m"))]),
                ),
            ]),
        ),
        default(block("gc", gc), gc_default),
        default(
            block(
                "volumes",
                object([attr("enabled", Type::Bool), attr("selinuxlabel", string())]),
            ),
            Lit::object(&[("enabled", Lit::Bool(false))]),
        ),
        attr("allow_privileged", Type::Bool),
        default(
            attr("allow_caps", strings()),
            Lit::strs(&DEFAULT_ALLOW_CAPS),
        ),
        default(attr("nvidia_runtime", string()), Lit::str("nvidia")),
        default(
            attr("allow_runtimes", strings()),
            Lit::strs(&["runc", "nvidia"]),
        ),
        default(
            attr("infra_image", string()),
            Lit::Str(default_infra_image()),
        ),
        default(attr("infra_image_pull_timeout", string()), Lit::str("5m")),
        default(attr("image_pull_timeout", string()), Lit::str("5m")),
        default(attr("container_exists_attempts", Type::Number), Lit::Int(5)),
        default(attr("oom_score_adj", Type::Number), Lit::Int(0)),
        default(attr("pull_activity_timeout", string()), Lit::str("2m")),
        attr("pids_limit", Type::Number),
        attr("disable_log_collection", Type::Bool),
        attr("windows_allow_insecure_container_admin", Type::Bool),
        default(attr("stats_source", string()), Lit::str("auto")),
        attr("run_dir", string()),
        block(
            "allowed_modes",
            object(
                ["pid", "ipc", "userns", "uts"]
                    .map(|ns| default(attr(ns, strings()), Lit::List(Vec::new()))),
            ),
        ),
        policy::schema(),
    ])
}
