//! The plugin's side of the holder: start it, hand it descriptors, get
//! them back, let them go.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd as _, OwnedFd};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{CHECKPOINTS, Envelope, LOG, PROTOCOL_VERSION, Reply, Request, SOCKET, wire};
use crate::logs::checkpoint::Checkpoint;

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a freshly started holder has to open its socket.
const START_TIMEOUT: Duration = Duration::from_secs(5);
/// Buffer asked for each relay pipe (the kernel may cap it at
/// `/proc/sys/fs/pipe-max-size`, 1 MiB by default): a burst of the
/// container does not wait for the holder.
const RELAY_PIPE_BYTES: usize = 256 * 1024;
/// The holder's log is started afresh beyond this size.
const LOG_LIMIT: u64 = 1024 * 1024;

/// Why talking to the holder failed.
#[derive(Debug, thiserror::Error)]
pub enum HolderError {
    /// The socket or the process could not be reached or started.
    #[error("log holder in {dir}: {source}")]
    Io {
        /// The holder directory.
        dir: String,
        /// Why.
        source: io::Error,
    },
    /// The holder answered with an error.
    #[error("log holder in {dir} refused: {message}")]
    Refused {
        /// The holder directory.
        dir: String,
        /// Its message.
        message: String,
    },
}

/// A task taken up again from the holder.
#[derive(Debug)]
pub struct Attached {
    /// Duplicates of the FIFOs (stdout, stderr), to write into directly
    /// should the holder go away.
    pub fifos: (File, File),
    /// The write ends of the new pipes (stdout, stderr).
    pub pipes: (File, File),
    /// Bytes of stdout and stderr the earlier plugins' pipes carried.
    pub accepted: [u64; 2],
}

/// A pipe for relaying (read end, write end).
fn relay_pipe() -> io::Result<(OwnedFd, File)> {
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let _ = rustix::pipe::fcntl_setpipe_size(&write, RELAY_PIPE_BYTES);
    Ok((read, File::from(write)))
}

/// A handle on the holder of one directory.
#[derive(Debug, Clone)]
pub struct Holder {
    dir: Arc<PathBuf>,
    /// One start at a time.
    starting: Arc<tokio::sync::Mutex<()>>,
}

impl Holder {
    /// The holder serving `dir` (see [`super::directory`]).
    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir: Arc::new(dir),
            starting: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where `task`'s log checkpoint is kept.
    pub fn checkpoint_path(&self, task: &str) -> PathBuf {
        self.dir.join(CHECKPOINTS).join(Checkpoint::file_name(task))
    }

    fn io_error(&self, source: io::Error) -> HolderError {
        HolderError::Io {
            dir: self.dir.display().to_string(),
            source,
        }
    }

    /// One request, on its own connection, in a blocking thread.
    async fn call(
        &self,
        request: Request,
        fds: Vec<OwnedFd>,
    ) -> Result<(Reply, Vec<OwnedFd>), HolderError> {
        let dir = Arc::clone(&self.dir);
        let called = tokio::task::spawn_blocking(move || call_blocking(&dir, request, &fds))
            .await
            .map_err(|e| self.io_error(io::Error::other(e.to_string())))?;
        let (reply, fds) = called.map_err(|e| self.io_error(e))?;
        if !reply.ok {
            return Err(HolderError::Refused {
                dir: self.dir.display().to_string(),
                message: reply.error.unwrap_or_else(|| "no reason given".to_owned()),
            });
        }
        Ok((reply, fds))
    }

    /// The running holder's pid and load.
    pub async fn status(&self) -> Result<Reply, HolderError> {
        self.call(Request::Status, Vec::new())
            .await
            .map(|(reply, _)| reply)
    }

    /// Makes sure a holder serves the directory, starting one if needed.
    pub async fn ensure_running(&self) -> Result<(), HolderError> {
        let _one_at_a_time = self.starting.lock().await;
        if self.status().await.is_ok() {
            return Ok(());
        }
        super::prepare(&self.dir).map_err(|e| self.io_error(e))?;
        self.spawn().map_err(|e| self.io_error(e))?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self.status().await {
                Ok(reply) => {
                    tracing::info!(dir = %self.dir.display(), pid = reply.pid, "log holder started");
                    return Ok(());
                }
                Err(err) if Instant::now() >= deadline => return Err(err),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// Starts `/proc/self/exe log-holder --dir <dir>`: our own binary, in
    /// its own process group, with nothing of ours but its log file.
    fn spawn(&self) -> io::Result<()> {
        let log_path = self.dir.join(LOG);
        if std::fs::metadata(&log_path).is_ok_and(|m| m.len() > LOG_LIMIT) {
            let _ = std::fs::rename(&log_path, self.dir.join(format!("{LOG}.1")));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&log_path)?;
        let program_name = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "nomad-driver-wasmdock".to_owned());
        let mut command = tokio::process::Command::new("/proc/self/exe");
        command
            .arg0(program_name)
            .arg("log-holder")
            .arg("--dir")
            .arg(self.dir.as_os_str())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .env_clear()
            .current_dir("/")
            .process_group(0)
            .kill_on_drop(false);
        if let Some(level) = std::env::var_os(crate::telemetry::LOG_LEVEL_ENV) {
            command.env(crate::telemetry::LOG_LEVEL_ENV, level);
        }
        // The child is reaped by the runtime when it exits.
        command.spawn().map(drop)
    }

    /// Hands a task's FIFOs to the holder, starting it when needed.
    /// Returns the write ends of the pipes the holder relays into them
    /// (stdout, stderr): from now on the plugin writes there.
    pub async fn put(
        &self,
        task: &str,
        stdout: &File,
        stderr: &File,
    ) -> Result<(File, File), HolderError> {
        let request = Request::Put {
            task: task.to_owned(),
        };
        self.ensure_running().await?;
        let attempt = || -> io::Result<(Vec<OwnedFd>, (File, File))> {
            let (out_read, out_write) = relay_pipe()?;
            let (err_read, err_write) = relay_pipe()?;
            let fds = vec![
                stdout.as_fd().try_clone_to_owned()?,
                stderr.as_fd().try_clone_to_owned()?,
                out_read,
                err_read,
            ];
            Ok((fds, (out_write, err_write)))
        };
        let (fds, writers) = attempt().map_err(|e| self.io_error(e))?;
        match self.call(request.clone(), fds).await {
            Ok(_) => Ok(writers),
            // It may have been leaving just as we came: start one, once.
            Err(HolderError::Io { .. }) => {
                self.ensure_running().await?;
                let (fds, writers) = attempt().map_err(|e| self.io_error(e))?;
                self.call(request, fds).await.map(|_| writers)
            }
            Err(err) => Err(err),
        }
    }

    /// Goes on with a task a previous plugin forwarded: new pipes are
    /// queued behind its old ones. `None` when the holder does not have
    /// the task (or no holder runs).
    pub async fn attach(&self, task: &str) -> Result<Option<Attached>, HolderError> {
        let request = Request::Attach {
            task: task.to_owned(),
        };
        let (out_read, out_write) = relay_pipe().map_err(|e| self.io_error(e))?;
        let (err_read, err_write) = relay_pipe().map_err(|e| self.io_error(e))?;
        let (reply, fds) = match self.call(request, vec![out_read, err_read]).await {
            Ok(answer) => answer,
            Err(HolderError::Io { source, .. })
                if matches!(
                    source.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) =>
            {
                return Ok(None);
            }
            Err(err) => return Err(err),
        };
        let mut files = fds.into_iter().map(File::from);
        match (reply.found, reply.accepted, files.next(), files.next()) {
            (false, _, _, _) => Ok(None),
            (true, Some(accepted), Some(stdout), Some(stderr)) => Ok(Some(Attached {
                fifos: (stdout, stderr),
                pipes: (out_write, err_write),
                accepted,
            })),
            _ => Err(HolderError::Refused {
                dir: self.dir.display().to_string(),
                message: "found the task but sent no descriptors or counts".to_owned(),
            }),
        }
    }

    /// Tells the holder to close a task's descriptors. No holder is fine.
    pub async fn release(&self, task: &str) -> Result<(), HolderError> {
        let request = Request::Release {
            task: task.to_owned(),
        };
        match self.call(request, Vec::new()).await {
            Ok(_) => Ok(()),
            Err(HolderError::Io { source, .. })
                if matches!(
                    source.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) =>
            {
                Ok(())
            }
            Err(err) => Err(err),
        }
    }
}

fn call_blocking(
    dir: &Path,
    request: Request,
    fds: &[OwnedFd],
) -> io::Result<(Reply, Vec<OwnedFd>)> {
    let conn = wire::connect(&dir.join(SOCKET))?;
    wire::set_timeouts(&conn, REQUEST_TIMEOUT)?;
    let uid = wire::peer_uid(&conn)?;
    if uid != wire::own_uid() {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("the holder socket belongs to uid {uid}"),
        ));
    }
    let envelope = Envelope {
        v: PROTOCOL_VERSION,
        request,
    };
    let bytes = serde_json::to_vec(&envelope).map_err(io::Error::other)?;
    let borrowed: Vec<_> = fds.iter().map(|fd| fd.as_fd()).collect();
    wire::send(&conn, &bytes, &borrowed)?;
    let (reply, fds) = wire::recv(&conn)?;
    if reply.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "the holder closed the connection",
        ));
    }
    let reply: Reply = serde_json::from_slice(&reply)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok((reply, fds))
}
