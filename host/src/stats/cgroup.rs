//! A container's cgroup: where it is and what its files say.
//!
//! The cgroup is found through `/proc/<pid>/cgroup` of the container's main
//! process, which names it whatever the cgroup driver (cgroupfs or systemd)
//! or `CgroupParent`: on cgroup v1 the `cpu,cpuacct` and `memory`
//! hierarchies, on v2 the unified one. Paths are resolved under
//! `/sys/fs/cgroup` and checked once; a plugin inside a cgroup namespace
//! that cannot see them falls back to the engine's stats API.

use std::io;
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

fn read(path: &Path) -> io::Result<String> {
    std::fs::read_to_string(path)
}

fn read_number(path: &Path) -> io::Result<u64> {
    read(path)?.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is not a number", path.display()),
        )
    })
}

/// Kernel clock ticks per second (`USER_HZ`), the unit of `cpuacct.stat`.
fn user_hz() -> u64 {
    rustix::param::clock_ticks_per_second().max(1)
}

impl Cgroup {
    /// Reads the counters.
    pub fn read(&self) -> io::Result<Counters> {
        let at = SystemTime::now();
        match self {
            Self::V1 { cpu, memory } => {
                let stat = read(&cpu.join("cpuacct.stat"))?;
                let tick_ns = 1_000_000_000 / user_hz();
                let throttling = read(&cpu.join("cpu.stat")).unwrap_or_default();
                let memory_stat = read(&memory.join("memory.stat"))?;
                Ok(v1_counters(
                    at,
                    read_number(&cpu.join("cpuacct.usage"))?,
                    &stat,
                    tick_ns,
                    &throttling,
                    read_number(&memory.join("memory.usage_in_bytes"))?,
                    read_number(&memory.join("memory.max_usage_in_bytes")).ok(),
                    &memory_stat,
                ))
            }
            Self::V2 { dir } => {
                let cpu_stat = read(&dir.join("cpu.stat"))?;
                let memory_stat = read(&dir.join("memory.stat"))?;
                Ok(v2_counters(
                    at,
                    &cpu_stat,
                    read_number(&dir.join("memory.current"))?,
                    read_number(&dir.join("memory.peak")).ok(),
                    read_number(&dir.join("memory.swap.current")).ok(),
                    &memory_stat,
                ))
            }
        }
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
