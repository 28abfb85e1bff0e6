//! Reconciler benchmark: what one pass of the dangling-container reconciler
//! costs on an engine holding many containers.
//!
//! The bench makes 1000 containers with `docker create` (8 at a time,
//! before anything is timed), 50 of them running (`docker run -d … sleep
//! 1000`). A quarter carry Nomad's `com.hashicorp.nomad.alloc_id` label, a
//! quarter have the legacy shape (the three Nomad mounts, a
//! `<task>-<alloc id>` name and `NOMAD_ALLOC_ID` in their environment),
//! half are unrelated; no task of the plugin tracks any of them. The plugin
//! runs the reconciler with `dry_run = true` (the engine is shared, so the
//! pass must remove nothing) and logs one "dangling container found (dry
//! run: not removed)" line per container it would remove.
//!
//! The plugin talks to dockerd through a counting proxy in the bench (a
//! Unix socket forwarding bytes both ways and noting every HTTP request
//! line), so the Docker API calls of a pass are counted, not assumed. A
//! pass starts when its list call reaches the proxy (the plugin logs no
//! line of its own there) and ends with its last dry-run line (the plugin's
//! own `@timestamp`); plugin CPU (`/proc` utime+stime, and the on-CPU time
//! from `/proc/PID/task/*/schedstat`, which is not cut to 10 ms ticks) and
//! dockerd CPU are read when the list call arrives and after the pass has
//! settled.
//!
//! The baseline, after each measured pass in the gap before the next: what
//! a person at a shell does for the same answer, `docker ps` (running
//! containers, as the plugin lists them) then one `docker inspect` of the
//! candidates a decision needs the environment of, through a second
//! counting proxy; and, apart, `docker ps -a`, which lists every container.
//!
//! Run with `make bench` or `cargo bench -p wasmdock-e2e --bench
//! reconciler`; it writes the `bench:reconciler` section of
//! `BENCHMARKS.md`. `WASMDOCK_BENCH_QUICK=1` makes 100 containers (10
//! running) and 2 passes and writes `target/BENCHMARKS-quick.md` instead.
//! Every container the bench made is removed at the end, on a panic too.

use std::fmt::Write as _;
use std::io::Read as _;
use std::ops::Not as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt as _;
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};
use wasmdock_e2e::PluginUnderTest;
use wasmdock_e2e::bench::{
    self, DaemonCpu, cpu_seconds, date, hclog_timestamp_us, median, met, pids_of, stat_fields,
};
use wasmdock_e2e::ids::{run_id, uuid_v4};
use wasmdock_e2e::images::{self, BUSYBOX_1};
use wasmdock_host::reconciler::TEST_TIMING_ENV;
use wasmdock_host::reconciler::plan::{ALLOC_ID_LABEL, alloc_uuid_suffix};
use wasmdock_host::rpc::proto::drivers::FingerprintRequest;

/// Passes every 5 s (counted from the end of the previous pass, which
/// leaves room for the baseline in between); every container is past the
/// grace at once.
const TIMING: &str = "period=5s,creation_grace=0s";
const PERIOD: Duration = Duration::from_secs(5);
/// Passes run and thrown away before the measured ones.
const WARM_UP_PASSES: usize = 1;
/// `docker create` commands at once while setting up.
const CREATE_CONCURRENCY: usize = 8;
/// Bound of one `docker` command.
const CLI_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound of one gRPC call to the plugin.
const RPC_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a pass may take to show up and to log its findings.
const PASS_TIMEOUT: Duration = Duration::from_secs(60);
/// Quiet time after a pass's last line before its end is read.
const SETTLE: Duration = Duration::from_millis(300);
/// What the plugin logs for each container a dry run would remove.
const DRY_RUN_MESSAGE: &str = "dangling container found (dry run: not removed)";
/// The label every container of this bench carries (value: the run id).
const RUN_LABEL: &str = "wasmdock.bench.reconciler";
/// What `docker ps` prints per container for the baseline.
const PS_FORMAT: &str = "{{.ID}}\t{{.Names}}\t{{.Label \"com.hashicorp.nomad.alloc_id\"}}";

/// How big a run is.
#[derive(Debug, Clone, Copy)]
struct Plan {
    containers: usize,
    running: usize,
    passes: usize,
}

impl Plan {
    fn new() -> Self {
        if bench::quick() {
            Self {
                containers: 100,
                running: 10,
                passes: 2,
            }
        } else {
            Self {
                containers: 1000,
                running: 50,
                passes: 5,
            }
        }
    }
}

// ---------------------------------------------------------------- containers

/// What a container of the bench looks like to the reconciler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Nomad's alloc_id label: the native rule removes it without an inspect.
    Labelled,
    /// Nomad mounts, `<task>-<alloc id>` name, `NOMAD_ALLOC_ID`: removed
    /// after an inspect.
    Legacy,
    /// Neither.
    Unrelated,
}

fn kind(index: usize) -> Kind {
    match index % 4 {
        0 => Kind::Labelled,
        1 => Kind::Legacy,
        _ => Kind::Unrelated,
    }
}

/// Name prefix of every container of this run.
fn prefix() -> String {
    format!("wasmdock-bench-reconciler-{}-", run_id())
}

/// The `docker run -d` / `docker create` arguments of container `index`.
fn container_args(index: usize, running: bool, mounts: &Path) -> Vec<String> {
    let mut args: Vec<String> = if running {
        vec!["run".into(), "-d".into()]
    } else {
        vec!["create".into()]
    };
    args.extend(["--label".into(), format!("{RUN_LABEL}={}", run_id())]);
    let name = format!("{}{index:04}", prefix());
    match kind(index) {
        Kind::Labelled => {
            args.extend(["--name".into(), name]);
            args.extend(["--label".into(), format!("{ALLOC_ID_LABEL}={}", uuid_v4())]);
        }
        Kind::Legacy => {
            let alloc = uuid_v4();
            args.extend(["--name".into(), format!("{name}-{alloc}")]);
            args.extend(["-e".into(), format!("NOMAD_ALLOC_ID={alloc}")]);
            for dir in ["alloc", "local", "secrets"] {
                args.extend(["-v".into(), format!("{}:/{dir}:ro", mounts.display())]);
            }
        }
        Kind::Unrelated => args.extend(["--name".into(), name]),
    }
    args.extend([BUSYBOX_1.into(), "sleep".into(), "1000".into()]);
    args
}

/// `docker args…` within `timeout`; its stdout, or a panic naming the
/// command.
async fn docker(args: &[String], timeout: Duration) -> String {
    let what = format!("docker {}", args.join(" "));
    let what: String = if what.len() > 200 {
        what.chars().take(200).chain(['…']).collect()
    } else {
        what
    };
    let output = tokio::time::timeout(
        timeout,
        tokio::process::Command::new("docker")
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("`{what}` did not finish within {timeout:?}"))
    .unwrap_or_else(|err| panic!("cannot run `{what}`: {err}"));
    assert!(
        output.status.success(),
        "`{what}` failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// `docker args…` from a plain thread within `timeout` (for the cleanup
/// in `Drop`, where no runtime may be at hand); killed when late.
fn docker_blocking(args: &[&str], timeout: Duration) -> Result<String, String> {
    let what = format!("docker {}", args.first().copied().unwrap_or_default());
    let mut child = std::process::Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("cannot run `{what}`: {err}"))?;
    let mut stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => {
                std::thread::park_timeout(Duration::from_millis(50));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("`{what}` did not finish within {timeout:?}"));
            }
            Err(err) => return Err(format!("waiting for `{what}`: {err}")),
        }
    };
    let text = reader.join().unwrap_or_default();
    if status.success() {
        Ok(text)
    } else {
        let mut err = String::new();
        if let Some(mut pipe) = child.stderr.take() {
            let _ = pipe.read_to_string(&mut err);
        }
        Err(format!("`{what}` failed ({status}): {}", err.trim()))
    }
}

/// Removes every container labelled with this run's id when dropped (a
/// panic included).
struct Containers;

impl Containers {
    fn remove_all() {
        let filter = format!("label={RUN_LABEL}={}", run_id());
        let ids = match docker_blocking(
            &["ps", "-aq", "--no-trunc", "--filter", &filter],
            CLI_TIMEOUT,
        ) {
            Ok(ids) => ids,
            Err(err) => {
                eprintln!("reconciler bench cleanup: {err}");
                return;
            }
        };
        let ids: Vec<&str> = ids.lines().filter(|l| !l.is_empty()).collect();
        eprintln!("removing the bench's {} containers", ids.len());
        for chunk in ids.chunks(100) {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend_from_slice(chunk);
            if let Err(err) = docker_blocking(&args, CLI_TIMEOUT) {
                eprintln!("reconciler bench cleanup: {err}");
            }
        }
    }
}

impl Drop for Containers {
    fn drop(&mut self) {
        Self::remove_all();
    }
}

/// Makes the plan's containers, `CREATE_CONCURRENCY` commands at a time;
/// returns how long that took.
async fn make_containers(plan: &Plan, mounts: &Path) -> Duration {
    let started = Instant::now();
    let commands: Vec<Vec<String>> = (0..plan.containers)
        .map(|i| container_args(i, i < plan.running, mounts))
        .collect();
    let made: Vec<String> = futures_util::stream::iter(commands)
        .map(|args| async move { docker(&args, CLI_TIMEOUT).await })
        .buffer_unordered(CREATE_CONCURRENCY)
        .collect()
        .await;
    assert_eq!(made.len(), plan.containers);
    started.elapsed()
}

// ---------------------------------------------------------------- /proc

/// On-CPU nanoseconds of every live thread of `pid`
/// (`/proc/PID/task/*/schedstat`, first field); 0 where unavailable.
fn on_cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// CPU seconds of this process's reaped children (cutime + cstime): the
/// `docker` commands of the baseline once they have exited.
fn children_cpu() -> f64 {
    let fields = stat_fields(std::process::id());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(13) + ticks(14)) as f64 / bench::clock_ticks()
}

/// The engine daemons' CPU from pids found once (no `pidof` per reading,
/// so a reading costs two /proc reads and spawns nothing).
#[derive(Debug, Clone)]
struct Daemons {
    dockerd: Vec<u32>,
    containerd: Vec<u32>,
}

impl Daemons {
    fn find() -> Self {
        Self {
            dockerd: pids_of("dockerd"),
            containerd: pids_of("containerd"),
        }
    }

    fn now(&self) -> DaemonCpu {
        DaemonCpu {
            dockerd: self.dockerd.iter().map(|&p| cpu_seconds(p)).sum(),
            containerd: self.containerd.iter().map(|&p| cpu_seconds(p)).sum(),
        }
    }
}

/// The plugin's and dockerd's CPU counters at one instant.
#[derive(Debug, Clone, Copy)]
struct Probe {
    plugin_cpu: f64,
    plugin_ns: u64,
    daemons: DaemonCpu,
}

fn micros(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

// ---------------------------------------------------------------- proxy

/// What an HTTP request asked the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    /// `GET /containers/json`.
    List,
    /// `GET /containers/{id}/json`.
    Inspect,
    /// Anything else (`/_ping`, `/version`, …).
    Other,
}

/// One request line seen by a proxy.
#[derive(Debug, Clone)]
struct Request {
    at_us: i64,
    call: Call,
    line: String,
    /// CPU counters read as the request arrived (list calls of a proxy
    /// with a probe), before it was forwarded.
    probe: Option<Probe>,
}

type ProbeFn = Arc<dyn Fn() -> Probe + Send + Sync>;

/// A Unix-socket proxy in front of dockerd that notes every request line.
struct Proxy {
    path: PathBuf,
    requests: Arc<Mutex<Vec<Request>>>,
    /// When the last response bytes went back to the client (µs since the
    /// epoch).
    last_response_us: Arc<AtomicU64>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    fn start(path: PathBuf, upstream: PathBuf, probe: Option<ProbeFn>) -> Self {
        let listener = UnixListener::bind(&path)
            .unwrap_or_else(|err| panic!("cannot listen on {}: {err}", path.display()));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let last_response_us = Arc::new(AtomicU64::new(0));
        let accept = {
            let (requests, last_response_us) = (requests.clone(), last_response_us.clone());
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let (requests, last, probe) =
                        (requests.clone(), last_response_us.clone(), probe.clone());
                    let upstream = upstream.clone();
                    tokio::spawn(async move {
                        if let Ok(server) = UnixStream::connect(&upstream).await {
                            forward(client, server, requests, last, probe).await;
                        }
                    });
                }
            })
        };
        Self {
            path,
            requests,
            last_response_us,
            accept,
        }
    }

    fn url(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    fn requests(&self) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn len(&self) -> usize {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    fn last_response_us(&self) -> i64 {
        i64::try_from(self.last_response_us.load(Ordering::Relaxed)).unwrap_or(i64::MAX)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Copies bytes both ways until either side closes; request lines going up
/// are noted (and the probe read before a list call is forwarded).
async fn forward(
    client: UnixStream,
    server: UnixStream,
    requests: Arc<Mutex<Vec<Request>>>,
    last_response_us: Arc<AtomicU64>,
    probe: Option<ProbeFn>,
) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = async {
        let mut pending: Vec<u8> = Vec::new();
        let mut buffer = vec![0_u8; 64 * 1024];
        loop {
            let n = match client_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            pending.extend_from_slice(&buffer[..n]);
            note_requests(&mut pending, &requests, probe.as_ref());
            if server_write.write_all(&buffer[..n]).await.is_err() {
                break;
            }
        }
        let _ = server_write.shutdown().await;
    };
    let down = async {
        let mut buffer = vec![0_u8; 64 * 1024];
        loop {
            let n = match server_read.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if client_write.write_all(&buffer[..n]).await.is_err() {
                break;
            }
            let now = u64::try_from(micros(SystemTime::now())).unwrap_or(0);
            last_response_us.fetch_max(now, Ordering::Relaxed);
        }
        let _ = client_write.shutdown().await;
    };
    tokio::join!(up, down);
}

const METHODS: [&str; 5] = ["GET /", "POST /", "HEAD /", "PUT /", "DELETE /"];

/// Takes the complete lines out of `pending` and notes those that are HTTP
/// request lines (a request line may follow a body on the same "line").
fn note_requests(pending: &mut Vec<u8>, requests: &Mutex<Vec<Request>>, probe: Option<&ProbeFn>) {
    while let Some(end) = pending.windows(2).position(|w| w == b"\r\n") {
        let line = String::from_utf8_lossy(&pending[..end]).into_owned();
        pending.drain(..end + 2);
        if !(line.ends_with(" HTTP/1.1") || line.ends_with(" HTTP/1.0")) {
            continue;
        }
        let Some(start) = METHODS.iter().filter_map(|m| line.rfind(m)).max() else {
            continue;
        };
        let line = line[start..].to_owned();
        let call = classify(&line);
        let probe = match (call, probe) {
            (Call::List, Some(probe)) => Some(probe()),
            _ => None,
        };
        requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Request {
                at_us: micros(SystemTime::now()),
                call,
                line,
                probe,
            });
    }
    // A body without line breaks: keep only its tail.
    if pending.len() > 64 * 1024 {
        let cut = pending.len() - 256;
        pending.drain(..cut);
    }
}

/// `GET /v1.47/containers/json?all=0 HTTP/1.1` → [`Call::List`].
fn classify(line: &str) -> Call {
    let mut words = line.split(' ');
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let path = match path.strip_prefix("/v") {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => {
            rest.find('/').map_or("", |i| &rest[i..])
        }
        _ => path,
    };
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        ("GET", ["containers", "json"]) => Call::List,
        ("GET", ["containers", _, "json"]) => Call::Inspect,
        _ => Call::Other,
    }
}

/// Where the engine listens: `DOCKER_HOST` when it is a Unix socket, else
/// `/var/run/docker.sock`.
fn engine_socket() -> PathBuf {
    std::env::var("DOCKER_HOST")
        .ok()
        .and_then(|host| host.strip_prefix("unix://").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/var/run/docker.sock"))
}

// ---------------------------------------------------------------- plugin log

/// A dry-run line: when (the plugin's `@timestamp`, µs) and which container.
#[derive(Debug, Clone)]
struct Found {
    at_us: i64,
    name: String,
}

fn dry_run_lines(plugin: &PluginUnderTest) -> Vec<Found> {
    plugin
        .stderr_lines()
        .iter()
        .filter(|l| l.contains(DRY_RUN_MESSAGE))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["@message"] == DRY_RUN_MESSAGE)
        .filter_map(|v| {
            Some(Found {
                at_us: hclog_timestamp_us(v["@timestamp"].as_str()?)?,
                name: v["name"].as_str().unwrap_or_default().to_owned(),
            })
        })
        .collect()
}

// ---------------------------------------------------------------- measuring

/// One measured plugin pass.
#[derive(Debug, Clone, Copy)]
struct Pass {
    /// List call at the proxy → last dry-run line.
    wall_ms: f64,
    /// List call → last response bytes back to the plugin.
    engine_ms: f64,
    plugin_cpu_ms: f64,
    plugin_on_cpu_ms: f64,
    dockerd_ms: f64,
    lists: usize,
    inspects: usize,
    others: usize,
    /// Dry-run lines about the bench's containers, and about others.
    found_ours: usize,
    found_others: usize,
}

/// One baseline round: `docker ps` + `docker inspect`, and `docker ps -a`.
#[derive(Debug, Clone, Copy, Default)]
struct Cli {
    wall_ms: f64,
    cpu_ms: f64,
    dockerd_ms: f64,
    lists: usize,
    inspects: usize,
    others: usize,
    /// Running containers listed, and the candidates inspected.
    listed: usize,
    candidates: usize,
}

async fn wait_for<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "waited {timeout:?} for {what} in vain"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct Setup {
    plugin: PluginUnderTest,
    plugin_proxy: Proxy,
    cli_proxy: Proxy,
    probe: ProbeFn,
    daemons: Daemons,
    /// Dry-run lines expected per pass about the bench's containers.
    expected_ours: usize,
    /// Requests the plugin made before its first Fingerprint answer.
    after_fingerprint: usize,
}

impl Setup {
    /// Measures the pass whose list call is the `index`-th (from 0) the
    /// plugin makes.
    async fn pass(&self, index: usize) -> Pass {
        // Lists before the first Fingerprint answer (the rediscovery of
        // pause containers, filtered by label) are no pass's.
        let list_calls = || -> Vec<Request> {
            self.plugin_proxy.requests()[self.after_fingerprint..]
                .iter()
                .filter(|r| r.call == Call::List)
                .cloned()
                .collect()
        };
        let start = wait_for(
            &format!("the list call of reconciler pass {}", index + 1),
            PERIOD + PASS_TIMEOUT,
            || list_calls().into_iter().nth(index),
        )
        .await;
        let before = start.probe.expect("list calls carry a probe");
        let ours = |lines: &[Found]| {
            lines
                .iter()
                .filter(|f| f.at_us >= start.at_us && f.name.starts_with(&prefix()))
                .count()
        };
        wait_for(
            &format!(
                "the {} dry-run lines of pass {} (does another reconciler remove the bench's \
                containers?)",
                self.expected_ours,
                index + 1
            ),
            PASS_TIMEOUT,
            || (ours(&dry_run_lines(&self.plugin)) >= self.expected_ours).then_some(()),
        )
        .await;
        tokio::time::sleep(SETTLE).await;
        let after = (self.probe)();
        let requests: Vec<Request> = self
            .plugin_proxy
            .requests()
            .into_iter()
            .filter(|r| r.at_us >= start.at_us)
            .collect();
        let count = |call: Call| requests.iter().filter(|r| r.call == call).count();
        for other in requests.iter().filter(|r| r.call == Call::Other) {
            eprintln!("pass {}: other request {}", index + 1, other.line);
        }
        assert_eq!(
            count(Call::List),
            1,
            "the next pass began within {SETTLE:?} of this one's last line"
        );
        let lines: Vec<Found> = dry_run_lines(&self.plugin)
            .into_iter()
            .filter(|f| f.at_us >= start.at_us)
            .collect();
        let last_line = lines.iter().map(|f| f.at_us).max().unwrap_or(start.at_us);
        let found_ours = ours(&lines);
        Pass {
            wall_ms: (last_line - start.at_us) as f64 / 1000.0,
            engine_ms: (self.plugin_proxy.last_response_us() - start.at_us) as f64 / 1000.0,
            plugin_cpu_ms: 1000.0 * (after.plugin_cpu - before.plugin_cpu),
            plugin_on_cpu_ms: (after.plugin_ns.saturating_sub(before.plugin_ns)) as f64 / 1e6,
            dockerd_ms: 1000.0 * after.daemons.since(before.daemons).0,
            lists: count(Call::List),
            inspects: count(Call::Inspect),
            others: count(Call::Other),
            found_ours,
            found_others: lines.len() - found_ours,
        }
    }

    /// Runs `docker -H <cli proxy> args…` and measures it.
    async fn cli(&self, args: &[&str]) -> (String, Cli) {
        let mut full = vec!["-H".to_owned(), self.cli_proxy.url()];
        full.extend(args.iter().map(|a| (*a).to_owned()));
        let first = self.cli_proxy.len();
        let daemons = self.daemons.now();
        let cpu = children_cpu();
        let started = Instant::now();
        let out = docker(&full, CLI_TIMEOUT).await;
        let wall = started.elapsed();
        let cpu = children_cpu() - cpu;
        let dockerd = self.daemons.now().since(daemons).0;
        let requests = self.cli_proxy.requests();
        let requests = &requests[first.min(requests.len())..];
        let count = |call: Call| requests.iter().filter(|r| r.call == call).count();
        let measured = Cli {
            wall_ms: wall.as_secs_f64() * 1000.0,
            cpu_ms: cpu * 1000.0,
            dockerd_ms: dockerd * 1000.0,
            lists: count(Call::List),
            inspects: count(Call::Inspect),
            others: count(Call::Other),
            listed: 0,
            candidates: 0,
        };
        (out, measured)
    }

    /// `docker ps`, then `docker inspect` of the candidates the reconciler
    /// needs the environment of (no alloc_id label, a `<task>-<alloc id>`
    /// name); one figure for both commands.
    async fn list_and_inspect(&self) -> Cli {
        let (listing, list) = self.cli(&["ps", "--no-trunc", "--format", PS_FORMAT]).await;
        let rows: Vec<Vec<&str>> = listing
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.split('\t').collect())
            .collect();
        let candidates: Vec<&str> = rows
            .iter()
            .filter(|row| {
                row.get(2).is_none_or(|label| label.is_empty())
                    && row.get(1).and_then(|n| alloc_uuid_suffix(n)).is_some()
            })
            .map(|row| row[0])
            .collect();
        let mut both = list;
        if !candidates.is_empty() {
            let mut args = vec!["inspect", "--format", "{{.Id}} {{json .Config.Env}}"];
            args.extend_from_slice(&candidates);
            let (envs, inspect) = self.cli(&args).await;
            assert_eq!(
                envs.lines().count(),
                candidates.len(),
                "one line per inspect"
            );
            both.wall_ms += inspect.wall_ms;
            both.cpu_ms += inspect.cpu_ms;
            both.dockerd_ms += inspect.dockerd_ms;
            both.lists += inspect.lists;
            both.inspects += inspect.inspects;
            both.others += inspect.others;
        }
        both.listed = rows.len();
        both.candidates = candidates.len();
        both
    }
}

fn main() -> ExitCode {
    bench::main("reconciler", bench)
}

async fn bench() -> String {
    let plan = Plan::new();
    tokio::task::spawn_blocking(images::busybox)
        .await
        .expect("the test image");
    let mounts = tempfile::Builder::new()
        .prefix("wasmdock-bench-reconciler-")
        .tempdir()
        .expect("a mount dir");
    let _containers = Containers;
    eprintln!(
        "making {} containers ({} running), {CREATE_CONCURRENCY} at a time",
        plan.containers, plan.running
    );
    let made_in = make_containers(&plan, mounts.path()).await;
    eprintln!("made them in {made_in:.1?}");
    let running_kind = |k: Kind| (0..plan.running).filter(|&i| kind(i) == k).count();
    let expected_ours = running_kind(Kind::Labelled) + running_kind(Kind::Legacy);

    let sockets = tempfile::Builder::new()
        .prefix("wasmdock-bench-proxy-")
        .tempdir()
        .expect("a socket dir");
    let daemons = Daemons::find();
    let plugin_pid = Arc::new(AtomicU32::new(0));
    let probe: ProbeFn = {
        let (daemons, plugin_pid) = (daemons.clone(), plugin_pid.clone());
        Arc::new(move || {
            let pid = plugin_pid.load(Ordering::Relaxed);
            Probe {
                plugin_cpu: cpu_seconds(pid),
                plugin_ns: on_cpu_ns(pid),
                daemons: daemons.now(),
            }
        })
    };
    let plugin_proxy = Proxy::start(
        sockets.path().join("plugin.sock"),
        engine_socket(),
        Some(probe.clone()),
    );
    let cli_proxy = Proxy::start(sockets.path().join("cli.sock"), engine_socket(), None);
    let config = json!({
        "endpoint": plugin_proxy.url(),
        "gc": { "dangling_containers": { "enabled": true, "dry_run": true } },
    });
    let plugin = tokio::time::timeout(
        RPC_TIMEOUT,
        PluginUnderTest::start_with_env(config, "wasmdock", &[(TEST_TIMING_ENV, TIMING)]),
    )
    .await
    .expect("launching the plugin (handshake, SetConfig, Init) timed out")
    .expect("the plugin starts");
    plugin_pid.store(plugin.pid().expect("the plugin runs"), Ordering::Relaxed);
    // The reconciler starts with the first Fingerprint.
    tokio::time::timeout(RPC_TIMEOUT, async {
        let mut stream = plugin
            .driver()
            .fingerprint(FingerprintRequest {})
            .await
            .expect("Fingerprint")
            .into_inner();
        stream.message().await.expect("a fingerprint")
    })
    .await
    .expect("the first Fingerprint answer timed out");
    let after_fingerprint = plugin_proxy.len();
    for request in plugin_proxy.requests() {
        eprintln!("before the first pass: {}", request.line);
    }
    let setup = Setup {
        plugin,
        plugin_proxy,
        cli_proxy,
        probe,
        daemons,
        expected_ours,
        after_fingerprint,
    };

    let mut passes = Vec::new();
    let mut cli = Vec::new();
    let mut cli_all = Vec::new();
    for index in 0..WARM_UP_PASSES + plan.passes {
        let pass = setup.pass(index).await;
        if index < WARM_UP_PASSES {
            eprintln!("warm-up pass: {pass:?}");
            continue;
        }
        eprintln!("pass {}: {pass:?}", index + 1 - WARM_UP_PASSES);
        passes.push(pass);
        let lists_before = setup.plugin_proxy.len();
        cli.push(setup.list_and_inspect().await);
        let (all, mut ps_all) = setup
            .cli(&["ps", "-a", "--no-trunc", "--format", PS_FORMAT])
            .await;
        ps_all.listed = all.lines().count();
        cli_all.push(ps_all);
        let during: Vec<Request> = setup.plugin_proxy.requests()[lists_before..].to_vec();
        assert!(
            during.iter().all(|r| r.call != Call::List),
            "a reconciler pass began while the baseline ran; lengthen PERIOD"
        );
    }
    let engine_containers = cli_all.iter().map(|c| c.listed).max().unwrap_or(0);
    let mut setup = setup;
    let _ = tokio::time::timeout(RPC_TIMEOUT, setup.plugin.shutdown()).await;
    drop(setup);
    render(
        &plan,
        made_in,
        expected_ours,
        engine_containers,
        &passes,
        &cli,
        &cli_all,
    )
}

// ---------------------------------------------------------------- report

/// A table row: label, the plugin's values per pass, the CLI's values per
/// round (none where the CLI has no counterpart), decimals.
type Row<'a> = (&'a str, Vec<f64>, Option<Vec<f64>>, usize);

fn render(
    plan: &Plan,
    made_in: Duration,
    expected_ours: usize,
    engine_containers: usize,
    passes: &[Pass],
    cli: &[Cli],
    cli_all: &[Cli],
) -> String {
    let kinds = |k: Kind, running: bool| {
        (0..plan.containers)
            .filter(|&i| kind(i) == k && (i < plan.running) == running)
            .count()
    };
    let pass_col = |f: &dyn Fn(&Pass) -> f64| -> Vec<f64> { passes.iter().map(f).collect() };
    let cli_col = |f: &dyn Fn(&Cli) -> f64| -> Vec<f64> { cli.iter().map(f).collect() };
    let all_col = |f: &dyn Fn(&Cli) -> f64| -> Vec<f64> { cli_all.iter().map(f).collect() };
    let listed = median(cli.iter().map(|c| c.listed as f64));
    let candidates = median(cli.iter().map(|c| c.candidates as f64));
    let lists = median(passes.iter().map(|p| p.lists as f64));
    let inspects = median(passes.iter().map(|p| p.inspects as f64));
    let calls_ok = passes
        .iter()
        .zip(cli)
        .all(|(p, c)| p.lists == 1 && p.inspects == c.candidates);
    let on_cpu = median(passes.iter().map(|p| p.plugin_on_cpu_ms));
    let cpu_ticks = median(passes.iter().map(|p| p.plugin_cpu_ms));

    let mut out = String::new();
    let _ = writeln!(out, "## Reconciler\n");
    let _ = writeln!(
        out,
        "Produced by `cargo bench -p wasmdock-e2e --bench reconciler` (part of `make bench`).\n"
    );
    if bench::quick() {
        let _ = writeln!(
            out,
            "**Quick run** (`{}=1`): too small to quote; it only shows the bench works.\n",
            bench::QUICK_ENV
        );
    }
    let _ = writeln!(out, "- Date: {}", date());
    let _ = writeln!(
        out,
        "- Plugin: release build; `gc.dangling_containers {{ enabled = true, dry_run = true }}`, \
        period and creation grace shortened to `{TIMING}` with `{TEST_TIMING_ENV}`; its Docker \
        `endpoint` is the bench's counting proxy"
    );
    let _ = writeln!(
        out,
        "- Containers: {} made by the bench in {:.0} s ({CREATE_CONCURRENCY} `docker create` at \
        a time, not timed below), {} of them running `sleep 1000` — {} labelled \
        `{ALLOC_ID_LABEL}`, {} of the legacy shape (Nomad mounts, `<task>-<alloc id>` name, \
        `NOMAD_ALLOC_ID`), {} unrelated; of the {} created only: {} labelled, {} legacy, {} \
        unrelated. None is tracked by a task. {} containers on the engine in all.\n",
        plan.containers,
        made_in.as_secs_f64(),
        plan.running,
        kinds(Kind::Labelled, true),
        kinds(Kind::Legacy, true),
        kinds(Kind::Unrelated, true),
        plan.containers - plan.running,
        kinds(Kind::Labelled, false),
        kinds(Kind::Legacy, false),
        kinds(Kind::Unrelated, false),
        engine_containers,
    );
    let _ = writeln!(out, "### One pass against one list + inspect by the CLI\n");
    let _ = writeln!(
        out,
        "{} measured passes after {WARM_UP_PASSES} warm-up; after each, in the gap before the \
        next, the baseline: `docker ps --no-trunc --format …` then one `docker inspect` of the \
        candidates it shows (no alloc_id label, a `<task>-<alloc id>` name), both through a \
        second counting proxy. Median (min–max). A pass runs from its list call reaching the \
        proxy to its last dry-run log line (the plugin logs no line of its own when a pass \
        starts or ends); \"engine part\" ends with the last response bytes. Client CPU: /proc \
        utime+stime of the plugin over the pass (read as the list call arrives and {} ms after \
        the last line; 10 ms ticks) or of the two `docker` processes; on-CPU time: \
        `/proc/PID/task/*/schedstat` (ns). API requests: request lines counted by the proxies.\n",
        plan.passes,
        SETTLE.as_millis()
    );
    let _ = writeln!(
        out,
        "| per pass | wasmdock: one reconciler pass | CLI: `docker ps` + `docker inspect` | \
        wasmdock / CLI |"
    );
    let _ = writeln!(out, "|---|---|---|---|");
    let rows: [Row<'_>; 8] = [
        (
            "Wall time, ms",
            pass_col(&|p| p.wall_ms),
            Some(cli_col(&|c| c.wall_ms)),
            1,
        ),
        (
            "… of it the engine part, ms",
            pass_col(&|p| p.engine_ms),
            None,
            1,
        ),
        (
            "Client CPU (utime+stime), ms",
            pass_col(&|p| p.plugin_cpu_ms),
            Some(cli_col(&|c| c.cpu_ms)),
            0,
        ),
        (
            "Plugin on-CPU time (schedstat), ms",
            pass_col(&|p| p.plugin_on_cpu_ms),
            None,
            2,
        ),
        (
            "dockerd CPU, ms",
            pass_col(&|p| p.dockerd_ms),
            Some(cli_col(&|c| c.dockerd_ms)),
            0,
        ),
        (
            "API requests: list (`GET /containers/json`)",
            pass_col(&|p| p.lists as f64),
            Some(cli_col(&|c| c.lists as f64)),
            0,
        ),
        (
            "API requests: inspect (`GET /containers/{id}/json`)",
            pass_col(&|p| p.inspects as f64),
            Some(cli_col(&|c| c.inspects as f64)),
            0,
        ),
        (
            "API requests: other",
            pass_col(&|p| p.others as f64),
            Some(cli_col(&|c| c.others as f64)),
            0,
        ),
    ];
    for (label, ours, theirs, digits) in rows {
        let line = match theirs {
            Some(theirs) => {
                let ratio = label.starts_with("API").not().then_some(2);
                bench::row(label, &[ours, theirs], digits, ratio)
            }
            None => format!(
                "| {label} | {} | — | — |",
                bench::cell(ours.into_iter(), digits)
            ),
        };
        let _ = writeln!(out, "{line}");
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "The CLI's \"other\" requests are its `HEAD /_ping` version checks, one per command. \
        Dry-run lines per pass about the bench's containers: {} (expected {expected_ours}: its \
        running labelled and legacy ones); about containers it did not make: {}.\n",
        bench::cell(passes.iter().map(|p| p.found_ours as f64), 0),
        bench::cell(passes.iter().map(|p| p.found_others as f64), 0),
    );
    let _ = writeln!(
        out,
        "`docker ps -a --no-trunc --format …` alone (every container, stopped ones included: {} \
        listed): wall {} ms, CLI CPU {} ms, dockerd CPU {} ms.\n",
        engine_containers,
        bench::cell(all_col(&|c| c.wall_ms).into_iter(), 1),
        bench::cell(all_col(&|c| c.cpu_ms).into_iter(), 0),
        bench::cell(all_col(&|c| c.dockerd_ms).into_iter(), 0),
    );
    let _ = writeln!(out, "### Goals\n");
    let _ = writeln!(
        out,
        "- A pass over {} containers makes one list call and inspects only the candidates \
        (by design, `host/src/reconciler`: one `list_running` call, `all=false`, so only the \
        {} running containers come back; one inspect per untracked running container past the \
        grace whose decision needs its environment — legacy-shaped ones without the label): \
        measured {lists:.0} list + {inspects:.0} inspect per pass (median) against 1 + \
        {candidates:.0} candidates the CLI found: {}.",
        engine_containers,
        listed,
        met(calls_ok),
    );
    let _ = writeln!(
        out,
        "- Plugin CPU per pass (no numeric goal): {on_cpu:.2} ms on-CPU ({cpu_ticks:.0} ms in \
        /proc ticks), {:.1} µs per listed (running) container, {:.2} µs per container on the \
        engine.",
        1000.0 * on_cpu / listed.max(1.0),
        1000.0 * on_cpu / (engine_containers.max(1) as f64),
    );
    out
}
