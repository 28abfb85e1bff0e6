//! The `TaskConfig` a Nomad client would send in StartTask, with a real
//! alloc dir on disk laid out like Nomad's:
//!
//! ```text
//! <alloc_dir>/alloc/{data,logs,tmp}
//! <alloc_dir>/<task>/{local,secrets,tmp}
//! ```
//!
//! An [`Alloc`] is one allocation (id, alloc dir, job and group names);
//! tasks built in it share them. A [`TaskBuilder`] makes a [`Task`]: its
//! name embeds the [`run_id`], its id is `<alloc_id>/<task>/<8 hex>`, and
//! the driver will name its container `<task>-<alloc_id>`. Stdout and
//! stderr go to `/dev/null` unless [`TaskBuilder::log_fifos`] asks for the
//! FIFOs Nomad's logmon would create (read them with [`Task::log_readers`]).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Read as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::stat::Mode;
use tempfile::TempDir;
use wasmdock_host::config::cty::encode_json;
use wasmdock_host::dev::alloc::{TaskIdentity, nomad_env};
use wasmdock_host::rpc::proto::drivers::{
    AllocatedCpuResources, AllocatedMemoryResources, AllocatedTaskResources, DestroyTaskRequest,
    InspectTaskRequest, LinuxResources, Mount, PortMapping, RecoverTaskRequest, Resources,
    SignalTaskRequest, StartTaskRequest, StopTaskRequest, TaskConfig, TaskHandle, WaitTaskRequest,
};

use crate::cleanup::remove_alloc_containers;
use crate::ids::{random_hex, run_id, uuid_v4};
use crate::plugin::NODE_COMPUTE_MHZ;

/// Default allocated CPU shares (MHz).
pub const DEFAULT_CPU_SHARES: i64 = 100;
/// Default allocated memory (MiB).
pub const DEFAULT_MEMORY_MB: i64 = 64;
/// The namespace tasks run in.
pub const NAMESPACE: &str = "default";
/// The node name every task claims to run on.
pub const NODE_NAME: &str = "wasmdock-e2e-node";

/// The node id every task of this process claims to run on.
pub fn node_id() -> &'static str {
    static NODE_ID: OnceLock<String> = OnceLock::new();
    NODE_ID.get_or_init(uuid_v4)
}

/// One allocation: id, job and group names, and an alloc dir under a temp
/// dir. Cheap to clone; when the last clone is dropped, every container
/// labelled with its id is force-removed and the alloc dir deleted.
#[derive(Debug, Clone)]
pub struct Alloc {
    inner: Arc<AllocInner>,
}

#[derive(Debug)]
struct AllocInner {
    id: String,
    dir: PathBuf,
    job_name: String,
    job_id: String,
    group: String,
    root: Option<TempDir>,
}

impl Drop for AllocInner {
    fn drop(&mut self) {
        if let Err(err) = remove_alloc_containers(&self.id) {
            eprintln!(
                "wasmdock-e2e: cannot remove the containers of alloc {}: {err:#}",
                self.id
            );
        }
        if let Some(root) = self.root.take() {
            // Containers may have left root-owned files; removal is best effort.
            let _ = root.close();
        }
    }
}

impl Alloc {
    /// A new alloc of job `e2e-<run id>`, group `group`.
    pub fn new() -> anyhow::Result<Self> {
        Self::for_job(&format!("e2e-{}", run_id()), "group")
    }

    /// A new alloc of the given job and group.
    pub fn for_job(job: &str, group: &str) -> anyhow::Result<Self> {
        let id = uuid_v4();
        let root = tempfile::Builder::new()
            .prefix("wasmdock-e2e-alloc-")
            .tempdir()?;
        let dir = root.path().join(&id);
        for sub in ["alloc/data", "alloc/logs", "alloc/tmp"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        for path in [
            root.path().to_owned(),
            dir.clone(),
            dir.join("alloc"),
            dir.join("alloc/data"),
            dir.join("alloc/logs"),
            dir.join("alloc/tmp"),
        ] {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o777))?;
        }
        Ok(Self {
            inner: Arc::new(AllocInner {
                id,
                dir,
                job_name: job.to_owned(),
                job_id: job.to_owned(),
                group: group.to_owned(),
                root: Some(root),
            }),
        })
    }

    /// The alloc id (UUID v4).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The alloc dir on the host (`TaskConfig.alloc_dir`).
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The shared `alloc` dir (`/alloc` in the task).
    pub fn shared_dir(&self) -> PathBuf {
        self.inner.dir.join("alloc")
    }

    /// The job name (also its id).
    pub fn job_name(&self) -> &str {
        &self.inner.job_name
    }

    /// The task group name.
    pub fn group(&self) -> &str {
        &self.inner.group
    }

    /// A builder for a task of this alloc.
    pub fn task(&self, name: &str, driver_config: serde_json::Value) -> TaskBuilder {
        TaskBuilder::new(name, driver_config).alloc(self)
    }
}

/// Builds a [`Task`]; see the module docs.
#[derive(Debug)]
pub struct TaskBuilder {
    name: String,
    exact_name: bool,
    alloc: Option<Alloc>,
    driver_config: serde_json::Value,
    env: BTreeMap<String, String>,
    device_env: BTreeMap<String, String>,
    cpu_shares: i64,
    memory_mb: i64,
    memory_max_mb: i64,
    cpuset_cpus: String,
    log_fifos: bool,
    user: String,
    ports: Vec<PortMapping>,
    mounts: Vec<Mount>,
    edits: Vec<Edit>,
}

struct Edit(Box<dyn FnOnce(&mut TaskConfig)>);

impl std::fmt::Debug for Edit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<edit>")
    }
}

impl TaskBuilder {
    /// Task `<name>-<run id>` with `driver_config` (the task's `config {}`
    /// block as JSON) in a new alloc of its own.
    pub fn new(name: &str, driver_config: serde_json::Value) -> Self {
        Self {
            name: name.to_owned(),
            exact_name: false,
            alloc: None,
            driver_config,
            env: BTreeMap::new(),
            device_env: BTreeMap::new(),
            cpu_shares: DEFAULT_CPU_SHARES,
            memory_mb: DEFAULT_MEMORY_MB,
            memory_max_mb: 0,
            cpuset_cpus: String::new(),
            log_fifos: false,
            user: String::new(),
            ports: Vec::new(),
            mounts: Vec::new(),
            edits: Vec::new(),
        }
    }

    /// Runs the task in `alloc` (shared alloc dir, id, job and group).
    pub fn alloc(mut self, alloc: &Alloc) -> Self {
        self.alloc = Some(alloc.clone());
        self
    }

    /// Uses the name as given, without the run id.
    pub fn exact_name(mut self) -> Self {
        self.exact_name = true;
        self
    }

    /// Adds (or overrides) a task environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.to_owned(), value.to_owned());
        self
    }

    /// A variable a device plugin set (e.g. `NVIDIA_VISIBLE_DEVICES`): in
    /// the task environment and its device environment, as Nomad sends it.
    pub fn device_env(mut self, key: &str, value: &str) -> Self {
        self.env.insert(key.to_owned(), value.to_owned());
        self.device_env.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Allocated CPU shares (MHz); also the cgroup cpu_shares.
    pub fn cpu_shares(mut self, shares: i64) -> Self {
        self.cpu_shares = shares;
        self
    }

    /// Allocated memory and hard limit (`memory_max`, 0 = none set, -1 =
    /// unlimited) in MiB.
    pub fn memory(mut self, memory_mb: i64, memory_max_mb: i64) -> Self {
        self.memory_mb = memory_mb;
        self.memory_max_mb = memory_max_mb;
        self
    }

    /// Reserved cores (`resources { cores = n }`), e.g. `"0"`.
    pub fn cpuset_cpus(mut self, cpus: &str) -> Self {
        self.cpuset_cpus = cpus.to_owned();
        self
    }

    /// Creates stdout/stderr FIFOs where logmon would, instead of `/dev/null`.
    pub fn log_fifos(mut self) -> Self {
        self.log_fifos = true;
        self
    }

    /// The task's `user`.
    pub fn user(mut self, user: &str) -> Self {
        self.user = user.to_owned();
        self
    }

    /// A group port: `label`, host port `value`, container port `to`
    /// (0 = same), on 127.0.0.1.
    pub fn port(mut self, label: &str, value: i32, to: i32) -> Self {
        self.ports.push(PortMapping {
            label: label.to_owned(),
            value,
            to,
            host_ip: "127.0.0.1".to_owned(),
        });
        self
    }

    /// A `volume_mount`.
    pub fn mount(mut self, mount: Mount) -> Self {
        self.mounts.push(mount);
        self
    }

    /// Changes the built config (applied last, in order).
    pub fn edit(mut self, edit: impl FnOnce(&mut TaskConfig) + 'static) -> Self {
        self.edits.push(Edit(Box::new(edit)));
        self
    }

    /// Creates the task dir (and FIFOs) and the `TaskConfig`.
    pub fn build(self) -> anyhow::Result<Task> {
        let alloc = match self.alloc {
            Some(alloc) => alloc,
            None => Alloc::new()?,
        };
        let name = if self.exact_name {
            self.name
        } else {
            format!("{}-{}", self.name, run_id())
        };
        let task_dir = alloc.dir().join(&name);
        if task_dir.exists() {
            bail!("alloc {} already has a task {name}", alloc.id());
        }
        for sub in ["local", "secrets", "tmp"] {
            let path = task_dir.join(sub);
            fs::create_dir_all(&path)?;
            fs::set_permissions(&path, fs::Permissions::from_mode(0o777))?;
        }
        fs::set_permissions(&task_dir, fs::Permissions::from_mode(0o777))?;

        let logs = alloc.dir().join("alloc/logs");
        let (stdout_path, stderr_path) = if self.log_fifos {
            let stdout = logs.join(format!(".{name}.stdout.fifo"));
            let stderr = logs.join(format!(".{name}.stderr.fifo"));
            for fifo in [&stdout, &stderr] {
                nix::unistd::mkfifo(fifo, Mode::from_bits_truncate(0o600))
                    .with_context(|| format!("mkfifo {}", fifo.display()))?;
            }
            (stdout, stderr)
        } else {
            (PathBuf::from("/dev/null"), PathBuf::from("/dev/null"))
        };

        let memory_limit_mb = self.memory_mb.max(self.memory_max_mb);
        let mut env = nomad_env(&TaskIdentity {
            alloc_id: alloc.id(),
            job: alloc.job_name(),
            group: alloc.group(),
            task: &name,
            cpu_mhz: self.cpu_shares,
            memory_mb: self.memory_mb,
            memory_max_mb: self.memory_max_mb,
        });
        env.extend(self.env);

        let mut config = TaskConfig {
            id: format!("{}/{name}/{}", alloc.id(), random_hex(8)),
            name: name.clone(),
            msgpack_driver_config: encode_json(&self.driver_config),
            env: env.into_iter().collect(),
            device_env: self.device_env.into_iter().collect(),
            resources: Some(Resources {
                allocated_resources: Some(AllocatedTaskResources {
                    cpu: Some(AllocatedCpuResources {
                        cpu_shares: self.cpu_shares,
                    }),
                    memory: Some(AllocatedMemoryResources {
                        memory_mb: self.memory_mb,
                        memory_max_mb: self.memory_max_mb,
                    }),
                    networks: Vec::new(),
                }),
                linux_resources: Some(LinuxResources {
                    cpu_period: 0,
                    cpu_quota: 0,
                    cpu_shares: self.cpu_shares,
                    memory_limit_bytes: memory_limit_mb * 1024 * 1024,
                    oom_score_adj: 0,
                    cpuset_cpus: self.cpuset_cpus,
                    percent_ticks: self.cpu_shares as f64 / NODE_COMPUTE_MHZ as f64,
                    cpuset_cgroup: String::new(),
                }),
                ports: self.ports,
            }),
            mounts: self.mounts,
            devices: Vec::new(),
            user: self.user,
            alloc_dir: alloc.dir().to_string_lossy().into_owned(),
            stdout_path: stdout_path.to_string_lossy().into_owned(),
            stderr_path: stderr_path.to_string_lossy().into_owned(),
            task_group_name: alloc.group().to_owned(),
            job_name: alloc.job_name().to_owned(),
            alloc_id: alloc.id().to_owned(),
            network_isolation_spec: None,
            dns: None,
            job_id: alloc.inner.job_id.clone(),
            namespace: NAMESPACE.to_owned(),
            node_name: NODE_NAME.to_owned(),
            node_id: node_id().to_owned(),
            parent_job_id: String::new(),
        };
        for Edit(edit) in self.edits {
            edit(&mut config);
        }
        Ok(Task {
            config,
            alloc,
            log_fifos: self.log_fifos,
        })
    }
}

/// A task ready to be started: its `TaskConfig` and its alloc.
#[derive(Debug, Clone)]
pub struct Task {
    /// What StartTask sends.
    pub config: TaskConfig,
    alloc: Alloc,
    log_fifos: bool,
}

impl Task {
    /// The task id (`<alloc_id>/<task>/<8 hex>`).
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// The task name (embeds the run id unless built with `exact_name`).
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// The alloc id.
    pub fn alloc_id(&self) -> &str {
        self.alloc.id()
    }

    /// The alloc.
    pub fn alloc(&self) -> &Alloc {
        &self.alloc
    }

    /// The container name the driver gives it: `<task>-<alloc_id>`.
    pub fn container_name(&self) -> String {
        format!("{}-{}", self.name(), self.alloc_id())
    }

    /// `<alloc_dir>/<task>`.
    pub fn task_dir(&self) -> PathBuf {
        self.alloc.dir().join(self.name())
    }

    /// `<alloc_dir>/<task>/local` (`/local` in the task).
    pub fn local_dir(&self) -> PathBuf {
        self.task_dir().join("local")
    }

    /// `<alloc_dir>/<task>/secrets` (`/secrets` in the task).
    pub fn secrets_dir(&self) -> PathBuf {
        self.task_dir().join("secrets")
    }

    /// `<alloc_dir>/alloc/logs`.
    pub fn logs_dir(&self) -> PathBuf {
        self.alloc.dir().join("alloc/logs")
    }

    /// Where the driver is told to write stdout.
    pub fn stdout_path(&self) -> &Path {
        Path::new(&self.config.stdout_path)
    }

    /// Where the driver is told to write stderr.
    pub fn stderr_path(&self) -> &Path {
        Path::new(&self.config.stderr_path)
    }

    /// Gives the task a fresh id, as Nomad does for every start attempt.
    pub fn new_attempt(&mut self) -> &str {
        self.config.id = format!("{}/{}/{}", self.alloc_id(), self.name(), random_hex(8));
        &self.config.id
    }

    /// Replaces the driver config (JSON of the `config {}` block).
    pub fn set_driver_config(&mut self, driver_config: &serde_json::Value) {
        self.config.msgpack_driver_config = encode_json(driver_config);
    }

    /// Readers of the stdout and stderr FIFOs, standing in for logmon. Only
    /// for tasks built with [`TaskBuilder::log_fifos`].
    pub fn log_readers(&self) -> anyhow::Result<(FifoReader, FifoReader)> {
        if !self.log_fifos {
            bail!("task {} was built without log FIFOs", self.name());
        }
        Ok((
            FifoReader::start(self.stdout_path())?,
            FifoReader::start(self.stderr_path())?,
        ))
    }

    /// `StartTaskRequest { task }`.
    pub fn start_request(&self) -> StartTaskRequest {
        StartTaskRequest {
            task: Some(self.config.clone()),
        }
    }

    /// `WaitTaskRequest` for this task.
    pub fn wait_request(&self) -> WaitTaskRequest {
        WaitTaskRequest {
            task_id: self.id().to_owned(),
        }
    }

    /// `StopTaskRequest` with `timeout` and `signal` (empty = driver default).
    pub fn stop_request(&self, timeout: Duration, signal: &str) -> StopTaskRequest {
        StopTaskRequest {
            task_id: self.id().to_owned(),
            timeout: Some(duration(timeout)),
            signal: signal.to_owned(),
        }
    }

    /// `DestroyTaskRequest`.
    pub fn destroy_request(&self, force: bool) -> DestroyTaskRequest {
        DestroyTaskRequest {
            task_id: self.id().to_owned(),
            force,
        }
    }

    /// `InspectTaskRequest`.
    pub fn inspect_request(&self) -> InspectTaskRequest {
        InspectTaskRequest {
            task_id: self.id().to_owned(),
        }
    }

    /// `SignalTaskRequest`, e.g. `"SIGHUP"`.
    pub fn signal_request(&self, signal: &str) -> SignalTaskRequest {
        SignalTaskRequest {
            task_id: self.id().to_owned(),
            signal: signal.to_owned(),
        }
    }

    /// `RecoverTaskRequest` with the handle StartTask returned.
    pub fn recover_request(&self, handle: TaskHandle) -> RecoverTaskRequest {
        RecoverTaskRequest {
            task_id: self.id().to_owned(),
            handle: Some(handle),
        }
    }
}

/// A protobuf `Duration`.
pub fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

/// Reads a log FIFO in a background thread exactly as Nomad's logmon does:
/// opens it (waiting for a writer), reads until every writer has closed
/// it, and then stops for good — logmon is not restarted when a plugin is
/// relaunched, so a driver whose writers close on a crash loses the rest
/// of the task's logs. Everything read is kept.
#[derive(Debug)]
pub struct FifoReader {
    path: PathBuf,
    data: Arc<Mutex<Vec<u8>>>,
    ended: Arc<AtomicBool>,
}

impl FifoReader {
    /// Starts reading `path`.
    pub fn start(path: &Path) -> anyhow::Result<Self> {
        let data = Arc::new(Mutex::new(Vec::new()));
        let ended = Arc::new(AtomicBool::new(false));
        let (thread_data, thread_ended, thread_path) =
            (data.clone(), ended.clone(), path.to_owned());
        std::thread::Builder::new()
            .name("fifo-reader".to_owned())
            .spawn(move || {
                if let Ok(mut file) = File::open(&thread_path) {
                    let mut buf = [0u8; 8192];
                    loop {
                        match file.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => thread_data
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .extend_from_slice(&buf[..n]),
                        }
                    }
                }
                thread_ended.store(true, Ordering::SeqCst);
            })?;
        Ok(Self {
            path: path.to_owned(),
            data,
            ended,
        })
    }

    /// Whether the reader saw end-of-file (every writer closed) and stopped.
    pub fn ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    /// Waits up to `timeout` for end-of-file; false if the FIFO stayed open.
    pub async fn wait_ended(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.ended() {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Everything read so far.
    pub fn bytes(&self) -> Vec<u8> {
        self.data
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Everything read so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes()).into_owned()
    }

    /// Waits until what was read contains `needle`; false on timeout.
    pub async fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.text().contains(needle) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for FifoReader {
    fn drop(&mut self) {
        // A reader blocked in open() is released by a writer coming and
        // going; one blocked in read() ends when the task's writer closes.
        let _ = OpenOptions::new()
            .write(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(&self.path);
    }
}
