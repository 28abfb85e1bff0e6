//! The seed corpus, generated from realistic inputs: the example task and
//! plugin files the dev client runs, configs that set every kind of key,
//! what Nomad sends for an empty body, real `driver_state` encodings, and
//! valid answers of every policy hook. `wasmdock-fuzz seeds` writes them to
//! `fuzz/corpus/<target>/`; inputs that once broke a decoder are kept there
//! too, as `regression-*` seeds.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Value as Json, json};
use wasmdock_host::config::hclspec::{Lit, Spec};
use wasmdock_host::config::{cty, plugin, task};
use wasmdock_host::dev::{schema, taskfile};
use wasmdock_host::driver::handle::TaskHandle;
use wasmdock_host::driver::network::DriverNetwork;
use wasmdock_host::driver::state::{DriverState, STATE_VERSION};
use wasmdock_host::driver::task::TaskRequest;
use wasmdock_host::rpc::convert;

/// One seed: its target, its file name and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seed {
    /// The target it feeds.
    pub target: &'static str,
    /// Its file name in the target's corpus directory.
    pub name: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Whether the target accepts it (a valid input, not an error case).
    pub valid: bool,
}

fn seed(target: &'static str, name: &str, bytes: Vec<u8>, valid: bool) -> Seed {
    Seed {
        target,
        name: format!("{name}.bin"),
        bytes,
        valid,
    }
}

fn repo_file(path: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", path.display()))
}

/// A config body encoded as the dev client (and Nomad) encodes it for
/// `spec`: shaped like Nomad's decoder shapes blocks, then go-cty msgpack.
fn encoded(body: &Json, spec: &Spec) -> Vec<u8> {
    cty::encode_json(&schema::shape(body.clone(), &convert::spec(spec)))
}

fn lit_json(lit: &Lit) -> Json {
    match lit {
        Lit::Str(s) => json!(s),
        Lit::Bool(b) => json!(b),
        Lit::Int(i) => json!(i),
        Lit::List(items) => Json::Array(items.iter().map(lit_json).collect()),
        Lit::Object(fields) => Json::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), lit_json(v)))
                .collect(),
        ),
    }
}

/// What Nomad's decoder makes of an empty body: every key of the schema,
/// null when unset, its default literal where the schema has one, and empty
/// lists for repeated blocks.
fn empty_body(spec: &Spec) -> Json {
    match spec {
        Spec::Object(fields) => Json::Object(
            fields
                .iter()
                .map(|(name, child)| (name.clone(), empty_body(child)))
                .collect(),
        ),
        Spec::Array(items) => Json::Array(items.iter().map(empty_body).collect()),
        Spec::BlockList { .. } => json!([]),
        Spec::Default { default, .. } => empty_body(default),
        Spec::Literal(lit) => lit_json(lit),
        Spec::Attr { .. } | Spec::Block { .. } | Spec::BlockAttrs { .. } => Json::Null,
    }
}

/// A full plugin config: every block, with values that pass validation.
fn rich_plugin_config() -> Json {
    json!({
        "endpoint": "unix:///var/run/docker.sock",
        "auth": {"config": "/etc/docker/config.json", "helper": "ecr-login"},
        "tls": {"cert": "/etc/nomad/cert.pem", "key": "/etc/nomad/key.pem", "ca": "/etc/nomad/ca.pem"},
        "extra_labels": ["job_name", "task_group_name", "node*"],
        "logging": {"type": "json-file", "config": [{"max-file": "3", "max-size": "10m"}]},
        "gc": {
            "image": true,
            "image_delay": "3m",
            "container": true,
            "dangling_containers": {"enabled": true, "period": "5m", "creation_grace": "5m", "dry_run": false}
        },
        "volumes": {"enabled": true, "selinuxlabel": "z"},
        "allow_privileged": false,
        "allow_caps": ["CHOWN", "NET_RAW"],
        "nvidia_runtime": "nvidia",
        "allow_runtimes": ["runc", "nvidia"],
        "infra_image": "https://registry.k8s.io/pause-amd64:3.3",
        "infra_image_pull_timeout": "5m",
        "image_pull_timeout": "5m",
        "container_exists_attempts": 5,
        "pull_activity_timeout": "2m",
        "pids_limit": 1024,
        "disable_log_collection": false,
        "stats_source": "cgroup",
        "run_dir": "/run/wasmdock",
        "allowed_modes": {"pid": ["host"], "ipc": ["host", "private"], "userns": ["host"], "uts": ["host"]},
        "policy": {
            "module": [
                {
                    "name": "allowlist",
                    "path": "/opt/nomad/policies/image_allowlist.wasm",
                    "sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
                    "hooks": ["task-admission"],
                    "failure_policy": "fail",
                    "deadline": "100ms",
                    "memory_limit_mb": 64,
                    "config": {"allowed": "registry.local/*"}
                },
                {
                    "name": "gpu",
                    "path": "/opt/nomad/policies/gpu_runtime.wasm",
                    "hooks": ["gpu-runtime", "stats-transform"],
                    "failure_policy": "native",
                    "deadline": "1.5s"
                }
            ]
        }
    })
}

/// A task config that sets most keys, as a job author would.
fn rich_task_config() -> Json {
    json!({
        "image": "redis:7",
        "command": "redis-server",
        "args": ["--port", "${NOMAD_PORT_db}"],
        "entrypoint": ["/usr/local/bin/docker-entrypoint.sh"],
        "labels": [{"team": "payments"}, {"tier": "cache"}],
        "port_map": [{"db": 6379}],
        "ports": ["db"],
        "auth": {"username": "u", "password": "p", "server_address": "registry.local"},
        "auth_soft_fail": true,
        "cap_add": ["NET_ADMIN"],
        "cap_drop": ["ALL"],
        "cpu_hard_limit": true,
        "cpu_cfs_period": 100000,
        "devices": [{"host_path": "/dev/fuse", "container_path": "/dev/fuse", "cgroup_permissions": "rwm"}],
        "dns_servers": ["10.0.0.2"],
        "dns_search_domains": ["example.com"],
        "dns_options": ["ndots:2"],
        "extra_hosts": ["db.local:10.0.0.5"],
        "force_pull": false,
        "healthchecks": {"disable": true},
        "hostname": "cache-1",
        "image_pull_timeout": "10m",
        "init": true,
        "interactive": false,
        "logging": {"type": "json-file", "config": [{"max-size": "5m"}]},
        "memory_hard_limit": 512,
        "mount": [
            {"type": "bind", "target": "/data", "source": "local/data", "readonly": false,
             "bind_options": {"propagation": "rslave"}},
            {"type": "tmpfs", "target": "/scratch", "tmpfs_options": {"size": 100000, "mode": 1777}},
            {"type": "volume", "target": "/vol", "source": "named",
             "volume_options": {"no_copy": true, "labels": [{"a": "b"}],
                                "driver_config": {"name": "local", "options": [{"type": "tmpfs"}]}}}
        ],
        "network_mode": "bridge",
        "network_aliases": ["cache"],
        "oom_score_adj": 100,
        "pids_limit": 256,
        "readonly_rootfs": true,
        "security_opt": ["no-new-privileges"],
        "shm_size": 67108864,
        "storage_opt": {"size": "10G"},
        "sysctl": [{"net.core.somaxconn": "1024"}],
        "tty": false,
        "ulimit": [{"nofile": "1024:2048"}],
        "volumes": ["local/conf:/etc/redis:ro"],
        "work_dir": "/data"
    })
}

/// The values Go's and our msgpack decoders disagree on most often.
fn cty_samples() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "numbers-as-strings",
            cty::encode_json(&json!({"a": "0.1", "b": "18446744073709551616", "c": 1.5, "d": -7})),
        ),
        (
            "list-of-maps",
            cty::encode_json(&json!({"lm": [{"a": "1"}, {"b": "2"}, {"a": "3"}, null]})),
        ),
        (
            "everything",
            cty::encode_json(&json!({
                "b": true, "i8": -8, "i16": 300, "i32": 70000, "i64": -5000000000i64, "u8": 255,
                "u16": 65535, "u32": 4294967295u32, "u64": 18446744073709551615u64, "f32": 0.5,
                "f64": "0.1", "s": "text", "c": "x", "o": 3, "os": "some", "v": ["a", "b"],
                "vi": [1, 2], "m": {"k": 1}, "lm": [{"x": "1"}],
                "nested": {"name": "n", "n": 1, "tags": ["t"], "inner": {"name": "deeper"}},
                "list": [{"name": "one"}, {"name": "two", "n": 2}],
                "kind": "cgroup", "pair": [1, "one"], "unit": null, "any": {"free": [1, "form"]},
                "d": "1h30m"
            })),
        ),
        // An unknown value as go-cty writes it, and a refined unknown.
        (
            "unknown-value",
            [&b"\x81\xa5image"[..], b"\xd4\x00\x00"].concat(),
        ),
        (
            "refined-unknown",
            [&b"\x81\xa5image"[..], b"\xc7\x02\x0c\x81\x01"].concat(),
        ),
        (
            "wide-widths",
            b"\xdf\x00\x00\x00\x01\xdb\x00\x00\x00\x05image\xd9\x09busybox:1".to_vec(),
        ),
        ("nil", b"\xc0".to_vec()),
    ]
}

/// A realistic `driver_state`, as a started task stores it.
fn driver_states() -> Vec<(&'static str, Vec<u8>, bool)> {
    let network = DriverNetwork {
        port_map: BTreeMap::from([("http".to_owned(), 8080), ("db".to_owned(), 6379)]),
        ip: "172.17.0.2".to_owned(),
        auto_advertise: false,
    };
    let handle = TaskHandle::new(
        TaskRequest::default(),
        "4f2a9c1e8b7d6f5a4e3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e".to_owned(),
        "sha256:5b0d4b7e2f3a6c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d".to_owned(),
        Some(network.clone()),
        UNIX_EPOCH + Duration::from_millis(1_700_000_000_250),
    );
    handle.logs_started(Some("/run/wasmdock/wasmdock".into()));
    let with_network = handle.driver_state().encode();
    let plain = DriverState {
        version: STATE_VERSION,
        container_id: "c0ffee".to_owned(),
        image_id: "sha256:1".to_owned(),
        network: None,
        started_at: 1_700_000_000.0,
        log_dir: None,
        extra: BTreeMap::from([("note".to_owned(), "later field".to_owned())]),
    }
    .encode();
    vec![
        ("started-task", with_network, true),
        ("no-network", plain, true),
        (
            "version-2",
            br#"{"version":2,"container_id":"c","image_id":"i","network":null,"started_at":1}"#
                .to_vec(),
            false,
        ),
        (
            "docker-driver-state",
            br#"{"ContainerID":"abc","DriverNetwork":null,"ReattachConfig":{"Pid":42}}"#.to_vec(),
            false,
        ),
    ]
}

/// Writes guest answers in the byte format of
/// `wasmdock_host::policy::hooks::fuzzing`.
#[derive(Debug, Default)]
struct Tape(Vec<u8>);

impl Tape {
    fn answer(hook: u8) -> Self {
        // The hook, then the default output cap.
        Self(vec![hook, 0])
    }
    fn tag(mut self, tag: u8) -> Self {
        self.0.push(tag);
        self
    }
    fn string(mut self, text: &str) -> Self {
        assert!(text.len() <= 255, "inline strings are at most 255 bytes");
        self.0.extend([0, text.len() as u8]);
        self.0.extend_from_slice(text.as_bytes());
        self
    }
    fn list(self, n: u8) -> Self {
        assert!(n <= 8, "lists read one by one hold at most 8 items");
        self.tag(n)
    }
    fn strings(self, items: &[&str]) -> Self {
        let mut tape = self.list(items.len() as u8);
        for item in items {
            tape = tape.string(item);
        }
        tape
    }
    fn pairs(self, items: &[(&str, &str)]) -> Self {
        let mut tape = self.list(items.len() as u8);
        for (key, value) in items {
            tape = tape.string(key).string(value);
        }
        tape
    }
    fn s64(mut self, value: i64) -> Self {
        self.0.push(1);
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    fn f64(mut self, value: f64) -> Self {
        self.0.push(1);
        self.0.extend_from_slice(&value.to_bits().to_be_bytes());
        self
    }
    fn usage(self, cpu_percent: f64, rss: i64) -> Self {
        let tape = self.tag(0b10_0100).tag(0b1);
        let tape = tape.f64(1.0).f64(2.0).f64(cpu_percent * 10.0).s64(0).s64(0);
        let tape = tape.f64(cpu_percent);
        (0..7).fold(tape, |tape, i| tape.s64(if i == 0 { rss } else { 0 }))
    }
}

fn guest_answers() -> Vec<(&'static str, Vec<u8>, bool)> {
    const RECONCILER: u8 = 0;
    const GPU: u8 = 1;
    const STATS: u8 = 2;
    const ADMISSION: u8 = 3;
    let ts = 1_700_000_000_000_000_000;
    vec![
        (
            "reconciler-ours",
            Tape::answer(RECONCILER).tag(0).string("nomad labels").0,
            true,
        ),
        (
            "reconciler-not-ours",
            Tape::answer(RECONCILER).tag(1).string("no alloc id").0,
            true,
        ),
        (
            "reconciler-abstain",
            Tape::answer(RECONCILER).tag(2).0,
            true,
        ),
        (
            "gpu-select-runtime",
            Tape::answer(GPU).tag(0).tag(1).string("nvidia").list(0).0,
            true,
        ),
        (
            "gpu-select-cdi",
            Tape::answer(GPU)
                .tag(0)
                .tag(0)
                .list(1)
                .string("cdi")
                .s64(-1)
                .strings(&["nvidia.com/gpu=0", "nvidia.com/gpu=1"])
                .list(1)
                .strings(&["gpu", "compute"])
                .pairs(&[("mode", "shared")])
                .0,
            true,
        ),
        ("gpu-abstain", Tape::answer(GPU).tag(1).0, true),
        (
            "gpu-reject",
            Tape::answer(GPU).tag(2).string("no GPU on this node").0,
            true,
        ),
        (
            "stats-keep",
            Tape::answer(STATS)
                .s64(ts)
                .tag(1)
                .tag(1)
                .s64(250)
                .usage(12.5, 4096)
                .list(2)
                .string("redis-server")
                .usage(10.0, 3000)
                .string("sh")
                .usage(2.5, 1096)
                .0,
            true,
        ),
        ("stats-drop", Tape::answer(STATS).s64(ts).tag(0).0, true),
        ("admission-allow", Tape::answer(ADMISSION).tag(0).0, true),
        (
            "admission-deny",
            Tape::answer(ADMISSION)
                .tag(1)
                .string("image busybox:1 is not on the allow-list")
                .0,
            true,
        ),
        (
            "admission-patch",
            Tape::answer(ADMISSION)
                .tag(2)
                .pairs(&[("team", "payments"), ("policy", "checked")])
                .pairs(&[("TZ", "UTC")])
                .strings(&["DEBUG"])
                .tag(1)
                .string("runc")
                .tag(1)
                .s64(512)
                .tag(1)
                .s64(100)
                .strings(&["NET_RAW"])
                .strings(&["CHOWN"])
                .strings(&["no-new-privileges", "apparmor=docker-default"])
                .0,
            true,
        ),
        (
            "admission-patch-loosens",
            Tape::answer(ADMISSION)
                .tag(2)
                .list(0)
                .list(0)
                .list(0)
                .tag(0)
                .tag(0)
                .tag(0)
                .list(0)
                .list(0)
                .strings(&["seccomp=unconfined"])
                .0,
            false,
        ),
    ]
}

/// Every generated seed.
pub fn seeds() -> Vec<Seed> {
    let plugin_spec = plugin::schema();
    let task_spec = task::schema();
    let mut out = Vec::new();

    // Plugin configs.
    let example = schema::parse_config_text(&repo_file("examples/tasks/plugin.hcl"))
        .unwrap_or_else(|err| panic!("examples/tasks/plugin.hcl: {err}"));
    // As written (relative module paths, which SetConfig refuses) and as
    // the dev client resolves them.
    out.push(seed(
        "plugin_config",
        "example-plugin-hcl",
        encoded(&example, &plugin_spec),
        false,
    ));
    let mut resolved = example.clone();
    if let Some(modules) = resolved
        .pointer_mut("/policy/module")
        .and_then(Json::as_array_mut)
    {
        for module in modules {
            if let Some(path) = module.get_mut("path") {
                *path = json!(format!(
                    "/opt/wasmdock/{}",
                    path.as_str().unwrap_or_default()
                ));
            }
        }
    }
    out.push(seed(
        "plugin_config",
        "example-plugin-resolved",
        encoded(&resolved, &plugin_spec),
        true,
    ));
    out.push(seed(
        "plugin_config",
        "every-key",
        encoded(&rich_plugin_config(), &plugin_spec),
        true,
    ));
    out.push(seed(
        "plugin_config",
        "empty-body",
        cty::encode_json(&empty_body(&plugin_spec)),
        true,
    ));
    out.push(seed("plugin_config", "empty-payload", Vec::new(), true));

    // Task configs.
    for name in ["hello", "gpu"] {
        let file = taskfile::parse(&repo_file(&format!("examples/tasks/{name}.hcl")))
            .unwrap_or_else(|err| panic!("examples/tasks/{name}.hcl: {err}"));
        out.push(seed(
            "task_config",
            &format!("example-{name}-hcl"),
            encoded(&file.config, &task_spec),
            true,
        ));
    }
    out.push(seed(
        "task_config",
        "every-key",
        encoded(&rich_task_config(), &task_spec),
        true,
    ));
    let mut empty = empty_body(&task_spec);
    empty["image"] = json!("busybox:1");
    out.push(seed(
        "task_config",
        "empty-body-with-image",
        cty::encode_json(&empty),
        true,
    ));
    out.push(seed(
        "task_config",
        "no-image",
        cty::encode_json(&json!({"command": "sh"})),
        false,
    ));

    // cty: the config seeds again, and the decoder's own corner cases.
    let configs: Vec<Seed> = out
        .iter()
        .map(|s| {
            let name = format!("{}-{}", s.target, s.name.trim_end_matches(".bin"));
            seed("cty", &name, s.bytes.clone(), true)
        })
        .collect();
    out.extend(configs);
    for (name, bytes) in cty_samples() {
        let known = !name.contains("unknown");
        out.push(seed("cty", name, bytes, known));
    }

    for (name, bytes, valid) in driver_states() {
        out.push(seed("driver_state", name, bytes, valid));
    }
    for (name, bytes, valid) in guest_answers() {
        out.push(seed("guest_output", name, bytes, valid));
    }
    out.extend(regressions());
    out
}

/// Inputs that once made a decoder misbehave.
fn regressions() -> Vec<Seed> {
    // A `list(map)` attribute of 16 000 one-key maps with distinct keys:
    // merging it used to be quadratic (about 1.3e8 key comparisons, seconds).
    let labels: Vec<Json> = (0..16_000)
        .map(|i| json!({ format!("k{i}"): "v" }))
        .collect();
    let merge = cty::encode_json(&json!({"image": "busybox:1", "labels": labels}));
    // A started_at beyond the clock's range: RecoverTask used to panic
    // adding it to the Unix epoch.
    let far =
        br#"{"version":1,"container_id":"c","image_id":"i","network":null,"started_at":1e19}"#;
    // Sixty arrays, each declaring 2^32 - 1 items, around 64 KiB of nils:
    // every level used to reserve room for the rest of the payload (about
    // 120 MiB in all for this input, and gigabytes for a large one).
    let mut nested = b"\x81\xaaallow_caps".to_vec();
    for _ in 0..60 {
        nested.extend_from_slice(b"\xdd\xff\xff\xff\xff");
    }
    nested.extend_from_slice(&[0xc0; 65_536]);
    vec![
        seed("task_config", "regression-merge-quadratic", merge, true),
        seed(
            "driver_state",
            "regression-started-at-overflow",
            far.to_vec(),
            true,
        ),
        seed(
            "plugin_config",
            "regression-nested-reserve",
            nested.clone(),
            false,
        ),
        seed("cty", "regression-nested-reserve", nested, false),
    ]
}
