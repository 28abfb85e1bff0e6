//! The holder process (`nomad-driver-wasmdock log-holder --dir <dir>`).
//!
//! Single-threaded: one `poll` loop waits for connections and for the
//! streams it relays ([`super::relay`]); a connection is served to its end
//! (each message bounded by a timeout) before relaying goes on. Between
//! rounds it checks whether held FIFOs were removed. Requests come only
//! from processes of our own user.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd as _, OwnedFd};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};

use super::relay::Stream;
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
/// Longest wait in one round of the loop.
const POLL: Duration = Duration::from_millis(500);
/// How long a released task's last bytes may take to be delivered.
const RELEASE_GRACE: Duration = Duration::from_secs(30);

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
        let (connection, ready) = held.wait(&listener, POLL)?;
        held.pump(&ready);
        if connection {
            match wire::accept(&listener) {
                Ok(conn) => serve(conn, &mut held),
                Err(err) => tracing::debug!(error = %err, "accept failed"),
            }
        }
        if last_sweep.elapsed() >= SWEEP {
            held.sweep();
            last_sweep = Instant::now();
        }
        held.forget_released();
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

/// One held task: its two streams, and since when the plugin let go of it.
#[derive(Debug)]
struct Task {
    streams: [Stream; 2],
    released: Option<Instant>,
}

impl Task {
    /// Whether the task can be forgotten: released, and everything
    /// delivered (or undeliverable, or out of time).
    fn done(&self) -> bool {
        self.released.is_some_and(|at| {
            at.elapsed() >= RELEASE_GRACE || self.streams.iter().all(|s| s.drained() || s.broken())
        })
    }

    fn accepted(&self) -> [u64; 2] {
        [self.streams[0].accepted(), self.streams[1].accepted()]
    }
}

/// The tasks held, by task id.
#[derive(Debug, Default)]
struct Held {
    tasks: BTreeMap<String, Task>,
}

/// Descriptors that must all be FIFOs or pipes, taken as `N` files.
fn take_pipes<const N: usize>(fds: Vec<OwnedFd>, what: &str) -> Result<[File; N], String> {
    let files: Vec<File> = fds.into_iter().map(File::from).collect();
    let files = <[File; N]>::try_from(files)
        .map_err(|files| format!("{what} needs exactly {N} descriptors, got {}", files.len()))?;
    if !files.iter().all(is_fifo) {
        return Err(format!("{what} accepts FIFOs and pipes only"));
    }
    Ok(files)
}

impl Held {
    /// Waits up to `timeout` for a connection or a stream to be ready.
    /// Returns whether a connection waits, and which streams are ready
    /// (in task order, two per task).
    fn wait(&self, listener: &OwnedFd, timeout: Duration) -> io::Result<(bool, Vec<bool>)> {
        let mut fds = vec![PollFd::new(listener, PollFlags::IN)];
        let mut slots = Vec::with_capacity(self.tasks.len() * 2);
        for task in self.tasks.values() {
            for stream in &task.streams {
                match stream.poll_fd() {
                    Some(fd) => {
                        slots.push(Some(fds.len()));
                        fds.push(fd);
                    }
                    None => slots.push(None),
                }
            }
        }
        let timeout = rustix::event::Timespec {
            tv_sec: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(err) => return Err(err.into()),
        }
        let ready = slots
            .iter()
            .map(|slot| slot.is_some_and(|i| !fds[i].revents().is_empty()))
            .collect();
        Ok((!fds[0].revents().is_empty(), ready))
    }

    /// Moves bytes for the streams that are ready.
    fn pump(&mut self, ready: &[bool]) {
        let streams = self.tasks.values_mut().flat_map(|t| t.streams.iter_mut());
        for (stream, ready) in streams.zip(ready) {
            if *ready {
                stream.pump();
            }
        }
    }

    /// Forgets released tasks that are done.
    fn forget_released(&mut self) {
        self.tasks.retain(|task, held| {
            let done = held.done();
            if done {
                tracing::debug!(task, "released log FIFOs");
            }
            !done
        });
    }

    fn handle(&mut self, request: Request, fds: Vec<OwnedFd>) -> (Reply, Vec<OwnedFd>) {
        let fail = |error: String| {
            (
                Reply {
                    ok: false,
                    error: Some(error),
                    ..Reply::default()
                },
                Vec::new(),
            )
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
                let [stdout, stderr, stdout_pipe, stderr_pipe] = match take_pipes::<4>(fds, "put") {
                    Ok(files) => files,
                    Err(error) => return fail(error),
                };
                if self.tasks.len() >= MAX_TASKS && !self.tasks.contains_key(&task) {
                    return fail(format!("holding {MAX_TASKS} tasks already"));
                }
                let mut streams = [Stream::new(stdout), Stream::new(stderr)];
                for (stream, pipe) in streams.iter_mut().zip([stdout_pipe, stderr_pipe]) {
                    if let Err(err) = stream.push(pipe.into()) {
                        return fail(format!("cannot use the pipe: {err}"));
                    }
                }
                tracing::debug!(task, "holding log FIFOs");
                self.tasks.insert(
                    task,
                    Task {
                        streams,
                        released: None,
                    },
                );
                (ok(self.tasks.len()), Vec::new())
            }
            Request::Attach { task } if valid_task_id(&task) => {
                let pipes = match take_pipes::<2>(fds, "attach") {
                    Ok(files) => files,
                    Err(error) => return fail(error),
                };
                let tasks = self.tasks.len();
                let Some(held) = self.tasks.get_mut(&task) else {
                    return (ok(tasks), Vec::new());
                };
                let dups: io::Result<Vec<OwnedFd>> = held
                    .streams
                    .iter()
                    .map(|s| s.fifo().as_fd().try_clone_to_owned())
                    .collect();
                let dups = match dups {
                    Ok(dups) => dups,
                    Err(err) => return fail(format!("cannot duplicate: {err}")),
                };
                // Counted before the new pipes join: what the earlier
                // plugins wrote.
                let accepted = held.accepted();
                for (stream, pipe) in held.streams.iter_mut().zip(pipes) {
                    if let Err(err) = stream.push(pipe.into()) {
                        return fail(format!("cannot use the pipe: {err}"));
                    }
                }
                held.released = None;
                (
                    Reply {
                        found: true,
                        accepted: Some(accepted),
                        ..ok(tasks)
                    },
                    dups,
                )
            }
            Request::Release { task } if valid_task_id(&task) => {
                if let Some(held) = self.tasks.get_mut(&task) {
                    held.released.get_or_insert_with(Instant::now);
                }
                self.forget_released();
                (ok(self.tasks.len()), Vec::new())
            }
            Request::Put { .. } | Request::Attach { .. } | Request::Release { .. } => {
                fail("invalid task id".to_owned())
            }
        }
    }

    /// Drops tasks whose FIFOs were removed from the file system (Nomad
    /// garbage-collected the allocation): nobody will read them again.
    fn sweep(&mut self) {
        self.tasks.retain(|task, held| {
            let linked = held
                .streams
                .iter()
                .any(|s| s.fifo().metadata().map(|m| m.nlink() > 0).unwrap_or(false));
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
    use std::io::{Read as _, Write as _};
    use std::os::unix::fs::OpenOptionsExt as _;

    /// A FIFO at `dir/name`: (its path, a reader, a writer).
    fn fifo(dir: &Path, name: &str) -> (PathBuf, File, File) {
        let path = dir.join(name);
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let reader = File::options()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
            .open(&path)
            .unwrap();
        let writer = File::options().write(true).open(&path).unwrap();
        (path, reader, writer)
    }

    /// Reads from a non-blocking reader until `want` bytes came.
    async fn read_until(reader: &mut File, want: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        while got.len() < want {
            let mut buf = [0u8; 4096];
            match reader.read(&mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "only {got:?} arrived");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(err) => panic!("{err}"),
            }
        }
        got
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn relays_counts_attaches_releases_and_leaves_when_idle() {
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
        let (_, mut out_reader, out) = fifo(base.path(), "out.fifo");
        let (_, mut err_reader, err) = fifo(base.path(), "err.fifo");
        let (mut out_pipe, mut err_pipe) = holder.put("a/web/1", &out, &err).await.unwrap();
        drop((out, err));
        assert_eq!(holder.status().await.unwrap().tasks, 1);
        out_pipe.write_all(b"first plugin\n").unwrap();
        err_pipe.write_all(b"e1\n").unwrap();
        assert_eq!(read_until(&mut out_reader, 13).await, b"first plugin\n");
        assert_eq!(read_until(&mut err_reader, 3).await, b"e1\n");

        // The plugin dies with bytes in its pipe; the next one attaches.
        out_pipe.write_all(b"in flight\n").unwrap();
        drop((out_pipe, err_pipe));
        let attached = holder.attach("a/web/1").await.unwrap().expect("held");
        assert_eq!(attached.accepted, [23, 3], "delivered plus queued");
        let (mut out_pipe, err_pipe) = attached.pipes;
        out_pipe.write_all(b"second plugin\n").unwrap();
        assert_eq!(
            read_until(&mut out_reader, 24).await,
            b"in flight\nsecond plugin\n",
            "the old pipe's bytes first"
        );
        assert!(holder.attach("a/web/2").await.unwrap().is_none());

        // Only FIFOs and pipes are accepted.
        let plain = tempfile::tempfile().unwrap();
        let refused = holder.put("a/web/3", &plain, &plain).await.unwrap_err();
        assert!(
            matches!(&refused, HolderError::Refused { message, .. } if message.contains("FIFOs and pipes only")),
            "{refused}"
        );

        // Released with bytes still in the pipe: they are delivered, then
        // the FIFO closes.
        out_pipe.write_all(b"last words\n").unwrap();
        holder.release("a/web/1").await.unwrap();
        drop((out_pipe, err_pipe));
        drop(attached.fifos);
        assert_eq!(read_until(&mut out_reader, 11).await, b"last words\n");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let mut buf = [0u8; 16];
            match out_reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => panic!("unexpected {:?}", &buf[..n]),
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                    assert!(Instant::now() < deadline, "the FIFO is closed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(err) => panic!("{err}"),
            }
        }
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
        let (path, _out_reader, out) = fifo(base.path(), "out.fifo");
        let (_, _err_reader, err) = fifo(base.path(), "err.fifo");
        let (out_pipe, _out_writer) = std::io::pipe().unwrap();
        let (err_pipe, _err_writer) = std::io::pipe().unwrap();
        let mut held = Held::default();
        let (reply, _) = held.handle(
            Request::Put {
                task: "t".to_owned(),
            },
            vec![out.into(), err.into(), out_pipe.into(), err_pipe.into()],
        );
        assert!(reply.ok, "{reply:?}");
        held.sweep();
        assert_eq!(held.tasks.len(), 1, "still linked");
        std::fs::remove_file(path).unwrap();
        std::fs::remove_file(base.path().join("err.fifo")).unwrap();
        held.sweep();
        assert!(held.tasks.is_empty(), "both FIFOs were removed");
    }

    #[test]
    fn a_put_needs_four_descriptors() {
        let (a, _a) = std::io::pipe().unwrap();
        let (b, _b) = std::io::pipe().unwrap();
        let mut held = Held::default();
        let (reply, _) = held.handle(
            Request::Put {
                task: "t".to_owned(),
            },
            vec![a.into(), b.into()],
        );
        assert!(!reply.ok);
        assert!(
            reply
                .error
                .as_deref()
                .is_some_and(|e| e.contains("exactly 4 descriptors, got 2")),
            "{reply:?}"
        );
        assert!(held.tasks.is_empty());
    }
}
