//! Errors of the driver core, with what Nomad should do about them.

use crate::config::ConfigError;
use crate::docker::DockerError;

/// What went wrong in a driver call.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// No task with this id is tracked.
    #[error("task not found for given id: {0}")]
    TaskNotFound(String),
    /// The task's configuration is invalid (names the key).
    #[error("invalid task config: {0}")]
    InvalidConfig(ConfigError),
    /// StartTask for an id that is already running.
    #[error("task with ID {0:?} already started")]
    AlreadyStarted(String),
    /// SetConfig has not succeeded yet.
    #[error("the driver has no configuration yet: SetConfig must succeed first")]
    NotConfigured,
    /// A failure Nomad may retry (restart policy) or must not, as marked.
    /// Goes out as FAILED_PRECONDITION with Nomad's RecoverableError detail.
    #[error("{message}")]
    Recoverable {
        /// The message the task's event shows.
        message: String,
        /// Whether retrying may help.
        recoverable: bool,
    },
    /// The request is malformed or contradicts the task's state.
    #[error("{0}")]
    InvalidRequest(String),
    /// Something the request names other than a task id (a container
    /// named by a handle's `driver_state`) does not exist.
    #[error("{0}")]
    NotFound(String),
    /// Any other failure.
    #[error("{0}")]
    Failed(String),
}

impl DriverError {
    /// A failure worth retrying.
    pub fn recoverable(message: impl Into<String>) -> Self {
        Self::Recoverable {
            message: message.into(),
            recoverable: true,
        }
    }

    /// A failure that retrying will not fix, flagged as such for Nomad.
    pub fn unrecoverable(message: impl Into<String>) -> Self {
        Self::Recoverable {
            message: message.into(),
            recoverable: false,
        }
    }

    /// An engine error, recoverable when a retry may help.
    pub fn docker(context: &str, err: &DockerError) -> Self {
        Self::Recoverable {
            message: format!("{context}: {err}"),
            recoverable: err.is_transient(),
        }
    }
}

impl From<ConfigError> for DriverError {
    fn from(err: ConfigError) -> Self {
        Self::InvalidConfig(err)
    }
}

/// Result of a driver call.
pub type Result<T, E = DriverError> = std::result::Result<T, E>;
