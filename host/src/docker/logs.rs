//! Following a container's output through the engine's logs API.

use std::pin::Pin;

use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptionsBuilder;
use tokio_stream::{Stream, StreamExt as _};

use super::{Docker, DockerError, Result};

/// One chunk of a container's output, demultiplexed by the engine's 8-byte
/// frame headers (or raw, for TTY containers, all on stdout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogChunk {
    /// Standard output (everything, for a TTY container).
    Stdout(Vec<u8>),
    /// Standard error.
    Stderr(Vec<u8>),
}

/// A container's output as it is written.
pub type LogStream = Pin<Box<dyn Stream<Item = Result<LogChunk>> + Send>>;

impl Docker {
    /// Follows `container`'s stdout and stderr from `since` (Unix seconds;
    /// 0 means from the beginning) until the container stops.
    pub fn follow_logs(&self, container: &str, since: i64) -> LogStream {
        let options = LogsOptionsBuilder::new()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .since(i32::try_from(since).unwrap_or(i32::MAX))
            .build();
        Box::pin(
            self.api()
                .logs(container, Some(options))
                .filter_map(|item| match item {
                    Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                        Some(Ok(LogChunk::Stdout(message.to_vec())))
                    }
                    Ok(LogOutput::StdErr { message }) => {
                        Some(Ok(LogChunk::Stderr(message.to_vec())))
                    }
                    Ok(LogOutput::StdIn { .. }) => None,
                    Err(err) => Some(Err(DockerError::from(err))),
                }),
        )
    }
}
