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

    /// Hands duplicates of a task's FIFO descriptors to the holder,
    /// starting it when needed.
    pub async fn put(&self, task: &str, stdout: &File, stderr: &File) -> Result<(), HolderError> {
        let dups = || -> io::Result<Vec<OwnedFd>> {
            Ok(vec![
                stdout.as_fd().try_clone_to_owned()?,
                stderr.as_fd().try_clone_to_owned()?,
            ])
        };
        let request = Request::Put {
            task: task.to_owned(),
        };
        self.ensure_running().await?;
        match self
            .call(request.clone(), dups().map_err(|e| self.io_error(e))?)
            .await
        {
            Ok(_) => Ok(()),
            // It may have been leaving just as we came: start one, once.
            Err(HolderError::Io { .. }) => {
                self.ensure_running().await?;
                self.call(request, dups().map_err(|e| self.io_error(e))?)
                    .await
                    .map(drop)
            }
            Err(err) => Err(err),
        }
    }

    /// Takes back a task's descriptors (stdout, stderr); `None` when the
    /// holder does not have them (or no holder runs).
    pub async fn get(&self, task: &str) -> Result<Option<(File, File)>, HolderError> {
        let request = Request::Get {
            task: task.to_owned(),
        };
        let (reply, fds) = match self.call(request, Vec::new()).await {
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
        match (reply.found, files.next(), files.next()) {
            (true, Some(stdout), Some(stderr)) => Ok(Some((stdout, stderr))),
            (false, _, _) => Ok(None),
            _ => Err(HolderError::Refused {
                dir: self.dir.display().to_string(),
                message: "found the task but sent no descriptors".to_owned(),
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
