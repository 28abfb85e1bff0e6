//! Image calls: inspect, pull (with progress and an inactivity limit),
//! load from a tar archive, remove.

use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

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

/// One message of the engine's pull progress stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct PullMessage {
    /// Layer id, when the message is about a layer.
    pub(crate) id: Option<String>,
    /// `Downloading`, `Pull complete`, ….
    pub(crate) status: Option<String>,
    /// An error the engine reports mid-stream.
    pub(crate) error: Option<String>,
}

/// A pull's progress stream.
pub(crate) type PullStream<'a> = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = std::result::Result<PullMessage, PullError>> + Send + 'a>,
>;

/// Follows a pull's progress stream to its end: fails on a reported error,
/// after `timeout` in all, or after `activity_timeout` without a message;
/// `on_progress` sees the layer counts whenever a layer changes phase.
pub(crate) async fn follow_pull(
    mut stream: PullStream<'_>,
    timeout: Duration,
    activity_timeout: Duration,
    on_progress: &mut (dyn FnMut(&PullProgress) + Send),
) -> std::result::Result<(), PullError> {
    let started = Instant::now();
    let mut last_activity = Instant::now();
    let mut layers: std::collections::BTreeMap<String, &'static str> =
        std::collections::BTreeMap::new();
    loop {
        let remaining = timeout.saturating_sub(started.elapsed());
        let idle_left = activity_timeout.saturating_sub(last_activity.elapsed());
        let wait = remaining.min(idle_left);
        let message = match tokio::time::timeout(wait, stream.next()).await {
            Ok(None) => return Ok(()),
            Ok(Some(message)) => message?,
            Err(_) if remaining <= idle_left => return Err(PullError::Timeout(timeout)),
            Err(_) => return Err(PullError::Inactive(activity_timeout)),
        };
        last_activity = Instant::now();
        if let Some(error) = message.error {
            return Err(PullError::Failed(error));
        }
        let (Some(id), Some(status)) = (message.id, message.status) else {
            continue;
        };
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
        let stream = self
            .api()
            .create_image(Some(options.build()), None, credentials)
            .map(|item| match item {
                Ok(info) => Ok(PullMessage {
                    id: info.id,
                    status: info.status,
                    error: info.error_detail.and_then(|d| d.message),
                }),
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    Err(PullError::Failed(error))
                }
                Err(err) => Err(PullError::Docker(err.into())),
            });
        follow_pull(Box::pin(stream), timeout, activity_timeout, on_progress).await
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

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(id: &str, status: &str) -> std::result::Result<PullMessage, PullError> {
        Ok(PullMessage {
            id: Some(id.to_owned()),
            status: Some(status.to_owned()),
            error: None,
        })
    }

    #[tokio::test(start_paused = true)]
    async fn counts_layers_and_finishes_with_the_stream() {
        let stream = tokio_stream::iter(vec![
            layer("a", "Pulling fs layer"),
            layer("b", "Waiting"),
            layer("a", "Downloading"),
            layer("a", "Pull complete"),
            layer("b", "Already exists"),
        ]);
        let mut seen = Vec::new();
        let minute = Duration::from_secs(60);
        let result = follow_pull(Box::pin(stream), minute, minute, &mut |p| {
            seen.push(p.clone())
        })
        .await;
        assert!(result.is_ok());
        assert_eq!(
            seen.last(),
            Some(&PullProgress {
                layers: 2,
                done: 2,
                waiting: 0,
                pulling: 0
            })
        );
        assert_eq!(
            seen[2],
            PullProgress {
                layers: 2,
                done: 0,
                waiting: 1,
                pulling: 1
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_engine_is_abandoned_after_the_activity_timeout() {
        let stream =
            tokio_stream::iter(vec![layer("a", "Downloading")]).chain(tokio_stream::pending());
        let begun = Instant::now();
        let result = follow_pull(
            Box::pin(stream),
            Duration::from_secs(300),
            Duration::from_secs(120),
            &mut |_| {},
        )
        .await;
        assert!(
            matches!(result, Err(PullError::Inactive(d)) if d == Duration::from_secs(120)),
            "{result:?}"
        );
        assert_eq!(begun.elapsed(), Duration::from_secs(120));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_pull_is_abandoned_after_the_overall_timeout() {
        // A message every 50 s keeps it active, but 130 s is the limit.
        let stream = tokio_stream::iter((0..10).map(|i| layer("a", &format!("Downloading {i}"))))
            .throttle(Duration::from_secs(50));
        let result = follow_pull(
            Box::pin(stream),
            Duration::from_secs(130),
            Duration::from_secs(120),
            &mut |_| {},
        )
        .await;
        assert!(matches!(result, Err(PullError::Timeout(_))), "{result:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_error_in_the_stream_fails_the_pull() {
        let stream = tokio_stream::iter(vec![Ok(PullMessage {
            error: Some("manifest for x not found".to_owned()),
            ..PullMessage::default()
        })]);
        let minute = Duration::from_secs(60);
        let result = follow_pull(Box::pin(stream), minute, minute, &mut |_| {}).await;
        assert!(
            matches!(&result, Err(PullError::Failed(m)) if m.contains("not found")),
            "{result:?}"
        );
    }
}
