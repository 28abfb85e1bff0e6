//! Where policy modules take part in the driver's decisions: task admission
//! before anything is pulled, the GPU runtime before the container is built,
//! the reconciler's "is it ours?" and every stats sample.
//!
//! The policy host (`crate::policy`) runs guests and composes their answers;
//! this module turns driver data into hook inputs, applies the decisions
//! within what the plugin config permits, and reports every step (a log
//! line with hook, module, latency and outcome; a task event where there is
//! a task). Guest code runs on blocking threads, never on async workers.

use std::sync::Arc;

use super::Driver;
use super::error::{DriverError, Result};
use super::task::TaskRequest;
use crate::config::PluginConfig;
use crate::config::policy::{FailurePolicy, Hook, PolicyModule};
use crate::config::task::TaskConfig;
use crate::docker::engine::EngineFacts;
use crate::docker::spec::{self, GpuChoice, GpuDeviceRequest, LABEL_PREFIX, RealHostFiles};
use crate::policy::PolicyHost;
use crate::policy::decide::{Admission, Step, consequence};
use crate::policy::hooks::{DeviceMount, KeyValue, Mount, admission, gpu, reconciler, stats};
use crate::reconciler::plan::{self, Candidate, Matcher};
use crate::stats::transform::StatsTransform;
use crate::stats::{self as usage, Usage};

/// Environment variables a patch may not touch: Nomad's own.
const NOMAD_ENV_PREFIX: &str = "NOMAD_";

/// What became of the configured policy modules.
#[derive(Debug)]
pub(crate) enum PolicyLoad {
    /// No module is configured.
    Off,
    /// The policy host runs; modules that failed to load are unavailable
    /// inside it and their failure policies apply there.
    Ready(Arc<PolicyHost>),
    /// The policy host itself could not start, so no module can run: each
    /// module's failure policy applies to the hooks it was configured for.
    Broken {
        /// Why, for errors, events and logs.
        error: String,
        /// The configured modules.
        modules: Vec<PolicyModule>,
    },
}

impl PolicyLoad {
    /// When the host is broken: the first module configured for `hook`
    /// (all hooks when it lists none) whose failure policy is `fail`.
    fn failing_closed(&self, hook: Hook) -> Option<(&str, &str)> {
        let Self::Broken { error, modules } = self else {
            return None;
        };
        modules
            .iter()
            .find(|m| {
                m.failure_policy == FailurePolicy::Fail
                    && (m.hooks.is_empty() || m.hooks.contains(&hook))
            })
            .map(|m| (m.name.as_str(), error.as_str()))
    }
}

impl Driver {
    /// Runs the task-admission modules on a task about to start: a deny
    /// fails the start (not recoverable) with the module's reason; patches
    /// are applied to `task` and `config` after they pass the plugin
    /// config's privilege rules. Every step becomes a log line and a task
    /// event.
    pub(crate) async fn admit(
        &self,
        task: &mut TaskRequest,
        config: &mut TaskConfig,
        plugin: &PluginConfig,
    ) -> Result<()> {
        let load = self.policies().await;
        if let Some((module, error)) = load.failing_closed(Hook::TaskAdmission) {
            self.fail_closed(task, module, Hook::TaskAdmission, error);
            return Err(DriverError::unrecoverable(format!(
                "admission policy {module} cannot run ({error}) and fails closed: the task is denied"
            )));
        }
        let Some(host) = self.policy().filter(|h| h.serves(Hook::TaskAdmission)) else {
            return Ok(());
        };
        let request = admission_request(task, config);
        let (decision, steps) = run_blocking(move || host.admit(request)).await?;
        self.report(task, &steps);
        match decision {
            Admission::Allow => Ok(()),
            Admission::Deny { module, reason } => Err(DriverError::unrecoverable(format!(
                "admission policy {module} denied the task: {reason}"
            ))),
            Admission::Patch(patches) => {
                for (module, patch) in &patches {
                    let applied = apply_patch(task, config, plugin, patch).map_err(|what| {
                        self.events.emit(
                            task,
                            format!("Policy {module} (task-admission): patch refused: {what}"),
                            &[("policy", module), ("hook", Hook::TaskAdmission.as_str())],
                        );
                        DriverError::unrecoverable(format!(
                            "admission policy {module} patched the task beyond what the plugin config permits: {what}"
                        ))
                    })?;
                    tracing::info!(task_id = %task.id, policy = %module, changes = %applied, "admission patch applied");
                    self.events.emit(
                        task,
                        format!("Policy {module} (task-admission): patch applied: {applied}"),
                        &[("policy", module), ("hook", Hook::TaskAdmission.as_str())],
                    );
                }
                Ok(())
            }
        }
    }

    /// Asks the gpu-runtime modules about a task that a device plugin gave
    /// devices to. `None` means the native rule applies (no module serves
    /// the hook, the task has no device environment, or every module
    /// abstained); a rejection fails the start (not recoverable).
    pub(crate) async fn choose_gpu(
        &self,
        task: &TaskRequest,
        config: &TaskConfig,
        plugin: &PluginConfig,
        engine: &EngineFacts,
    ) -> Result<Option<GpuChoice>> {
        if task.device_env.is_empty() {
            return Ok(None);
        }
        let load = self.policies().await;
        if let Some((module, error)) = load.failing_closed(Hook::GpuRuntime) {
            self.fail_closed(task, module, Hook::GpuRuntime, error);
            return Err(DriverError::unrecoverable(format!(
                "GPU runtime policy {module} cannot run ({error}) and fails closed: the task is rejected"
            )));
        }
        let Some(host) = self.policy().filter(|h| h.serves(Hook::GpuRuntime)) else {
            return Ok(None);
        };
        let request = gpu_request(task, config, plugin, engine);
        let (decision, steps) = run_blocking(move || host.select_gpu(request)).await?;
        self.report(task, &steps);
        // The module that decided: the last one asked.
        let policy = steps
            .last()
            .map(|step| step.module.clone())
            .unwrap_or_default();
        match decision {
            gpu::Decision::Abstain => Ok(None),
            gpu::Decision::Reject(message) => Err(DriverError::unrecoverable(format!(
                "GPU runtime policy {policy} rejected the task: {message}"
            ))),
            gpu::Decision::Select(selection) => Ok(Some(GpuChoice {
                policy,
                runtime: selection.runtime,
                device_requests: selection
                    .device_requests
                    .into_iter()
                    .map(device_request)
                    .collect(),
            })),
        }
    }

    /// Makes the policy host the stats transform. Whether a sample goes
    /// through it is decided per sample (`is_identity`), so a module that
    /// starts or stops serving stats-transform on reload takes effect.
    pub(crate) fn install_policy_hooks(&self, host: &Arc<PolicyHost>) {
        *self
            .stats_transform
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Arc::new(PolicyStats::new(Arc::clone(host)));
    }

    /// When the policy host could not start: a stats-transform module
    /// that fails closed drops every sample; otherwise samples go out
    /// unchanged (the other failure policies skip the module).
    pub(crate) fn install_broken_policy_hooks(&self, load: &PolicyLoad) {
        if let Some((module, error)) = load.failing_closed(Hook::StatsTransform) {
            *self
                .stats_transform
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(DropAll {
                module: module.to_owned(),
                error: error.to_owned(),
                warned: std::sync::atomic::AtomicBool::new(false),
            });
        }
    }

    /// The reconciler's matcher, when a module serves reconciler-match (or
    /// one that fails closed could not start: then every container it would
    /// have been asked about is kept).
    pub(crate) fn policy_matcher(&self) -> Option<Arc<dyn Matcher>> {
        let load = self.policy.get()?;
        if let Some((module, error)) = load.failing_closed(Hook::ReconcilerMatch) {
            return Some(Arc::new(KeepAll {
                reason: format!(
                    "reconciler policy {module} cannot run ({error}) and fails closed: the container is kept"
                ),
            }));
        }
        self.policy()
            .filter(|h| h.serves(Hook::ReconcilerMatch))
            .map(|host| Arc::new(PolicyMatcher { host }) as Arc<dyn Matcher>)
    }

    /// Reports a module that cannot run and fails closed on a task.
    fn fail_closed(&self, task: &TaskRequest, module: &str, hook: Hook, error: &str) {
        tracing::error!(task_id = %task.id, policy = %module, hook = hook.as_str(), "{error}; failure_policy fail: {}", consequence(hook, FailurePolicy::Fail));
        self.events.emit(
            task,
            format!(
                "Policy {module} ({}) cannot run: {error}; {}",
                hook.as_str(),
                consequence(hook, FailurePolicy::Fail)
            ),
            &[("policy", module), ("hook", hook.as_str())],
        );
    }

    /// Logs every step and turns it into a task event.
    fn report(&self, task: &TaskRequest, steps: &[Step]) {
        for step in steps {
            log_step(step, Subject::Task(&task.id));
            let latency = step.latency.as_micros().to_string();
            let (message, outcome) = match &step.outcome {
                Ok(summary) => (
                    format!("Policy {} ({}): {summary}", step.module, step.hook.as_str()),
                    summary.clone(),
                ),
                Err(error) => (
                    format!(
                        "Policy {} ({}) failed: {error}; {}",
                        step.module,
                        step.hook.as_str(),
                        step.failure_policy
                            .map_or("", |policy| consequence(step.hook, policy))
                    ),
                    format!("error: {}", error.kind()),
                ),
            };
            self.events.emit(
                task,
                message,
                &[
                    ("policy", &step.module),
                    ("hook", step.hook.as_str()),
                    ("outcome", &outcome),
                    ("latency_us", &latency),
                ],
            );
        }
    }
}

/// Runs guest code on a blocking thread.
async fn run_blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| DriverError::Failed(format!("policy evaluation failed: {error}")))
}

/// What a step was about, for its log line.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Subject<'a> {
    /// A task being started (its Nomad task id).
    Task(&'a str),
    /// A task's stats sample (allocation and task name).
    Sample {
        /// Allocation id.
        alloc_id: &'a str,
        /// Task name.
        task: &'a str,
    },
    /// A container the reconciler looked at.
    Container(&'a str),
}

/// One log line per step: hook, module, latency and outcome, and what it
/// was about. Failures are warnings (stats failures debug: they repeat
/// every interval and the per-module counters already count them); stats
/// decisions are traced, reconciler ones debug, admission and GPU ones
/// info.
pub(crate) fn log_step(step: &Step, subject: Subject<'_>) {
    let hook = step.hook.as_str();
    let module = step.module.as_str();
    let latency_us = u64::try_from(step.latency.as_micros()).unwrap_or(u64::MAX);
    let (task_id, alloc_id, task, container_id) = match subject {
        Subject::Task(id) => (id, "", "", ""),
        Subject::Sample { alloc_id, task } => ("", alloc_id, task, ""),
        Subject::Container(id) => ("", "", "", id),
    };
    match &step.outcome {
        Err(error) => {
            let failure_policy = step.failure_policy.map_or("", |p| p.as_str());
            let then = step
                .failure_policy
                .map_or("", |policy| consequence(step.hook, policy));
            if step.hook == Hook::StatsTransform {
                tracing::debug!(hook, module, latency_us, outcome = "error", error_kind = error.kind(), %error, failure_policy, then, alloc_id, task, "policy hook failed");
            } else {
                tracing::warn!(hook, module, latency_us, outcome = "error", error_kind = error.kind(), %error, failure_policy, then, task_id, container_id, "policy hook failed");
            }
        }
        Ok(outcome) => match step.hook {
            Hook::StatsTransform => {
                tracing::trace!(hook, module, latency_us, %outcome, alloc_id, task, "policy decision");
            }
            Hook::ReconcilerMatch => {
                tracing::debug!(hook, module, latency_us, %outcome, container_id, "policy decision");
            }
            Hook::GpuRuntime | Hook::TaskAdmission => {
                tracing::info!(hook, module, latency_us, %outcome, task_id, "policy decision");
            }
        },
    }
}

fn pairs<'a>(map: impl IntoIterator<Item = (&'a String, &'a String)>) -> Vec<KeyValue> {
    map.into_iter().map(|(k, v)| KeyValue::new(k, v)).collect()
}

/// The task as it would start: the task's `config {}` and Nomad's request.
fn admission_request(task: &TaskRequest, config: &TaskConfig) -> admission::Request {
    let mut mounts: Vec<Mount> = spec::volumes(task, config)
        .into_iter()
        .map(|(source, target, read_only)| Mount {
            source,
            target,
            read_only,
        })
        .collect();
    mounts.extend(config.mount.iter().chain(&config.mounts).map(|m| Mount {
        source: m.source.clone(),
        target: m.target.clone(),
        read_only: m.readonly,
    }));
    mounts.extend(task.mounts.iter().map(|m| Mount {
        source: m.host_path.clone(),
        target: m.task_path.clone(),
        read_only: m.readonly,
    }));
    admission::Request {
        task: super::stats::identity(task),
        image: config.image.clone(),
        labels: pairs(&config.labels),
        env: pairs(&task.env),
        mounts,
        devices: devices(task, config),
        resources: admission::Resources {
            cpu_shares: task.resources.cpu_shares,
            memory_mb: task.resources.memory_mb,
            memory_max_mb: task.resources.memory_max_mb,
            cpu_hard_limit: config.cpu_hard_limit,
            pids_limit: config.pids_limit,
        },
        security: admission::Security {
            privileged: config.privileged,
            cap_add: config.cap_add.clone(),
            cap_drop: config.cap_drop.clone(),
            security_opt: config.security_opt.clone(),
            runtime: non_empty(&config.runtime),
            network_mode: non_empty(&config.network_mode),
        },
    }
}

fn non_empty(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_owned())
}

/// Host devices: the task config's and the device plugins'.
fn devices(task: &TaskRequest, config: &TaskConfig) -> Vec<DeviceMount> {
    config
        .devices
        .iter()
        .map(|d| DeviceMount {
            host_path: d.host_path.clone(),
            container_path: d.container_path.clone(),
            permissions: d.cgroup_permissions.clone(),
        })
        .chain(task.devices.iter().map(|d| DeviceMount {
            host_path: d.host_path.clone(),
            container_path: d.task_path.clone(),
            permissions: d.cgroup_permissions.clone(),
        }))
        .collect()
}

fn gpu_request(
    task: &TaskRequest,
    config: &TaskConfig,
    plugin: &PluginConfig,
    engine: &EngineFacts,
) -> gpu::Request {
    gpu::Request {
        task: super::stats::identity(task),
        device_env: pairs(&task.device_env),
        requested_runtime: non_empty(&config.runtime),
        devices: devices(task, config),
        node_runtimes: engine.runtimes.clone(),
        nvidia_runtime: plugin.nvidia_runtime.clone(),
        allow_runtimes: plugin.allow_runtimes.clone(),
    }
}

fn device_request(request: gpu::DeviceRequest) -> GpuDeviceRequest {
    GpuDeviceRequest {
        driver: request.driver,
        count: request.count,
        device_ids: request.device_ids,
        capabilities: request.capabilities,
        options: request
            .options
            .into_iter()
            .map(|kv| (kv.key, kv.value))
            .collect(),
    }
}

/// Applies one admission patch to the task, then checks the result against
/// the plugin config. Returns what changed, for people; or what the patch
/// tried that is not permitted. Nomad's own labels (`com.hashicorp.nomad.`)
/// and environment (`NOMAD_`, and what device plugins set) are off limits;
/// the memory limit may only move between the task's reservation and its
/// current limit; capabilities, runtimes and the pids limit must pass the
/// same rules as the task's own config.
pub(crate) fn apply_patch(
    task: &mut TaskRequest,
    config: &mut TaskConfig,
    plugin: &PluginConfig,
    patch: &admission::Patch,
) -> std::result::Result<String, String> {
    let mut changes = Vec::new();
    for KeyValue { key, value } in &patch.set_labels {
        if key.starts_with(LABEL_PREFIX) {
            return Err(format!("label {key:?} is Nomad's own"));
        }
        config.labels.insert(key.clone(), value.clone());
        changes.push(format!("label {key}"));
    }
    let protected_env = |name: &str| {
        if name.starts_with(NOMAD_ENV_PREFIX) {
            Err(format!("environment variable {name:?} is Nomad's own"))
        } else if task.device_env.contains_key(name) {
            Err(format!(
                "environment variable {name:?} is set by a device plugin"
            ))
        } else {
            Ok(())
        }
    };
    for name in &patch.unset_env {
        protected_env(name)?;
    }
    for KeyValue { key, .. } in &patch.set_env {
        protected_env(key)?;
    }
    for name in &patch.unset_env {
        task.env.remove(name);
        changes.push(format!("env -{name}"));
    }
    for KeyValue { key, value } in &patch.set_env {
        task.env.insert(key.clone(), value.clone());
        changes.push(format!("env {key}"));
    }
    if let Some(runtime) = &patch.runtime {
        config.runtime.clone_from(runtime);
        changes.push(format!("runtime {runtime}"));
    }
    if let Some(memory_max_mb) = patch.memory_max_mb {
        let reserved = task.resources.memory_mb;
        let current = if task.resources.memory_max_mb == -1 {
            i64::MAX
        } else {
            config
                .memory_hard_limit
                .max(task.resources.memory_max_mb)
                .max(reserved)
        };
        if memory_max_mb < reserved || memory_max_mb > current {
            return Err(format!(
                "memory-max-mb {memory_max_mb} is outside {reserved}..={current} (the task's reservation and its current limit)"
            ));
        }
        task.resources.memory_max_mb = memory_max_mb;
        if config.memory_hard_limit > 0 {
            config.memory_hard_limit = memory_max_mb;
        }
        changes.push(format!("memory limit {memory_max_mb} MiB"));
    }
    if let Some(pids_limit) = patch.pids_limit {
        config.pids_limit = pids_limit;
        changes.push(format!("pids limit {pids_limit}"));
    }
    for cap in &patch.cap_drop {
        config.cap_drop.push(cap.clone());
        changes.push(format!("cap_drop {cap}"));
    }
    for cap in &patch.cap_add {
        config.cap_add.push(cap.clone());
        changes.push(format!("cap_add {cap}"));
    }
    for option in &patch.security_opt {
        config.security_opt.push(option.clone());
        changes.push(format!("security_opt {option}"));
    }
    spec::check_privileges(config, plugin, &RealHostFiles).map_err(|e| e.message)?;
    if changes.is_empty() {
        Ok("nothing".to_owned())
    } else {
        Ok(changes.join(", "))
    }
}

/// The stats-transform modules as the sampler's transform.
#[derive(Debug)]
pub(crate) struct PolicyStats {
    host: Arc<PolicyHost>,
}

impl PolicyStats {
    pub(crate) fn new(host: Arc<PolicyHost>) -> Self {
        Self { host }
    }
}

impl StatsTransform for PolicyStats {
    fn is_identity(&self) -> bool {
        !self.host.serves(Hook::StatsTransform)
    }

    fn transform(&self, identity: &usage::TaskIdentity, sample: Usage) -> Option<Usage> {
        let input = stats::Input {
            task: identity.clone(),
            sample: to_sample(&sample),
        };
        let (outcome, steps) = self.host.transform_sample(input);
        for step in &steps {
            log_step(
                step,
                Subject::Sample {
                    alloc_id: &identity.alloc_id,
                    task: &identity.task,
                },
            );
        }
        match outcome {
            stats::Transformed::Keep(kept) => Some(from_sample(&kept, sample.timestamp)),
            stats::Transformed::Drop => None,
        }
    }
}

fn nanos(time: std::time::SystemTime) -> i64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// A driver sample as the hook's sample.
fn to_sample(sample: &Usage) -> stats::Sample {
    stats::Sample {
        timestamp_ns: nanos(sample.timestamp),
        usage: usage::ResourceUsage {
            cpu: sample.cpu.clone(),
            memory: sample.memory.clone(),
        },
        breakdown: sample.breakdown.clone(),
    }
}

/// The hook's sample back as a driver sample. The host has already kept
/// the timestamp within a minute of the original.
fn from_sample(sample: &stats::Sample, original: std::time::SystemTime) -> Usage {
    let shift = sample.timestamp_ns.saturating_sub(nanos(original));
    let timestamp = if shift >= 0 {
        original + std::time::Duration::from_nanos(shift.unsigned_abs())
    } else {
        original - std::time::Duration::from_nanos(shift.unsigned_abs())
    };
    Usage {
        timestamp,
        cpu: sample.usage.cpu.clone(),
        memory: sample.usage.memory.clone(),
        breakdown: sample.breakdown.clone(),
    }
}

/// A stats-transform module that fails closed and cannot run: every
/// sample is dropped (and said so once).
#[derive(Debug)]
struct DropAll {
    module: String,
    error: String,
    warned: std::sync::atomic::AtomicBool,
}

impl StatsTransform for DropAll {
    fn transform(&self, _identity: &usage::TaskIdentity, _sample: Usage) -> Option<Usage> {
        if !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::error!(policy = %self.module, hook = Hook::StatsTransform.as_str(), "{}; failure_policy fail: every stats sample is dropped", self.error);
        }
        None
    }
}

/// A reconciler-match module that fails closed and cannot run: no
/// container is judged dangling.
#[derive(Debug)]
struct KeepAll {
    reason: String,
}

impl Matcher for KeepAll {
    fn decide(&self, _candidate: &Candidate) -> plan::Decision {
        plan::Decision::NotOurs(self.reason.clone())
    }
}

/// The reconciler-match modules as a reconciler matcher. Runs guest code:
/// call [`plan::plan`] with it on a blocking thread.
#[derive(Debug)]
pub(crate) struct PolicyMatcher {
    host: Arc<PolicyHost>,
}

impl Matcher for PolicyMatcher {
    fn decide(&self, candidate: &Candidate) -> plan::Decision {
        let container = reconciler::Container {
            id: candidate.id.clone(),
            name: candidate.name.clone(),
            image: candidate.image.clone(),
            labels: pairs(&candidate.labels),
            env: candidate
                .env
                .iter()
                .flatten()
                .map(|entry| match entry.split_once('=') {
                    Some((key, value)) => KeyValue::new(key, value),
                    None => KeyValue::new(entry.as_str(), ""),
                })
                .collect(),
            mounts: candidate
                .mounts
                .iter()
                .map(|m| Mount {
                    source: m.source.clone(),
                    target: m.destination.clone(),
                    read_only: m.read_only,
                })
                .collect(),
            created: candidate.created,
            state: candidate.state.clone(),
        };
        let (decision, steps) = self.host.decide_container(container);
        for step in &steps {
            log_step(step, Subject::Container(&candidate.id));
        }
        match decision {
            reconciler::Decision::Ours(reason) => plan::Decision::Ours(reason),
            reconciler::Decision::NotOurs(reason) => plan::Decision::NotOurs(reason),
            reconciler::Decision::Abstain => plan::Decision::Abstain,
        }
    }
}

#[cfg(test)]
mod tests;
