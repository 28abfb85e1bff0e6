//! The task config (`config {}` of a task): its hclspec schema, checked the
//! way Nomad's converter reads it, and its decoding from the shapes Nomad
//! produces (see §3.2–§3.3 and §5.3 of the protocol notes).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

mod common;

use common::{check_names, empty_body_value, eval_literal};
use serde_json::{Value, json};
use wasmdock_host::config::ConfigError;
use wasmdock_host::config::GoDuration;
use wasmdock_host::config::cty::encode_json;
use wasmdock_host::config::hclspec::Spec;
use wasmdock_host::config::task::{
    BindOptions, Device, Healthchecks, IMAGE_REQUIRED, Mount, RegistryAuth, TaskConfig,
    TaskLogging, TmpfsOptions, VolumeDriverConfig, VolumeOptions, schema,
};
use wasmdock_host::dev::schema::{parse_config_text, shape};
use wasmdock_host::rpc::convert;
use wasmdock_host::rpc::proto::hclspec::spec::Block;

fn decode(value: &Value) -> Result<TaskConfig, ConfigError> {
    TaskConfig::from_msgpack(&encode_json(value))
}

fn decode_ok(value: &Value) -> TaskConfig {
    decode(value).unwrap_or_else(|e| panic!("{value} should decode: {e}"))
}

fn assert_error(value: &Value, key: &str, fragments: &[&str]) {
    let err = decode(value).expect_err(&format!("{value} should be rejected"));
    assert_eq!(err.key, key, "key of {err:?} for {value}");
    for fragment in fragments {
        assert!(
            err.message.contains(fragment),
            "{err:?} should mention {fragment:?}"
        );
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

fn string_map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// `TaskConfig::default()` with an image: what a body setting only `image`
/// must decode to.
fn only_image(image: &str) -> TaskConfig {
    TaskConfig {
        image: image.to_owned(),
        ..TaskConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Schema checks (the approach of tests/schema.rs, applied to the task schema)

/// The top-level spec of `key` in `spec` (an object).
fn child<'a>(spec: &'a Spec, key: &str) -> &'a Spec {
    let Spec::Object(fields) = spec else {
        panic!("not an object: {spec:?}");
    };
    fields
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("no key {key}"))
}

/// The spec a `Default` wraps, or `spec` itself.
fn primary(spec: &Spec) -> &Spec {
    match spec {
        Spec::Default { primary, .. } => primary,
        other => other,
    }
}

fn keys(spec: &Spec) -> BTreeSet<String> {
    let Spec::Object(fields) = spec else {
        panic!("not an object: {spec:?}");
    };
    fields.iter().map(|(k, _)| k.clone()).collect()
}

fn nested(spec: &Spec) -> &Spec {
    match primary(spec) {
        Spec::Block { nested, .. } | Spec::BlockList { nested, .. } => nested,
        other => panic!("not a block: {other:?}"),
    }
}

/// Nomad's `taskConfigSpec` (§5.3): each key with its spec kind and type.
const NOMAD_TASK_SPEC: &[(&str, &str)] = &[
    ("image", "attr string required"),
    ("advertise_ipv6_address", "attr bool"),
    ("args", "attr list(string)"),
    ("auth", "block"),
    ("auth_soft_fail", "attr bool"),
    ("cap_add", "attr list(string)"),
    ("cap_drop", "attr list(string)"),
    ("cgroupns", "attr string"),
    ("command", "attr string"),
    ("container_exists_attempts", "attr number"),
    ("cpu_cfs_period", "attr number default 100000"),
    ("cpu_hard_limit", "attr bool"),
    ("cpuset_cpus", "attr string"),
    ("devices", "block_list"),
    ("dns_options", "attr list(string)"),
    ("dns_search_domains", "attr list(string)"),
    ("dns_servers", "attr list(string)"),
    ("entrypoint", "attr list(string)"),
    ("extra_hosts", "attr list(string)"),
    ("force_pull", "attr bool"),
    ("group_add", "attr list(string)"),
    ("healthchecks", "block"),
    ("hostname", "attr string"),
    ("image_pull_timeout", "attr string"),
    ("init", "attr bool"),
    ("interactive", "attr bool"),
    ("ipc_mode", "attr string"),
    ("ipv4_address", "attr string"),
    ("ipv6_address", "attr string"),
    ("isolation", "attr string"),
    ("labels", "attr list(map(string))"),
    ("load", "attr string"),
    ("logging", "block"),
    ("mac_address", "attr string"),
    ("memory_hard_limit", "attr number"),
    ("mount", "block_list"),
    ("mounts", "block_list"),
    ("network_aliases", "attr list(string)"),
    ("network_mode", "attr string"),
    ("oom_score_adj", "attr number"),
    ("pid_mode", "attr string"),
    ("pids_limit", "attr number"),
    ("port_map", "attr list(map(number))"),
    ("ports", "attr list(string)"),
    ("privileged", "attr bool"),
    ("readonly_rootfs", "attr bool"),
    ("runtime", "attr string"),
    ("security_opt", "attr list(string)"),
    ("shm_size", "attr number"),
    ("storage_opt", "block_attrs string"),
    ("sysctl", "attr list(map(string))"),
    ("tty", "attr bool"),
    ("ulimit", "attr list(map(string))"),
    ("userns_mode", "attr string"),
    ("uts_mode", "attr string"),
    ("volume_driver", "attr string"),
    ("volumes", "attr list(string)"),
    ("work_dir", "attr string"),
];

/// Nomad's `mountBodySpec`, and its nested blocks, the same way.
const NOMAD_MOUNT_SPEC: &[(&str, &str)] = &[
    ("type", "attr string default \"volume\""),
    ("target", "attr string"),
    ("source", "attr string"),
    ("readonly", "attr bool"),
    ("bind_options", "block"),
    ("bind_options.propagation", "attr string"),
    ("tmpfs_options", "block"),
    ("tmpfs_options.size", "attr number"),
    ("tmpfs_options.mode", "attr number"),
    ("volume_options", "block"),
    ("volume_options.no_copy", "attr bool"),
    ("volume_options.labels", "attr list(map(string))"),
    ("volume_options.driver_config", "block"),
    ("volume_options.driver_config.name", "attr string"),
    (
        "volume_options.driver_config.options",
        "attr list(map(string))",
    ),
];

/// One spec in the terms of the tables above (blocks without their body).
fn describe(spec: &Spec) -> String {
    match spec {
        Spec::Attr { ty, required, .. } => {
            format!(
                "attr {}{}",
                ty.expr(),
                if *required { " required" } else { "" }
            )
        }
        Spec::BlockAttrs { ty, .. } => format!("block_attrs {}", ty.expr()),
        Spec::Block { .. } => "block".to_owned(),
        Spec::BlockList { .. } => "block_list".to_owned(),
        Spec::Default { primary, default } => match default.as_ref() {
            Spec::Literal(lit) => format!("{} default {}", describe(primary), lit.to_hcl()),
            other => format!("{} default {other:?}", describe(primary)),
        },
        other => format!("{other:?}"),
    }
}

/// Every key under `spec` (an object), nested blocks' keys dotted.
fn describe_all(spec: &Spec, prefix: &str, out: &mut BTreeMap<String, String>) {
    let Spec::Object(fields) = spec else {
        panic!("not an object: {spec:?}");
    };
    for (key, child) in fields {
        let path = format!("{prefix}{key}");
        out.insert(path.clone(), describe(child));
        if let Spec::Block { nested, .. } = child {
            describe_all(nested, &format!("{path}."), out);
        }
    }
}

#[test]
fn every_literal_in_the_task_schema_is_valid_hcl() {
    let schema = schema();
    let literals = schema.literals();
    // cpu_cfs_period and the two mount types.
    assert_eq!(literals.len(), 3, "{literals:?}");
    for (path, lit) in literals {
        let source = lit.to_hcl();
        eval_literal(&source)
            .unwrap_or_else(|e| panic!("literal for {path} ({source}) is not valid HCL: {e}"));
    }
}

#[test]
fn task_specs_on_the_wire_carry_their_names_and_valid_types() {
    let wire = convert::spec(&schema());
    let mut problems = Vec::new();
    check_names(&wire, None, "config", &mut problems);
    assert!(problems.is_empty(), "{problems:#?}");
}

fn table(rows: &[(&str, &str)]) -> BTreeMap<String, String> {
    rows.iter()
        .map(|(k, d)| ((*k).to_owned(), (*d).to_owned()))
        .collect()
}

fn described_body(spec: &Spec) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    describe_all(spec, "", &mut out);
    out
}

#[test]
fn the_schema_is_nomads_task_config_spec_key_by_key() {
    let schema = schema();
    // Top level only (block bodies below): `image` the one required key,
    // map-ish keys list(map(T)) attributes rather than blocks, `storage_opt`
    // block attributes, and no default for `image_pull_timeout` so that the
    // plugin's value applies when it is unset.
    let top: BTreeMap<String, String> = match &schema {
        Spec::Object(fields) => fields
            .iter()
            .map(|(k, spec)| (k.clone(), describe(spec)))
            .collect(),
        _ => unreachable!(),
    };
    assert_eq!(top, table(NOMAD_TASK_SPEC));

    assert_eq!(
        described_body(nested(child(&schema, "auth"))),
        table(&[
            ("username", "attr string"),
            ("password", "attr string"),
            ("email", "attr string"),
            ("server_address", "attr string"),
        ])
    );
    assert_eq!(
        described_body(nested(child(&schema, "healthchecks"))),
        table(&[("disable", "attr bool")])
    );
    assert_eq!(
        described_body(nested(child(&schema, "logging"))),
        table(&[
            ("type", "attr string"),
            ("driver", "attr string"),
            ("config", "attr list(map(string))"),
        ])
    );
    assert_eq!(
        described_body(nested(child(&schema, "devices"))),
        table(&[
            ("host_path", "attr string"),
            ("container_path", "attr string"),
            ("cgroup_permissions", "attr string"),
        ])
    );
    for key in ["mount", "mounts"] {
        assert_eq!(
            described_body(nested(child(&schema, key))),
            table(NOMAD_MOUNT_SPEC),
            "{key}"
        );
    }
}

#[test]
fn map_attributes_go_on_the_wire_as_list_of_map_types() {
    let wire = convert::spec(&schema());
    let Some(Block::Object(object)) = wire.block.as_ref() else {
        panic!("the task schema is an object");
    };
    let ty = |key: &str| match object.attributes[key].block.as_ref() {
        Some(Block::Attr(a)) => a.r#type.clone(),
        Some(Block::BlockAttrs(b)) => format!("block_attrs {}", b.r#type),
        other => panic!("{key}: {other:?}"),
    };
    assert_eq!(ty("port_map"), "list(map(number))");
    assert_eq!(ty("labels"), "list(map(string))");
    assert_eq!(ty("storage_opt"), "block_attrs string");
    let Some(Block::Attr(image)) = object.attributes["image"].block.as_ref() else {
        panic!("image is an attribute");
    };
    assert!(image.required);
    assert_eq!(image.name, "image");
}

#[test]
fn schema_defaults_decode_like_a_body_with_only_image() {
    let mut value = empty_body_value(&schema());
    value["image"] = json!("x");
    let from_defaults = decode_ok(&value);
    assert_eq!(from_defaults, decode_ok(&json!({ "image": "x" })));
    assert_eq!(from_defaults, only_image("x"));
    // And the defaults are Nomad's.
    assert_eq!(value["cpu_cfs_period"], 100_000);
    assert_eq!(value["image_pull_timeout"], Value::Null);
    assert_eq!(value["mount"], json!([]));
    assert_eq!(from_defaults.cpu_cfs_period, 100_000);
    assert_eq!(from_defaults.image_pull_timeout, None);
    assert!(from_defaults.devices.is_empty() && from_defaults.mounts.is_empty());
}

#[test]
fn a_mount_given_without_type_is_a_volume() {
    // What hcldec makes of `mount { target = "/data" }`: the block's inner
    // defaults filled in, the rest null.
    let mut block = empty_body_value(nested(child(&schema(), "mount")));
    block["target"] = json!("/data");
    assert_eq!(block["type"], "volume");
    let from_schema = decode_ok(&json!({ "image": "x", "mount": [block] }));
    // A payload without the key at all agrees.
    let without_key = decode_ok(&json!({ "image": "x", "mount": [{ "target": "/data" }] }));
    assert_eq!(from_schema, without_key);
    assert_eq!(
        from_schema.mount,
        vec![Mount {
            target: "/data".to_owned(),
            ..Mount::default()
        }]
    );
    assert_eq!(from_schema.mount[0].r#type, "volume");
}

// ---------------------------------------------------------------------------
// Decoding

/// Every key set, shaped as hcldec shapes Nomad's TestConfig_ParseAllHCL
/// body: every key present, list(map(T)) attributes as lists of maps,
/// BlockAttrs as a plain map, blocks as objects, block lists as arrays.
fn all_keys_json() -> Value {
    serde_json::from_str(
        r#"{
        "image": "redis:7",
        "image_pull_timeout": "15m",
        "advertise_ipv6_address": true,
        "args": ["command_arg1", "command_arg2"],
        "auth": {
            "username": "myusername",
            "password": "mypassword",
            "email": "myemail@example.com",
            "server_address": "https://example.com"
        },
        "auth_soft_fail": true,
        "cap_add": ["CAP_SYS_NICE"],
        "cap_drop": ["CAP_SYS_ADMIN", "CAP_SYS_TIME"],
        "cgroupns": "host",
        "command": "/bin/bash",
        "container_exists_attempts": 10,
        "cpu_cfs_period": 20,
        "cpu_hard_limit": true,
        "cpuset_cpus": "0-1",
        "devices": [
            { "host_path": "/dev/null", "container_path": "/tmp/container-null", "cgroup_permissions": "rwm" },
            { "host_path": "/dev/random", "container_path": "/tmp/container-random", "cgroup_permissions": null },
            { "host_path": "/dev/bus/usb", "container_path": null, "cgroup_permissions": null }
        ],
        "dns_options": ["debug", "attempts:10"],
        "dns_search_domains": ["sub.example.com", "sub2.example.com"],
        "dns_servers": ["8.8.8.8", "1.1.1.1"],
        "entrypoint": ["/bin/bash", "-c"],
        "extra_hosts": ["127.0.0.1  localhost.example.com"],
        "force_pull": true,
        "group_add": ["group1", "group2"],
        "healthchecks": { "disable": true },
        "hostname": "self.example.com",
        "init": true,
        "interactive": true,
        "ipc_mode": "host",
        "ipv4_address": "10.0.2.1",
        "ipv6_address": "2601:184:407f:b37c:d834:412e:1f86:7699",
        "isolation": "process",
        "labels": [{ "owner": "hashicorp-nomad", "key": "val", "dotted.keys": "work" }],
        "load": "/tmp/image.tar.gz",
        "logging": {
            "type": "json-file",
            "driver": "json-file-driver",
            "config": [{ "max-file": "3", "max-size": "10m" }]
        },
        "mac_address": "02:42:ac:11:00:02",
        "memory_hard_limit": 512,
        "mount": [
            {
                "type": "bind",
                "target": "/mount-bind-target",
                "source": "/bind-source-mount",
                "readonly": true,
                "bind_options": { "propagation": "rshared" },
                "tmpfs_options": null,
                "volume_options": null
            },
            {
                "type": "tmpfs",
                "target": "/mount-tmpfs-target",
                "source": null,
                "readonly": true,
                "bind_options": null,
                "tmpfs_options": { "size": 30000, "mode": 511 },
                "volume_options": null
            }
        ],
        "mounts": [
            {
                "type": "bind",
                "target": "/bind-target",
                "source": "/bind-source",
                "readonly": true,
                "bind_options": { "propagation": "rshared" }
            },
            {
                "type": "tmpfs",
                "target": "/tmpfs-target",
                "readonly": true,
                "tmpfs_options": { "size": 30000, "mode": 511 }
            },
            {
                "type": "volume",
                "target": "/volume-target",
                "source": "/volume-source",
                "readonly": true,
                "volume_options": {
                    "no_copy": true,
                    "labels": [{ "label_key": "label_value", "dotted.keys": "always work" }],
                    "driver_config": {
                        "name": "nfs",
                        "options": [{ "option_key": "option_value" }]
                    }
                }
            }
        ],
        "network_aliases": ["redis"],
        "network_mode": "host",
        "oom_score_adj": 1000,
        "pid_mode": "host",
        "pids_limit": 2000,
        "port_map": [{ "http": 80, "redis": 6379 }],
        "ports": ["http", "https"],
        "privileged": true,
        "readonly_rootfs": true,
        "runtime": "runc",
        "security_opt": ["credentialspec=file://gmsaUser.json"],
        "shm_size": 30000,
        "storage_opt": {
            "dm.thinpooldev": "dev/mapper/thin-pool",
            "dm.use_deferred_deletion": "true",
            "dm.use_deferred_removal": "true"
        },
        "sysctl": [{ "net.core.somaxconn": "16384" }],
        "tty": true,
        "ulimit": [{ "nproc": "4242", "nofile": "2048:4096" }],
        "userns_mode": "host",
        "uts_mode": "host",
        "volume_driver": "host",
        "volumes": ["/host-path:/container-path:rw"],
        "work_dir": "/tmp/workdir"
    }"#,
    )
    .expect("the fixture is JSON")
}

#[test]
fn a_config_with_every_key_decodes_every_value() {
    let value = all_keys_json();
    // The fixture covers the whole schema, no more and no less.
    let fixture_keys: BTreeSet<String> = value.as_object().unwrap().keys().cloned().collect();
    assert_eq!(fixture_keys, keys(&schema()));

    let bind = |target: &str, source: &str| Mount {
        r#type: "bind".to_owned(),
        target: target.to_owned(),
        source: source.to_owned(),
        readonly: true,
        bind_options: BindOptions {
            propagation: "rshared".to_owned(),
        },
        ..Mount::default()
    };
    let tmpfs = |target: &str| Mount {
        r#type: "tmpfs".to_owned(),
        target: target.to_owned(),
        readonly: true,
        tmpfs_options: TmpfsOptions {
            size: 30000,
            mode: 511,
        },
        ..Mount::default()
    };
    let expected = TaskConfig {
        image: "redis:7".to_owned(),
        advertise_ipv6_address: true,
        args: strings(&["command_arg1", "command_arg2"]),
        auth: RegistryAuth {
            username: "myusername".to_owned(),
            password: "mypassword".to_owned(),
            email: "myemail@example.com".to_owned(),
            server_address: "https://example.com".to_owned(),
        },
        auth_soft_fail: true,
        cap_add: strings(&["CAP_SYS_NICE"]),
        cap_drop: strings(&["CAP_SYS_ADMIN", "CAP_SYS_TIME"]),
        cgroupns: "host".to_owned(),
        command: "/bin/bash".to_owned(),
        container_exists_attempts: 10,
        cpu_cfs_period: 20,
        cpu_hard_limit: true,
        cpuset_cpus: "0-1".to_owned(),
        devices: vec![
            Device {
                host_path: "/dev/null".to_owned(),
                container_path: "/tmp/container-null".to_owned(),
                cgroup_permissions: "rwm".to_owned(),
            },
            Device {
                host_path: "/dev/random".to_owned(),
                container_path: "/tmp/container-random".to_owned(),
                cgroup_permissions: String::new(),
            },
            Device {
                host_path: "/dev/bus/usb".to_owned(),
                ..Device::default()
            },
        ],
        dns_options: strings(&["debug", "attempts:10"]),
        dns_search_domains: strings(&["sub.example.com", "sub2.example.com"]),
        dns_servers: strings(&["8.8.8.8", "1.1.1.1"]),
        entrypoint: strings(&["/bin/bash", "-c"]),
        extra_hosts: strings(&["127.0.0.1  localhost.example.com"]),
        force_pull: true,
        group_add: strings(&["group1", "group2"]),
        healthchecks: Healthchecks { disable: true },
        hostname: "self.example.com".to_owned(),
        image_pull_timeout: Some(GoDuration::from_secs(15 * 60)),
        init: true,
        interactive: true,
        ipc_mode: "host".to_owned(),
        ipv4_address: "10.0.2.1".to_owned(),
        ipv6_address: "2601:184:407f:b37c:d834:412e:1f86:7699".to_owned(),
        isolation: "process".to_owned(),
        labels: string_map(&[
            ("owner", "hashicorp-nomad"),
            ("key", "val"),
            ("dotted.keys", "work"),
        ]),
        load: "/tmp/image.tar.gz".to_owned(),
        logging: TaskLogging {
            r#type: "json-file".to_owned(),
            driver: "json-file-driver".to_owned(),
            config: Some(string_map(&[("max-file", "3"), ("max-size", "10m")])),
        },
        mac_address: "02:42:ac:11:00:02".to_owned(),
        memory_hard_limit: 512,
        mount: vec![
            bind("/mount-bind-target", "/bind-source-mount"),
            tmpfs("/mount-tmpfs-target"),
        ],
        mounts: vec![
            bind("/bind-target", "/bind-source"),
            tmpfs("/tmpfs-target"),
            Mount {
                r#type: "volume".to_owned(),
                target: "/volume-target".to_owned(),
                source: "/volume-source".to_owned(),
                readonly: true,
                volume_options: VolumeOptions {
                    no_copy: true,
                    labels: string_map(&[
                        ("label_key", "label_value"),
                        ("dotted.keys", "always work"),
                    ]),
                    driver_config: VolumeDriverConfig {
                        name: "nfs".to_owned(),
                        options: string_map(&[("option_key", "option_value")]),
                    },
                },
                ..Mount::default()
            },
        ],
        network_aliases: strings(&["redis"]),
        network_mode: "host".to_owned(),
        oom_score_adj: 1000,
        pid_mode: "host".to_owned(),
        pids_limit: 2000,
        port_map: BTreeMap::from([("http".to_owned(), 80), ("redis".to_owned(), 6379)]),
        ports: strings(&["http", "https"]),
        privileged: true,
        readonly_rootfs: true,
        runtime: "runc".to_owned(),
        security_opt: strings(&["credentialspec=file://gmsaUser.json"]),
        shm_size: 30000,
        storage_opt: string_map(&[
            ("dm.thinpooldev", "dev/mapper/thin-pool"),
            ("dm.use_deferred_deletion", "true"),
            ("dm.use_deferred_removal", "true"),
        ]),
        sysctl: string_map(&[("net.core.somaxconn", "16384")]),
        tty: true,
        ulimit: string_map(&[("nproc", "4242"), ("nofile", "2048:4096")]),
        userns_mode: "host".to_owned(),
        uts_mode: "host".to_owned(),
        volume_driver: "host".to_owned(),
        volumes: strings(&["/host-path:/container-path:rw"]),
        work_dir: "/tmp/workdir".to_owned(),
    };
    assert_eq!(decode_ok(&value), expected);
}

/// The field names serde lists when it rejects the unknown key `zzz` at
/// `path` ("expected `a`", "expected `a` or `b`", "expected one of `a`, …").
fn struct_fields(value: &Value, path: &str) -> BTreeSet<String> {
    let err = decode(value).expect_err("zzz is unknown");
    assert_eq!(err.key, path, "{err:?}");
    let (_, list) = err
        .message
        .split_once("expected ")
        .unwrap_or_else(|| panic!("no field list in {err:?}"));
    list.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_structs_and_the_schema_have_the_same_keys() {
    let schema = schema();
    assert_eq!(
        struct_fields(&json!({ "image": "x", "zzz": 1 }), "zzz"),
        keys(&schema)
    );
    let mount = nested(child(&schema, "mount"));
    assert_eq!(
        struct_fields(
            &json!({ "image": "x", "mount": [{ "zzz": 1 }] }),
            "mount[0].zzz"
        ),
        keys(mount)
    );
    let volume = nested(child(mount, "volume_options"));
    assert_eq!(
        struct_fields(
            &json!({ "image": "x", "mounts": [{ "volume_options": { "zzz": 1 } }] }),
            "mounts[0].volume_options.zzz"
        ),
        keys(volume)
    );
    for block in ["auth", "logging", "healthchecks"] {
        assert_eq!(
            struct_fields(
                &json!({ "image": "x", block: { "zzz": 1 } }),
                &format!("{block}.zzz")
            ),
            keys(nested(child(&schema, block))),
            "{block}"
        );
    }
    assert_eq!(
        struct_fields(
            &json!({ "image": "x", "devices": [{ "zzz": 1 }] }),
            "devices[0].zzz"
        ),
        keys(nested(child(&schema, "devices")))
    );
}

#[test]
fn port_map_shapes_all_decode_alike() {
    let expected = BTreeMap::from([("http".to_owned(), 80), ("https".to_owned(), 443)]);
    for port_map in [
        // `port_map { … }` and `port_map = { … }` both arrive like this.
        json!([{ "http": 80, "https": 443 }]),
        // JSON jobs may list single-entry maps.
        json!([{ "http": 80 }, { "https": 443 }]),
        // A plain map.
        json!({ "http": 80, "https": 443 }),
        // go-cty writes some numbers as decimal strings.
        json!([{ "http": "80", "https": "443" }]),
        // Later maps win.
        json!([{ "http": 1, "https": 443 }, { "http": 80 }]),
        // Null entries in the list are skipped.
        json!([{ "http": 80 }, null, { "https": 443 }]),
    ] {
        let config = decode_ok(&json!({ "image": "x", "port_map": port_map }));
        assert_eq!(config.port_map, expected, "{port_map}");
    }
}

#[test]
fn string_map_attributes_merge_like_port_map() {
    let split = json!([{ "a": "1", "b": "old" }, { "b": "2" }]);
    let merged = string_map(&[("a", "1"), ("b", "2")]);
    let config = decode_ok(&json!({
        "image": "x",
        "labels": split,
        "sysctl": split,
        "ulimit": split,
        "logging": { "config": split },
        "mount": [{
            "volume_options": {
                "labels": split,
                "driver_config": { "options": split }
            }
        }]
    }));
    assert_eq!(config.labels, merged);
    assert_eq!(config.sysctl, merged);
    assert_eq!(config.ulimit, merged);
    assert_eq!(config.logging.config, Some(merged.clone()));
    assert_eq!(config.mount[0].volume_options.labels, merged);
    assert_eq!(config.mount[0].volume_options.driver_config.options, merged);
}

#[test]
fn explicit_nulls_decode_to_defaults() {
    // Nomad's TestConfig_ParseJSON cases, and one null for every other key.
    for key in [
        "dns_servers",
        "mount",
        "mounts",
        "logging",
        "auth",
        "volumes",
        "args",
        "command",
    ] {
        assert_eq!(
            decode_ok(&json!({ "image": "bash:3", key: null })),
            only_image("bash:3"),
            "{key}"
        );
    }
    assert_eq!(
        decode_ok(&json!({
            "image": "x",
            "dns_servers": null,
            "mount": null,
            "logging": null,
            "auth": null
        })),
        only_image("x")
    );
    let mut all_null = empty_body_value(&schema())
        .as_object()
        .unwrap()
        .keys()
        .map(|k| (k.clone(), Value::Null))
        .collect::<serde_json::Map<_, _>>();
    all_null.insert("image".to_owned(), json!("x"));
    assert_eq!(decode_ok(&Value::Object(all_null)), only_image("x"));
    // Nulls inside blocks too.
    let config = decode_ok(&json!({
        "image": "x",
        "logging": { "type": null, "driver": null, "config": null },
        "mount": [{ "type": null, "volume_options": { "labels": null, "driver_config": null } }]
    }));
    assert_eq!(config.logging, TaskLogging::default());
    assert_eq!(config.mount, vec![Mount::default()]);
}

#[test]
fn empty_block_lists_decode_as_empty_vecs() {
    let config = decode_ok(&json!({ "image": "x", "devices": [], "mount": [], "mounts": [] }));
    assert_eq!(config, only_image("x"));
    assert!(config.devices.is_empty() && config.mount.is_empty() && config.mounts.is_empty());
}

#[test]
fn logging_config_absent_is_not_logging_config_empty() {
    // Nomad falls back to the plugin's logging only when type and config are
    // both unset, so an explicit empty `config {}` must stay visible.
    let absent = decode_ok(&json!({ "image": "x", "logging": { "type": "" } }));
    assert_eq!(absent.logging.config, None);
    let empty = decode_ok(&json!({ "image": "x", "logging": { "config": [{}] } }));
    assert_eq!(empty.logging.config, Some(BTreeMap::new()));
    let empty_list = decode_ok(&json!({ "image": "x", "logging": { "config": [] } }));
    assert_eq!(empty_list.logging.config, Some(BTreeMap::new()));
}

#[test]
fn image_is_required_and_non_empty() {
    for value in [
        json!({}),
        json!({ "image": null }),
        json!({ "image": "" }),
        json!({ "image": "https://" }),
        json!({ "command": "/bin/sh" }),
    ] {
        assert_error(&value, "image", &[IMAGE_REQUIRED]);
        let err = decode(&value).unwrap_err();
        assert_eq!(err.message, "image name required for docker driver");
    }
    // An empty payload is a body that sets nothing.
    let err = TaskConfig::from_msgpack(&[]).unwrap_err();
    assert_eq!(err, ConfigError::new("image", IMAGE_REQUIRED));
}

#[test]
fn a_leading_https_scheme_is_stripped_from_the_image_once() {
    for (given, kept) in [
        (
            "https://registry.example.com/app:1",
            "registry.example.com/app:1",
        ),
        ("https://https://x", "https://x"),
        (
            "http://registry.example.com/app",
            "http://registry.example.com/app",
        ),
        ("redis:7", "redis:7"),
    ] {
        assert_eq!(decode_ok(&json!({ "image": given })).image, kept, "{given}");
    }
}

#[test]
fn unknown_keys_are_errors_that_name_them() {
    assert_error(
        &json!({ "image": "x", "bogus": 1 }),
        "bogus",
        &["unknown field", "bogus"],
    );
    // Even a null unknown key.
    assert_error(
        &json!({ "image": "x", "bogus": null }),
        "bogus",
        &["unknown field"],
    );
    assert_error(
        &json!({ "image": "x", "auth": { "token": "t" } }),
        "auth.token",
        &["unknown field", "token"],
    );
    assert_error(
        &json!({ "image": "x", "mount": [{}, { "kind": "bind" }] }),
        "mount[1].kind",
        &["unknown field"],
    );
    assert_error(
        &json!({ "image": "x", "mounts": [{ "volume_options": { "driver_config": { "opts": [] } } }] }),
        "mounts[0].volume_options.driver_config.opts",
        &["unknown field"],
    );
    assert_error(
        &json!({ "image": "x", "devices": [{ "path": "/dev/null" }] }),
        "devices[0].path",
        &["unknown field"],
    );
}

#[test]
fn wrong_types_are_errors_that_name_the_path() {
    assert_error(
        &json!({ "image": "x", "privileged": "yes" }),
        "privileged",
        &["expected a bool", "\"yes\""],
    );
    assert_error(
        &json!({ "image": "x", "port_map": [{ "http": "eighty" }] }),
        "port_map.http",
        &["expected a number", "\"eighty\""],
    );
    assert_error(
        &json!({ "image": "x", "port_map": [{ "http": 80.5 }] }),
        "port_map.http",
        &["integer"],
    );
    assert_error(
        &json!({ "image": "x", "port_map": ["http"] }),
        "port_map",
        &["list of maps"],
    );
    assert_error(&json!({ "image": 7 }), "image", &["expected a string"]);
    assert_error(
        &json!({ "image": "x", "args": "a b" }),
        "args",
        &["expected a list"],
    );
    assert_error(
        &json!({ "image": "x", "labels": [{ "a": 1 }] }),
        "labels.a",
        &["expected a string"],
    );
    assert_error(
        &json!({ "image": "x", "mount": [{ "readonly": "no" }] }),
        "mount[0].readonly",
        &["expected a bool"],
    );
    assert_error(
        &json!({ "image": "x", "mount": [{ "tmpfs_options": { "size": "big" } }] }),
        "mount[0].tmpfs_options.size",
        &["expected a number"],
    );
    assert_error(
        &json!({ "image": "x", "auth": "user:pass" }),
        "auth",
        &["expected a block or object"],
    );
    // Unsigned like Nomad's uint64.
    assert_error(
        &json!({ "image": "x", "container_exists_attempts": -1 }),
        "container_exists_attempts",
        &["out of range"],
    );
    // Checked at decode time with Go's rules.
    assert_error(
        &json!({ "image": "x", "image_pull_timeout": "1d" }),
        "image_pull_timeout",
        &["unknown unit \"d\""],
    );
    assert_error(
        &json!({ "image": "x", "image_pull_timeout": "-5m" }),
        "image_pull_timeout",
        &["negative"],
    );
}

#[test]
fn numbers_arrive_in_every_cty_encoding() {
    let config = decode_ok(&json!({
        "image": "x",
        "cpu_cfs_period": "50000",
        "memory_hard_limit": 1024.0,
        "oom_score_adj": -500,
        "shm_size": "67108864",
        "pids_limit": 100
    }));
    assert_eq!(config.cpu_cfs_period, 50_000);
    assert_eq!(config.memory_hard_limit, 1024);
    assert_eq!(config.oom_score_adj, -500);
    assert_eq!(config.shm_size, 67_108_864);
    assert_eq!(config.pids_limit, 100);
}

#[test]
fn image_pull_timeout_unset_falls_back_to_the_plugin_value() {
    let plugin = GoDuration::from_secs(300);
    for value in [
        json!({ "image": "x" }),
        json!({ "image": "x", "image_pull_timeout": null }),
        json!({ "image": "x", "image_pull_timeout": "" }),
    ] {
        let config = decode_ok(&value);
        assert_eq!(config.image_pull_timeout, None, "{value}");
        assert_eq!(config.image_pull_timeout_or(plugin), plugin);
    }
    let config = decode_ok(&json!({ "image": "x", "image_pull_timeout": "1h30s" }));
    assert_eq!(
        config.image_pull_timeout_or(plugin).get(),
        Duration::from_secs(3630)
    );
}

#[test]
fn the_module_doc_example_decodes() {
    // The HCL of the module documentation, shaped for the schema the way the
    // dev client shapes it, then encoded as cty would.
    let body = parse_config_text("image = \"busybox:1\"\nport_map {\n  http = 80\n}\n").unwrap();
    let shaped = shape(body, &convert::spec(&schema()));
    let config = decode_ok(&shaped);
    assert_eq!(
        config,
        TaskConfig {
            image: "busybox:1".to_owned(),
            port_map: BTreeMap::from([("http".to_owned(), 80)]),
            ..TaskConfig::default()
        }
    );
    // Repeated blocks become a list.
    let body = parse_config_text(
        "image = \"x\"\nmount {\n  type = \"tmpfs\"\n  target = \"/a\"\n}\nmount {\n  target = \"/b\"\n}\n",
    )
    .unwrap();
    let config = decode_ok(&shape(body, &convert::spec(&schema())));
    assert_eq!(config.mount.len(), 2);
    assert_eq!(config.mount[0].r#type, "tmpfs");
    assert_eq!(config.mount[1].r#type, "volume");
}
