//! The fuzz targets: every decoder of untrusted input the plugin has, each a
//! function of arbitrary bytes that must never panic, hang or allocate
//! without bound. A target returns the class of what happened (the outcome
//! with numbers and quoted text stripped), which the engine uses as its
//! feedback signal, or an error when a property beyond "no panic" fails.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::UNIX_EPOCH;

use serde::Deserialize;
use serde_json::Value as Json;
use wasmdock_host::config::hclspec::{Spec, Type, attr, block, block_list, object};
use wasmdock_host::config::task::TaskConfig;
use wasmdock_host::config::{ConfigError, GoDuration, PluginConfig, cty};
use wasmdock_host::docker::engine::EngineFacts;
use wasmdock_host::docker::reference;
use wasmdock_host::docker::spec::{self, HostFiles, SpecInputs};
use wasmdock_host::driver::NodeCompute;
use wasmdock_host::driver::handle::TaskHandle;
use wasmdock_host::driver::state::DriverState;
use wasmdock_host::driver::task::{NetworkResource, TaskRequest};
use wasmdock_host::policy::hooks::fuzzing::{GuestAnswer, guest_output};
use wasmdock_host::policy::hooks::{self, Output};

use crate::msgpack::{self, Node, Widths};
use crate::mutate::Format;
use crate::rng::Rng;

/// What one execution of a target made of its input: its outcome class, or
/// a property that does not hold.
pub type Verdict = Result<String, String>;

/// One fuzz target.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// Its name: the corpus directory and the command-line name.
    pub name: &'static str,
    /// What it decodes, in a few words.
    pub about: &'static str,
    /// The shape of its input, for structure-aware mutation.
    pub format: Format,
    /// Runs the code under test on one input.
    pub run: fn(&[u8]) -> Verdict,
    /// Makes a fresh, valid-shaped input.
    pub generate: fn(&mut Rng) -> Vec<u8>,
    /// Tokens worth inserting.
    pub dict: &'static [&'static [u8]],
}

/// Every target, in the order `all` runs them.
pub const TARGETS: [Target; 5] = [
    Target {
        name: "cty",
        about: "config::cty::decode into a generic value, a type with every serde shape, and the real config types",
        format: Format::Msgpack,
        run: run_cty,
        generate: generate_cty,
        dict: MSGPACK_DICT,
    },
    Target {
        name: "plugin_config",
        about: "PluginConfig::from_msgpack (SetConfig: decoding and validation)",
        format: Format::Msgpack,
        run: run_plugin_config,
        generate: generate_plugin_config,
        dict: MSGPACK_DICT,
    },
    Target {
        name: "task_config",
        about: "TaskConfig::from_msgpack, the image reference and the container spec (StartTask before Docker)",
        format: Format::Msgpack,
        run: run_task_config,
        generate: generate_task_config,
        dict: MSGPACK_DICT,
    },
    Target {
        name: "driver_state",
        about: "DriverState::decode and what RecoverTask makes of it before Docker",
        format: Format::Json,
        run: run_driver_state,
        generate: generate_driver_state,
        dict: JSON_DICT,
    },
    Target {
        name: "guest_output",
        about: "validation of every hook's answer (from_wit under the output budget)",
        format: Format::Tape,
        run: run_guest_output,
        generate: generate_guest_output,
        dict: TAPE_DICT,
    },
];

/// The target called `name`.
pub fn by_name(name: &str) -> Option<Target> {
    TARGETS.iter().copied().find(|t| t.name == name)
}

const MSGPACK_DICT: &[&[u8]] = &[
    b"\xc0",
    b"\xc1",
    b"\xd4\x00\x00",
    b"\xc7\x01\x0c\x00",
    b"\xdd\xff\xff\xff\xff",
    b"\xdf\xff\xff\xff\xff",
    b"\xdb\xff\xff\xff\xff",
    b"\xc6\x7f\xff\xff\xff",
    b"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00",
    b"\xcb\x43\xe0\x00\x00\x00\x00\x00\x00",
    b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff",
    b"\xd3\x80\x00\x00\x00\x00\x00\x00\x00",
    b"\xa5image",
    b"\xa6config",
    b"\xa8port_map",
    b"\xa6labels",
    b"\xa5mount",
    b"\xa6policy",
    b"\xa6module",
    b"\xa8deadline",
    b"\xa2gc",
    b"\xa91h30m0.5s",
    b"\xa3-1s",
    b"\xa20.",
    b"\xa3\xc3\x28a",
    b"\x91\x80",
    b"\x92\x81\xa1a\x01\x81\xa1a\xc0",
];

const JSON_DICT: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\"",
    b"null",
    b"true",
    b"\"version\":1",
    b"\"version\":2",
    b"\"started_at\":1e19",
    b"\"started_at\":-1",
    b"\"started_at\":1e400",
    b"\"network\":{\"port_map\":{\"http\":80},\"ip\":\"\",\"auto_advertise\":true}",
    b"\"extra\":{}",
    b"\"log_dir\":null",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"4294967296",
    b"\\u0000",
    b"\\ud800",
    b"\\uDC00\\uD800",
    b"1e-400",
    b"-0",
    b"0.0000000000000000000000000001",
];

const TAPE_DICT: &[&[u8]] = &[
    b"\xf0",
    b"\xf1",
    b"\xf2",
    b"\xf3",
    b"\xf4",
    b"\x05\x04\x0b",
    b"\x04\x13",
    b"\x02\x07",
    b"\x01\x01",
    b"\x06\xff\xff",
];

// ---------------------------------------------------------------------------
// Outcome classes

/// An outcome with its variable parts (numbers, quoted text) stripped, so
/// that classes count kinds of outcome rather than values.
pub fn class(text: &str) -> String {
    let mut out = String::new();
    // The quote that opened the text being skipped (`"` or a backtick).
    let mut quoted: Option<char> = None;
    let mut escaped = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if let Some(quote) = quoted {
            // serde quotes names in backticks without escaping them: only a
            // backtick before a separator (or the end) closes the name.
            let closes = quote == '"'
                || chars
                    .peek()
                    .is_none_or(|next| matches!(next, ',' | ' ' | ')' | ':' | '.'));
            match c {
                '\\' if !escaped => escaped = true,
                c if c == quote && !escaped && closes => {
                    quoted = None;
                    out.push(c);
                }
                _ => escaped = false,
            }
            continue;
        }
        match c {
            '"' | '`' => {
                quoted = Some(c);
                out.push(c);
            }
            c if c.is_ascii_digit() => {
                if !out.ends_with('#') {
                    out.push('#');
                }
            }
            c => out.push(c),
        }
        if out.len() > 160 {
            break;
        }
    }
    out
}

fn config_class<T>(result: &Result<T, ConfigError>) -> String {
    match result {
        Ok(_) => "ok".to_owned(),
        Err(err) => class(&err.to_string()),
    }
}

// ---------------------------------------------------------------------------
// cty

/// A type with every shape serde can ask the decoder for.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[allow(dead_code, reason = "decoded only to exercise the decoder")]
struct Everything {
    b: bool,
    i8: i8,
    i16: i16,
    i32: i32,
    i64: i64,
    u8: u8,
    u16: u16,
    u32: u32,
    u64: u64,
    f32: f32,
    f64: f64,
    s: String,
    c: Option<char>,
    o: Option<i64>,
    os: Option<String>,
    v: Vec<String>,
    vi: Vec<i64>,
    m: BTreeMap<String, i64>,
    lm: BTreeMap<String, String>,
    nested: Nested,
    list: Vec<Nested>,
    kind: Option<Kind>,
    pair: Option<(i64, String)>,
    unit: (),
    any: Json,
    d: Option<GoDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[allow(dead_code, reason = "decoded only to exercise the decoder")]
struct Nested {
    name: String,
    n: u32,
    tags: Vec<String>,
    inner: Option<Box<Nested>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code, reason = "decoded only to exercise the decoder")]
enum Kind {
    Auto,
    Cgroup,
    Docker,
}

fn nested_spec(depth: usize) -> Spec {
    let mut fields = vec![
        attr("name", Type::String),
        attr("n", Type::Number),
        attr("tags", Type::list(Type::String)),
    ];
    if depth > 0 {
        fields.push(block("inner", nested_spec(depth - 1)));
    }
    object(fields)
}

/// The schema of [`Everything`], for the generator.
fn everything_spec() -> Spec {
    let number = |name: &str| attr(name, Type::Number);
    object([
        attr("b", Type::Bool),
        number("i8"),
        number("i16"),
        number("i32"),
        number("i64"),
        number("u8"),
        number("u16"),
        number("u32"),
        number("u64"),
        number("f32"),
        number("f64"),
        attr("s", Type::String),
        attr("c", Type::String),
        number("o"),
        attr("os", Type::String),
        attr("v", Type::list(Type::String)),
        attr("vi", Type::list(Type::Number)),
        attr("m", Type::map(Type::Number)),
        attr("lm", Type::list_of_maps(Type::String)),
        block("nested", nested_spec(3)),
        block_list("list", nested_spec(1)),
        attr("kind", Type::String),
        attr("pair", Type::list(Type::Any)),
        attr("unit", Type::Any),
        attr("any", Type::Any),
        attr("d", Type::String),
    ])
}

fn has_float(value: &Json) -> bool {
    match value {
        Json::Number(n) => n.is_f64(),
        Json::Array(items) => items.iter().any(has_float),
        Json::Object(map) => map.values().any(has_float),
        _ => false,
    }
}

/// Null map values read like missing keys, so they are dropped before
/// comparing.
fn without_null_entries(value: &Json) -> Json {
    match value {
        Json::Array(items) => Json::Array(items.iter().map(without_null_entries).collect()),
        Json::Object(map) => Json::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_null_entries(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn run_cty(data: &[u8]) -> Verdict {
    let generic: Result<Json, _> = cty::decode(data);
    // `serde_json::Value` holds a map of one key in hundreds of bytes: the
    // round trip (two trees at once) is checked on inputs up to 16 KiB, so
    // that the harness's own copies stay far below the allocation limit.
    if let Ok(value) = &generic
        && data.len() <= 16 * 1024
        && !has_float(value)
    {
        // What decodes must survive go-cty's encoding unchanged.
        let again: Result<Json, _> = cty::decode(&cty::encode_json(value));
        match again {
            Ok(again) if without_null_entries(&again) == without_null_entries(value) => {}
            other => {
                return Err(format!(
                    "decode(encode_json(v)) != v for v = {value}: got {other:?}"
                ));
            }
        }
    }
    let map: Result<BTreeMap<String, Json>, _> = cty::decode(data);
    let every: Result<Everything, _> = cty::decode(data);
    let plugin: Result<PluginConfig, _> = cty::decode(data);
    let task: Result<TaskConfig, _> = cty::decode(data);
    Ok(format!(
        "{} | {} | {} | {} | {}",
        config_class(&generic),
        config_class(&map),
        config_class(&every),
        config_class(&plugin),
        config_class(&task)
    ))
}

fn encode_generated(node: &Node, rng: &mut Rng) -> Vec<u8> {
    let widths = if rng.one_in(3) {
        Widths::Any
    } else {
        Widths::Shortest
    };
    msgpack::encode(node, widths, rng)
}

fn generate_cty(rng: &mut Rng) -> Vec<u8> {
    let spec = match rng.below(4) {
        0 => wasmdock_host::config::plugin::schema(),
        1 => wasmdock_host::config::task::schema(),
        2 => return encode_generated(&msgpack::any_value(rng, 0), rng),
        _ => everything_spec(),
    };
    let node = msgpack::from_spec(&spec, rng, 0);
    encode_generated(&node, rng)
}

// ---------------------------------------------------------------------------
// plugin_config

fn run_plugin_config(data: &[u8]) -> Verdict {
    use wasmdock_host::config::plugin::{MIN_CREATION_GRACE, MIN_PULL_ACTIVITY_TIMEOUT};
    use wasmdock_host::config::policy::{MAX_DEADLINE, MAX_MEMORY_LIMIT_MB};
    let result = PluginConfig::from_msgpack(data);
    if let Ok(config) = &result {
        // What validation promises SetConfig's callers.
        let modules = &config.policy.module;
        let mut names: Vec<&str> = modules.iter().map(|m| m.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let broken = config.gc.dangling_containers.creation_grace.get() < MIN_CREATION_GRACE
            || config.gc.dangling_containers.period.get().is_zero()
            || config.pull_activity_timeout.get() < MIN_PULL_ACTIVITY_TIMEOUT
            || (!config.run_dir.is_empty() && !config.run_dir.starts_with('/'))
            || config.infra_image.starts_with("https://")
            || names.len() != modules.len()
            || modules.iter().any(|m| {
                m.name.is_empty()
                    || !m.path.starts_with('/')
                    || m.deadline.get().is_zero()
                    || m.deadline.get() > MAX_DEADLINE
                    || m.memory_limit_mb == 0
                    || m.memory_limit_mb > MAX_MEMORY_LIMIT_MB
            });
        if broken {
            return Err(format!("validation let through {config:?}"));
        }
    }
    Ok(config_class(&result))
}

fn generate_plugin_config(rng: &mut Rng) -> Vec<u8> {
    let node = msgpack::from_spec(&wasmdock_host::config::plugin::schema(), rng, 0);
    encode_generated(&node, rng)
}

// ---------------------------------------------------------------------------
// task_config

/// In-memory host files for the container spec: the files it reads on a
/// real node, and nothing else.
#[derive(Debug)]
struct FakeHost(BTreeMap<PathBuf, String>);

impl HostFiles for FakeHost {
    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        self.0
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file or directory"))
    }

    /// The fake host has no symlinks: nothing leads out.
    fn leads_out(&self, _root: &Path, _path: &Path) -> Option<String> {
        None
    }
}

static HOST: LazyLock<FakeHost> = LazyLock::new(|| {
    FakeHost(BTreeMap::from([
        (
            PathBuf::from("/proc/sys/kernel/cap_last_cap"),
            "40\n".to_owned(),
        ),
        (
            PathBuf::from("/etc/resolv.conf"),
            "nameserver 10.0.0.2\nsearch example.com\n".to_owned(),
        ),
        (
            PathBuf::from("/etc/seccomp.json"),
            r#"{"defaultAction":"SCMP_ACT_ERRNO"}"#.to_owned(),
        ),
    ]))
});

/// A start request like the Nomad client's: a 256 MB, 512 MHz task with a
/// legacy network.
static TASK: LazyLock<TaskRequest> = LazyLock::new(|| {
    const ALLOC: &str = "a1b2c3d4-0000-4000-8000-000000000000";
    let mut task = TaskRequest {
        id: format!("{ALLOC}/web/abcd1234"),
        name: "web".to_owned(),
        alloc_id: ALLOC.to_owned(),
        job_name: "job".to_owned(),
        job_id: "job".to_owned(),
        task_group_name: "group".to_owned(),
        namespace: "default".to_owned(),
        node_name: "node-1".to_owned(),
        node_id: "node-id-1".to_owned(),
        alloc_dir: PathBuf::from(format!("/nomad/alloc/{ALLOC}")),
        ..TaskRequest::default()
    };
    task.env = BTreeMap::from([
        ("NOMAD_ALLOC_DIR".to_owned(), "/alloc".to_owned()),
        ("NOMAD_TASK_DIR".to_owned(), "/local".to_owned()),
        ("NOMAD_SECRETS_DIR".to_owned(), "/secrets".to_owned()),
    ]);
    task.resources.cpu_shares = 512;
    task.resources.memory_mb = 256;
    task.resources.linux.cpu_shares = 512;
    task.resources.linux.memory_limit_bytes = 256 * 1024 * 1024;
    task.resources.linux.percent_ticks = 0.125;
    task.resources.networks = vec![NetworkResource {
        ip: "127.0.0.1".to_owned(),
        reserved_ports: vec![("main".to_owned(), 20000)],
        dynamic_ports: vec![("http".to_owned(), 20001)],
    }];
    task
});

/// The plugin configs a task is built against: the defaults, and one that
/// permits everything a task can ask for.
static PLUGINS: LazyLock<[PluginConfig; 2]> = LazyLock::new(|| {
    let permissive = serde_json::json!({
        "allow_privileged": true,
        "allow_caps": ["ALL"],
        "allow_runtimes": ["runc", "nvidia", "io.containerd.runc.v2"],
        "volumes": {"enabled": true, "selinuxlabel": "z"},
        "allowed_modes": {"pid": ["host", "container:*"], "ipc": ["host", "private"], "userns": ["host"], "uts": ["host"]},
        "pids_limit": 100,
    });
    let permissive = PluginConfig::from_msgpack(&cty::encode_json(&permissive))
        .unwrap_or_else(|err| panic!("the permissive plugin config is invalid: {err}"));
    [PluginConfig::default(), permissive]
});

fn run_task_config(data: &[u8]) -> Verdict {
    let result = TaskConfig::from_msgpack(data);
    let Ok(config) = &result else {
        return Ok(config_class(&result));
    };
    if config.image.is_empty() {
        return Err("an empty image was accepted".to_owned());
    }
    let _ = config.image_pull_timeout_or(GoDuration::from_secs(300));
    let reference = match reference::parse(&config.image) {
        Ok(_) => "ok".to_owned(),
        Err(err) => class(&err),
    };
    let engines = [
        EngineFacts {
            version: "20.10.24".to_owned(),
            os_type: "linux".to_owned(),
            runtimes: vec!["runc".to_owned()],
            cgroup_driver: "cgroupfs".to_owned(),
            cgroup_version: "1".to_owned(),
        },
        EngineFacts {
            version: "24.0.7".to_owned(),
            os_type: "linux".to_owned(),
            runtimes: vec!["nvidia".to_owned(), "runc".to_owned()],
            cgroup_driver: "systemd".to_owned(),
            cgroup_version: "2".to_owned(),
        },
    ];
    let mut classes = vec![format!("ok | ref {reference}")];
    for (plugin, engine) in PLUGINS.iter().zip(&engines) {
        let inputs = SpecInputs {
            task: &TASK,
            config,
            plugin,
            engine,
            compute: NodeCompute {
                num_cores: 4,
                total_compute: 4096,
            },
            host_cpus: 4,
            image: "sha256:0123456789abcdef",
            gpu: None,
        };
        classes.push(match spec::container_spec(&inputs, &*HOST) {
            Ok(_) => "spec ok".to_owned(),
            Err(err) => format!("spec {}: {}", err.key, class(&err.message)),
        });
    }
    Ok(classes.join(" | "))
}

fn generate_task_config(rng: &mut Rng) -> Vec<u8> {
    let mut node = msgpack::from_spec(&wasmdock_host::config::task::schema(), rng, 0);
    // Most bodies name an image, so decoding gets past the first check.
    if let Node::Map(entries) = &mut node
        && !rng.one_in(8)
    {
        entries.retain(|(k, _)| *k != Node::str("image"));
        entries.push((
            Node::str("image"),
            Node::str(rng.pick(&["busybox:1", "redis:7", "https://busybox", "a@b", "x"])),
        ));
    }
    encode_generated(&node, rng)
}

// ---------------------------------------------------------------------------
// driver_state

fn run_driver_state(data: &[u8]) -> Verdict {
    let state = match DriverState::decode(data) {
        Ok(state) => state,
        Err(err) => return Ok(class(&err)),
    };
    // What RecoverTask does before it asks Docker about the container.
    let started_at = state.started_at_time();
    let handle = TaskHandle::new(
        TaskRequest::default(),
        state.container_id.clone(),
        state.image_id.clone(),
        state.network.clone(),
        started_at,
    );
    handle.logs_started(state.log_dir.clone().map(PathBuf::from));
    // The state stored after recovery must read back as the same task.
    let stored = handle.driver_state();
    let again = DriverState::decode(&stored.encode())
        .map_err(|err| format!("the re-encoded state does not decode: {err}"))?;
    if again.container_id != state.container_id
        || again.image_id != state.image_id
        || again.network != state.network
        || again.log_dir != state.log_dir
    {
        return Err(format!(
            "the state changed across recovery: {state:?} became {again:?}"
        ));
    }
    let expected = started_at
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let shift = again.started_at - expected;
    if shift.abs() > 1e-3_f64.max(expected.abs() * 1e-9) {
        return Err(format!(
            "started_at moved by {shift} s across recovery ({} became {})",
            state.started_at, again.started_at
        ));
    }
    Ok(format!(
        "ok network={} log_dir={} extra={}",
        state.network.is_some(),
        state.log_dir.is_some(),
        !state.extra.is_empty()
    ))
}

fn generate_driver_state(rng: &mut Rng) -> Vec<u8> {
    let string = |rng: &mut Rng| -> Json {
        match rng.below(4) {
            0 => Json::from(*rng.pick(msgpack::STRINGS)),
            1 => Json::from(format!("{:064x}", rng.next_u64())),
            2 => Json::from("sha256:".to_owned() + &format!("{:064x}", rng.next_u64())),
            _ => Json::from(""),
        }
    };
    let number = |rng: &mut Rng| -> Json {
        match rng.below(6) {
            0 => Json::from(1_700_000_000.25),
            1 => Json::from(rng.next_u64() as f64 / 1e3),
            2 => Json::from(*rng.pick(&[-1.0, 0.0, 1e19, 1.8e19, 1e300, 9.3e18])),
            3 => Json::from(rng.next_u64()),
            4 => Json::from(-(rng.below(1000) as i64)),
            _ => Json::from(rng.pick(&["1", "x"]).to_string()),
        }
    };
    let mut state = serde_json::Map::new();
    let version = match rng.below(8) {
        0 => Json::from(rng.below(4)),
        1 => Json::Null,
        2 => Json::from("1"),
        _ => Json::from(1),
    };
    state.insert("version".into(), version);
    state.insert("container_id".into(), string(rng));
    state.insert("image_id".into(), string(rng));
    let network = if rng.one_in(3) {
        Json::Null
    } else {
        let ports: serde_json::Map<String, Json> = (0..rng.small(6))
            .map(|i| (format!("p{i}"), number(rng)))
            .collect();
        serde_json::json!({
            "port_map": ports,
            "ip": string(rng),
            "auto_advertise": rng.one_in(2),
        })
    };
    state.insert("network".into(), network);
    state.insert("started_at".into(), number(rng));
    if rng.one_in(2) {
        state.insert("log_dir".into(), string(rng));
    }
    if rng.one_in(3) {
        let extra: serde_json::Map<String, Json> = (0..rng.small(4))
            .map(|i| (format!("k{i}"), string(rng)))
            .collect();
        state.insert("extra".into(), Json::Object(extra));
    }
    if rng.one_in(10) {
        state.insert("unknown".into(), Json::from(1));
    }
    let keys: Vec<String> = state.keys().cloned().collect();
    if rng.one_in(8) {
        state.remove(rng.pick(&keys));
    }
    let value = Json::Object(state);
    if rng.one_in(4) {
        serde_json::to_vec_pretty(&value).unwrap_or_default()
    } else {
        serde_json::to_vec(&value).unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------
// guest_output

/// What a validated answer must never contain, whatever the guest sent.
fn check_answer(answer: &GuestAnswer) -> Result<(), String> {
    let Ok(output) = &answer.result else {
        return Ok(());
    };
    let json = serde_json::to_value(output).map_err(|e| format!("unprintable output: {e}"))?;
    // The text the guest sent: every string but the decision's own tag.
    let mut total = 0usize;
    let mut strings: Vec<&Json> = match &json {
        Json::Object(map) => map
            .iter()
            .filter(|(key, _)| *key != "decision")
            .map(|(_, value)| value)
            .collect(),
        other => vec![other],
    };
    while let Some(value) = strings.pop() {
        match value {
            Json::String(s) => {
                if s.contains('\0') {
                    return Err(format!("an accepted answer carries a NUL: {s:?}"));
                }
                total += s.len();
            }
            Json::Array(items) => strings.extend(items),
            Json::Object(map) => strings.extend(map.values()),
            _ => {}
        }
    }
    if total > answer.limit {
        return Err(format!(
            "an accepted answer holds {total} bytes of text, over its cap of {}",
            answer.limit
        ));
    }
    match output {
        Output::TaskAdmission(hooks::admission::Decision::Patch(patch)) => {
            let lists = [
                patch.set_labels.len(),
                patch.set_env.len(),
                patch.unset_env.len(),
                patch.cap_add.len(),
                patch.cap_drop.len(),
                patch.security_opt.len(),
            ];
            if lists
                .iter()
                .any(|n| *n > hooks::admission::MAX_PATCH_ENTRIES)
            {
                return Err(format!("an accepted patch has lists of {lists:?} entries"));
            }
            if patch
                .security_opt
                .iter()
                .any(|o| o.to_ascii_lowercase().contains("unconfined"))
            {
                return Err("an accepted patch loosens security".to_owned());
            }
        }
        Output::GpuRuntime(hooks::gpu::Decision::Select(selection))
            if selection.device_requests.len() > hooks::gpu::MAX_DEVICE_REQUESTS =>
        {
            return Err("an accepted selection has too many device requests".to_owned());
        }
        Output::StatsTransform(hooks::stats::Transformed::Keep(sample))
            if sample.breakdown.len() > hooks::stats::MAX_BREAKDOWN
                || !sample.usage.cpu.percent.is_finite() =>
        {
            return Err("an accepted sample is malformed".to_owned());
        }
        _ => {}
    }
    Ok(())
}

fn run_guest_output(data: &[u8]) -> Verdict {
    let answer = guest_output(data);
    check_answer(&answer)?;
    let outcome = match &answer.result {
        Ok(output) => {
            let json = serde_json::to_value(output).unwrap_or_default();
            let decision = json
                .get("decision")
                .and_then(Json::as_str)
                .unwrap_or("keep-or-drop")
                .to_owned();
            format!("ok {decision}")
        }
        Err(err) => class(err),
    };
    Ok(format!("{} {outcome}", answer.hook))
}

fn generate_guest_output(rng: &mut Rng) -> Vec<u8> {
    let n = rng.range(1, 200);
    let mut out: Vec<u8> = (0..n).map(|_| rng.byte()).collect();
    // Mostly the default cap, as in production.
    if out.len() > 1 && rng.one_in(2) {
        out[1] = 0;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_drop_numbers_and_quoted_text() {
        assert_eq!(
            class(r#"gc.period: time: invalid duration "1x" at byte 12"#),
            r#"gc.period: time: invalid duration "" at byte #"#
        );
        assert_eq!(class(r#"a "b\"c" d"#), r#"a "" d"#);
        assert_eq!(
            class("unknown field `xyz`, expected `a`"),
            "unknown field ``, expected ``"
        );
        // Names may hold backticks themselves.
        assert_eq!(
            class("unknown field `a`b``c`, expected `a` or `b`"),
            "unknown field ``, expected `` or ``"
        );
    }

    #[test]
    fn every_target_takes_the_empty_input_and_generated_ones() {
        let mut rng = Rng::new(5);
        for target in TARGETS {
            (target.run)(&[]).unwrap_or_else(|e| panic!("{}: {e}", target.name));
            for _ in 0..50 {
                let input = (target.generate)(&mut rng);
                (target.run)(&input).unwrap_or_else(|e| panic!("{}: {e}", target.name));
            }
        }
    }
}
