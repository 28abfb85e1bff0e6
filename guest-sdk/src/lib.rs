//! The wasmdock guest SDK: write policy hooks in Rust and compile them to
//! WebAssembly components for `wasm32-wasip2`.
//!
//! A policy is a type that implements one or more hook traits, exported
//! with [`export!`]. Each hook is one interface of the WIT package
//! `wasmdock:policy@0.1.0` (in `wit/` at the repository root); a component
//! exports only the hooks it implements, and the host calls only those.
//!
//! | Hook | Trait | Decides |
//! |---|---|---|
//! | `reconciler-match` | [`ReconcilerMatch`] | whether a leftover container is Nomad's |
//! | `gpu-runtime` | [`GpuRuntime`] | the runtime and device requests of a GPU task |
//! | `stats-transform` | [`StatsTransform`] | how a usage sample is rewritten, or dropped |
//! | `task-admission` | [`TaskAdmission`] | whether a task starts, and with what changes |
//!
//! ```no_run
//! use wasmdock_guest_sdk::task_admission::{Decision, Request};
//! use wasmdock_guest_sdk::{TaskAdmission, host};
//!
//! struct NoLatest;
//!
//! impl TaskAdmission for NoLatest {
//!     fn admit(request: Request) -> Decision {
//!         if request.image.ends_with(":latest") {
//!             host::warn("refusing a :latest image", &[("image", &request.image)]);
//!             return Decision::Deny(format!("{} uses the :latest tag", request.image));
//!         }
//!         Decision::Allow
//!     }
//! }
//!
//! wasmdock_guest_sdk::export!(NoLatest => [task_admission]);
//! ```
//!
//! Build with `cargo build --target wasm32-wasip2` and a `cdylib` crate
//! type; the `.wasm` file is the component the plugin loads. Every call
//! runs in a fresh instance, so statics do not carry over between calls.

#![deny(missing_docs)]

/// The WIT package this SDK targets.
pub const WIT_PACKAGE: &str = "wasmdock:policy@0.1.0";

#[doc(hidden)]
pub mod bindings;

pub mod host;
pub mod limits;

pub use bindings::base::wasmdock::policy::types::{DeviceMount, KeyValue, Mount, TaskIdentity};

/// The `reconciler-match` hook: is a container found on the engine Nomad's?
pub mod reconciler_match {
    pub use crate::bindings::reconciler::exports::wasmdock::policy::reconciler_match::{
        Container, Decision, Guest as ReconcilerMatch,
    };
}

/// The `gpu-runtime` hook: the runtime and device requests of a GPU task.
pub mod gpu_runtime {
    pub use crate::bindings::gpu::exports::wasmdock::policy::gpu_runtime::{
        Decision, DeviceRequest, Guest as GpuRuntime, Request, Selection,
    };
}

/// The `stats-transform` hook: rewrite or drop a usage sample.
pub mod stats_transform {
    pub use crate::bindings::stats::exports::wasmdock::policy::stats_transform::{
        CpuFields, CpuUsage, Guest as StatsTransform, MemoryFields, MemoryUsage, ResourceUsage,
        Sample,
    };
}

/// The `task-admission` hook: allow, deny or patch a task.
pub mod task_admission {
    pub use crate::bindings::admission::exports::wasmdock::policy::task_admission::{
        Decision, Guest as TaskAdmission, Patch, Request, Resources, Security,
    };
}

pub use gpu_runtime::GpuRuntime;
pub use reconciler_match::ReconcilerMatch;
pub use stats_transform::StatsTransform;
pub use task_admission::TaskAdmission;

/// Exports a policy type as the hooks it implements.
///
/// List each hook by its module name: `reconciler_match`, `gpu_runtime`,
/// `stats_transform`, `task_admission`. The type must implement the
/// matching trait for every hook listed, and only listed hooks are part of
/// the component.
///
/// ```ignore
/// wasmdock_guest_sdk::export!(MyPolicy => [task_admission, gpu_runtime]);
/// ```
#[macro_export]
macro_rules! export {
    ($ty:ident => [$($hook:ident),+ $(,)?]) => {
        $( $crate::__export_hook!($hook, $ty); )+
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __export_hook {
    (reconciler_match, $ty:ident) => {
        $crate::bindings::reconciler::__export_reconciler_matcher!($ty with_types_in $crate::bindings::reconciler);
    };
    (gpu_runtime, $ty:ident) => {
        $crate::bindings::gpu::__export_gpu_runtime_selector!($ty with_types_in $crate::bindings::gpu);
    };
    (stats_transform, $ty:ident) => {
        $crate::bindings::stats::__export_stats_transformer!($ty with_types_in $crate::bindings::stats);
    };
    (task_admission, $ty:ident) => {
        $crate::bindings::admission::__export_task_admitter!($ty with_types_in $crate::bindings::admission);
    };
    ($other:ident, $ty:ident) => {
        compile_error!(concat!(
            "unknown hook `",
            stringify!($other),
            "`: expected reconciler_match, gpu_runtime, stats_transform or task_admission"
        ));
    };
}
