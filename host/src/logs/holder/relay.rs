//! The last hop of a task's logs: from the plugin's pipes into Nomad's
//! FIFOs, inside the holder.
//!
//! The plugin writes each stream into a pipe whose read end the holder
//! owns; the holder moves the bytes into the FIFO with `splice` (the kernel
//! hands pipe buffers over; nothing is copied through user space) and
//! counts them. Because the holder outlives the plugin, a plugin killed at
//! any instant leaves an exact count behind: every byte it wrote is either
//! moved already or still waiting in its pipe, and the holder reports the
//! sum ([`Stream::accepted`]). The relaunched plugin compares that with
//! its checkpoint and skips exactly the bytes it wrote after recording it
//! — forwarding is exactly-once across a plugin crash.
//!
//! A stream has a queue of pipes: the one of each plugin that forwarded
//! it, oldest first. A newer pipe is read only once the older one is
//! drained and closed, so the order of bytes holds across a relaunch.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;

use rustix::event::{PollFd, PollFlags};
use rustix::pipe::SpliceFlags;

/// Most bytes moved for one stream before the others get their turn.
const TURN_BYTES: usize = 1024 * 1024;
/// Most bytes one `splice` call moves.
const SPLICE_BYTES: usize = 256 * 1024;

/// What the holder does next with a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Nothing to move: no pipe queued, or the FIFO broke.
    Idle,
    /// Wait for the oldest pipe to have bytes (or to close).
    Source,
    /// Wait for room in the FIFO.
    Fifo,
}

/// One stream (stdout or stderr) of a held task.
#[derive(Debug)]
pub struct Stream {
    fifo: File,
    sources: VecDeque<OwnedFd>,
    /// Bytes moved into the FIFO so far, over all pipes.
    moved: u64,
    /// The FIFO was full at the last attempt.
    fifo_full: bool,
    /// The FIFO's reader went away: nothing more can be delivered.
    broken: bool,
}

impl Stream {
    /// A stream writing into `fifo`, with nothing queued yet.
    pub fn new(fifo: File) -> Self {
        Self {
            fifo,
            sources: VecDeque::new(),
            moved: 0,
            fifo_full: false,
            broken: false,
        }
    }

    /// The FIFO's descriptor.
    pub fn fifo(&self) -> &File {
        &self.fifo
    }

    /// Queues a pipe read end behind the ones already queued.
    pub fn push(&mut self, source: OwnedFd) -> io::Result<()> {
        rustix::io::ioctl_fionbio(&source, true)?;
        if self.broken {
            // Dropping it tells the writer at once (EPIPE).
            return Ok(());
        }
        self.sources.push_back(source);
        Ok(())
    }

    /// Every byte a plugin ever wrote into this stream's pipes: moved into
    /// the FIFO or still waiting in a queued pipe.
    pub fn accepted(&self) -> u64 {
        let waiting: u64 = self
            .sources
            .iter()
            .map(|s| rustix::io::ioctl_fionread(s).unwrap_or(0))
            .sum();
        self.moved.saturating_add(waiting)
    }

    /// Whether everything queued was delivered and every pipe closed.
    pub fn drained(&self) -> bool {
        self.sources.is_empty()
    }

    /// Whether the FIFO's reader went away.
    pub fn broken(&self) -> bool {
        self.broken
    }

    /// What to poll for.
    pub fn wait(&self) -> Wait {
        match (self.sources.front(), self.fifo_full) {
            (None, _) => Wait::Idle,
            (Some(_), false) => Wait::Source,
            (Some(_), true) => Wait::Fifo,
        }
    }

    /// The descriptor and events to poll for, if any.
    pub fn poll_fd(&self) -> Option<PollFd<'_>> {
        match self.wait() {
            Wait::Idle => None,
            Wait::Source => self.sources.front().map(|s| PollFd::new(s, PollFlags::IN)),
            Wait::Fifo => Some(PollFd::new(&self.fifo, PollFlags::OUT)),
        }
    }

    /// Moves what is ready, up to one turn's worth. Returns the bytes moved.
    pub fn pump(&mut self) -> u64 {
        let mut moved_now = 0u64;
        while let Some(source) = self.sources.front() {
            if moved_now >= TURN_BYTES as u64 {
                break;
            }
            let spliced = rustix::pipe::splice(
                source,
                None,
                &self.fifo,
                None,
                SPLICE_BYTES,
                SpliceFlags::NONBLOCK | SpliceFlags::MOVE,
            );
            match spliced {
                Ok(0) => {
                    // This plugin's pipe is drained and closed: on to the
                    // next one.
                    self.sources.pop_front();
                    self.fifo_full = false;
                }
                Ok(n) => {
                    self.moved = self.moved.saturating_add(n as u64);
                    moved_now = moved_now.saturating_add(n as u64);
                    self.fifo_full = false;
                }
                Err(rustix::io::Errno::AGAIN) => {
                    // Either the pipe is empty or the FIFO full: the pipe
                    // tells which.
                    let waiting = rustix::io::ioctl_fionread(source).unwrap_or(0);
                    self.fifo_full = waiting > 0;
                    break;
                }
                Err(rustix::io::Errno::INTR) => {}
                Err(err) => {
                    // EPIPE: the reader is gone for good. Closing our pipe
                    // ends tells the plugin (its next write fails).
                    tracing::debug!(error = %err, "cannot write into a log FIFO; dropping its pipes");
                    self.broken = true;
                    self.sources.clear();
                    break;
                }
            }
        }
        moved_now
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};

    /// A FIFO stand-in (a pipe is what a FIFO is): (our reader, the
    /// stream's writer).
    fn fifo() -> (File, File) {
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        rustix::io::ioctl_fionbio(&w, true).unwrap();
        (File::from(r), File::from(w))
    }

    fn pipe() -> (OwnedFd, File) {
        let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
        (r, File::from(w))
    }

    #[test]
    fn bytes_move_in_order_and_are_counted_across_pipes() {
        let (mut out, fifo) = fifo();
        let mut stream = Stream::new(fifo);
        let (first, mut first_writer) = pipe();
        stream.push(first).unwrap();
        first_writer.write_all(b"one\n").unwrap();
        assert_eq!(stream.accepted(), 4, "waiting bytes count");
        // A second plugin's pipe queues behind the first.
        let (second, mut second_writer) = pipe();
        stream.push(second).unwrap();
        second_writer.write_all(b"three\n").unwrap();
        assert_eq!(stream.accepted(), 10);
        assert_eq!(stream.pump(), 4, "only the first pipe, still open");
        assert_eq!(stream.wait(), Wait::Source);
        first_writer.write_all(b"two\n").unwrap();
        drop(first_writer);
        assert_eq!(stream.pump(), 10, "the rest of the first, then the second");
        assert_eq!(stream.accepted(), 14);
        drop(second_writer);
        stream.pump();
        assert!(stream.drained());
        let mut got = vec![0u8; 64];
        let n = out.read(&mut got).unwrap();
        assert_eq!(&got[..n], b"one\ntwo\nthree\n");
    }

    #[test]
    fn a_full_fifo_is_waited_for_and_a_gone_reader_breaks_the_stream() {
        let (out, fifo) = fifo();
        let mut stream = Stream::new(fifo);
        let (source, writer) = pipe();
        rustix::io::ioctl_fionbio(&writer, true).unwrap();
        stream.push(source).unwrap();
        // Fill the FIFO, then some more into the pipe.
        let chunk = vec![b'x'; 4096];
        let mut writer = writer;
        let mut total = 0u64;
        while let Ok(n) = writer.write(&chunk) {
            total += n as u64;
            stream.pump();
            if stream.wait() == Wait::Fifo {
                break;
            }
        }
        // Fill the plugin's pipe too.
        while let Ok(n) = writer.write(&chunk) {
            total += n as u64;
        }
        assert_eq!(stream.wait(), Wait::Fifo, "waits for room");
        assert_eq!(stream.accepted(), total, "moved plus waiting");
        drop(out);
        stream.pump();
        assert!(stream.broken(), "the reader left");
        assert!(stream.drained(), "the pipes are dropped");
        assert!(
            writer.write(b"more").is_err(),
            "the plugin learns it at its next write"
        );
    }
}
