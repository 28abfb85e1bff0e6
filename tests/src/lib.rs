//! Harness for the end-to-end tests: they drive the real plugin binary
//! against a real Docker engine. A missing engine is a loud failure that
//! says how to get one, never a skipped test.
//!
//! * [`docker`] — the `docker` CLI for tests (run, inspect, find, remove);
//! * [`images`] — local test images made from busybox with `docker import`;
//! * [`registry`] — a real registry on loopback (optionally with basic auth)
//!   and a black-hole registry that never answers;
//! * [`plugin`] — the plugin binary built, launched like Nomad does, and
//!   configured: [`plugin::PluginUnderTest`];
//! * [`guests`] — the policy guests, built from source for wasm32-wasip2;
//! * [`task`] — the `TaskConfig` Nomad would send, with a real alloc dir;
//! * [`cleanup`] — a guard that removes what a test created;
//! * [`calls`] — the driver calls tests make most (start, wait, destroy);
//! * [`raw_grpc`] — raw bytes to any gRPC method, and the protobuf wire
//!   format for building hostile requests;
//! * [`figures`] — figures a test measured, kept where a passing run
//!   shows them ([`figure!`]);
//! * [`bench`] — what the benches share: /proc accounting, Markdown cells
//!   and the per-bench sections of `BENCHMARKS.md`.
//!
//! Everything a test creates carries the process's [`run_id`].

pub mod bench;
pub mod calls;
pub mod cleanup;
pub mod docker;
pub mod figures;
pub mod guests;
pub mod ids;
pub mod images;
pub mod plugin;
pub mod private_engine;
pub mod raw_grpc;
pub mod registry;
pub mod task;

pub use cleanup::Cleanup;
pub use docker::{NO_DOCKER, docker_server_version, require_docker};
pub use ids::run_id;
pub use plugin::PluginUnderTest;
pub use task::{Alloc, Task, TaskBuilder};
