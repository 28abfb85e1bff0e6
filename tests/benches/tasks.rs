//! Tasks benchmark: what one more task costs the node, and how long
//! StartTask takes next to `docker run -d`.
//!
//! * **Per-task overhead.** One plugin starts many long-running tasks
//!   (`sleep 1000`, each with both log FIFOs read by a logmon-like thread)
//!   through the real gRPC protocol. Before (after a warm-up task was
//!   started and destroyed) and while they all run it reads the plugin's
//!   VmRSS, threads, open descriptors (by kind) and child processes from
//!   `/proc`, and the node's log holder's VmRSS and descriptors. The
//!   baseline is cited, not measured: Nomad's `docker` driver runs two
//!   helper processes per task (logmon and docker_logger; hashicorp/nomad
//!   PR #14875), docker_logger using 18,280–20,924 KiB RSS each
//!   (hashicorp/nomad#6900). Every task is destroyed at the end and the
//!   bench checks nothing is left.
//! * **StartTask latency.** The same image and command four ways,
//!   alternating round-robin: StartTask (client-side gRPC call time) on a
//!   plugin with the default config; StartTask on a second plugin with the
//!   `image-allowlist` admission policy; the `docker run -d` CLI (timed as
//!   a process); create + start through bollard, the Docker client library
//!   the plugin uses (through the plugin's own engine adapter). Every
//!   container is removed right after its measurement, outside the timed
//!   part, so the engine's container count stays flat. p50, p95 and
//!   min–max over the rounds.
//!
//! Run with `cargo bench -p wasmdock-e2e --bench tasks`; it writes its
//! section of `BENCHMARKS.md` (between the `bench:tasks` markers) and
//! measures a release build of the plugin (see `wasmdock_e2e::bench`).
//! `WASMDOCK_BENCH_QUICK=1` shrinks it to 10 tasks and 5 rounds after one
//! warm-up round and writes `target/BENCHMARKS-quick.md` instead: a check
//! that it works, not a measurement.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::future::Future;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use wasmdock_e2e::bench::{self, all_pids, date, met, stat_fields, vm_rss_kib};
use wasmdock_e2e::calls::plugin;
use wasmdock_e2e::cleanup::ALLOC_ID_LABEL;
use wasmdock_e2e::guests::guest;
use wasmdock_e2e::images::BUSYBOX_1;
use wasmdock_e2e::task::FifoReader;
use wasmdock_e2e::{Cleanup, PluginUnderTest, Task, TaskBuilder, run_id};
use wasmdock_host::config::PluginConfig;
use wasmdock_host::docker::Docker;
use wasmdock_host::rpc::proto::drivers::FingerprintRequest;

/// Bound of every gRPC and engine call the bench makes.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Goals.
const MEMORY_GOAL_KIB: f64 = 64.0;
const LATENCY_GOAL_RATIO: f64 = 1.05;
/// Nomad's helper processes per task (1 logmon + 1 docker_logger).
const NOMAD_HELPERS: usize = 2;
/// The container command on every path.
const COMMAND: [&str; 2] = ["sleep", "1000"];
/// The pattern the admission policy allows: the test image's repository.
const ALLOWED: &str = "wasmdock-test/busybox:*";

fn main() -> ExitCode {
    bench::main("tasks", bench)
}

/// How big a run is.
#[derive(Debug, Clone, Copy)]
struct Plan {
    tasks: usize,
    warm_up_rounds: usize,
    rounds: usize,
}

impl Plan {
    fn new() -> Self {
        if bench::quick() {
            Self {
                tasks: 10,
                warm_up_rounds: 1,
                rounds: 5,
            }
        } else {
            Self {
                tasks: 100,
                warm_up_rounds: 3,
                rounds: 40,
            }
        }
    }
}

// ---------------------------------------------------------------- bounded calls

/// `call`, or a panic naming it when it takes longer than `limit`.
async fn bounded<T>(what: &str, limit: Duration, call: impl Future<Output = T>) -> T {
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {limit:?}"))
}

/// A blocking `work` on the blocking pool, bounded like [`bounded`].
async fn blocking<T: Send + 'static>(
    what: &str,
    limit: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> T {
    bounded(what, limit, tokio::task::spawn_blocking(work))
        .await
        .unwrap_or_else(|err| panic!("{what} failed: {err}"))
}

/// A `sleep 1000` task with log FIFOs.
fn sleeper(name: &str) -> Task {
    TaskBuilder::new(
        name,
        json!({ "image": BUSYBOX_1, "command": COMMAND[0], "args": [COMMAND[1]] }),
    )
    .log_fifos()
    .build()
    .expect("task dir")
}

/// Logmon stand-ins for both FIFOs of `task`, reading before it starts.
fn readers(task: &Task) -> (FifoReader, FifoReader) {
    task.log_readers().expect("FIFO readers")
}

/// StartTask through the plugin's gRPC socket; the call's duration as the
/// client sees it.
async fn start_task(plugin: &PluginUnderTest, task: &Task) -> Duration {
    let mut driver = plugin.driver();
    let request = task.start_request();
    let what = format!("StartTask of {}", task.name());
    let began = Instant::now();
    let result = bounded(&what, CALL_TIMEOUT, driver.start_task(request)).await;
    let took = began.elapsed();
    if let Err(status) = result {
        panic!("{what} failed: {status:?}");
    }
    took
}

/// DestroyTask with force (stops and removes the container).
async fn destroy_task(plugin: &PluginUnderTest, task: &Task) {
    let what = format!("DestroyTask of {}", task.name());
    bounded(
        &what,
        CALL_TIMEOUT,
        plugin.driver().destroy_task(task.destroy_request(true)),
    )
    .await
    .unwrap_or_else(|status| panic!("{what} failed: {status:?}"));
}

/// Drops tasks off the async workers: the last clone of an alloc removes
/// its containers with the `docker` CLI.
async fn drop_tasks(tasks: Vec<Task>) {
    blocking("removing the tasks' alloc dirs", CALL_TIMEOUT, move || {
        drop(tasks)
    })
    .await;
}

// ---------------------------------------------------------------- /proc

fn status_field(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn is_log_holder(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.split(|b| *b == 0).any(|arg| arg == b"log-holder"))
}

/// Processes whose parent is `parent`, except the node's log holder (one
/// per node, counted apart).
fn children_of(parent: u32) -> usize {
    all_pids()
        .into_iter()
        .filter(|&pid| stat_fields(pid).get(1).and_then(|p| p.parse::<u32>().ok()) == Some(parent))
        .filter(|&pid| !is_log_holder(pid))
        .count()
}

/// What an open descriptor points at, by kind.
fn fd_kind(target: &str) -> &'static str {
    if target.starts_with("pipe:") {
        "pipe"
    } else if target.starts_with("socket:") {
        "socket"
    } else if target.ends_with(".fifo") {
        "log FIFO"
    } else if target.ends_with(".checkpoint") {
        "log checkpoint file"
    } else if target.contains("-json.log") || target.contains("/containers/") {
        "container log file"
    } else if target.starts_with("anon_inode:") {
        "anon inode (epoll, eventfd, …)"
    } else {
        "other file"
    }
}

/// Open descriptors of `pid` by kind.
fn fds_by_kind(pid: u32) -> BTreeMap<&'static str, usize> {
    let mut kinds = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return kinds;
    };
    for entry in dir.filter_map(Result::ok) {
        let target = std::fs::read_link(entry.path())
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_default();
        *kinds.entry(fd_kind(&target)).or_insert(0) += 1;
    }
    kinds
}

/// One process at one instant.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    rss_kib: u64,
    threads: u64,
    fds: BTreeMap<&'static str, usize>,
    children: usize,
}

impl Snapshot {
    fn take(pid: u32) -> Self {
        Self {
            rss_kib: vm_rss_kib(pid),
            threads: status_field(pid, "Threads:"),
            fds: fds_by_kind(pid),
            children: children_of(pid),
        }
    }

    fn fd_count(&self) -> usize {
        self.fds.values().sum()
    }
}

/// The log holder's pid and task count, if one runs.
async fn holder(plugin: &PluginUnderTest) -> Option<(u32, usize)> {
    bounded("the log holder's status", CALL_TIMEOUT, async {
        plugin.log_holder().status().await.ok()
    })
    .await
    .map(|reply| (reply.pid, reply.tasks))
}

// ---------------------------------------------------------------- per-task overhead

struct Overhead {
    tasks: usize,
    before: Snapshot,
    after: Snapshot,
    destroyed: Snapshot,
    holder_before: Option<Snapshot>,
    holder_after: Snapshot,
    holder_tasks: usize,
    /// StartTask durations while the tasks piled up, seconds.
    starts: Vec<f64>,
    /// What was left after destroying every task.
    containers_left: usize,
    holder_tasks_left: usize,
    readers_ended: usize,
}

async fn overhead(plugin: &PluginUnderTest, docker: &Docker, count: usize) -> Overhead {
    let pid = plugin.pid().expect("plugin running");
    eprintln!("overhead: warm-up task");
    let warm = sleeper("bench-tasks-warm");
    let warm_readers = readers(&warm);
    start_task(plugin, &warm).await;
    destroy_task(plugin, &warm).await;
    drop(warm_readers);
    drop_tasks(vec![warm]).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let before = Snapshot::take(pid);
    let holder_before = holder(plugin).await.map(|(p, _)| Snapshot::take(p));
    let tasks: Vec<Task> = (0..count)
        .map(|i| sleeper(&format!("bench-tasks-mem-{i}")))
        .collect();
    let mut all_readers = Vec::new();
    let mut starts = Vec::new();
    eprintln!("overhead: starting {count} tasks");
    for task in &tasks {
        all_readers.push(readers(task));
        starts.push(start_task(plugin, task).await.as_secs_f64());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = Snapshot::take(pid);
    let (holder_pid, holder_tasks) = holder(plugin)
        .await
        .expect("a log holder runs while tasks have FIFOs");
    let holder_after = Snapshot::take(holder_pid);

    eprintln!("overhead: destroying {count} tasks");
    for task in &tasks {
        destroy_task(plugin, task).await;
    }
    let mut readers_ended = 0;
    for (stdout, stderr) in &all_readers {
        if stdout.wait_ended(Duration::from_secs(10)).await
            && stderr.wait_ended(Duration::from_secs(10)).await
        {
            readers_ended += 1;
        }
    }
    drop(all_readers);
    let allocs: BTreeSet<String> = tasks.iter().map(|t| t.alloc_id().to_owned()).collect();
    let containers_left = bounded(
        "listing containers",
        CALL_TIMEOUT,
        docker.list_containers(ALLOC_ID_LABEL, true),
    )
    .await
    .expect("list containers")
    .into_iter()
    .filter(|c| {
        c.labels
            .get(ALLOC_ID_LABEL)
            .is_some_and(|a| allocs.contains(a))
    })
    .count();
    let holder_tasks_left = holder(plugin).await.map_or(0, |(_, tasks)| tasks);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let destroyed = Snapshot::take(pid);
    drop_tasks(tasks).await;
    Overhead {
        tasks: count,
        before,
        after,
        destroyed,
        holder_before,
        holder_after,
        holder_tasks,
        starts,
        containers_left,
        holder_tasks_left,
        readers_ended,
    }
}

// ---------------------------------------------------------------- StartTask latency

/// The four ways of starting the same container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Path {
    StartTask,
    StartTaskPolicy,
    DockerRun,
    Bollard,
}

impl Path {
    const ALL: [Self; 4] = [
        Self::StartTask,
        Self::StartTaskPolicy,
        Self::DockerRun,
        Self::Bollard,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::StartTask => "(a) StartTask, default config",
            Self::StartTaskPolicy => "(b) StartTask, `image-allowlist` admission policy",
            Self::DockerRun => "(c) `docker run -d` (CLI process)",
            Self::Bollard => "(d) create + start through bollard",
        }
    }
}

struct Latency<'a> {
    default: &'a PluginUnderTest,
    policy: &'a PluginUnderTest,
    docker: &'a Docker,
    cleanup: &'a Cleanup,
}

impl Latency<'_> {
    /// One measurement of `path`, in seconds; what it made is removed
    /// afterwards, untimed.
    async fn measure(&self, path: Path, index: usize) -> f64 {
        match path {
            Path::StartTask | Path::StartTaskPolicy => {
                let (plugin, name) = if path == Path::StartTask {
                    (self.default, "bench-tasks-start")
                } else {
                    (self.policy, "bench-tasks-policy")
                };
                let task = sleeper(&format!("{name}-{index}"));
                let logmon = readers(&task);
                let took = start_task(plugin, &task).await;
                destroy_task(plugin, &task).await;
                drop(logmon);
                drop_tasks(vec![task]).await;
                took.as_secs_f64()
            }
            Path::DockerRun => {
                let name = format!("bench-tasks-cli-{}-{index}", run_id());
                self.cleanup.container(&name);
                let mut command = tokio::process::Command::new("docker");
                command
                    .args(["run", "-d", "--name", &name, BUSYBOX_1])
                    .args(COMMAND)
                    .stdin(Stdio::null())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .kill_on_drop(true);
                let began = Instant::now();
                let output = bounded("docker run -d", CALL_TIMEOUT, command.output())
                    .await
                    .expect("run the docker CLI");
                let took = began.elapsed();
                assert!(
                    output.status.success(),
                    "docker run -d failed: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
                let id = String::from_utf8_lossy(&output.stdout).trim().to_owned();
                self.remove(&id).await;
                took.as_secs_f64()
            }
            Path::Bollard => {
                let name = format!("bench-tasks-api-{}-{index}", run_id());
                self.cleanup.container(&name);
                // The request `docker run -d IMAGE sleep 1000` sends.
                let body = serde_json::from_value(json!({ "Image": BUSYBOX_1, "Cmd": COMMAND }))
                    .expect("a container create body");
                let began = Instant::now();
                let id = bounded(
                    "create container",
                    CALL_TIMEOUT,
                    self.docker.create_container(&name, body),
                )
                .await
                .expect("create container");
                bounded(
                    "start container",
                    CALL_TIMEOUT,
                    self.docker.start_container(&id),
                )
                .await
                .expect("start container");
                let took = began.elapsed();
                self.remove(&id).await;
                took.as_secs_f64()
            }
        }
    }

    async fn remove(&self, id: &str) {
        self.docker
            .remove_container_within(id, CALL_TIMEOUT)
            .await
            .unwrap_or_else(|err| panic!("remove container {id}: {err}"));
    }
}

/// The p-th percentile (nearest rank) of `values`.
fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

struct Policy {
    calls: String,
    p50_us: String,
    p99_us: String,
}

/// The admission counters of the policy plugin, from InspectTask of `task`.
async fn policy_counters(plugin: &PluginUnderTest, task: &Task) -> Policy {
    let attributes = bounded(
        "InspectTask",
        CALL_TIMEOUT,
        plugin.driver().inspect_task(task.inspect_request()),
    )
    .await
    .expect("InspectTask")
    .into_inner()
    .driver
    .map(|d| d.attributes)
    .unwrap_or_default();
    let get = |counter: &str| {
        attributes
            .get(&format!("policy.image-allowlist.task-admission.{counter}"))
            .cloned()
            .unwrap_or_else(|| "?".to_owned())
    };
    Policy {
        calls: get("calls"),
        p50_us: get("p50_us"),
        p99_us: get("p99_us"),
    }
}

/// A plugin with the `image-allowlist` example guest allowing the test
/// image's repository, its module loaded.
async fn policy_plugin() -> PluginUnderTest {
    let path = blocking(
        "building the policy guests",
        Duration::from_secs(600),
        || guest("image-allowlist"),
    )
    .await;
    let plugin = plugin(json!({ "policy": { "module": [{
        "name": "image-allowlist",
        "path": path.to_string_lossy(),
        "hooks": ["task-admission"],
        "config": { "allowed": ALLOWED },
    }]}}))
    .await;
    // Modules load on the first Fingerprint.
    let mut stream = bounded(
        "Fingerprint",
        CALL_TIMEOUT,
        plugin.driver().fingerprint(FingerprintRequest {}),
    )
    .await
    .expect("Fingerprint")
    .into_inner();
    bounded("the first fingerprint", CALL_TIMEOUT, stream.message())
        .await
        .expect("a fingerprint");
    assert!(
        plugin
            .wait_for_stderr("policy module loaded", CALL_TIMEOUT)
            .await
            .is_some(),
        "the image-allowlist module did not load"
    );
    plugin
}

// ---------------------------------------------------------------- the bench

async fn bench() -> String {
    let plan = Plan::new();
    let cleanup = Cleanup::new();
    let default = plugin(json!({})).await;
    let docker = bounded("Docker version negotiation", CALL_TIMEOUT, async {
        Docker::connect(&PluginConfig::default())
            .expect("a Docker client")
            .negotiate()
            .await
            .expect("Docker answers")
    })
    .await;

    let overhead = overhead(&default, &docker, plan.tasks).await;
    assert_eq!(
        overhead.containers_left, 0,
        "containers were left after DestroyTask"
    );

    eprintln!("latency: policy plugin");
    let policy = policy_plugin().await;
    // A task stays on each plugin, as on a node with work: its log holder
    // keeps running between rounds, as it does there.
    let residents = vec![
        sleeper("bench-tasks-resident-a"),
        sleeper("bench-tasks-resident-b"),
    ];
    let resident_readers: Vec<_> = residents.iter().map(readers).collect();
    start_task(&default, &residents[0]).await;
    start_task(&policy, &residents[1]).await;

    let latency = Latency {
        default: &default,
        policy: &policy,
        docker: &docker,
        cleanup: &cleanup,
    };
    let mut times: BTreeMap<Path, Vec<f64>> = BTreeMap::new();
    let total = plan.warm_up_rounds + plan.rounds;
    for round in 0..total {
        let warm_up = round < plan.warm_up_rounds;
        eprintln!(
            "latency: round {}/{total}{}",
            round + 1,
            if warm_up { " (warm-up)" } else { "" }
        );
        // Each round starts one path further on, so none always goes first.
        for k in 0..Path::ALL.len() {
            let path = Path::ALL[(round + k) % Path::ALL.len()];
            let took = latency.measure(path, round).await;
            if !warm_up {
                times.entry(path).or_default().push(took);
            }
        }
    }
    let counters = policy_counters(&policy, &residents[1]).await;

    destroy_task(&default, &residents[0]).await;
    destroy_task(&policy, &residents[1]).await;
    drop(resident_readers);
    drop_tasks(residents).await;
    let left = blocking("listing this run's containers", CALL_TIMEOUT, || {
        wasmdock_e2e::docker::containers_named(run_id())
    })
    .await
    .expect("docker ps");
    assert!(left.is_empty(), "containers left behind: {left:?}");
    render(&plan, &overhead, &times, &counters)
}

// ---------------------------------------------------------------- report

fn render(
    plan: &Plan,
    o: &Overhead,
    times: &BTreeMap<Path, Vec<f64>>,
    counters: &Policy,
) -> String {
    let mut out = String::new();
    let w = |out: &mut String, line: String| {
        let _ = writeln!(out, "{line}");
    };
    let n = o.tasks as f64;
    let per_task = |after: f64, before: f64| (after - before) / n;
    let rss_per_task = per_task(o.after.rss_kib as f64, o.before.rss_kib as f64);
    let threads_per_task = per_task(o.after.threads as f64, o.before.threads as f64);
    let fds_per_task = per_task(o.after.fd_count() as f64, o.before.fd_count() as f64);
    let helpers_per_task = per_task(o.after.children as f64, o.before.children as f64);
    let ms = |path: Path, p: f64| 1000.0 * percentile(&times[&path], p);

    w(
        &mut out,
        "## Tasks: per-task overhead and StartTask latency".into(),
    );
    w(&mut out, String::new());
    w(
        &mut out,
        "Produced by `cargo bench -p wasmdock-e2e --bench tasks`.".into(),
    );
    w(&mut out, String::new());
    w(&mut out, format!("- Date: {}", date()));
    w(
        &mut out,
        format!(
            "- Plugin: release build; every task `{}` on `{BUSYBOX_1}` with both log FIFOs read by a \
            logmon-like thread, through the real gRPC socket",
            COMMAND.join(" ")
        ),
    );
    w(&mut out, String::new());

    w(&mut out, "### Per-task overhead".into());
    w(&mut out, String::new());
    w(
        &mut out,
        format!(
            "{} tasks started one after another on one plugin (default config). \"Before\" is after a \
            warm-up task was started and destroyed; \"with {} tasks\" is 2 s after the last start. One \
            run: the figures are counts and a memory delta over {} tasks, not timings. The Nomad \
            column is cited, not measured.",
            o.tasks, o.tasks, o.tasks
        ),
    );
    w(&mut out, String::new());
    w(
        &mut out,
        format!(
            "| | Before | With {} tasks | Per task | Nomad `docker` driver, per task |",
            o.tasks
        ),
    );
    w(&mut out, "|---|---|---|---|---|".into());
    w(
        &mut out,
        format!(
            "| Plugin VmRSS, KiB | {} | {} | {rss_per_task:.1} | 18,280–20,924 KiB RSS per docker_logger, \
            plus logmon (hashicorp/nomad#6900) |",
            o.before.rss_kib, o.after.rss_kib
        ),
    );
    w(
        &mut out,
        format!(
            "| Plugin threads | {} | {} | {threads_per_task:.2} | — |",
            o.before.threads, o.after.threads
        ),
    );
    w(
        &mut out,
        format!(
            "| Plugin open fds | {} | {} | {fds_per_task:.2} | — |",
            o.before.fd_count(),
            o.after.fd_count()
        ),
    );
    w(
        &mut out,
        format!(
            "| Helper processes (children of the plugin besides the log holder) | {} | {} | \
            {helpers_per_task:.2} | {NOMAD_HELPERS} (1 logmon + 1 docker_logger; hashicorp/nomad PR #14875) |",
            o.before.children, o.after.children
        ),
    );
    let holder_before = |f: &dyn Fn(&Snapshot) -> String| {
        o.holder_before
            .as_ref()
            .map_or_else(|| "not running".to_owned(), f)
    };
    w(
        &mut out,
        format!(
            "| Log holder (one per node) VmRSS, KiB | {} | {} (holding {} tasks) | — | — |",
            holder_before(&|s| s.rss_kib.to_string()),
            o.holder_after.rss_kib,
            o.holder_tasks
        ),
    );
    w(
        &mut out,
        format!(
            "| Log holder open fds | {} | {} | {} | — |",
            holder_before(&|s| s.fd_count().to_string()),
            o.holder_after.fd_count(),
            o.holder_before.as_ref().map_or_else(
                || "—".to_owned(),
                |b| format!(
                    "{:.2}",
                    per_task(o.holder_after.fd_count() as f64, b.fd_count() as f64)
                )
            )
        ),
    );
    w(&mut out, String::new());
    let kinds = |before: &Snapshot, after: &Snapshot| {
        let names: BTreeSet<&str> = before.fds.keys().chain(after.fds.keys()).copied().collect();
        names
            .into_iter()
            .filter_map(|kind| {
                let b = before.fds.get(kind).copied().unwrap_or(0) as f64;
                let a = after.fds.get(kind).copied().unwrap_or(0) as f64;
                (a != b).then(|| format!("{kind} {:.2}", (a - b) / n))
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let plugin_kinds = kinds(&o.before, &o.after);
    w(
        &mut out,
        format!(
            "Plugin descriptors added per task, by what `/proc/<pid>/fd` links to: {}.",
            if plugin_kinds.is_empty() {
                "none".to_owned()
            } else {
                plugin_kinds
            }
        ),
    );
    if let Some(before) = &o.holder_before {
        let holder_kinds = kinds(before, &o.holder_after);
        w(
            &mut out,
            format!(
                "Log holder descriptors added per task: {}.",
                if holder_kinds.is_empty() {
                    "none".to_owned()
                } else {
                    holder_kinds
                }
            ),
        );
    }
    w(
        &mut out,
        format!(
            "StartTask while the {} tasks piled up: p50 {:.1} ms, p95 {:.1} ms.",
            o.tasks,
            1000.0 * percentile(&o.starts, 0.50),
            1000.0 * percentile(&o.starts, 0.95)
        ),
    );
    w(
        &mut out,
        format!(
            "After DestroyTask of every task: {} of the tasks' containers left, {} tasks still in the \
            log holder, {} of {} logmon stand-ins saw end-of-file on both FIFOs; the plugin back to {} \
            threads, {} fds and {} helper processes.",
            o.containers_left,
            o.holder_tasks_left,
            o.readers_ended,
            o.tasks,
            o.destroyed.threads,
            o.destroyed.fd_count(),
            o.destroyed.children
        ),
    );
    w(&mut out, String::new());

    w(
        &mut out,
        "### StartTask latency against `docker run -d`".into(),
    );
    w(&mut out, String::new());
    w(
        &mut out,
        format!(
            "Same image and command on every path. (a) StartTask on the plugin above, timed on the \
            client around the gRPC call. (b) StartTask on a second plugin whose `policy` block loads \
            the `image-allowlist` example guest with `allowed = \"{ALLOWED}\"` (loaded by the first \
            Fingerprint before any timing). (c) `docker run -d --name NAME {BUSYBOX_1} {}`, timed \
            as a process from spawn to exit. (d) create + start (`Image` and `Cmd` only) through \
            bollard, the client library the plugin uses, via its engine adapter \
            (`wasmdock_host::docker::Docker`), one client for the whole run. Each plugin keeps one \
            other task running throughout, as on a node with work, so its log holder stays up. \
            The four paths alternate round-robin, each round starting one path further on; every \
            container is removed right after its measurement, outside the timed part. {} warm-up \
            round(s), then {} rounds. Nearest-rank percentiles over the rounds.",
            COMMAND.join(" "),
            plan.warm_up_rounds,
            plan.rounds
        ),
    );
    w(&mut out, String::new());
    w(
        &mut out,
        "| Path | p50, ms | p95, ms | min–max, ms | p50 / (c) | p95 / (c) |".into(),
    );
    w(&mut out, "|---|---|---|---|---|---|".into());
    for path in Path::ALL {
        let values = &times[&path];
        let (min, max) = values
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        w(
            &mut out,
            format!(
                "| {} | {:.1} | {:.1} | {:.1}–{:.1} | {:.2}× | {:.2}× |",
                path.label(),
                ms(path, 0.50),
                ms(path, 0.95),
                1000.0 * min,
                1000.0 * max,
                ms(path, 0.50) / ms(Path::DockerRun, 0.50),
                ms(path, 0.95) / ms(Path::DockerRun, 0.95)
            ),
        );
    }
    w(&mut out, String::new());
    let ratio_ac = ms(Path::StartTask, 0.50) / ms(Path::DockerRun, 0.50);
    let ratio_bc = ms(Path::StartTaskPolicy, 0.50) / ms(Path::DockerRun, 0.50);
    let ratio_ad = ms(Path::StartTask, 0.50) / ms(Path::Bollard, 0.50);
    w(
        &mut out,
        format!(
            "Ratios of p50s: (a)/(c) {ratio_ac:.2}×, (b)/(c) {ratio_bc:.2}×, (a)/(d) {ratio_ad:.2}×. \
            The policy plugin's own admission counters after the run: {} calls, p50 {} µs, p99 {} µs \
            per evaluation.",
            counters.calls, counters.p50_us, counters.p99_us
        ),
    );
    w(&mut out, String::new());
    w(
        &mut out,
        "What StartTask does that `docker run -d` does not: it decodes the task config and runs the \
        admission policies (b), asks the engine for its version and info, inspects the image twice \
        (present, then referenced so image GC cannot take it), writes the task's hosts and \
        resolv.conf files, creates and starts the container, inspects it for its network, opens \
        the task's two log FIFOs and hands them to the node's log holder, and tracks the task; \
        `docker run -d` pays for starting a CLI process instead, and (d) is the bare create + \
        start both share."
            .into(),
    );
    w(&mut out, String::new());

    w(&mut out, "### Goals".into());
    w(&mut out, String::new());
    w(
        &mut out,
        format!(
            "- 0 helper processes per task: {} ({helpers_per_task:.2} per task; Nomad's driver: \
            {NOMAD_HELPERS}).",
            met(o.after.children <= o.before.children)
        ),
    );
    w(
        &mut out,
        format!(
            "- ≤ {MEMORY_GOAL_KIB} KiB plugin memory per task: {} ({rss_per_task:.1} KiB per task).",
            met(rss_per_task <= MEMORY_GOAL_KIB)
        ),
    );
    w(
        &mut out,
        format!(
            "- StartTask ≤ {LATENCY_GOAL_RATIO}× `docker run -d` (p50): {} ({:.1} vs {:.1} ms = \
            {ratio_ac:.2}×; with the admission policy {:.1} ms = {ratio_bc:.2}×).",
            met(ratio_ac <= LATENCY_GOAL_RATIO),
            ms(Path::StartTask, 0.50),
            ms(Path::DockerRun, 0.50),
            ms(Path::StartTaskPolicy, 0.50)
        ),
    );
    w(
        &mut out,
        format!(
            "- Reported, no goal: {threads_per_task:.2} threads and {fds_per_task:.2} fds per task in \
            the plugin."
        ),
    );
    out
}
