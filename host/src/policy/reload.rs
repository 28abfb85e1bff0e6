//! Hot reload: a thread that notices when a module's file changes and
//! loads the new version next to the old one.
//!
//! The file's identity (device, inode, size, change times) is checked every
//! interval; one `stat` per module, so an idle node pays next to nothing and
//! any way of replacing the file (rename into place, copy over, editor
//! save) is seen. A new version is swapped in atomically; calls already
//! running finish on the version they started with. A version that fails
//! to load is logged and the previous one stays; the same file is not
//! retried until it changes again. The thread also logs each module's
//! counters every minute while it is being called.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::PolicyHost;

/// How often module files are checked by default.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
/// How often counters are logged while modules are being called.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(60);

/// The running watcher; dropping it stops the thread.
#[derive(Debug)]
pub struct Watcher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    /// Starts watching `host`'s module files every `interval`.
    pub fn start(host: Arc<PolicyHost>, interval: Duration) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("policy-reload".into())
            .spawn(move || {
                let mut last_summary = Instant::now();
                let mut last_calls = 0u64;
                while !flag.load(Ordering::SeqCst) {
                    thread::park_timeout(interval);
                    if flag.load(Ordering::SeqCst) {
                        break;
                    }
                    host.reload_changed();
                    if last_summary.elapsed() >= SUMMARY_INTERVAL {
                        last_summary = Instant::now();
                        last_calls = log_summary(&host, last_calls);
                    }
                }
            })?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

fn log_summary(host: &PolicyHost, last_calls: u64) -> u64 {
    let status = host.status();
    let calls: u64 = status
        .iter()
        .flat_map(|s| s.hooks.iter())
        .map(|(_, summary)| summary.calls)
        .sum();
    if calls == last_calls {
        return calls;
    }
    for module in status {
        for (hook, summary) in module.hooks {
            tracing::info!(
                module = %module.name,
                hook = hook.as_str(),
                calls = summary.calls,
                errors = summary.errors,
                timeouts = summary.timeouts,
                p50_us = summary.p50_us,
                p99_us = summary.p99_us,
                "policy hook counters"
            );
        }
    }
    calls
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}
