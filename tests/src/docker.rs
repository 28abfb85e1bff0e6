//! The Docker engine as tests see it: the `docker` CLI run with
//! [`std::process::Command`], so what a test checks is what a person typing
//! the same command would see.

use std::ffi::OsStr;
use std::io::{Read, Write as _};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// What to tell a person whose machine has no reachable Docker engine.
pub const NO_DOCKER: &str = "no Docker engine is reachable: run scripts/test.sh as root \
(it installs docker.io and starts dockerd), or start dockerd yourself and make sure \
`docker info` works for this user";

/// The server version of the reachable Docker engine, or a message saying
/// why there is none and how to fix that.
pub fn docker_server_version() -> Result<String, String> {
    let output = docker_raw(&["version", "--format", "{{.Server.Version}}"], &[], None)
        .map_err(|err| format!("{NO_DOCKER} ({err:#})"))?;
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

/// How long one docker CLI call may take. Loading a test image, pushing it
/// to the loopback registry or force-removing a container takes seconds; an
/// engine that has not answered for this long is wedged, and the test must
/// fail saying so instead of hanging the whole run.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(240);

/// Why the engine was found wedged, once a call has timed out.
static WEDGED: OnceLock<String> = OnceLock::new();

/// Runs `docker args…` with extra environment and optional stdin, and returns
/// its output whatever its exit status. Errs if the CLI cannot run, or does
/// not finish within [`CLI_TIMEOUT`] (then it is killed, and the engine is
/// asked for a stack dump for the post-mortem).
pub fn docker_raw<S: AsRef<OsStr>>(
    args: &[S],
    env: &[(&str, &OsStr)],
    stdin: Option<&[u8]>,
) -> anyhow::Result<Output> {
    // Once one call found the engine wedged, the rest of this test process
    // fails at once instead of waiting out the timeout call after call
    // (a test's cleanup alone makes hundreds).
    if let Some(wedged) = WEDGED.get() {
        bail!("`docker {}` not run: {wedged}", command_line(args));
    }
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
        let input = input.to_vec();
        // A child that exits early closes the pipe; its status tells why.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let started = Instant::now();
    let mut pause = Duration::from_millis(1);
    let status = loop {
        if let Some(status) = child.try_wait().context("wait for the docker CLI")? {
            break status;
        }
        if started.elapsed() >= CLI_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            let wedged = WEDGED.get_or_init(|| {
                format!(
                    "`docker {}` did not finish within {CLI_TIMEOUT:?} and was killed: the Docker engine is wedged or overloaded ({})",
                    command_line(args),
                    dump_engine_stacks()
                )
            });
            bail!("{wedged}");
        }
        std::thread::park_timeout(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    let collect = |reader: std::thread::JoinHandle<Vec<u8>>| reader.join().unwrap_or_default();
    Ok(Output {
        status,
        stdout: collect(stdout),
        stderr: collect(stderr),
    })
}

/// Reads a child's pipe to its end on a thread of its own.
fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// Asks every dockerd and containerd on the machine for a dump of its
/// goroutine stacks (SIGUSR1: dockerd writes them to a file it names in its
/// log, containerd into its log), and says so.
fn dump_engine_stacks() -> String {
    let mut asked = Vec::new();
    for daemon in ["dockerd", "containerd"] {
        for pid in crate::bench::pids_of(daemon) {
            let Ok(pid_i32) = i32::try_from(pid) else {
                continue;
            };
            let pid = nix::unistd::Pid::from_raw(pid_i32);
            if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR1).is_ok() {
                asked.push(format!("{daemon} {pid}"));
            }
        }
    }
    if asked.is_empty() {
        "no dockerd or containerd process found to ask for a stack dump".to_owned()
    } else {
        format!(
            "stack dumps asked of {} with SIGUSR1: see their logs, e.g. /tmp/wasmdock-dockerd.log",
            asked.join(", ")
        )
    }
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
