//! Log forwarding of a task, from StartTask or RecoverTask to its end: the
//! FIFOs (opened here and handed to the node's log holder, or taken back
//! from it), the checkpoint and the holder's counts, the forwarder, and
//! letting go of everything at the end.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Driver;
use super::error::{DriverError, Result};
use super::handle::TaskHandle;
use crate::docker::Docker;
use crate::docker::container::ContainerFacts;
use crate::docker::logs::parse_rfc3339_nanos;
use crate::logs::checkpoint::{Checkpoint, Positions};
use crate::logs::forward::{self, Ended, Forwarding, JsonFileSource};
use crate::logs::holder::{self, Holder};
use crate::logs::jsonfile::Watcher;
use crate::logs::{self, Writers};

/// How long a task's exit waits for its last log bytes to be forwarded.
pub const LOG_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Where forwarding of a task starts.
#[derive(Debug, Clone, Copy)]
pub enum Resume<'a> {
    /// A container this plugin just started: everything it wrote.
    Fresh {
        /// The container as the engine reports it.
        facts: &'a ContainerFacts,
    },
    /// A task adopted by RecoverTask: after what the checkpoint says.
    Recovered {
        /// The holder directory from `driver_state`.
        log_dir: Option<&'a str>,
        /// The container as the engine reports it.
        facts: &'a ContainerFacts,
    },
}

impl Resume<'_> {
    fn facts(&self) -> &ContainerFacts {
        match self {
            Resume::Fresh { facts } | Resume::Recovered { facts, .. } => facts,
        }
    }
}

/// Whether the engine runs on this host (so its `LogPath` is ours to read).
fn engine_is_local(endpoint: &str) -> bool {
    let endpoint = if endpoint.is_empty() {
        std::env::var("DOCKER_HOST").unwrap_or_default()
    } else {
        endpoint.to_owned()
    };
    endpoint.is_empty() || endpoint.starts_with("unix://")
}

/// Unix seconds of an engine timestamp, 0 when it cannot be read.
fn engine_secs(rfc3339: &str) -> i64 {
    parse_rfc3339_nanos(rfc3339).map_or(0, |n| n.div_euclid(1_000_000_000))
}

fn now_secs() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs(),
    )
    .unwrap_or(0)
}

/// Where the holder's counts of a task's bytes stand.
#[derive(Debug, Clone, Copy)]
enum Counts {
    /// A relaunched plugin took the task back: the holder accepted this
    /// many bytes of stdout and stderr from earlier plugins.
    Attached([u64; 2]),
    /// The holder took the task now: its counts start at zero.
    Fresh,
    /// No holder relays this task.
    None,
}

/// Most bytes a plugin can have written past its last record (a few
/// writes of at most 64 KiB); a larger difference means the checkpoint and
/// the holder disagree, and nothing is skipped.
const MOST_UNRECORDED: u64 = 1024 * 1024;

impl Counts {
    /// Brings the checkpoint's counts in line with the holder and returns
    /// how many bytes of each stream were written past the checkpoint's
    /// position before a crash (to skip).
    fn settle(self, checkpoint: &mut Checkpoint, task_id: &str) -> [u64; 2] {
        let positions = checkpoint.positions();
        let recorded = [positions.stdout.relayed, positions.stderr.relayed];
        let (skip, counts, counted) = match self {
            Counts::Attached(accepted) if positions.counted => {
                let past: Option<Vec<u64>> = accepted
                    .iter()
                    .zip(recorded)
                    .map(|(accepted, recorded)| {
                        accepted
                            .checked_sub(recorded)
                            .filter(|past| *past <= MOST_UNRECORDED)
                    })
                    .collect();
                match past {
                    Some(past) => {
                        if past.iter().any(|p| *p > 0) {
                            tracing::debug!(
                                task_id,
                                stdout = past[0],
                                stderr = past[1],
                                "skipping log bytes the previous plugin wrote after its last record"
                            );
                        }
                        ([past[0], past[1]], recorded, true)
                    }
                    None => {
                        tracing::warn!(
                            task_id,
                            ?accepted,
                            ?recorded,
                            "the log holder's counts do not match the checkpoint; lines around the restart may repeat"
                        );
                        ([0, 0], accepted, true)
                    }
                }
            }
            Counts::Attached(accepted) => ([0, 0], accepted, true),
            Counts::Fresh => ([0, 0], [0, 0], true),
            Counts::None => ([0, 0], recorded, false),
        };
        if (counts, counted) != (recorded, positions.counted)
            && let Err(err) = checkpoint.set_counts(counts, counted)
        {
            tracing::warn!(task_id, error = %err, "cannot record the log checkpoint");
        }
        skip
    }
}

impl Driver {
    /// The holder of this driver's directory, per the current config.
    fn log_holder(&self) -> Result<Holder> {
        let config = self.require_config()?;
        let dir = holder::directory(&config.plugin.run_dir, self.name());
        let mut slot = self
            .log_holder
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match slot.as_ref() {
            Some(holder) if holder.dir() == dir => Ok(holder.clone()),
            _ => {
                let holder = Holder::new(dir);
                *slot = Some(holder.clone());
                Ok(holder)
            }
        }
    }

    /// The plugin's one inotify watcher, started on first use; `None` when
    /// the kernel refuses one (forwarders then poll).
    fn log_watcher(&self) -> Option<Watcher> {
        self.log_watcher
            .get_or_init(|| match Watcher::start() {
                Ok(watcher) => Some(watcher),
                Err(err) => {
                    tracing::warn!(error = %err, "cannot watch log files; json-file logs are polled");
                    None
                }
            })
            .clone()
    }

    /// Starts forwarding the task's output into its log FIFOs, unless log
    /// collection is off for the plugin or the task; then nothing is
    /// started and no logs call is made.
    pub(crate) async fn start_log_forwarding(
        &self,
        docker: &Docker,
        handle: &Arc<TaskHandle>,
        resume: Resume<'_>,
    ) -> Result<()> {
        let task = &handle.task;
        if self.require_config()?.plugin.disable_log_collection {
            tracing::debug!(task_id = %task.id, "log forwarding off: disable_log_collection is set");
            return Ok(());
        }
        if task.logs_disabled() {
            tracing::debug!(task_id = %task.id, "log forwarding off: the task disabled its logs");
            return Ok(());
        }
        let holder = match resume {
            Resume::Recovered {
                log_dir: Some(dir), ..
            } => Holder::new(PathBuf::from(dir)),
            _ => self.log_holder()?,
        };
        let fail = |message: String| {
            DriverError::unrecoverable(format!("failed to set up log forwarding: {message}"))
        };

        // The writers: the holder's pipes into the FIFOs, kept across a
        // plugin restart.
        let attached = match resume {
            Resume::Recovered { .. } => match holder.attach(&task.id).await {
                Ok(attached) => attached,
                Err(err) => {
                    tracing::warn!(task_id = %task.id, error = %err, "cannot take the task back from the log holder; reopening its FIFOs");
                    None
                }
            },
            Resume::Fresh { .. } => None,
        };
        let (writers, counts, held) = match attached {
            Some(attached) => (
                Writers::relayed(attached.pipes, attached.fifos),
                Counts::Attached(attached.accepted),
                true,
            ),
            None => {
                let (stdout, stderr) =
                    logs::open_fifos(&task.alloc_dir, &task.stdout_path, &task.stderr_path)
                        .map_err(|e| fail(e.to_string()))?;
                if matches!(resume, Resume::Recovered { .. }) {
                    tracing::warn!(task_id = %task.id, "the log holder no longer had this task; if Nomad's logmon stopped reading, the task's logs resume when the task or the agent restarts");
                }
                match holder.put(&task.id, &stdout, &stderr).await {
                    Ok(pipes) => (
                        Writers::relayed(pipes, (stdout, stderr)),
                        Counts::Fresh,
                        true,
                    ),
                    Err(err) => {
                        tracing::warn!(task_id = %task.id, error = %err, "the log holder cannot take this task; writing into its FIFOs directly, so a plugin crash will end its logs");
                        (Writers::direct(stdout, stderr), Counts::None, false)
                    }
                }
            }
        };
        let writers = writers.map_err(|e| fail(e.to_string()))?;

        // Where to resume.
        let checkpoint_path = holder.checkpoint_path(&task.id);
        let (mut checkpoint, not_before) = match resume {
            Resume::Fresh { facts } => {
                let checkpoint = Checkpoint::create(&checkpoint_path).unwrap_or_else(|err| {
                    tracing::warn!(task_id = %task.id, error = %err, "cannot create the log checkpoint; a plugin restart may lose or repeat lines");
                    Checkpoint::in_memory(Positions::default())
                });
                (checkpoint, engine_secs(&facts.created))
            }
            Resume::Recovered { facts, .. } => match Checkpoint::resume(&checkpoint_path) {
                Ok(Some(checkpoint)) => (checkpoint, engine_secs(&facts.created)),
                outcome => {
                    if let Err(err) = outcome {
                        tracing::warn!(task_id = %task.id, error = %err, "cannot read the log checkpoint");
                    }
                    tracing::warn!(task_id = %task.id, "no log checkpoint: forwarding from now on; lines written while no plugin ran are not sent");
                    let checkpoint = Checkpoint::create(&checkpoint_path)
                        .unwrap_or_else(|_| Checkpoint::in_memory(Positions::default()));
                    (checkpoint, now_secs())
                }
            },
        };
        let skip = counts.settle(&mut checkpoint, &task.id);
        let facts = resume.facts();
        let json_file = (facts.log_driver == "json-file"
            && !facts.log_path.is_empty()
            && engine_is_local(&self.require_config()?.plugin.endpoint))
        .then(|| JsonFileSource {
            path: PathBuf::from(&facts.log_path),
            watcher: self.log_watcher(),
            stopped: handle.container_stopped(),
        });
        handle.logs_started(Some(holder.dir().to_path_buf()));
        let forwarding = Forwarding {
            docker: docker.clone(),
            container_id: handle.container_id.clone(),
            task_id: task.id.clone(),
            writers,
            checkpoint,
            skip,
            started_at_secs: not_before,
            cancel: handle.workers().clone(),
            json_file,
        };
        let handle = Arc::clone(handle);
        tokio::spawn(async move {
            let (ended, checkpoint) = forward::forward(forwarding).await;
            // Cancelled without DestroyTask means the plugin is going away:
            // the holder and the checkpoint carry the task to the next one.
            if ended != Ended::Cancelled || handle.is_destroyed() {
                if held && let Err(err) = holder.release(&handle.task.id).await {
                    tracing::warn!(task_id = %handle.task.id, error = %err, "cannot release the log FIFOs from the holder");
                }
                checkpoint.remove();
            }
            tracing::debug!(task_id = %handle.task.id, ?ended, "log forwarding ended");
            handle.logs_finished();
        });
        Ok(())
    }
}
