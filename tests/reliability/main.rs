//! Faults and load against the real plugin and engine, each test alone
//! (they fill the engine with containers, so they run one at a time, and
//! in their own binary so no other test's tasks compete):
//!
//! * `crash`: the plugin SIGKILLed under 50 running tasks, some of which
//!   exit while it is down; relaunched and every task recovered as Nomad
//!   does, with exit codes, logs and cleanup checked;
//! * `load`: 200 concurrent StartTask calls, then 300 running tasks each
//!   with a TaskStats stream and a log forwarder, with latency and memory
//!   figures printed for the record.

mod crash;
mod load;

use std::time::Duration;

/// Held by each test for its whole run.
static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Values sorted, as `p50 / p90 / max` in milliseconds.
fn percentiles(mut values: Vec<Duration>) -> String {
    values.sort_unstable();
    let at = |q: f64| {
        let index = ((values.len() as f64 - 1.0) * q).round() as usize;
        values.get(index).copied().unwrap_or_default()
    };
    format!(
        "p50 {:.0} ms / p90 {:.0} ms / max {:.0} ms",
        at(0.5).as_secs_f64() * 1000.0,
        at(0.9).as_secs_f64() * 1000.0,
        at(1.0).as_secs_f64() * 1000.0
    )
}

/// The numbered lines `<prefix>-<n>` of a log, as numbers, in order.
fn numbers(text: &str, prefix: &str) -> Vec<u64> {
    text.lines()
        .filter_map(|line| line.strip_prefix(prefix)?.strip_prefix('-')?.parse().ok())
        .collect()
}

/// Checks that `text` is exactly `<prefix>-0`, `<prefix>-1`, … — no line
/// missing, none repeated, every line complete — and returns how many
/// lines it has.
fn assert_no_gap(text: &str, prefix: &str, what: &str) -> usize {
    let seen = numbers(text, prefix);
    assert_eq!(
        text.lines().count(),
        seen.len(),
        "{what}: only numbered lines expected, got {text:?}"
    );
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{what}: a torn last line"
    );
    for (expected, &got) in seen.iter().enumerate() {
        let expected = expected as u64;
        assert!(
            got == expected,
            "{what}: line {expected} is {prefix}-{got} ({}): {text:?}",
            if got < expected {
                "a repeat"
            } else {
                "lines lost"
            }
        );
    }
    seen.len()
}

/// The pids of the processes whose command line contains `needle`.
fn processes_with(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(needle) {
            found.push(pid);
        }
    }
    found
}
