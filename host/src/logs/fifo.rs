//! Opening Nomad's log FIFOs for writing, safely.
//!
//! The FIFOs live in the allocation directory, which the task's container
//! can write to. A FIFO swapped for a symlink once let tasks make the agent
//! write anywhere (two CVEs in 2026), so the path is resolved inside the
//! allocation directory with cap-std: no `..` escape, no symlink followed
//! for the FIFO itself, and the target must be a FIFO. The FIFO is opened
//! read-write so the open never blocks and never fails for want of a
//! reader (logmon may open its end late); we never read from it.

use std::io;
use std::path::{Component, Path};

use cap_fs_ext::{FileTypeExt as _, FollowSymlinks, OpenOptionsFollowExt as _};
use cap_std::ambient_authority;
use cap_std::fs::{Dir, OpenOptions};

/// Why a FIFO path was refused.
#[derive(Debug, thiserror::Error)]
pub enum FifoError {
    /// The path is not inside the allocation directory.
    #[error("log path {path} is outside the allocation directory {alloc_dir}")]
    Outside {
        /// The FIFO path Nomad gave.
        path: String,
        /// The allocation directory.
        alloc_dir: String,
    },
    /// The path names something other than a FIFO (a file, a symlink, …).
    #[error("log path {path} is not a FIFO ({kind}); refusing to write to it")]
    NotAFifo {
        /// The FIFO path Nomad gave.
        path: String,
        /// What it is instead.
        kind: &'static str,
    },
    /// Opening failed.
    #[error("cannot open log FIFO {path}: {source}")]
    Open {
        /// The FIFO path Nomad gave.
        path: String,
        /// Why.
        source: io::Error,
    },
}

/// Opens `fifo` (an absolute path inside `alloc_dir`) for writing.
pub fn open_writer(alloc_dir: &Path, fifo: &Path) -> Result<std::fs::File, FifoError> {
    let display = || fifo.display().to_string();
    let outside = || FifoError::Outside {
        path: display(),
        alloc_dir: alloc_dir.display().to_string(),
    };
    let relative = fifo.strip_prefix(alloc_dir).map_err(|_| outside())?;
    if relative.as_os_str().is_empty()
        || relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(outside());
    }
    let open_error = |source| FifoError::Open {
        path: display(),
        source,
    };
    let dir = Dir::open_ambient_dir(alloc_dir, ambient_authority()).map_err(open_error)?;
    // Look before opening: opening a regular file read-write would already
    // touch it, and a symlink is refused without being followed.
    let metadata = dir.symlink_metadata(relative).map_err(open_error)?;
    let kind = metadata.file_type();
    if !kind.is_fifo() {
        let kind = if kind.is_symlink() {
            "a symlink"
        } else if kind.is_file() {
            "a regular file"
        } else if kind.is_dir() {
            "a directory"
        } else {
            "not a FIFO"
        };
        return Err(FifoError::NotAFifo {
            path: display(),
            kind,
        });
    }
    let mut options = OpenOptions::new();
    options.read(true).write(true).follow(FollowSymlinks::No);
    let file = dir.open_with(relative, &options).map_err(open_error)?;
    // The name may have been swapped between the look and the open.
    let opened = file.metadata().map_err(open_error)?;
    if !opened.file_type().is_fifo() {
        return Err(FifoError::NotAFifo {
            path: display(),
            kind: "swapped while opening",
        });
    }
    Ok(file.into_std())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("alloc/logs")).unwrap();
        dir
    }

    #[test]
    fn opens_a_fifo_in_the_alloc_dir_without_a_reader() {
        let dir = alloc();
        let fifo = dir.path().join("alloc/logs/.web.stdout.fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let file = open_writer(dir.path(), &fifo).expect("opens at once, no reader needed");
        assert!(file.metadata().unwrap().file_type().is_fifo());
    }

    #[test]
    fn refuses_symlinks_files_and_escapes() {
        let dir = alloc();
        let outside = tempfile::NamedTempFile::new().unwrap();
        let link = dir.path().join("alloc/logs/.web.stdout.fifo");
        std::os::unix::fs::symlink(outside.path(), &link).unwrap();
        let err = open_writer(dir.path(), &link).unwrap_err();
        assert!(
            matches!(
                err,
                FifoError::NotAFifo {
                    kind: "a symlink",
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(
            std::fs::read(outside.path()).unwrap(),
            b"",
            "nothing written outside"
        );

        let file = dir.path().join("alloc/logs/plain");
        std::fs::write(&file, "keep").unwrap();
        let err = open_writer(dir.path(), &file).unwrap_err();
        assert!(
            matches!(
                err,
                FifoError::NotAFifo {
                    kind: "a regular file",
                    ..
                }
            ),
            "{err}"
        );

        for path in [
            dir.path().join("alloc/../../etc/passwd"),
            std::path::PathBuf::from("/etc/passwd"),
            dir.path().to_path_buf(),
        ] {
            let err = open_writer(dir.path(), &path).unwrap_err();
            assert!(matches!(err, FifoError::Outside { .. }), "{path:?}: {err}");
        }
    }

    #[test]
    fn a_symlinked_directory_cannot_lead_out() {
        let dir = alloc();
        let elsewhere = tempfile::tempdir().unwrap();
        let fifo = elsewhere.path().join("x.fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), dir.path().join("alloc/evil")).unwrap();
        let err = open_writer(dir.path(), &dir.path().join("alloc/evil/x.fifo")).unwrap_err();
        assert!(matches!(err, FifoError::Open { .. }), "{err}");
    }
}
