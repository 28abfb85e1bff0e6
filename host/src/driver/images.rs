//! Image bookkeeping (Nomad's image "coordinator"): one pull in flight per
//! image reference, and reference counts per image id so an image no task
//! uses is removed after `gc.image_delay` — unless a task takes it again.
//!
//! Unlike Nomad, counts are rebuilt by RecoverTask, so images of tasks
//! that outlived a plugin restart are still removed when they end.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

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

/// Pull locks and image reference counts.
#[derive(Debug, Default)]
pub struct Images {
    refs: Mutex<HashMap<String, Entry>>,
    pulls: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Images {
    /// The lock that serialises pulls of `reference`: the first caller
    /// pulls, the others find the image present when they get the lock.
    pub fn pull_lock(&self, reference: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut pulls = self.pulls.lock().unwrap_or_else(PoisonError::into_inner);
        // Drop locks nobody holds any more so the map does not grow forever.
        pulls.retain(|_, lock| Arc::strong_count(lock) > 1);
        Arc::clone(pulls.entry(reference.to_owned()).or_default())
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
