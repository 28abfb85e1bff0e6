//! Startup benchmark: how long a Nomad client waits for the plugin, what the
//! plugin holds while idle, and what loading policy guests adds.
//!
//! * **Launch.** The release binary is started exactly as a Nomad agent
//!   starts an external plugin (magic cookie, go-plugin environment, a
//!   private `PLUGIN_UNIX_SOCKET_DIR`, stderr drained) and timed from spawn
//!   to: its handshake line on stdout; the PluginInfo answer over the new
//!   socket; SetConfig and Init answered; the first Fingerprint answer
//!   (which asks the engine for its version and info). Two seconds later its
//!   idle VmRSS, threads and descriptors are read; then GRPCController
//!   Shutdown is timed to the process's exit. Beside it, alternating in the
//!   same rounds: `/bin/true` spawned and reaped (what any process start
//!   costs here) and `docker version` (a CLI process that starts and gets
//!   one answer from the engine, like spawn → first Fingerprint).
//! * **Policy guests.** A plugin configured with the four example guests
//!   (one per hook) is launched and sent its first Fingerprint, which loads
//!   them. Measured from the Fingerprint request to the last "policy module
//!   loaded" line (the plugin's own `@timestamp`), with its compiled-module
//!   cache empty (a fresh `run_dir`: every guest compiled with Cranelift)
//!   and warm (the `run_dir` of a previous launch: every guest taken from
//!   its sealed artifact), alternating. The plugin's own `load_ms` per
//!   module is summed too, and its idle VmRSS with the four guests loaded.
//!
//! No randomness is involved. Run with `make bench` or `cargo bench -p
//! wasmdock-e2e --bench startup`; it writes the `bench:startup` section of
//! `BENCHMARKS.md`. `WASMDOCK_BENCH_QUICK=1` runs 3 launch rounds and 2
//! guest rounds and writes `target/BENCHMARKS-quick.md` instead.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;
use wasmdock_e2e::PluginUnderTest;
use wasmdock_e2e::bench::{self, cell, date, hclog_timestamp_us, median, met, vm_rss_kib};
use wasmdock_e2e::calls::first_fingerprint;
use wasmdock_e2e::guests::guest;
use wasmdock_e2e::plugin::{plugin_binary, set_config_request};
use wasmdock_host::dev::launcher::{connect, parse_handshake};
use wasmdock_host::plugin::handshake::{
    APP_PROTOCOL_VERSION, MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE,
};
use wasmdock_host::rpc::proto::base::PluginInfoRequest;
use wasmdock_host::rpc::proto::base::base_plugin_client::BasePluginClient;
use wasmdock_host::rpc::proto::drivers::driver_client::DriverClient;
use wasmdock_host::rpc::proto::drivers::fingerprint_response::HealthState;
use wasmdock_host::rpc::proto::drivers::{FingerprintRequest, InitRequest};
use wasmdock_host::rpc::proto::plugin::Empty;
use wasmdock_host::rpc::proto::plugin::grpc_controller_client::GrpcControllerClient;

/// Bound of every step.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the plugin idles before its memory is read.
const IDLE: Duration = Duration::from_secs(2);
/// The log line of a loaded module.
const LOADED: &str = "policy module loaded";
/// An example guest: its crate, the hook it serves, its config values.
type Guest = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);
/// The example guests, one per hook, with the config each needs.
const GUESTS: [Guest; 4] = [
    (
        "image-allowlist",
        "task-admission",
        &[("allowed", "wasmdock-test/*")],
    ),
    ("gpu-runtime", "gpu-runtime", &[]),
    ("env-mount-matcher", "reconciler-match", &[]),
    ("stats-tagger", "stats-transform", &[]),
];
/// Goals.
const HANDSHAKE_GOAL_MS: f64 = 50.0;
/// One docker_logger's RSS, the low end of what hashicorp/nomad#6900
/// reports: the whole idle plugin should cost less than one of Nomad's
/// per-task helpers.
const IDLE_RSS_GOAL_KIB: f64 = 18_280.0;
const CACHED_LOAD_GOAL_MS: f64 = 20.0;

fn main() -> ExitCode {
    bench::main("startup", bench)
}

/// How big a run is.
#[derive(Debug, Clone, Copy)]
struct Plan {
    warm_up: usize,
    rounds: usize,
    guest_rounds: usize,
}

impl Plan {
    fn new() -> Self {
        if bench::quick() {
            Self {
                warm_up: 1,
                rounds: 3,
                guest_rounds: 2,
            }
        } else {
            Self {
                warm_up: 3,
                rounds: 20,
                guest_rounds: 7,
            }
        }
    }
}

async fn bounded<T>(what: &str, call: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(STEP_TIMEOUT, call)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {STEP_TIMEOUT:?}"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

// ---------------------------------------------------------------- launch

/// One launch of the plugin, times from spawn.
#[derive(Debug, Clone, Copy)]
struct Launch {
    handshake_ms: f64,
    info_ms: f64,
    configured_ms: f64,
    fingerprint_ms: f64,
    shutdown_ms: f64,
    rss_kib: f64,
    threads: f64,
    fds: f64,
}

fn threads(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

fn fds(pid: u32) -> f64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0.0, |d| d.count() as f64)
}

/// The plugin config of every launch: defaults, a private `run_dir`, and no
/// reconciler (it would look at every container of a shared engine).
fn launch_config(run_dir: &Path) -> serde_json::Value {
    json!({
        "run_dir": run_dir.to_string_lossy(),
        "gc": { "dangling_containers": { "enabled": false } },
    })
}

async fn launch_once(binary: &Path) -> Launch {
    let dir = tempfile::Builder::new()
        .prefix("wasmdock-bench-startup-")
        .tempdir()
        .expect("a temp dir");
    let mut command = Command::new(binary);
    command
        .env(MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE)
        .env("PLUGIN_MIN_PORT", "10000")
        .env("PLUGIN_MAX_PORT", "25000")
        .env("PLUGIN_PROTOCOL_VERSIONS", APP_PROTOCOL_VERSION.to_string())
        .env("PLUGIN_UNIX_SOCKET_DIR", dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let began = Instant::now();
    let mut child = command.spawn().expect("start the plugin");
    let pid = child.id().expect("a pid");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    bounded("the handshake line", stdout.read_line(&mut line))
        .await
        .expect("read the handshake line");
    let handshake_ms = ms(began.elapsed());
    // Nomad keeps reading both streams; so does the bench.
    let stderr = child.stderr.take().expect("stderr");
    tokio::spawn(async move {
        let _ = tokio::io::copy(&mut stdout, &mut tokio::io::sink()).await;
    });
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(_)) = lines.next_line().await {}
    });
    let handshake = parse_handshake(line.trim_end()).expect("a go-plugin handshake line");
    let channel = bounded("connecting", connect(&handshake.address))
        .await
        .expect("connect to the plugin socket");
    bounded(
        "PluginInfo",
        BasePluginClient::new(channel.clone()).plugin_info(PluginInfoRequest {}),
    )
    .await
    .expect("PluginInfo");
    let info_ms = ms(began.elapsed());
    let run_dir = dir.path().join("run");
    bounded(
        "SetConfig",
        BasePluginClient::new(channel.clone())
            .set_config(set_config_request(&launch_config(&run_dir))),
    )
    .await
    .expect("SetConfig");
    bounded(
        "Init",
        DriverClient::new(channel.clone()).init(InitRequest {}),
    )
    .await
    .expect("Init");
    let configured_ms = ms(began.elapsed());
    let mut stream = bounded(
        "Fingerprint",
        DriverClient::new(channel.clone()).fingerprint(FingerprintRequest {}),
    )
    .await
    .expect("Fingerprint")
    .into_inner();
    let first = bounded("the first fingerprint", stream.message())
        .await
        .expect("a fingerprint")
        .expect("the stream is open");
    let fingerprint_ms = ms(began.elapsed());
    assert_eq!(
        first.health(),
        HealthState::Healthy,
        "the plugin reports the engine unhealthy: {}",
        first.health_description
    );
    tokio::time::sleep(IDLE).await;
    let (rss_kib, threads, fds) = (vm_rss_kib(pid) as f64, threads(pid), fds(pid));
    drop(stream);
    let stopping = Instant::now();
    bounded(
        "GRPCController.Shutdown",
        GrpcControllerClient::new(channel).shutdown(Empty {}),
    )
    .await
    .expect("Shutdown");
    let status = bounded("the plugin's exit", child.wait())
        .await
        .expect("wait for the plugin");
    let shutdown_ms = ms(stopping.elapsed());
    assert!(status.success(), "the plugin exited with {status}");
    Launch {
        handshake_ms,
        info_ms,
        configured_ms,
        fingerprint_ms,
        shutdown_ms,
        rss_kib,
        threads,
        fds,
    }
}

/// `program args…` spawned and reaped; its wall time.
async fn process_ms(program: &str, args: &[&str]) -> f64 {
    let began = Instant::now();
    let output = bounded(
        program,
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|err| panic!("cannot run {program}: {err}"));
    let took = ms(began.elapsed());
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    took
}

const DOCKER_VERSION: [&str; 3] = ["version", "--format", "{{.Server.Version}}"];

#[derive(Debug, Default)]
struct Launches {
    plugin: Vec<Launch>,
    true_ms: Vec<f64>,
    docker_ms: Vec<f64>,
}

async fn launches(plan: Plan) -> Launches {
    let binary = tokio::task::spawn_blocking(plugin_binary)
        .await
        .expect("the plugin binary");
    let mut all = Launches::default();
    for round in 0..plan.warm_up + plan.rounds {
        let warm_up = round < plan.warm_up;
        eprintln!(
            "launch: round {}/{}{}",
            round + 1,
            plan.warm_up + plan.rounds,
            if warm_up { " (warm-up)" } else { "" }
        );
        // Each round starts one path further on, so none always goes first.
        for k in 0..3 {
            match (round + k) % 3 {
                0 => {
                    let launch = launch_once(binary).await;
                    if !warm_up {
                        all.plugin.push(launch);
                    }
                }
                1 => {
                    let took = process_ms("/bin/true", &[]).await;
                    if !warm_up {
                        all.true_ms.push(took);
                    }
                }
                _ => {
                    let took = process_ms("docker", &DOCKER_VERSION).await;
                    if !warm_up {
                        all.docker_ms.push(took);
                    }
                }
            }
        }
    }
    all
}

// ---------------------------------------------------------------- policy guests

/// One launch with the four guests.
#[derive(Debug, Clone, Copy)]
struct GuestLoad {
    /// Fingerprint request → last "policy module loaded" line.
    wall_ms: f64,
    /// Sum of the plugin's own `load_ms` of the four modules.
    load_ms_sum: f64,
    rss_kib: f64,
}

fn guest_config(run_dir: &Path) -> serde_json::Value {
    let modules: Vec<_> = GUESTS
        .iter()
        .map(|(name, hook, config)| {
            let config: serde_json::Map<_, _> = config
                .iter()
                .map(|(k, v)| ((*k).to_owned(), json!(v)))
                .collect();
            json!({
                "name": name,
                "path": guest(name).to_string_lossy(),
                "hooks": [hook],
                "config": config,
            })
        })
        .collect();
    json!({ "run_dir": run_dir.to_string_lossy(), "policy": { "module": modules } })
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Launches a plugin with the guests and `run_dir`, loads them with its
/// first Fingerprint; every module's origin must be `expect_origin`.
async fn load_guests(run_dir: &Path, expect_origin: &str) -> GuestLoad {
    let mut plugin = PluginUnderTest::start(guest_config(run_dir), "wasmdock")
        .await
        .expect("start the plugin with the guests");
    let sent = now_us();
    bounded("the first fingerprint", first_fingerprint(&plugin)).await;
    let deadline = Instant::now() + STEP_TIMEOUT;
    let loaded = loop {
        let lines: Vec<serde_json::Value> = plugin
            .stderr_lines()
            .iter()
            .filter(|l| l.contains(LOADED))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if lines.len() >= GUESTS.len() {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {} guests loaded within {STEP_TIMEOUT:?}; plugin log:\n{}",
            lines.len(),
            GUESTS.len(),
            plugin.stderr_lines().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let last = loaded
        .iter()
        .filter_map(|v| hclog_timestamp_us(v["@timestamp"].as_str()?))
        .max()
        .expect("timestamped load lines");
    for line in &loaded {
        assert_eq!(
            line["origin"].as_str(),
            Some(expect_origin),
            "module {} was not loaded from where this round expects: {line}",
            line["module"]
        );
    }
    let load_ms_sum = loaded.iter().filter_map(|v| v["load_ms"].as_f64()).sum();
    tokio::time::sleep(IDLE).await;
    let rss_kib = vm_rss_kib(plugin.pid().expect("running")) as f64;
    plugin.shutdown().await.expect("shut the plugin down");
    GuestLoad {
        wall_ms: (last - sent) as f64 / 1000.0,
        load_ms_sum,
        rss_kib,
    }
}

#[derive(Debug, Default)]
struct Guests {
    cold: Vec<GuestLoad>,
    cached: Vec<GuestLoad>,
    sizes_kib: Vec<(&'static str, u64)>,
}

async fn guests(plan: Plan) -> Guests {
    let sizes_kib = tokio::task::spawn_blocking(|| {
        GUESTS
            .iter()
            .map(|(name, ..)| {
                let size = std::fs::metadata(guest(name)).map_or(0, |m| m.len());
                (*name, size / 1024)
            })
            .collect()
    })
    .await
    .expect("build the guests");
    let warm = tempfile::Builder::new()
        .prefix("wasmdock-bench-startup-cache-")
        .tempdir()
        .expect("a temp dir");
    let warm_run_dir = warm.path().join("run");
    // Fills the cache the cached rounds use (and warms the page cache).
    load_guests(&warm_run_dir, "Compiled").await;
    let mut all = Guests {
        sizes_kib,
        ..Guests::default()
    };
    for round in 0..plan.guest_rounds {
        eprintln!("guests: round {}/{}", round + 1, plan.guest_rounds);
        let cold_first = round % 2 == 0;
        for cold in [cold_first, !cold_first] {
            if cold {
                let fresh = tempfile::Builder::new()
                    .prefix("wasmdock-bench-startup-cold-")
                    .tempdir()
                    .expect("a temp dir");
                all.cold
                    .push(load_guests(&fresh.path().join("run"), "Compiled").await);
            } else {
                all.cached.push(load_guests(&warm_run_dir, "Cached").await);
            }
        }
    }
    all
}

// ---------------------------------------------------------------- the bench

async fn bench() -> String {
    let plan = Plan::new();
    let launches = launches(plan).await;
    let guests = guests(plan).await;
    render(plan, &launches, &guests)
}

fn render(plan: Plan, l: &Launches, g: &Guests) -> String {
    let mut out = String::new();
    let mut w = |line: String| {
        let _ = writeln!(out, "{line}");
    };
    let col = |f: fn(&Launch) -> f64| l.plugin.iter().map(f).collect::<Vec<f64>>();
    let handshake = col(|x| x.handshake_ms);
    let fingerprint = col(|x| x.fingerprint_ms);
    let rss = col(|x| x.rss_kib);
    let docker = &l.docker_ms;
    let true_ms = &l.true_ms;
    let fp_vs_docker = median(fingerprint.iter().copied()) / median(docker.iter().copied());
    let cold_wall: Vec<f64> = g.cold.iter().map(|x| x.wall_ms).collect();
    let cached_wall: Vec<f64> = g.cached.iter().map(|x| x.wall_ms).collect();
    let cold_sum: Vec<f64> = g.cold.iter().map(|x| x.load_ms_sum).collect();
    let cached_sum: Vec<f64> = g.cached.iter().map(|x| x.load_ms_sum).collect();
    let guests_rss: Vec<f64> = g.cached.iter().map(|x| x.rss_kib).collect();
    let per_guest_cached = median(cached_sum.iter().copied()) / GUESTS.len() as f64;

    w("## Startup: handshake, idle footprint, policy guest loading".into());
    w(String::new());
    w("Produced by `cargo bench -p wasmdock-e2e --bench startup` (part of `make bench`).".into());
    w(String::new());
    w(format!("- Date: {}", date()));
    w("- Plugin: release build, launched as a Nomad agent launches it; default log level".into());
    w(String::new());
    w("### Launch".into());
    w(String::new());
    w(format!(
        "Times from spawn. The plugin: handshake line on stdout, PluginInfo answered over the new \
        socket, SetConfig and Init answered (defaults, a private `run_dir`, reconciler off), the first \
        Fingerprint answered (the engine asked for its version and info); then, after {} s idle, its \
        VmRSS, threads and descriptors; then GRPCController.Shutdown to exit. Alongside, in the same \
        rounds: `/bin/true` spawned and reaped, and `docker {}`. The three alternate round-robin, \
        each round starting one further on. {} warm-up round(s), then {} rounds; median (min–max).",
        IDLE.as_secs(),
        DOCKER_VERSION.join(" "),
        plan.warm_up,
        plan.rounds
    ));
    w(String::new());
    w("| | ms from spawn, or count |".into());
    w("|---|---|".into());
    let rows: [(&str, Vec<f64>, usize); 8] = [
        ("Plugin: handshake line", handshake.clone(), 1),
        ("Plugin: PluginInfo answered", col(|x| x.info_ms), 1),
        (
            "Plugin: SetConfig + Init answered",
            col(|x| x.configured_ms),
            1,
        ),
        ("Plugin: first Fingerprint answered", fingerprint.clone(), 1),
        ("Plugin: Shutdown to exit", col(|x| x.shutdown_ms), 1),
        (
            "`/bin/true` (floor of any process start)",
            true_ms.clone(),
            2,
        ),
        (
            "`docker version` (start + one engine answer)",
            docker.clone(),
            1,
        ),
        ("Plugin idle threads", col(|x| x.threads), 0),
    ];
    for (label, values, digits) in rows {
        w(format!(
            "| {label} | {} |",
            cell(values.into_iter(), digits)
        ));
    }
    w(format!(
        "| Plugin idle open fds | {} |",
        cell(col(|x| x.fds).into_iter(), 0)
    ));
    w(format!(
        "| Plugin idle VmRSS, KiB | {} |",
        cell(rss.iter().copied(), 0)
    ));
    w(String::new());
    w(format!(
        "Spawn → first Fingerprint is {fp_vs_docker:.2}× `docker version` (p50s). For scale: Nomad \
        starts an external plugin once per agent start, and waits up to a minute for its \
        handshake; Nomad's built-in docker driver has no handshake, but starts a docker_logger \
        plugin process per task, each 18,280–20,924 KiB RSS (hashicorp/nomad#6900)."
    ));
    w(String::new());
    w("### Policy guests: cold and cached load".into());
    w(String::new());
    w(format!(
        "A plugin configured with the four example guests, one per hook ({}), sent its first \
        Fingerprint, which loads them. Wall: from the Fingerprint request to the plugin's last \
        \"{LOADED}\" line (its `@timestamp`). Sum of `load_ms`: the plugin's own time per module, \
        added up. **Cold**: a fresh `run_dir`, so the compiled-module cache is empty and every \
        guest is compiled with Cranelift. **Cached**: the `run_dir` of an earlier launch, so every \
        guest comes from its sealed artifact (HMAC check, deserialise, link, trial instance). Every \
        load line's `origin` is checked to be `Compiled` or `Cached` as expected. One launch fills \
        the cache first; then {} rounds, cold and cached alternating which goes first; median \
        (min–max).",
        g.sizes_kib
            .iter()
            .map(|(name, kib)| format!("`{name}` {kib} KiB"))
            .collect::<Vec<_>>()
            .join(", "),
        plan.guest_rounds
    ));
    w(String::new());
    w("| | Cold (compiled) | Cached | Cold / cached |".into());
    w("|---|---|---|---|".into());
    w(bench::row(
        "Wall, Fingerprint → all four loaded, ms",
        &[cold_wall.clone(), cached_wall.clone()],
        1,
        Some(1),
    ));
    w(bench::row(
        "Sum of the plugin's `load_ms`, ms",
        &[cold_sum, cached_sum],
        1,
        Some(1),
    ));
    w(String::new());
    w(format!(
        "Idle VmRSS with the four guests loaded: {} KiB, against {} KiB with no policy (the \
        launch table): {:.0} KiB for four guests, engine and compiled code included.",
        cell(guests_rss.iter().copied(), 0),
        median(rss.iter().copied()),
        median(guests_rss.iter().copied()) - median(rss.iter().copied())
    ));
    w(String::new());
    w("### Goals".into());
    w(String::new());
    let handshake_p50 = median(handshake.iter().copied());
    let rss_p50 = median(rss.iter().copied());
    w(format!(
        "- Handshake ≤ {HANDSHAKE_GOAL_MS} ms from spawn: {} (median {handshake_p50:.1} ms).",
        met(handshake_p50 <= HANDSHAKE_GOAL_MS)
    ));
    w(format!(
        "- Spawn → first Fingerprint ≤ 1× `docker version`: {} ({:.1} vs {:.1} ms = \
        {fp_vs_docker:.2}×).",
        met(fp_vs_docker <= 1.0),
        median(fingerprint.iter().copied()),
        median(docker.iter().copied())
    ));
    w(format!(
        "- Idle plugin RSS ≤ one docker_logger ({IDLE_RSS_GOAL_KIB:.0} KiB): {} ({rss_p50:.0} KiB).",
        met(rss_p50 <= IDLE_RSS_GOAL_KIB)
    ));
    w(format!(
        "- Cached guest load ≤ {CACHED_LOAD_GOAL_MS} ms per guest, in the plugin: {} ({per_guest_cached:.2} \
        ms per guest, sum of `load_ms` / 4).",
        met(per_guest_cached <= CACHED_LOAD_GOAL_MS)
    ));
    out
}
