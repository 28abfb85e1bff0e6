//! Filesystem attacks through the real plugin, with volumes disabled (the
//! default): host paths named outright or climbing out of the alloc dir,
//! and a symlink a task planted in its shared alloc dir for a later task
//! to bind. Each start is refused naming the path; no container is made.
//! (The FIFO swapped for a symlink is in `logs.rs`; tampered policy caches
//! and digest mismatches are in the policy test binary.)

use serde_json::json;
use wasmdock_e2e::calls::{destroy, exit_code, plugin, start, start_err};
use wasmdock_e2e::docker;
use wasmdock_e2e::images::BUSYBOX_1;
use wasmdock_e2e::{Alloc, Task};
use wasmdock_host::rpc::status::recoverable_flag;

/// StartTask of `task` is refused as an invalid task config naming `key`
/// and saying `refusal` (what is refused, with the offending path), and
/// nothing ran.
async fn refused(plugin: &wasmdock_e2e::PluginUnderTest, task: &Task, key: &str, refusal: &str) {
    let status = start_err(plugin, task).await;
    let message = status.message();
    assert!(
        message.contains(&format!("invalid task config: {key}: "))
            && message.contains(&format!("volumes are not enabled; {refusal}")),
        "{key} {refusal}: {message}"
    );
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{message}");
    assert_eq!(
        recoverable_flag(&status),
        None,
        "a config error, never retried"
    );
    assert!(
        docker::containers_named(&task.container_name())
            .unwrap()
            .is_empty(),
        "no container for {key} {refusal}"
    );
}

#[tokio::test]
async fn host_paths_outside_the_alloc_dir_are_refused() {
    let plugin = plugin(json!({})).await;
    let alloc = Alloc::new().unwrap();
    let host_path = "cannot mount host path: ";
    // `../../../..` from a task dir (`<alloc dir>/<task>`), resolved
    // lexically as a bind source is.
    let four_up = alloc
        .dir()
        .ancestors()
        .nth(3)
        .unwrap_or(std::path::Path::new("/"))
        .to_owned();
    let cases = [
        (
            "volumes",
            json!({ "volumes": ["/etc:/host-etc"] }),
            format!("{host_path}\"/etc:/host-etc\""),
        ),
        (
            "volumes",
            json!({ "volumes": ["../../../../etc:/host-etc:ro"] }),
            format!("{host_path}\"../../../../etc:/host-etc:ro\""),
        ),
        (
            "mount",
            json!({ "mount": [{ "type": "bind", "source": "/", "target": "/host" }] }),
            format!("{host_path}\"/\""),
        ),
        (
            "mount",
            json!({ "mount": [{ "type": "bind", "source": "../../../..", "target": "/host" }] }),
            format!("{host_path}\"{}\"", four_up.display()),
        ),
        (
            "volume_driver",
            json!({ "volumes": ["data:/data"], "volume_driver": "local" }),
            "cannot use volume driver \"local\"".to_owned(),
        ),
    ];
    for (i, (key, extra, refusal)) in cases.into_iter().enumerate() {
        let mut config = json!({ "image": BUSYBOX_1, "command": "true" });
        config
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let task = alloc.task(&format!("escape{i}"), config).build().unwrap();
        refused(&plugin, &task, key, &refusal).await;
    }
}

#[tokio::test]
async fn a_symlink_planted_in_the_alloc_dir_does_not_lead_a_mount_out() {
    let plugin = plugin(json!({})).await;
    let alloc = Alloc::new().unwrap();
    // The first task plants links in the shared alloc dir: one absolute,
    // one climbing out with `..`, one that stays inside.
    let planter = alloc
        .task(
            "planter",
            json!({
                "image": BUSYBOX_1,
                "command": "sh",
                "args": ["-c", "ln -s / /alloc/data/root && ln -s ../../../../../../.. /alloc/data/up && mkdir /alloc/data/real && ln -s real /alloc/data/inside"],
            }),
        )
        .build()
        .unwrap();
    start(&plugin, &planter).await;
    assert_eq!(exit_code(&plugin, &planter).await, 0);
    let data = alloc.shared_dir().join("data");
    assert!(
        std::fs::symlink_metadata(data.join("root"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "the planted link exists on the host"
    );

    let attacker = |name: &str, extra: serde_json::Value| {
        let mut config = json!({ "image": BUSYBOX_1, "command": "ls", "args": ["/host"] });
        config
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        alloc.task(name, config).build().unwrap()
    };
    let through_volume = attacker(
        "via-volume",
        json!({ "volumes": ["../alloc/data/root/etc:/host"] }),
    );
    refused(
        &plugin,
        &through_volume,
        "volumes",
        &format!(
            "cannot mount host path: \"{}\"",
            data.join("root/etc").display()
        ),
    )
    .await;
    let through_mount = attacker(
        "via-mount",
        json!({ "mount": [{ "type": "bind", "source": "../alloc/data/up", "target": "/host" }] }),
    );
    refused(
        &plugin,
        &through_mount,
        "mount",
        &format!("cannot mount host path: \"{}\"", data.join("up").display()),
    )
    .await;

    // A link that stays inside the alloc dir is fine.
    let inside = attacker(
        "inside",
        json!({ "volumes": ["../alloc/data/inside:/host"] }),
    );
    start(&plugin, &inside).await;
    assert_eq!(exit_code(&plugin, &inside).await, 0);
    for task in [&planter, &inside] {
        destroy(&plugin, task, true).await;
    }
}
