//! Policy guests built from source: every crate under `examples/guests/`
//! and `tests/guests/`, compiled for `wasm32-wasip2` once per test process
//! (cargo's lock and freshness checks make this cheap when nothing
//! changed). A failed build panics with cargo's errors.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, bail};

use crate::plugin::{target_dir, workspace_root};

/// The example guests (examples/guests/*).
pub const EXAMPLES: [&str; 5] = [
    "hello-policy",
    "gpu-runtime",
    "env-mount-matcher",
    "stats-tagger",
    "image-allowlist",
];

/// Guests that exist to attack the host (tests/guests/*).
pub const HOSTILE: [&str; 3] = ["hostile", "not-a-policy", "counter"];

fn build_all() -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(&cargo);
    command
        .args(["build", "--target", "wasm32-wasip2", "--profile", "guest"])
        .current_dir(workspace_root());
    for name in EXAMPLES.iter().chain(HOSTILE.iter()) {
        command.args(["-p", name]);
    }
    let output = command
        .output()
        .with_context(|| format!("cannot run {}", cargo.to_string_lossy()))?;
    if !output.status.success() {
        bail!(
            "building the guests failed ({}); is the wasm32-wasip2 target installed (rustup target add wasm32-wasip2)?\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// The component of guest crate `name` (e.g. `image-allowlist`), built on
/// first use.
pub fn guest(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(message) = BUILT.get_or_init(|| build_all().map_err(|e| format!("{e:#}"))) {
        panic!("cannot build the policy guests: {message}");
    }
    let file = if name == "not-a-policy" {
        format!("{name}.wasm")
    } else {
        format!("{}.wasm", name.replace('-', "_"))
    };
    let path = target_dir().join("wasm32-wasip2/guest").join(file);
    assert!(
        path.is_file(),
        "guest {name} was built but {} is missing",
        path.display()
    );
    path
}

/// Copies a guest to `dir/<file>` (for tests that change module files).
pub fn copy_guest(name: &str, dir: &Path, file: &str) -> PathBuf {
    let target = dir.join(file);
    std::fs::copy(guest(name), &target).expect("copy the guest");
    target
}
