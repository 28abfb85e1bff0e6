//! One reading of a container's cumulative counters, and how two readings
//! become a sample.
//!
//! CPU percent is the container's CPU time over wall time between two
//! readings, times 100: 100 is one core busy, 200 two (what Docker and
//! Nomad report). Nomad's docker driver computes user and system mode as
//! shares of the container's own CPU time times the number of host cores,
//! which makes them exceed `percent`; here they are the same kind of number
//! as `percent` (percent of one core spent in user or kernel mode), so
//! `user_mode + system_mode ≈ percent`.

use std::time::{Duration, SystemTime};

use super::{CpuField, CpuUsage, MemoryField, MemoryUsage, Usage};
use crate::driver::NodeCompute;

/// Cumulative CPU counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuCounters {
    /// Total CPU time, ns.
    pub total_ns: u64,
    /// User-mode CPU time, ns.
    pub user_ns: u64,
    /// Kernel-mode CPU time, ns.
    pub system_ns: u64,
    /// Throttled CFS periods.
    pub throttled_periods: u64,
    /// Time throttled, ns.
    pub throttled_ns: u64,
}

/// Memory gauges, bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryCounters {
    /// Anonymous memory (`rss`, or `anon` on cgroup v2).
    pub rss: u64,
    /// Page cache (`cache`, or `file` on cgroup v2).
    pub cache: u64,
    /// Swap in use.
    pub swap: u64,
    /// Everything charged to the cgroup.
    pub usage: u64,
    /// Peak usage, when the kernel tracks it (cgroup v1; v2 from 5.19).
    pub max_usage: Option<u64>,
}

/// One reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// When it was taken.
    pub at: SystemTime,
    /// CPU.
    pub cpu: CpuCounters,
    /// Memory.
    pub memory: MemoryCounters,
}

/// `part / whole × 100`, 0 when nothing can be said.
fn percent(part: u64, whole: Duration) -> f64 {
    let whole = whole.as_nanos();
    if whole == 0 {
        return 0.0;
    }
    part as f64 / whole as f64 * 100.0
}

/// The sample between `previous` and `current` (CPU figures are 0 without
/// a previous reading or when time did not advance).
pub fn sample(previous: Option<&Counters>, current: &Counters, compute: NodeCompute) -> Usage {
    let (percent_total, user, system) = match previous {
        Some(previous) => {
            let elapsed = current.at.duration_since(previous.at).unwrap_or_default();
            let delta = |now: u64, before: u64| now.saturating_sub(before);
            (
                percent(delta(current.cpu.total_ns, previous.cpu.total_ns), elapsed),
                percent(delta(current.cpu.user_ns, previous.cpu.user_ns), elapsed),
                percent(
                    delta(current.cpu.system_ns, previous.cpu.system_ns),
                    elapsed,
                ),
            )
        }
        None => (0.0, 0.0, 0.0),
    };
    let total_ticks = if compute.num_cores == 0 {
        0.0
    } else {
        percent_total / 100.0 * compute.total_compute as f64 / f64::from(compute.num_cores)
    };
    let cpu = CpuUsage {
        system_mode: system,
        user_mode: user,
        total_ticks,
        throttled_periods: current.cpu.throttled_periods,
        throttled_time: current.cpu.throttled_ns,
        percent: percent_total,
        measured: vec![
            CpuField::SystemMode,
            CpuField::UserMode,
            CpuField::TotalTicks,
            CpuField::ThrottledPeriods,
            CpuField::ThrottledTime,
            CpuField::Percent,
        ],
    };
    let mut measured = vec![
        MemoryField::Rss,
        MemoryField::Cache,
        MemoryField::Swap,
        MemoryField::Usage,
    ];
    if current.memory.max_usage.is_some() {
        measured.push(MemoryField::MaxUsage);
    }
    let memory = MemoryUsage {
        rss: current.memory.rss,
        cache: current.memory.cache,
        swap: current.memory.swap,
        usage: current.memory.usage,
        max_usage: current.memory.max_usage.unwrap_or(0),
        kernel_usage: 0,
        kernel_max_usage: 0,
        measured,
    };
    Usage {
        timestamp: current.at,
        cpu,
        memory,
        breakdown: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(at_ms: u64, total_ms: u64, user_ms: u64) -> Counters {
        Counters {
            at: SystemTime::UNIX_EPOCH + Duration::from_millis(at_ms),
            cpu: CpuCounters {
                total_ns: total_ms * 1_000_000,
                user_ns: user_ms * 1_000_000,
                system_ns: (total_ms - user_ms) * 1_000_000,
                throttled_periods: 7,
                throttled_ns: 9,
            },
            memory: MemoryCounters {
                rss: 100,
                cache: 50,
                swap: 0,
                usage: 200,
                max_usage: Some(300),
            },
        }
    }

    const COMPUTE: NodeCompute = NodeCompute {
        num_cores: 2,
        total_compute: 2000,
    };

    #[test]
    fn percent_and_ticks_come_from_deltas() {
        let before = reading(1000, 500, 400);
        let after = reading(2000, 1250, 1000);
        let usage = sample(Some(&before), &after, COMPUTE);
        assert!((usage.cpu.percent - 75.0).abs() < 1e-9, "{usage:?}");
        assert!((usage.cpu.user_mode - 60.0).abs() < 1e-9);
        assert!((usage.cpu.system_mode - 15.0).abs() < 1e-9);
        assert!(
            (usage.cpu.total_ticks - 750.0).abs() < 1e-9,
            "75 % of a 1000 MHz core"
        );
        assert_eq!(usage.cpu.throttled_periods, 7);
        assert_eq!(usage.cpu.throttled_time, 9);
        assert_eq!(usage.timestamp, after.at);
        assert_eq!(usage.memory.max_usage, 300);
        assert_eq!(
            usage
                .memory
                .measured
                .iter()
                .map(|f| f.name())
                .collect::<Vec<_>>(),
            ["RSS", "Cache", "Swap", "Usage", "Max Usage"]
        );
        assert_eq!(
            usage
                .cpu
                .measured
                .iter()
                .map(|f| f.name())
                .collect::<Vec<_>>(),
            [
                "System Mode",
                "User Mode",
                "Total Ticks",
                "Throttled Periods",
                "Throttled Time",
                "Percent"
            ]
        );
    }

    #[test]
    fn no_history_no_time_or_counter_resets_give_zero_not_garbage() {
        let only = reading(1000, 500, 400);
        assert_eq!(sample(None, &only, COMPUTE).cpu.percent, 0.0);
        assert_eq!(sample(Some(&only), &only, COMPUTE).cpu.percent, 0.0);
        let reset = reading(2000, 10, 5);
        let usage = sample(Some(&only), &reset, COMPUTE);
        assert_eq!(usage.cpu.percent, 0.0);
        let earlier = reading(500, 900, 800);
        assert_eq!(sample(Some(&only), &earlier, COMPUTE).cpu.percent, 0.0);
        let unknown = NodeCompute::default();
        let usage = sample(Some(&only), &reading(2000, 1500, 1000), unknown);
        assert!(usage.cpu.percent > 0.0);
        assert_eq!(usage.cpu.total_ticks, 0.0, "no topology, no ticks");
    }

    #[test]
    fn cgroup_v2_without_peak_leaves_max_usage_unmeasured() {
        let mut v2 = reading(1000, 1, 1);
        v2.memory.max_usage = None;
        let usage = sample(None, &v2, COMPUTE);
        assert_eq!(usage.memory.max_usage, 0);
        assert!(!usage.memory.measured.contains(&MemoryField::MaxUsage));
    }
}
