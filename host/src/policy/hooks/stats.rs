//! `stats-transform`: rewrite or drop a usage sample.

use serde::{Deserialize, Serialize};

use super::{Budget, Refusal, TaskIdentity};
use crate::policy::bindings::stats_transform as wit;
/// The usage types are the driver's own (`crate::stats`): a sample crosses
/// into a guest and back without conversion.
pub use crate::stats::{CpuField, CpuUsage, MemoryField, MemoryUsage, ResourceUsage};

/// Breakdown entries one sample may carry.
pub const MAX_BREAKDOWN: usize = 32;
/// Longest breakdown key.
pub const MAX_BREAKDOWN_KEY: usize = 128;
/// How far a guest may move a sample's timestamp, in nanoseconds.
pub const MAX_TIMESTAMP_SHIFT_NS: i64 = 60_000_000_000;

/// The input of one call: whose sample, and the sample.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Input {
    /// The task.
    pub task: TaskIdentity,
    /// The sample.
    pub sample: Sample,
}

/// One sample.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct Sample {
    /// Nanoseconds since the Unix epoch.
    pub timestamp_ns: i64,
    /// The task's total.
    pub usage: ResourceUsage,
    /// Named extra entries (Nomad's per-process map).
    pub breakdown: Vec<(String, ResourceUsage)>,
}

/// A guest's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "decision", content = "sample", rename_all = "kebab-case")]
pub enum Transformed {
    /// Send this sample.
    Keep(Sample),
    /// Send nothing.
    Drop,
}

const CPU_FLAGS: [(CpuField, wit::CpuFields); 6] = [
    (CpuField::SystemMode, wit::CpuFields::SYSTEM_MODE),
    (CpuField::UserMode, wit::CpuFields::USER_MODE),
    (CpuField::TotalTicks, wit::CpuFields::TOTAL_TICKS),
    (
        CpuField::ThrottledPeriods,
        wit::CpuFields::THROTTLED_PERIODS,
    ),
    (CpuField::ThrottledTime, wit::CpuFields::THROTTLED_TIME),
    (CpuField::Percent, wit::CpuFields::PERCENT),
];

const MEMORY_FLAGS: [(MemoryField, wit::MemoryFields); 7] = [
    (MemoryField::Rss, wit::MemoryFields::RSS),
    (MemoryField::Cache, wit::MemoryFields::CACHE),
    (MemoryField::Swap, wit::MemoryFields::SWAP),
    (MemoryField::Usage, wit::MemoryFields::USAGE),
    (MemoryField::MaxUsage, wit::MemoryFields::MAX_USAGE),
    (MemoryField::KernelUsage, wit::MemoryFields::KERNEL_USAGE),
    (
        MemoryField::KernelMaxUsage,
        wit::MemoryFields::KERNEL_MAX_USAGE,
    ),
];

fn usage_to_wit(usage: &ResourceUsage) -> wit::ResourceUsage {
    let cpu = &usage.cpu;
    let memory = &usage.memory;
    let cpu_measured = CPU_FLAGS
        .iter()
        .filter(|(field, _)| cpu.measured.contains(field))
        .fold(wit::CpuFields::empty(), |all, (_, flag)| all | *flag);
    let memory_measured = MEMORY_FLAGS
        .iter()
        .filter(|(field, _)| memory.measured.contains(field))
        .fold(wit::MemoryFields::empty(), |all, (_, flag)| all | *flag);
    wit::ResourceUsage {
        cpu: wit::CpuUsage {
            system_mode: cpu.system_mode,
            user_mode: cpu.user_mode,
            total_ticks: cpu.total_ticks,
            throttled_periods: cpu.throttled_periods,
            throttled_time: cpu.throttled_time,
            percent: cpu.percent,
            measured: cpu_measured,
        },
        memory: wit::MemoryUsage {
            rss: memory.rss,
            cache: memory.cache,
            swap: memory.swap,
            usage: memory.usage,
            max_usage: memory.max_usage,
            kernel_usage: memory.kernel_usage,
            kernel_max_usage: memory.kernel_max_usage,
            measured: memory_measured,
        },
    }
}

fn usage_from_wit(raw: wit::ResourceUsage) -> Result<ResourceUsage, Refusal> {
    let cpu = raw.cpu;
    for (name, value) in [
        ("system-mode", cpu.system_mode),
        ("user-mode", cpu.user_mode),
        ("total-ticks", cpu.total_ticks),
        ("percent", cpu.percent),
    ] {
        if !value.is_finite() || value < 0.0 {
            return Err(Refusal::Invalid(format!(
                "cpu {name} is {value}; it must be a finite number of at least 0"
            )));
        }
    }
    let memory = raw.memory;
    Ok(ResourceUsage {
        cpu: CpuUsage {
            system_mode: cpu.system_mode,
            user_mode: cpu.user_mode,
            total_ticks: cpu.total_ticks,
            throttled_periods: cpu.throttled_periods,
            throttled_time: cpu.throttled_time,
            percent: cpu.percent,
            measured: CPU_FLAGS
                .iter()
                .filter(|(_, flag)| cpu.measured.contains(*flag))
                .map(|(field, _)| *field)
                .collect(),
        },
        memory: MemoryUsage {
            rss: memory.rss,
            cache: memory.cache,
            swap: memory.swap,
            usage: memory.usage,
            max_usage: memory.max_usage,
            kernel_usage: memory.kernel_usage,
            kernel_max_usage: memory.kernel_max_usage,
            measured: MEMORY_FLAGS
                .iter()
                .filter(|(_, flag)| memory.measured.contains(*flag))
                .map(|(field, _)| *field)
                .collect(),
        },
    })
}

impl Sample {
    pub(crate) fn to_wit(&self) -> wit::Sample {
        wit::Sample {
            timestamp_ns: self.timestamp_ns,
            usage: usage_to_wit(&self.usage),
            breakdown: self
                .breakdown
                .iter()
                .map(|(key, usage)| (key.clone(), usage_to_wit(usage)))
                .collect(),
        }
    }
}

impl Transformed {
    pub(crate) fn from_wit(
        raw: Option<wit::Sample>,
        original: &Sample,
        budget: &mut Budget,
    ) -> Result<Self, Refusal> {
        let Some(raw) = raw else {
            return Ok(Self::Drop);
        };
        let shift = raw.timestamp_ns.saturating_sub(original.timestamp_ns);
        if shift.saturating_abs() > MAX_TIMESTAMP_SHIFT_NS {
            return Err(Refusal::Invalid(format!(
                "the timestamp moved by {} s; at most 60 s is allowed",
                shift / 1_000_000_000
            )));
        }
        budget.charge(std::mem::size_of::<wit::Sample>())?;
        budget.list("breakdown", &raw.breakdown, MAX_BREAKDOWN)?;
        let usage = usage_from_wit(raw.usage)?;
        let mut breakdown = Vec::with_capacity(raw.breakdown.len());
        for (key, entry) in raw.breakdown {
            let key = budget.text("a breakdown key", key, MAX_BREAKDOWN_KEY)?;
            if key.is_empty() {
                return Err(Refusal::Invalid("a breakdown key is empty".into()));
            }
            breakdown.push((key, usage_from_wit(entry)?));
        }
        Ok(Self::Keep(Sample {
            timestamp_ns: raw.timestamp_ns,
            usage,
            breakdown,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Sample {
        Sample {
            timestamp_ns: 1_700_000_000_000_000_000,
            usage: ResourceUsage {
                cpu: CpuUsage {
                    percent: 12.5,
                    total_ticks: 300.0,
                    measured: vec![CpuField::TotalTicks, CpuField::Percent],
                    ..CpuUsage::default()
                },
                memory: MemoryUsage {
                    rss: 4096,
                    measured: vec![MemoryField::Rss],
                    ..MemoryUsage::default()
                },
            },
            breakdown: vec![],
        }
    }

    #[test]
    fn a_sample_survives_the_round_trip_through_wit() {
        let original = sample();
        let back =
            Transformed::from_wit(Some(original.to_wit()), &original, &mut Budget::new(65536));
        assert_eq!(back, Ok(Transformed::Keep(original)));
    }

    #[test]
    fn a_huge_breakdown_is_too_large_before_it_is_too_long() {
        let original = sample();
        let mut huge = original.to_wit();
        huge.breakdown = (0..100_000)
            .map(|i| (format!("k{i}"), usage_to_wit(&original.usage)))
            .collect();
        assert_eq!(
            Transformed::from_wit(Some(huge), &original, &mut Budget::new(65536)),
            Err(Refusal::TooLarge)
        );
    }

    #[test]
    fn bad_samples_are_refused() {
        let original = sample();
        let mut moved = original.to_wit();
        moved.timestamp_ns += 61_000_000_000;
        assert!(matches!(
            Transformed::from_wit(Some(moved), &original, &mut Budget::new(65536)),
            Err(Refusal::Invalid(_))
        ));
        let mut nan = original.to_wit();
        nan.usage.cpu.percent = f64::NAN;
        assert!(matches!(
            Transformed::from_wit(Some(nan), &original, &mut Budget::new(65536)),
            Err(Refusal::Invalid(_))
        ));
        let mut wide = original.to_wit();
        wide.breakdown = (0..33)
            .map(|i| (format!("k{i}"), usage_to_wit(&original.usage)))
            .collect();
        assert!(matches!(
            Transformed::from_wit(Some(wide), &original, &mut Budget::new(1 << 20)),
            Err(Refusal::Invalid(_))
        ));
        assert_eq!(
            Transformed::from_wit(None, &original, &mut Budget::new(16)),
            Ok(Transformed::Drop)
        );
    }
}
