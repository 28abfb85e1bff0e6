//! Host-side bindings generated from `wit/policy.wit`: the `policy` world,
//! whose exports are looked up one interface at a time so a component may
//! export any subset of the hooks.

#![allow(missing_docs, unreachable_pub, reason = "generated code")]
#![allow(clippy::all, reason = "generated code")]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "wasmdock:policy/policy",
});

pub(crate) use exports::wasmdock::policy::{
    gpu_runtime, reconciler_match, stats_transform, task_admission,
};
pub(crate) use wasmdock::policy::{host, types};
