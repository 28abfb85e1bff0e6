//! Local test images, made in well under a second without any registry:
//! a root filesystem of Debian's static busybox (`/bin/busybox`) plus applet
//! symlinks, turned into an image with `docker import`.
//!
//! Building is idempotent and safe across concurrent test processes: each
//! build holds an exclusive `flock` on a lock file in the temp dir, checks
//! whether the image already exists with the same recipe (recorded in the
//! image's import comment, which containers never see) and imports only if
//! not. Tests refer to images by reference; the IDs are stable while the
//! images exist.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{PermissionsExt as _, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context as _, bail};
use nix::fcntl::{Flock, FlockArg};

use crate::docker::{docker, docker_with, image_id, image_inspect};

/// The busybox binary the images are made of (Debian's `busybox-static`).
pub const BUSYBOX_BINARY: &str = "/bin/busybox";

/// The main test image: `/variant` holds `1`.
pub const BUSYBOX_1: &str = "wasmdock-test/busybox:1";
/// A second image with a different ID: `/variant` holds `2`.
pub const BUSYBOX_2: &str = "wasmdock-test/busybox:2";
/// Repository of every image the harness makes.
pub const TEST_REPOSITORY: &str = "wasmdock-test/busybox";

/// The applets linked into `/bin`.
pub const APPLETS: &[&str] = &[
    "sh", "echo", "sleep", "cat", "yes", "head", "ls", "env", "id", "kill", "true", "false",
    "printf", "wc", "stty", "dd", "touch", "mkdir", "rm", "grep", "seq", "date", "tail", "ps",
    "hostname", "test", "[", "pwd", "stat", "chmod", "ln", "mv", "cp", "tee", "sed", "nc", "wget",
    "ip", "mount", "df", "free", "uname", "whoami", "timeout", "pidof",
];

/// The image's `PATH`.
pub const PATH_ENV: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A local image the harness made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestImage {
    /// `repository:tag`.
    pub reference: String,
    /// `sha256:…`.
    pub id: String,
}

/// What goes into a busybox image beyond the binary and its applets.
#[derive(Debug, Clone, Default)]
pub struct Recipe {
    /// `docker import --change` instructions besides the default `CMD
    /// ["/bin/sh"]` and `ENV PATH=…` (which come first, so these override).
    pub changes: Vec<String>,
    /// Extra files: path inside the image (relative, no leading `/`) and content.
    pub files: Vec<(String, Vec<u8>)>,
}

static IMAGES: OnceLock<Result<(TestImage, TestImage), String>> = OnceLock::new();

fn both() -> &'static (TestImage, TestImage) {
    let built = IMAGES.get_or_init(|| {
        let one = build_busybox_image(BUSYBOX_1, &variant_recipe("1"));
        let two = build_busybox_image(BUSYBOX_2, &variant_recipe("2"));
        match (one, two) {
            (Ok(one), Ok(two)) => Ok((one, two)),
            (Err(err), _) | (_, Err(err)) => Err(format!("{err:#}")),
        }
    });
    match built {
        Ok(images) => images,
        Err(message) => panic!("cannot build the test images: {message}"),
    }
}

/// The recipe of [`BUSYBOX_1`] (`"1"`) and [`BUSYBOX_2`] (`"2"`).
pub fn variant_recipe(variant: &str) -> Recipe {
    Recipe {
        changes: Vec::new(),
        files: vec![("variant".to_owned(), format!("{variant}\n").into_bytes())],
    }
}

/// [`BUSYBOX_1`], built on first use in this process; panics if it cannot
/// be built (after [`crate::require_docker`]'s loud message if there is no
/// engine).
pub fn busybox() -> &'static TestImage {
    crate::require_docker();
    &both().0
}

/// [`BUSYBOX_2`], whose image ID differs from [`busybox`]'s.
pub fn busybox_variant() -> &'static TestImage {
    crate::require_docker();
    &both().1
}

/// A busybox image whose config has `STOPSIGNAL <signal>` (e.g. `SIGUSR1`),
/// tagged `wasmdock-test/busybox:stopsignal-<signal in lower case>`, built
/// on [`BUSYBOX_1`] (`docker import` cannot set a stop signal).
pub fn stop_signal_image(signal: &str) -> anyhow::Result<TestImage> {
    let tag = format!(
        "{TEST_REPOSITORY}:stopsignal-{}",
        signal.to_ascii_lowercase()
    );
    build_derived_image(&tag, busybox(), &[format!("STOPSIGNAL {signal}")])
}

/// Builds `reference` from `base` with Dockerfile `instructions` (the
/// legacy builder, no context, no network) unless an image made from the
/// same base and instructions already has that reference. The recipe is
/// recorded in the label `org.wasmdock.test.recipe`.
pub fn build_derived_image(
    reference: &str,
    base: &TestImage,
    instructions: &[String],
) -> anyhow::Result<TestImage> {
    let mut recipe = base.id.clone();
    for instruction in instructions {
        recipe.push('\n');
        recipe.push_str(instruction);
    }
    let fingerprint = fnv1a([recipe.as_bytes()]);
    let _lock = lock()?;
    if let Some(image) = image_inspect(reference)?
        && image["Config"]["Labels"][RECIPE_LABEL].as_str() == Some(fingerprint.as_str())
    {
        let id = image["Id"].as_str().context("image without Id")?;
        return Ok(TestImage {
            reference: reference.to_owned(),
            id: id.to_owned(),
        });
    }
    let mut dockerfile = format!("FROM {}\n", base.reference);
    for instruction in instructions {
        dockerfile.push_str(instruction);
        dockerfile.push('\n');
    }
    dockerfile.push_str(&format!("LABEL {RECIPE_LABEL}={fingerprint}\n"));
    docker_with(
        &["build", "--quiet", "--tag", reference, "-"],
        &[("DOCKER_BUILDKIT", "0".as_ref())],
        Some(dockerfile.as_bytes()),
    )?;
    let id = image_id(reference)?.context("the built image is not there")?;
    Ok(TestImage {
        reference: reference.to_owned(),
        id,
    })
}

/// The label recording the recipe of a derived image.
pub const RECIPE_LABEL: &str = "org.wasmdock.test.recipe";

/// Builds `reference` from busybox and `recipe` unless an image made from
/// the same recipe already has that reference. Safe to call concurrently
/// from several threads and processes.
pub fn build_busybox_image(reference: &str, recipe: &Recipe) -> anyhow::Result<TestImage> {
    let fingerprint = fingerprint(recipe)?;
    let comment = format!("wasmdock-test recipe {fingerprint}");
    let _lock = lock()?;
    if let Some(image) = image_inspect(reference)?
        && image["Comment"].as_str() == Some(comment.as_str())
    {
        let id = image["Id"].as_str().context("image without Id")?;
        return Ok(TestImage {
            reference: reference.to_owned(),
            id: id.to_owned(),
        });
    }

    let dir = tempfile::Builder::new()
        .prefix("wasmdock-e2e-rootfs-")
        .tempdir()?;
    let rootfs = dir.path().join("rootfs");
    write_rootfs(&rootfs, recipe)?;
    let tarball = dir.path().join("rootfs.tar");
    let status = Command::new("tar")
        .args(["--numeric-owner", "--owner=0", "--group=0", "-cf"])
        .arg(&tarball)
        .arg("-C")
        .arg(&rootfs)
        .arg(".")
        .status()
        .context("run tar")?;
    if !status.success() {
        bail!("tar of the test rootfs failed: {status}");
    }

    let mut args: Vec<String> = vec!["import".into(), "--message".into(), comment];
    for change in [r#"CMD ["/bin/sh"]"#.to_owned(), format!("ENV {PATH_ENV}")]
        .into_iter()
        .chain(recipe.changes.iter().cloned())
    {
        args.push("--change".into());
        args.push(change);
    }
    args.push(tarball.to_string_lossy().into_owned());
    args.push(reference.to_owned());
    let id = docker(&args)?;
    Ok(TestImage {
        reference: reference.to_owned(),
        id,
    })
}

/// Writes `reference` as a `docker save` tarball at `path` (what the task
/// option `load` takes).
pub fn save_image(reference: &str, path: &Path) -> anyhow::Result<()> {
    docker(&[
        "save".as_ref(),
        "-o".as_ref(),
        path.as_os_str(),
        reference.as_ref(),
    ])?;
    Ok(())
}

/// Adds tag `target` to local image `source`.
pub fn tag_image(source: &str, target: &str) -> anyhow::Result<()> {
    docker(&["tag", source, target])?;
    Ok(())
}

fn lock() -> anyhow::Result<Flock<File>> {
    let path: PathBuf = std::env::temp_dir().join("wasmdock-e2e-images.lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, errno)| anyhow::anyhow!("flock {}: {errno}", path.display()))
}

fn write_rootfs(root: &Path, recipe: &Recipe) -> anyhow::Result<()> {
    let bin = root.join("bin");
    fs::create_dir_all(&bin)?;
    fs::copy(BUSYBOX_BINARY, bin.join("busybox")).with_context(|| {
        format!("copy {BUSYBOX_BINARY} (install Debian's busybox-static package)")
    })?;
    for applet in APPLETS {
        symlink("busybox", bin.join(applet))?;
    }
    let etc = root.join("etc");
    fs::create_dir_all(&etc)?;
    fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
    )?;
    fs::write(etc.join("group"), "root:x:0:\nnogroup:x:65534:\n")?;
    for dir in ["root", "tmp", "usr/bin"] {
        fs::create_dir_all(root.join(dir))?;
    }
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777))?;
    for (path, content) in &recipe.files {
        let path = root.join(path.trim_start_matches('/'));
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(path, content)?;
    }
    Ok(())
}

/// FNV-1a over everything that makes an image: busybox, applets, recipe.
fn fingerprint(recipe: &Recipe) -> anyhow::Result<String> {
    let busybox = fs::read(BUSYBOX_BINARY).with_context(|| {
        format!("read {BUSYBOX_BINARY} (install Debian's busybox-static package)")
    })?;
    let mut parts: Vec<&[u8]> = vec![&busybox, PATH_ENV.as_bytes()];
    parts.extend(APPLETS.iter().map(|a| a.as_bytes()));
    parts.extend(recipe.changes.iter().map(String::as_bytes));
    for (path, content) in &recipe.files {
        parts.push(path.as_bytes());
        parts.push(content);
    }
    Ok(fnv1a(parts))
}

/// FNV-1a (64 bits) over `parts`, each followed by a 0xff separator.
fn fnv1a<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.iter().chain(&[0xff]) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

/// An image whose default command keeps running (a pause container's job),
/// built from busybox once per engine.
pub fn sleeper_image() -> String {
    let reference = "wasmdock-test/busybox:sleeper";
    build_derived_image(
        reference,
        busybox(),
        &[r#"CMD ["sleep", "1000000"]"#.to_owned()],
    )
    .expect("sleeper image");
    reference.to_owned()
}
