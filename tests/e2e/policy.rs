//! The policy host inside the running plugin: modules load on the
//! long-lived launch (the first Fingerprint) and their counters appear in
//! InspectTask's driver attributes.

use serde_json::json;
use wasmdock_e2e::calls::{destroy, first_fingerprint, plugin, start, task};
use wasmdock_e2e::guests::guest;
use wasmdock_e2e::images::BUSYBOX_1;

#[tokio::test]
async fn policy_counters_appear_in_inspect_task_attributes() {
    let module = guest("image-allowlist");
    let plugin = plugin(json!({
        "policy": { "module": [{
            "name": "allow",
            "path": module.to_string_lossy(),
            "hooks": ["task-admission"],
            "config": { "allowed": "*" },
        }]},
    }))
    .await;
    first_fingerprint(&plugin).await;
    let task = task(
        "policy-inspect",
        json!({ "image": BUSYBOX_1, "command": "sleep", "args": ["1000"] }),
    );
    start(&plugin, &task).await;
    let attributes = plugin
        .driver()
        .inspect_task(task.inspect_request())
        .await
        .expect("InspectTask")
        .into_inner()
        .driver
        .expect("driver status")
        .attributes;
    for counter in ["calls", "errors", "timeouts", "p50_us", "p99_us"] {
        let key = format!("policy.allow.task-admission.{counter}");
        assert!(
            attributes.contains_key(&key),
            "{key} missing from {attributes:?}"
        );
    }
    assert!(attributes.contains_key("container_id"));
    destroy(&plugin, &task, true).await;
}
