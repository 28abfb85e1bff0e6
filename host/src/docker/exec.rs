//! Running commands inside a task's container (ExecTask, `nomad alloc exec`).

use std::pin::Pin;
use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, ResizeExecOptions, StartExecOptions, StartExecResults};
use tokio::io::AsyncWrite;
use tokio_stream::{Stream, StreamExt as _};

use super::{CALL_TIMEOUT, Docker, DockerError, Result, bounded};

/// One chunk of a command's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecOutput {
    /// Standard output (everything, with a TTY).
    Stdout(Vec<u8>),
    /// Standard error.
    Stderr(Vec<u8>),
}

/// A running command: its output, its input and its id.
pub struct ExecSession {
    /// Exec id (for resize and the exit code).
    pub id: String,
    /// Output chunks until the command's streams close.
    pub output: Pin<Box<dyn Stream<Item = Result<ExecOutput>> + Send>>,
    /// Standard input (only when requested).
    pub input: Pin<Box<dyn AsyncWrite + Send>>,
}

impl std::fmt::Debug for ExecSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecSession")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Docker {
    /// Starts `cmd` in `container`, attached.
    pub async fn exec(
        &self,
        container: &str,
        cmd: &[String],
        tty: bool,
        stdin: bool,
    ) -> Result<ExecSession> {
        let options = CreateExecOptions {
            cmd: Some(cmd.to_vec()),
            attach_stdin: Some(stdin),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            tty: Some(tty),
            ..CreateExecOptions::default()
        };
        let created = bounded(CALL_TIMEOUT, self.api().create_exec(container, options)).await?;
        let start = StartExecOptions {
            detach: false,
            tty,
            output_capacity: None,
        };
        match bounded(
            CALL_TIMEOUT,
            self.api().start_exec(&created.id, Some(start)),
        )
        .await?
        {
            StartExecResults::Attached { output, input } => Ok(ExecSession {
                id: created.id,
                output: Box::pin(output.filter_map(|item| match item {
                    Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                        Some(Ok(ExecOutput::Stdout(message.to_vec())))
                    }
                    Ok(LogOutput::StdErr { message }) => {
                        Some(Ok(ExecOutput::Stderr(message.to_vec())))
                    }
                    Ok(LogOutput::StdIn { .. }) => None,
                    Err(err) => Some(Err(DockerError::from(err))),
                })),
                input,
            }),
            StartExecResults::Detached => Err(DockerError::Transport(
                "the engine started the exec detached".to_owned(),
            )),
        }
    }

    /// Resizes the exec's TTY.
    pub async fn exec_resize(&self, id: &str, height: u16, width: u16) -> Result<()> {
        bounded(
            CALL_TIMEOUT,
            self.api()
                .resize_exec(id, ResizeExecOptions { height, width }),
        )
        .await
    }

    /// The exec's exit code, or `None` while it runs.
    pub async fn exec_exit_code(&self, id: &str) -> Result<Option<i64>> {
        let inspect = bounded(CALL_TIMEOUT, self.api().inspect_exec(id)).await?;
        Ok(if inspect.running.unwrap_or(false) {
            None
        } else {
            Some(inspect.exit_code.unwrap_or(0))
        })
    }

    /// Waits for the exec to finish, polling every 100 ms.
    pub async fn exec_wait(&self, id: &str) -> Result<i64> {
        loop {
            if let Some(code) = self.exec_exit_code(id).await? {
                return Ok(code);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
