//! CPU and pids settings that need more than a lookup.

use std::path::Path;

use super::{HostFiles, MAX_CPU_CFS_PERIOD, SpecError};
use crate::config::task::TaskConfig;
use crate::docker::engine::EngineFacts;
use crate::driver::task::LinuxResources;

/// `PidsLimit`: unlimited (-1) unless the plugin sets a node-wide cap; a
/// positive task value replaces it but may not exceed the plugin's cap.
pub(super) fn pids_limit(task_limit: i64, plugin_limit: i64) -> Result<i64, SpecError> {
    let mut limit = -1;
    if plugin_limit > 0 {
        limit = plugin_limit;
    }
    if task_limit > 0 {
        if plugin_limit > 0 && task_limit > plugin_limit {
            return Err(SpecError::new(
                "pids_limit",
                format!(
                    "pids_limit cannot be greater than nomad plugin config pids_limit: {plugin_limit}"
                ),
            ));
        }
        limit = task_limit;
    }
    Ok(limit)
}

/// `cpu_hard_limit`: the CFS period (the task's `cpu_cfs_period`, or the
/// client's period when that is 0) and a quota of the task's share of the
/// node times the period, per host CPU. `None` without `cpu_hard_limit`.
pub(super) fn cpu_hard_limit(
    config: &TaskConfig,
    linux: &LinuxResources,
    host_cpus: i64,
) -> Result<Option<(i64, i64)>, SpecError> {
    if !config.cpu_hard_limit {
        return Ok(None);
    }
    if !(0..=MAX_CPU_CFS_PERIOD).contains(&config.cpu_cfs_period) {
        return Err(SpecError::new(
            "cpu_cfs_period",
            "invalid value for cpu_cfs_period",
        ));
    }
    let period = if config.cpu_cfs_period == 0 {
        linux.cpu_period
    } else {
        config.cpu_cfs_period
    };
    // Float product truncated toward zero (saturating), then per CPU.
    let per_cpu = (linux.percent_ticks * period as f64) as i64;
    Ok(Some((period, per_cpu.saturating_mul(host_cpus))))
}

/// The cpuset of the cgroup the client manages for the task, normalised
/// (`0-2,4`); "" when the client gave no cgroup. The error text is what
/// Nomad logs before it ignores the failure.
pub(super) fn cgroup_cpuset(
    cgroup: &str,
    engine: &EngineFacts,
    host: &dyn HostFiles,
) -> Result<String, String> {
    if cgroup.is_empty() {
        return Ok(String::new());
    }
    let file = if engine.cgroup_version == "1" {
        "cpuset.effective_cpus"
    } else {
        "cpuset.cpus.effective"
    };
    let path = Path::new(cgroup).join(file);
    let text = host.read_to_string(&path).map_err(|err| {
        format!(
            "unable to read usable cores: open {}: {err}",
            path.display()
        )
    })?;
    Ok(normalise_cpuset(&text))
}

/// Parses a kernel cpu list (`0-3,8,10-11`; pieces that are neither a
/// number nor a span are skipped, reversed spans are accepted) and writes
/// it back in canonical form: sorted, merged ranges.
///
/// An empty set gives "" (Nomad's id set would print a lone space, which
/// Docker rejects as a cpuset).
pub(super) fn normalise_cpuset(list: &str) -> String {
    let mut ids = std::collections::BTreeSet::new();
    for piece in list.split(',') {
        let piece = piece.trim();
        if let Some(id) = parse_id(piece) {
            ids.insert(id);
        } else if let Some((low, high)) = piece.split_once('-')
            && let (Some(a), Some(b)) = (parse_id(low), parse_id(high))
        {
            ids.extend(a.min(b)..=a.max(b));
        }
    }
    let mut parts = Vec::new();
    let mut iter = ids.into_iter();
    let Some(first) = iter.next() else {
        return String::new();
    };
    let (mut low, mut high) = (first, first);
    for id in iter {
        if high.checked_add(1) == Some(id) {
            high = id;
            continue;
        }
        parts.push(span(low, high));
        (low, high) = (id, id);
    }
    parts.push(span(low, high));
    parts.join(",")
}

/// A core id: ASCII digits only (no sign), as Nomad's parser wants.
fn parse_id(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn span(low: u16, high: u16) -> String {
    if low == high {
        low.to_string()
    } else {
        format!("{low}-{high}")
    }
}
