//! The Docker engine as tests see it: the `docker` CLI run with
//! [`std::process::Command`], so what a test checks is what a person typing
//! the same command would see.

use std::ffi::OsStr;
use std::io::Write as _;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use anyhow::{Context as _, bail};

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

/// The engine's server version; panics loudly with [`NO_DOCKER`] when there
/// is no engine. Asked once per process.
pub fn require_docker() -> &'static str {
    static VERSION: OnceLock<Result<String, String>> = OnceLock::new();
    match VERSION.get_or_init(docker_server_version) {
        Ok(version) => version,
        Err(message) => panic!("{message}"),
    }
}

/// Runs `docker args…` with extra environment and optional stdin, and returns
/// its output whatever its exit status. Errs only if the CLI cannot run.
pub fn docker_raw<S: AsRef<OsStr>>(
    args: &[S],
    env: &[(&str, &OsStr)],
    stdin: Option<&[u8]>,
) -> anyhow::Result<Output> {
    let mut command = Command::new("docker");
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command
        .spawn()
        .with_context(|| format!("{NO_DOCKER} (cannot run the docker CLI)"))?;
    if let Some(input) = stdin {
        let mut pipe = child
            .stdin
            .take()
            .context("docker stdin was not captured")?;
        // A child that exits early closes the pipe; its status tells why.
        let _ = pipe.write_all(input);
    }
    child.wait_with_output().context("wait for the docker CLI")
}

/// Runs `docker args…` and returns its trimmed stdout; a non-zero exit is an
/// error carrying the command line and its stderr.
pub fn docker<S: AsRef<OsStr>>(args: &[S]) -> anyhow::Result<String> {
    docker_with(args, &[], None)
}

/// [`docker`] with extra environment (e.g. `DOCKER_CONFIG`) and stdin.
pub fn docker_with<S: AsRef<OsStr>>(
    args: &[S],
    env: &[(&str, &OsStr)],
    stdin: Option<&[u8]>,
) -> anyhow::Result<String> {
    let output = docker_raw(args, env, stdin)?;
    if !output.status.success() {
        bail!(
            "`docker {}` failed ({}): {}",
            command_line(args),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

fn command_line<S: AsRef<OsStr>>(args: &[S]) -> String {
    args.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether a failed docker command failed because the object does not exist.
pub fn is_no_such(err: &anyhow::Error) -> bool {
    let text = format!("{err:#}").to_ascii_lowercase();
    text.contains("no such image")
        || text.contains("no such container")
        || text.contains("no such object")
        || text.contains("no such volume")
        || text.contains("no such network")
}

/// The image ID (`sha256:…`) of a local image, `None` if there is none.
pub fn image_id(reference: &str) -> anyhow::Result<Option<String>> {
    match docker(&["image", "inspect", "--format", "{{.Id}}", reference]) {
        Ok(id) => Ok(Some(id)),
        Err(err) if is_no_such(&err) => Ok(None),
        Err(err) => Err(err),
    }
}

/// `docker image inspect` of a local image, `None` if there is none.
pub fn image_inspect(reference: &str) -> anyhow::Result<Option<serde_json::Value>> {
    inspect_one("image", reference)
}

/// `docker container inspect` of a container (name or id), `None` if there
/// is none.
pub fn container_inspect(name: &str) -> anyhow::Result<Option<serde_json::Value>> {
    inspect_one("container", name)
}

fn inspect_one(kind: &str, name: &str) -> anyhow::Result<Option<serde_json::Value>> {
    match docker(&[kind, "inspect", name]) {
        Ok(json) => {
            let mut list: Vec<serde_json::Value> = serde_json::from_str(&json)
                .with_context(|| format!("`docker {kind} inspect {name}` printed no JSON list"))?;
            Ok(if list.is_empty() {
                None
            } else {
                Some(list.swap_remove(0))
            })
        }
        Err(err) if is_no_such(&err) => Ok(None),
        Err(err) => Err(err),
    }
}

/// Full ids of all containers (running or not) carrying label `key=value`.
pub fn containers_with_label(key: &str, value: &str) -> anyhow::Result<Vec<String>> {
    let filter = format!("label={key}={value}");
    let out = docker(&["ps", "-aq", "--no-trunc", "--filter", &filter])?;
    Ok(out.lines().map(str::to_owned).collect())
}

/// Names of all containers (running or not) whose name contains `part`.
pub fn containers_named(part: &str) -> anyhow::Result<Vec<String>> {
    let filter = format!("name={part}");
    let out = docker(&["ps", "-a", "--format", "{{.Names}}", "--filter", &filter])?;
    Ok(out.lines().map(str::to_owned).collect())
}

/// Force-removes containers (and their anonymous volumes); missing ones
/// are fine.
pub fn remove_containers(ids: &[String]) -> anyhow::Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let mut args = vec!["rm", "-f", "-v"];
    args.extend(ids.iter().map(String::as_str));
    match docker(&args) {
        Err(err) if !is_no_such(&err) => Err(err),
        _ => Ok(()),
    }
}

/// Removes an image reference (only the tag if the image has others);
/// a missing one is fine.
pub fn remove_image(reference: &str) -> anyhow::Result<()> {
    match docker(&["image", "rm", reference]) {
        Err(err) if !is_no_such(&err) => Err(err),
        _ => Ok(()),
    }
}

/// Every local `repository:tag` whose repository starts with `prefix`.
pub fn image_references(prefix: &str) -> anyhow::Result<Vec<String>> {
    let out = docker(&["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"])?;
    Ok(out
        .lines()
        .filter(|r| r.starts_with(prefix) && !r.ends_with(":<none>"))
        .map(str::to_owned)
        .collect())
}
