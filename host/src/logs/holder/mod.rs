//! The node's log holder: one small process that owns the write ends of
//! every task's log FIFOs and makes the last hop into them.
//!
//! Nomad's logmon reads a task's FIFO until the last writer closes it and
//! is not restarted when a plugin is relaunched, so a plugin crash that
//! closed the writers would silence the task's logs until the task or the
//! agent restarts. The plugin therefore hands each FIFO descriptor to the
//! holder (`SCM_RIGHTS` over a Unix socket) when it starts forwarding,
//! together with the read end of a pipe per stream: the plugin writes into
//! the pipe and the holder moves the bytes on, counting them ([`relay`]).
//! After a relaunch the plugin attaches new pipes (RecoverTask finds the
//! holder's directory in `driver_state`) and learns how many bytes the
//! holder accepted, which, with its checkpoint, says exactly where to go
//! on. When the task ends the plugin releases it; the holder delivers
//! what is still in the pipes and closes the FIFOs.
//!
//! There is one holder per driver name and node, started by re-executing
//! our own binary (`/proc/self/exe log-holder --dir <dir>`) in its own
//! process group so that signals to the plugin's group do not reach it. It
//! exits when it has held nothing for [`LINGER`], and drops a task's
//! descriptors by itself once Nomad removed the FIFOs (the allocation was
//! garbage collected) — so no descriptor outlives its allocation even if
//! no plugin ever comes back.

pub mod client;
pub mod relay;
pub mod server;
pub mod wire;

use std::io;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use client::{Attached, Holder};

/// Version of the request/reply format. Holders of different versions
/// use different sockets, so an upgraded plugin never talks to an older
/// holder; that one goes on holding the tasks it has.
pub const PROTOCOL_VERSION: u32 = 2;
/// How long the holder stays up with nothing to hold.
pub const LINGER: Duration = Duration::from_secs(5);
/// The socket's file name in the holder directory.
pub const SOCKET: &str = "holder.v2.sock";
/// The lock that makes the holder unique per directory.
pub const LOCK: &str = "holder.v2.lock";
/// The holder's own log (hclog JSON lines).
pub const LOG: &str = "holder.log";
/// Where checkpoints live, inside the holder directory.
pub const CHECKPOINTS: &str = "checkpoints";
/// Longest task id accepted.
pub const MAX_TASK_ID: usize = 1024;

/// A request to the holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// Hold `task`: four descriptors come along, the stdout and stderr
    /// FIFOs and the read ends of the pipes to relay into them.
    Put {
        /// Nomad task id.
        task: String,
    },
    /// A relaunched plugin goes on with `task`: two pipe read ends come
    /// along, relayed after what earlier pipes still hold. The reply
    /// carries the bytes accepted so far and duplicates of the FIFOs.
    Attach {
        /// Nomad task id.
        task: String,
    },
    /// The task is over: deliver what its pipes still hold, then close
    /// its FIFOs.
    Release {
        /// Nomad task id.
        task: String,
    },
    /// Report the holder's pid and load.
    Status,
}

/// A request with its protocol version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// [`PROTOCOL_VERSION`].
    pub v: u32,
    /// The request.
    #[serde(flatten)]
    pub request: Request,
}

/// The holder's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// Whether the request was carried out.
    pub ok: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For `attach`: whether the task was held (its FIFOs come along).
    #[serde(default)]
    pub found: bool,
    /// For `attach`: every byte of stdout and stderr the task's earlier
    /// pipes carried, delivered or still queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<[u64; 2]>,
    /// The holder's pid.
    #[serde(default)]
    pub pid: u32,
    /// How many tasks it holds.
    #[serde(default)]
    pub tasks: usize,
}

/// The directory of the holder serving driver `name`: `<run_dir>/<name>`,
/// with `run_dir` defaulting to `/run/wasmdock` for root, else
/// `$XDG_RUNTIME_DIR/wasmdock`, else `<tmp>/wasmdock-<uid>`.
pub fn directory(run_dir: &str, name: &str) -> PathBuf {
    let base = if !run_dir.is_empty() {
        PathBuf::from(run_dir)
    } else if wire::own_uid() == 0 {
        PathBuf::from("/run/wasmdock")
    } else if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        PathBuf::from(runtime).join("wasmdock")
    } else {
        std::env::temp_dir().join(format!("wasmdock-{}", wire::own_uid()))
    };
    base.join(name)
}

/// Creates the holder directory (and its checkpoint directory) private to
/// us, and refuses one that another user owns or others may write: the
/// socket and the checkpoints in it must not be reachable by anyone else.
pub fn prepare(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true).mode(0o700);
    builder.create(dir.join(CHECKPOINTS))?;
    for path in [dir.to_path_buf(), dir.join(CHECKPOINTS)] {
        let meta = std::fs::symlink_metadata(&path)?;
        if !meta.is_dir() || meta.uid() != wire::own_uid() {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} must be a directory owned by uid {}",
                    path.display(),
                    wire::own_uid()
                ),
            ));
        }
        if meta.mode() & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    Ok(())
}

/// Whether a task id is one the holder accepts.
pub fn valid_task_id(task: &str) -> bool {
    !task.is_empty() && task.len() <= MAX_TASK_ID
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_a_stable_wire_form() {
        let put = Envelope {
            v: PROTOCOL_VERSION,
            request: Request::Put {
                task: "a/web/1".to_owned(),
            },
        };
        let json = serde_json::to_string(&put).unwrap();
        assert_eq!(json, r#"{"v":2,"op":"put","task":"a/web/1"}"#);
        assert_eq!(serde_json::from_str::<Envelope>(&json).unwrap(), put);
        let status: Envelope = serde_json::from_str(r#"{"v":2,"op":"status"}"#).unwrap();
        assert_eq!(status.request, Request::Status);
        assert!(serde_json::from_str::<Envelope>(r#"{"v":2,"op":"format_disk"}"#).is_err());
    }

    #[test]
    fn the_directory_is_made_private() {
        let base = tempfile::tempdir().unwrap();
        let dir = directory(&base.path().display().to_string(), "wasmdock");
        assert_eq!(dir, base.path().join("wasmdock"));
        prepare(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        prepare(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(dir.join(CHECKPOINTS).is_dir());
    }
}
