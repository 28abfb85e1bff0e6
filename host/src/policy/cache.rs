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
pub(crate) struct Cache {
    dir: PathBuf,
    key: [u8; KEY_LEN],
    engine_tag: u64,
}

/// Without the key: whoever holds it can seal native code the plugin will
/// run, so it must not reach a log line or a panic message.
impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("dir", &self.dir)
            .field("engine_tag", &format_args!("{:016x}", self.engine_tag))
            .finish_non_exhaustive()
    }
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// The smallest component there is: its header alone.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";
    /// Another user's uid (`nobody`).
    const OTHER_UID: u32 = 65534;

    fn module_sha(n: u8) -> [u8; 32] {
        [n; 32]
    }

    /// A fresh cache in a private temporary directory, with the empty
    /// component stored in it under `module_sha(1)`.
    struct Fixture {
        _root: tempfile::TempDir,
        dir: PathBuf,
        engine: Engine,
        cache: Cache,
        artifact: PathBuf,
    }

    fn fixture() -> Fixture {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("cache");
        let engine = Engine::default();
        let cache = Cache::open(&dir, &engine).unwrap();
        let compiled = Component::new(&engine, EMPTY_COMPONENT)
            .unwrap()
            .serialize()
            .unwrap();
        cache.store(&module_sha(1), &compiled).unwrap();
        let artifact = cache.path_for(&module_sha(1));
        Fixture {
            _root: root,
            dir,
            engine,
            cache,
            artifact,
        }
    }

    impl Fixture {
        fn load(&self) -> Lookup {
            self.cache.load(&self.engine, &module_sha(1))
        }

        /// Loads the artifact, which must be refused; returns the reason
        /// after checking that it names the artifact.
        fn refused(&self) -> String {
            match self.load() {
                Lookup::Rejected(why) => {
                    assert!(
                        why.contains(&self.artifact.display().to_string()),
                        "the rejection names the artifact {}: {why}",
                        self.artifact.display()
                    );
                    why
                }
                other => panic!(
                    "{} must be refused, but the lookup found {other:?}",
                    self.artifact.display()
                ),
            }
        }

        fn change_byte(&self, at: impl Fn(usize) -> usize) {
            let mut bytes = fs::read(&self.artifact).unwrap();
            let at = at(bytes.len());
            bytes[at] ^= 0x40;
            fs::write(&self.artifact, &bytes).unwrap();
        }
    }

    /// Giving a file to another user needs root; the suite runs as root
    /// (scripts/test.sh), and a run without it must say so, not pass.
    fn require_root() {
        assert!(
            rustix::process::geteuid().is_root(),
            "this test gives a file to another user, which needs root: run the tests as root (bash scripts/test.sh)"
        );
    }

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn open_error(dir: &Path) -> String {
        match Cache::open(dir, &Engine::default()) {
            Err(PolicyError::Cache(why)) => why,
            other => panic!("the cache in {} must be refused: {other:?}", dir.display()),
        }
    }

    #[test]
    fn a_stored_artifact_is_private_and_loads_back_under_its_module_only() {
        let f = fixture();
        assert!(matches!(f.load(), Lookup::Hit(_)), "{:?}", f.load());
        assert_eq!(mode(&f.dir), 0o700, "the cache directory");
        assert_eq!(mode(&f.dir.join(KEY_FILE)), 0o600, "the key");
        assert_eq!(mode(&f.artifact), 0o600, "the artifact");
        assert!(
            matches!(f.cache.load(&f.engine, &module_sha(2)), Lookup::Miss),
            "another module has no artifact"
        );
        // The key is kept: a later plugin run opens the same cache and
        // trusts what the earlier one wrote.
        let reopened = Cache::open(&f.dir, &f.engine).unwrap();
        assert!(matches!(
            reopened.load(&f.engine, &module_sha(1)),
            Lookup::Hit(_)
        ));
    }

    #[test]
    fn artifacts_are_named_by_module_digest_and_engine_settings() {
        let f = fixture();
        let name = f.artifact.file_name().unwrap().to_string_lossy();
        assert!(name.starts_with(&hex(&module_sha(1))), "{name}");
        assert_ne!(f.cache.path_for(&module_sha(2)), f.artifact);
        // Other engine settings: another name, so the artifact of the first
        // engine is never offered to the second.
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let other_engine = Engine::new(&config).unwrap();
        let other = Cache::open(&f.dir, &other_engine).unwrap();
        assert_ne!(other.path_for(&module_sha(1)), f.artifact);
        assert!(matches!(
            other.load(&other_engine, &module_sha(1)),
            Lookup::Miss
        ));
        assert!(f.artifact.exists(), "the first engine's artifact stays");
    }

    #[test]
    fn the_key_is_kept_out_of_debug_output() {
        let f = fixture();
        let shown = format!("{:?} {:#?}", f.cache, f.cache);
        assert!(shown.contains(&f.dir.display().to_string()), "{shown}");
        for key in [format!("{:?}", f.cache.key), hex(&f.cache.key)] {
            assert!(!shown.contains(&key), "the key is shown: {shown}");
        }
    }

    /// Where to change a byte, given the file's length.
    type Place = fn(usize) -> usize;

    #[test]
    fn a_changed_byte_breaks_the_seal_and_the_artifact_is_deleted() {
        // In the compiled code, in the seal itself, and in the last byte.
        let places: [(&str, Place); 3] = [
            ("artifact", |len| {
                MAGIC.len() + TAG_LEN + (len - MAGIC.len() - TAG_LEN) / 2
            }),
            ("seal", |_| MAGIC.len() + TAG_LEN / 2),
            ("last byte", |len| len - 1),
        ];
        for (place, at) in places {
            let f = fixture();
            f.change_byte(at);
            let why = f.refused();
            assert!(
                why.contains("its seal does not verify"),
                "a changed {place}: {why}"
            );
            assert!(
                !f.artifact.exists(),
                "a changed {place}: the artifact is deleted"
            );
            assert!(
                matches!(f.load(), Lookup::Miss),
                "a changed {place}: the module is compiled again"
            );
        }
    }

    #[test]
    fn a_truncated_or_foreign_artifact_is_refused() {
        let f = fixture();
        let bytes = fs::read(&f.artifact).unwrap();
        fs::write(&f.artifact, &bytes[..MAGIC.len() + TAG_LEN - 1]).unwrap();
        assert!(f.refused().contains("it is truncated"));

        let f = fixture();
        fs::write(&f.artifact, b"\x7fELF not ours").unwrap();
        assert!(
            f.refused()
                .contains("it does not start with the cache's header")
        );

        // Sealed, but for another module: copied under this module's name.
        let f = fixture();
        f.cache.store(&module_sha(2), b"another module").unwrap();
        fs::copy(f.cache.path_for(&module_sha(2)), &f.artifact).unwrap();
        assert!(f.refused().contains("its seal does not verify"));

        // Sealed, but by another cache's key: copied from another node.
        let f = fixture();
        let elsewhere = fixture();
        fs::copy(&elsewhere.artifact, &f.artifact).unwrap();
        assert!(f.refused().contains("its seal does not verify"));

        // Sealed with the right key over bytes wasmtime will not load.
        let f = fixture();
        f.cache.store(&module_sha(1), b"not native code").unwrap();
        assert!(f.refused().contains("wasmtime refused it"));
    }

    #[test]
    fn an_artifact_others_may_touch_is_refused() {
        for mode in [0o644, 0o604, 0o660, 0o620, 0o606] {
            let f = fixture();
            chmod(&f.artifact, mode);
            let why = f.refused();
            assert!(
                why.contains(&format!(
                    "has mode {mode:o}; other users must have no access"
                )),
                "mode {mode:o}: {why}"
            );
            assert!(!f.artifact.exists(), "mode {mode:o}: deleted");
        }
    }

    #[test]
    fn an_artifact_owned_by_another_user_is_refused() {
        require_root();
        let f = fixture();
        std::os::unix::fs::chown(&f.artifact, Some(OTHER_UID), None).unwrap();
        let why = f.refused();
        assert!(
            why.contains(&format!("belongs to uid {OTHER_UID}")),
            "{why}"
        );
    }

    #[test]
    fn an_artifact_replaced_by_a_symlink_is_refused_and_its_target_left_alone() {
        let f = fixture();
        // A good, sealed artifact moved out of the cache and linked back:
        // the seal would verify, but the cache only reads its own files.
        let outside = f.dir.parent().unwrap().join("planted.cwasm");
        fs::rename(&f.artifact, &outside).unwrap();
        symlink(&outside, &f.artifact).unwrap();
        let why = f.refused();
        assert!(why.contains("cannot open it"), "{why}");
        assert!(
            fs::symlink_metadata(&f.artifact).is_err(),
            "the link is removed"
        );
        assert!(outside.exists(), "what it pointed at is not touched");

        // A directory in the artifact's place is refused too.
        let f = fixture();
        fs::remove_file(&f.artifact).unwrap();
        fs::create_dir(&f.artifact).unwrap();
        assert!(f.refused().contains("not a regular file"));
    }

    #[test]
    fn a_cache_directory_others_may_touch_is_not_used() {
        let f = fixture();
        for mode in [0o755, 0o750, 0o770, 0o707, 0o701] {
            chmod(&f.dir, mode);
            let why = open_error(&f.dir);
            assert!(
                why.contains(&f.dir.display().to_string())
                    && why.contains(&format!(
                        "has mode {mode:o}; other users must have no access"
                    )),
                "mode {mode:o}: {why}"
            );
        }
        chmod(&f.dir, 0o700);
        Cache::open(&f.dir, &f.engine).unwrap();

        // A symlink to a private directory is not the directory.
        let link = f.dir.with_file_name("link");
        symlink(&f.dir, &link).unwrap();
        let why = open_error(&link);
        assert!(why.contains("is not a directory"), "{why}");

        // Nor is a file.
        let file = f.dir.with_file_name("file");
        fs::write(&file, b"").unwrap();
        assert!(open_error(&file).contains("cannot create the cache directory"));
    }

    #[test]
    fn a_cache_directory_owned_by_another_user_is_not_used() {
        require_root();
        let f = fixture();
        std::os::unix::fs::chown(&f.dir, Some(OTHER_UID), None).unwrap();
        let why = open_error(&f.dir);
        assert!(
            why.contains(&f.dir.display().to_string())
                && why.contains(&format!("belongs to uid {OTHER_UID}")),
            "{why}"
        );
    }

    #[test]
    fn a_key_others_may_read_or_a_linked_key_is_not_used() {
        let f = fixture();
        let key = f.dir.join(KEY_FILE);
        chmod(&key, 0o644);
        let why = open_error(&f.dir);
        assert!(
            why.contains("the cache key") && why.contains("has mode 644"),
            "{why}"
        );

        let f = fixture();
        let key = f.dir.join(KEY_FILE);
        let outside = f.dir.with_file_name("key");
        fs::rename(&key, &outside).unwrap();
        symlink(&outside, &key).unwrap();
        let why = open_error(&f.dir);
        assert!(why.contains("cannot open the cache key"), "{why}");

        require_root();
        {
            let f = fixture();
            let key = f.dir.join(KEY_FILE);
            std::os::unix::fs::chown(&key, Some(OTHER_UID), None).unwrap();
            let why = open_error(&f.dir);
            assert!(
                why.contains(&format!("belongs to uid {OTHER_UID}")),
                "{why}"
            );
        }
    }
}
