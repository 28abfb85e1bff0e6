//! Log forwarding: container stdout/stderr → the FIFOs Nomad's logmon reads.
//!
//! Forwarding runs inside the plugin as one tokio task per running task —
//! no helper process per task (Nomad runs two). The FIFOs are opened
//! safely ([`fifo`]) when the task starts and kept open for its life; the
//! forwarder ([`forward`]) reads the engine's json-file log directly when
//! it can ([`jsonfile`]: local engine, `json-file` driver) and follows the
//! engine's logs API otherwise; it ends after the container's last bytes,
//! on DestroyTask, or on a terminal error (e.g. log driver `none`). Two things make a plugin crash harmless: the node's
//! [`holder`] keeps the FIFOs' write ends open while no plugin runs, and a
//! [`checkpoint`] records the exact byte forwarded so the relaunched plugin
//! resumes there.

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

/// The two FIFO writers of one task.
#[derive(Debug)]
pub struct Writers {
    /// Where stdout goes.
    pub stdout: Sender,
    /// Where stderr goes.
    pub stderr: Sender,
}

impl Writers {
    /// Async writers over already opened FIFO descriptors.
    pub fn from_files(stdout: File, stderr: File) -> io::Result<Self> {
        Ok(Self {
            stdout: Sender::from_file(stdout)?,
            stderr: Sender::from_file(stderr)?,
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
