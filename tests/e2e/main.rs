//! End-to-end tests against a real Docker engine. One test binary; each
//! area gets a module as the driver grows.

mod containers;
mod engine;
mod filesystem;
mod harness;
mod hostile_rpc;
mod images;
mod lifecycle;
mod logs;
mod policy;
mod stats;
