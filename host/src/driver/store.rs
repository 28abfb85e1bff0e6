//! The tracked tasks, by id. Locks are never held across an await.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use super::error::{DriverError, Result};
use super::handle::TaskHandle;

/// Tracked tasks.
#[derive(Debug, Default)]
pub struct TaskStore {
    tasks: Mutex<HashMap<String, Arc<TaskHandle>>>,
    /// Ids whose StartTask (or RecoverTask) is in progress.
    starting: Mutex<HashSet<String>>,
}

/// Holds a task id while its StartTask or RecoverTask runs; released on
/// drop, whatever the outcome.
#[derive(Debug)]
pub struct Starting<'a> {
    store: &'a TaskStore,
    id: String,
}

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        self.store
            .starting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

impl TaskStore {
    /// The task with `id`, or TaskNotFound.
    pub fn get(&self, id: &str) -> Result<Arc<TaskHandle>> {
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
            .ok_or_else(|| DriverError::TaskNotFound(id.to_owned()))
    }

    /// Claims `id` for a start or recovery, so concurrent calls for the
    /// same task cannot make (and remove) containers of the same name at
    /// once; `None` while another claim holds it or the task is tracked.
    pub fn claim(&self, id: &str) -> Option<Starting<'_>> {
        // Lock order: `starting`, then `tasks` (in `contains`).
        let mut starting = self.starting.lock().unwrap_or_else(PoisonError::into_inner);
        if self.contains(id) || !starting.insert(id.to_owned()) {
            return None;
        }
        Some(Starting {
            store: self,
            id: id.to_owned(),
        })
    }

    /// Whether `id` is tracked.
    pub fn contains(&self, id: &str) -> bool {
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(id)
    }

    /// Tracks `handle` unless its id is already tracked; returns the handle
    /// that is tracked afterwards and whether it is the one given.
    pub fn insert(&self, handle: Arc<TaskHandle>) -> (Arc<TaskHandle>, bool) {
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        match tasks.get(&handle.task.id) {
            Some(existing) => (Arc::clone(existing), false),
            None => {
                tasks.insert(handle.task.id.clone(), Arc::clone(&handle));
                (handle, true)
            }
        }
    }

    /// Stops tracking `id`.
    pub fn remove(&self, id: &str) -> Option<Arc<TaskHandle>> {
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id)
    }

    /// Every tracked task.
    pub fn all(&self) -> Vec<Arc<TaskHandle>> {
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_id_is_claimed_once_until_released() {
        let store = TaskStore::default();
        let claim = store.claim("a").expect("a first claim");
        assert!(
            store.claim("a").is_none(),
            "a second claim while the first holds"
        );
        assert!(store.claim("b").is_some(), "other ids are free");
        drop(claim);
        assert!(store.claim("a").is_some(), "released on drop");
    }
}
