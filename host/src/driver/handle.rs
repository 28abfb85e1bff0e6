//! One tracked task: its container, its exit result once known, and the
//! workers that live as long as it does.

use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::network::DriverNetwork;
use super::state::{DriverState, STATE_VERSION};
use super::task::TaskRequest;

/// How a task ended (Nomad's `ExitResult`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExitResult {
    /// Exit code.
    pub exit_code: i64,
    /// Signal that ended it, 0 if none is known.
    pub signal: i64,
    /// Whether the OOM killer ended it.
    pub oom_killed: bool,
    /// Why it ended, when that is an error.
    pub err: Option<String>,
}

impl ExitResult {
    /// Exit code 0, no signal, not OOM killed, no error.
    pub fn successful(&self) -> bool {
        self.exit_code == 0 && self.signal == 0 && !self.oom_killed && self.err.is_none()
    }
}

/// A task the driver tracks.
#[derive(Debug)]
pub struct TaskHandle {
    /// What Nomad asked for.
    pub task: TaskRequest,
    /// The container running it.
    pub container_id: String,
    /// The image id of the container.
    pub image_id: String,
    /// The task's stats sampler, shared by its TaskStats streams.
    pub samplers: crate::stats::sampler::Samplers,
    /// The network override reported to Nomad.
    pub network: Option<DriverNetwork>,
    /// When the container was started (or adopted).
    pub started_at: SystemTime,
    /// How the task ended and when; `None` while it runs.
    exit: watch::Sender<Option<(ExitResult, SystemTime)>>,
    /// Cancels this task's workers (exit watcher, later log and stats).
    workers: CancellationToken,
    /// Set when the task is being destroyed.
    destroyed: Mutex<bool>,
    /// The log holder directory, once forwarding started.
    log_dir: OnceLock<PathBuf>,
    /// False while log forwarding runs.
    logs_done: watch::Sender<bool>,
    /// True once the container is known to have stopped.
    container_stopped: watch::Sender<bool>,
}

impl TaskHandle {
    /// A handle for a started container.
    pub fn new(
        task: TaskRequest,
        container_id: String,
        image_id: String,
        network: Option<DriverNetwork>,
        started_at: SystemTime,
    ) -> Self {
        Self {
            task,
            container_id,
            image_id,
            samplers: crate::stats::sampler::Samplers::default(),
            network,
            started_at,
            exit: watch::channel(None).0,
            workers: CancellationToken::new(),
            destroyed: Mutex::new(false),
            log_dir: OnceLock::new(),
            logs_done: watch::channel(true).0,
            container_stopped: watch::channel(false).0,
        }
    }

    /// The state stored in Nomad's handle for RecoverTask.
    pub fn driver_state(&self) -> DriverState {
        DriverState {
            version: STATE_VERSION,
            container_id: self.container_id.clone(),
            image_id: self.image_id.clone(),
            network: self.network.clone(),
            started_at: self
                .started_at
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_secs_f64(),
            log_dir: self.log_dir.get().map(|d| d.display().to_string()),
            extra: std::collections::BTreeMap::new(),
        }
    }

    /// Records that log forwarding runs, with its holder directory (if any).
    pub fn logs_started(&self, log_dir: Option<PathBuf>) {
        if let Some(dir) = log_dir {
            let _ = self.log_dir.set(dir);
        }
        self.logs_done.send_replace(false);
    }

    /// Records that the container stopped (before its exit is reported).
    pub fn mark_container_stopped(&self) {
        self.container_stopped.send_replace(true);
    }

    /// Turns true when the container has stopped.
    pub fn container_stopped(&self) -> watch::Receiver<bool> {
        self.container_stopped.subscribe()
    }

    /// Records that log forwarding is over.
    pub fn logs_finished(&self) {
        self.logs_done.send_replace(true);
    }

    /// Waits up to `timeout` for log forwarding to write the container's
    /// last bytes; true when it did (or never ran).
    pub async fn logs_drained(&self, timeout: Duration) -> bool {
        let mut receiver = self.logs_done.subscribe();
        tokio::time::timeout(timeout, receiver.wait_for(|done| *done))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Records how the task ended and releases every waiter.
    pub fn set_exit(&self, result: ExitResult) {
        self.exit.send_replace(Some((result, SystemTime::now())));
    }

    /// The exit result and completion time, once the task has ended.
    pub fn exit(&self) -> Option<(ExitResult, SystemTime)> {
        self.exit.borrow().clone()
    }

    /// Waits until the task has ended; any number of callers get the same
    /// result, immediately when it already ended.
    pub async fn wait(&self) -> ExitResult {
        let mut receiver = self.exit.subscribe();
        match receiver.wait_for(Option::is_some).await {
            Ok(value) => value
                .as_ref()
                .map(|(result, _)| result.clone())
                .unwrap_or_default(),
            // The sender lives in `self`, so this cannot happen while we are borrowed.
            Err(_) => ExitResult {
                err: Some("task handle dropped".to_owned()),
                ..ExitResult::default()
            },
        }
    }

    /// The token cancelled when the task's workers must stop.
    pub fn workers(&self) -> &CancellationToken {
        &self.workers
    }

    /// Whether DestroyTask ran for the task.
    pub fn is_destroyed(&self) -> bool {
        *self
            .destroyed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Marks the task destroyed and stops its workers; false if it already was.
    pub fn mark_destroyed(&self) -> bool {
        let mut destroyed = self
            .destroyed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let first = !*destroyed;
        *destroyed = true;
        self.workers.cancel();
        first
    }
}

impl Drop for TaskHandle {
    fn drop(&mut self) {
        self.workers.cancel();
    }
}
