//! Log forwarding: container stdout/stderr → the FIFOs Nomad's logmon reads.
//!
//! Forwarding runs inside the plugin as one tokio task per running task —
//! no helper process per task (Nomad runs two). The FIFOs are opened
//! safely ([`fifo`]) when the task starts and kept open for its life; the
//! forwarder ([`forward`]) reads the engine's json-file log directly when
//! it can ([`jsonfile`]: local engine, `json-file` driver) and follows the
//! engine's logs API otherwise; it ends after the container's last bytes,
//! on DestroyTask, or on a terminal error (e.g. log driver `none`). Two
//! things make a plugin crash harmless: the node's [`holder`] owns the
//! FIFOs' write ends and makes the last hop into them, counting bytes, and
//! a [`checkpoint`] records the exact byte forwarded, so the relaunched
//! plugin resumes there with neither a gap nor a repeat.

pub mod checkpoint;
pub mod fifo;
pub mod forward;
pub mod holder;
pub mod jsonfile;

use std::fs::File;
use std::io;
use std::path::Path;

use tokio::net::unix::pipe::Sender;

pub use fifo::FifoError;

/// Where one stream of a task is written.
#[derive(Debug)]
pub struct Writer {
    /// The holder's pipe, or the FIFO itself when no holder relays.
    pub sender: Sender,
    /// The FIFO, when `sender` is the holder's pipe: written directly
    /// should the holder go away.
    pub direct: Option<Sender>,
}

/// The writers of one task's two streams.
#[derive(Debug)]
pub struct Writers {
    /// Where stdout goes.
    pub stdout: Writer,
    /// Where stderr goes.
    pub stderr: Writer,
}

impl Writers {
    /// Writing straight into the FIFOs (no holder relays).
    pub fn direct(stdout: File, stderr: File) -> io::Result<Self> {
        Ok(Self {
            stdout: Writer {
                sender: Sender::from_file(stdout)?,
                direct: None,
            },
            stderr: Writer {
                sender: Sender::from_file(stderr)?,
                direct: None,
            },
        })
    }

    /// Writing into the holder's pipes, with the FIFOs to fall back on.
    pub fn relayed(pipes: (File, File), fifos: (File, File)) -> io::Result<Self> {
        Ok(Self {
            stdout: Writer {
                sender: Sender::from_file(pipes.0)?,
                direct: Some(Sender::from_file(fifos.0)?),
            },
            stderr: Writer {
                sender: Sender::from_file(pipes.1)?,
                direct: Some(Sender::from_file(fifos.1)?),
            },
        })
    }
}

/// Opens both FIFOs of a task for writing (see [`fifo::open_writer`]).
pub fn open_fifos(
    alloc_dir: &Path,
    stdout: &Path,
    stderr: &Path,
) -> Result<(File, File), FifoError> {
    Ok((
        fifo::open_writer(alloc_dir, stdout)?,
        fifo::open_writer(alloc_dir, stderr)?,
    ))
}
