//! `dev tour`: the demo's scripted walk through the plugin with policies in
//! action, over the real protocol and a real Docker engine.
//!
//! One plugin, launched like a Nomad agent launches it, with two example
//! policy guests (an image allow-list and a GPU runtime chooser) and the
//! dangling-container reconciler on, then four steps:
//!
//! 1. a task that logs and burns some CPU: its lines and stats stream;
//! 2. a task given a GPU (device env as Nomad's NVIDIA device plugin sets
//!    it): the guest chooses the `nvidia` runtime (the plugin's own rule is
//!    set to `runc`, so the runtime shows who decided); the first task kept
//!    the engine's default;
//! 3. an image outside the allow-list: refused with the guest's reason;
//! 4. a container labelled as Nomad's that no task tracks: removed by the
//!    reconciler.
//!
//! Each step checks what it shows and fails with what went wrong; the
//! [`TourReport`] carries the evidence, which the project's tests assert.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::json;

use super::alloc::uuid_v4;
use super::client::{Console, Event, Session, SessionOptions, StartFailure, TaskOutcome};
use super::launcher;
use super::taskfile::TaskFile;
use crate::reconciler::TEST_TIMING_ENV;
use crate::reconciler::plan::ALLOC_ID_LABEL;

/// The guests the tour loads, as built by `make build-guests`.
pub const GUESTS: [&str; 2] = ["image_allowlist.wasm", "gpu_runtime.wasm"];
/// An image the allow-list refuses.
pub const DENIED_IMAGE: &str = "registry.example.com/tools/miner:1.0";
/// Lines the logging task writes to stdout.
pub const LOG_LINES: usize = 4;
/// The reconciler's pace for the tour: its plugin-config minimum is
/// Nomad's one-minute grace, too long to watch.
const RECONCILER_TIMING: &str = "period=1s,creation_grace=2s";
/// How long the reconciler gets to remove the dangling container.
const DANGLING_TIMEOUT: Duration = Duration::from_secs(30);

/// What the tour needs.
#[derive(Debug, Clone)]
pub struct TourOptions {
    /// The plugin binary.
    pub binary: PathBuf,
    /// A local image with busybox (`sh`, `sleep`) on its PATH.
    pub image: String,
    /// Where the guests' `.wasm` files are.
    pub guests: PathBuf,
    /// Output.
    pub console: Console,
}

/// The evidence of each step.
#[derive(Debug, Clone)]
pub struct TourReport {
    /// Step 1: the logging and CPU-burning task.
    pub logging: TaskOutcome,
    /// Step 1: the runtime its container got.
    pub plain_runtime: String,
    /// Step 2: the GPU task.
    pub gpu: TaskOutcome,
    /// Step 2: the runtime its container got.
    pub gpu_runtime: String,
    /// Step 2: the gpu-runtime policy's task event.
    pub gpu_event: Event,
    /// Step 3: the refused start.
    pub denied: StartFailure,
    /// Step 4: how long the dangling container lived once made.
    pub dangling_removed_after: Duration,
    /// Step 4: the plugin's log line about removing it (hclog JSON).
    pub dangling_log: String,
    /// The whole tour, launch to shutdown.
    pub took: Duration,
}

/// Runs the tour.
pub async fn run(mut options: TourOptions) -> anyhow::Result<TourReport> {
    let console = options.console;
    // The plugin takes absolute module paths only.
    options.guests = std::path::absolute(&options.guests)
        .with_context(|| format!("cannot resolve {}", options.guests.display()))?;
    let started = Instant::now();
    preflight(&options).await?;
    let run_dir = tempfile::Builder::new()
        .prefix("wasmdock-tour-")
        .tempdir()
        .context("cannot make a run dir")?;
    let config = plugin_config(&options, run_dir.path());
    console.step(&format!(
        "[0/4] the plugin config: {}",
        serde_json::to_string(&config).unwrap_or_default()
    ));
    let session = Session::start(SessionOptions {
        binary: options.binary.clone(),
        args: Vec::new(),
        env: vec![(TEST_TIMING_ENV.to_owned(), RECONCILER_TIMING.to_owned())],
        config,
        config_label: "the tour's plugin config".to_owned(),
        console,
        stats_interval: Duration::from_secs(1),
    })
    .await?;
    let result = steps(&session, &options).await;
    let shutdown = session.shutdown().await;
    let mut report = result?;
    shutdown?;
    report.took = started.elapsed();
    console.step(&format!(
        "tour complete in {:.1} s: logs and stats streamed, the guest chose the GPU runtime, \
         the allow-list refused an image, the reconciler removed a dangling container",
        report.took.as_secs_f64()
    ));
    Ok(report)
}

async fn steps(session: &Session, options: &TourOptions) -> anyhow::Result<TourReport> {
    let console = options.console;
    let runtimes = session.runtimes();
    if !runtimes.iter().any(|r| r == "nvidia") {
        bail!(
            "the Docker engine has no runtime named `nvidia` (it has: {}). The tour's GPU step \
             needs one; no GPU is used, an alias of runc will do: start dockerd with \
             `--add-runtime nvidia=$(command -v runc)` (scripts/demo.sh does when it starts \
             dockerd itself) or add it under \"runtimes\" in /etc/docker/daemon.json",
            runtimes.join(", ")
        );
    }

    console.step("[1/4] a task that logs and burns some CPU (logs and stats stream below)");
    let mut logger = TaskFile::new(
        "logger",
        json!({
            "image": options.image,
            "command": "/bin/sh",
            "args": ["-c", LOGGER_SCRIPT],
        }),
    );
    logger.cpu_mhz = 500;
    logger.memory_mb = 64;
    let running = start(session, &logger).await?;
    let plain_runtime = runtime_of(&running.container_name()).await;
    let logging = session.finish(running, std::future::pending()).await?;
    let plain_runtime = plain_runtime?;
    check_logging(&logging)?;
    console.detail(&format!(
        "✓ {} stdout lines and {} stats sample(s) (peak cpu {:.0}%), exit code 0; runtime {plain_runtime}",
        LOG_LINES,
        logging.samples.len(),
        peak_cpu(&logging)
    ));

    console.step("[2/4] a task given a GPU: the gpu-runtime guest chooses its runtime");
    let mut gpu_task = TaskFile::new(
        "gpu",
        json!({
            "image": options.image,
            "command": "/bin/sh",
            "args": ["-c", "echo \"my GPUs: $NVIDIA_VISIBLE_DEVICES\"; sleep 1"],
        }),
    );
    gpu_task.gpus = 1;
    gpu_task.memory_mb = 64;
    let running = start(session, &gpu_task).await?;
    let gpu_runtime = runtime_of(&running.container_name()).await;
    let gpu = session.finish(running, std::future::pending()).await?;
    let gpu_runtime = gpu_runtime?;
    let gpu_event = gpu
        .events
        .iter()
        .find(|e| e.annotations.get("hook").map(String::as_str) == Some("gpu-runtime"))
        .cloned()
        .context("no task event from the gpu-runtime policy")?;
    if gpu_runtime != "nvidia" || plain_runtime != "runc" {
        bail!(
            "runtimes: the GPU task got {gpu_runtime:?} (want \"nvidia\", the guest's choice), \
             the plain task {plain_runtime:?} (want \"runc\")"
        );
    }
    if gpu.exit_code != 0 || !String::from_utf8_lossy(&gpu.stdout).contains("my GPUs: GPU-") {
        bail!(
            "the GPU task did not see its device env (exit {}, stdout {:?})",
            gpu.exit_code,
            String::from_utf8_lossy(&gpu.stdout)
        );
    }
    console.detail(&format!(
        "✓ runtime {gpu_runtime} (the plugin's own nvidia_runtime is runc; the guest decided), \
         the plain task kept {plain_runtime}; event: {}",
        gpu_event.message
    ));

    console.step(&format!(
        "[3/4] a task with an image outside the allow-list ({DENIED_IMAGE})"
    ));
    let mut denied_task = TaskFile::new("denied", json!({ "image": DENIED_IMAGE }));
    denied_task.memory_mb = 64;
    let denied = match session.start_task(&denied_task).await? {
        Ok(running) => {
            let _ = session
                .finish(running, async { "refused".to_owned() })
                .await;
            bail!("the allow-list admitted {DENIED_IMAGE}");
        }
        Err(failure) => failure,
    };
    if !denied.message.contains("denied the task") || denied.recoverable != Some(false) {
        bail!(
            "the start failed, but not as an admission denial: {} (recoverable {:?})",
            denied.message,
            denied.recoverable
        );
    }
    console.detail("✓ refused before any pull, not recoverable, with the guest's reason");

    console.step("[4/4] a dangling container: Nomad's label, tracked by no task");
    let (dangling_removed_after, name) = dangling(options).await?;
    let dangling_log = session
        .plugin_log()
        .into_iter()
        .find(|line| line.contains("removed dangling container") && line.contains(&name))
        .context("the container is gone, but the plugin did not log removing it")?;
    console.detail(&launcher::pretty_log_line(&dangling_log));
    console.detail(&format!(
        "✓ the reconciler removed it by its label rule, {:.1} s after it was made",
        dangling_removed_after.as_secs_f64()
    ));
    Ok(TourReport {
        logging,
        plain_runtime,
        gpu,
        gpu_runtime,
        gpu_event,
        denied,
        dangling_removed_after,
        dangling_log,
        took: Duration::ZERO,
    })
}

/// Four lines a second apart on stdout, one on stderr, and a busy loop
/// beside them the whole time.
const LOGGER_SCRIPT: &str = "\
( while :; do :; done ) & burner=$!
for i in 1 2 3 4; do echo \"line $i of 4 from the logger task\"; sleep 1; done
echo 'and one line on stderr' >&2
kill $burner";

fn check_logging(outcome: &TaskOutcome) -> anyhow::Result<()> {
    let stdout = String::from_utf8_lossy(&outcome.stdout);
    let lines = stdout
        .lines()
        .filter(|l| l.contains("from the logger task"))
        .count();
    let stderr = String::from_utf8_lossy(&outcome.stderr);
    if outcome.exit_code != 0 || lines != LOG_LINES || !stderr.contains("on stderr") {
        bail!(
            "the logger task: exit {}, {lines} of {LOG_LINES} stdout lines, stderr {stderr:?}",
            outcome.exit_code
        );
    }
    if peak_cpu(outcome) <= 0.0 {
        bail!(
            "no stats sample showed CPU use ({} sample(s))",
            outcome.samples.len()
        );
    }
    Ok(())
}

fn peak_cpu(outcome: &TaskOutcome) -> f64 {
    outcome
        .samples
        .iter()
        .map(|s| s.cpu_percent)
        .fold(0.0, f64::max)
}

async fn start(session: &Session, task: &TaskFile) -> anyhow::Result<super::client::RunningTask> {
    match session.start_task(task).await? {
        Ok(running) => Ok(running),
        Err(failure) => bail!("StartTask {} failed: {}", task.name, failure.message),
    }
}

fn plugin_config(options: &TourOptions, run_dir: &Path) -> serde_json::Value {
    let guest = |name: &str| options.guests.join(name).to_string_lossy().into_owned();
    json!({
        "run_dir": run_dir.join("run").to_string_lossy(),
        // The plugin's own GPU rule would pick runc: the guest's choice shows.
        "nvidia_runtime": "runc",
        "allow_runtimes": ["runc", "nvidia"],
        "gc": { "image": false, "dangling_containers": { "enabled": true } },
        "policy": { "module": [
            {
                "name": "allowlist",
                "path": guest(GUESTS[0]),
                "hooks": ["task-admission"],
                "failure_policy": "fail",
                "config": { "allowed": allow_pattern(&options.image) },
            },
            {
                "name": "gpu",
                "path": guest(GUESTS[1]),
                "hooks": ["gpu-runtime"],
                "config": { "mode": "runtime", "runtime": "nvidia" },
            },
        ] },
    })
}

/// `repo:tag` → `repo:*` (every tag of the demo image's repository).
fn allow_pattern(image: &str) -> String {
    let repository = match image.rfind(':') {
        Some(colon) if !image[colon..].contains('/') => &image[..colon],
        _ => image,
    };
    format!("{repository}:*")
}

async fn preflight(options: &TourOptions) -> anyhow::Result<()> {
    for guest in GUESTS {
        let path = options.guests.join(guest);
        if !path.is_file() {
            bail!(
                "{} is missing: build the example guests first (make build-guests)",
                path.display()
            );
        }
    }
    docker(&["version", "--format", "{{.Server.Version}}"])
        .await
        .context("no Docker engine answers (scripts/demo.sh starts one when run as root)")?;
    docker(&["image", "inspect", "--format", "{{.Id}}", &options.image])
        .await
        .with_context(|| {
            format!(
                "the image {} is not on the engine (scripts/demo.sh builds wasmdock-demo:1)",
                options.image
            )
        })?;
    let label = format!("label={ALLOC_ID_LABEL}");
    let running = docker(&["ps", "-q", "--filter", &label]).await?;
    if !running.trim().is_empty() {
        bail!(
            "the engine runs containers labelled {ALLOC_ID_LABEL} ({}); the tour's reconciler \
             would remove them (they may be a real Nomad client's). Run the tour on an engine \
             without them.",
            running.split_whitespace().collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}

/// Makes a container the way a crashed client would leave one, and waits
/// for the reconciler to remove it.
async fn dangling(options: &TourOptions) -> anyhow::Result<(Duration, String)> {
    let alloc_id = uuid_v4();
    let name = format!("web-{alloc_id}");
    let label = format!("{ALLOC_ID_LABEL}={alloc_id}");
    let id = docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        &label,
        &options.image,
        "sleep",
        "300",
    ])
    .await?;
    let made = Instant::now();
    options.console.detail(&format!(
        "made {name} ({}) with label {label}",
        id.trim().get(..12).unwrap_or(id.trim())
    ));
    while made.elapsed() < DANGLING_TIMEOUT {
        if docker(&["inspect", "--format", "{{.Id}}", &name])
            .await
            .is_err()
        {
            return Ok((made.elapsed(), name));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = docker(&["rm", "-f", &name]).await;
    bail!(
        "the reconciler did not remove {name} within {} s",
        DANGLING_TIMEOUT.as_secs()
    )
}

/// The runtime of a container, from the engine.
async fn runtime_of(container: &str) -> anyhow::Result<String> {
    Ok(
        docker(&["inspect", "--format", "{{.HostConfig.Runtime}}", container])
            .await?
            .trim()
            .to_owned(),
    )
}

/// The `docker` command line: the tour plays the part of someone else on
/// the node (the dangling container's maker, an operator inspecting).
async fn docker(args: &[&str]) -> anyhow::Result<String> {
    let output = tokio::process::Command::new("docker")
        .args(args)
        .output()
        .await
        .context("cannot run `docker` (install the Docker CLI)")?;
    if !output.status.success() {
        bail!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allow_pattern_covers_every_tag_of_the_image() {
        assert_eq!(allow_pattern("wasmdock-demo:1"), "wasmdock-demo:*");
        assert_eq!(
            allow_pattern("registry.local:5000/demo:2"),
            "registry.local:5000/demo:*"
        );
        assert_eq!(
            allow_pattern("registry.local:5000/demo"),
            "registry.local:5000/demo:*"
        );
    }

    #[test]
    fn the_config_loads_both_guests_and_the_reconciler() {
        let options = TourOptions {
            binary: PathBuf::from("/bin/true"),
            image: "wasmdock-demo:1".to_owned(),
            guests: PathBuf::from("/g"),
            console: Console::default(),
        };
        let config = plugin_config(&options, Path::new("/r"));
        assert_eq!(
            config["policy"]["module"][0]["path"],
            "/g/image_allowlist.wasm"
        );
        assert_eq!(config["policy"]["module"][1]["config"]["runtime"], "nvidia");
        assert_eq!(config["gc"]["dangling_containers"]["enabled"], true);
        assert_eq!(config["run_dir"], "/r/run");
    }
}
