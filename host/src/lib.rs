//! wasmdock: a Nomad task driver for Docker whose policy decisions run as
//! sandboxed WebAssembly components.
//!
//! Data flows top-down through the modules:
//!
//! * [`plugin`] — the go-plugin process shell: cookie, socket, handshake,
//!   go-plugin's own services, shutdown;
//! * [`rpc`] — the Nomad gRPC edge (BasePlugin, Driver), the only place with
//!   protobuf types, translating calls into the driver core;
//! * [`config`] — strict decoding of the configs Nomad sends (cty msgpack
//!   against the hclspec schemas we publish);
//! * [`driver`] — Nomad's driver semantics, free of gRPC and engine types;
//! * [`docker`] — the engine adapter, the only place that knows bollard;
//! * [`logs`] — container output forwarded into Nomad's log FIFOs;
//! * [`stats`] — task resource usage from cgroups (or Docker's stats API);
//! * [`reconciler`] — removal of dangling containers no task tracks.
//!
//! Around them: [`cli`] (entry point), [`telemetry`] (hclog JSON on stderr),
//! [`lifecycle`] (signals and shutdown), [`confine`] (paths resolved beneath
//! the alloc dir), [`crashpoint`] (crashes on cue, for crash tests) and [`dev`] (a minimal Nomad client for trying the plugin
//! by hand). See ARCHITECTURE.md and SECURITY.md.

pub mod cli;
pub mod config;
pub mod confine;
pub mod crashpoint;
pub mod dev;
pub mod docker;
pub mod driver;
pub mod lifecycle;
pub mod logs;
pub mod plugin;
pub mod policy;
pub mod reconciler;
pub mod rpc;
pub mod stats;
pub mod telemetry;
