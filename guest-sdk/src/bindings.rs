//! Generated bindings, one world per hook so that a component carries only
//! the hooks it exports. The shared `types` and `host` interfaces are
//! generated once, in `base`, and reused by every hook world.

#![allow(
    missing_docs,
    reason = "generated code; the public items are re-exported with WIT docs"
)]

/// The imports every policy has: `types` and `host`.
pub mod base {
    wit_bindgen::generate!({
        path: "../wit",
        world: "wasmdock:policy/policy-base",
        generate_all,
    });
}

/// The `reconciler-match` hook.
pub mod reconciler {
    wit_bindgen::generate!({
        path: "../wit",
        world: "wasmdock:policy/reconciler-matcher",
        with: {
            "wasmdock:policy/types@0.1.0": crate::bindings::base::wasmdock::policy::types,
            "wasmdock:policy/host@0.1.0": crate::bindings::base::wasmdock::policy::host,
        },
        pub_export_macro: true,
        export_macro_name: "__export_reconciler_matcher",
    });
}

/// The `gpu-runtime` hook.
pub mod gpu {
    wit_bindgen::generate!({
        path: "../wit",
        world: "wasmdock:policy/gpu-runtime-selector",
        with: {
            "wasmdock:policy/types@0.1.0": crate::bindings::base::wasmdock::policy::types,
            "wasmdock:policy/host@0.1.0": crate::bindings::base::wasmdock::policy::host,
        },
        pub_export_macro: true,
        export_macro_name: "__export_gpu_runtime_selector",
    });
}

/// The `stats-transform` hook.
pub mod stats {
    wit_bindgen::generate!({
        path: "../wit",
        world: "wasmdock:policy/stats-transformer",
        with: {
            "wasmdock:policy/types@0.1.0": crate::bindings::base::wasmdock::policy::types,
            "wasmdock:policy/host@0.1.0": crate::bindings::base::wasmdock::policy::host,
        },
        pub_export_macro: true,
        export_macro_name: "__export_stats_transformer",
    });
}

/// The `task-admission` hook.
pub mod admission {
    wit_bindgen::generate!({
        path: "../wit",
        world: "wasmdock:policy/task-admitter",
        with: {
            "wasmdock:policy/types@0.1.0": crate::bindings::base::wasmdock::policy::types,
            "wasmdock:policy/host@0.1.0": crate::bindings::base::wasmdock::policy::host,
        },
        pub_export_macro: true,
        export_macro_name: "__export_task_admitter",
    });
}
