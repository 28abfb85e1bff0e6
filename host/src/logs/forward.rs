//! The forwarding loop of one task.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncWriteExt as _;
use tokio_stream::StreamExt as _;
use tokio_util::sync::CancellationToken;

use super::Writers;
use crate::docker::logs::LogChunk;
use crate::docker::{Docker, DockerError};

/// Shortest and longest pause before reconnecting to the logs API.
const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(120);

/// Errors after which reading logs cannot work (e.g. log driver `none`).
fn is_terminal(err: &DockerError) -> bool {
    let message = err.to_string().to_lowercase();
    message.contains("configured logging driver does not support reading")
        || message.contains("not implemented")
}

/// Nomad's logger backoff: grow by 15 % times a random factor in [1, 2),
/// between half a second and two minutes.
fn next_backoff(current: Duration) -> Duration {
    let jitter = 1.0
        + f64::from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .subsec_nanos()
                % 1000,
        ) / 1000.0;
    current
        .max(BACKOFF_MIN)
        .mul_f64(1.15 * jitter)
        .clamp(BACKOFF_MIN, BACKOFF_MAX)
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

/// Copies the container's output into the FIFOs from `since` (Unix seconds,
/// 0 for a container that just started) until it stops, `cancel` fires, or
/// reading turns out to be impossible. Dropping `writers` at the end closes
/// the FIFOs, so logmon sees end-of-file.
pub async fn forward(
    docker: Docker,
    container_id: String,
    task_id: String,
    mut writers: Writers,
    since: i64,
    cancel: CancellationToken,
) {
    let mut since = since;
    let mut backoff = Duration::ZERO;
    loop {
        let mut stream = docker.follow_logs(&container_id, since);
        loop {
            let chunk = tokio::select! {
                chunk = stream.next() => chunk,
                () = cancel.cancelled() => return,
            };
            let written = match chunk {
                Some(Ok(LogChunk::Stdout(bytes))) => writers.stdout.write_all(&bytes).await,
                Some(Ok(LogChunk::Stderr(bytes))) => writers.stderr.write_all(&bytes).await,
                Some(Err(err)) if is_terminal(&err) => {
                    tracing::info!(task_id, error = %err, "log forwarding ends: the container's log driver cannot be read");
                    return;
                }
                Some(Err(err)) => {
                    tracing::debug!(task_id, error = %err, "log stream failed; reconnecting");
                    break;
                }
                None => break,
            };
            if let Err(err) = written {
                tracing::warn!(task_id, error = %err, "cannot write to the log FIFO; log forwarding ends");
                return;
            }
            backoff = Duration::ZERO;
        }
        // The stream ended: the container stopped, or the engine went away.
        match docker.inspect_container(&container_id).await {
            Ok(facts) if !facts.running => return,
            Err(DockerError::NotFound(_)) => return,
            _ => {}
        }
        since = now_secs();
        backoff = next_backoff(backoff);
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = cancel.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_within_bounds() {
        let mut b = Duration::ZERO;
        for _ in 0..100 {
            b = next_backoff(b);
            assert!(b >= BACKOFF_MIN && b <= BACKOFF_MAX, "{b:?}");
        }
        assert_eq!(b, BACKOFF_MAX, "it reaches the cap");
    }

    #[test]
    fn terminal_errors_are_recognised() {
        let none = DockerError::Engine {
            status: 501,
            message: "configured logging driver does not support reading".to_owned(),
        };
        assert!(is_terminal(&none));
        assert!(!is_terminal(&DockerError::Transport(
            "connection reset".to_owned()
        )));
    }
}
