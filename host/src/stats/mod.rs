//! Task resource usage: cumulative counters read from the container's
//! cgroup (or, as the fallback, from Docker's stats API), turned into the
//! samples Nomad's TaskStats stream carries.
//!
//! - [`counters`]: what one reading holds, and the conversion of two
//!   readings into a [`Usage`] sample (CPU percent from deltas, ticks from
//!   the node's compute).
//! - [`cgroup`]: finding a container's cgroup (v1 or v2, any cgroup driver
//!   or parent, through `/proc/<pid>/cgroup`) and reading its files.
//! - [`sampler`]: one sampler per task, shared by every open stream of
//!   that task, publishing the latest sample; slow streams skip samples.
//! - [`transform`]: the seam where a policy may rewrite or drop a sample,
//!   given the task's identity.

pub mod cgroup;
pub mod counters;
pub mod sampler;
pub mod transform;

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// Where counters come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// The container's cgroup files.
    Cgroup,
    /// Docker's stats API (streamed, so CPU deltas stay right).
    DockerApi,
}

impl SourceKind {
    /// The name used in logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cgroup => "cgroup",
            Self::DockerApi => "docker-api",
        }
    }
}

/// A CPU counter Nomad knows by name (kebab-case in policy JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CpuField {
    /// "System Mode".
    SystemMode,
    /// "User Mode".
    UserMode,
    /// "Total Ticks".
    TotalTicks,
    /// "Throttled Periods".
    ThrottledPeriods,
    /// "Throttled Time".
    ThrottledTime,
    /// "Percent".
    Percent,
}

impl CpuField {
    /// The name Nomad prints.
    pub fn name(self) -> &'static str {
        match self {
            Self::SystemMode => "System Mode",
            Self::UserMode => "User Mode",
            Self::TotalTicks => "Total Ticks",
            Self::ThrottledPeriods => "Throttled Periods",
            Self::ThrottledTime => "Throttled Time",
            Self::Percent => "Percent",
        }
    }
}

/// A memory counter Nomad knows by name (kebab-case in policy JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MemoryField {
    /// "RSS".
    Rss,
    /// "Cache".
    Cache,
    /// "Swap".
    Swap,
    /// "Usage".
    Usage,
    /// "Max Usage".
    MaxUsage,
    /// "Kernel Usage" (only a policy sets it; the cgroup readers do not).
    KernelUsage,
    /// "Kernel Max Usage" (likewise).
    KernelMaxUsage,
}

impl MemoryField {
    /// The name Nomad prints.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rss => "RSS",
            Self::Cache => "Cache",
            Self::Swap => "Swap",
            Self::Usage => "Usage",
            Self::MaxUsage => "Max Usage",
            Self::KernelUsage => "Kernel Usage",
            Self::KernelMaxUsage => "Kernel Max Usage",
        }
    }
}

/// CPU use over the last interval.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct CpuUsage {
    /// Kernel-mode share, percent of one core.
    pub system_mode: f64,
    /// User-mode share, percent of one core.
    pub user_mode: f64,
    /// MHz used: `percent / 100 × node compute / cores`.
    pub total_ticks: f64,
    /// Periods in which the CFS quota throttled the task (cumulative).
    pub throttled_periods: u64,
    /// Nanoseconds throttled (cumulative).
    pub throttled_time: u64,
    /// Percent of one core (above 100 with several cores busy).
    pub percent: f64,
    /// Which of the above were measured.
    pub measured: Vec<CpuField>,
}

/// Memory in use, bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct MemoryUsage {
    /// Anonymous memory.
    pub rss: u64,
    /// Page cache.
    pub cache: u64,
    /// Swap in use.
    pub swap: u64,
    /// Everything the cgroup charges.
    pub usage: u64,
    /// Highest `usage` seen (0 where the kernel does not track it).
    pub max_usage: u64,
    /// Kernel memory (0 unless a policy set it).
    pub kernel_usage: u64,
    /// Highest kernel memory (0 unless a policy set it).
    pub kernel_max_usage: u64,
    /// Which of the above were measured.
    pub measured: Vec<MemoryField>,
}

/// CPU and memory: a sample's total, or one entry of its breakdown.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResourceUsage {
    /// CPU.
    pub cpu: CpuUsage,
    /// Memory.
    pub memory: MemoryUsage,
}

/// One sample of a task.
#[derive(Debug, Clone, PartialEq)]
pub struct Usage {
    /// When the counters were read.
    pub timestamp: SystemTime,
    /// CPU.
    pub cpu: CpuUsage,
    /// Memory.
    pub memory: MemoryUsage,
    /// Named extra entries, sent as Nomad's per-process map
    /// (`ResourceUsageByPid`); empty unless a stats policy adds some.
    pub breakdown: Vec<(String, ResourceUsage)>,
}

/// Who a task is, for policies (that tag or filter metrics, admit tasks,
/// choose runtimes); kebab-case in policy JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct TaskIdentity {
    /// Job name.
    pub job: String,
    /// Task group.
    pub group: String,
    /// Task name.
    pub task: String,
    /// Allocation id.
    pub alloc_id: String,
    /// Namespace.
    pub namespace: String,
    /// Node name.
    pub node_name: String,
    /// Node id.
    pub node_id: String,
}
