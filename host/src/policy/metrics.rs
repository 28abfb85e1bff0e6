//! Per-module, per-hook counters and latency histograms, lock-free.
//!
//! Latencies land in log-linear buckets (eight per power of two, so a
//! percentile is within about 6 % of the truth) from 1 ns to about 9 min.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

const SUB_BITS: u32 = 3;
const SUB: u64 = 1 << SUB_BITS;
const BUCKETS: usize = 40 * SUB as usize;

/// Counters of one hook of one module.
#[derive(Debug)]
pub(crate) struct HookMetrics {
    calls: AtomicU64,
    errors: AtomicU64,
    timeouts: AtomicU64,
    buckets: Box<[AtomicU64]>,
}

/// A snapshot, as logged and shown in InspectTask.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct HookSummary {
    /// Evaluations.
    pub calls: u64,
    /// Evaluations that failed (trap, deadline, limit, bad output).
    pub errors: u64,
    /// Of which cut off at the deadline.
    pub timeouts: u64,
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 99th percentile latency, microseconds.
    pub p99_us: f64,
}

fn bucket_of(nanos: u64) -> usize {
    if nanos < SUB {
        return nanos as usize;
    }
    let exponent = 63 - nanos.leading_zeros();
    let mantissa = (nanos >> (exponent - SUB_BITS)) & (SUB - 1);
    let index = ((exponent - SUB_BITS + 1) as u64 * SUB + mantissa) as usize;
    index.min(BUCKETS - 1)
}

/// The middle of a bucket, in nanoseconds.
fn bucket_value(index: usize) -> f64 {
    let index = index as u64;
    if index < SUB {
        return index as f64;
    }
    let exponent = index / SUB + SUB_BITS as u64 - 1;
    let mantissa = index % SUB;
    let low = (1u64 << exponent) + (mantissa << (exponent - SUB_BITS as u64));
    let width = 1u64 << (exponent - SUB_BITS as u64);
    low as f64 + width as f64 / 2.0
}

impl Default for HookMetrics {
    fn default() -> Self {
        Self {
            calls: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl HookMetrics {
    pub(crate) fn record(&self, elapsed: Duration, failed: bool, timed_out: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        if timed_out {
            self.timeouts.fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(nanos)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn summary(&self) -> HookSummary {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let percentile = |p: f64| -> f64 {
            if total == 0 {
                return 0.0;
            }
            let rank = ((total as f64) * p).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (index, count) in counts.iter().enumerate() {
                seen += count;
                if seen >= rank {
                    return bucket_value(index) / 1000.0;
                }
            }
            bucket_value(BUCKETS - 1) / 1000.0
        };
        HookSummary {
            calls: self.calls.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            p50_us: percentile(0.50),
            p99_us: percentile(0.99),
        }
    }
}

/// Percentiles of a list of measured durations (used by benches and the
/// CLI, which keep every sample).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_ordered_and_close_to_their_values() {
        let mut last = 0;
        for nanos in [
            0u64,
            1,
            7,
            8,
            9,
            15,
            16,
            100,
            1_000,
            4_999,
            5_000,
            1_000_000,
            10_000_000_000,
        ] {
            let bucket = bucket_of(nanos);
            assert!(bucket >= last, "{nanos}");
            last = bucket;
            let value = bucket_value(bucket);
            assert!(
                (value - nanos as f64).abs() <= (nanos as f64) * 0.07 + 1.0,
                "{nanos} ~ {value}"
            );
        }
    }

    #[test]
    fn summaries_report_percentiles() {
        let metrics = HookMetrics::default();
        for _ in 0..98 {
            metrics.record(Duration::from_micros(4), false, false);
        }
        metrics.record(Duration::from_millis(100), true, true);
        metrics.record(Duration::from_millis(100), true, false);
        let summary = metrics.summary();
        assert_eq!(
            (summary.calls, summary.errors, summary.timeouts),
            (100, 2, 1)
        );
        assert!((summary.p50_us - 4.0).abs() < 0.3, "{summary:?}");
        assert!(summary.p99_us > 90_000.0, "{summary:?}");
    }

    #[test]
    fn percentile_of_samples() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        assert_eq!(percentile(&samples, 0.5), Duration::from_micros(50));
        assert_eq!(percentile(&samples, 0.99), Duration::from_micros(99));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
