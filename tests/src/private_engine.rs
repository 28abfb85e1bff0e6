//! A Docker engine of the test's own: a `dockerd` started by the test with
//! its own data root, exec root, pid file and unix socket, no bridge and no
//! iptables, and `--live-restore` on or off. It starts its own managed
//! containerd under its exec root. Tests may stop and start it at will —
//! the node's shared engine is never touched.
//!
//! The data root lives under [`ENGINES_DIR`] (a disk filesystem, where
//! overlay2 works); if overlay2 cannot start there the engine falls back to
//! the `vfs` storage driver and says so on stderr.
//!
//! Dropping a [`PrivateEngine`] (also while a test panics) removes
//! everything it made: it starts the daemon again if it is down (with
//! live-restore off, so containers that outlived it are killed), removes
//! every container, stops the daemon and its containerd, kills any shim of
//! its containerd that is left, unmounts whatever is still mounted under
//! its directories and deletes them.
//!
//! Running one needs root; without it [`PrivateEngine::start`] fails with a
//! message saying so, never skips.

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::ids::{random_hex, run_id};

/// Where private engines keep their data roots (one directory per engine).
pub const ENGINES_DIR: &str = "/var/lib/wasmdock-test-engines";
/// How long the daemon may take to answer after it was started.
pub const READY_TIMEOUT: Duration = Duration::from_secs(40);
/// How long a SIGTERMed daemon may take to exit: it gives containers their
/// stop timeout (10 s) when live-restore is off.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(40);

/// A private `dockerd`; see the module docs.
#[derive(Debug)]
pub struct PrivateEngine {
    label: String,
    dir: PathBuf,
    exec_root: PathBuf,
    live_restore: bool,
    storage_driver: Option<&'static str>,
    child: Option<Child>,
}

impl PrivateEngine {
    /// Starts a private engine named `label` (for paths and messages) with
    /// live-restore on or off, and waits until it answers. Fails loudly
    /// when not root, when `dockerd` is missing, or when it does not come
    /// up (with the daemon's log tail).
    pub async fn start(label: &str, live_restore: bool) -> anyhow::Result<Self> {
        if !nix::unistd::geteuid().is_root() {
            bail!(
                "a private dockerd needs root (it mounts, makes cgroups and namespaces): \
                 run this test binary as root"
            );
        }
        let suffix = format!("{}-{}", run_id(), random_hex(4));
        let dir = Path::new(ENGINES_DIR).join(format!("{label}-{suffix}"));
        // Short: containerd's sockets live under it and unix socket paths
        // are limited to 107 bytes.
        let exec_root = PathBuf::from(format!("/run/wdt-{suffix}"));
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        fs::create_dir_all(&exec_root)
            .with_context(|| format!("create {}", exec_root.display()))?;
        // Never the node's /etc/docker/daemon.json.
        fs::write(dir.join("daemon.json"), "{}\n")?;
        let mut engine = Self {
            label: label.to_owned(),
            dir,
            exec_root,
            live_restore,
            storage_driver: None,
            child: None,
        };
        if let Err(first) = engine.boot().await {
            let tail = engine.log_tail(40);
            if !tail.to_ascii_lowercase().contains("overlay") {
                return Err(first);
            }
            eprintln!(
                "private engine {label}: overlay2 does not work under {ENGINES_DIR}; \
                 falling back to the vfs storage driver ({first:#})"
            );
            engine.kill_daemon().await;
            engine.storage_driver = Some("vfs");
            engine.boot().await?;
        }
        let driver = engine.docker(&["info", "--format", "{{.Driver}}"])?;
        eprintln!(
            "private engine {label}: dockerd pid {} up, storage driver {driver}, live-restore {}, \
             socket {}",
            engine.pid().unwrap_or(0),
            engine.live_restore,
            engine.socket().display()
        );
        Ok(engine)
    }

    /// The engine's unix socket.
    pub fn socket(&self) -> PathBuf {
        self.exec_root.join("docker.sock")
    }

    /// The endpoint for the plugin's `endpoint` key and `docker -H`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// Whether live-restore is on.
    pub fn live_restore(&self) -> bool {
        self.live_restore
    }

    /// The daemon's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the daemon process is alive.
    pub fn running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The daemon's log file (both starts).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("dockerd.log")
    }

    /// The last `lines` lines of the daemon's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let Ok(mut file) = File::open(self.log_path()) else {
            return "(no dockerd log)".to_owned();
        };
        // The tail is in the last 64 KiB.
        let len = file.metadata().map_or(0, |m| m.len());
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `docker -H <endpoint> args…`: trimmed stdout, or an error with stderr.
    pub fn docker<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> anyhow::Result<String> {
        let mut full = vec![std::ffi::OsString::from("-H"), self.endpoint().into()];
        full.extend(args.iter().map(|a| a.as_ref().to_owned()));
        let output = crate::docker::docker_raw(&full, &[], None)?;
        if !output.status.success() {
            bail!(
                "`docker -H {} {}` failed ({}): {}",
                self.endpoint(),
                args.iter()
                    .map(|a| a.as_ref().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(" "),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// What `docker logs` of `container` prints: stdout and stderr, exactly.
    pub fn logs(&self, container: &str) -> anyhow::Result<(String, String)> {
        let endpoint = self.endpoint();
        let output =
            crate::docker::docker_raw(&["-H", endpoint.as_str(), "logs", container], &[], None)?;
        if !output.status.success() {
            bail!(
                "`docker logs {container}` failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok((
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ))
    }

    /// `docker container inspect` in this engine; `None` when there is no
    /// such container.
    pub fn inspect(&self, container: &str) -> anyhow::Result<Option<serde_json::Value>> {
        match self.docker(&["container", "inspect", container]) {
            Ok(json) => {
                let mut list: Vec<serde_json::Value> =
                    serde_json::from_str(&json).context("docker inspect printed no JSON list")?;
                Ok((!list.is_empty()).then(|| list.swap_remove(0)))
            }
            Err(err) if format!("{err:#}").to_lowercase().contains("no such") => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Copies image `reference` from the node's engine into this one
    /// (`docker save` there, `docker load` here).
    pub fn load_image_from_node(&self, reference: &str) -> anyhow::Result<()> {
        let tarball = self.dir.join(format!("image-{}.tar", random_hex(6)));
        crate::docker::docker(&[
            "save".as_ref(),
            "-o".as_ref(),
            tarball.as_os_str(),
            reference.as_ref(),
        ])?;
        let loaded = self.docker(&["load".as_ref(), "-i".as_ref(), tarball.as_os_str()]);
        let _ = fs::remove_file(&tarball);
        loaded.map(drop)
    }

    /// SIGTERMs the daemon and waits for it and its containerd to exit.
    /// Returns how long that took.
    pub async fn stop(&mut self) -> anyhow::Result<Duration> {
        let started = Instant::now();
        let containerd = self.containerd_pid();
        let Some(child) = self.child.as_mut() else {
            bail!("private engine {} is not running", self.label);
        };
        let pid = Pid::from_raw(i32::try_from(child.id()).context("pid out of range")?);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = started + STOP_TIMEOUT;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.child = None;
                bail!(
                    "private engine {}: dockerd did not exit within {STOP_TIMEOUT:?} of SIGTERM \
                     (killed); log tail:\n{}",
                    self.label,
                    self.log_tail(30)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.child = None;
        if let Some(containerd) = containerd
            && !wait_gone(containerd, Duration::from_secs(15)).await
        {
            bail!(
                "private engine {}: its containerd (pid {containerd}) outlived dockerd by 15 s",
                self.label
            );
        }
        Ok(started.elapsed())
    }

    /// Starts the daemon again with the same arguments and waits until it
    /// answers. Returns how long that took.
    pub async fn start_again(&mut self) -> anyhow::Result<Duration> {
        if self.running() {
            bail!("private engine {} is already running", self.label);
        }
        let started = Instant::now();
        self.boot().await?;
        Ok(started.elapsed())
    }

    /// The managed containerd's pid, from its pid file.
    pub fn containerd_pid(&self) -> Option<i32> {
        fs::read_to_string(self.exec_root.join("containerd/containerd.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .filter(|pid| *pid > 0 && Path::new(&format!("/proc/{pid}")).exists())
    }

    fn args(&self, live_restore: bool) -> Vec<String> {
        let mut args = vec![
            format!("--data-root={}", self.dir.join("data").display()),
            format!("--exec-root={}", self.exec_root.display()),
            format!("--pidfile={}", self.exec_root.join("docker.pid").display()),
            format!("--host={}", self.endpoint()),
            format!("--config-file={}", self.dir.join("daemon.json").display()),
            "--bridge=none".to_owned(),
            "--iptables=false".to_owned(),
            "--ip6tables=false".to_owned(),
            "--ip-forward=false".to_owned(),
            "--ip-masq=false".to_owned(),
        ];
        if live_restore {
            args.push("--live-restore".to_owned());
        }
        if let Some(driver) = self.storage_driver {
            args.push(format!("--storage-driver={driver}"));
        }
        args
    }

    /// Spawns dockerd (appending to its log) and waits until it answers.
    async fn boot(&mut self) -> anyhow::Result<()> {
        self.boot_with(self.live_restore).await
    }

    async fn boot_with(&mut self, live_restore: bool) -> anyhow::Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("open the dockerd log")?;
        // Its own network namespace: a dockerd started with `--bridge=none`
        // deletes any `docker0` it can see, and the node's engine needs its
        // bridge. `unshare` execs dockerd, so the child's pid is dockerd's.
        let child = Command::new("unshare")
            .args(["--net", "--", "dockerd"])
            .args(self.args(live_restore))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot run `unshare --net dockerd` (install docker.io and util-linux)")?;
        self.child = Some(child);
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                bail!(
                    "private engine {}: dockerd exited ({status}) before answering; log tail:\n{}",
                    self.label,
                    self.log_tail(30)
                );
            }
            if self.socket().exists() && self.docker(&["version"]).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let tail = self.log_tail(30);
                self.kill_daemon().await;
                bail!(
                    "private engine {}: dockerd did not answer within {READY_TIMEOUT:?}; \
                     log tail:\n{tail}",
                    self.label
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILLs the daemon (and its containerd) if they run.
    async fn kill_daemon(&mut self) {
        let containerd = self.containerd_pid();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(pid) = containerd {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            wait_gone(pid, Duration::from_secs(5)).await;
        }
    }

    /// Everything [`Drop`] does, best effort; the first problem is returned.
    async fn teardown(&mut self) -> anyhow::Result<()> {
        let mut problems = Vec::new();
        let has_containers = fs::read_dir(self.dir.join("data/containers"))
            .map(|mut entries| entries.next().is_some())
            .unwrap_or(false);
        if !self.running() && has_containers {
            // Live-restore off: containers that outlived the daemon are
            // killed as it starts.
            if let Err(err) = self.boot_with(false).await {
                problems.push(format!("{err:#}"));
            }
        }
        if self.running() {
            match self.docker(&["ps", "-aq", "--no-trunc"]) {
                Ok(ids) if !ids.is_empty() => {
                    let mut args = vec!["rm", "-f", "-v"];
                    args.extend(ids.lines());
                    if let Err(err) = self.docker(&args) {
                        problems.push(format!("{err:#}"));
                    }
                }
                Ok(_) => {}
                Err(err) => problems.push(format!("{err:#}")),
            }
            if let Err(err) = self.stop().await {
                problems.push(format!("{err:#}"));
                self.kill_daemon().await;
            }
        } else {
            self.kill_daemon().await;
        }
        // Shims of our containerd (their command line names its socket).
        let address = self.exec_root.join("containerd/containerd.sock");
        for pid in processes_mentioning(&address.to_string_lossy()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            problems.push(format!("killed a leftover shim (pid {pid})"));
        }
        for mount in mounts_under(&[&self.dir, &self.exec_root]) {
            let status = Command::new("umount")
                .arg("-l")
                .arg(&mount)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if !status.is_ok_and(|s| s.success()) {
                problems.push(format!("cannot unmount {mount}"));
            }
        }
        for dir in [&self.exec_root, &self.dir] {
            if let Err(err) = fs::remove_dir_all(dir)
                && err.kind() != std::io::ErrorKind::NotFound
            {
                problems.push(format!("cannot remove {}: {err}", dir.display()));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            bail!("{}", problems.join("; "))
        }
    }
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        // An emptied label marks a value already torn down.
        if self.label.is_empty() {
            return;
        }
        let mut engine = Self {
            label: self.label.clone(),
            dir: self.dir.clone(),
            exec_root: self.exec_root.clone(),
            live_restore: self.live_restore,
            storage_driver: self.storage_driver,
            child: self.child.take(),
        };
        // Drop may run inside a runtime (which cannot block on another):
        // tear down on a thread of its own with its own runtime.
        let outcome = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)?;
            let outcome = runtime.block_on(engine.teardown());
            // `engine` is already torn down: nothing left for its Drop.
            engine.child = None;
            engine.label.clear();
            outcome
        })
        .join();
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(err)) => eprintln!("private engine {}: cleanup: {err:#}", self.label),
            Err(_) => eprintln!("private engine {}: cleanup panicked", self.label),
        }
        // This value's fields were moved out; keep its own Drop from
        // running the teardown twice.
        self.label.clear();
    }
}

/// Waits up to `timeout` for process `pid` to be gone; false if it stayed.
async fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Path::new(&format!("/proc/{pid}")).exists() {
        // A zombie is gone for our purpose.
        if fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
        }) {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// Pids of processes whose command line contains `needle`.
fn processes_mentioning(needle: &str) -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                String::from_utf8_lossy(&cmdline)
                    .replace('\0', " ")
                    .contains(needle)
            })
        })
        .collect()
}

/// Mount points under any of `roots`, deepest (latest) first.
fn mounts_under(roots: &[&Path]) -> Vec<String> {
    let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<String> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mount_path)
        .filter(|point| roots.iter().any(|root| Path::new(point).starts_with(root)))
        .collect();
    found.reverse();
    found.dedup();
    found
}

/// `/proc/self/mountinfo` escapes space, tab, newline and backslash as
/// octal.
fn unescape_mount_path(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let digits: String = chars.by_ref().take(3).collect();
            match u8::from_str_radix(&digits, 8) {
                Ok(byte) => out.push(char::from(byte)),
                Err(_) => {
                    out.push('\\');
                    out.push_str(&digits);
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
