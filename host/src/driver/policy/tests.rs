use std::time::{Duration, SystemTime};

use super::*;
use crate::policy::hooks::admission::Patch;

fn task() -> TaskRequest {
    let mut task = TaskRequest {
        id: "alloc/web/1".to_owned(),
        name: "web".to_owned(),
        ..TaskRequest::default()
    };
    task.resources.memory_mb = 256;
    task.resources.memory_max_mb = 512;
    task.env
        .insert("NOMAD_ALLOC_ID".to_owned(), "alloc".to_owned());
    task.env
        .insert("NVIDIA_VISIBLE_DEVICES".to_owned(), "0".to_owned());
    task.env.insert("APP_MODE".to_owned(), "debug".to_owned());
    task.device_env
        .insert("NVIDIA_VISIBLE_DEVICES".to_owned(), "0".to_owned());
    task
}

fn patched(patch: Patch) -> std::result::Result<(TaskRequest, TaskConfig), String> {
    let mut task = task();
    let mut config = TaskConfig {
        image: "busybox:1".to_owned(),
        ..TaskConfig::default()
    };
    apply_patch(&mut task, &mut config, &PluginConfig::default(), &patch)?;
    Ok((task, config))
}

#[test]
fn a_permitted_patch_is_applied() {
    let (task, config) = patched(Patch {
        set_labels: vec![KeyValue::new("team", "payments")],
        set_env: vec![KeyValue::new("APP_REGION", "eu")],
        unset_env: vec!["APP_MODE".to_owned()],
        runtime: Some("runc".to_owned()),
        memory_max_mb: Some(300),
        pids_limit: Some(100),
        cap_drop: vec!["NET_RAW".to_owned()],
        cap_add: vec!["CHOWN".to_owned()],
        security_opt: vec!["no-new-privileges".to_owned()],
    })
    .expect("permitted");
    assert_eq!(config.labels["team"], "payments");
    assert_eq!(task.env["APP_REGION"], "eu");
    assert!(!task.env.contains_key("APP_MODE"));
    assert_eq!(config.runtime, "runc");
    assert_eq!(task.resources.memory_max_mb, 300);
    assert_eq!(config.pids_limit, 100);
    assert_eq!(config.cap_drop, ["NET_RAW"]);
    assert_eq!(config.cap_add, ["CHOWN"]);
    assert_eq!(config.security_opt, ["no-new-privileges"]);
}

#[test]
fn a_patch_cannot_grant_what_the_plugin_config_forbids() {
    let refused = |patch: Patch, expected: &str| {
        let error = patched(patch).expect_err("refused");
        assert!(
            error.contains(expected),
            "{error:?} should mention {expected:?}"
        );
    };
    refused(
        Patch {
            cap_add: vec!["SYS_ADMIN".to_owned()],
            ..Patch::default()
        },
        "sys_admin",
    );
    refused(
        Patch {
            cap_add: vec!["all".to_owned()],
            ..Patch::default()
        },
        "capabilities",
    );
    refused(
        Patch {
            runtime: Some("kata".to_owned()),
            ..Patch::default()
        },
        r#"requested runtime "kata" is not allowed"#,
    );
    refused(
        Patch {
            set_labels: vec![KeyValue::new("com.hashicorp.nomad.alloc_id", "other")],
            ..Patch::default()
        },
        "Nomad's own",
    );
    refused(
        Patch {
            unset_env: vec!["NOMAD_ALLOC_ID".to_owned()],
            ..Patch::default()
        },
        "Nomad's own",
    );
    refused(
        Patch {
            set_env: vec![KeyValue::new("NVIDIA_VISIBLE_DEVICES", "all")],
            ..Patch::default()
        },
        "device plugin",
    );
    // Memory moves only between the reservation and the current limit.
    refused(
        Patch {
            memory_max_mb: Some(4096),
            ..Patch::default()
        },
        "outside 256..=512",
    );
    refused(
        Patch {
            memory_max_mb: Some(128),
            ..Patch::default()
        },
        "outside 256..=512",
    );
}

#[test]
fn the_pids_limit_of_a_patch_stays_under_the_plugins() {
    let mut task = task();
    let mut config = TaskConfig::default();
    let plugin = PluginConfig {
        pids_limit: 200,
        ..PluginConfig::default()
    };
    let error = apply_patch(
        &mut task,
        &mut config,
        &plugin,
        &Patch {
            pids_limit: Some(500),
            ..Patch::default()
        },
    )
    .expect_err("above the plugin's limit");
    assert!(error.contains("pids_limit cannot be greater"), "{error}");
}

#[test]
fn samples_survive_the_round_trip_through_the_hook_types() {
    let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let entry = usage::ResourceUsage {
        cpu: usage::CpuUsage {
            percent: 42.5,
            total_ticks: 1000.0,
            throttled_periods: 3,
            measured: vec![usage::CpuField::Percent, usage::CpuField::TotalTicks],
            ..usage::CpuUsage::default()
        },
        memory: usage::MemoryUsage {
            rss: 1 << 20,
            kernel_usage: 4096,
            measured: vec![usage::MemoryField::Rss, usage::MemoryField::KernelUsage],
            ..usage::MemoryUsage::default()
        },
    };
    let sample = Usage {
        timestamp: at,
        cpu: entry.cpu.clone(),
        memory: entry.memory.clone(),
        breakdown: vec![("tag:default/web".to_owned(), entry)],
    };
    assert_eq!(from_sample(&to_sample(&sample), at), sample);
    let mut moved = to_sample(&sample);
    moved.timestamp_ns -= 2_000_000_000;
    assert_eq!(
        from_sample(&moved, at).timestamp,
        at - Duration::from_secs(2)
    );
}
