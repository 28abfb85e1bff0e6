//! Image calls: inspect, pull (with progress and an inactivity limit),
//! load from a tar archive, remove.

use std::path::Path;
use std::time::{Duration, Instant};

use bollard::auth::DockerCredentials;
use bollard::query_parameters::{
    CreateImageOptionsBuilder, ImportImageOptionsBuilder, RemoveImageOptionsBuilder,
};
use tokio_stream::StreamExt as _;

use super::{CALL_TIMEOUT, Docker, DockerError, Result, bounded};

/// Registry credentials for a pull.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RegistryAuth {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
    /// Registry address.
    pub server_address: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("server_address", &self.server_address)
            .finish()
    }
}

/// Progress of a pull, as counted from the engine's messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PullProgress {
    /// Layers seen.
    pub layers: usize,
    /// Layers complete (`Pull complete` / `Already exists`).
    pub done: usize,
    /// Layers waiting.
    pub waiting: usize,
    /// Layers downloading or extracting.
    pub pulling: usize,
}

/// Why a pull failed.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// The registry or engine reported an error.
    #[error("{0}")]
    Failed(String),
    /// No progress for longer than the activity limit.
    #[error("image pull aborted due to inactivity: no progress for {0:?}")]
    Inactive(Duration),
    /// The whole pull took longer than its timeout.
    #[error("image pull timed out after {0:?}")]
    Timeout(Duration),
    /// The engine could not be reached.
    #[error(transparent)]
    Docker(#[from] DockerError),
}

impl Docker {
    /// The id of a local image, or `None` if the engine does not have it.
    pub async fn image_id(&self, reference: &str) -> Result<Option<String>> {
        match bounded(CALL_TIMEOUT, self.api().inspect_image(reference)).await {
            Ok(image) => Ok(Some(image.id.unwrap_or_default())),
            Err(DockerError::NotFound(_)) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Pulls `repository:tag` (or `repository@digest` with an empty tag).
    /// Gives up after `timeout`, or when the engine reports no progress for
    /// `activity_timeout`; `on_progress` sees the counts as they change.
    pub async fn pull_image(
        &self,
        repository: &str,
        tag: &str,
        auth: Option<RegistryAuth>,
        timeout: Duration,
        activity_timeout: Duration,
        on_progress: &mut (dyn FnMut(&PullProgress) + Send),
    ) -> std::result::Result<(), PullError> {
        let mut options = CreateImageOptionsBuilder::new().from_image(repository);
        if !tag.is_empty() {
            options = options.tag(tag);
        }
        let credentials = auth.map(|a| DockerCredentials {
            username: Some(a.username),
            password: Some(a.password),
            serveraddress: Some(a.server_address).filter(|s| !s.is_empty()),
            ..DockerCredentials::default()
        });
        let mut stream = self
            .api()
            .create_image(Some(options.build()), None, credentials);
        let started = Instant::now();
        let mut last_activity = Instant::now();
        let mut layers: std::collections::BTreeMap<String, &'static str> =
            std::collections::BTreeMap::new();
        loop {
            let remaining = timeout.saturating_sub(started.elapsed());
            let idle_left = activity_timeout.saturating_sub(last_activity.elapsed());
            let wait = remaining.min(idle_left);
            let item = match tokio::time::timeout(wait, stream.next()).await {
                Ok(item) => item,
                Err(_) if remaining <= idle_left => return Err(PullError::Timeout(timeout)),
                Err(_) => return Err(PullError::Inactive(activity_timeout)),
            };
            let info = match item {
                None => return Ok(()),
                Some(Ok(info)) => info,
                Some(Err(bollard::errors::Error::DockerStreamError { error })) => {
                    return Err(PullError::Failed(error));
                }
                Some(Err(err)) => return Err(PullError::Docker(err.into())),
            };
            last_activity = Instant::now();
            if let Some(detail) = info.error_detail.and_then(|d| d.message) {
                return Err(PullError::Failed(detail));
            }
            if let (Some(id), Some(status)) = (info.id, info.status) {
                let phase = match status.as_str() {
                    "Pull complete" | "Already exists" => "done",
                    "Waiting" => "waiting",
                    s if s.starts_with("Pulling fs layer") => "waiting",
                    s if s.starts_with("Downloading")
                        || s.starts_with("Extracting")
                        || s.starts_with("Verifying")
                        || s.starts_with("Download complete") =>
                    {
                        "pulling"
                    }
                    _ => continue,
                };
                layers.insert(id, phase);
                let count = |p: &str| layers.values().filter(|v| **v == p).count();
                on_progress(&PullProgress {
                    layers: layers.len(),
                    done: count("done"),
                    waiting: count("waiting"),
                    pulling: count("pulling"),
                });
            }
        }
    }

    /// Loads images from a `docker save` archive.
    pub async fn load_image(&self, archive: &Path) -> Result<()> {
        let file = tokio::fs::File::open(archive).await.map_err(|e| {
            DockerError::Transport(format!("cannot open {}: {e}", archive.display()))
        })?;
        let body = bollard::body_try_stream(tokio_util::io::ReaderStream::new(file));
        let options = ImportImageOptionsBuilder::new().quiet(true).build();
        let mut stream = self.api().import_image(options, body, None);
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, stream.next()).await {
                Err(_) => return Err(DockerError::Timeout(CALL_TIMEOUT)),
                Ok(None) => return Ok(()),
                Ok(Some(Ok(info))) => {
                    if let Some(message) = info.error_detail.and_then(|d| d.message) {
                        return Err(DockerError::Engine {
                            status: 500,
                            message,
                        });
                    }
                }
                Ok(Some(Err(err))) => return Err(err.into()),
            }
        }
    }

    /// Removes an image by id (forcefully, as Nomad does).
    pub async fn remove_image(&self, id: &str) -> Result<()> {
        let options = RemoveImageOptionsBuilder::new().force(true).build();
        bounded(
            CALL_TIMEOUT,
            self.api().remove_image(id, Some(options), None),
        )
        .await
        .map(|_| ())
    }
}
