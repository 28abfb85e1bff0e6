//! Stats benchmark: the CPU it costs to follow the resource usage of idle
//! containers, three ways on the same containers in one run —
//!
//! * wasmdock with the default `stats_source` (it reads each container's
//!   cgroup files), one TaskStats stream per task at a 1 s interval;
//! * wasmdock with `stats_source = "docker"` (Docker's stats API, one
//!   streaming request per task), a second plugin that adopted the same
//!   tasks with RecoverTask;
//! * `docker stats` streaming the same containers (the baseline: what a
//!   person or a Docker-API-based collector pays);
//!
//! plus a window with no stats consumer at all, the idle floor of the
//! daemons. Windows alternate idle → cgroup → docker source → `docker
//! stats`; each opens its consumer, waits a warm-up, then counts CPU
//! (`/proc` utime+stime) and samples over a fixed window. Then it reports
//! the plugin's RSS per streamed task.
//!
//! Run with `make bench` (every bench) or `cargo bench -p wasmdock-e2e
//! --bench stats` (this one); it writes its section of `BENCHMARKS.md`
//! (between the `bench:stats` markers) and measures a release build of the
//! plugin (see `wasmdock_e2e::bench`). `WASMDOCK_BENCH_QUICK=1` shrinks it
//! to 3 tasks, one 5 s window of each kind, and writes
//! `target/BENCHMARKS-quick.md` instead: a check that it works, not a
//! measurement.

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::json;
use wasmdock_e2e::bench::{self, DaemonCpu, cell, cpu_seconds, date, median, met, shim_cpu};
use wasmdock_e2e::calls::{destroy, plugin, start, task};
use wasmdock_e2e::images::BUSYBOX_1;
use wasmdock_e2e::task::duration;
use wasmdock_e2e::{Cleanup, PluginUnderTest, Task};
use wasmdock_host::rpc::proto::drivers::TaskStatsRequest;

/// The collection interval every stream asks for (Nomad's default).
const INTERVAL: Duration = Duration::from_secs(1);
/// The goal: stats cost at most this fraction of `docker stats`.
const GOAL_RATIO: f64 = 1.0 / 20.0;
/// What `docker stats` prints per container and refresh.
const DOCKER_STATS_FORMAT: &str = "{{.Container}} {{.CPUPerc}} {{.MemUsage}}";

/// How big a run is.
#[derive(Debug, Clone, Copy)]
struct Plan {
    tasks: usize,
    warm_up: Duration,
    window: Duration,
    runs: usize,
}

impl Plan {
    fn new() -> Self {
        if bench::quick() {
            Self {
                tasks: 3,
                warm_up: Duration::from_secs(3),
                window: Duration::from_secs(5),
                runs: 1,
            }
        } else {
            Self {
                tasks: 20,
                // A Docker-API stream's first sample needs two of Docker's
                // 1 s readings; 5 s leaves every consumer in its steady state.
                warm_up: Duration::from_secs(5),
                window: Duration::from_secs(30),
                runs: 3,
            }
        }
    }
}

/// Who follows the containers' stats during a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Consumer {
    /// Nobody: the daemons' floor.
    Idle,
    /// wasmdock, default `stats_source` (cgroup files).
    Cgroup,
    /// wasmdock, `stats_source = "docker"`.
    DockerSource,
    /// The `docker stats` CLI.
    DockerStats,
}

impl Consumer {
    const ALL: [Self; 4] = [
        Self::Idle,
        Self::Cgroup,
        Self::DockerSource,
        Self::DockerStats,
    ];
}

/// What one window measured (CPU in seconds).
#[derive(Debug, Clone, Copy)]
struct Window {
    consumer: Consumer,
    /// Wall time between the two readings.
    seconds: f64,
    /// Samples that reached the consumer; for `docker stats`, what Docker's
    /// stats API sends (one per container and second), since the CLI only
    /// prints the latest of them every 500 ms.
    samples: f64,
    /// The plugin measured, or the `docker stats` CLI; both plugins while idle.
    consumer_cpu: f64,
    dockerd: f64,
    containerd: f64,
    /// Every container's `containerd-shim` (Docker's stats API reads the
    /// cgroup through it); reported, not in the totals.
    shims: f64,
    /// The plugin's VmRSS before its streams opened and at the end of the
    /// window (0 for the other consumers).
    rss_before_kib: u64,
    rss_after_kib: u64,
}

impl Window {
    /// Consumer + dockerd + containerd.
    fn total(&self) -> f64 {
        self.consumer_cpu + self.dockerd + self.containerd
    }
}

/// CPU counters and samples at one instant.
#[derive(Debug, Clone, Copy)]
struct Reading {
    at: Instant,
    samples: u64,
    consumer: f64,
    daemons: DaemonCpu,
    shims: f64,
}

impl Reading {
    fn take(consumer: &[u32], samples: u64) -> Self {
        Self {
            at: Instant::now(),
            samples,
            consumer: consumer.iter().map(|&pid| cpu_seconds(pid)).sum(),
            daemons: DaemonCpu::now(),
            shims: shim_cpu(),
        }
    }
}

/// Waits the warm-up, then reads the counters `plan.window` apart.
async fn measure(
    plan: &Plan,
    consumer: Consumer,
    pids: &[u32],
    samples: &dyn Fn() -> u64,
) -> Window {
    tokio::time::sleep(plan.warm_up).await;
    let before = Reading::take(pids, samples());
    tokio::time::sleep(plan.window).await;
    let after = Reading::take(pids, samples());
    let (dockerd, containerd) = after.daemons.since(before.daemons);
    Window {
        consumer,
        seconds: (after.at - before.at).as_secs_f64(),
        samples: (after.samples - before.samples) as f64,
        consumer_cpu: after.consumer - before.consumer,
        dockerd,
        containerd,
        shims: after.shims - before.shims,
        rss_before_kib: 0,
        rss_after_kib: 0,
    }
}

/// One TaskStats stream per task, each drained by a task of its own the
/// way Nomad's client drains them; dropping this closes them all.
struct Streams {
    received: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    drains: Vec<tokio::task::JoinHandle<()>>,
}

impl Streams {
    async fn open(plugin: &PluginUnderTest, tasks: &[Task]) -> Self {
        let received = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let mut drains = Vec::new();
        for task in tasks {
            let mut stream = plugin
                .driver()
                .task_stats(TaskStatsRequest {
                    task_id: task.id().to_owned(),
                    collection_interval: Some(duration(INTERVAL)),
                })
                .await
                .unwrap_or_else(|status| panic!("TaskStats of {}: {status:?}", task.name()))
                .into_inner();
            let (received, failures) = (Arc::clone(&received), Arc::clone(&failures));
            let name = task.name().to_owned();
            drains.push(tokio::spawn(async move {
                let end = loop {
                    match stream.message().await {
                        Ok(Some(_)) => {
                            received.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(None) => break format!("the stream of {name} ended"),
                        Err(status) => break format!("the stream of {name} failed: {status:?}"),
                    }
                };
                failures
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(end);
            }));
        }
        Self {
            received,
            failures,
            drains,
        }
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Panics, with the plugin's log, if a stream ended early: the tasks
    /// run for 1000 s, so every stream must last the whole window.
    fn check(&self, plugin: &PluginUnderTest) {
        let failures = self
            .failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        assert!(
            failures.is_empty(),
            "{}\n{}",
            failures.join("\n"),
            plugin.stderr_lines().join("\n")
        );
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        for drain in &self.drains {
            drain.abort();
        }
    }
}

/// `docker stats` streaming the containers, its stdout drained by a
/// thread; killed on drop.
struct DockerStats {
    child: Child,
    rows: Arc<AtomicU64>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl DockerStats {
    fn spawn(containers: &[String]) -> Self {
        let mut child = Command::new("docker")
            .args(["stats", "--format", DOCKER_STATS_FORMAT])
            .args(containers)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker stats");
        let stdout = child.stdout.take().expect("piped stdout");
        let rows = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&rows);
        let reader = std::thread::spawn(move || {
            for _ in BufReader::new(stdout).split(b'\n') {
                counted.fetch_add(1, Ordering::Relaxed);
            }
        });
        Self {
            child,
            rows,
            reader: Some(reader),
        }
    }
}

impl Drop for DockerStats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Both plugins and the tasks they follow.
struct Setup {
    plan: Plan,
    cgroup: PluginUnderTest,
    api: PluginUnderTest,
    tasks: Vec<Task>,
}

impl Setup {
    async fn window(&self, consumer: Consumer) -> Window {
        let plan = &self.plan;
        match consumer {
            Consumer::Idle => {
                let pids = [pid(&self.cgroup), pid(&self.api)];
                measure(plan, consumer, &pids, &|| 0).await
            }
            Consumer::Cgroup | Consumer::DockerSource => {
                let plugin = if consumer == Consumer::Cgroup {
                    &self.cgroup
                } else {
                    &self.api
                };
                let rss_before_kib = bench::vm_rss_kib(pid(plugin));
                let streams = Streams::open(plugin, &self.tasks).await;
                let mut window =
                    measure(plan, consumer, &[pid(plugin)], &|| streams.received()).await;
                window.rss_before_kib = rss_before_kib;
                window.rss_after_kib = bench::vm_rss_kib(pid(plugin));
                streams.check(plugin);
                window
            }
            Consumer::DockerStats => {
                let names: Vec<String> = self.tasks.iter().map(Task::container_name).collect();
                let cli = DockerStats::spawn(&names);
                let mut window = measure(plan, consumer, &[cli.child.id()], &|| 0).await;
                let rows = cli.rows.load(Ordering::Relaxed);
                assert!(
                    rows >= self.tasks.len() as u64,
                    "docker stats printed {rows} rows for {} containers",
                    self.tasks.len()
                );
                window.samples = self.tasks.len() as f64 * window.seconds;
                window
            }
        }
    }
}

fn pid(plugin: &PluginUnderTest) -> u32 {
    plugin.pid().expect("plugin running")
}

fn main() -> ExitCode {
    bench::main("stats", bench)
}

async fn bench() -> String {
    let plan = Plan::new();
    let cgroup = plugin(json!({})).await;
    let api = plugin(json!({ "stats_source": "docker" })).await;
    let cleanup = Cleanup::new();
    let tasks: Vec<Task> = (0..plan.tasks)
        .map(|i| {
            task(
                &format!("bench-stats-{i}"),
                json!({ "image": BUSYBOX_1, "command": "sleep", "args": ["1000"] }),
            )
        })
        .collect();
    eprintln!("starting {} tasks", plan.tasks);
    for task in &tasks {
        cleanup.alloc(task.alloc_id());
        let handle = start(&cgroup, task).await.handle.expect("a task handle");
        // The second plugin adopts the running task, as after a restart.
        api.driver()
            .recover_task(task.recover_request(handle))
            .await
            .unwrap_or_else(|status| panic!("RecoverTask of {}: {status:?}", task.name()));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let setup = Setup {
        plan,
        cgroup,
        api,
        tasks,
    };
    let mut windows = Vec::new();
    for run in 1..=plan.runs {
        for consumer in Consumer::ALL {
            eprintln!("run {run}/{}: {consumer:?}", plan.runs);
            windows.push(setup.window(consumer).await);
        }
    }
    for task in &setup.tasks {
        destroy(&setup.cgroup, task, true).await;
    }
    render(&plan, &windows)
}

/// One figure of a window.
type Metric<'a> = &'a dyn Fn(&Window) -> f64;

fn render(plan: &Plan, windows: &[Window]) -> String {
    let of = |consumer: Consumer| -> Vec<Window> {
        windows
            .iter()
            .filter(|w| w.consumer == consumer)
            .copied()
            .collect()
    };
    let (idle, cgroup, api, cli) = (
        of(Consumer::Idle),
        of(Consumer::Cgroup),
        of(Consumer::DockerSource),
        of(Consumer::DockerStats),
    );
    let n = plan.tasks as f64;
    // The idle floor: what dockerd and containerd spend over a window with
    // nobody asking for stats. The stats' own cost is what comes on top.
    let floor = median(idle.iter().map(|w| w.dockerd + w.containerd));
    let per_cs = |w: &Window| 1000.0 * w.total() / (n * w.seconds);
    let net_per_cs = |w: &Window| 1000.0 * (w.total() - floor) / (n * w.seconds);
    let ratio =
        |f: Metric<'_>, ours: &[Window]| median(ours.iter().map(f)) / median(cli.iter().map(f));
    let (net, gross) = (ratio(&net_per_cs, &cgroup), ratio(&per_cs, &cgroup));
    let (api_net, api_gross) = (ratio(&net_per_cs, &api), ratio(&per_cs, &api));

    let mut out = String::new();
    let _ = writeln!(out, "## Stats\n");
    let _ = writeln!(
        out,
        "Produced by `cargo bench -p wasmdock-e2e --bench stats` (part of `make bench`).\n"
    );
    if bench::quick() {
        let _ = writeln!(
            out,
            "**Quick run** (`{}=1`): too short to quote; it only shows the bench works.\n",
            bench::QUICK_ENV
        );
    }
    let _ = writeln!(out, "- Date: {}", date());
    let _ = writeln!(
        out,
        "- Plugin: release build; default config (`stats_source = \"auto\"`, which reads the \
        cgroup files) and `stats_source = \"docker\"`\n"
    );
    let _ = writeln!(out, "### CPU\n");
    let _ = writeln!(
        out,
        "{} idle tasks (`sleep 1000`, `{BUSYBOX_1}`) started through one plugin; a second plugin \
        with `stats_source = \"docker\"` adopts them with RecoverTask. **wasmdock**: one TaskStats \
        stream per task at a {}s interval, every stream drained by the bench as Nomad's client \
        would. **`docker stats`**: `docker stats --format \"{DOCKER_STATS_FORMAT}\"` with the {} \
        container names, stdout drained. Each window opens its consumer, waits {}s, then \
        measures {}s; windows alternate idle → cgroup → docker source → `docker stats`, {} \
        run(s) of each. Median (min–max). CPU: /proc utime+stime deltas. Total = the consumer \
        (plugin or CLI) + dockerd + containerd. A container-second is one container followed for \
        one second.",
        plan.tasks,
        INTERVAL.as_secs(),
        plan.tasks,
        plan.warm_up.as_secs(),
        plan.window.as_secs(),
        plan.runs,
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| | wasmdock (cgroup) | wasmdock (`stats_source = \"docker\"`) | `docker stats` | \
        cgroup / `docker stats` | docker source / `docker stats` |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    let columns = |f: Metric<'_>| -> [Vec<f64>; 3] {
        [&cgroup, &api, &cli].map(|ws| ws.iter().map(f).collect())
    };
    let rows: [(&str, Metric<'_>, usize, Option<usize>); 10] = [
        ("Samples received", &|w| w.samples, 0, None),
        (
            "Samples per container-second",
            &|w| w.samples / (n * w.seconds),
            2,
            None,
        ),
        (
            "Consumer CPU, ms (plugin / `docker stats` CLI)",
            &|w| 1000.0 * w.consumer_cpu,
            0,
            Some(3),
        ),
        ("dockerd CPU, ms", &|w| 1000.0 * w.dockerd, 0, Some(3)),
        ("containerd CPU, ms", &|w| 1000.0 * w.containerd, 0, Some(3)),
        ("Total CPU, ms", &|w| 1000.0 * w.total(), 0, Some(3)),
        (
            "Total CPU, ms per sample",
            &|w| 1000.0 * w.total() / w.samples.max(1.0),
            3,
            Some(3),
        ),
        (
            "**Total CPU, ms per container-second**",
            &per_cs,
            3,
            Some(3),
        ),
        (
            "**Above the idle floor, ms per container-second**",
            &net_per_cs,
            3,
            Some(3),
        ),
        (
            "containerd-shim CPU, ms (not in the totals)",
            &|w| 1000.0 * w.shims,
            0,
            Some(3),
        ),
    ];
    for (label, f, digits, ratio_digits) in rows {
        let _ = writeln!(
            out,
            "{}",
            bench::row(label, &columns(f), digits, ratio_digits)
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Idle floor (no stats consumer, same window and containers): dockerd {} ms, containerd {} \
        ms, both plugins {} ms, containerd-shims {} ms. The floor subtracted above is the median \
        of dockerd + containerd, {:.0} ms.",
        cell(idle.iter().map(|w| 1000.0 * w.dockerd), 0),
        cell(idle.iter().map(|w| 1000.0 * w.containerd), 0),
        cell(idle.iter().map(|w| 1000.0 * w.consumer_cpu), 0),
        cell(idle.iter().map(|w| 1000.0 * w.shims), 0),
        1000.0 * floor,
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "`docker stats` samples are counted as Docker's stats API sends them, one per container \
        and second (the CLI prints the latest every 500 ms). CPU is read to the kernel's clock \
        tick ({:.0} ms), so small figures are coarse. The containerd-shims serve Docker's stats API \
        (each reads its container's cgroup); they are shown apart and left out of every total, \
        which understates what `docker stats` and the docker source cost.\n",
        1000.0 / bench::clock_ticks()
    );
    let first = |ws: &[Window]| ws.first().copied().expect("a window");
    let (cg, ap) = (first(&cgroup), first(&api));
    let per_task = |w: Window| (w.rss_after_kib as f64 - w.rss_before_kib as f64) / n;
    let _ = writeln!(out, "### Memory per streamed task\n");
    let _ = writeln!(
        out,
        "Plugin VmRSS just before its first {} streams opened and at the end of that window \
        (streams open), first run; the difference divided by {} is an upper bound (it includes \
        the first use of the runtime's and gRPC's buffers).\n",
        plan.tasks, plan.tasks
    );
    let _ = writeln!(
        out,
        "| | wasmdock (cgroup) | wasmdock (`stats_source = \"docker\"`) |"
    );
    let _ = writeln!(out, "|---|---|---|");
    let _ = writeln!(
        out,
        "| Plugin VmRSS before → with streams | {} → {} KiB | {} → {} KiB |",
        cg.rss_before_kib, cg.rss_after_kib, ap.rss_before_kib, ap.rss_after_kib
    );
    let _ = writeln!(
        out,
        "| Per streamed task | {:.1} KiB | {:.1} KiB |\n",
        per_task(cg),
        per_task(ap)
    );
    let _ = writeln!(out, "### Goals\n");
    let _ = writeln!(
        out,
        "- Stats ≤ 1/20 of `docker stats` CPU: {} (ratio {} of the CPU above the idle floor \
        per container-second; counting the floor too, {}).",
        met(net <= GOAL_RATIO),
        fraction(net),
        fraction(gross)
    );
    let _ = writeln!(
        out,
        "- Not a goal, for comparison: with `stats_source = \"docker\"` the plugin costs \
        {api_net:.2}× `docker stats` above the floor ({api_gross:.2}× counting it)."
    );
    out
}

/// `0.032 = 1/31` for a ratio below one, else the bare ratio (at or below
/// zero, the cost drowned in the clock tick).
fn fraction(ratio: f64) -> String {
    if ratio > 0.0 && ratio < 1.0 {
        format!("{ratio:.3} = 1/{:.0}", 1.0 / ratio)
    } else {
        format!("{ratio:.3}")
    }
}
