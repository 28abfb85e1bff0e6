//! One sampler per task, shared by every open TaskStats stream of it.
//!
//! The sampler publishes the latest sample on a `watch` channel: a stream
//! that falls behind simply sees the newest sample next (never a queue).
//! It runs at the shortest interval any stream asked for, stops when the
//! last stream goes away, and ends — closing every stream — when the
//! container stops.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use super::Usage;

/// The latest sample of a task (`None` until the first one).
pub type Latest = watch::Receiver<Option<Arc<Usage>>>;

/// What a running sampler shares with its streams.
#[derive(Debug)]
pub struct Shared {
    latest: watch::Sender<Option<Arc<Usage>>>,
    interval: watch::Sender<Duration>,
}

impl Shared {
    /// Publishes a sample.
    pub fn publish(&self, usage: Usage) {
        self.latest.send_replace(Some(Arc::new(usage)));
    }

    /// The interval to sample at.
    pub fn interval(&self) -> Duration {
        *self.interval.borrow()
    }

    /// Resolves when no stream listens any more.
    pub async fn unwatched(&self) {
        self.latest.closed().await;
    }
}

/// The sampler slot of one task.
#[derive(Debug, Default)]
pub struct Samplers {
    slot: Mutex<Option<Arc<Shared>>>,
}

impl Samplers {
    /// Listens to the task's sampler, starting one with `start` when none
    /// runs. The current sample, if any, is delivered first.
    pub fn subscribe(&self, interval: Duration, start: impl FnOnce(Arc<Shared>)) -> Latest {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(shared) = slot.as_ref() {
            shared.interval.send_if_modified(|current| {
                let faster = interval < *current;
                if faster {
                    *current = interval;
                }
                faster
            });
            let mut latest = shared.latest.subscribe();
            latest.mark_changed();
            return latest;
        }
        let shared = Arc::new(Shared {
            latest: watch::channel(None).0,
            interval: watch::channel(interval).0,
        });
        let latest = shared.latest.subscribe();
        *slot = Some(Arc::clone(&shared));
        drop(slot);
        start(shared);
        latest
    }

    /// For a sampler nobody listens to: true (and forgotten) unless a stream
    /// subscribed in the meantime.
    pub fn retire(&self, shared: &Arc<Shared>) -> bool {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if shared.latest.receiver_count() > 0 {
            return false;
        }
        if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, shared)) {
            *slot = None;
        }
        true
    }

    /// For a sampler that ends (the container stopped): forgotten, so its
    /// streams end once the sampler lets go of it.
    pub fn end(&self, shared: &Arc<Shared>) {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, shared)) {
            *slot = None;
        }
    }

    /// Whether a sampler runs.
    pub fn running(&self) -> bool {
        self.slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn usage(percent: f64) -> Usage {
        Usage {
            timestamp: SystemTime::UNIX_EPOCH,
            cpu: super::super::CpuUsage {
                percent,
                ..Default::default()
            },
            memory: super::super::MemoryUsage::default(),
            breakdown: Vec::new(),
        }
    }

    #[tokio::test]
    async fn streams_share_one_sampler_and_see_only_the_latest() {
        let samplers = Samplers::default();
        let mut started = Vec::new();
        let mut first = samplers.subscribe(Duration::from_secs(5), |s| started.push(s));
        assert_eq!(started.len(), 1);
        let shared = Arc::clone(&started[0]);
        shared.publish(usage(1.0));
        shared.publish(usage(2.0));
        first.changed().await.unwrap();
        let latest = first.borrow_and_update().clone().unwrap();
        assert_eq!(latest.cpu.percent, 2.0, "a slow reader skips to the newest");

        let mut second =
            samplers.subscribe(Duration::from_secs(1), |_| panic!("no second sampler"));
        assert_eq!(
            shared.interval(),
            Duration::from_secs(1),
            "the fastest stream sets the pace"
        );
        second.changed().await.unwrap();
        assert_eq!(
            second.borrow_and_update().clone().unwrap().cpu.percent,
            2.0,
            "the current sample first"
        );

        assert!(!samplers.retire(&shared), "still listened to");
        drop((first, second));
        assert!(samplers.retire(&shared));
        assert!(!samplers.running());
    }

    #[tokio::test]
    async fn ending_closes_the_streams() {
        let samplers = Samplers::default();
        let mut started = Vec::new();
        let mut stream = samplers.subscribe(Duration::from_secs(1), |s| started.push(s));
        let shared = started.pop().unwrap();
        samplers.end(&shared);
        drop(shared);
        assert!(stream.changed().await.is_err(), "the stream sees the end");
        assert!(!samplers.running());
    }
}
