//! Log forwarding benchmark: wasmdock's forwarder (container → Docker logs
//! API → the task's stdout FIFO) against `docker logs -f` (the path Nomad's
//! docker_logger uses), on the same container command, alternating in one
//! run; then the plugin's memory and helper processes per forwarding task.
//!
//! Run with `make bench` (every bench) or `cargo bench -p wasmdock-e2e
//! --bench logs` (this one). It prints a Markdown section and writes it
//! into `BENCHMARKS.md` between the `bench:logs` markers, leaving the other
//! benches' sections alone. Unless `WASMDOCK_E2E_PLUGIN` names a binary, it
//! builds the plugin with `--release` and re-runs itself with that variable
//! set, so the plugin measured is an optimised build (see
//! `wasmdock_e2e::bench`).

use std::fmt::Write as _;
use std::fs::File;
use std::io::Read as _;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::json;
use wasmdock_e2e::bench::{
    self, DaemonCpu, all_pids, cpu_seconds, date, met, stat_fields, stats, vm_rss_kib,
};
use wasmdock_e2e::calls::{destroy, plugin, start, wait};
use wasmdock_e2e::images::BUSYBOX_1;
use wasmdock_e2e::{Cleanup, PluginUnderTest, Task, TaskBuilder, run_id};

/// Bytes the container writes to stdout.
const WRITTEN: u64 = 50_000_000;
/// Measured runs per path (after one warm-up of each).
const RUNS: usize = 3;
/// Long-running tasks for the memory measurement.
const MEMORY_TASKS: usize = 20;
/// Goals.
const THROUGHPUT_GOAL: f64 = 2.0;
const MEMORY_GOAL_KIB: f64 = 64.0;
/// Nomad's helpers per task and docker_logger's RSS (as reported in hashicorp/nomad#6900 and PR #14875).
const NOMAD_HELPERS: usize = 2;

fn script() -> String {
    format!(
        "yes 0123456789012345678901234567890123456789012345678901234567890123456789 | head -c {WRITTEN}"
    )
}

fn main() -> ExitCode {
    bench::main("logs", bench)
}

/// One measured run of one path.
#[derive(Debug, Clone, Copy)]
struct Run {
    delivered: u64,
    wall: Duration,
    dockerd_cpu: f64,
    containerd_cpu: f64,
    /// CPU of the forwarding process: the plugin, or the `docker logs` CLI.
    forwarder_cpu: f64,
}

impl Run {
    fn mb_per_s(&self) -> f64 {
        self.delivered as f64 / 1e6 / self.wall.as_secs_f64()
    }
    fn dockerd_cpu_per_mb(&self) -> f64 {
        self.dockerd_cpu / (self.delivered.max(1) as f64 / 1e6)
    }
}

/// Processes whose parent is `parent`, except the node's log FIFO holder
/// (one per node, counted apart).
fn children_of(parent: u32) -> usize {
    all_pids()
        .into_iter()
        .filter(|&pid| stat_fields(pid).get(1).and_then(|p| p.parse::<u32>().ok()) == Some(parent))
        .filter(|&pid| !is_log_holder(pid))
        .count()
}

fn is_log_holder(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.split(|b| *b == 0).any(|arg| arg == b"log-holder"))
}

/// Reads a FIFO like logmon (open, read to EOF, count, keep nothing);
/// returns the byte count and when EOF came.
fn count_fifo(path: &Path) -> JoinHandle<(u64, Instant)> {
    let path = path.to_owned();
    std::thread::spawn(move || {
        let mut total = 0u64;
        if let Ok(mut file) = File::open(&path) {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n @ 1..) = file.read(&mut buf) {
                total += n as u64;
            }
        }
        (total, Instant::now())
    })
}

fn throughput_task(index: usize) -> Task {
    TaskBuilder::new(
        &format!("bench-logs-{index}"),
        json!({ "image": BUSYBOX_1, "command": "sh", "args": ["-c", script()] }),
    )
    .log_fifos()
    .build()
    .expect("task dir")
}

async fn wasmdock_run(plugin: &PluginUnderTest, index: usize) -> Run {
    let task = throughput_task(index);
    let cleanup = Cleanup::new();
    cleanup.alloc(task.alloc_id());
    let stdout = count_fifo(task.stdout_path());
    let stderr = count_fifo(task.stderr_path());
    let plugin_pid = plugin.pid().expect("plugin running");
    let (plugin_before, before) = (cpu_seconds(plugin_pid), DaemonCpu::now());
    let started = Instant::now();
    start(plugin, &task).await;
    let (delivered, eof) = tokio::task::spawn_blocking(move || stdout.join().expect("reader"))
        .await
        .expect("join");
    let (dockerd_cpu, containerd_cpu) = DaemonCpu::now().since(before);
    let forwarder_cpu = cpu_seconds(plugin_pid) - plugin_before;
    let result = wait(plugin, &task).await.result.expect("a result");
    assert_eq!(result.exit_code, 0, "the writer container failed");
    destroy(plugin, &task, true).await;
    let _ = tokio::task::spawn_blocking(move || stderr.join()).await;
    Run {
        delivered,
        wall: eof - started,
        dockerd_cpu,
        containerd_cpu,
        forwarder_cpu,
    }
}

fn baseline_run(index: usize) -> Run {
    let cleanup = Cleanup::new();
    let name = format!("bench-logs-baseline-{}-{index}", run_id());
    cleanup.container(&name);
    let before = DaemonCpu::now();
    let started = Instant::now();
    let id = wasmdock_e2e::docker::docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--log-driver",
        "json-file",
        "--log-opt",
        "max-file=2",
        "--log-opt",
        "max-size=2m",
        BUSYBOX_1,
        "sh",
        "-c",
        &script(),
    ])
    .expect("docker run");
    let mut child = Command::new("docker")
        .args(["logs", "-f", &id])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker logs -f");
    let mut out = child.stdout.take().expect("piped stdout");
    let mut delivered = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = out.read(&mut buf) {
        delivered += n as u64;
    }
    let eof = Instant::now();
    let (dockerd_cpu, containerd_cpu) = DaemonCpu::now().since(before);
    // Still a zombie until waited for: its stat keeps its CPU times.
    let forwarder_cpu = cpu_seconds(child.id());
    let _ = child.wait();
    Run {
        delivered,
        wall: eof - started,
        dockerd_cpu,
        containerd_cpu,
        forwarder_cpu,
    }
}

struct Memory {
    before_kib: u64,
    after_kib: u64,
    children_before: usize,
    children_after: usize,
    /// The log holder's VmRSS while it held every task's FIFOs, 0 if none ran.
    holder_kib: u64,
}

async fn memory(plugin: &PluginUnderTest) -> Memory {
    let pid = plugin.pid().expect("plugin running");
    let tasks: Vec<Task> = (0..MEMORY_TASKS)
        .map(|i| {
            TaskBuilder::new(
                &format!("bench-mem-{i}"),
                json!({ "image": BUSYBOX_1, "command": "sleep", "args": ["1000"] }),
            )
            .log_fifos()
            .build()
            .expect("task dir")
        })
        .collect();
    let cleanup = Cleanup::new();
    for task in &tasks {
        cleanup.alloc(task.alloc_id());
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before_kib = vm_rss_kib(pid);
    let children_before = children_of(pid);
    let mut readers = Vec::new();
    for task in &tasks {
        readers.push(count_fifo(task.stdout_path()));
        readers.push(count_fifo(task.stderr_path()));
        start(plugin, task).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after_kib = vm_rss_kib(pid);
    let children_after = children_of(pid);
    let holder_kib = match plugin.log_holder().status().await {
        Ok(status) => vm_rss_kib(status.pid),
        Err(_) => 0,
    };
    for task in &tasks {
        destroy(plugin, task, true).await;
    }
    let _ = tokio::task::spawn_blocking(move || {
        for reader in readers {
            let _ = reader.join();
        }
    })
    .await;
    Memory {
        before_kib,
        after_kib,
        children_before,
        children_after,
        holder_kib,
    }
}

async fn bench() -> String {
    let plugin = plugin(json!({})).await;
    eprintln!("warm-up…");
    let _ = wasmdock_run(&plugin, 0).await;
    let _ = tokio::task::spawn_blocking(|| baseline_run(0)).await;
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for i in 1..=RUNS {
        eprintln!("run {i}/{RUNS}: wasmdock");
        ours.push(wasmdock_run(&plugin, i).await);
        eprintln!("run {i}/{RUNS}: docker logs -f");
        theirs.push(
            tokio::task::spawn_blocking(move || baseline_run(i))
                .await
                .expect("baseline"),
        );
    }
    eprintln!("memory: {MEMORY_TASKS} forwarding tasks");
    let mem = memory(&plugin).await;
    render(&ours, &theirs, &mem)
}

fn render(ours: &[Run], theirs: &[Run], mem: &Memory) -> String {
    let mut out = String::new();
    let (our_mbps, _, _) = stats(ours.iter().map(Run::mb_per_s));
    let (their_mbps, _, _) = stats(theirs.iter().map(Run::mb_per_s));
    let (our_cpu, _, _) = stats(ours.iter().map(Run::dockerd_cpu_per_mb));
    let (their_cpu, _, _) = stats(theirs.iter().map(Run::dockerd_cpu_per_mb));
    let ratio = our_mbps / their_mbps;
    let per_task_kib = (mem.after_kib as f64 - mem.before_kib as f64) / MEMORY_TASKS as f64;
    let helpers = (mem.children_after as f64 - mem.children_before as f64) / MEMORY_TASKS as f64;
    let lossy = |runs: &[Run]| runs.iter().filter(|r| r.delivered < WRITTEN).count();
    let w = |out: &mut String, line: String| {
        let _ = writeln!(out, "{line}");
    };

    w(&mut out, "## Log forwarding".into());
    w(&mut out, String::new());
    w(
        &mut out,
        "Produced by `cargo bench -p wasmdock-e2e --bench logs` (part of `make bench`).".into(),
    );
    w(&mut out, String::new());
    w(&mut out, format!("- Date: {}", date()));
    w(
        &mut out,
        "- Plugin: release build, default config (`json-file`, `max-file=2`, `max-size=2m`)".into(),
    );
    w(&mut out, String::new());
    w(&mut out, "### Throughput".into());
    w(&mut out, String::new());
    w(
        &mut out,
        format!(
            "Container command (both paths): `sh -c \"{}\"` — {WRITTEN} bytes of 71-byte lines to stdout \
        as fast as it can. **wasmdock**: StartTask with log FIFOs; the plugin reads the container's \
        json-file log directly (local engine, the default log driver); a thread reads the stdout FIFO like \
        logmon; timed from StartTask to EOF. **Baseline**: `docker run -d` with the same log options, \
        then `docker logs -f` piped; timed from `docker run` to EOF. One warm-up of each, then {RUNS} \
        runs each, alternating. Median (min–max). MB = 10⁶ bytes; MB/s = delivered bytes / wall time.",
            script()
        ),
    );
    w(&mut out, String::new());
    w(
        &mut out,
        "| | wasmdock | `docker logs -f` | wasmdock / baseline |".into(),
    );
    w(&mut out, "|---|---|---|---|".into());
    let row = |out: &mut String, label: &str, f: &dyn Fn(&Run) -> f64, d: usize, ratio: bool| {
        let columns = [ours.iter().map(f).collect(), theirs.iter().map(f).collect()];
        let _ = writeln!(
            out,
            "{}",
            bench::row(label, &columns, d, ratio.then_some(2))
        );
    };
    row(&mut out, "Delivered MB/s", &Run::mb_per_s, 1, true);
    row(&mut out, "Wall time, s", &|r| r.wall.as_secs_f64(), 2, true);
    row(
        &mut out,
        "Delivered MB (of written)",
        &|r| r.delivered as f64 / 1e6,
        1,
        true,
    );
    row(
        &mut out,
        "Delivered / written, %",
        &|r| 100.0 * r.delivered as f64 / WRITTEN as f64,
        1,
        false,
    );
    row(&mut out, "dockerd CPU, s", &|r| r.dockerd_cpu, 2, true);
    row(
        &mut out,
        "dockerd CPU, ms / delivered MB",
        &|r| 1000.0 * r.dockerd_cpu_per_mb(),
        1,
        true,
    );
    row(
        &mut out,
        "containerd CPU, s",
        &|r| r.containerd_cpu,
        2,
        true,
    );
    row(
        &mut out,
        "Forwarder CPU, s (plugin / `docker logs` CLI)",
        &|r| r.forwarder_cpu,
        2,
        true,
    );
    w(&mut out, String::new());
    w(
        &mut out,
        format!(
            "Written: {WRITTEN} bytes per run. Raw delivered bytes — wasmdock: {:?}; \
        baseline: {:?}.",
            ours.iter().map(|r| r.delivered).collect::<Vec<_>>(),
            theirs.iter().map(|r| r.delivered).collect::<Vec<_>>()
        ),
    );
    w(&mut out, String::new());
    if lossy(ours) + lossy(theirs) > 0 {
        w(
            &mut out,
            format!(
                "**Data loss:** {} of {RUNS} wasmdock runs and {} of {RUNS} baseline runs delivered less \
            than was written. `docker logs -f` follows the json-file log through Docker's logs API; with \
            `max-file=2`, `max-size=2m` the daemon rotates and deletes files faster than that follower \
            reads them. wasmdock opens every log file as it appears and reads it through its own \
            descriptor, so a rotation cannot take data from it. \
            Throughput above counts only delivered bytes.",
                lossy(ours),
                lossy(theirs)
            ),
        );
    } else {
        w(
            &mut out,
            "No data loss: every run delivered every byte written.".into(),
        );
    }
    w(&mut out, String::new());
    w(&mut out, "dockerd and containerd CPU are /proc utime+stime deltas over the whole run (container \
        create/start included); containerd-shim CPU is not counted (the shim exits with the container).".into());
    w(&mut out, String::new());
    w(
        &mut out,
        "### Memory and helper processes per forwarding task".into(),
    );
    w(&mut out, String::new());
    w(
        &mut out,
        format!(
            "{MEMORY_TASKS} tasks `sleep 1000`, each with both FIFOs read by a logmon-like thread, started \
        on one plugin."
        ),
    );
    w(&mut out, String::new());
    w(&mut out, "| | wasmdock | Nomad `docker` driver |".into());
    w(&mut out, "|---|---|---|".into());
    w(
        &mut out,
        format!(
            "| Plugin VmRSS before → after | {} → {} KiB | — |",
            mem.before_kib, mem.after_kib
        ),
    );
    w(
        &mut out,
        format!(
            "| Memory per task | {per_task_kib:.1} KiB (plugin RSS delta / {MEMORY_TASKS}) | \
        18,280–20,924 KiB RSS per docker_logger, plus logmon (reported in hashicorp/nomad#6900) |"
        ),
    );
    w(
        &mut out,
        format!(
            "| Helper processes per task | {helpers} ({} → {} children of the plugin besides the log holder) | \
        {NOMAD_HELPERS} (1 logmon + 1 docker_logger; hashicorp/nomad PR #14875) |",
            mem.children_before, mem.children_after
        ),
    );
    w(
        &mut out,
        format!(
            "| Helper processes per node | 1 log FIFO holder, VmRSS {} KiB holding {MEMORY_TASKS} tasks' FIFOs | — |",
            mem.holder_kib
        ),
    );
    w(&mut out, String::new());
    w(&mut out, "### Goals".into());
    w(&mut out, String::new());
    w(
        &mut out,
        format!(
            "- Logs ≥ {THROUGHPUT_GOAL}× `docker logs -f` throughput: {} (median {our_mbps:.1} vs \
        {their_mbps:.1} MB/s delivered = {ratio:.2}×; dockerd {:.1} vs {:.1} ms/MB).",
            met(ratio >= THROUGHPUT_GOAL),
            our_cpu * 1000.0,
            their_cpu * 1000.0
        ),
    );
    w(
        &mut out,
        format!(
            "- 0 helper processes per task: {} ({helpers} per task).",
            met(mem.children_after <= mem.children_before)
        ),
    );
    w(
        &mut out,
        format!(
            "- ≤ {MEMORY_GOAL_KIB} KiB plugin memory per task: {} ({per_task_kib:.1} KiB per task).",
            met(per_task_kib <= MEMORY_GOAL_KIB)
        ),
    );
    if lossy(ours) > 0 {
        w(
            &mut out,
            format!(
                "- Not a stated goal but worth saying: wasmdock lost log data in {} of {RUNS} runs.",
                lossy(ours)
            ),
        );
    }
    out
}
