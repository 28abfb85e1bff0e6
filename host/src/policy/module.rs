//! Loading one policy module: read and pin-check the file, compile it (or
//! take its sealed artifact from the cache), find which hooks it exports,
//! link it against the host's imports, and check every hook's signature
//! with one trial instantiation, so that a broken module fails at load and
//! never at a task's start.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::Store;
use wasmtime::component::{Component, InstancePre, Linker};

use super::bindings::{gpu_runtime, reconciler_match, stats_transform, task_admission};
use super::cache::{Cache, Lookup, hex};
use super::engine::Runtime;
use super::store::{ModuleContext, StoreData};
use super::{PolicyError, Result, WIT_VERSION};
use crate::config::policy::{Hook, PolicyModule};

/// Largest module file accepted.
pub const MAX_MODULE_BYTES: u64 = 64 << 20;

/// What identifies a version of a module file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl FileStamp {
    pub(crate) fn of(path: &Path) -> std::io::Result<Self> {
        let meta = fs::metadata(path)?;
        Ok(Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime_ns: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
        })
    }
}

/// Where a loaded module's compiled code came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Compiled now.
    Compiled,
    /// Taken from the cache.
    Cached,
}

/// The hooks' export indices, found once per load.
#[derive(Clone, Default)]
pub(crate) struct Exports {
    pub(crate) reconciler: Option<reconciler_match::GuestIndices>,
    pub(crate) gpu: Option<gpu_runtime::GuestIndices>,
    pub(crate) stats: Option<stats_transform::GuestIndices>,
    pub(crate) admission: Option<task_admission::GuestIndices>,
}

/// One loaded version of a module: immutable, shared by the evaluations
/// that started while it was current.
pub struct Loaded {
    pub(crate) context: Arc<ModuleContext>,
    pub(crate) deadline: Duration,
    pub(crate) sha256: [u8; 32],
    pub(crate) pre: InstancePre<StoreData>,
    pub(crate) exports: Exports,
    /// Hooks the component exports.
    pub exported: Vec<Hook>,
    /// Hooks it serves (the configured subset, or all it exports).
    pub serves: Vec<Hook>,
    /// The component's imports, by name.
    pub imports: Vec<String>,
    /// The component's exports, by name.
    pub export_names: Vec<String>,
    /// Where its compiled code came from.
    pub origin: Origin,
    /// Time to compile or to load from the cache, and link.
    pub load_time: Duration,
    pub(crate) stamp: Option<FileStamp>,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("module", &self.context.name)
            .field("sha256", &hex(&self.sha256))
            .field("serves", &self.serves)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl Loaded {
    /// The module's name.
    pub fn name(&self) -> &str {
        &self.context.name
    }

    /// The SHA-256 of the module file, lowercase hex.
    pub fn sha256(&self) -> String {
        hex(&self.sha256)
    }
}

/// The name under which a component exports `hook`.
pub(crate) fn export_name(hook: Hook) -> String {
    format!("wasmdock:policy/{}@{WIT_VERSION}", hook.as_str())
}

fn read_module(spec: &PolicyModule) -> Result<(Vec<u8>, Option<FileStamp>)> {
    let path = Path::new(&spec.path);
    let fail = |why: String| PolicyError::Load {
        module: spec.name.clone(),
        reason: why,
    };
    let mut file =
        File::open(path).map_err(|error| fail(format!("cannot open {}: {error}", spec.path)))?;
    let meta = file
        .metadata()
        .map_err(|error| fail(format!("cannot stat {}: {error}", spec.path)))?;
    if !meta.is_file() {
        return Err(fail(format!("{} is not a regular file", spec.path)));
    }
    if meta.len() > MAX_MODULE_BYTES {
        return Err(fail(format!(
            "{} is {} bytes; modules may be at most {MAX_MODULE_BYTES}",
            spec.path,
            meta.len()
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    (&mut file)
        .take(MAX_MODULE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| fail(format!("cannot read {}: {error}", spec.path)))?;
    Ok((bytes, FileStamp::of(path).ok()))
}

/// Checks the 8-byte header: a component, not a core module or other file.
fn check_header(name: &str, bytes: &[u8]) -> Result<()> {
    let fail = |why: &str| {
        Err(PolicyError::Load {
            module: name.to_owned(),
            reason: why.to_owned(),
        })
    };
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => fail(
            "it is a core WebAssembly module, not a component: build it for wasm32-wasip2 \
             (or wrap it with `wasm-tools component new`)",
        ),
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => Ok(()),
        _ => fail("it is not a WebAssembly component (bad header)"),
    }
}

/// Loads `spec` from its file.
pub(crate) fn load(
    runtime: &Runtime,
    linker: &Linker<StoreData>,
    cache: Option<&Cache>,
    spec: &PolicyModule,
) -> Result<Loaded> {
    let (bytes, stamp) = read_module(spec)?;
    load_bytes(runtime, linker, cache, spec, &bytes, stamp)
}

pub(crate) fn load_bytes(
    runtime: &Runtime,
    linker: &Linker<StoreData>,
    cache: Option<&Cache>,
    spec: &PolicyModule,
    bytes: &[u8],
    stamp: Option<FileStamp>,
) -> Result<Loaded> {
    let started = Instant::now();
    let name = spec.name.clone();
    let fail = |reason: String| PolicyError::Load {
        module: name.clone(),
        reason,
    };
    let sha256: [u8; 32] = Sha256::digest(bytes).into();
    if let Some(expected) = &spec.sha256
        && !expected.eq_ignore_ascii_case(&hex(&sha256))
    {
        return Err(PolicyError::DigestMismatch {
            module: spec.name.clone(),
            expected: expected.to_ascii_lowercase(),
            actual: hex(&sha256),
        });
    }
    check_header(&spec.name, bytes)?;
    let engine = &runtime.engine;
    let mut origin = Origin::Compiled;
    let mut cached = None;
    if let Some(cache) = cache {
        match cache.load(engine, &sha256) {
            Lookup::Hit(component) => cached = Some(component),
            Lookup::Miss => {}
            Lookup::Rejected(why) => {
                tracing::warn!(module = %spec.name, "policy cache: {why}; compiling the module again");
            }
        }
    }
    let component = match cached {
        Some(component) => {
            origin = Origin::Cached;
            component
        }
        None => {
            let component = Component::new(engine, bytes)
                .map_err(|error| fail(format!("it does not compile: {error:#}")))?;
            if let Some(cache) = cache {
                match component.serialize() {
                    Ok(artifact) => {
                        if let Err(error) = cache.store(&sha256, &artifact) {
                            tracing::warn!(module = %spec.name, "policy cache: {error}");
                        }
                    }
                    Err(error) => {
                        tracing::warn!(module = %spec.name, "policy cache: cannot serialize: {error:#}");
                    }
                }
            }
            component
        }
    };

    let component_type = component.component_type();
    let export_names: Vec<String> = component_type
        .exports(engine)
        .map(|(n, _)| n.to_owned())
        .collect();
    let imports: Vec<String> = component_type
        .imports(engine)
        .map(|(n, _)| n.to_owned())
        .collect();
    let exported: Vec<Hook> = Hook::ALL
        .into_iter()
        .filter(|hook| export_names.contains(&export_name(*hook)))
        .collect();
    if exported.is_empty() {
        let other_versions: BTreeSet<&str> = export_names
            .iter()
            .filter(|n| n.starts_with("wasmdock:policy/"))
            .map(String::as_str)
            .collect();
        return Err(fail(if other_versions.is_empty() {
            format!(
                "it exports no wasmdock:policy@{WIT_VERSION} hook (its exports: {}); \
                 export at least one of reconciler-match, gpu-runtime, stats-transform, task-admission",
                if export_names.is_empty() {
                    "none".to_owned()
                } else {
                    export_names.join(", ")
                }
            )
        } else {
            format!(
                "it was built for another version of the contract ({}); this host speaks wasmdock:policy@{WIT_VERSION}",
                other_versions.into_iter().collect::<Vec<_>>().join(", ")
            )
        }));
    }
    let serves = if spec.hooks.is_empty() {
        exported.clone()
    } else {
        if let Some(missing) = spec.hooks.iter().find(|hook| !exported.contains(hook)) {
            return Err(fail(format!(
                "the config enables hook {missing}, which it does not export (it exports: {})",
                exported
                    .iter()
                    .map(|h| h.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        spec.hooks.clone()
    };

    let pre = linker
        .instantiate_pre(&component)
        .map_err(|error| fail(format!("its imports cannot be satisfied: {error:#} (a policy may import wasmdock:policy/host and WASI, which grants nothing)")))?;
    let mut exports = Exports::default();
    let typed = |error: wasmtime::Error| {
        fail(format!(
            "a hook's signature does not match the contract: {error:#}"
        ))
    };
    for hook in &serves {
        match hook {
            Hook::ReconcilerMatch => {
                exports.reconciler = Some(reconciler_match::GuestIndices::new(&pre).map_err(typed)?)
            }
            Hook::GpuRuntime => {
                exports.gpu = Some(gpu_runtime::GuestIndices::new(&pre).map_err(typed)?)
            }
            Hook::StatsTransform => {
                exports.stats = Some(stats_transform::GuestIndices::new(&pre).map_err(typed)?)
            }
            Hook::TaskAdmission => {
                exports.admission = Some(task_admission::GuestIndices::new(&pre).map_err(typed)?)
            }
        }
    }
    let context = Arc::new(ModuleContext {
        name: spec.name.clone(),
        config: spec.config.clone(),
        memory_limit: usize::try_from(spec.memory_limit_mb.saturating_mul(1 << 20))
            .unwrap_or(usize::MAX),
    });
    let deadline = spec.deadline.get();
    runtime.accommodate(deadline);

    // One trial instantiation: runs any start code under the deadline and
    // type-checks every served hook against the contract.
    {
        let _permit = runtime.enter();
        let mut store = Store::new(engine, StoreData::new(Arc::clone(&context), None));
        store.limiter(|data| data.limiter());
        store.set_epoch_deadline(runtime.deadline_ticks(deadline));
        let instance = pre
            .instantiate(&mut store)
            .map_err(|error| fail(format!("it cannot be instantiated: {error:#}")))?;
        if let Some(indices) = &exports.reconciler {
            indices.load(&mut store, &instance).map_err(typed)?;
        }
        if let Some(indices) = &exports.gpu {
            indices.load(&mut store, &instance).map_err(typed)?;
        }
        if let Some(indices) = &exports.stats {
            indices.load(&mut store, &instance).map_err(typed)?;
        }
        if let Some(indices) = &exports.admission {
            indices.load(&mut store, &instance).map_err(typed)?;
        }
    }

    Ok(Loaded {
        context,
        deadline,
        sha256,
        pre,
        exports,
        exported,
        serves,
        imports,
        export_names,
        origin,
        load_time: started.elapsed(),
        stamp,
    })
}
