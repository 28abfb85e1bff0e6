//! What Nomad asks for when it starts a task: the domain twin of the wire
//! `TaskConfig`, minus the driver-specific `config {}` block (decoded into
//! [`crate::config::task::TaskConfig`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A task start request from the Nomad client.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskRequest {
    /// `<alloc_id>/<task>/<random>`, new for every start attempt.
    pub id: String,
    /// Task name.
    pub name: String,
    /// Allocation id.
    pub alloc_id: String,
    /// Job name.
    pub job_name: String,
    /// Job id.
    pub job_id: String,
    /// Parent job id (dispatch/periodic children), may be empty.
    pub parent_job_id: String,
    /// Task group name.
    pub task_group_name: String,
    /// Namespace.
    pub namespace: String,
    /// Node name.
    pub node_name: String,
    /// Node id.
    pub node_id: String,
    /// Full, interpolated task environment (container paths for the dirs).
    pub env: BTreeMap<String, String>,
    /// The subset of `env` set by device plugins (e.g. NVIDIA_VISIBLE_DEVICES).
    pub device_env: BTreeMap<String, String>,
    /// CPU, memory and ports.
    pub resources: Resources,
    /// Host and CSI volume mounts from `volume_mount`.
    pub mounts: Vec<MountRequest>,
    /// Devices from device plugins.
    pub devices: Vec<DeviceRequest>,
    /// `task.user`.
    pub user: String,
    /// Host path of the allocation directory.
    pub alloc_dir: PathBuf,
    /// Host path of the stdout FIFO, or `/dev/null` when logs are disabled.
    pub stdout_path: PathBuf,
    /// Host path of the stderr FIFO, or `/dev/null` when logs are disabled.
    pub stderr_path: PathBuf,
    /// Network namespace made for the allocation, if any.
    pub network_isolation: Option<NetworkIsolation>,
    /// DNS settings of the group network, if any.
    pub dns: Option<DnsConfig>,
}

impl TaskRequest {
    /// The host directory of this task inside the allocation directory.
    pub fn task_dir(&self) -> PathBuf {
        self.alloc_dir.join(&self.name)
    }

    /// The shared `alloc` directory.
    pub fn shared_alloc_dir(&self) -> PathBuf {
        self.alloc_dir.join("alloc")
    }

    /// Whether the task disabled log collection (`logs { disabled = true }`).
    pub fn logs_disabled(&self) -> bool {
        let null = Path::new("/dev/null");
        self.stdout_path == null && self.stderr_path == null
    }

    /// The value of a task environment variable, or "".
    pub fn env_or_empty(&self, key: &str) -> &str {
        self.env.get(key).map_or("", String::as_str)
    }
}

/// Resources allocated to the task.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    /// Allocated CPU shares (MHz).
    pub cpu_shares: i64,
    /// Allocated memory in MiB.
    pub memory_mb: i64,
    /// Memory oversubscription limit in MiB; -1 means no hard limit.
    pub memory_max_mb: i64,
    /// Linux cgroup settings computed by the client.
    pub linux: LinuxResources,
    /// Group-level ports (`network { port … }`).
    pub ports: Vec<PortMapping>,
    /// Legacy task-level networks.
    pub networks: Vec<NetworkResource>,
}

/// Cgroup settings the client computed for the task.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinuxResources {
    /// CFS period, 0 for the default.
    pub cpu_period: i64,
    /// CFS quota, 0 for none.
    pub cpu_quota: i64,
    /// CPU shares.
    pub cpu_shares: i64,
    /// Memory limit in bytes.
    pub memory_limit_bytes: i64,
    /// Reserved cores (`"0,1"`), or empty.
    pub cpuset_cpus: String,
    /// The task's share of the node's usable compute.
    pub percent_ticks: f64,
    /// Cgroup path whose cpuset the container follows, or empty.
    pub cpuset_cgroup: String,
}

/// A group port: `label` on host port `value`, to container port `to`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortMapping {
    /// Port label.
    pub label: String,
    /// Host port.
    pub value: i32,
    /// Container port, 0 meaning "same as the host port".
    pub to: i32,
    /// Host IP to bind.
    pub host_ip: String,
}

/// A legacy task network with its reserved and dynamic ports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkResource {
    /// IP of the network.
    pub ip: String,
    /// Reserved ports: (label, host port).
    pub reserved_ports: Vec<(String, i32)>,
    /// Dynamic ports: (label, host port).
    pub dynamic_ports: Vec<(String, i32)>,
}

/// A volume mount requested through Nomad (`volume_mount`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountRequest {
    /// Path inside the container.
    pub task_path: String,
    /// Path on the host.
    pub host_path: String,
    /// Read-only mount.
    pub readonly: bool,
    /// `private`, `host-to-task`, `bidirectional` or "".
    pub propagation_mode: String,
    /// SELinux label option.
    pub selinux_label: String,
}

/// A device handed over by a device plugin.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceRequest {
    /// Path inside the container.
    pub task_path: String,
    /// Path on the host.
    pub host_path: String,
    /// Cgroup permissions (`rwm`).
    pub cgroup_permissions: String,
}

/// How the allocation's network namespace was set up.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkIsolation {
    /// Isolation mode.
    pub mode: NetworkMode,
    /// Path of the network namespace.
    pub path: String,
    /// Labels set by CreateNetwork (e.g. `docker_sandbox_container_id`).
    pub labels: BTreeMap<String, String>,
    /// `/etc/hosts` entry for the allocation: (hostname, address).
    pub hosts: Option<(String, String)>,
}

/// Nomad's network isolation modes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NetworkMode {
    /// The host's network.
    #[default]
    Host,
    /// A namespace shared by the allocation.
    Group,
    /// A namespace per task.
    Task,
    /// No network.
    None,
}

/// DNS settings of the group network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsConfig {
    /// Name servers.
    pub servers: Vec<String>,
    /// Search domains.
    pub searches: Vec<String>,
    /// Resolver options.
    pub options: Vec<String>,
}
