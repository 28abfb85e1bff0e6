//! The WebAssembly policy host: the only module that touches wasmtime.
//!
//! Operators list policy modules (WebAssembly components built against
//! `wit/policy.wit`) in the plugin config; each serves some of the four
//! hooks. The host:
//!
//! - builds one [`Engine`](wasmtime::Engine) with epoch interruption and
//!   (by default) the pooling allocator ([`engine`]);
//! - compiles each module once, keeping a sealed artifact in a private
//!   cache ([`cache`]), and checks an optional SHA-256 pin ([`module`]);
//! - runs every hook call in a fresh store from an `InstancePre`, with an
//!   epoch deadline armed for that call, memory and table limits, and a cap
//!   on the answer's size ([`PolicyHost::evaluate`]);
//! - turns traps, deadlines, limit hits and malformed answers into
//!   [`EvalError`]s, and applies each module's failure policy when hooks
//!   are composed ([`decide`]);
//! - reloads a module when its file changes, keeping the old version when
//!   the new one fails to load ([`reload`]);
//! - counts calls, errors and latency per module and hook ([`metrics`]).

mod bindings;
pub mod cache;
pub mod decide;
pub mod engine;
pub mod hooks;
pub mod metrics;
pub mod module;
pub mod reload;
mod store;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Store, Trap};

use self::cache::Cache;
use self::engine::{EngineSettings, Runtime};
use self::hooks::{Budget, Input, Output, Refusal};
use self::metrics::{HookMetrics, HookSummary};
use self::module::Loaded;
use self::store::{Blocked, LimitExceeded, StoreData};
use crate::config::policy::{FailurePolicy, Hook, PolicyConfig, PolicyModule};

pub use self::module::Origin;

/// The version of the WIT package this host speaks.
pub const WIT_VERSION: &str = "0.1.0";
/// Default cap on the size of one answer, in bytes.
pub const DEFAULT_OUTPUT_LIMIT: usize = 64 * 1024;

/// Errors of setting up the host or loading a module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The engine could not be built.
    #[error("policy engine: {0}")]
    Engine(String),
    /// The compiled-module cache is unusable.
    #[error("policy cache: {0}")]
    Cache(String),
    /// A module could not be loaded.
    #[error("policy module {module:?}: {reason}")]
    Load {
        /// The module.
        module: String,
        /// Why.
        reason: String,
    },
    /// A module's file does not match its pinned digest.
    #[error(
        "policy module {module:?}: the file's sha256 is {actual}, but the config pins {expected}"
    )]
    DigestMismatch {
        /// The module.
        module: String,
        /// The pinned digest.
        expected: String,
        /// The file's digest.
        actual: String,
    },
    /// No module has this name.
    #[error("no policy module is named {0:?}")]
    UnknownModule(String),
}

/// `Result` with [`PolicyError`].
pub type Result<T, E = PolicyError> = std::result::Result<T, E>;

/// Why one hook call produced no decision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// The call ran past its deadline and was cut off.
    #[error("ran past its deadline of {deadline:?} and was stopped")]
    Timeout {
        /// The deadline.
        deadline: Duration,
    },
    /// The guest trapped (a panic, an unreachable, an out-of-bounds access).
    #[error("trapped: {message}")]
    Trap {
        /// wasmtime's description.
        message: String,
    },
    /// The guest tried to grow past its memory or table limit.
    #[error("exceeded its {resource} limit of {limit}")]
    ResourceLimit {
        /// `memory` or `table`.
        resource: &'static str,
        /// The limit, for people.
        limit: String,
    },
    /// The answer is larger than the output cap.
    #[error("returned an answer larger than the {limit}-byte cap")]
    OutputTooLarge {
        /// The cap.
        limit: usize,
    },
    /// The answer breaks the contract.
    #[error("returned an invalid answer: {reason}")]
    InvalidOutput {
        /// What is wrong with it.
        reason: String,
    },
    /// The module has no loaded version serving this hook.
    #[error("is unavailable: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
}

impl EvalError {
    /// A short name for logs, events and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => "timeout",
            Self::Trap { .. } => "trap",
            Self::ResourceLimit { .. } => "resource-limit",
            Self::OutputTooLarge { .. } => "output-too-large",
            Self::InvalidOutput { .. } => "invalid-output",
            Self::Unavailable { .. } => "unavailable",
        }
    }
}

/// How the policy host is set up (besides the modules).
#[derive(Debug, Clone)]
pub struct HostSettings {
    /// Engine and allocation settings.
    pub engine: EngineSettings,
    /// Where compiled modules are cached; none compiles every load.
    pub cache_dir: Option<PathBuf>,
    /// Cap on the size of one answer, in bytes.
    pub output_limit: usize,
}

impl Default for HostSettings {
    fn default() -> Self {
        Self {
            engine: EngineSettings::default(),
            cache_dir: None,
            output_limit: DEFAULT_OUTPUT_LIMIT,
        }
    }
}

/// One configured module: its current loaded version and its counters.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) spec: PolicyModule,
    current: RwLock<Option<Arc<Loaded>>>,
    pub(crate) last_error: Mutex<Option<String>>,
    pub(crate) attempted: Mutex<Option<module::FileStamp>>,
    metrics: [HookMetrics; 4],
}

fn hook_index(hook: Hook) -> usize {
    match hook {
        Hook::ReconcilerMatch => 0,
        Hook::GpuRuntime => 1,
        Hook::StatsTransform => 2,
        Hook::TaskAdmission => 3,
    }
}

impl Slot {
    fn current(&self) -> Option<Arc<Loaded>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn install(&self, loaded: Arc<Loaded>) -> Option<Arc<Loaded>> {
        let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
        current.replace(loaded)
    }

    /// Whether this module serves `hook`. A module that never loaded serves
    /// the hooks it was configured for, or all of them when none were
    /// listed, so that its failure policy applies rather than silence.
    fn serves(&self, hook: Hook) -> bool {
        match self.current() {
            Some(loaded) => loaded.serves.contains(&hook),
            None => self.spec.hooks.is_empty() || self.spec.hooks.contains(&hook),
        }
    }
}

/// The policy host.
pub struct PolicyHost {
    runtime: Runtime,
    linker: Linker<StoreData>,
    cache: Option<Cache>,
    output_limit: usize,
    slots: Vec<Arc<Slot>>,
}

impl std::fmt::Debug for PolicyHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyHost")
            .field("runtime", &self.runtime)
            .field("cache", &self.cache)
            .field("slots", &self.slots)
            .finish_non_exhaustive()
    }
}

/// A module's state, for `policy check`, logs and InspectTask.
#[derive(Debug, Clone)]
pub struct ModuleStatus {
    /// The module's name.
    pub name: String,
    /// The current loaded version, if any.
    pub loaded: Option<Arc<Loaded>>,
    /// The last load error, if the last attempt failed.
    pub last_error: Option<String>,
    /// Counters per hook it serves or served.
    pub hooks: Vec<(Hook, HookSummary)>,
    /// Its failure policy.
    pub failure_policy: FailurePolicy,
}

impl PolicyHost {
    /// Builds the engine and loads every module of `config`. A module that
    /// fails to load is logged and kept as unavailable (its failure policy
    /// applies to its hooks) so that one bad file cannot stop the driver;
    /// [`PolicyHost::load_errors`] lists them.
    pub fn new(settings: HostSettings, config: &PolicyConfig) -> Result<Self> {
        let runtime = Runtime::new(settings.engine)?;
        let mut linker = Linker::<StoreData>::new(&runtime.engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|error| PolicyError::Engine(format!("cannot link WASI: {error:#}")))?;
        store::forbid_blocking(&mut linker)
            .map_err(|error| PolicyError::Engine(format!("cannot restrict WASI: {error:#}")))?;
        bindings::host::add_to_linker::<_, HasSelf<StoreData>>(&mut linker, |data| data).map_err(
            |error| PolicyError::Engine(format!("cannot link the host interface: {error:#}")),
        )?;
        bindings::types::add_to_linker::<_, HasSelf<StoreData>>(&mut linker, |data| data).map_err(
            |error| PolicyError::Engine(format!("cannot link the types interface: {error:#}")),
        )?;
        let cache = settings
            .cache_dir
            .as_deref()
            .map(|dir| Cache::open(dir, &runtime.engine))
            .transpose()?;
        let mut host = Self {
            runtime,
            linker,
            cache,
            output_limit: settings.output_limit,
            slots: Vec::new(),
        };
        for spec in &config.module {
            let slot = Arc::new(Slot {
                spec: spec.clone(),
                current: RwLock::new(None),
                last_error: Mutex::new(None),
                attempted: Mutex::new(None),
                metrics: Default::default(),
            });
            host.runtime.accommodate(spec.deadline.get());
            host.try_load(&slot);
            host.slots.push(slot);
        }
        Ok(host)
    }

    /// Loads (or reloads) a slot's module; on failure keeps what it had.
    fn try_load(&self, slot: &Slot) -> bool {
        if let Ok(stamp) = module::FileStamp::of(std::path::Path::new(&slot.spec.path)) {
            *slot.attempted.lock().unwrap_or_else(|p| p.into_inner()) = Some(stamp);
        }
        match module::load(&self.runtime, &self.linker, self.cache.as_ref(), &slot.spec) {
            Ok(loaded) => {
                let loaded = Arc::new(loaded);
                tracing::info!(
                    module = %slot.spec.name,
                    sha256 = %loaded.sha256(),
                    hooks = %loaded.serves.iter().map(|h| h.as_str()).collect::<Vec<_>>().join(","),
                    origin = ?loaded.origin,
                    load_ms = loaded.load_time.as_secs_f64() * 1000.0,
                    "policy module loaded"
                );
                let previous = slot.install(loaded);
                if let Some(previous) = previous {
                    tracing::info!(module = %slot.spec.name, previous_sha256 = %previous.sha256(), "policy module replaced; calls already running finish on the previous version");
                }
                *slot.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
                true
            }
            Err(error) => {
                let keeping = slot.current().map(|loaded| loaded.sha256());
                match &keeping {
                    Some(sha) => {
                        tracing::warn!(module = %slot.spec.name, keeping_sha256 = %sha, "{error}; keeping the version already loaded")
                    }
                    None => {
                        tracing::error!(module = %slot.spec.name, failure_policy = ?slot.spec.failure_policy, "{error}; its hooks are unavailable until the file is fixed")
                    }
                }
                *slot.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(error.to_string());
                false
            }
        }
    }

    /// Modules that failed their last load, with the error.
    pub fn load_errors(&self) -> Vec<(String, String)> {
        self.slots
            .iter()
            .filter_map(|slot| {
                let error = slot
                    .last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()?;
                Some((slot.spec.name.clone(), error))
            })
            .collect()
    }

    /// Every module's state.
    pub fn status(&self) -> Vec<ModuleStatus> {
        self.slots
            .iter()
            .map(|slot| ModuleStatus {
                name: slot.spec.name.clone(),
                loaded: slot.current(),
                last_error: slot
                    .last_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone(),
                hooks: Hook::ALL
                    .into_iter()
                    .filter(|hook| {
                        slot.serves(*hook) || slot.metrics[hook_index(*hook)].summary().calls > 0
                    })
                    .map(|hook| (hook, slot.metrics[hook_index(hook)].summary()))
                    .collect(),
                failure_policy: slot.spec.failure_policy,
            })
            .collect()
    }

    /// Whether any module serves `hook`.
    pub fn serves(&self, hook: Hook) -> bool {
        self.slots.iter().any(|slot| slot.serves(hook))
    }

    /// The modules serving `hook`, in config order.
    pub(crate) fn serving(&self, hook: Hook) -> impl Iterator<Item = &Arc<Slot>> {
        self.slots.iter().filter(move |slot| slot.serves(hook))
    }

    fn slot(&self, name: &str) -> Result<&Arc<Slot>> {
        self.slots
            .iter()
            .find(|slot| slot.spec.name == name)
            .ok_or_else(|| PolicyError::UnknownModule(name.to_owned()))
    }

    /// Evaluates one hook of one module.
    pub fn evaluate(&self, module: &str, input: &Input) -> Result<Result<Output, EvalError>> {
        Ok(self.evaluate_slot(self.slot(module)?, input))
    }

    /// Evaluates one hook of one module: a fresh store from the module's
    /// `InstancePre`, limits and a deadline armed for this call alone.
    ///
    /// Runs guest code on the calling thread, so it must not be called on
    /// an async runtime's worker thread (WASI's host side would block it);
    /// use `spawn_blocking`.
    pub(crate) fn evaluate_slot(&self, slot: &Slot, input: &Input) -> Result<Output, EvalError> {
        let hook = input.hook();
        let started = Instant::now();
        let result = self.evaluate_current(slot, input);
        let elapsed = started.elapsed();
        slot.metrics[hook_index(hook)].record(
            elapsed,
            result.is_err(),
            matches!(result, Err(EvalError::Timeout { .. })),
        );
        // Reported by the caller (the driver logs each step with its task or
        // container; the CLI prints it): one line per decision, not two.
        result
    }

    fn evaluate_current(&self, slot: &Slot, input: &Input) -> Result<Output, EvalError> {
        let hook = input.hook();
        let Some(loaded) = slot.current() else {
            let reason = slot
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_else(|| "it has not loaded".to_owned());
            return Err(EvalError::Unavailable { reason });
        };
        if !loaded.serves.contains(&hook) {
            return Err(EvalError::Unavailable {
                reason: format!("it does not serve {hook}"),
            });
        }
        let _permit = self.runtime.enter();
        let mut store = Store::new(
            &self.runtime.engine,
            StoreData::new(Arc::clone(&loaded.context), Some(hook)),
        );
        store.limiter(|data| data.limiter());
        store.set_epoch_deadline(self.runtime.deadline_ticks(loaded.deadline));
        let mut budget = Budget::new(self.output_limit);
        let raw = call(&loaded, &mut store, input);
        let dropped = store.data().logs_dropped();
        if dropped > 0 {
            tracing::warn!(module = %slot.spec.name, hook = hook.as_str(), dropped, "policy module wrote more log lines than one call may; the rest were dropped");
        }
        let raw = raw.map_err(|error| classify(&error, &store, &loaded))?;
        let converted = match (raw, input) {
            (Raw::Reconciler(raw), _) => {
                hooks::reconciler::Decision::from_wit(raw, &mut budget).map(Output::ReconcilerMatch)
            }
            (Raw::Gpu(raw), _) => {
                hooks::gpu::Decision::from_wit(raw, &mut budget).map(Output::GpuRuntime)
            }
            (Raw::Stats(raw), Input::StatsTransform(input)) => {
                hooks::stats::Transformed::from_wit(raw, &input.sample, &mut budget)
                    .map(Output::StatsTransform)
            }
            (Raw::Stats(_), _) => unreachable!("the raw answer matches the input's hook"),
            (Raw::Admission(raw), _) => {
                hooks::admission::Decision::from_wit(raw, &mut budget).map(Output::TaskAdmission)
            }
        };
        converted.map_err(|refusal| match refusal {
            Refusal::TooLarge => EvalError::OutputTooLarge {
                limit: self.output_limit,
            },
            Refusal::Invalid(reason) => EvalError::InvalidOutput { reason },
        })
    }

    /// Reloads every module whose file changed since its last load attempt.
    /// Returns the names of the modules that were reloaded.
    pub fn reload_changed(&self) -> Vec<String> {
        let mut reloaded = Vec::new();
        for slot in &self.slots {
            let Ok(stamp) = module::FileStamp::of(std::path::Path::new(&slot.spec.path)) else {
                continue;
            };
            let attempted = *slot.attempted.lock().unwrap_or_else(|p| p.into_inner());
            if attempted == Some(stamp) {
                continue;
            }
            if let Some(current) = slot.current()
                && current.stamp == Some(stamp)
            {
                continue;
            }
            tracing::info!(module = %slot.spec.name, path = %slot.spec.path, "policy module file changed; reloading");
            if self.try_load(slot) {
                reloaded.push(slot.spec.name.clone());
            }
        }
        reloaded
    }

    /// The engine settings in force.
    pub fn engine_settings(&self) -> &EngineSettings {
        &self.runtime.settings
    }

    /// Driver attributes for InspectTask: `policy.<module>.<hook>.<counter>`.
    pub fn attributes(&self) -> Vec<(String, String)> {
        let mut attributes = Vec::new();
        for status in self.status() {
            for (hook, summary) in status.hooks {
                let prefix = format!("policy.{}.{}", status.name, hook.as_str());
                attributes.push((format!("{prefix}.calls"), summary.calls.to_string()));
                attributes.push((format!("{prefix}.errors"), summary.errors.to_string()));
                attributes.push((format!("{prefix}.timeouts"), summary.timeouts.to_string()));
                attributes.push((format!("{prefix}.p50_us"), format!("{:.1}", summary.p50_us)));
                attributes.push((format!("{prefix}.p99_us"), format!("{:.1}", summary.p99_us)));
            }
        }
        attributes
    }
}

/// A guest's answer before it is checked.
enum Raw {
    Reconciler(bindings::reconciler_match::Decision),
    Gpu(bindings::gpu_runtime::Decision),
    Stats(Option<bindings::stats_transform::Sample>),
    Admission(bindings::task_admission::Decision),
}

fn unserved(hook: Hook) -> wasmtime::Error {
    wasmtime::format_err!("the module does not export {hook}")
}

fn call(loaded: &Loaded, store: &mut Store<StoreData>, input: &Input) -> wasmtime::Result<Raw> {
    let instance = loaded.pre.instantiate(&mut *store)?;
    let exports = &loaded.exports;
    Ok(match input {
        Input::ReconcilerMatch(container) => {
            let guest = exports
                .reconciler
                .as_ref()
                .ok_or_else(|| unserved(Hook::ReconcilerMatch))?;
            let guest = guest.load(&mut *store, &instance)?;
            Raw::Reconciler(guest.call_decide(&mut *store, &container.to_wit())?)
        }
        Input::GpuRuntime(request) => {
            let guest = exports
                .gpu
                .as_ref()
                .ok_or_else(|| unserved(Hook::GpuRuntime))?;
            let guest = guest.load(&mut *store, &instance)?;
            Raw::Gpu(guest.call_select(&mut *store, &request.to_wit())?)
        }
        Input::StatsTransform(input) => {
            let guest = exports
                .stats
                .as_ref()
                .ok_or_else(|| unserved(Hook::StatsTransform))?;
            let guest = guest.load(&mut *store, &instance)?;
            Raw::Stats(guest.call_transform(
                &mut *store,
                &hooks::identity_to_wit(&input.task),
                &input.sample.to_wit(),
            )?)
        }
        Input::TaskAdmission(request) => {
            let guest = exports
                .admission
                .as_ref()
                .ok_or_else(|| unserved(Hook::TaskAdmission))?;
            let guest = guest.load(&mut *store, &instance)?;
            Raw::Admission(guest.call_admit(&mut *store, &request.to_wit())?)
        }
    })
}

/// Turns wasmtime's error into what went wrong, in the guest's terms.
fn classify(error: &wasmtime::Error, store: &Store<StoreData>, loaded: &Loaded) -> EvalError {
    if let Some(resource) = store.data().limit_hit() {
        let limit = match resource {
            "memory" => format!("{} MiB", loaded.context.memory_limit >> 20),
            _ => format!("{} elements", engine::MAX_TABLE_ELEMENTS),
        };
        return EvalError::ResourceLimit { resource, limit };
    }
    if error.downcast_ref::<LimitExceeded>().is_some() {
        return EvalError::ResourceLimit {
            resource: "memory",
            limit: format!("{} MiB", loaded.context.memory_limit >> 20),
        };
    }
    if error.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return EvalError::Timeout {
            deadline: loaded.deadline,
        };
    }
    let mut message = match error.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None if error.downcast_ref::<Blocked>().is_some() => Blocked.to_string(),
        None => format!("{error:#}"),
    };
    if let Some(stderr) = store.data().stderr() {
        message.push_str(" (its stderr: ");
        message.push_str(&stderr);
        message.push(')');
    }
    EvalError::Trap { message }
}

#[cfg(test)]
mod tests;
