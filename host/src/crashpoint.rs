//! Crash points for crash tests: `WASMDOCK_CRASH_AT=<point>:<n>` makes the
//! process abort, as abruptly as a SIGKILL (no destructor, no flush), the
//! `n`-th time it passes `point`. Tests use it to land a crash exactly in a
//! window a random kill would rarely hit. Unset, a pass costs one atomic
//! load.
//!
//! Points:
//! * `log-written` — a log write went out and its checkpoint record has
//!   not been made yet.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The variable naming the crash point.
pub const ENV: &str = "WASMDOCK_CRASH_AT";

/// The armed point: its name, and how many passes are left before it fires.
static ARMED: OnceLock<Option<(String, AtomicU64)>> = OnceLock::new();

fn armed() -> Option<&'static (String, AtomicU64)> {
    ARMED
        .get_or_init(|| {
            let value = std::env::var(ENV).ok()?;
            let (point, n) = value.rsplit_once(':')?;
            let n = n.parse::<u64>().ok().filter(|n| *n > 0)?;
            Some((point.to_owned(), AtomicU64::new(n)))
        })
        .as_ref()
}

/// Passes crash point `point`: aborts the process if it is armed and this
/// is the pass it waits for.
pub fn pass(point: &str) {
    let Some((armed, left)) = armed() else {
        return;
    };
    if armed == point && left.fetch_sub(1, Ordering::SeqCst) == 1 {
        tracing::error!(point, "crash point reached: aborting ({ENV})");
        std::process::abort();
    }
}
