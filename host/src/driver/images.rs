//! Image bookkeeping (Nomad's image "coordinator"): one pull in flight per
//! image reference whose result every concurrent start shares, and
//! reference counts per image id so an image no task uses is removed after
//! `gc.image_delay` — unless a task takes it again. A removal and a task
//! taking the image never interleave: both hold the image's lock.
//!
//! Unlike Nomad, counts are rebuilt by RecoverTask, so images of tasks
//! that outlived a plugin restart are still removed when they end.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::Driver;
use crate::docker::DockerError;

/// Attempts to remove an unused image, and the pause between them.
const REMOVE_ATTEMPTS: u32 = 3;
const REMOVE_PAUSE: Duration = Duration::from_secs(3);

#[derive(Debug, Default)]
struct Entry {
    users: HashSet<String>,
    pending_delete: Option<CancellationToken>,
}

/// How a pull ended: `Err((message, recoverable))`.
pub type PullOutcome = Result<(), (String, bool)>;

/// Pulls in flight, image locks and reference counts.
#[derive(Debug, Default)]
pub struct Images {
    refs: Mutex<HashMap<String, Entry>>,
    pulls: Mutex<HashMap<String, watch::Sender<Option<PullOutcome>>>>,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// A caller's part in a pull of one reference.
#[derive(Debug)]
pub enum PullTicket {
    /// This caller pulls and must report the outcome.
    Leader(PullLeader),
    /// Another caller is pulling; wait for its outcome.
    Follower(watch::Receiver<Option<PullOutcome>>),
}

/// The caller doing a pull. Reports the outcome to every follower; if it
/// is dropped without one (its request was cancelled), followers are told.
#[derive(Debug)]
pub struct PullLeader {
    images: Arc<Images>,
    reference: String,
    outcome: watch::Sender<Option<PullOutcome>>,
    finished: bool,
}

impl PullLeader {
    /// Publishes the outcome and ends the pull.
    pub fn finish(mut self, outcome: PullOutcome) {
        self.publish(outcome);
    }

    fn publish(&mut self, outcome: PullOutcome) {
        self.finished = true;
        self.outcome.send_replace(Some(outcome));
        self.images
            .pulls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.reference);
    }
}

impl Drop for PullLeader {
    fn drop(&mut self) {
        if !self.finished {
            self.publish(Err((
                "the task that was pulling the image gave up".to_owned(),
                true,
            )));
        }
    }
}

/// Waits for another caller's pull.
pub async fn follow(mut receiver: watch::Receiver<Option<PullOutcome>>) -> PullOutcome {
    match receiver.wait_for(Option::is_some).await {
        Ok(outcome) => outcome.clone().unwrap_or(Ok(())),
        Err(_) => Err(("the pull ended without an outcome".to_owned(), true)),
    }
}

impl Images {
    /// Joins the pull of `reference` in flight, or starts one.
    pub fn join_pull(self: &Arc<Self>, reference: &str) -> PullTicket {
        let mut pulls = self.pulls.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(outcome) = pulls.get(reference) {
            return PullTicket::Follower(outcome.subscribe());
        }
        let outcome = watch::channel(None).0;
        pulls.insert(reference.to_owned(), outcome.clone());
        PullTicket::Leader(PullLeader {
            images: Arc::clone(self),
            reference: reference.to_owned(),
            outcome,
            finished: false,
        })
    }

    /// The lock a removal of `image_id` and a task taking it both hold.
    pub fn image_lock(&self, image_id: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        // Drop locks nobody holds any more so the map does not grow forever.
        locks.retain(|_, lock| Arc::strong_count(lock) > 1);
        Arc::clone(locks.entry(image_id.to_owned()).or_default())
    }

    /// `user` (a task id) uses `image_id`; cancels a scheduled removal.
    pub fn acquire(&self, image_id: &str, user: &str) {
        if image_id.is_empty() {
            return;
        }
        let mut refs = self.refs.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = refs.entry(image_id.to_owned()).or_default();
        entry.users.insert(user.to_owned());
        if let Some(pending) = entry.pending_delete.take() {
            pending.cancel();
        }
    }

    /// `user` no longer uses `image_id`. Returns a token for a removal to
    /// schedule when nobody uses it any more.
    fn release(&self, image_id: &str, user: &str) -> Option<CancellationToken> {
        let mut refs = self.refs.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = refs.get_mut(image_id)?;
        entry.users.remove(user);
        if !entry.users.is_empty() || entry.pending_delete.is_some() {
            return None;
        }
        let token = CancellationToken::new();
        entry.pending_delete = Some(token.clone());
        Some(token)
    }

    /// Forgets `image_id` if it is still unused and its removal is `token`.
    fn forget(&self, image_id: &str, token: &CancellationToken) -> bool {
        let mut refs = self.refs.lock().unwrap_or_else(PoisonError::into_inner);
        let still_ours = refs.get(image_id).is_some_and(|e| {
            e.users.is_empty()
                && e.pending_delete.as_ref().is_some_and(|t| !t.is_cancelled())
                && !token.is_cancelled()
        });
        if still_ours {
            refs.remove(image_id);
        }
        still_ours
    }

    /// Number of users of `image_id` (tests and metrics).
    pub fn users(&self, image_id: &str) -> usize {
        self.refs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(image_id)
            .map_or(0, |e| e.users.len())
    }
}

impl Driver {
    /// Drops `task_id`'s use of `image_id`; with `gc.image`, removes the
    /// image after `gc.image_delay` if no task took it again meanwhile.
    pub(crate) async fn release_image(&self, image_id: &str, task_id: &str) {
        let Some(token) = self.images.release(image_id, task_id) else {
            return;
        };
        let Some(config) = self.configured() else {
            return;
        };
        if !config.plugin.gc.image {
            self.images.forget(image_id, &token);
            return;
        }
        let Ok(docker) = self.docker().await else {
            return;
        };
        let delay = config.plugin.gc.image_delay.get();
        let image_id = image_id.to_owned();
        let images = Arc::clone(&self.images);
        tokio::spawn(async move {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = token.cancelled() => return,
            }
            // Held until the removal is done: a starting task that wants
            // this image waits, then finds it gone and pulls it again.
            let lock = images.image_lock(&image_id);
            let _removing = lock.lock().await;
            if !images.forget(&image_id, &token) {
                return;
            }
            for attempt in 1..=REMOVE_ATTEMPTS {
                match docker.remove_image(&image_id).await {
                    Ok(()) => {
                        tracing::info!(image_id, "removed unused image");
                        return;
                    }
                    Err(DockerError::NotFound(_) | DockerError::Conflict(_)) => return,
                    Err(err) if attempt < REMOVE_ATTEMPTS => {
                        tracing::debug!(image_id, error = %err, "removing the image failed; retrying");
                        tokio::time::sleep(REMOVE_PAUSE).await;
                    }
                    Err(err) => {
                        tracing::warn!(image_id, error = %err, "failed to remove unused image")
                    }
                }
            }
        });
    }
}
