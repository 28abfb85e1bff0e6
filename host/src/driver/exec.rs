//! ExecTask (script checks) and the plumbing of ExecTaskStreaming.

use std::collections::VecDeque;
use std::time::Duration;

use tokio_stream::StreamExt as _;

use super::Driver;
use super::error::{DriverError, Result};
use super::handle::ExitResult;
use crate::docker::exec::{ExecOutput, ExecSession};

/// Bytes of each stream ExecTask keeps: the last 4 KiB, as Nomad does.
pub const EXEC_TAIL: usize = 4096;

/// Longest single argument of an exec command: the kernel's
/// `MAX_ARG_STRLEN` (32 pages, with the terminating NUL).
pub const MAX_EXEC_ARG: usize = 32 * 4096 - 1;
/// Most bytes of all arguments of an exec command together (two
/// arguments of the longest kind; far beyond any health check's command).
pub const MAX_EXEC_COMMAND: usize = 256 * 1024;

/// Refuses a command no process could be started with: empty, an argument
/// with a NUL byte, an argument longer than the kernel takes, or too much
/// altogether. Such commands never reach the engine (Docker 20.10 hangs
/// the container for good on an exec of a 3 MiB command: inspect, exec
/// and removal of that container stop answering).
pub fn check_command(cmd: &[String]) -> Result<()> {
    if cmd.is_empty() {
        return Err(DriverError::InvalidRequest(
            "command is required".to_owned(),
        ));
    }
    for (i, arg) in cmd.iter().enumerate() {
        if arg.contains('\0') {
            return Err(DriverError::InvalidRequest(format!(
                "exec command argument {i} contains a NUL byte"
            )));
        }
        if arg.len() > MAX_EXEC_ARG {
            return Err(DriverError::InvalidRequest(format!(
                "exec command argument {i} is {} bytes; a process argument has at most {MAX_EXEC_ARG}",
                arg.len()
            )));
        }
    }
    let total: usize = cmd.iter().map(String::len).sum();
    if total > MAX_EXEC_COMMAND {
        return Err(DriverError::InvalidRequest(format!(
            "exec command is {total} bytes; at most {MAX_EXEC_COMMAND} are accepted"
        )));
    }
    Ok(())
}

/// What a finished ExecTask returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutcome {
    /// The last [`EXEC_TAIL`] bytes of stdout.
    pub stdout: Vec<u8>,
    /// The last [`EXEC_TAIL`] bytes of stderr.
    pub stderr: Vec<u8>,
    /// How the command ended.
    pub exit: ExitResult,
}

/// Keeps the last `EXEC_TAIL` bytes written to it.
#[derive(Debug, Default)]
struct Tail(VecDeque<u8>);

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        let keep = &bytes[bytes.len().saturating_sub(EXEC_TAIL)..];
        let overflow = (self.0.len() + keep.len()).saturating_sub(EXEC_TAIL);
        self.0.drain(..overflow.min(self.0.len()));
        self.0.extend(keep);
    }
}

impl Driver {
    /// Runs `cmd` in the task's container and returns the tails of its
    /// output and its exit code. A zero `timeout` means no timeout (the
    /// proto's promise; Nomad's own driver expires at once).
    pub async fn exec_task(
        &self,
        id: &str,
        cmd: &[String],
        timeout: Duration,
    ) -> Result<ExecOutcome> {
        if cmd.is_empty() {
            return Err(DriverError::InvalidRequest(
                "command is required".to_owned(),
            ));
        }
        let run = self.exec_collect(id, cmd);
        if timeout.is_zero() {
            return run.await;
        }
        tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| DriverError::Failed(format!("exec timed out after {timeout:?}")))?
    }

    async fn exec_collect(&self, id: &str, cmd: &[String]) -> Result<ExecOutcome> {
        let mut session = self.exec_session(id, cmd, false, false).await?;
        let (mut stdout, mut stderr) = (Tail::default(), Tail::default());
        while let Some(chunk) = session.output.next().await {
            match chunk.map_err(|e| DriverError::Failed(format!("exec output failed: {e}")))? {
                ExecOutput::Stdout(bytes) => stdout.push(&bytes),
                ExecOutput::Stderr(bytes) => stderr.push(&bytes),
            }
        }
        let exit_code = self.exec_exit_code(&session.id).await?;
        Ok(ExecOutcome {
            stdout: stdout.0.into(),
            stderr: stderr.0.into(),
            exit: ExitResult {
                exit_code,
                ..ExitResult::default()
            },
        })
    }

    /// Starts an attached command in the task's container.
    pub async fn exec_session(
        &self,
        id: &str,
        cmd: &[String],
        tty: bool,
        stdin: bool,
    ) -> Result<ExecSession> {
        let handle = self.tasks.get(id)?;
        check_command(cmd)?;
        let docker = self
            .docker()
            .await
            .map_err(|e| DriverError::docker("cannot reach Docker", &e))?;
        docker
            .exec(&handle.container_id, cmd, tty, stdin)
            .await
            .map_err(|e| {
                DriverError::Failed(format!(
                    "failed to exec into container {}: {e}",
                    handle.container_id
                ))
            })
    }

    /// Resizes an exec's TTY.
    pub async fn exec_resize(&self, exec_id: &str, height: u16, width: u16) -> Result<()> {
        let docker = self
            .docker()
            .await
            .map_err(|e| DriverError::docker("cannot reach Docker", &e))?;
        docker
            .exec_resize(exec_id, height, width)
            .await
            .map_err(|e| DriverError::Failed(format!("resize failed: {e}")))
    }

    /// The exec's exit code, or `None` while it runs.
    pub async fn exec_exit_code_now(&self, exec_id: &str) -> Result<Option<i64>> {
        let docker = self
            .docker()
            .await
            .map_err(|e| DriverError::docker("cannot reach Docker", &e))?;
        docker
            .exec_exit_code(exec_id)
            .await
            .map_err(|e| DriverError::Failed(format!("cannot inspect the exec: {e}")))
    }

    /// Waits for an exec to finish and returns its exit code.
    pub async fn exec_exit_code(&self, exec_id: &str) -> Result<i64> {
        let docker = self
            .docker()
            .await
            .map_err(|e| DriverError::docker("cannot reach Docker", &e))?;
        docker
            .exec_wait(exec_id)
            .await
            .map_err(|e| DriverError::Failed(format!("cannot read the exit code: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_4_kib() {
        let mut tail = Tail::default();
        tail.push(b"abc");
        tail.push(&[b'x'; EXEC_TAIL]);
        assert_eq!(tail.0.len(), EXEC_TAIL);
        assert!(tail.0.iter().all(|b| *b == b'x'));
        tail.push(b"end");
        let bytes: Vec<u8> = tail.0.into();
        assert_eq!(bytes.len(), EXEC_TAIL);
        assert!(bytes.ends_with(b"xend"));
        let mut big = Tail::default();
        big.push(&vec![b'y'; 3 * EXEC_TAIL]);
        assert_eq!(big.0.len(), EXEC_TAIL);
    }

    #[test]
    fn commands_no_process_could_take_are_refused() {
        let refused = |cmd: Vec<String>, needle: &str| match check_command(&cmd) {
            Err(DriverError::InvalidRequest(message)) => {
                assert!(message.contains(needle), "{message}");
            }
            other => panic!("{needle}: {other:?}"),
        };
        refused(Vec::new(), "required");
        refused(
            vec!["echo".into(), "a\0b".into()],
            "argument 1 contains a NUL",
        );
        refused(
            vec!["a".repeat(MAX_EXEC_ARG + 1)],
            "argument 0 is 131072 bytes",
        );
        refused(vec!["a".repeat(MAX_EXEC_ARG); 3], "at most 262144");
        assert!(check_command(&["echo".into(), "a".repeat(MAX_EXEC_ARG)]).is_ok());
    }
}
