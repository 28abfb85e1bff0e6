//! Log forwarding: container stdout/stderr → the FIFOs Nomad's logmon reads.
//!
//! Forwarding runs inside the plugin as one tokio task per running task —
//! no helper process per task (Nomad runs two). The FIFOs are opened
//! safely ([`fifo`]) when the task starts and kept open for its life; the
//! forwarder follows the engine's logs API and ends after the container's
//! last bytes, on DestroyTask, or on a terminal error (e.g. log driver
//! `none`).

pub mod fifo;
pub mod forward;

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

/// Opens both FIFOs of a task for writing.
pub fn open_writers(alloc_dir: &Path, stdout: &Path, stderr: &Path) -> Result<Writers, FifoError> {
    let sender = |path: &Path| {
        let file = fifo::open_writer(alloc_dir, path)?;
        Sender::from_file(file).map_err(|source| FifoError::Open {
            path: path.display().to_string(),
            source,
        })
    };
    Ok(Writers {
        stdout: sender(stdout)?,
        stderr: sender(stderr)?,
    })
}
