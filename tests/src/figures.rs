//! Figures that tests measure on their way (latencies, counts, memory),
//! kept where a passing run shows them.
//!
//! libtest hides a passing test's stderr, so a figure printed with
//! `eprintln!` alone never reaches the CI log. [`figure!`](crate::figure)
//! prints the line as before and also appends it to
//! `<target>/test-figures/<module path>.txt`; `scripts/test.sh` prints
//! those files after the tests, passing or not.

use std::io::Write as _;
use std::path::PathBuf;

use crate::plugin::target_dir;

/// Where the figure files go.
pub fn dir() -> PathBuf {
    target_dir().join("test-figures")
}

/// Prints `line` to stderr and appends it to the figure file of `topic`
/// (a module path). A file that cannot be written costs the figure, never
/// the test.
pub fn record(topic: &str, line: &str) {
    eprintln!("{line}");
    let dir = dir();
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let file = dir.join(format!("{}.txt", topic.replace("::", ".")));
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
    {
        // One write per line, so lines of concurrent tests do not interleave.
        let _ = file.write_all(format!("{line}\n").as_bytes());
    }
}

/// `eprintln!` that also keeps the line as a figure of the calling module
/// (see [`record`]).
#[macro_export]
macro_rules! figure {
    ($($arg:tt)*) => {
        $crate::figures::record(module_path!(), &format!($($arg)*))
    };
}
