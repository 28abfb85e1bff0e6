//! Hook evaluations at 10 000 a second: the four example guests, one per
//! hook, driven at a paced rate from one thread per core for five seconds.
//! Proves: the offered rate is served without an error and achieved (see
//! [`required_rate`] for what an unoptimised build is held to), and the
//! host's memory stays flat; the achieved rate and latency percentiles are
//! recorded as figures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmdock_host::config::policy::Hook;
use wasmdock_host::policy::PolicyHost;

use super::{MEMORY, example_input, host, module, rss_kib};

/// The offered rate, evaluations a second, over all modules and hooks.
const RATE: u64 = 10_000;
const SECONDS: u64 = 5;
/// Share of the offered rate an optimised build must achieve: a paced
/// worker wakes a scheduler tick late now and then.
const PACING_SLACK: f64 = 0.9;
/// What an unoptimised build (plain `cargo test`) must achieve.
///
/// It cannot reach 10 000 a second on two cores: a call costs it about
/// 200 µs (against about 20 µs optimised, BENCHMARKS.md), nearly all of it
/// wasmtime's own support crates (`wasmtime-environ`, the component
/// instantiator, type checks) running unoptimised with debug assertions;
/// the guest's code is about 6 % of it. Two threads measured 5 300–5 800 a
/// second on this project's 2-core machine while other builds ran beside
/// the test (one thread: 3 900). This floor is what that build can be held
/// to without failing on a busy machine: it catches a host that stalls or
/// whose calls get markedly slower, not the 10 000. `cargo test --release`
/// holds the full rate.
const DEBUG_FLOOR: f64 = 4_000.0;

/// The rate this build must achieve.
fn required_rate() -> f64 {
    if cfg!(debug_assertions) {
        DEBUG_FLOOR
    } else {
        RATE as f64 * PACING_SLACK
    }
}

/// One worker per core, at least two (calls from several threads at once
/// are part of what is tested), at most eight.
fn threads() -> u64 {
    std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8) as u64)
}

#[test]
fn hooks_sustain_ten_thousand_evaluations_a_second() {
    let _exclusive = MEMORY.write();
    let examples = [
        ("gpu-runtime", Hook::GpuRuntime),
        ("env-mount-matcher", Hook::ReconcilerMatch),
        ("stats-tagger", Hook::StatsTransform),
        ("image-allowlist", Hook::TaskAdmission),
    ];
    let host: Arc<PolicyHost> = Arc::new(host(
        examples
            .iter()
            .map(|(name, _)| module(name, name, &[("allowed", "registry.local/*")]))
            .collect(),
    ));
    let inputs: Arc<Vec<_>> = Arc::new(
        examples
            .iter()
            .map(|(name, hook)| (*name, example_input(name, *hook)))
            .collect(),
    );
    // Warm up, then measure.
    for (name, input) in inputs.iter() {
        for _ in 0..200 {
            host.evaluate(name, input).unwrap().unwrap();
        }
    }
    let before = rss_kib();
    let threads = threads();
    let per_thread = RATE.div_ceil(threads);
    let interval = Duration::from_nanos(1_000_000_000 / per_thread);
    let began = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (host, inputs) = (Arc::clone(&host), Arc::clone(&inputs));
            std::thread::spawn(move || {
                let mut latencies = Vec::with_capacity((per_thread * SECONDS) as usize);
                let start = Instant::now();
                for n in 0..per_thread * SECONDS {
                    // Paced: call n is due at n intervals; a late worker
                    // catches up without sleeping.
                    let due = start + interval * n as u32;
                    let now = Instant::now();
                    if due > now {
                        std::thread::park_timeout(due - now);
                    }
                    // Every worker goes round all four modules (one hook
                    // each), starting at a different one.
                    let (name, input) = &inputs[((n + t) % inputs.len() as u64) as usize];
                    let called = Instant::now();
                    let outcome = host.evaluate(name, input).expect("a module");
                    latencies.push(called.elapsed());
                    assert!(outcome.is_ok(), "{name}: {outcome:?}");
                }
                latencies
            })
        })
        .collect();
    let mut latencies: Vec<Duration> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("a worker"))
        .collect();
    let wall = began.elapsed();
    let after = rss_kib();
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    let achieved = latencies.len() as f64 / wall.as_secs_f64();
    let required = required_rate();
    let build = if cfg!(debug_assertions) {
        "unoptimised"
    } else {
        "optimised"
    };
    wasmdock_e2e::figure!(
        "{} evaluations in {:.2} s = {achieved:.0}/s (offered {RATE}/s over {threads} threads, {build} build, required {required:.0}/s); latency p50 {:?} p90 {:?} p99 {:?} p99.9 {:?} max {:?}; RSS {before} → {after} KiB",
        latencies.len(),
        wall.as_secs_f64(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(0.999),
        at(1.0)
    );
    assert_eq!(
        latencies.len() as u64,
        per_thread * threads * SECONDS,
        "every call answered"
    );
    for status in host.status() {
        let calls: u64 = status.hooks.iter().map(|(_, summary)| summary.calls).sum();
        assert!(
            calls >= 200 + per_thread * threads * SECONDS / inputs.len() as u64 - threads,
            "{} served {calls} calls, less than its share",
            status.name
        );
    }
    assert!(
        achieved >= required,
        "achieved {achieved:.0} evaluations/s, below the {required:.0}/s this {build} build must sustain (offered {RATE}/s over {threads} threads)"
    );
    assert!(
        after.saturating_sub(before) < 16 * 1024,
        "memory flat under load: {before} → {after} KiB"
    );
}
