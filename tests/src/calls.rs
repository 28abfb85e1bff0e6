//! The driver calls tests make most, with failures that say what the
//! plugin logged: launch a configured plugin, build a task, start, wait,
//! destroy.

use tonic::Status;
use wasmdock_host::rpc::proto::drivers as pb;

use crate::images;
use crate::plugin::PluginUnderTest;
use crate::task::{Task, TaskBuilder};

/// A plugin named `wasmdock` configured with `config`, the test images built.
pub async fn plugin(config: serde_json::Value) -> PluginUnderTest {
    images::busybox();
    PluginUnderTest::start(config, "wasmdock")
        .await
        .expect("plugin starts")
}

/// A task `name` with driver config `config` in a fresh allocation.
pub fn task(name: &str, config: serde_json::Value) -> Task {
    TaskBuilder::new(name, config).build().expect("task dir")
}

/// StartTask; panics with the plugin's log if it fails.
pub async fn start(plugin: &PluginUnderTest, task: &Task) -> pb::StartTaskResponse {
    plugin
        .driver()
        .start_task(task.start_request())
        .await
        .unwrap_or_else(|status| {
            panic!(
                "StartTask failed: {status:?}\n{}",
                plugin.stderr_lines().join("\n")
            )
        })
        .into_inner()
}

/// StartTask that must fail; its status.
pub async fn start_err(plugin: &PluginUnderTest, task: &Task) -> Status {
    match plugin.driver().start_task(task.start_request()).await {
        Ok(_) => panic!("StartTask of {} should have failed", task.name()),
        Err(status) => status,
    }
}

/// WaitTask.
pub async fn wait(plugin: &PluginUnderTest, task: &Task) -> pb::WaitTaskResponse {
    plugin
        .driver()
        .wait_task(task.wait_request())
        .await
        .expect("WaitTask")
        .into_inner()
}

/// The exit code WaitTask reports.
pub async fn exit_code(plugin: &PluginUnderTest, task: &Task) -> i32 {
    wait(plugin, task).await.result.expect("a result").exit_code
}

/// DestroyTask; panics if it fails.
pub async fn destroy(plugin: &PluginUnderTest, task: &Task, force: bool) {
    plugin
        .driver()
        .destroy_task(task.destroy_request(force))
        .await
        .unwrap_or_else(|status| panic!("DestroyTask of {}: {status:?}", task.name()));
}

/// The first answer of a new Fingerprint stream (sent at once).
pub async fn first_fingerprint(plugin: &PluginUnderTest) -> pb::FingerprintResponse {
    let mut stream = plugin
        .driver()
        .fingerprint(pb::FingerprintRequest {})
        .await
        .expect("Fingerprint")
        .into_inner();
    tokio::time::timeout(std::time::Duration::from_secs(20), stream.message())
        .await
        .expect("the first fingerprint comes at once")
        .expect("a fingerprint")
        .expect("the stream is open")
}
