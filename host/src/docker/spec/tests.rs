//! Tests of the container mapping, with the expected values of Nomad's Go
//! tests (driver_test.go, driver_unix_test.go, driver_linux_test.go, …).

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};

use bollard::models::{
    DeviceMapping, HostConfig, Mount, MountBindOptions, MountBindOptionsPropagationEnum,
    MountTmpfsOptions, MountType, MountVolumeOptions, MountVolumeOptionsDriverConfig, PortBinding,
    ResourcesUlimits,
};

use super::*;
use crate::config::task::{Device, Mount as TaskMount, TaskLogging};
use crate::driver::task::{
    DeviceRequest, DnsConfig, MountRequest, NetworkIsolation, NetworkMode, NetworkResource,
    PortMapping,
};

/// A list of literal strings, for case tables.
type Strs = &'static [&'static str];
/// A change to a fixture, for case tables.
type Change = fn(&mut Fixture);

const ALLOC: &str = "a1b2c3d4-0000-4000-8000-000000000000";
const ALLOC_DIR: &str = "/nomad/alloc/a1b2c3d4-0000-4000-8000-000000000000";
const TASK_DIR: &str = "/nomad/alloc/a1b2c3d4-0000-4000-8000-000000000000/redis-demo";

/// In-memory [`HostFiles`].
#[derive(Debug, Default, Clone)]
struct FakeHost(BTreeMap<PathBuf, String>);

impl HostFiles for FakeHost {
    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        self.0
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file or directory"))
    }

    /// Paths stored with the content `-> outside` are symlinks leading out.
    fn leads_out(&self, root: &Path, path: &Path) -> Option<String> {
        assert!(
            path.starts_with(root),
            "only paths inside the root are checked"
        );
        path.ancestors()
            .find(|p| self.0.get(*p).is_some_and(|c| c == "-> outside"))
            .map(|p| format!("{} is a symlink out of the alloc dir", p.display()))
    }
}

/// Inputs like Go's `dockerTask`: task `redis-demo`, 256 MB, 512 MHz, a
/// legacy network on 127.0.0.1 with `main` reserved and `REDIS` dynamic.
#[derive(Debug, Clone)]
struct Fixture {
    task: TaskRequest,
    config: TaskConfig,
    plugin: PluginConfig,
    engine: EngineFacts,
    compute: NodeCompute,
    host_cpus: i64,
    host: FakeHost,
    gpu: Option<GpuChoice>,
}

impl Fixture {
    fn new() -> Self {
        let mut task = TaskRequest {
            id: format!("{ALLOC}/redis-demo/abcd1234"),
            name: "redis-demo".to_owned(),
            alloc_id: ALLOC.to_owned(),
            job_name: "redis-job".to_owned(),
            job_id: "redis-job-id".to_owned(),
            task_group_name: "redis-group".to_owned(),
            namespace: "default".to_owned(),
            node_name: "node-1".to_owned(),
            node_id: "node-id-1".to_owned(),
            alloc_dir: PathBuf::from(ALLOC_DIR),
            ..TaskRequest::default()
        };
        task.env = BTreeMap::from([
            ("test".to_owned(), "value".to_owned()),
            ("NOMAD_ALLOC_DIR".to_owned(), "/alloc".to_owned()),
            ("NOMAD_TASK_DIR".to_owned(), "/local".to_owned()),
            ("NOMAD_SECRETS_DIR".to_owned(), "/secrets".to_owned()),
        ]);
        task.resources.cpu_shares = 512;
        task.resources.memory_mb = 256;
        task.resources.linux.cpu_shares = 512;
        task.resources.linux.memory_limit_bytes = 256 * 1024 * 1024;
        task.resources.linux.percent_ticks = 512.0 / 4096.0;
        task.resources.networks = vec![NetworkResource {
            ip: "127.0.0.1".to_owned(),
            reserved_ports: vec![("main".to_owned(), 20000)],
            dynamic_ports: vec![("REDIS".to_owned(), 20001)],
        }];
        Self {
            task,
            config: TaskConfig {
                image: "busybox:1".to_owned(),
                ..TaskConfig::default()
            },
            plugin: PluginConfig::default(),
            engine: EngineFacts {
                version: "20.10.24".to_owned(),
                os_type: "linux".to_owned(),
                runtimes: vec!["runc".to_owned()],
                cgroup_driver: "systemd".to_owned(),
                cgroup_version: "2".to_owned(),
            },
            compute: NodeCompute {
                num_cores: 4,
                total_compute: 4096,
            },
            host_cpus: 4,
            gpu: None,
            host: FakeHost::default(),
        }
    }

    fn with(mut self, change: impl FnOnce(&mut Self)) -> Self {
        change(&mut self);
        self
    }

    fn file(mut self, path: &str, content: &str) -> Self {
        self.host.0.insert(PathBuf::from(path), content.to_owned());
        self
    }

    fn spec(&self) -> Result<ContainerSpec, SpecError> {
        let inputs = SpecInputs {
            task: &self.task,
            config: &self.config,
            plugin: &self.plugin,
            engine: &self.engine,
            compute: self.compute,
            host_cpus: self.host_cpus,
            image: "org/repo:0.1",
            gpu: self.gpu.as_ref(),
        };
        container_spec(&inputs, &self.host)
    }

    fn ok(&self) -> ContainerSpec {
        self.spec().expect("container spec")
    }

    fn host_config(&self) -> HostConfig {
        self.ok().body.host_config.expect("host config")
    }

    fn err(&self) -> SpecError {
        self.spec().expect_err("an error")
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn map(items: &[(&str, &str)]) -> BTreeMap<String, String> {
    items
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn bind(target: &str, source: &str, propagation: Option<MountBindOptionsPropagationEnum>) -> Mount {
    Mount {
        target: Some(target.to_owned()),
        source: Some(source.to_owned()),
        typ: Some(MountType::BIND),
        read_only: Some(false),
        bind_options: Some(MountBindOptions {
            propagation,
            ..MountBindOptions::default()
        }),
        ..Mount::default()
    }
}

// ---------------------------------------------------------------- memory

#[test]
fn memory_limits_table() {
    const MB: i64 = 1024 * 1024;
    // (name, hard limit, memory, memory_max, expected hard, expected reservation)
    let cases = [
        ("plain request", 0, 10, 0, 10 * MB, 0),
        ("with driver max", 20, 10, 0, 20 * MB, 10 * MB),
        ("with resources max", 20, 10, 20, 20 * MB, 10 * MB),
        (
            "driver and resources max: higher driver",
            30,
            10,
            20,
            30 * MB,
            10 * MB,
        ),
        (
            "driver and resources max: higher resources",
            20,
            10,
            30,
            30 * MB,
            10 * MB,
        ),
        (
            "reserved-only memory oversubscription",
            20,
            10,
            -1,
            0,
            10 * MB,
        ),
        ("all zero", 0, 0, 0, 0, 0),
        (
            "zero task memory with driver hard limit",
            20,
            0,
            0,
            20 * MB,
            0,
        ),
        (
            "zero driver and reserved with max set",
            0,
            0,
            30,
            30 * MB,
            0,
        ),
        (
            "driver and max set with zero reserved",
            20,
            0,
            30,
            30 * MB,
            0,
        ),
        (
            "reserved-only no hard limit with zero reserved",
            0,
            0,
            -1,
            0,
            0,
        ),
        (
            "driver ignored when memory max is no limit",
            50,
            0,
            -1,
            0,
            0,
        ),
        ("driver lower than memory", 6, 17, 0, 6 * MB, 17 * MB),
    ];
    for (name, hard_limit, memory, memory_max, hard, reserved) in cases {
        assert_eq!(
            memory_limits(hard_limit, memory, memory_max),
            (hard, reserved),
            "{name}"
        );
    }
    // No overflow panic on absurd values.
    assert_eq!(memory_limits(0, i64::MAX, 0), (i64::MAX, 0));
}

#[test]
fn memory_hard_limit_reaches_host_config() {
    let hc = Fixture::new()
        .with(|f| f.config.memory_hard_limit = 512)
        .host_config();
    assert_eq!(hc.memory, Some(512 * 1024 * 1024));
    assert_eq!(hc.memory_reservation, Some(256 * 1024 * 1024));
    assert_eq!(hc.memory_swap, Some(512 * 1024 * 1024));
}

#[test]
fn memory_hard_limit_below_task_memory_is_an_error() {
    let err = Fixture::new()
        .with(|f| f.config.memory_hard_limit = 6)
        .err();
    assert_eq!(err.key, "memory_hard_limit");
    assert_eq!(
        err.message,
        "task memory requirements exceed driver hard limit of 6 MB"
    );
}

#[test]
fn memory_defaults_and_swappiness() {
    let hc = Fixture::new().host_config();
    assert_eq!(hc.memory, Some(256 * 1024 * 1024));
    assert_eq!(hc.memory_reservation, Some(0));
    assert_eq!(hc.memory_swap, hc.memory);
    assert_eq!(hc.memory_swappiness, Some(0), "swap off on cgroup v2");
    let v1 = Fixture::new()
        .with(|f| f.engine.cgroup_version = "1".to_owned())
        .host_config();
    assert_eq!(v1.memory_swappiness, None, "left alone on cgroup v1");
}

// ---------------------------------------------------------------- cpu

#[test]
fn normalize_cpu_shares_table() {
    // (total compute, requested, expected)
    let cases = [
        (12_000, MAX_CPU_SHARES, MAX_CPU_SHARES),
        (12_000, 1000, 1000),
        (262_144, MAX_CPU_SHARES, MAX_CPU_SHARES),
        (262_145, MAX_CPU_SHARES, 262_143),
        (262_145, 2, 2),
        (262_145, 1, 2),
        (524_288, 1000, 500),
        (524_288, MAX_CPU_SHARES, MAX_CPU_SHARES / 2),
        (0, 0, 2),
        (4096, -5, 2),
    ];
    for (total, requested, expected) in cases {
        assert_eq!(
            cpu_shares(requested, total),
            expected,
            "total {total}, requested {requested}"
        );
    }
}

#[test]
fn cpu_shares_use_linux_resources_and_node_compute() {
    let hc = Fixture::new()
        .with(|f| {
            f.compute.total_compute = 524_288;
            f.task.resources.linux.cpu_shares = 1000;
        })
        .host_config();
    assert_eq!(hc.cpu_shares, Some(500));
}

#[test]
fn cpu_hard_limit_period_and_quota() {
    // Schema default period: 0.125 of the node × 100000 µs × 4 CPUs.
    let hc = Fixture::new()
        .with(|f| f.config.cpu_hard_limit = true)
        .host_config();
    assert_eq!(hc.cpu_period, Some(100_000));
    assert_eq!(hc.cpu_quota, Some(50_000));

    // CPUCFSPeriod: the maximum period is honoured.
    let hc = Fixture::new()
        .with(|f| {
            f.config.cpu_hard_limit = true;
            f.config.cpu_cfs_period = 1_000_000;
        })
        .host_config();
    assert_eq!(hc.cpu_period, Some(1_000_000));
    assert_eq!(hc.cpu_quota, Some(500_000));

    // Period 0 takes the client's period.
    let hc = Fixture::new()
        .with(|f| {
            f.config.cpu_hard_limit = true;
            f.config.cpu_cfs_period = 0;
            f.task.resources.linux.cpu_period = 50_000;
        })
        .host_config();
    assert_eq!(hc.cpu_period, Some(50_000));
    assert_eq!(hc.cpu_quota, Some(25_000));

    // Without cpu_hard_limit nothing is set.
    let hc = Fixture::new().host_config();
    assert_eq!((hc.cpu_period, hc.cpu_quota), (None, None));
}

#[test]
fn cpu_cfs_period_out_of_range() {
    for period in [-1, 1_000_001] {
        let err = Fixture::new()
            .with(|f| {
                f.config.cpu_hard_limit = true;
                f.config.cpu_cfs_period = period;
            })
            .err();
        assert_eq!(err.key, "cpu_cfs_period");
        assert_eq!(err.message, "invalid value for cpu_cfs_period");
    }
    // Ignored without cpu_hard_limit.
    Fixture::new().with(|f| f.config.cpu_cfs_period = -1).ok();
}

#[test]
fn cpuset_from_linux_resources_wins() {
    let hc = Fixture::new()
        .with(|f| {
            f.task.resources.linux.cpuset_cpus = "0,1".to_owned();
            f.task.resources.linux.cpuset_cgroup = "/sys/fs/cgroup/nomad.slice/x".to_owned();
        })
        .host_config();
    assert_eq!(hc.cpuset_cpus.as_deref(), Some("0,1"));
}

#[test]
fn cpuset_read_from_cgroup() {
    let cgroup = "/sys/fs/cgroup/nomad.slice/share.slice";
    let spec = Fixture::new()
        .with(|f| f.task.resources.linux.cpuset_cgroup = cgroup.to_owned())
        .file(&format!("{cgroup}/cpuset.cpus.effective"), "0-2\n")
        .ok();
    let hc = spec.body.host_config.expect("host config");
    assert_eq!(hc.cpuset_cpus.as_deref(), Some("0-2"));
    assert!(spec.warnings.is_empty());

    // cgroup v1 reads cpuset.effective_cpus, and the list is normalised.
    let hc = Fixture::new()
        .with(|f| {
            f.engine.cgroup_version = "1".to_owned();
            f.task.resources.linux.cpuset_cgroup = "/sys/fs/cgroup/cpuset/nomad".to_owned();
        })
        .file(
            "/sys/fs/cgroup/cpuset/nomad/cpuset.effective_cpus",
            "3,0-1,2,7, 9-8\n",
        )
        .host_config();
    assert_eq!(hc.cpuset_cpus.as_deref(), Some("0-3,7-9"));
}

#[test]
fn cpuset_read_failure_is_a_warning() {
    let spec = Fixture::new()
        .with(|f| f.task.resources.linux.cpuset_cgroup = "/missing".to_owned())
        .ok();
    assert_eq!(
        spec.body.host_config.expect("host config").cpuset_cpus,
        None
    );
    assert_eq!(spec.warnings.len(), 1);
    assert!(
        spec.warnings[0].contains("unable to read usable cores"),
        "{:?}",
        spec.warnings
    );
}

#[test]
fn cpuset_empty_cgroup_path_and_task_cpuset_cpus() {
    let spec = Fixture::new()
        .with(|f| f.config.cpuset_cpus = "0-3".to_owned())
        .ok();
    assert_eq!(spec.warnings, strings(&[CPUSET_CPUS_WARNING]));
    assert_eq!(
        spec.body.host_config.expect("host config").cpuset_cpus,
        None
    );
}

#[test]
fn normalise_cpuset_lists() {
    let cases = [
        ("0-2", "0-2"),
        ("0,1,2,3", "0-3"),
        ("5,1-2,x,3", "1-3,5"),
        ("", ""),
        ("\n", ""),
        ("4-2", "2-4"),
        ("65535,65534", "65534-65535"),
        ("99999", ""),
    ];
    for (input, expected) in cases {
        assert_eq!(
            super::resources::normalise_cpuset(input),
            expected,
            "{input:?}"
        );
    }
}

// ---------------------------------------------------------------- pids

#[test]
fn pids_limit_rules() {
    // (plugin, task, expected)
    let cases = [
        (0, 0, -1),
        (5, 0, 5),
        (0, 7, 7),
        (5, 3, 3),
        (5, 5, 5),
        (0, -3, -1),
    ];
    for (plugin, task, expected) in cases {
        let hc = Fixture::new()
            .with(|f| {
                f.plugin.pids_limit = plugin;
                f.config.pids_limit = task;
            })
            .host_config();
        assert_eq!(
            hc.pids_limit,
            Some(expected),
            "plugin {plugin}, task {task}"
        );
    }
    let err = Fixture::new()
        .with(|f| {
            f.plugin.pids_limit = 5;
            f.config.pids_limit = 7;
        })
        .err();
    assert_eq!(err.key, "pids_limit");
    assert_eq!(
        err.message,
        "pids_limit cannot be greater than nomad plugin config pids_limit: 5"
    );
}

// ---------------------------------------------------------------- runtime

#[test]
fn runtime_gpu_selection() {
    let gpu = |f: &mut Fixture| {
        f.task
            .device_env
            .insert(NVIDIA_VISIBLE_DEVICES.to_owned(), "GPU_UUID_1".to_owned());
        f.engine.runtimes = strings(&["nvidia", "runc"]);
    };

    // GPU runtime detected: used, also when the task asks for it.
    for task_runtime in ["", "nvidia"] {
        let hc = Fixture::new()
            .with(gpu)
            .with(|f| f.config.runtime = task_runtime.to_owned())
            .host_config();
        assert_eq!(hc.runtime.as_deref(), Some("nvidia"));
    }

    // A renamed GPU runtime.
    let hc = Fixture::new()
        .with(gpu)
        .with(|f| {
            f.plugin.nvidia_runtime = "nvidia-runtime-modified-name".to_owned();
            f.plugin
                .allow_runtimes
                .push("nvidia-runtime-modified-name".to_owned());
            f.engine
                .runtimes
                .push("nvidia-runtime-modified-name".to_owned());
        })
        .host_config();
    assert_eq!(hc.runtime.as_deref(), Some("nvidia-runtime-modified-name"));

    // No GPU devices: no runtime.
    let hc = Fixture::new()
        .with(|f| f.engine.runtimes = strings(&["nvidia", "runc"]))
        .host_config();
    assert_eq!(hc.runtime, None);

    // GPU devices but the engine has no GPU runtime.
    let err = Fixture::new()
        .with(gpu)
        .with(|f| f.engine.runtimes = strings(&["runc"]))
        .err();
    assert_eq!(err.key, "runtime");
    assert_eq!(
        err.message,
        r#"requested docker runtime "nvidia" was not found"#
    );

    // Conflicting task runtime.
    let err = Fixture::new()
        .with(gpu)
        .with(|f| f.config.runtime = "custom".to_owned())
        .err();
    assert_eq!(
        err.message,
        r#"conflicting runtime requests: gpu runtime "nvidia" conflicts with task runtime "custom""#
    );
}

#[test]
fn a_gpu_policy_choice_replaces_the_native_rule_but_not_the_checks() {
    let gpu = |f: &mut Fixture| {
        f.task
            .device_env
            .insert(NVIDIA_VISIBLE_DEVICES.to_owned(), "GPU_UUID_1".to_owned());
        f.engine.runtimes = strings(&["nvidia", "runc", "gvisor"]);
    };
    let choose = |runtime: Option<&'static str>, requests: Vec<GpuDeviceRequest>| {
        move |f: &mut Fixture| {
            f.gpu = Some(GpuChoice {
                policy: "gpu-policy".to_owned(),
                runtime: runtime.map(str::to_owned),
                device_requests: requests.clone(),
            });
        }
    };
    // The policy's runtime wins over the native nvidia_runtime rule, and
    // over the task's own runtime.
    let hc = Fixture::new()
        .with(gpu)
        .with(|f| f.config.runtime = "custom".to_owned())
        .with(choose(Some("runc"), vec![]))
        .host_config();
    assert_eq!(hc.runtime.as_deref(), Some("runc"));
    assert_eq!(hc.device_requests, None);
    // Device requests only (CDI): the task's runtime stays, devices go to
    // the engine.
    let cdi = GpuDeviceRequest {
        driver: "cdi".to_owned(),
        count: 0,
        device_ids: strings(&["nvidia.com/gpu=0"]),
        capabilities: vec![strings(&["gpu"])],
        options: vec![("mode".to_owned(), "all".to_owned())],
    };
    let hc = Fixture::new()
        .with(gpu)
        .with(choose(None, vec![cdi]))
        .host_config();
    assert_eq!(hc.runtime, None);
    assert_eq!(
        hc.device_requests,
        Some(vec![bollard::models::DeviceRequest {
            driver: Some("cdi".to_owned()),
            count: Some(0),
            device_ids: Some(strings(&["nvidia.com/gpu=0"])),
            capabilities: Some(vec![strings(&["gpu"])]),
            options: Some(HashMap::from([("mode".to_owned(), "all".to_owned())])),
        }])
    );
    // Still checked: the engine must have it, allow_runtimes must list it.
    let err = Fixture::new()
        .with(gpu)
        .with(choose(Some("kata"), vec![]))
        .err();
    assert_eq!(
        err.message,
        r#"requested docker runtime "kata" was not found (chosen by GPU runtime policy gpu-policy)"#
    );
    let err = Fixture::new()
        .with(gpu)
        .with(choose(Some("gvisor"), vec![]))
        .err();
    assert_eq!(
        err.message,
        r#"requested runtime "gvisor" is not allowed (chosen by GPU runtime policy gpu-policy)"#
    );
}

#[test]
fn runtime_allow_list() {
    for runtime in ["", "runc", "custom"] {
        let hc = Fixture::new()
            .with(|f| {
                f.plugin.allow_runtimes = strings(&["runc", "custom"]);
                f.config.runtime = runtime.to_owned();
            })
            .host_config();
        assert_eq!(hc.runtime.as_deref().unwrap_or(""), runtime);
    }
    let err = Fixture::new()
        .with(|f| f.config.runtime = "denied".to_owned())
        .err();
    assert_eq!(err.key, "runtime");
    assert_eq!(err.message, r#"requested runtime "denied" is not allowed"#);
}

#[test]
fn isolation_is_refused_off_windows() {
    let err = Fixture::new()
        .with(|f| f.config.isolation = "hyperv".to_owned())
        .err();
    assert_eq!(err.key, "isolation");
    assert_eq!(
        err.message,
        format!(
            "Failed to create container configuration, cannot use isolation mode \"hyperv\" on {}",
            std::env::consts::OS
        )
    );
}

// ---------------------------------------------------------------- config

#[test]
fn create_container_config_basics() {
    let spec = Fixture::new()
        .with(|f| f.config.storage_opt = map(&[("size", "120G")]))
        .ok();
    assert_eq!(spec.name, format!("redis-demo-{ALLOC}"));
    assert_eq!(spec.body.image.as_deref(), Some("org/repo:0.1"));
    let hc = spec.body.host_config.expect("host config");
    assert_eq!(
        hc.storage_opt,
        Some(HashMap::from([("size".to_owned(), "120G".to_owned())]))
    );
    assert_eq!(hc.network_mode.as_deref(), Some("default"));
    assert_eq!(hc.privileged, Some(false));
    assert_eq!(hc.readonly_rootfs, Some(false));
    assert_eq!(hc.cpu_shares, Some(512));
    assert_eq!(hc.cap_add, Some(vec![]));
    assert_eq!(hc.cap_drop, Some(strings(&["net_raw"])));
    assert!(spec.files.is_empty());
    assert!(spec.warnings.is_empty());
    assert!(spec.body.networking_config.is_none());
    assert!(spec.body.healthcheck.is_none());
}

#[test]
fn container_name_replaces_slashes() {
    let mut task = TaskRequest {
        name: "web/api".to_owned(),
        alloc_id: "abc".to_owned(),
        ..TaskRequest::default()
    };
    assert_eq!(container_name(&task), "web_api-abc");
    task.name = "plain".to_owned();
    assert_eq!(container_name(&task), "plain-abc");
}

#[test]
fn config_fields_pass_through() {
    let spec = Fixture::new()
        .with(|f| {
            f.task.user = "random-user-1".to_owned();
            f.config.entrypoint = strings(&["/bin/sh", "-c"]);
            f.config.hostname = "box".to_owned();
            f.config.tty = true;
            f.config.interactive = true;
            f.config.work_dir = "/some/path".to_owned();
            f.config.healthchecks.disable = true;
        })
        .ok();
    let body = spec.body;
    assert_eq!(body.user.as_deref(), Some("random-user-1"));
    assert_eq!(body.entrypoint, Some(strings(&["/bin/sh", "-c"])));
    assert_eq!(body.hostname.as_deref(), Some("box"));
    assert_eq!(body.tty, Some(true));
    assert_eq!(body.open_stdin, Some(true));
    assert_eq!(body.working_dir.as_deref(), Some("/some/path"));
    assert_eq!(
        body.healthcheck.and_then(|h| h.test),
        Some(strings(&["NONE"]))
    );
}

#[test]
fn command_and_args() {
    // (command, args, expected Cmd)
    let cases: [(&str, Strs, Option<Strs>); 4] = [
        ("", &[], None),
        ("", &["-c", "sleep 1"], Some(&["-c", "sleep 1"])),
        ("/bin/sh", &[], Some(&["/bin/sh"])),
        (
            "/bin/sh",
            &["-c", "sleep 1"],
            Some(&["/bin/sh", "-c", "sleep 1"]),
        ),
    ];
    for (command, args, expected) in cases {
        let body = Fixture::new()
            .with(|f| {
                f.config.command = command.to_owned();
                f.config.args = strings(args);
            })
            .ok()
            .body;
        assert_eq!(body.cmd, expected.map(strings), "{command:?} {args:?}");
    }

    let err = Fixture::new()
        .with(|f| f.config.command = "   ".to_owned())
        .err();
    assert_eq!(err.key, "command");
    assert_eq!(err.message, r#"command empty: "   ""#);
    let err = Fixture::new()
        .with(|f| f.config.command = " sh\t".to_owned())
        .err();
    assert_eq!(
        err.message,
        r#"command contains extra white space: " sh\t""#
    );
}

#[test]
fn env_is_sorted_with_port_map_variables() {
    let body = Fixture::new()
        .with(|f| {
            f.config.port_map = BTreeMap::from([
                ("main".to_owned(), 8080),
                ("REDIS".to_owned(), 6379),
                ("my-port".to_owned(), 9000),
                ("ü".to_owned(), 1),
            ]);
        })
        .ok()
        .body;
    assert_eq!(
        body.env,
        Some(strings(&[
            "NOMAD_ALLOC_DIR=/alloc",
            "NOMAD_PORT_REDIS=6379",
            "NOMAD_PORT___=1",
            "NOMAD_PORT_main=8080",
            "NOMAD_PORT_my_port=9000",
            "NOMAD_SECRETS_DIR=/secrets",
            "NOMAD_TASK_DIR=/local",
            "test=value",
        ]))
    );
    assert_eq!(super::ports::port_env_name("a.b_9"), "NOMAD_PORT_a.b_9");
}

// ---------------------------------------------------------------- labels

#[test]
fn labels_cannot_override_alloc_id() {
    let labels = Fixture::new()
        .with(|f| {
            f.config.labels = map(&[("user_label", "user_value"), (ALLOC_ID_LABEL, "bad_value")]);
        })
        .ok()
        .body
        .labels
        .expect("labels");
    assert_eq!(
        labels,
        HashMap::from([
            ("user_label".to_owned(), "user_value".to_owned()),
            (ALLOC_ID_LABEL.to_owned(), ALLOC.to_owned()),
        ])
    );
}

#[test]
fn extra_labels_globs() {
    let labels = Fixture::new()
        .with(|f| f.plugin.extra_labels = strings(&["task*", "job_name"]))
        .ok()
        .body
        .labels
        .expect("labels");
    assert_eq!(
        labels,
        HashMap::from([
            (ALLOC_ID_LABEL.to_owned(), ALLOC.to_owned()),
            (
                "com.hashicorp.nomad.task_name".to_owned(),
                "redis-demo".to_owned()
            ),
            (
                "com.hashicorp.nomad.task_group_name".to_owned(),
                "redis-group".to_owned()
            ),
            (
                "com.hashicorp.nomad.job_name".to_owned(),
                "redis-job".to_owned()
            ),
        ])
    );

    let fixture = Fixture::new();
    let all = nomad_labels(&fixture.task, &strings(&["*"]));
    assert_eq!(all.len(), 8, "parent_job_id is skipped when empty: {all:?}");
    assert!(!all.contains_key("com.hashicorp.nomad.parent_job_id"));

    let mut task = fixture.task.clone();
    task.parent_job_id = "parent".to_owned();
    let labels = nomad_labels(&task, &strings(&["parent_job_id", "node_*", "namespace"]));
    assert_eq!(
        labels,
        BTreeMap::from([
            (ALLOC_ID_LABEL.to_owned(), ALLOC.to_owned()),
            (
                "com.hashicorp.nomad.namespace".to_owned(),
                "default".to_owned()
            ),
            (
                "com.hashicorp.nomad.node_id".to_owned(),
                "node-id-1".to_owned()
            ),
            (
                "com.hashicorp.nomad.node_name".to_owned(),
                "node-1".to_owned()
            ),
            (
                "com.hashicorp.nomad.parent_job_id".to_owned(),
                "parent".to_owned()
            ),
        ])
    );
    assert_eq!(nomad_labels(&task, &[]).len(), 1);
}

// ---------------------------------------------------------------- logging

#[test]
fn logging_precedence() {
    // (type, driver, config, expected type, expected config)
    type Conf = Option<BTreeMap<String, String>>;
    let rotation = map(&[("max-file", "3"), ("max-size", "10m")]);
    let cases: [(&str, &str, Conf, Option<&str>, Conf); 6] = [
        ("fluentd", "", None, Some("fluentd"), None),
        ("", "fluentd", None, Some("fluentd"), None),
        ("json-file", "fluentd", None, Some("json-file"), None),
        ("", "", Some(rotation.clone()), None, Some(rotation.clone())),
        (
            "",
            "",
            None,
            Some("json-file"),
            Some(map(&[("max-file", "2"), ("max-size", "2m")])),
        ),
        ("", "", Some(BTreeMap::new()), None, Some(BTreeMap::new())),
    ];
    for (ty, driver, config, expected_type, expected_config) in cases {
        let log = Fixture::new()
            .with(|f| {
                f.config.logging = TaskLogging {
                    r#type: ty.to_owned(),
                    driver: driver.to_owned(),
                    config: config.clone(),
                };
            })
            .host_config()
            .log_config
            .expect("log config");
        assert_eq!(
            log.typ.as_deref(),
            expected_type,
            "{ty:?} {driver:?} {config:?}"
        );
        assert_eq!(
            log.config,
            expected_config.map(|c| c.into_iter().collect::<HashMap<_, _>>()),
            "{ty:?} {driver:?}"
        );
    }

    // The plugin's logging block (gelf) is the default.
    let log = Fixture::new()
        .with(|f| {
            f.plugin.logging.r#type = "gelf".to_owned();
            f.plugin.logging.config = map(&[("gelf-address", "udp://1.2.3.4:12201")]);
        })
        .host_config()
        .log_config
        .expect("log config");
    assert_eq!(log.typ.as_deref(), Some("gelf"));
    assert_eq!(
        log.config,
        Some(HashMap::from([(
            "gelf-address".to_owned(),
            "udp://1.2.3.4:12201".to_owned()
        )]))
    );
}

// ---------------------------------------------------------------- binds

#[test]
fn default_binds() {
    let hc = Fixture::new().host_config();
    assert_eq!(
        hc.binds,
        Some(vec![
            format!("{ALLOC_DIR}/alloc:/alloc"),
            format!("{TASK_DIR}/local:/local"),
            format!("{TASK_DIR}/secrets:/secrets"),
            format!("{ALLOC_DIR}/alloc/logs:/alloc/logs:ro"),
        ])
    );
}

#[test]
fn mounts_and_binds_with_selinux_label() {
    // CreateContainerConfig_Mounts: relative alloc dir, label "z".
    let fixture = Fixture::new().with(|f| {
        f.task.alloc_dir = PathBuf::new();
        f.plugin.volumes.enabled = true;
        f.plugin.volumes.selinuxlabel = "z".to_owned();
        f.config.mount = vec![
            TaskMount {
                r#type: "bind".to_owned(),
                target: "/map-bind-target".to_owned(),
                source: "/map-source".to_owned(),
                ..TaskMount::default()
            },
            TaskMount {
                r#type: "tmpfs".to_owned(),
                target: "/map-tmpfs-target".to_owned(),
                ..TaskMount::default()
            },
        ];
        f.config.mounts = vec![
            TaskMount {
                r#type: "bind".to_owned(),
                target: "/list-bind-target".to_owned(),
                source: "/list-source".to_owned(),
                ..TaskMount::default()
            },
            TaskMount {
                r#type: "tmpfs".to_owned(),
                target: "/list-tmpfs-target".to_owned(),
                ..TaskMount::default()
            },
        ];
        f.config.volumes = strings(&["/etc/ssl/certs:/etc/ssl/certs:ro", "/var/www:/srv/www"]);
    });
    let hc = fixture.host_config();
    let tmpfs = |target: &str| Mount {
        target: Some(target.to_owned()),
        typ: Some(MountType::TMPFS),
        read_only: Some(false),
        tmpfs_options: Some(MountTmpfsOptions::default()),
        ..Mount::default()
    };
    assert_eq!(
        hc.mounts,
        Some(vec![
            bind("/map-bind-target", "/map-source", None),
            tmpfs("/map-tmpfs-target"),
            bind("/list-bind-target", "/list-source", None),
            tmpfs("/list-tmpfs-target"),
        ])
    );
    assert_eq!(
        hc.binds,
        Some(strings(&[
            "alloc:/alloc:z",
            "redis-demo/local:/local:z",
            "redis-demo/secrets:/secrets:z",
            "alloc/logs:/alloc/logs:ro,z",
            "/etc/ssl/certs:/etc/ssl/certs:ro,z",
            "/var/www:/srv/www:z",
        ]))
    );
}

#[test]
fn volumes_honor_volumes_enabled_flag() {
    let alloc_dir = "/tmp/x/long-alloc-id";
    // (name, requires volumes, volume driver, volume, expected bind)
    let cases = [
        (
            "basic plugin",
            true,
            "nfs",
            "test-path:/tmp/taskpath",
            "test-path:/tmp/taskpath",
        ),
        (
            "absolute default driver",
            true,
            "",
            "/abs/test-path:/tmp/taskpath",
            "/abs/test-path:/tmp/taskpath",
        ),
        (
            "absolute local driver",
            true,
            "local",
            "/abs/test-path:/tmp/taskpath",
            "/abs/test-path:/tmp/taskpath",
        ),
        (
            "relative default driver",
            false,
            "",
            "test-path:/tmp/taskpath",
            "/tmp/x/long-alloc-id/task-name/test-path:/tmp/taskpath",
        ),
        (
            "named volume local driver",
            true,
            "local",
            "test-path:/tmp/taskpath",
            "test-path:/tmp/taskpath",
        ),
        (
            "relative outside task-dir default driver",
            false,
            "",
            "../test-path:/tmp/taskpath",
            "/tmp/x/long-alloc-id/test-path:/tmp/taskpath",
        ),
        (
            "relative outside alloc-dir default driver",
            true,
            "",
            "../../test-path:/tmp/taskpath",
            "/tmp/x/test-path:/tmp/taskpath",
        ),
        (
            "clean path local driver",
            true,
            "local",
            "/tmp/nomad/../test-path:/tmp/taskpath",
            "/tmp/test-path:/tmp/taskpath",
        ),
        (
            "absolute inside alloc dir",
            false,
            "",
            "/tmp/x/long-alloc-id/alloc/data:/data:rw",
            "/tmp/x/long-alloc-id/alloc/data:/data:rw",
        ),
        (
            "sibling alloc dir with a common prefix",
            true,
            "",
            "/tmp/x/long-alloc-id2/data:/data",
            "/tmp/x/long-alloc-id2/data:/data",
        ),
    ];
    for enabled in [true, false] {
        for (name, requires_volumes, driver, volume, expected) in cases {
            let fixture = Fixture::new().with(|f| {
                f.task.alloc_dir = PathBuf::from(alloc_dir);
                f.task.name = "task-name".to_owned();
                f.plugin.volumes.enabled = enabled;
                f.config.volume_driver = driver.to_owned();
                f.config.volumes = vec![volume.to_owned()];
            });
            if enabled || !requires_volumes {
                let hc = fixture.host_config();
                let binds = hc.binds.expect("binds");
                assert_eq!(binds.len(), 5, "{name}");
                assert_eq!(binds[4], expected, "{name} (enabled: {enabled})");
                assert_eq!(hc.volume_driver.as_deref().unwrap_or(""), driver, "{name}");
            } else {
                let err = fixture.err();
                assert!(
                    err.message.starts_with("volumes are not enabled"),
                    "{name}: {err}"
                );
            }
        }
    }

    let err = Fixture::new()
        .with(|f| {
            f.config.volume_driver = "flocker".to_owned();
            f.config.volumes = strings(&["fake_flocker_vol:/data"]);
        })
        .err();
    assert_eq!(err.key, "volume_driver");
    assert_eq!(
        err.message,
        r#"volumes are not enabled; cannot use volume driver "flocker""#
    );

    let err = Fixture::new()
        .with(|f| f.config.volumes = strings(&["/etc/passwd:/etc/passwd"]))
        .err();
    assert_eq!(err.key, "volumes");
    assert_eq!(
        err.message,
        r#"volumes are not enabled; cannot mount host path: "/etc/passwd:/etc/passwd""#
    );
}

#[test]
fn volume_spec_must_have_destination() {
    let err = Fixture::new()
        .with(|f| f.config.volumes = strings(&["just-a-path"]))
        .err();
    assert_eq!(err.key, "volumes");
    assert_eq!(
        err.message,
        r#"invalid docker volume "just-a-path": not <src>:<destination> format"#
    );
}

// ---------------------------------------------------------------- mounts

#[test]
fn mounts_serialization() {
    let alloc_dir = "/tmp/x/long-alloc-id";
    let task_mount = |ty: &str, source: &str| TaskMount {
        r#type: ty.to_owned(),
        target: "/nomad".to_owned(),
        source: source.to_owned(),
        ..TaskMount::default()
    };
    let basic_volume = TaskMount {
        readonly: true,
        ..task_mount("volume", "test")
    };
    let mut tmpfs = task_mount("tmpfs", "");
    tmpfs.tmpfs_options.size = 321;
    tmpfs.tmpfs_options.mode = 0o666;

    // (name, requires volumes, mount, expected)
    let cases = [
        (
            "basic volume",
            true,
            basic_volume,
            Mount {
                target: Some("/nomad".to_owned()),
                source: Some("test".to_owned()),
                typ: Some(MountType::VOLUME),
                read_only: Some(true),
                volume_options: Some(MountVolumeOptions {
                    driver_config: Some(MountVolumeOptionsDriverConfig::default()),
                    ..MountVolumeOptions::default()
                }),
                ..Mount::default()
            },
        ),
        (
            "basic bind",
            false,
            task_mount("bind", "test"),
            bind("/nomad", "/tmp/x/long-alloc-id/task-name/test", None),
        ),
        (
            "basic absolute bind",
            true,
            task_mount("bind", "/tmp/test"),
            bind("/nomad", "/tmp/test", None),
        ),
        (
            "bind relative outside",
            true,
            task_mount("bind", "../../test"),
            bind("/nomad", "/tmp/x/test", None),
        ),
        (
            "basic tmpfs",
            false,
            tmpfs,
            Mount {
                target: Some("/nomad".to_owned()),
                typ: Some(MountType::TMPFS),
                read_only: Some(false),
                tmpfs_options: Some(MountTmpfsOptions {
                    size_bytes: Some(321),
                    mode: Some(0o666),
                    ..MountTmpfsOptions::default()
                }),
                ..Mount::default()
            },
        ),
    ];
    for enabled in [true, false] {
        for (name, requires_volumes, mount, expected) in cases.clone() {
            let fixture = Fixture::new().with(|f| {
                f.task.alloc_dir = PathBuf::from(alloc_dir);
                f.task.name = "task-name".to_owned();
                f.plugin.volumes.enabled = enabled;
                f.config.mount = vec![mount];
            });
            if enabled || !requires_volumes {
                assert_eq!(fixture.host_config().mounts, Some(vec![expected]), "{name}");
            } else {
                let err = fixture.err();
                assert_eq!(err.key, "mount", "{name}");
                assert!(
                    err.message.starts_with("volumes are not enabled"),
                    "{name}: {err}"
                );
            }
        }
    }
}

#[test]
fn mount_errors() {
    let with_mount = |m: TaskMount| {
        Fixture::new().with(|f| {
            f.plugin.volumes.enabled = true;
            f.config.mounts = vec![m];
        })
    };
    let err = with_mount(TaskMount {
        r#type: "tmpfs".to_owned(),
        source: "/x".to_owned(),
        ..TaskMount::default()
    })
    .err();
    assert_eq!(err.key, "mounts");
    assert_eq!(err.message, r#"invalid source, must be "" for tmpfs"#);

    let err = with_mount(TaskMount {
        r#type: "npipe".to_owned(),
        ..TaskMount::default()
    })
    .err();
    assert_eq!(
        err.message,
        r#"invalid mount type, must be "bind", "volume", "tmpfs": "npipe""#
    );

    let mut m = TaskMount {
        r#type: "bind".to_owned(),
        source: "/x".to_owned(),
        ..TaskMount::default()
    };
    m.bind_options.propagation = "sideways".to_owned();
    let err = with_mount(m.clone()).err();
    assert_eq!(
        err.message,
        r#"invalid mount config for type "bind": invalid propagation mode: sideways"#
    );
    m.bind_options.propagation = "rshared".to_owned();
    let mounts = with_mount(m).host_config().mounts.expect("mounts");
    assert_eq!(
        mounts[0].bind_options.as_ref().and_then(|b| b.propagation),
        Some(MountBindOptionsPropagationEnum::RSHARED)
    );

    // Volume mounts need volumes enabled; the message names the source.
    let err = Fixture::new()
        .with(|f| {
            f.config.mount = vec![TaskMount {
                source: "data".to_owned(),
                ..TaskMount::default()
            }];
        })
        .err();
    assert_eq!(
        err.message,
        r#"volumes are not enabled; cannot mount volume: "data""#
    );

    // A bind outside the alloc dir names the expanded source.
    let err = Fixture::new()
        .with(|f| {
            f.config.mount = vec![TaskMount {
                r#type: "bind".to_owned(),
                source: "../../../etc".to_owned(),
                ..TaskMount::default()
            }];
        })
        .err();
    assert_eq!(
        err.message,
        r#"volumes are not enabled; cannot mount host path: "/nomad/etc""#
    );

    // An explicit empty type is a volume.
    let mounts = with_mount(TaskMount {
        r#type: String::new(),
        source: "vol".to_owned(),
        ..TaskMount::default()
    })
    .host_config()
    .mounts
    .expect("mounts");
    assert_eq!(mounts[0].typ, Some(MountType::VOLUME));
}

#[test]
fn volume_mount_options() {
    let mut m = TaskMount {
        target: "/nomad".to_owned(),
        source: "test".to_owned(),
        readonly: true,
        ..TaskMount::default()
    };
    m.volume_options.no_copy = true;
    m.volume_options.labels = map(&[("foo", "bar")]);
    m.volume_options.driver_config.name = "local".to_owned();
    m.volume_options.driver_config.options = map(&[("type", "nfs")]);
    let mounts = Fixture::new()
        .with(|f| {
            f.plugin.volumes.enabled = true;
            f.config.mount = vec![m];
        })
        .host_config()
        .mounts
        .expect("mounts");
    assert_eq!(
        mounts[0].volume_options,
        Some(MountVolumeOptions {
            no_copy: Some(true),
            labels: Some(HashMap::from([("foo".to_owned(), "bar".to_owned())])),
            driver_config: Some(MountVolumeOptionsDriverConfig {
                name: Some("local".to_owned()),
                options: Some(HashMap::from([("type".to_owned(), "nfs".to_owned())])),
            }),
            ..MountVolumeOptions::default()
        })
    );
}

#[test]
fn nomad_mounts_and_devices_come_after_the_tasks() {
    // CreateContainerConfig_MountsCombined.
    let hc = Fixture::new()
        .with(|f| {
            f.plugin.volumes.enabled = true;
            f.task.devices = vec![DeviceRequest {
                host_path: "/dev/fuse".to_owned(),
                task_path: "/container/dev/task-fuse".to_owned(),
                cgroup_permissions: "rw".to_owned(),
            }];
            f.task.mounts = vec![MountRequest {
                host_path: "/tmp/task-mount".to_owned(),
                task_path: "/container/tmp/task-mount".to_owned(),
                readonly: true,
                ..MountRequest::default()
            }];
            f.config.devices = vec![Device {
                host_path: "/dev/stdout".to_owned(),
                container_path: "/container/dev/cfg-stdout".to_owned(),
                cgroup_permissions: "rwm".to_owned(),
            }];
            f.config.mount = vec![TaskMount {
                r#type: "bind".to_owned(),
                source: "/tmp/cfg-mount".to_owned(),
                target: "/container/tmp/cfg-mount".to_owned(),
                ..TaskMount::default()
            }];
        })
        .host_config();
    let nomad = Mount {
        read_only: Some(true),
        ..bind(
            "/container/tmp/task-mount",
            "/tmp/task-mount",
            Some(MountBindOptionsPropagationEnum::RPRIVATE),
        )
    };
    assert_eq!(
        hc.mounts,
        Some(vec![
            bind("/container/tmp/cfg-mount", "/tmp/cfg-mount", None),
            nomad
        ])
    );
    let device = |host: &str, container: &str, perms: &str| DeviceMapping {
        path_on_host: Some(host.to_owned()),
        path_in_container: Some(container.to_owned()),
        cgroup_permissions: Some(perms.to_owned()),
    };
    assert_eq!(
        hc.devices,
        Some(vec![
            device("/dev/stdout", "/container/dev/cfg-stdout", "rwm"),
            device("/dev/fuse", "/container/dev/task-fuse", "rw"),
        ])
    );
}

#[test]
fn nomad_mount_propagation() {
    use MountBindOptionsPropagationEnum as P;
    let cases = [
        ("", Some(P::RPRIVATE)),
        ("private", Some(P::RPRIVATE)),
        ("host-to-task", Some(P::RSLAVE)),
        ("bidirectional", Some(P::RSHARED)),
        ("unknown", None),
    ];
    for (mode, expected) in cases {
        let mount = super::mounts::nomad_mount(&MountRequest {
            task_path: "/t".to_owned(),
            host_path: "/h".to_owned(),
            propagation_mode: mode.to_owned(),
            ..MountRequest::default()
        });
        assert_eq!(
            mount.bind_options.and_then(|b| b.propagation),
            expected,
            "{mode:?}"
        );
    }
}

#[test]
fn devices_defaults_and_errors() {
    let hc = Fixture::new()
        .with(|f| {
            f.config.devices = vec![Device {
                host_path: "/dev/random".to_owned(),
                ..Device::default()
            }];
        })
        .host_config();
    assert_eq!(
        hc.devices,
        Some(vec![DeviceMapping {
            path_on_host: Some("/dev/random".to_owned()),
            path_in_container: Some("/dev/random".to_owned()),
            cgroup_permissions: Some("rwm".to_owned()),
        }])
    );

    let err = Fixture::new()
        .with(|f| f.config.devices = vec![Device::default()])
        .err();
    assert_eq!(err.key, "devices");
    assert_eq!(
        err.message,
        "host path must be set in configuration for devices"
    );

    let err = Fixture::new()
        .with(|f| {
            f.config.devices = vec![Device {
                host_path: "/dev/sda1".to_owned(),
                cgroup_permissions: "rxb".to_owned(),
                ..Device::default()
            }];
        })
        .err();
    assert_eq!(err.message, r#"invalid cgroup permission string: "rxb""#);
}

// ---------------------------------------------------------------- hosts, dns

fn group_network(f: &mut Fixture) {
    f.task.network_isolation = Some(NetworkIsolation {
        mode: NetworkMode::Group,
        path: "/var/run/docker/netns/abc".to_owned(),
        labels: BTreeMap::from([(SANDBOX_CONTAINER_LABEL.to_owned(), "pause123".to_owned())]),
        hosts: Some(("xyzzy".to_owned(), "192.168.1.1".to_owned())),
    });
}

const HOSTS_HEAD: &str = "# this file was generated by Nomad
127.0.0.1 localhost
::1 localhost
::1 ip6-localhost ip6-loopback
fe00::0 ip6-localnet
ff00::0 ip6-mcastprefix
ff02::1 ip6-allnodes
ff02::2 ip6-allrouters
ff02::3 ip6-allhosts

# this entry is the IP address and hostname of the allocation
# shared with tasks in the task group's network
192.168.1.1 xyzzy
";

#[test]
fn etc_hosts_for_group_network() {
    let spec = Fixture::new()
        .with(group_network)
        .with(|f| {
            f.config.extra_hosts = strings(&[
                "apple:192.168.1.2",
                "banana:2001:0db8:85a3:0000:0000:8a2e:0370:7334",
            ]);
        })
        .ok();
    let path = PathBuf::from(format!("{ALLOC_DIR}/hosts"));
    let expected = format!(
        "{HOSTS_HEAD}\n# these entries are extra hosts added by the task config\n\
         192.168.1.2 apple\n\
         2001:0db8:85a3:0000:0000:8a2e:0370:7334 banana\n"
    );
    assert_eq!(spec.files, vec![(path.clone(), expected)]);
    let hc = spec.body.host_config.expect("host config");
    assert_eq!(hc.extra_hosts, None, "cleared when /etc/hosts is mounted");
    assert_eq!(
        hc.mounts,
        Some(vec![bind(
            "/etc/hosts",
            &path.to_string_lossy(),
            Some(MountBindOptionsPropagationEnum::PRIVATE)
        )])
    );
    assert_eq!(hc.network_mode.as_deref(), Some("container:pause123"));

    // Without extra hosts the file ends after the allocation's entry.
    let spec = Fixture::new().with(group_network).ok();
    assert_eq!(spec.files[0].1, HOSTS_HEAD);
}

#[test]
fn etc_hosts_only_when_needed() {
    let cases: [(&str, Change); 4] = [
        ("no isolation", |_| {}),
        ("network_mode set", |f| {
            group_network(f);
            f.config.network_mode = "bridge".to_owned();
        }),
        ("not a group network", |f| {
            group_network(f);
            if let Some(iso) = &mut f.task.network_isolation {
                iso.mode = NetworkMode::Task;
            }
        }),
        ("no hosts entry", |f| {
            group_network(f);
            if let Some(iso) = &mut f.task.network_isolation {
                iso.hosts = Some(("xyzzy".to_owned(), String::new()));
            }
        }),
    ];
    for (name, change) in cases {
        let spec = Fixture::new()
            .with(change)
            .with(|f| f.config.extra_hosts = strings(&["apple:192.168.1.2"]))
            .ok();
        assert!(spec.files.is_empty(), "{name}");
        let hc = spec.body.host_config.expect("host config");
        assert_eq!(
            hc.extra_hosts,
            Some(strings(&["apple:192.168.1.2"])),
            "{name}"
        );
    }
}

#[test]
fn etc_hosts_errors() {
    let cases = [
        (
            "apple192.168.1.2",
            r#"failed to build mount for /etc/hosts: invalid hosts entry "apple192.168.1.2""#,
        ),
        (
            "apple:192.168.1.256",
            r#"failed to build mount for /etc/hosts: invalid IP address "apple:192.168.1.256""#,
        ),
    ];
    for (entry, message) in cases {
        let err = Fixture::new()
            .with(group_network)
            .with(|f| f.config.extra_hosts = vec![entry.to_owned()])
            .err();
        assert_eq!(err.key, "extra_hosts");
        assert_eq!(err.message, message);
    }
}

const HOST_RESOLV: &str = "# host resolver\nnameserver 10.0.0.2\nnameserver bogus\n\
                           search example.com corp\noptions rotate\noptions timeout:1\n";

fn with_dns(servers: &[&str], searches: &[&str], options: &[&str]) -> Fixture {
    Fixture::new()
        .with(|f| {
            f.task.dns = Some(DnsConfig {
                servers: strings(servers),
                searches: strings(searches),
                options: strings(options),
            });
        })
        .file("/etc/resolv.conf", HOST_RESOLV)
}

#[test]
fn resolv_conf_generation() {
    // (servers, searches, options, expected)
    let cases: [(Strs, Strs, Strs, &str); 5] = [
        (
            &["1.1.1.1", "1.0.0.1"],
            &["local.test", "node.consul"],
            &["ndots:2", "edns0"],
            "nameserver 1.1.1.1\nnameserver 1.0.0.1\nsearch local.test node.consul\noptions ndots:2 edns0\n",
        ),
        (
            &["1.1.1.1", "1.0.0.1"],
            &[],
            &[],
            "nameserver 1.1.1.1\nnameserver 1.0.0.1\nsearch example.com corp\noptions rotate timeout:1\n",
        ),
        (
            &[],
            &["a.test", "."],
            &[],
            "nameserver 10.0.0.2\nsearch a.test\noptions rotate timeout:1\n",
        ),
        (
            &["2001:DB8::1"],
            &["."],
            &["edns0"],
            "nameserver 2001:db8::1\noptions edns0\n",
        ),
        (&[], &[], &[], HOST_RESOLV),
    ];
    for (servers, searches, options, expected) in cases {
        let spec = with_dns(servers, searches, options)
            .with(|f| f.config.dns_servers = strings(&["9.9.9.9"]))
            .ok();
        let path = PathBuf::from(format!("{TASK_DIR}/resolv.conf"));
        assert_eq!(
            spec.files,
            vec![(path.clone(), expected.to_owned())],
            "{servers:?} {searches:?} {options:?}"
        );
        let hc = spec.body.host_config.expect("host config");
        let mut mount = bind(
            "/etc/resolv.conf",
            &path.to_string_lossy(),
            Some(MountBindOptionsPropagationEnum::PRIVATE),
        );
        mount.read_only = Some(true);
        assert_eq!(hc.mounts, Some(vec![mount]));
        assert_eq!(hc.dns, None, "task dns_servers give way to the group's DNS");
    }
}

#[test]
fn resolv_conf_follows_systemd_resolved() {
    let fixture = Fixture::new()
        .with(|f| {
            f.task.dns = Some(DnsConfig {
                searches: strings(&["svc"]),
                ..DnsConfig::default()
            });
        })
        .file(
            "/etc/resolv.conf",
            "nameserver 127.0.0.53\noptions edns0 trust-ad\n",
        )
        .file(
            "/run/systemd/resolve/resolv.conf",
            "nameserver 192.168.1.1\nsearch lan\n",
        );
    assert_eq!(
        fixture.ok().files[0].1,
        "nameserver 192.168.1.1\nsearch svc\n"
    );
    let copied = fixture
        .with(|f| f.task.dns = Some(DnsConfig::default()))
        .ok();
    assert_eq!(copied.files[0].1, "nameserver 192.168.1.1\nsearch lan\n");
}

#[test]
fn resolv_conf_errors() {
    let err = with_dns(&["nope"], &[], &[]).err();
    assert_eq!(err.key, "");
    assert_eq!(
        err.message,
        r#"failed to build mount for resolv.conf: bad nameserver address: ParseAddr("nope"): unable to parse IP"#
    );
    let err = Fixture::new()
        .with(|f| f.task.dns = Some(DnsConfig::default()))
        .err();
    assert!(
        err.message
            .starts_with("failed to build mount for resolv.conf: open /etc/resolv.conf:"),
        "{err}"
    );
}

#[test]
fn task_dns_settings_without_group_dns() {
    let spec = Fixture::new()
        .with(|f| {
            f.config.dns_servers = strings(&["8.8.8.8", "bogus", "2001:4860:4860::8888"]);
            f.config.dns_search_domains = strings(&["example.com"]);
            f.config.dns_options = strings(&["ndots:1"]);
        })
        .ok();
    let hc = spec.body.host_config.expect("host config");
    assert_eq!(hc.dns, Some(strings(&["8.8.8.8", "2001:4860:4860::8888"])));
    assert_eq!(hc.dns_search, Some(strings(&["example.com"])));
    assert_eq!(hc.dns_options, Some(strings(&["ndots:1"])));
    assert_eq!(spec.warnings.len(), 1, "{:?}", spec.warnings);
    assert!(spec.warnings[0].contains("bogus"));
}

// ---------------------------------------------------------------- namespaces

#[test]
fn allowed_modes() {
    type Modes = fn(&mut PluginConfig);
    // (field, value, allow_privileged, allowed modes, expected error)
    let cases: [(&str, &str, bool, Modes, Option<&str>); 13] = [
        (
            "pid_mode",
            "host",
            false,
            |_| {},
            Some(r#"cannot apply "pid_mode" configuration"#),
        ),
        (
            "ipc_mode",
            "host",
            false,
            |_| {},
            Some(r#"cannot apply "ipc_mode" configuration"#),
        ),
        (
            "userns_mode",
            "host",
            false,
            |_| {},
            Some(r#"cannot apply "userns_mode" configuration"#),
        ),
        (
            "uts_mode",
            "host",
            false,
            |_| {},
            Some(r#"cannot apply "uts_mode" configuration"#),
        ),
        ("pid_mode", "host", true, |_| {}, None),
        ("ipc_mode", "host", true, |_| {}, None),
        ("userns_mode", "host", true, |_| {}, None),
        ("uts_mode", "host", true, |_| {}, None),
        (
            "pid_mode",
            "host",
            false,
            |p| p.allowed_modes.pid = strings(&["host"]),
            None,
        ),
        (
            "ipc_mode",
            "container:OtherNamedNamespace",
            false,
            |p| p.allowed_modes.ipc = strings(&["container:*"]),
            None,
        ),
        (
            "userns_mode",
            "host",
            false,
            |p| p.allowed_modes.userns = strings(&["host"]),
            None,
        ),
        (
            "uts_mode",
            "host",
            false,
            |p| p.allowed_modes.uts = strings(&["host"]),
            None,
        ),
        (
            "ipc_mode",
            "container:093dede90-3d99d",
            false,
            |p| p.allowed_modes.ipc = strings(&["container:*desired"]),
            Some(r#"cannot apply "ipc_mode" configuration"#),
        ),
    ];
    for (field, value, privileged, modes, expected) in cases {
        let fixture = Fixture::new().with(|f| {
            f.plugin.allow_privileged = privileged;
            modes(&mut f.plugin);
            let slot = match field {
                "pid_mode" => &mut f.config.pid_mode,
                "ipc_mode" => &mut f.config.ipc_mode,
                "userns_mode" => &mut f.config.userns_mode,
                _ => &mut f.config.uts_mode,
            };
            *slot = value.to_owned();
        });
        match expected {
            Some(message) => {
                let err = fixture.err();
                assert_eq!(err.key, field);
                assert_eq!(err.message, message);
            }
            None => {
                let hc = fixture.host_config();
                let got = match field {
                    "pid_mode" => hc.pid_mode,
                    "ipc_mode" => hc.ipc_mode,
                    "userns_mode" => hc.userns_mode,
                    _ => hc.uts_mode,
                };
                assert_eq!(got.as_deref(), Some(value), "{field}");
            }
        }
    }
}

#[test]
fn validate_namespace_cases() {
    use super::security::validate_namespace;
    assert!(validate_namespace(&[], false, "pid_mode", "container").is_err());
    assert!(validate_namespace(&[], true, "pid_mode", "host").is_ok());
    assert!(
        validate_namespace(
            &strings(&["container:*"]),
            true,
            "pid_mode",
            "container:093dede90-wer323339-3d99d"
        )
        .is_ok()
    );
    assert!(
        validate_namespace(
            &strings(&["container:*"]),
            false,
            "pid_mode",
            "container:093dede90"
        )
        .is_ok()
    );
    assert!(validate_namespace(&[], false, "pid_mode", "").is_ok());
}

// ---------------------------------------------------------------- privileges

#[test]
fn privileged_needs_allow_privileged() {
    let err = Fixture::new().with(|f| f.config.privileged = true).err();
    assert_eq!(err.key, "privileged");
    assert_eq!(
        err.message,
        "Docker privileged mode is disabled on this Nomad agent"
    );
    let hc = Fixture::new()
        .with(|f| {
            f.config.privileged = true;
            f.plugin.allow_privileged = true;
        })
        .host_config();
    assert_eq!(hc.privileged, Some(true));
}

#[test]
fn capabilities_matrix() {
    const ALL_BUT_FOWNER_MKNOD: &[&str] = &[
        "audit_write",
        "chown",
        "dac_override",
        "fsetid",
        "kill",
        "net_bind_service",
        "net_raw",
        "setfcap",
        "setgid",
        "setpcap",
        "setuid",
        "sys_chroot",
    ];
    // (name, cap_add, cap_drop, allow_caps ("" = default), add, drop or error)
    type Expect = Result<(Strs, Strs), &'static str>;
    let cases: [(&str, Strs, Strs, &str, Expect); 11] = [
        (
            "default-allowlist-add-allowed",
            &["fowner", "mknod"],
            &["all"],
            "",
            Ok((&["fowner", "mknod"], &["all"])),
        ),
        (
            "default-allowlist-add-forbidden",
            &["net_admin"],
            &[],
            "",
            Err("driver does not allow the following capabilities: net_admin"),
        ),
        (
            "default-allowlist-drop-existing",
            &[],
            &["fowner", "mknod", "net_raw"],
            "",
            Ok((&[], &["fowner", "mknod", "net_raw"])),
        ),
        (
            "restrictive-allowlist-drop-all",
            &[],
            &["all"],
            "fowner,mknod",
            Ok((&[], &["all"])),
        ),
        (
            "restrictive-allowlist-add-allowed",
            &["fowner", "mknod"],
            &["all"],
            "mknod,fowner",
            Ok((&["fowner", "mknod"], &["all"])),
        ),
        (
            "restrictive-allowlist-add-forbidden",
            &["net_admin", "mknod"],
            &["all"],
            "fowner,mknod",
            Err("driver does not allow the following capabilities: net_admin"),
        ),
        (
            "permissive-allowlist",
            &["mknod", "net_admin"],
            &[],
            "all",
            Ok((&["mknod", "net_admin"], &[])),
        ),
        (
            "permissive-allowlist-add-all",
            &["all"],
            &[],
            "all",
            Ok((&["all"], &[])),
        ),
        ("defaults", &[], &[], "", Ok((&[], &["net_raw"]))),
        (
            "restrictive-allowlist-drops-the-rest",
            &[],
            &[],
            "fowner,mknod",
            Ok((&[], ALL_BUT_FOWNER_MKNOD)),
        ),
        (
            "names are normalised",
            &[" CAP_Net_Admin ", "cap_sys_time"],
            &["CAP_CHOWN"],
            "NET_ADMIN,SYS_TIME,NET_RAW",
            Ok((
                &["net_admin", "sys_time"],
                &[
                    "audit_write",
                    "chown",
                    "dac_override",
                    "fowner",
                    "fsetid",
                    "kill",
                    "mknod",
                    "net_bind_service",
                    "setfcap",
                    "setgid",
                    "setpcap",
                    "setuid",
                    "sys_chroot",
                ],
            )),
        ),
    ];
    for (name, add, drop, allow, expected) in cases {
        let fixture = Fixture::new().with(|f| {
            f.config.cap_add = strings(add);
            f.config.cap_drop = strings(drop);
            if !allow.is_empty() {
                f.plugin.allow_caps = allow.split(',').map(str::to_owned).collect();
            }
        });
        match expected {
            Ok((add, drop)) => {
                let hc = fixture.host_config();
                assert_eq!(hc.cap_add, Some(strings(add)), "{name}");
                assert_eq!(hc.cap_drop, Some(strings(drop)), "{name}");
            }
            Err(message) => {
                let err = fixture.err();
                assert_eq!(err.key, "cap_add", "{name}");
                assert_eq!(err.message, message, "{name}");
            }
        }
    }
}

#[test]
fn capability_all_follows_the_kernel() {
    // A kernel whose last capability is audit_read (37) knows no bpf.
    let fixture = Fixture::new()
        .with(|f| {
            f.plugin.allow_caps = strings(&["all"]);
            f.config.cap_add = strings(&["bpf", "sys_admin"]);
        })
        .file("/proc/sys/kernel/cap_last_cap", "37\n");
    assert_eq!(
        fixture.err().message,
        "driver does not allow the following capabilities: bpf"
    );
    let hc = fixture.with(|f| f.host.0.clear()).host_config();
    assert_eq!(hc.cap_add, Some(strings(&["bpf", "sys_admin"])));
}

#[test]
fn security_opt_rules() {
    let profile = r#"{
  "defaultAction": "SCMP_ACT_ALLOW",
  "syscalls": [
    { "names": [ "reboot" ], "action": "SCMP_ACT_ERRNO", "comment": "no \"reboot\" here" }
  ]
}
"#;
    let hc = Fixture::new()
        .with(|f| {
            f.config.security_opt = strings(&[
                "seccomp=unconfined",
                "no-new-privileges",
                "apparmor:unconfined",
                "seccomp=/etc/nomad/seccomp.json",
                "label=disable",
            ]);
        })
        .file("/etc/nomad/seccomp.json", profile)
        .host_config();
    assert_eq!(
        hc.security_opt,
        Some(strings(&[
            "seccomp=unconfined",
            "no-new-privileges",
            "apparmor:unconfined",
            r#"seccomp={"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["reboot"],"action":"SCMP_ACT_ERRNO","comment":"no \"reboot\" here"}]}"#,
            "label=disable",
        ]))
    );

    // The colon form of a profile path is inlined too.
    let hc = Fixture::new()
        .with(|f| f.config.security_opt = strings(&["seccomp:/p.json"]))
        .file("/p.json", "[ 1, 2 ]")
        .host_config();
    assert_eq!(hc.security_opt, Some(strings(&["seccomp=[1,2]"])));

    let cases = [
        (
            "nonewprivs",
            r#"failed to parse security_opt configuration: invalid security_opt: "nonewprivs""#,
        ),
        (
            "seccomp=/missing.json",
            "failed to parse security_opt configuration: opening seccomp profile (/missing.json) failed: open /missing.json:",
        ),
        (
            "seccomp=/bad.json",
            "failed to parse security_opt configuration: compacting json for seccomp profile (/bad.json) failed:",
        ),
    ];
    for (opt, prefix) in cases {
        let err = Fixture::new()
            .with(|f| f.config.security_opt = vec![opt.to_owned()])
            .file("/bad.json", "{ \"a\": ")
            .err();
        assert_eq!(err.key, "security_opt");
        assert!(err.message.starts_with(prefix), "{opt}: {err}");
    }
}

#[test]
fn ulimits_and_errors() {
    let hc = Fixture::new()
        .with(|f| f.config.ulimit = map(&[("nproc", "4242"), ("nofile", "2048:4096")]))
        .host_config();
    let ulimit = |name: &str, soft, hard| ResourcesUlimits {
        name: Some(name.to_owned()),
        soft: Some(soft),
        hard: Some(hard),
    };
    assert_eq!(
        hc.ulimits,
        Some(vec![
            ulimit("nofile", 2048, 4096),
            ulimit("nproc", 4242, 4242)
        ])
    );

    let cases = [
        (
            "",
            r#"Malformed ulimit specification nofile: "", cannot be empty"#,
        ),
        ("abc:1234", "Malformed soft ulimit nofile: abc:1234"),
        ("1234:abc", "Malformed hard ulimit nofile: 1234:abc"),
        ("abc", "Malformed soft ulimit nofile: abc:abc"),
        ("1:2:3", "Malformed hard ulimit nofile: 1:2:3"),
    ];
    for (value, message) in cases {
        let err = Fixture::new()
            .with(|f| f.config.ulimit = map(&[("nofile", value)]))
            .err();
        assert_eq!(err.key, "ulimit");
        assert_eq!(
            err.message,
            format!("failed to parse ulimit configuration: {message}")
        );
    }
}

#[test]
fn pass_through_settings() {
    let hc = Fixture::new()
        .with(|f| {
            f.plugin.volumes.enabled = true;
            f.config.sysctl = map(&[("net.core.somaxconn", "16384")]);
            f.config.shm_size = 1 << 20;
            f.config.init = true;
            f.config.readonly_rootfs = true;
            f.config.group_add = strings(&["video"]);
            f.config.cgroupns = "host".to_owned();
            f.config.oom_score_adj = 500;
            f.config.volume_driver = "local".to_owned();
            f.config.extra_hosts = strings(&["db:10.0.0.5"]);
        })
        .host_config();
    assert_eq!(
        hc.sysctls,
        Some(HashMap::from([(
            "net.core.somaxconn".to_owned(),
            "16384".to_owned()
        )]))
    );
    assert_eq!(hc.shm_size, Some(1 << 20));
    assert_eq!(hc.init, Some(true));
    assert_eq!(hc.readonly_rootfs, Some(true));
    assert_eq!(hc.group_add, Some(strings(&["video"])));
    assert_eq!(
        hc.cgroupns_mode,
        Some(bollard::models::HostConfigCgroupnsModeEnum::HOST)
    );
    assert_eq!(hc.oom_score_adj, Some(500));
    assert_eq!(hc.volume_driver.as_deref(), Some("local"));
    assert_eq!(hc.extra_hosts, Some(strings(&["db:10.0.0.5"])));

    let hc = Fixture::new().host_config();
    assert_eq!(
        (
            hc.sysctls,
            hc.shm_size,
            hc.init,
            hc.group_add,
            hc.cgroupns_mode,
            hc.oom_score_adj
        ),
        (None, None, None, None, None, None)
    );

    let err = Fixture::new()
        .with(|f| f.config.cgroupns = "shared".to_owned())
        .err();
    assert_eq!(err.key, "cgroupns");
}

// ---------------------------------------------------------------- network

#[test]
fn network_modes() {
    assert_eq!(
        Fixture::new().host_config().network_mode.as_deref(),
        Some("default")
    );
    let hc = Fixture::new()
        .with(group_network)
        .with(|f| f.config.network_mode = "host".to_owned())
        .host_config();
    assert_eq!(hc.network_mode.as_deref(), Some("host"));
    let hc = Fixture::new().with(group_network).host_config();
    assert_eq!(hc.network_mode.as_deref(), Some("container:pause123"));
    // An isolation spec without a namespace path does not join a sandbox.
    let hc = Fixture::new()
        .with(group_network)
        .with(|f| {
            if let Some(iso) = &mut f.task.network_isolation {
                iso.path.clear();
            }
        })
        .host_config();
    assert_eq!(hc.network_mode.as_deref(), Some("default"));
}

fn binding(ip: &str, port: &str) -> PortBinding {
    PortBinding {
        host_ip: Some(ip.to_owned()),
        host_port: Some(port.to_owned()),
    }
}

fn port_map(entries: &[(&str, &[PortBinding])]) -> HashMap<String, Option<Vec<PortBinding>>> {
    entries
        .iter()
        .map(|(port, bindings)| ((*port).to_owned(), Some(bindings.to_vec())))
        .collect()
}

#[test]
fn ports_from_legacy_network() {
    // PortsNoMap.
    let body = Fixture::new().ok().body;
    assert_eq!(
        body.exposed_ports,
        Some(strings(&[
            "20000/tcp",
            "20000/udp",
            "20001/tcp",
            "20001/udp"
        ]))
    );
    let hc = body.host_config.expect("host config");
    let res = [binding("127.0.0.1", "20000")];
    let dyn_ = [binding("127.0.0.1", "20001")];
    assert_eq!(
        hc.port_bindings,
        Some(port_map(&[
            ("20000/tcp", &res),
            ("20000/udp", &res),
            ("20001/tcp", &dyn_),
            ("20001/udp", &dyn_),
        ]))
    );

    // PortsMapping / CreateContainerConfig_PortsMapping.
    let body = Fixture::new()
        .with(|f| {
            f.config.port_map =
                BTreeMap::from([("main".to_owned(), 8080), ("REDIS".to_owned(), 6379)]);
        })
        .ok()
        .body;
    assert_eq!(
        body.exposed_ports,
        Some(strings(&["6379/tcp", "6379/udp", "8080/tcp", "8080/udp"]))
    );
    let env = body.env.clone().expect("env");
    assert!(env.contains(&"NOMAD_PORT_main=8080".to_owned()));
    assert!(env.contains(&"NOMAD_PORT_REDIS=6379".to_owned()));
    assert_eq!(
        body.host_config.expect("host config").port_bindings,
        Some(port_map(&[
            ("8080/tcp", &res),
            ("8080/udp", &res),
            ("6379/tcp", &dyn_),
            ("6379/udp", &dyn_),
        ]))
    );
}

fn group_ports(f: &mut Fixture) {
    f.task.resources.ports = vec![
        PortMapping {
            label: "main".to_owned(),
            value: 20000,
            to: 8080,
            host_ip: "127.0.0.1".to_owned(),
        },
        PortMapping {
            label: "REDIS".to_owned(),
            value: 20001,
            to: 6379,
            host_ip: "127.0.0.1".to_owned(),
        },
    ];
    f.config.ports = strings(&["main", "REDIS"]);
}

#[test]
fn ports_from_group_network() {
    // CreateContainerConfig_Ports.
    let hc = Fixture::new().with(group_ports).host_config();
    let main = [binding("127.0.0.1", "20000")];
    let redis = [binding("127.0.0.1", "20001")];
    assert_eq!(
        hc.port_bindings,
        Some(port_map(&[
            ("8080/tcp", &main),
            ("8080/udp", &main),
            ("6379/tcp", &redis),
            ("6379/udp", &redis),
        ]))
    );

    // `to` 0 means the host port, and an empty host IP stays empty.
    let hc = Fixture::new()
        .with(|f| {
            f.task.resources.ports = vec![PortMapping {
                label: "http".to_owned(),
                value: 25000,
                ..PortMapping::default()
            }];
            f.config.ports = strings(&["http"]);
        })
        .host_config();
    let http = [binding("", "25000")];
    assert_eq!(
        hc.port_bindings,
        Some(port_map(&[("25000/tcp", &http), ("25000/udp", &http)]))
    );

    // PublishedPorts_add: two labels to one container port.
    let body = Fixture::new()
        .with(|f| {
            f.task.resources.ports = vec![
                PortMapping {
                    label: "a".to_owned(),
                    value: 1234,
                    to: 80,
                    host_ip: "10.0.0.1".to_owned(),
                },
                PortMapping {
                    label: "b".to_owned(),
                    value: 5678,
                    to: 80,
                    host_ip: "10.0.0.1".to_owned(),
                },
            ];
            f.config.ports = strings(&["a", "b"]);
        })
        .ok()
        .body;
    assert_eq!(body.exposed_ports, Some(strings(&["80/tcp", "80/udp"])));
    let both = [binding("10.0.0.1", "1234"), binding("10.0.0.1", "5678")];
    assert_eq!(
        body.host_config.expect("host config").port_bindings,
        Some(port_map(&[("80/tcp", &both), ("80/udp", &both)]))
    );

    // Joining the group's network namespace publishes nothing.
    let body = Fixture::new()
        .with(group_ports)
        .with(group_network)
        .ok()
        .body;
    assert_eq!(body.exposed_ports, None);
    assert_eq!(body.host_config.expect("host config").port_bindings, None);
}

#[test]
fn port_errors() {
    let err = Fixture::new()
        .with(group_ports)
        .with(|f| f.config.ports.push("missing".to_owned()))
        .err();
    assert_eq!(err.key, "ports");
    assert_eq!(
        err.message,
        r#"Port "missing" not found, check network block"#
    );

    let port_map_only = |f: &mut Fixture| {
        f.task.resources.networks.clear();
        f.config.port_map = BTreeMap::from([("main".to_owned(), 8080)]);
    };
    let err = Fixture::new().with(port_map_only).err();
    assert_eq!(err.key, "port_map");
    assert_eq!(
        err.message,
        "Trying to map ports but no network interface is available"
    );
    let err = Fixture::new()
        .with(group_ports)
        .with(port_map_only)
        .with(|f| f.config.ports.clear())
        .err();
    assert_eq!(
        err.message,
        "'port_map' cannot map group network ports, use 'ports' instead"
    );

    let err = Fixture::new()
        .with(|f| f.config.port_map = BTreeMap::from([("main".to_owned(), 70000)]))
        .err();
    assert_eq!(err.key, "port_map");
    let err = Fixture::new()
        .with(|f| f.task.resources.networks[0].ip = "not-an-ip".to_owned())
        .err();
    assert_eq!(err.key, "ports");

    // No ports and no port_map: nothing published, no error.
    let body = Fixture::new()
        .with(|f| f.task.resources.networks.clear())
        .ok()
        .body;
    assert_eq!(body.exposed_ports, None);
}

#[test]
fn networking_config() {
    let spec = Fixture::new()
        .with(|f| {
            f.config.network_mode = "my-net".to_owned();
            f.config.network_aliases = strings(&["web", "api"]);
            f.config.ipv4_address = "10.5.0.5".to_owned();
            f.config.ipv6_address = "2001:DB8::5".to_owned();
            f.config.mac_address = "00:16:3E:00:00:00".to_owned();
        })
        .ok();
    let endpoints = spec
        .body
        .networking_config
        .and_then(|n| n.endpoints_config)
        .expect("endpoints");
    assert_eq!(endpoints.len(), 1);
    let endpoint = &endpoints["my-net"];
    assert_eq!(endpoint.aliases, Some(strings(&["web", "api"])));
    let ipam = endpoint.ipam_config.as_ref().expect("ipam");
    assert_eq!(ipam.ipv4_address.as_deref(), Some("10.5.0.5"));
    assert_eq!(ipam.ipv6_address.as_deref(), Some("2001:db8::5"));
    assert_eq!(endpoint.mac_address.as_deref(), Some("00:16:3e:00:00:00"));

    // Keyed by the default network mode when none is given.
    let endpoints = Fixture::new()
        .with(|f| f.config.mac_address = "00:16:3e:00:00:01".to_owned())
        .ok()
        .body
        .networking_config
        .and_then(|n| n.endpoints_config)
        .expect("endpoints");
    assert!(endpoints.contains_key("default"));
    assert!(endpoints["default"].ipam_config.is_none());

    let cases = [
        (
            "ipv4_address",
            r#"failed to parse ipv4_address "10.0.0.300": ParseAddr("10.0.0.300"): unable to parse IP"#,
        ),
        (
            "ipv6_address",
            r#"failed to parse ipv6_address "10.0.0.300": ParseAddr("10.0.0.300"): unable to parse IP"#,
        ),
        (
            "mac_address",
            r#"failed to parse mac_address "10.0.0.300": address 10.0.0.300: invalid MAC address"#,
        ),
    ];
    for (key, message) in cases {
        let err = Fixture::new()
            .with(|f| {
                let slot = match key {
                    "ipv4_address" => &mut f.config.ipv4_address,
                    "ipv6_address" => &mut f.config.ipv6_address,
                    _ => &mut f.config.mac_address,
                };
                *slot = "10.0.0.300".to_owned();
            })
            .err();
        assert_eq!(err.key, key);
        assert_eq!(err.message, message);
    }
}

// ---------------------------------------------------------------- helpers

#[test]
fn go_path_semantics() {
    use super::paths::{clean, escapes, expand, join};
    let cleaned = [
        ("", "."),
        ("/", "/"),
        ("a/b/../c", "a/c"),
        ("/../x", "/x"),
        ("../../x", "../../x"),
        ("a/../../x", "../x"),
        ("//a//b/./", "/a/b"),
        ("a/..", "."),
    ];
    for (input, expected) in cleaned {
        assert_eq!(clean(input), expected, "{input:?}");
    }
    assert_eq!(join("", ""), "");
    assert_eq!(join("", "alloc"), "alloc");
    assert_eq!(join("/a", "../b"), "/b");
    assert_eq!(expand("/task", "/abs/../x"), "/x");
    assert_eq!(expand("/task", "rel"), "/task/rel");

    assert!(!escapes("/alloc", "/alloc"));
    assert!(!escapes("/alloc", "/alloc/task/x"));
    assert!(escapes("/alloc", "/alloc2/x"));
    assert!(escapes("/alloc", "/etc"));
    assert!(!escapes("/", "/etc"));
    assert!(escapes("relative", "/abs"));
    assert!(!escapes("/alloc", "named-volume"));
    assert!(escapes("/alloc", "x/../../y"));
}

#[test]
fn glob_semantics() {
    let cases = [
        ("", "", true),
        ("", "a", false),
        ("*", "anything", true),
        ("host", "host", true),
        ("host", "hostx", false),
        ("task*", "task_name", true),
        ("task*", "task_group_name", true),
        ("task*", "job_name", false),
        ("*name", "job_name", true),
        ("*_id", "parent_job_id", true),
        ("n*_*", "node_name", true),
        ("container:*", "container:abc", true),
        ("container:*desired", "container:093dede90-3d99d", false),
        ("container:*desired", "container:x-desired", true),
        ("a*b", "a", true),
        ("a*b*c", "abxc", true),
        ("a*b*c", "axc", false),
    ];
    for (pattern, subject, expected) in cases {
        assert_eq!(
            super::network::glob(pattern, subject),
            expected,
            "{pattern:?} ~ {subject:?}"
        );
    }
}

#[test]
fn address_parsing() {
    use super::network::{parse_addr, parse_mac};
    assert_eq!(parse_addr("127.0.0.1").as_deref(), Some("127.0.0.1"));
    assert_eq!(
        parse_addr("2001:DB8:0:0::1").as_deref(),
        Some("2001:db8::1")
    );
    assert_eq!(parse_addr("fe80::1%eth0").as_deref(), Some("fe80::1%eth0"));
    assert_eq!(parse_addr("fe80::1%"), None);
    assert_eq!(parse_addr("1.2.3.4%eth0"), None);
    assert_eq!(parse_addr("01.2.3.4"), None);
    assert_eq!(parse_addr(""), None);

    let macs = [
        ("00:16:3e:00:00:00", Some("00:16:3e:00:00:00")),
        ("00-16-3E-00-00-0A", Some("00:16:3e:00:00:0a")),
        ("0016.3e00.000a", Some("00:16:3e:00:00:0a")),
        ("00:00:00:00:fe:80:00:00", Some("00:00:00:00:fe:80:00:00")),
        ("00:16:3e:00:00", None),
        ("00:16-3e:00:00:00", None),
        ("+0:16:3e:00:00:00", None),
        ("0016.3e00.00", None),
        ("zz:16:3e:00:00:00", None),
    ];
    for (input, expected) in macs {
        assert_eq!(parse_mac(input).as_deref(), expected, "{input:?}");
    }
}

#[test]
fn go_quoting() {
    assert_eq!(quote("plain"), r#""plain""#);
    assert_eq!(quote("a\"b\\c"), r#""a\"b\\c""#);
    assert_eq!(quote("\t\n\u{1}"), r#""\t\n\x01""#);
    assert_eq!(quote("ü"), "\"ü\"");
}

#[test]
fn real_host_files_reads_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("f");
    std::fs::write(&path, "hello").expect("write");
    assert_eq!(RealHostFiles.read_to_string(&path).expect("read"), "hello");
    assert!(
        RealHostFiles
            .read_to_string(&dir.path().join("missing"))
            .is_err()
    );
}

#[test]
fn with_volumes_disabled_a_symlink_out_of_the_alloc_dir_is_refused() {
    let alloc_dir = "/tmp/x/long-alloc-id";
    let planted = |f: &mut Fixture| {
        f.task.alloc_dir = PathBuf::from(alloc_dir);
        f.task.name = "task-name".to_owned();
        f.host.0.insert(
            PathBuf::from("/tmp/x/long-alloc-id/alloc/data/root"),
            "-> outside".into(),
        );
    };
    let volume =
        |f: &mut Fixture| f.config.volumes = vec!["../alloc/data/root/etc:/host-etc".into()];
    let mount = |f: &mut Fixture| {
        f.config.mount = vec![TaskMount {
            r#type: "bind".to_owned(),
            target: "/host".to_owned(),
            source: "../alloc/data/root".to_owned(),
            ..TaskMount::default()
        }]
    };
    for (key, add) in [
        ("volumes", &volume as &dyn Fn(&mut Fixture)),
        ("mount", &mount),
    ] {
        let err = Fixture::new()
            .with(|f| {
                planted(f);
                add(f);
            })
            .err();
        assert_eq!(err.key, key);
        assert!(
            err.message
                .starts_with("volumes are not enabled; cannot mount host path")
                && err
                    .message
                    .contains("/alloc/data/root is a symlink out of the alloc dir"),
            "{err}"
        );
        // Enabled volumes mean host paths are the operator's call.
        let allowed = Fixture::new().with(|f| {
            planted(f);
            add(f);
            f.plugin.volumes.enabled = true;
        });
        allowed.host_config();
    }
}
