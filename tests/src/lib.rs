//! Harness for the end-to-end tests: they drive the real plugin binary
//! against a real Docker engine. A missing engine is a loud failure that
//! says how to get one, never a skipped test.

use std::process::Command;

/// What to tell a person whose machine has no reachable Docker engine.
pub const NO_DOCKER: &str = "no Docker engine is reachable: run scripts/test.sh as root \
(it installs docker.io and starts dockerd), or start dockerd yourself and make sure \
`docker info` works for this user";

/// The server version of the reachable Docker engine, or a message saying
/// why there is none and how to fix that.
pub fn docker_server_version() -> Result<String, String> {
    let output = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .map_err(|err| format!("{NO_DOCKER} (cannot run the docker CLI: {err})"))?;
    if !output.status.success() {
        return Err(format!(
            "{NO_DOCKER} ({})",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}
