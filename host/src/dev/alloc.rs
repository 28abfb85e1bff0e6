//! What a Nomad client prepares before StartTask, done the same way: the
//! node's topology for SetConfig, an alloc dir laid out like Nomad's, the
//! stdout/stderr FIFOs its logmon creates and reads, and the `TaskConfig`.
//!
//! ```text
//! <root>/<alloc id>/alloc/{data,logs,tmp}
//! <root>/<alloc id>/alloc/logs/.<task>.{stdout,stderr}.fifo
//! <root>/<alloc id>/<task>/{local,secrets,tmp}
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use nix::sys::stat::Mode;
use tempfile::TempDir;
use tokio::io::AsyncReadExt as _;
use tokio::sync::mpsc;

use super::taskfile::TaskFile;
use crate::rpc::proto::base::{
    ClientTopology, ClientTopologyCore, ClientTopologySlit, CoreGrade, NomadConfig,
    NomadDriverConfig,
};
use crate::rpc::proto::drivers::{
    AllocatedCpuResources, AllocatedMemoryResources, AllocatedTaskResources, LinuxResources,
    Resources, TaskConfig,
};

/// Lowest port of Nomad's default dynamic port range.
pub const MIN_DYNAMIC_PORT: u32 = 20000;
/// Highest port of Nomad's default dynamic port range.
pub const MAX_DYNAMIC_PORT: u32 = 32000;

/// The node as the dev client describes it to the plugin.
#[derive(Debug, Clone)]
pub struct Node {
    /// Node id (a fresh UUID per dev client run).
    pub id: String,
    /// Node name (the host name).
    pub name: String,
    /// Usable cores.
    pub cores: u32,
    /// Speed of one core, MHz.
    pub core_mhz: u64,
}

impl Node {
    /// This machine: its cores and their speed from `/proc/cpuinfo`
    /// (1000 MHz when it does not say, as in some VMs).
    pub fn this_machine() -> Self {
        let cores = std::thread::available_parallelism()
            .map_or(1, |n| u32::try_from(n.get()).unwrap_or(u32::MAX));
        let core_mhz = fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|l| l.starts_with("cpu MHz"))
                    .and_then(|l| l.split(':').nth(1))
                    .and_then(|v| v.trim().parse::<f64>().ok())
            })
            .filter(|mhz| mhz.is_finite() && *mhz >= 1.0)
            .map_or(1000, |mhz| mhz as u64);
        let name = fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "dev".to_owned());
        Self {
            id: uuid_v4(),
            name,
            cores,
            core_mhz,
        }
    }

    /// Total compute, MHz.
    pub fn compute_mhz(&self) -> u64 {
        u64::from(self.cores) * self.core_mhz
    }

    /// `nomad_config` of SetConfig: the dynamic port range and topology.
    pub fn nomad_config(&self) -> NomadConfig {
        NomadConfig {
            driver: Some(NomadDriverConfig {
                client_min_port: MIN_DYNAMIC_PORT,
                client_max_port: MAX_DYNAMIC_PORT,
                topology: Some(ClientTopology {
                    node_ids: vec![0],
                    distances: Some(ClientTopologySlit {
                        dimension: 1,
                        values: vec![10],
                    }),
                    cores: (0..self.cores)
                        .map(|core_id| ClientTopologyCore {
                            socket_id: 0,
                            node_id: 0,
                            core_id,
                            core_grade: CoreGrade::Performance as i32,
                            disable: false,
                            base_speed: self.core_mhz,
                            max_speed: self.core_mhz,
                            guess_speed: 0,
                        })
                        .collect(),
                    override_total_compute: 0,
                    override_withold_compute: 0,
                }),
            }),
        }
    }
}

/// One allocation's directory, removed on drop.
#[derive(Debug)]
pub struct AllocDir {
    id: String,
    dir: PathBuf,
    root: Option<TempDir>,
}

/// Where a task's logs go.
#[derive(Debug, Clone)]
pub struct TaskPaths {
    /// The stdout FIFO.
    pub stdout: PathBuf,
    /// The stderr FIFO.
    pub stderr: PathBuf,
}

impl AllocDir {
    /// A new alloc dir under the system temp dir.
    pub fn create() -> anyhow::Result<Self> {
        let id = uuid_v4();
        let root = tempfile::Builder::new()
            .prefix("wasmdock-dev-alloc-")
            .tempdir()
            .context("cannot create the alloc dir")?;
        let dir = root.path().join(&id);
        // Containers run as any user; Nomad's shared dirs are world-writable.
        for sub in ["", "alloc", "alloc/data", "alloc/logs", "alloc/tmp"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).with_context(|| format!("mkdir {}", path.display()))?;
            open_up(&path)?;
        }
        open_up(root.path())?;
        Ok(Self {
            id,
            dir,
            root: Some(root),
        })
    }

    /// The alloc id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The alloc dir on the host.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Makes `<task>/{local,secrets,tmp}` and the two log FIFOs.
    pub fn add_task(&self, task: &str) -> anyhow::Result<TaskPaths> {
        let task_dir = self.dir.join(task);
        for sub in ["", "local", "secrets", "tmp"] {
            let path = task_dir.join(sub);
            fs::create_dir_all(&path).with_context(|| format!("mkdir {}", path.display()))?;
            open_up(&path)?;
        }
        let logs = self.dir.join("alloc/logs");
        let paths = TaskPaths {
            stdout: logs.join(format!(".{task}.stdout.fifo")),
            stderr: logs.join(format!(".{task}.stderr.fifo")),
        };
        for fifo in [&paths.stdout, &paths.stderr] {
            nix::unistd::mkfifo(fifo, Mode::from_bits_truncate(0o600))
                .with_context(|| format!("mkfifo {}", fifo.display()))?;
        }
        Ok(paths)
    }

    /// Removes the alloc dir now (as dropping does), saying what failed.
    pub fn remove(mut self) -> anyhow::Result<()> {
        match self.root.take() {
            Some(root) => root.close().context("cannot remove the alloc dir"),
            None => Ok(()),
        }
    }
}

fn open_up(path: &Path) -> anyhow::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(0o777))
        .with_context(|| format!("chmod {}", path.display()))
}

/// What a task's Nomad environment is made of.
#[derive(Debug, Clone, Copy)]
pub struct TaskIdentity<'a> {
    /// Alloc id.
    pub alloc_id: &'a str,
    /// Job name (also its id).
    pub job: &'a str,
    /// Group name.
    pub group: &'a str,
    /// Task name.
    pub task: &'a str,
    /// Allocated CPU, MHz.
    pub cpu_mhz: i64,
    /// Allocated memory, MiB.
    pub memory_mb: i64,
    /// Memory ceiling, MiB (0: none).
    pub memory_max_mb: i64,
}

/// The `NOMAD_*` environment a Nomad client gives a task (in namespace
/// `default`, region `global`, datacenter `dc1`, alloc index 0), before
/// device plugins' variables and the task's own `env`.
pub fn nomad_env(task: &TaskIdentity<'_>) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = [
        ("NOMAD_ALLOC_DIR", "/alloc".to_owned()),
        ("NOMAD_TASK_DIR", "/local".to_owned()),
        ("NOMAD_SECRETS_DIR", "/secrets".to_owned()),
        ("NOMAD_ALLOC_ID", task.alloc_id.to_owned()),
        (
            "NOMAD_ALLOC_NAME",
            format!("{}.{}[0]", task.job, task.group),
        ),
        ("NOMAD_ALLOC_INDEX", "0".to_owned()),
        ("NOMAD_TASK_NAME", task.task.to_owned()),
        ("NOMAD_JOB_NAME", task.job.to_owned()),
        ("NOMAD_JOB_ID", task.job.to_owned()),
        ("NOMAD_GROUP_NAME", task.group.to_owned()),
        ("NOMAD_NAMESPACE", "default".to_owned()),
        ("NOMAD_REGION", "global".to_owned()),
        ("NOMAD_DC", "dc1".to_owned()),
        ("NOMAD_CPU_LIMIT", task.cpu_mhz.to_string()),
        ("NOMAD_MEMORY_LIMIT", task.memory_mb.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if task.memory_max_mb > 0 {
        env.insert(
            "NOMAD_MEMORY_MAX_LIMIT".to_owned(),
            task.memory_max_mb.to_string(),
        );
    }
    env
}

/// The `TaskConfig` a Nomad client sends for `task` in `alloc`, with the
/// environment Nomad sets and `driver_config` (cty msgpack) as its config.
pub fn task_config(
    task: &TaskFile,
    alloc: &AllocDir,
    paths: &TaskPaths,
    node: &Node,
    driver_config: Vec<u8>,
) -> TaskConfig {
    let memory_limit_mb = task.memory_mb.max(task.memory_max_mb);
    let mut env = nomad_env(&TaskIdentity {
        alloc_id: alloc.id(),
        job: &task.job,
        group: &task.group,
        task: &task.name,
        cpu_mhz: task.cpu_mhz,
        memory_mb: task.memory_mb,
        memory_max_mb: task.memory_max_mb,
    });
    // A Nomad client puts what device plugins set into the task's env as
    // well as into device_env (which the driver reads for its GPU rule).
    env.extend(task.device_env());
    env.extend(task.env.clone());
    TaskConfig {
        id: format!("{}/{}/{}", alloc.id(), task.name, &uuid_v4()[..8]),
        name: task.name.clone(),
        msgpack_driver_config: driver_config,
        env: env.into_iter().collect(),
        device_env: task.device_env().into_iter().collect(),
        resources: Some(Resources {
            allocated_resources: Some(AllocatedTaskResources {
                cpu: Some(AllocatedCpuResources {
                    cpu_shares: task.cpu_mhz,
                }),
                memory: Some(AllocatedMemoryResources {
                    memory_mb: task.memory_mb,
                    memory_max_mb: task.memory_max_mb,
                }),
                networks: Vec::new(),
            }),
            linux_resources: Some(LinuxResources {
                cpu_period: 0,
                cpu_quota: 0,
                cpu_shares: task.cpu_mhz,
                memory_limit_bytes: memory_limit_mb.saturating_mul(1024 * 1024),
                oom_score_adj: 0,
                cpuset_cpus: String::new(),
                percent_ticks: task.cpu_mhz as f64 / node.compute_mhz().max(1) as f64,
                cpuset_cgroup: String::new(),
            }),
            ports: Vec::new(),
        }),
        mounts: Vec::new(),
        devices: Vec::new(),
        user: task.user.clone(),
        alloc_dir: alloc.dir().to_string_lossy().into_owned(),
        stdout_path: paths.stdout.to_string_lossy().into_owned(),
        stderr_path: paths.stderr.to_string_lossy().into_owned(),
        task_group_name: task.group.clone(),
        job_name: task.job.clone(),
        alloc_id: alloc.id().to_owned(),
        network_isolation_spec: None,
        dns: None,
        job_id: task.job.clone(),
        namespace: "default".to_owned(),
        node_name: node.name.clone(),
        node_id: node.id.clone(),
        parent_job_id: String::new(),
    }
}

/// Which of a task's streams a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// stdout.
    Stdout,
    /// stderr.
    Stderr,
}

/// Reads a log FIFO as logmon does, sending what arrives to `sink` until
/// the receiver is dropped. The FIFO is held open for reading and writing,
/// so a driver that closes and reopens its end (a plugin restart) loses
/// nothing and the reader never sees end-of-file on its own.
pub fn read_fifo(
    path: &Path,
    stream: Stream,
    sink: mpsc::Sender<(Stream, Vec<u8>)>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut receiver = tokio::net::unix::pipe::OpenOptions::new()
        .read_write(true)
        .open_receiver(path)
        .with_context(|| format!("cannot open the log FIFO {}", path.display()))?;
    Ok(tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match receiver.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink.send((stream, buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
    }))
}

/// A random version 4 UUID from the kernel.
pub fn uuid_v4() -> String {
    fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| s.len() == 36)
        .unwrap_or_else(|| {
            // No procfs: time and pid are unique enough for a dev run.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            let n = nanos ^ (u128::from(std::process::id()) << 64);
            let hex = format!("{n:032x}");
            format!(
                "{}-{}-4{}-8{}-{}",
                &hex[..8],
                &hex[8..12],
                &hex[13..16],
                &hex[17..20],
                &hex[20..32]
            )
        })
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::os::unix::fs::FileTypeExt as _;

    use serde_json::json;

    use super::*;

    #[test]
    fn the_alloc_dir_is_laid_out_like_nomads_and_removed() {
        let alloc = AllocDir::create().unwrap();
        let paths = alloc.add_task("web").unwrap();
        for sub in [
            "alloc/data",
            "alloc/logs",
            "alloc/tmp",
            "web/local",
            "web/secrets",
        ] {
            assert!(alloc.dir().join(sub).is_dir(), "{sub}");
        }
        assert_eq!(
            paths.stdout,
            alloc.dir().join("alloc/logs/.web.stdout.fifo")
        );
        assert!(fs::metadata(&paths.stderr).unwrap().file_type().is_fifo());
        assert!(alloc.add_task("web").is_err(), "FIFOs exist already");
        let dir = alloc.dir().to_owned();
        alloc.remove().unwrap();
        assert!(!dir.exists());
    }

    #[test]
    fn the_task_config_carries_nomads_env_resources_and_devices() {
        let alloc = AllocDir::create().unwrap();
        let paths = alloc.add_task("gpu").unwrap();
        let mut task = TaskFile::new("gpu", json!({}));
        task.memory_mb = 64;
        task.memory_max_mb = 128;
        task.gpus = 1;
        task.env.insert("NOMAD_DC".to_owned(), "mine".to_owned());
        let node = Node {
            id: uuid_v4(),
            name: "n".to_owned(),
            cores: 2,
            core_mhz: 1000,
        };
        let config = task_config(&task, &alloc, &paths, &node, vec![0x80]);
        assert!(config.id.starts_with(&format!("{}/gpu/", alloc.id())));
        assert_eq!(config.env["NOMAD_ALLOC_ID"], alloc.id());
        assert_eq!(config.env["NOMAD_MEMORY_MAX_LIMIT"], "128");
        assert_eq!(config.env["NOMAD_DC"], "mine", "the task's env wins");
        assert!(config.device_env.contains_key("NVIDIA_VISIBLE_DEVICES"));
        assert_eq!(
            config.env["NVIDIA_VISIBLE_DEVICES"], config.device_env["NVIDIA_VISIBLE_DEVICES"],
            "device env is in the task's env too, as Nomad puts it"
        );
        let linux = config.resources.unwrap().linux_resources.unwrap();
        assert_eq!(linux.memory_limit_bytes, 128 * 1024 * 1024);
        assert!((linux.percent_ticks - 0.05).abs() < 1e-9);
        assert_eq!(config.stdout_path, paths.stdout.to_string_lossy());
    }

    #[tokio::test]
    async fn a_fifo_is_read_across_writers() {
        let alloc = AllocDir::create().unwrap();
        let paths = alloc.add_task("t").unwrap();
        let (tx, mut rx) = mpsc::channel(8);
        let reader = read_fifo(&paths.stdout, Stream::Stdout, tx).unwrap();
        let mut got = Vec::new();
        for text in ["one\n", "two\n"] {
            // Opening for writing does not block: the reader is there.
            let mut writer = fs::OpenOptions::new()
                .write(true)
                .open(&paths.stdout)
                .unwrap();
            writer.write_all(text.as_bytes()).unwrap();
            drop(writer);
            let (stream, bytes) = rx.recv().await.unwrap();
            assert_eq!(stream, Stream::Stdout);
            got.extend(bytes);
        }
        assert_eq!(got, b"one\ntwo\n");
        drop(rx);
        reader.abort();
    }

    #[test]
    fn uuids_have_the_v4_shape() {
        let id = uuid_v4();
        assert_eq!(id.len(), 36);
        assert_eq!(id.matches('-').count(), 4);
        assert_ne!(id, uuid_v4());
    }
}
