//! Task events (the TaskEvents stream): one broadcast for all tasks, every
//! open stream gets every event; a consumer that falls behind loses the
//! oldest events instead of holding memory or blocking the driver.

use std::collections::BTreeMap;
use std::time::SystemTime;

use tokio::sync::broadcast;

use super::task::TaskRequest;

/// Events kept for a slow consumer before the oldest are dropped.
pub const EVENT_QUEUE: usize = 256;

/// One event about one task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskEvent {
    /// Task id.
    pub task_id: String,
    /// Allocation id (Nomad routes events by allocation and task name).
    pub alloc_id: String,
    /// Task name.
    pub task_name: String,
    /// When it happened.
    pub timestamp: SystemTime,
    /// What happened.
    pub message: String,
    /// Details (e.g. `image`).
    pub annotations: BTreeMap<String, String>,
}

/// The event broadcaster.
#[derive(Debug)]
pub struct Events {
    sender: broadcast::Sender<TaskEvent>,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(EVENT_QUEUE).0,
        }
    }
}

impl Events {
    /// Emits an event about `task`.
    pub fn emit(
        &self,
        task: &TaskRequest,
        message: impl Into<String>,
        annotations: &[(&str, &str)],
    ) {
        let event = TaskEvent {
            task_id: task.id.clone(),
            alloc_id: task.alloc_id.clone(),
            task_name: task.name.clone(),
            timestamp: SystemTime::now(),
            message: message.into(),
            annotations: annotations
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        tracing::debug!(task_id = %event.task_id, annotations = ?event.annotations, "task event: {}", event.message);
        // No subscriber is fine: events are best effort, as in Nomad.
        let _ = self.sender.send(event);
    }

    /// A new consumer, seeing events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<TaskEvent> {
        self.sender.subscribe()
    }
}
