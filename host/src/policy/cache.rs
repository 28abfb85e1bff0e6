//! The cache of compiled components.
//!
//! A compiled artifact is native code: loading one means running whatever
//! it contains, so the cache is guarded like code.
//!
//! - The directory belongs to the plugin's user and nobody else can write
//!   to it (mode 0700); a directory or file that fails this check is not
//!   used.
//! - Each artifact is sealed with an HMAC-SHA256 over the module's digest
//!   and the artifact, keyed by a random key kept in the directory (mode
//!   0600). An artifact whose seal does not verify (changed, truncated,
//!   copied from elsewhere) is deleted and the module recompiled.
//! - Artifacts are named by the module's SHA-256 and the engine's
//!   compatibility hash, so a new wasmtime or new engine settings never
//!   pick up an old artifact.
//! - Files are written to a temporary name and renamed into place.

use std::fs::{self, File, OpenOptions};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use wasmtime::Engine;
use wasmtime::component::Component;

use super::{PolicyError, Result};

const MAGIC: &[u8; 8] = b"WDPOLC1\n";
const KEY_FILE: &str = "key";
const KEY_LEN: usize = 32;
const TAG_LEN: usize = 32;

/// Where compiled components are kept between plugin runs.
#[derive(Debug)]
pub(crate) struct Cache {
    dir: PathBuf,
    key: [u8; KEY_LEN],
    engine_tag: u64,
}

/// What looking up a module in the cache found.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// A sealed artifact, loaded.
    Hit(Component),
    /// Nothing cached.
    Miss,
    /// An artifact that failed its checks; it was removed.
    Rejected(String),
}

fn check_private(path: &Path, meta: &fs::Metadata, what: &str) -> Result<()> {
    let uid = rustix::process::geteuid().as_raw();
    if meta.uid() != uid {
        return Err(PolicyError::Cache(format!(
            "{what} {} belongs to uid {}, not to the plugin's uid {uid}",
            path.display(),
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(PolicyError::Cache(format!(
            "{what} {} has mode {:o}; other users must have no access",
            path.display(),
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

fn seal(key: &[u8], module_sha: &[u8; 32], artifact: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(module_sha);
    mac.update(artifact);
    mac
}

impl Cache {
    /// Opens (creating if needed) the cache in `dir`.
    pub(crate) fn open(dir: &Path, engine: &Engine) -> Result<Self> {
        match fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(dir)
        {
            Ok(()) => {}
            Err(error) => {
                return Err(PolicyError::Cache(format!(
                    "cannot create the cache directory {}: {error}",
                    dir.display()
                )));
            }
        }
        let meta = fs::symlink_metadata(dir)
            .map_err(|error| PolicyError::Cache(format!("{}: {error}", dir.display())))?;
        if !meta.is_dir() {
            return Err(PolicyError::Cache(format!(
                "the cache path {} is not a directory",
                dir.display()
            )));
        }
        check_private(dir, &meta, "the cache directory")?;
        let key = Self::key(dir)?;
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(Self {
            dir: dir.to_owned(),
            key,
            engine_tag: hasher.finish(),
        })
    }

    fn key(dir: &Path) -> Result<[u8; KEY_LEN]> {
        let path = dir.join(KEY_FILE);
        let mut key = [0u8; KEY_LEN];
        match OpenOptions::new()
            .read(true)
            .custom_flags(libc_o_nofollow())
            .open(&path)
        {
            Ok(mut file) => {
                let meta = file
                    .metadata()
                    .map_err(|e| PolicyError::Cache(format!("{}: {e}", path.display())))?;
                check_private(&path, &meta, "the cache key")?;
                file.read_exact(&mut key).map_err(|error| {
                    PolicyError::Cache(format!(
                        "cannot read the cache key {}: {error}",
                        path.display()
                    ))
                })?;
                Ok(key)
            }
            Err(error) if error.kind() == ErrorKind::NotFound => {
                File::open("/dev/urandom")
                    .and_then(|mut random| random.read_exact(&mut key))
                    .map_err(|error| {
                        PolicyError::Cache(format!("cannot read /dev/urandom: {error}"))
                    })?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&path)
                    .map_err(|error| {
                        PolicyError::Cache(format!(
                            "cannot create the cache key {}: {error}",
                            path.display()
                        ))
                    })?;
                file.write_all(&key)
                    .and_then(|()| file.sync_all())
                    .map_err(|error| PolicyError::Cache(format!("{}: {error}", path.display())))?;
                Ok(key)
            }
            Err(error) => Err(PolicyError::Cache(format!(
                "cannot open the cache key {}: {error}",
                path.display()
            ))),
        }
    }

    /// The artifact file of a module.
    pub(crate) fn path_for(&self, module_sha: &[u8; 32]) -> PathBuf {
        self.dir.join(format!(
            "{}-{:016x}.cwasm",
            hex(module_sha),
            self.engine_tag
        ))
    }

    /// Loads the sealed artifact of a module, if there is a good one.
    pub(crate) fn load(&self, engine: &Engine, module_sha: &[u8; 32]) -> Lookup {
        let path = self.path_for(module_sha);
        let mut file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc_o_nofollow())
            .open(&path)
        {
            Ok(file) => file,
            Err(error) if error.kind() == ErrorKind::NotFound => return Lookup::Miss,
            Err(error) => return self.reject(&path, format!("cannot open it: {error}")),
        };
        let checked = file
            .metadata()
            .map_err(|error| PolicyError::Cache(error.to_string()))
            .and_then(|meta| {
                if !meta.is_file() {
                    return Err(PolicyError::Cache("it is not a regular file".into()));
                }
                check_private(&path, &meta, "the artifact")
            });
        if let Err(error) = checked {
            return self.reject(&path, error.to_string());
        }
        let mut bytes = Vec::new();
        if let Err(error) = file.read_to_end(&mut bytes) {
            return self.reject(&path, format!("cannot read it: {error}"));
        }
        let Some(rest) = bytes.strip_prefix(MAGIC.as_slice()) else {
            return self.reject(&path, "it does not start with the cache's header".into());
        };
        if rest.len() < TAG_LEN {
            return self.reject(&path, "it is truncated".into());
        }
        let (tag, artifact) = rest.split_at(TAG_LEN);
        if seal(&self.key, module_sha, artifact)
            .verify_slice(tag)
            .is_err()
        {
            return self.reject(
                &path,
                "its seal does not verify (changed since it was written)".into(),
            );
        }
        match deserialize(engine, artifact) {
            Ok(component) => Lookup::Hit(component),
            Err(error) => self.reject(&path, format!("wasmtime refused it: {error:#}")),
        }
    }

    fn reject(&self, path: &Path, why: String) -> Lookup {
        let _ = fs::remove_file(path);
        Lookup::Rejected(format!(
            "cached artifact {} was rejected: {why}",
            path.display()
        ))
    }

    /// Seals and stores a freshly compiled artifact.
    pub(crate) fn store(&self, module_sha: &[u8; 32], artifact: &[u8]) -> Result<()> {
        let path = self.path_for(module_sha);
        let temp = self
            .dir
            .join(format!(".{}.{}.tmp", hex(module_sha), std::process::id()));
        let tag = seal(&self.key, module_sha, artifact)
            .finalize()
            .into_bytes();
        let written = (|| -> std::io::Result<()> {
            let _ = fs::remove_file(&temp);
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc_o_nofollow())
                .open(&temp)?;
            file.set_permissions(fs::Permissions::from_mode(0o600))?;
            file.write_all(MAGIC)?;
            file.write_all(&tag)?;
            file.write_all(artifact)?;
            file.sync_all()?;
            fs::rename(&temp, &path)
        })();
        written.map_err(|error| {
            let _ = fs::remove_file(&temp);
            PolicyError::Cache(format!("cannot write {}: {error}", path.display()))
        })
    }
}

fn libc_o_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// Turns a sealed artifact back into a component.
#[allow(
    unsafe_code,
    reason = "wasmtime's deserialize is unsafe because artifacts are native code"
)]
fn deserialize(engine: &Engine, artifact: &[u8]) -> wasmtime::Result<Component> {
    // SAFETY: the bytes were written by this plugin into a directory only
    // its user can write, and their HMAC seal under the cache's private key
    // verified just before this call; wasmtime itself rejects artifacts of
    // another version or configuration.
    unsafe { Component::deserialize(engine, artifact) }
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}
