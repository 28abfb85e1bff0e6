//! The wasmdock guest SDK: write policy hooks in Rust and compile them to
//! WebAssembly components (`wasm32-wasip2`).
//!
//! The WIT contract lives in `wit/` at the repository root. This crate will
//! hide the generated bindings behind a `Policy` trait; today it carries the
//! contract's identity so guests and host can agree on it.

#![deny(missing_docs)]

/// The WIT package this SDK targets.
pub const WIT_PACKAGE: &str = "wasmdock:policy@0.1.0";
