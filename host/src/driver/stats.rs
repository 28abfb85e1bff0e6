//! TaskStats: a stream of samples per task, fed by the task's one shared
//! sampler (see `stats::sampler`).

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_stream::{Stream, StreamExt as _};

use super::Driver;
use super::error::{DriverError, Result};
use super::handle::TaskHandle;
use super::task::TaskRequest;
use crate::config::plugin::StatsSource;
use crate::docker::Docker;
use crate::driver::NodeCompute;
use crate::stats::cgroup::{self, Cgroup};
use crate::stats::counters::{self, Counters};
use crate::stats::sampler::Shared;
use crate::stats::transform::StatsTransform;
use crate::stats::{SourceKind, TaskIdentity, Usage};

/// A task's samples.
pub type UsageStream = Pin<Box<dyn Stream<Item = Usage> + Send>>;

/// Shortest interval honoured (a zero interval would spin).
const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Delay between the two readings behind the first sample.
const PRIMING: Duration = Duration::from_millis(250);
/// Backoff after read errors: 5 s · 4^n, at most two minutes.
const BACKOFF_BASE: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(120);

fn backoff(failures: u32) -> Duration {
    BACKOFF_BASE
        .saturating_mul(4u32.saturating_pow(failures.saturating_sub(1)))
        .min(BACKOFF_MAX)
}

/// The identity a stats policy sees.
pub fn identity(task: &TaskRequest) -> TaskIdentity {
    TaskIdentity {
        job: task.job_name.clone(),
        group: task.task_group_name.clone(),
        task: task.name.clone(),
        alloc_id: task.alloc_id.clone(),
        namespace: task.namespace.clone(),
        node_name: task.node_name.clone(),
        node_id: task.node_id.clone(),
    }
}

/// Everything one sampler needs.
struct Sampling {
    docker: Docker,
    handle: Arc<TaskHandle>,
    shared: Arc<Shared>,
    source: StatsSource,
    compute: NodeCompute,
    transform: Arc<dyn StatsTransform>,
    identity: Arc<TaskIdentity>,
}

/// Why a sampling loop stopped.
enum Stop {
    /// No stream listens any more.
    Unwatched,
    /// The container stopped or the task was destroyed.
    Ended,
    /// The cgroup cannot be read; try the engine's API.
    CgroupFailed,
}

impl Driver {
    /// Opens a stream of the task's samples, one per `interval` at most.
    /// A task whose container already stopped is an error.
    pub async fn task_stats(&self, id: &str, interval: Duration) -> Result<UsageStream> {
        let handle = self.tasks.get(id)?;
        if handle.exit().is_some() || *handle.container_stopped().borrow() {
            return Err(DriverError::recoverable("container stopped"));
        }
        let config = self.require_config()?;
        let docker = self
            .docker()
            .await
            .map_err(|e| DriverError::docker("cannot reach Docker", &e))?;
        let interval = interval.max(MIN_INTERVAL);
        let compute = config.agent.as_ref().map(|a| a.compute).unwrap_or_default();
        let transform = self.stats_transform();
        let latest = handle.samplers.subscribe(interval, |shared| {
            let sampling = Sampling {
                docker,
                handle: Arc::clone(&handle),
                shared,
                source: config.plugin.stats_source,
                compute,
                transform,
                identity: Arc::new(identity(&handle.task)),
            };
            tokio::spawn(sampling.run());
        });
        let mut last_sent: Option<Instant> = None;
        let spacing = interval.mul_f64(0.9);
        let stream =
            tokio_stream::wrappers::WatchStream::from_changes(latest).filter_map(move |usage| {
                let usage = usage?;
                if last_sent.is_some_and(|at| at.elapsed() < spacing) {
                    return None;
                }
                last_sent = Some(Instant::now());
                Some(Usage::clone(&usage))
            });
        Ok(Box::pin(stream))
    }

    /// The transform applied to every sample.
    pub fn stats_transform(&self) -> Arc<dyn StatsTransform> {
        Arc::clone(
            &self
                .stats_transform
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

impl Sampling {
    async fn run(self) {
        let task_id = self.handle.task.id.clone();
        let cgroup = match self.source {
            StatsSource::Docker => None,
            StatsSource::Auto | StatsSource::Cgroup => match self.locate().await {
                Ok(cgroup) => Some(cgroup),
                Err(err) if self.source == StatsSource::Auto => {
                    tracing::info!(task_id, error = %err, "cannot read the container's cgroup; using Docker's stats API");
                    None
                }
                Err(err) => {
                    tracing::warn!(task_id, error = %err, "cannot read the container's cgroup (stats_source = \"cgroup\"): no stats for this task");
                    self.handle.samplers.end(&self.shared);
                    return;
                }
            },
        };
        let kind = if cgroup.is_some() {
            SourceKind::Cgroup
        } else {
            SourceKind::DockerApi
        };
        tracing::debug!(task_id, source = kind.name(), "stats sampler started");
        let stop = match cgroup {
            Some(cgroup) => match self.sample_cgroup(cgroup).await {
                Stop::CgroupFailed if self.source == StatsSource::Auto => {
                    tracing::info!(
                        task_id,
                        "the container's cgroup stopped being readable; using Docker's stats API"
                    );
                    self.sample_api().await
                }
                stop => stop,
            },
            None => self.sample_api().await,
        };
        match stop {
            Stop::Unwatched => tracing::debug!(task_id, "stats sampler stopped: no stream left"),
            Stop::Ended | Stop::CgroupFailed => {
                self.handle.samplers.end(&self.shared);
                tracing::debug!(task_id, "stats sampler ended");
            }
        }
    }

    async fn locate(&self) -> std::io::Result<Cgroup> {
        let facts = self
            .docker
            .inspect_container(&self.handle.container_id)
            .await
            .map_err(std::io::Error::other)?;
        let pid = u32::try_from(facts.pid)
            .ok()
            .filter(|pid| *pid > 0)
            .ok_or_else(|| std::io::Error::other("the container has no running process"))?;
        tokio::task::spawn_blocking(move || cgroup::locate(pid))
            .await
            .map_err(std::io::Error::other)?
    }

    /// Turns two readings into a sample, passes it through the transform
    /// (a policy: on a blocking thread, bounded by its deadline) and
    /// publishes what comes out.
    async fn publish(&self, previous: &Counters, current: &Counters) {
        let usage = counters::sample(Some(previous), current, self.compute);
        let usage = if self.transform.is_identity() {
            Some(usage)
        } else {
            let transform = Arc::clone(&self.transform);
            let identity = Arc::clone(&self.identity);
            match tokio::task::spawn_blocking(move || transform.transform(&identity, usage)).await {
                Ok(usage) => usage,
                Err(error) => {
                    tracing::warn!(task_id = %self.handle.task.id, %error, "the stats transform failed; sample dropped");
                    None
                }
            }
        };
        if let Some(usage) = usage {
            self.shared.publish(usage);
        }
    }

    /// Waits `delay`; `Some(stop)` when sampling must stop instead.
    async fn pause(&self, delay: Duration) -> Option<Stop> {
        let mut stopped = self.handle.container_stopped();
        loop {
            if *stopped.borrow_and_update() {
                return Some(Stop::Ended);
            }
            tokio::select! {
                () = tokio::time::sleep(delay) => return None,
                () = self.shared.unwatched() => {
                    if self.handle.samplers.retire(&self.shared) {
                        return Some(Stop::Unwatched);
                    }
                }
                _ = stopped.changed() => {}
                () = self.handle.workers().cancelled() => return Some(Stop::Ended),
            }
        }
    }

    async fn sample_cgroup(&self, cgroup: Cgroup) -> Stop {
        let task_id = &self.handle.task.id;
        // Small kernel-generated files: read in place, no blocking pool.
        let mut files = match cgroup.open() {
            Ok(files) => files,
            Err(err) => {
                tracing::warn!(task_id, error = %err, "cannot open the container's cgroup files");
                return Stop::CgroupFailed;
            }
        };
        let mut previous: Option<Counters> = None;
        let mut failures = 0u32;
        loop {
            let delay = match files.read() {
                Ok(current) => {
                    failures = 0;
                    if let Some(previous) = &previous {
                        self.publish(previous, &current).await;
                    }
                    let first = previous.is_none();
                    previous = Some(current);
                    if first {
                        PRIMING
                    } else {
                        self.shared.interval()
                    }
                }
                Err(err) => {
                    if *self.handle.container_stopped().borrow() {
                        return Stop::Ended;
                    }
                    failures += 1;
                    if failures == 1 {
                        tracing::warn!(task_id, error = %err, "reading the container's cgroup failed; retrying with backoff");
                    }
                    if failures >= 3 {
                        return Stop::CgroupFailed;
                    }
                    backoff(failures)
                }
            };
            if let Some(stop) = self.pause(delay).await {
                return stop;
            }
        }
    }

    async fn sample_api(&self) -> Stop {
        let task_id = &self.handle.task.id;
        let mut failures = 0u32;
        loop {
            let mut stream = self.docker.follow_stats(&self.handle.container_id);
            let mut previous: Option<Counters> = None;
            let mut published: Option<Instant> = None;
            loop {
                let mut stopped = self.handle.container_stopped();
                let item = tokio::select! {
                    item = stream.next() => item,
                    () = self.shared.unwatched() => {
                        if self.handle.samplers.retire(&self.shared) {
                            return Stop::Unwatched;
                        }
                        continue;
                    }
                    _ = stopped.wait_for(|s| *s) => return Stop::Ended,
                    () = self.handle.workers().cancelled() => return Stop::Ended,
                };
                match item {
                    Some(Ok(current)) => {
                        failures = 0;
                        if let Some(previous) = &previous
                            && published.is_none_or(|at| {
                                at.elapsed() >= self.shared.interval().mul_f64(0.9)
                            })
                        {
                            self.publish(previous, &current).await;
                            published = Some(Instant::now());
                        }
                        previous = Some(current);
                    }
                    Some(Err(err)) => {
                        failures += 1;
                        if failures == 1 {
                            tracing::warn!(task_id, error = %err, "Docker's stats API failed; retrying with backoff");
                        }
                        break;
                    }
                    None => {
                        if *self.handle.container_stopped().borrow() {
                            return Stop::Ended;
                        }
                        failures += 1;
                        break;
                    }
                }
            }
            if let Some(stop) = self.pause(backoff(failures)).await {
                return stop;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_by_four_and_stops_at_two_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(5));
        assert_eq!(backoff(2), Duration::from_secs(20));
        assert_eq!(backoff(3), Duration::from_secs(80));
        assert_eq!(backoff(4), Duration::from_secs(120));
        assert_eq!(backoff(40), Duration::from_secs(120));
    }
}
