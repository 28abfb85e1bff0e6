//! The tracked tasks, by id. Locks are never held across an await.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::error::{DriverError, Result};
use super::handle::TaskHandle;

/// Tracked tasks.
#[derive(Debug, Default)]
pub struct TaskStore {
    tasks: Mutex<HashMap<String, Arc<TaskHandle>>>,
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
