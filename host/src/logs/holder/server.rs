//! The holder process (`nomad-driver-wasmdock log-holder --dir <dir>`).
//!
//! Single-threaded and blocking: it accepts one connection at a time,
//! answers its requests, and between connections checks whether held FIFOs
//! were removed. Requests come only from processes of our own user.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd as _, OwnedFd};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::{
    Envelope, LINGER, LOCK, PROTOCOL_VERSION, Reply, Request, SOCKET, valid_task_id, wire,
};

/// How long one connection may take per message.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);
/// How often removed FIFOs are looked for.
const SWEEP: Duration = Duration::from_secs(2);
/// Most tasks held at once.
const MAX_TASKS: usize = 65_536;
/// Most requests on one connection.
const MAX_REQUESTS: usize = 1024;

/// Runs the holder until it has held nothing for `linger`.
pub fn main(args: &[String]) -> ExitCode {
    crate::telemetry::init();
    let dir = match args {
        [flag, dir] if flag == "--dir" => PathBuf::from(dir),
        _ => {
            tracing::error!("usage: nomad-driver-wasmdock log-holder --dir <directory>");
            return ExitCode::FAILURE;
        }
    };
    match run(&dir, LINGER) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(dir = %dir.display(), error = %err, "log holder failed");
            ExitCode::FAILURE
        }
    }
}

/// Serves `dir`'s socket until nothing has been held for `linger`.
pub fn run(dir: &Path, linger: Duration) -> io::Result<()> {
    super::prepare(dir)?;
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(LOCK))?;
    // A holder that is just exiting may still hold the lock for a moment.
    let deadline = Instant::now() + Duration::from_secs(3);
    while !wire::try_lock(&lock)? {
        if Instant::now() >= deadline {
            tracing::info!(dir = %dir.display(), "another log holder serves this directory");
            return Ok(());
        }
        #[expect(
            clippy::disallowed_methods,
            reason = "the holder is a blocking process without an async runtime"
        )]
        std::thread::sleep(Duration::from_millis(50));
    }
    let socket = dir.join(SOCKET);
    match std::fs::remove_file(&socket) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
        _ => {}
    }
    let listener = wire::listen(&socket)?;
    wire::raise_fd_limit();
    tracing::info!(dir = %dir.display(), pid = std::process::id(), "log holder started");

    let mut held = Held::default();
    let mut idle_since = Some(Instant::now());
    let mut last_sweep = Instant::now();
    loop {
        if wire::readable(&listener, Duration::from_millis(500))? {
            match wire::accept(&listener) {
                Ok(conn) => serve(conn, &mut held),
                Err(err) => tracing::debug!(error = %err, "accept failed"),
            }
        }
        if last_sweep.elapsed() >= SWEEP {
            held.sweep();
            last_sweep = Instant::now();
        }
        if held.tasks.is_empty() {
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= linger {
                break;
            }
        } else {
            idle_since = None;
        }
    }
    // Unlink before closing: a client that finds no socket starts a new
    // holder instead of talking to one that is leaving.
    let _ = std::fs::remove_file(&socket);
    drop(listener);
    tracing::info!(dir = %dir.display(), "log holder exits: nothing left to hold");
    drop(lock);
    Ok(())
}

/// The descriptors held, by task id.
#[derive(Debug, Default)]
struct Held {
    tasks: BTreeMap<String, [File; 2]>,
}

impl Held {
    fn handle(&mut self, request: Request, fds: Vec<OwnedFd>) -> (Reply, Vec<OwnedFd>) {
        let fail = |error: String| Reply {
            ok: false,
            error: Some(error),
            ..Reply::default()
        };
        let ok = |tasks: usize| Reply {
            ok: true,
            pid: std::process::id(),
            tasks,
            ..Reply::default()
        };
        match request {
            Request::Status => (ok(self.tasks.len()), Vec::new()),
            Request::Put { task } if valid_task_id(&task) => {
                let files: Vec<File> = fds.into_iter().map(File::from).collect();
                let Ok(pair) = <[File; 2]>::try_from(files) else {
                    return (
                        fail("put needs exactly two descriptors".to_owned()),
                        Vec::new(),
                    );
                };
                if !pair.iter().all(is_fifo) {
                    return (fail("put accepts FIFOs only".to_owned()), Vec::new());
                }
                if self.tasks.len() >= MAX_TASKS && !self.tasks.contains_key(&task) {
                    return (
                        fail(format!("holding {MAX_TASKS} tasks already")),
                        Vec::new(),
                    );
                }
                tracing::debug!(task, "holding log FIFOs");
                self.tasks.insert(task, pair);
                (ok(self.tasks.len()), Vec::new())
            }
            Request::Get { task } if valid_task_id(&task) => match self.tasks.get(&task) {
                Some(pair) => {
                    let dups: io::Result<Vec<OwnedFd>> = pair
                        .iter()
                        .map(|f| f.as_fd().try_clone_to_owned())
                        .collect();
                    match dups {
                        Ok(dups) => (
                            Reply {
                                found: true,
                                ..ok(self.tasks.len())
                            },
                            dups,
                        ),
                        Err(err) => (fail(format!("cannot duplicate: {err}")), Vec::new()),
                    }
                }
                None => (ok(self.tasks.len()), Vec::new()),
            },
            Request::Release { task } if valid_task_id(&task) => {
                if self.tasks.remove(&task).is_some() {
                    tracing::debug!(task, "released log FIFOs");
                }
                (ok(self.tasks.len()), Vec::new())
            }
            Request::Put { .. } | Request::Get { .. } | Request::Release { .. } => {
                (fail("invalid task id".to_owned()), Vec::new())
            }
        }
    }

    /// Drops tasks whose FIFOs were removed from the file system (Nomad
    /// garbage-collected the allocation): nobody will read them again.
    fn sweep(&mut self) {
        self.tasks.retain(|task, pair| {
            let linked = pair
                .iter()
                .any(|f| f.metadata().map(|m| m.nlink() > 0).unwrap_or(false));
            if !linked {
                tracing::info!(
                    task,
                    "dropping log FIFOs: they were removed from the allocation"
                );
            }
            linked
        });
    }
}

fn is_fifo(file: &File) -> bool {
    file.metadata().is_ok_and(|m| m.file_type().is_fifo())
}

/// Answers one connection's requests until it closes.
fn serve(conn: OwnedFd, held: &mut Held) {
    if let Err(err) = wire::set_timeouts(&conn, CONNECTION_TIMEOUT) {
        tracing::debug!(error = %err, "cannot set socket timeouts");
        return;
    }
    match wire::peer_uid(&conn) {
        Ok(uid) if uid == wire::own_uid() => {}
        Ok(uid) => {
            tracing::warn!(uid, "refused a connection from another user");
            return;
        }
        Err(err) => {
            tracing::debug!(error = %err, "cannot identify the peer");
            return;
        }
    }
    for _ in 0..MAX_REQUESTS {
        let (bytes, fds) = match wire::recv(&conn) {
            Ok((bytes, _)) if bytes.is_empty() => return,
            Ok(received) => received,
            Err(err) => {
                tracing::debug!(error = %err, "connection failed");
                return;
            }
        };
        let (reply, out) = match serde_json::from_slice::<Envelope>(&bytes) {
            Ok(envelope) if envelope.v == PROTOCOL_VERSION => held.handle(envelope.request, fds),
            Ok(envelope) => (
                Reply {
                    error: Some(format!(
                        "protocol version {} is not supported (this holder speaks {PROTOCOL_VERSION})",
                        envelope.v
                    )),
                    ..Reply::default()
                },
                Vec::new(),
            ),
            Err(err) => (
                Reply {
                    error: Some(format!("malformed request: {err}")),
                    ..Reply::default()
                },
                Vec::new(),
            ),
        };
        let bytes = serde_json::to_vec(&reply).unwrap_or_default();
        let borrowed: Vec<_> = out.iter().map(|fd| fd.as_fd()).collect();
        if let Err(err) = wire::send(&conn, &bytes, &borrowed) {
            tracing::debug!(error = %err, "cannot reply");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::holder::{Holder, client::HolderError};

    fn fifo(dir: &Path, name: &str) -> (PathBuf, File) {
        let path = dir.join(name);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let file = File::options().read(true).write(true).open(&path).unwrap();
        (path, file)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn holds_hands_back_releases_and_leaves_when_idle() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("holder");
        let server_dir = dir.clone();
        let server = std::thread::spawn(move || run(&server_dir, Duration::from_millis(500)));
        let holder = Holder::new(dir.clone());
        let deadline = Instant::now() + Duration::from_secs(5);
        while holder.status().await.is_err() {
            assert!(Instant::now() < deadline, "the holder comes up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (_, out) = fifo(base.path(), "out.fifo");
        let (_, err) = fifo(base.path(), "err.fifo");
        holder.put("a/web/1", &out, &err).await.unwrap();
        assert_eq!(holder.status().await.unwrap().tasks, 1);
        let (back_out, _) = holder.get("a/web/1").await.unwrap().expect("held");
        assert_eq!(
            back_out.metadata().unwrap().ino(),
            out.metadata().unwrap().ino(),
            "the same FIFO comes back"
        );
        assert!(holder.get("a/web/2").await.unwrap().is_none());

        // Only FIFOs are accepted.
        let plain = tempfile::tempfile().unwrap();
        let refused = holder.put("a/web/3", &plain, &plain).await.unwrap_err();
        assert!(
            matches!(&refused, HolderError::Refused { message, .. } if message.contains("FIFOs only")),
            "{refused}"
        );

        holder.release("a/web/1").await.unwrap();
        assert_eq!(holder.status().await.unwrap().tasks, 0);
        let exited = tokio::task::spawn_blocking(move || server.join())
            .await
            .unwrap();
        assert!(matches!(exited, Ok(Ok(()))), "{exited:?}");
        assert!(!dir.join(SOCKET).exists(), "the socket is gone with it");
        assert!(holder.release("a/web/1").await.is_ok(), "no holder is fine");
    }

    #[test]
    fn fifos_removed_from_their_allocation_are_dropped() {
        let base = tempfile::tempdir().unwrap();
        let (path, out) = fifo(base.path(), "out.fifo");
        let (_, err) = fifo(base.path(), "err.fifo");
        let mut held = Held::default();
        let (reply, _) = held.handle(
            Request::Put {
                task: "t".to_owned(),
            },
            vec![out.into(), err.into()],
        );
        assert!(reply.ok, "{reply:?}");
        held.sweep();
        assert_eq!(held.tasks.len(), 1, "still linked");
        std::fs::remove_file(path).unwrap();
        std::fs::remove_file(base.path().join("err.fifo")).unwrap();
        held.sweep();
        assert!(held.tasks.is_empty(), "both FIFOs were removed");
    }
}
