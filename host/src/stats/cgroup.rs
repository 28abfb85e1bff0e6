//! A container's cgroup: where it is and what its files say.
//!
//! The cgroup is found through `/proc/<pid>/cgroup` of the container's main
//! process, which names it whatever the cgroup driver (cgroupfs or systemd)
//! or `CgroupParent`: on cgroup v1 the `cpu,cpuacct` and `memory`
//! hierarchies, on v2 the unified one. Paths are resolved under
//! `/sys/fs/cgroup` and checked once; a plugin inside a cgroup namespace
//! that cannot see them falls back to the engine's stats API.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::counters::{Counters, CpuCounters, MemoryCounters};

/// Where the cgroup file systems are mounted.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// A located cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cgroup {
    /// cgroup v1: the cpuacct (and cpu) directory and the memory directory.
    V1 {
        /// Holds `cpuacct.usage`, `cpuacct.stat` and `cpu.stat`.
        cpu: PathBuf,
        /// Holds `memory.usage_in_bytes`, `memory.stat`, ….
        memory: PathBuf,
    },
    /// cgroup v2: one directory.
    V2 {
        /// Holds `cpu.stat`, `memory.current`, ….
        dir: PathBuf,
    },
}

/// The cgroup paths listed in a `/proc/<pid>/cgroup` file: the v1 paths of
/// the cpuacct and memory controllers (with the controller list naming the
/// hierarchy), and the v2 path.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ProcCgroup {
    /// `(hierarchy name, path)` of the hierarchy with cpuacct.
    pub cpuacct: Option<(String, String)>,
    /// Path in the memory hierarchy.
    pub memory: Option<String>,
    /// Path in the unified hierarchy.
    pub unified: Option<String>,
}

/// Parses `/proc/<pid>/cgroup` (`id:controllers:path` per line).
pub fn parse_proc_cgroup(text: &str) -> ProcCgroup {
    let mut found = ProcCgroup::default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            found.unified = Some(path.to_owned());
            continue;
        }
        let names: Vec<&str> = controllers.split(',').collect();
        if names.contains(&"cpuacct") {
            found.cpuacct = Some((controllers.to_owned(), path.to_owned()));
        }
        if names.contains(&"memory") {
            found.memory = Some(path.to_owned());
        }
    }
    found
}

fn under(root: &Path, hierarchy: &str, path: &str) -> PathBuf {
    root.join(hierarchy).join(path.trim_start_matches('/'))
}

/// Finds the cgroup of process `pid` under `root` (normally
/// `/sys/fs/cgroup`), checking that its files are there.
pub fn locate_in(root: &Path, proc_cgroup: &str) -> io::Result<Cgroup> {
    let found = parse_proc_cgroup(proc_cgroup);
    let missing = |what: &str| io::Error::new(io::ErrorKind::NotFound, what.to_owned());
    if let (Some((hierarchy, cpu_path)), Some(memory_path)) = (&found.cpuacct, &found.memory) {
        let cpu = [hierarchy.as_str(), "cpuacct", "cpu,cpuacct"]
            .iter()
            .map(|h| under(root, h, cpu_path))
            .find(|dir| dir.join("cpuacct.usage").is_file())
            .ok_or_else(|| missing("the container's cpuacct cgroup is not visible"))?;
        let memory = under(root, "memory", memory_path);
        if !memory.join("memory.usage_in_bytes").is_file() {
            return Err(missing("the container's memory cgroup is not visible"));
        }
        return Ok(Cgroup::V1 { cpu, memory });
    }
    if let Some(path) = &found.unified {
        let dir = root.join(path.trim_start_matches('/'));
        if dir.join("cpu.stat").is_file() && dir.join("memory.current").is_file() {
            return Ok(Cgroup::V2 { dir });
        }
        return Err(missing(
            "the container's cgroup v2 directory is not visible",
        ));
    }
    Err(missing(
        "the process has no cpuacct/memory or unified cgroup",
    ))
}

/// Finds the cgroup of the container whose main process is `pid`.
pub fn locate(pid: u32) -> io::Result<Cgroup> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    locate_in(Path::new(CGROUP_ROOT), &text)
}

/// `key value` lines → the value of `key`.
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Kernel clock ticks per second (`USER_HZ`), the unit of `cpuacct.stat`.
fn user_hz() -> u64 {
    rustix::param::clock_ticks_per_second().max(1)
}

impl Cgroup {
    /// Opens the cgroup's files once; each reading is then one `pread` per
    /// file.
    pub fn open(&self) -> io::Result<OpenCgroup> {
        let open = |path: PathBuf| File::open(path);
        let optional = |path: PathBuf| File::open(path).ok();
        Ok(match self {
            Self::V1 { cpu, memory } => OpenCgroup {
                v2: false,
                cpu_usage: Some(open(cpu.join("cpuacct.usage"))?),
                cpu_times: open(cpu.join("cpuacct.stat"))?,
                cpu_stat: optional(cpu.join("cpu.stat")),
                memory_usage: open(memory.join("memory.usage_in_bytes"))?,
                memory_peak: optional(memory.join("memory.max_usage_in_bytes")),
                memory_stat: open(memory.join("memory.stat"))?,
                swap: None,
                buf: Vec::with_capacity(4096),
            },
            Self::V2 { dir } => OpenCgroup {
                v2: true,
                cpu_usage: None,
                cpu_times: open(dir.join("cpu.stat"))?,
                cpu_stat: None,
                memory_usage: open(dir.join("memory.current"))?,
                memory_peak: optional(dir.join("memory.peak")),
                memory_stat: open(dir.join("memory.stat"))?,
                swap: optional(dir.join("memory.swap.current")),
                buf: Vec::with_capacity(4096),
            },
        })
    }

    /// Reads the counters once.
    pub fn read(&self) -> io::Result<Counters> {
        self.open()?.read()
    }
}

/// A cgroup with its files open.
#[derive(Debug)]
pub struct OpenCgroup {
    v2: bool,
    /// v1 `cpuacct.usage`.
    cpu_usage: Option<File>,
    /// v1 `cpuacct.stat`; v2 `cpu.stat` (which has everything).
    cpu_times: File,
    /// v1 `cpu.stat` (throttling).
    cpu_stat: Option<File>,
    /// `memory.usage_in_bytes` / `memory.current`.
    memory_usage: File,
    /// `memory.max_usage_in_bytes` / `memory.peak`.
    memory_peak: Option<File>,
    /// `memory.stat`.
    memory_stat: File,
    /// v2 `memory.swap.current`.
    swap: Option<File>,
    buf: Vec<u8>,
}

/// The whole content of a cgroup file, read from its start (cgroup files
/// regenerate their content when read again from offset 0).
fn pread(file: &File, buf: &mut Vec<u8>) -> io::Result<String> {
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = file.read_at(&mut chunk, buf.len() as u64)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8(std::mem::take(buf))
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "a cgroup file is not text"))
}

fn number(text: &str) -> io::Result<u64> {
    text.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{text:?} is not a number"),
        )
    })
}

impl OpenCgroup {
    /// Reads the counters.
    pub fn read(&mut self) -> io::Result<Counters> {
        let at = SystemTime::now();
        let buf = &mut self.buf;
        let cpu_times = pread(&self.cpu_times, buf)?;
        let memory_stat = pread(&self.memory_stat, buf)?;
        let memory_usage = number(&pread(&self.memory_usage, buf)?)?;
        let memory_peak = match &self.memory_peak {
            Some(file) => pread(file, buf).ok().and_then(|t| number(&t).ok()),
            None => None,
        };
        if self.v2 {
            let swap = match &self.swap {
                Some(file) => pread(file, buf).ok().and_then(|t| number(&t).ok()),
                None => None,
            };
            return Ok(v2_counters(
                at,
                &cpu_times,
                memory_usage,
                memory_peak,
                swap,
                &memory_stat,
            ));
        }
        let usage = match &self.cpu_usage {
            Some(file) => number(&pread(file, buf)?)?,
            None => 0,
        };
        let throttling = match &self.cpu_stat {
            Some(file) => pread(file, buf).unwrap_or_default(),
            None => String::new(),
        };
        Ok(v1_counters(
            at,
            usage,
            &cpu_times,
            1_000_000_000 / user_hz(),
            &throttling,
            memory_usage,
            memory_peak,
            &memory_stat,
        ))
    }
}

#[expect(clippy::too_many_arguments, reason = "one argument per cgroup v1 file")]
fn v1_counters(
    at: SystemTime,
    usage_ns: u64,
    cpuacct_stat: &str,
    tick_ns: u64,
    cpu_stat: &str,
    memory_usage: u64,
    memory_max: Option<u64>,
    memory_stat: &str,
) -> Counters {
    Counters {
        at,
        cpu: CpuCounters {
            total_ns: usage_ns,
            user_ns: keyed(cpuacct_stat, "user")
                .unwrap_or(0)
                .saturating_mul(tick_ns),
            system_ns: keyed(cpuacct_stat, "system")
                .unwrap_or(0)
                .saturating_mul(tick_ns),
            throttled_periods: keyed(cpu_stat, "nr_throttled").unwrap_or(0),
            throttled_ns: keyed(cpu_stat, "throttled_time").unwrap_or(0),
        },
        memory: MemoryCounters {
            rss: keyed(memory_stat, "rss").unwrap_or(0),
            cache: keyed(memory_stat, "cache").unwrap_or(0),
            swap: keyed(memory_stat, "swap").unwrap_or(0),
            usage: memory_usage,
            max_usage: memory_max,
        },
    }
}

fn v2_counters(
    at: SystemTime,
    cpu_stat: &str,
    memory_current: u64,
    memory_peak: Option<u64>,
    swap_current: Option<u64>,
    memory_stat: &str,
) -> Counters {
    let usec = |key| keyed(cpu_stat, key).unwrap_or(0).saturating_mul(1000);
    Counters {
        at,
        cpu: CpuCounters {
            total_ns: usec("usage_usec"),
            user_ns: usec("user_usec"),
            system_ns: usec("system_usec"),
            throttled_periods: keyed(cpu_stat, "nr_throttled").unwrap_or(0),
            throttled_ns: usec("throttled_usec"),
        },
        memory: MemoryCounters {
            rss: keyed(memory_stat, "anon").unwrap_or(0),
            cache: keyed(memory_stat, "file").unwrap_or(0),
            swap: swap_current.unwrap_or(0),
            usage: memory_current,
            max_usage: memory_peak,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_CGROUPFS: &str = "12:pids:/docker/abc\n11:cpu,cpuacct:/docker/abc\n9:memory:/docker/abc\n1:name=systemd:/docker/abc\n0::/system.slice/containerd.service\n";
    const V1_SYSTEMD: &str =
        "4:memory:/system.slice/docker-abc.scope\n3:cpu,cpuacct:/system.slice/docker-abc.scope\n";
    const V2: &str = "0::/system.slice/docker-abc.scope\n";

    #[test]
    fn proc_cgroup_names_the_hierarchies() {
        let v1 = parse_proc_cgroup(V1_CGROUPFS);
        assert_eq!(
            v1.cpuacct,
            Some(("cpu,cpuacct".to_owned(), "/docker/abc".to_owned()))
        );
        assert_eq!(v1.memory.as_deref(), Some("/docker/abc"));
        let v2 = parse_proc_cgroup(V2);
        assert_eq!(
            v2.unified.as_deref(),
            Some("/system.slice/docker-abc.scope")
        );
        assert_eq!(v2.cpuacct, None);
        assert_eq!(parse_proc_cgroup("garbage\n::\n"), ProcCgroup::default());
    }

    fn touch(path: &Path, content: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }

    #[test]
    fn v1_is_located_and_read_under_either_driver() {
        for proc_cgroup in [V1_CGROUPFS, V1_SYSTEMD] {
            let root = tempfile::tempdir().unwrap();
            let path = parse_proc_cgroup(proc_cgroup).memory.unwrap();
            let cpu = root
                .path()
                .join("cpu,cpuacct")
                .join(path.trim_start_matches('/'));
            let memory = root
                .path()
                .join("memory")
                .join(path.trim_start_matches('/'));
            touch(&cpu.join("cpuacct.usage"), "2500000000\n");
            touch(&cpu.join("cpuacct.stat"), "user 150\nsystem 50\n");
            touch(
                &cpu.join("cpu.stat"),
                "nr_periods 10\nnr_throttled 3\nthrottled_time 12345\n",
            );
            touch(&memory.join("memory.usage_in_bytes"), "4096000\n");
            touch(&memory.join("memory.max_usage_in_bytes"), "8192000\n");
            touch(
                &memory.join("memory.stat"),
                "cache 1000\nrss 2000\nmapped_file 10\nswap 5\ntotal_rss 99999\n",
            );
            let cgroup = locate_in(root.path(), proc_cgroup).unwrap();
            assert_eq!(cgroup, Cgroup::V1 { cpu, memory });
            let counters = cgroup.read().unwrap();
            assert_eq!(counters.cpu.total_ns, 2_500_000_000);
            assert_eq!(counters.cpu.user_ns, 150 * (1_000_000_000 / user_hz()));
            assert_eq!(counters.cpu.throttled_periods, 3);
            assert_eq!(counters.cpu.throttled_ns, 12345);
            assert_eq!(counters.memory.rss, 2000, "rss, not total_rss");
            assert_eq!(counters.memory.cache, 1000);
            assert_eq!(counters.memory.swap, 5);
            assert_eq!(counters.memory.usage, 4_096_000);
            assert_eq!(counters.memory.max_usage, Some(8_192_000));
        }
    }

    #[test]
    fn v2_is_located_and_read() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("system.slice/docker-abc.scope");
        touch(
            &dir.join("cpu.stat"),
            "usage_usec 3000\nuser_usec 2000\nsystem_usec 1000\nnr_periods 4\nnr_throttled 2\nthrottled_usec 7\n",
        );
        touch(&dir.join("memory.current"), "65536\n");
        touch(
            &dir.join("memory.stat"),
            "anon 4096\nfile 8192\nfile_mapped 1\n",
        );
        let cgroup = locate_in(root.path(), V2).unwrap();
        let counters = cgroup.read().unwrap();
        assert_eq!(counters.cpu.total_ns, 3_000_000);
        assert_eq!(counters.cpu.user_ns, 2_000_000);
        assert_eq!(counters.cpu.system_ns, 1_000_000);
        assert_eq!(counters.cpu.throttled_periods, 2);
        assert_eq!(counters.cpu.throttled_ns, 7000);
        assert_eq!(counters.memory.rss, 4096);
        assert_eq!(counters.memory.cache, 8192);
        assert_eq!(counters.memory.usage, 65536);
        assert_eq!(
            counters.memory.max_usage, None,
            "no memory.peak on older kernels"
        );
        touch(&dir.join("memory.peak"), "70000\n");
        touch(&dir.join("memory.swap.current"), "12\n");
        let counters = cgroup.read().unwrap();
        assert_eq!(counters.memory.max_usage, Some(70000));
        assert_eq!(counters.memory.swap, 12);
    }

    #[test]
    fn invisible_cgroups_are_an_error_not_zeros() {
        let root = tempfile::tempdir().unwrap();
        assert!(locate_in(root.path(), V1_CGROUPFS).is_err());
        assert!(locate_in(root.path(), V2).is_err());
        assert!(locate_in(root.path(), "").is_err());
    }
}
