//! Policy hook benchmark: the cost of one hook call, instantiation
//! included (every call gets a fresh store from the module's
//! `InstancePre`), for each example guest, with wasmtime's pooling
//! allocator (the plugin's default) and with on-demand allocation side by
//! side; and the time to load each example compiled from scratch against
//! loading its sealed artifact from the cache.
//!
//! Each figure is the median of three runs (spread in brackets); each run
//! makes a warm-up of a tenth of its calls first. Calls run on one thread.
//! Run with `make bench` or `cargo bench -p wasmdock-e2e --bench policy`;
//! it writes the `bench:policy` section of `BENCHMARKS.md`.
//! `WASMDOCK_BENCH_QUICK=1` makes 1000 calls a run instead of 20000 and
//! writes the quick report.

use std::fmt::Write as _;
use std::process::ExitCode;

use wasmdock_e2e::bench::{self, cell, date, median, met};
use wasmdock_e2e::guests::guest;
use wasmdock_e2e::plugin::workspace_root;
use wasmdock_host::cli::policy::measure;
use wasmdock_host::config::policy::{Hook, PolicyConfig, PolicyModule};
use wasmdock_host::policy::engine::EngineSettings;
use wasmdock_host::policy::hooks::Input;
use wasmdock_host::policy::{HostSettings, Origin, PolicyHost};

const RUNS: usize = 3;
/// An example guest: its crate, the hook it serves, its config values.
type Example = (&'static str, Hook, &'static [(&'static str, &'static str)]);

const EXAMPLES: [Example; 4] = [
    (
        "image-allowlist",
        Hook::TaskAdmission,
        &[("allowed", "registry.local/*,busybox:*")],
    ),
    ("gpu-runtime", Hook::GpuRuntime, &[]),
    ("env-mount-matcher", Hook::ReconcilerMatch, &[]),
    (
        "stats-tagger",
        Hook::StatsTransform,
        &[("cpu_scale", "0.5")],
    ),
];
const GOAL_P50_US: f64 = 5.0;
const GOAL_P99_US: f64 = 50.0;
const GOAL_CACHED_MS: f64 = 20.0;

fn spec(crate_name: &str, config: &[(&str, &str)]) -> PolicyModule {
    PolicyModule {
        name: crate_name.to_owned(),
        path: guest(crate_name).to_string_lossy().into_owned(),
        config: config
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..PolicyModule::default()
    }
}

fn host(
    pooling: bool,
    modules: Vec<PolicyModule>,
    cache_dir: Option<std::path::PathBuf>,
) -> PolicyHost {
    let settings = HostSettings {
        engine: EngineSettings {
            pooling,
            ..EngineSettings::default()
        },
        cache_dir,
        ..HostSettings::default()
    };
    let host = PolicyHost::new(settings, &PolicyConfig { module: modules }).expect("policy host");
    assert!(host.load_errors().is_empty(), "{:?}", host.load_errors());
    host
}

fn input(crate_name: &str, hook: Hook) -> Input {
    let path = workspace_root()
        .join("examples/guests")
        .join(crate_name)
        .join("input.json");
    Input::from_json(hook, &std::fs::read_to_string(&path).expect("input.json"))
        .expect("valid input")
}

#[derive(Default)]
struct Calls {
    p50: Vec<f64>,
    p99: Vec<f64>,
    rate: Vec<f64>,
}

fn main() -> ExitCode {
    wasmdock_e2e::require_docker();
    let calls = if bench::quick() { 1_000 } else { 20_000 };
    let modules: Vec<PolicyModule> = EXAMPLES
        .iter()
        .map(|(name, _, config)| spec(name, config))
        .collect();
    let pooled = host(true, modules.clone(), None);
    let on_demand = host(false, modules.clone(), None);

    let mut table = String::new();
    let mut all_p50 = Vec::new();
    let mut all_p99 = Vec::new();
    for (name, hook, _) in EXAMPLES {
        let input = input(name, hook);
        let mut pooling = Calls::default();
        let mut demand = Calls::default();
        for _ in 0..RUNS {
            for (host, into) in [(&pooled, &mut pooling), (&on_demand, &mut demand)] {
                let figures = measure(host, name, &input, calls).expect("measure");
                assert_eq!(figures.errors, 0, "{name} failed during the bench");
                into.p50.push(figures.p50_us);
                into.p99.push(figures.p99_us);
                into.rate.push(figures.calls_per_sec);
            }
        }
        all_p50.push(median(pooling.p50.iter().copied()));
        all_p99.push(median(pooling.p99.iter().copied()));
        let _ = writeln!(
            table,
            "| {hook} (`{name}`) | {} | {} | {} | {} | {} | {} |",
            cell(pooling.p50.iter().copied(), 1),
            cell(pooling.p99.iter().copied(), 1),
            cell(pooling.rate.iter().copied(), 0),
            cell(demand.p50.iter().copied(), 1),
            cell(demand.p99.iter().copied(), 1),
            cell(demand.rate.iter().copied(), 0),
        );
    }

    let mut loads = String::new();
    let mut worst_cached: f64 = 0.0;
    for (name, _, config) in EXAMPLES {
        let mut cold = Vec::new();
        let mut cached = Vec::new();
        for _ in 0..RUNS {
            let dir = tempfile::tempdir().expect("tempdir");
            let cache = dir.path().join("cache");
            let load = |host: &PolicyHost, want: Origin| {
                let loaded = host.status()[0].loaded.clone().expect("loaded");
                assert_eq!(loaded.origin, want);
                loaded.load_time.as_secs_f64() * 1000.0
            };
            cold.push(load(
                &host(true, vec![spec(name, config)], Some(cache.clone())),
                Origin::Compiled,
            ));
            cached.push(load(
                &host(true, vec![spec(name, config)], Some(cache)),
                Origin::Cached,
            ));
        }
        let size_kib = std::fs::metadata(guest(name))
            .map(|m| m.len() as f64 / 1024.0)
            .unwrap_or(0.0);
        worst_cached = worst_cached.max(median(cached.iter().copied()));
        let _ = writeln!(
            loads,
            "| `{name}` | {size_kib:.0} | {} | {} | {:.0}× |",
            cell(cold.iter().copied(), 1),
            cell(cached.iter().copied(), 2),
            median(cold.iter().copied()) / median(cached.iter().copied()),
        );
    }

    let worst_p50 = all_p50.iter().copied().fold(0.0, f64::max);
    let worst_p99 = all_p99.iter().copied().fold(0.0, f64::max);
    let section = format!(
        "## Policy hooks\n\
        \n\
        Produced by `cargo bench -p wasmdock-e2e --bench policy` (part of `make bench`). \
        {date}. Each example guest's hook called \
        {calls} times on one thread per run, {RUNS} runs, median (min–max). Every call includes \
        a fresh store and instance from the module's `InstancePre`, the epoch deadline, the \
        limits, lowering the input, the guest's work, lifting and checking the answer. The \
        inputs are the examples' `input.json`.\n\
        \n\
        | hook (guest) | pooling p50 µs | pooling p99 µs | pooling calls/s | on-demand p50 µs | on-demand p99 µs | on-demand calls/s |\n\
        |---|---|---|---|---|---|---|\n\
        {table}\n\
        Loading a module: compiling the component with Cranelift against taking its sealed \
        artifact from the cache (HMAC check, deserialise, link, trial instantiation).\n\
        \n\
        | guest | size KiB | compile ms | cached load ms | ratio |\n\
        |---|---|---|---|---|\n\
        {loads}\n\
        Where a call's time goes (perf, release build, a trivial guest that only formats a \
        string: about 12 µs p50): resetting the instance's memory and tables in place \
        (`memset`, ~14 %), instantiating the component's core instances and resolving its \
        functions, type-checking the export, lowering and lifting. Before the pooled slots \
        kept their first 256 KiB resident and the guests got a 64 KiB stack (`.cargo/config.toml`), \
        page faults on every call made it ~50 µs. The 5 µs p50 goal assumed a nearly empty \
        instance; with a fresh instance of a Rust guest per call it is not reached, and getting \
        there would mean reusing instances across calls, which the isolation rule (no state \
        leaks between evaluations) forbids. The examples' own work (parsing their config on \
        every call) is the rest.\n\
        \n\
        ### Goals\n\
        \n\
        - Hook p50 ≤ {GOAL_P50_US} µs (pooling, worst hook): {} ({worst_p50:.1} µs).\n\
        - Hook p99 ≤ {GOAL_P99_US} µs (pooling, worst hook): {} ({worst_p99:.1} µs).\n\
        - Cached load ≤ {GOAL_CACHED_MS} ms (worst guest): {} ({worst_cached:.2} ms).\n",
        met(worst_p50 <= GOAL_P50_US),
        met(worst_p99 <= GOAL_P99_US),
        met(worst_cached <= GOAL_CACHED_MS),
        date = date(),
    );
    let path = bench::report_path();
    bench::write_section(&path, "policy", &section)
        .unwrap_or_else(|err| panic!("cannot write {}: {err}", path.display()));
    eprintln!("{section}\nwrote section `policy` of {}", path.display());
    ExitCode::SUCCESS
}
