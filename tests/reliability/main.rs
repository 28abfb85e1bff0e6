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

/// What a numbered log showed: its distinct lines and how many lines it
/// repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counted {
    lines: usize,
    repeated: usize,
}

/// Checks that `text` is `<prefix>-0`, `<prefix>-1`, … with no line
/// missing and every line complete. One step back is tolerated, for the
/// one known window: a SIGKILL that lands between a write into the FIFO
/// and the checkpoint's update makes the relaunched plugin send that
/// write again (ARCHITECTURE.md, "what outlives the plugin"). Anything
/// more — a gap, a second repeat, a repeat that does not rejoin — fails.
fn assert_no_gap(text: &str, prefix: &str, what: &str) -> Counted {
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
    let mut highest: Option<u64> = None;
    let mut repeated = 0;
    let mut steps_back = 0;
    let mut previous: Option<u64> = None;
    for &got in &seen {
        match previous {
            None => assert_eq!(got, 0, "{what}: starts at {prefix}-{got}: {text:?}"),
            Some(last) if got == last + 1 => {}
            Some(last) if got <= last => {
                steps_back += 1;
                assert_eq!(steps_back, 1, "{what}: repeated more than once: {text:?}");
            }
            Some(last) => panic!(
                "{what}: {prefix}-{last} is followed by {prefix}-{got} (lines lost): {text:?}"
            ),
        }
        if highest.is_some_and(|h| got <= h) {
            repeated += 1;
        }
        highest = highest.max(Some(got));
        previous = Some(got);
    }
    Counted {
        lines: highest.map_or(0, |h| h as usize + 1),
        repeated,
    }
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
