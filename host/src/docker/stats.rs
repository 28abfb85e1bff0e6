//! The engine's stats API, streamed (the engine then keeps the previous
//! CPU reading, so CPU deltas are right), as cumulative counters.

use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bollard::models::ContainerStatsResponse;
use bollard::query_parameters::StatsOptions;
use futures_util::StreamExt as _;
use tokio_stream::Stream;

use super::logs::parse_rfc3339_nanos;
use super::{Docker, DockerError, Result};
use crate::stats::counters::{Counters, CpuCounters, MemoryCounters};

/// A container's counters, about once a second.
pub type StatsStream = Pin<Box<dyn Stream<Item = Result<Counters>> + Send>>;

impl Docker {
    /// Follows `container`'s stats until it stops.
    pub fn follow_stats(&self, container: &str) -> StatsStream {
        let options = StatsOptions {
            stream: true,
            one_shot: false,
        };
        Box::pin(
            self.api()
                .stats(container, Some(options))
                .filter_map(|item| async move {
                    match item {
                        Ok(stats) => counters(&stats).map(Ok),
                        Err(err) => Some(Err(DockerError::from(err))),
                    }
                }),
        )
    }
}

/// The counters of one stats response; `None` for the empty response the
/// engine sends for a stopped container.
pub fn counters(stats: &ContainerStatsResponse) -> Option<Counters> {
    let nanos = stats.read.as_deref().and_then(parse_rfc3339_nanos)?;
    if nanos <= 0 {
        return None;
    }
    let at = UNIX_EPOCH + Duration::from_nanos(u64::try_from(nanos).ok()?);
    let cpu = stats.cpu_stats.as_ref()?;
    let usage = cpu.cpu_usage.as_ref()?;
    let throttling = cpu.throttling_data.as_ref();
    let memory = stats.memory_stats.as_ref();
    let map = memory.and_then(|m| m.stats.as_ref());
    let stat = |key: &str| map.and_then(|m| m.get(key).copied()).unwrap_or(0);
    let nonzero_or = |first: u64, second: &str| if first > 0 { first } else { stat(second) };
    Some(Counters {
        at: at.max(SystemTime::UNIX_EPOCH),
        cpu: CpuCounters {
            total_ns: usage.total_usage.unwrap_or(0),
            user_ns: usage.usage_in_usermode.unwrap_or(0),
            system_ns: usage.usage_in_kernelmode.unwrap_or(0),
            throttled_periods: throttling.and_then(|t| t.throttled_periods).unwrap_or(0),
            throttled_ns: throttling.and_then(|t| t.throttled_time).unwrap_or(0),
        },
        memory: MemoryCounters {
            rss: nonzero_or(stat("rss"), "anon"),
            cache: nonzero_or(stat("cache"), "file"),
            swap: stat("swap"),
            usage: memory.and_then(|m| m.usage).unwrap_or(0),
            max_usage: memory.and_then(|m| m.max_usage).filter(|m| *m > 0),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_become_counters() {
        let v1: ContainerStatsResponse = serde_json::from_value(serde_json::json!({
            "read": "2026-11-23T00:00:01.5Z",
            "cpu_stats": {
                "cpu_usage": { "total_usage": 100, "usage_in_usermode": 60, "usage_in_kernelmode": 40 },
                "system_cpu_usage": 1000,
                "throttling_data": { "periods": 9, "throttled_periods": 2, "throttled_time": 77 }
            },
            "memory_stats": { "usage": 500, "max_usage": 900, "stats": { "rss": 300, "cache": 100, "swap": 4 } }
        }))
        .unwrap();
        let c = counters(&v1).unwrap();
        assert_eq!(c.cpu.total_ns, 100);
        assert_eq!(c.cpu.user_ns, 60);
        assert_eq!(c.cpu.throttled_periods, 2);
        assert_eq!(c.cpu.throttled_ns, 77);
        assert_eq!(
            (
                c.memory.rss,
                c.memory.cache,
                c.memory.swap,
                c.memory.usage,
                c.memory.max_usage
            ),
            (300, 100, 4, 500, Some(900))
        );
        let v2: ContainerStatsResponse = serde_json::from_value(serde_json::json!({
            "read": "2026-11-23T00:00:01Z",
            "cpu_stats": { "cpu_usage": { "total_usage": 1 } },
            "memory_stats": { "usage": 500, "stats": { "anon": 30, "file": 10 } }
        }))
        .unwrap();
        let c = counters(&v2).unwrap();
        assert_eq!(
            (c.memory.rss, c.memory.cache, c.memory.max_usage),
            (30, 10, None)
        );
        let stopped: ContainerStatsResponse = serde_json::from_value(serde_json::json!({
            "read": "0001-01-01T00:00:00Z", "cpu_stats": { "cpu_usage": { "total_usage": 0 } }
        }))
        .unwrap();
        assert_eq!(counters(&stopped), None);
    }
}
