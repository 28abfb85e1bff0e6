//! Log forwarding into the FIFOs a logmon-like reader drains: content and
//! stream separation, TTY output, the FIFO symlink attack, the knobs that
//! turn forwarding off, terminal errors, and no leaks over many tasks.

use std::time::Duration;

use serde_json::json;
use tonic::Code;
use wasmdock_e2e::calls::{destroy, exit_code, plugin, start, start_err};
use wasmdock_e2e::docker;
use wasmdock_e2e::images::BUSYBOX_1;
use wasmdock_e2e::{PluginUnderTest, TaskBuilder};
use wasmdock_host::rpc::status::recoverable_flag;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn stdout_and_stderr_reach_their_fifos() {
    let plugin = plugin(json!({})).await;
    let script = "for i in 1 2 3; do echo out-$i; echo err-$i >&2; done";
    let task = TaskBuilder::new(
        "logs",
        json!({ "image": BUSYBOX_1, "command": "sh", "args": ["-c", script] }),
    )
    .log_fifos()
    .build()
    .unwrap();
    let (stdout, stderr) = task.log_readers().unwrap();
    start(&plugin, &task).await;
    assert_eq!(exit_code(&plugin, &task).await, 0);
    assert!(
        stdout.wait_for("out-3\n", WAIT).await,
        "{:?}",
        stdout.text()
    );
    assert!(
        stderr.wait_for("err-3\n", WAIT).await,
        "{:?}",
        stderr.text()
    );
    assert_eq!(stdout.text(), "out-1\nout-2\nout-3\n");
    assert_eq!(stderr.text(), "err-1\nerr-2\nerr-3\n");
    destroy(&plugin, &task, true).await;
}

#[tokio::test]
async fn a_tty_container_is_copied_raw() {
    let plugin = plugin(json!({})).await;
    let task = TaskBuilder::new(
        "tty",
        json!({ "image": BUSYBOX_1, "tty": true, "command": "sh", "args": ["-c", "echo one; echo two >&2"] }),
    )
    .log_fifos()
    .build()
    .unwrap();
    let (stdout, _stderr) = task.log_readers().unwrap();
    start(&plugin, &task).await;
    assert!(
        stdout.wait_for("two\r\n", WAIT).await,
        "{:?}",
        stdout.text()
    );
    assert_eq!(
        stdout.text(),
        "one\r\ntwo\r\n",
        "a TTY merges both streams with CRLF"
    );
    destroy(&plugin, &task, true).await;
}

#[tokio::test]
async fn a_fifo_swapped_for_a_symlink_is_refused() {
    let plugin = plugin(json!({})).await;
    let task = TaskBuilder::new(
        "swap",
        json!({ "image": BUSYBOX_1, "command": "echo", "args": ["secret"] }),
    )
    .log_fifos()
    .build()
    .unwrap();
    let outside = tempfile::NamedTempFile::new().unwrap();
    std::fs::remove_file(task.stdout_path()).unwrap();
    std::os::unix::fs::symlink(outside.path(), task.stdout_path()).unwrap();

    let status = start_err(&plugin, &task).await;
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(recoverable_flag(&status), Some(false));
    assert!(
        status.message().contains("not a FIFO (a symlink)"),
        "{status:?}"
    );
    assert_eq!(
        std::fs::read(outside.path()).unwrap(),
        b"",
        "nothing was written outside the alloc dir"
    );
    assert_eq!(
        docker::container_inspect(&task.container_name()).unwrap(),
        None,
        "the container was removed"
    );
}

#[tokio::test]
async fn disable_log_collection_starts_no_forwarding() {
    let plugin = plugin(json!({ "disable_log_collection": true })).await;
    let task = TaskBuilder::new(
        "quiet",
        json!({ "image": BUSYBOX_1, "command": "echo", "args": ["unseen"] }),
    )
    .log_fifos()
    .build()
    .unwrap();
    let (stdout, _stderr) = task.log_readers().unwrap();
    start(&plugin, &task).await;
    assert_eq!(exit_code(&plugin, &task).await, 0);
    let line = plugin
        .wait_for_stderr("log forwarding off: disable_log_collection is set", WAIT)
        .await;
    assert!(line.is_some(), "{}", plugin.stderr_lines().join("\n"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stdout.text(), "");
    destroy(&plugin, &task, true).await;
}

#[tokio::test]
async fn a_task_with_logs_disabled_starts_no_forwarding() {
    let plugin = plugin(json!({})).await;
    // No log_fifos(): Nomad passes /dev/null for both streams.
    let task = TaskBuilder::new(
        "nolog",
        json!({ "image": BUSYBOX_1, "command": "echo", "args": ["x"] }),
    )
    .build()
    .unwrap();
    start(&plugin, &task).await;
    assert_eq!(exit_code(&plugin, &task).await, 0);
    let line = plugin
        .wait_for_stderr("log forwarding off: the task disabled its logs", WAIT)
        .await;
    assert!(line.is_some(), "{}", plugin.stderr_lines().join("\n"));
    destroy(&plugin, &task, true).await;
}

#[tokio::test]
async fn a_log_driver_that_cannot_be_read_ends_forwarding_once() {
    let plugin = plugin(json!({})).await;
    let task = TaskBuilder::new(
        "nonedriver",
        json!({ "image": BUSYBOX_1, "command": "sleep", "args": ["1000"], "logging": { "type": "none" } }),
    )
    .log_fifos()
    .build()
    .unwrap();
    let (_stdout, _stderr) = task.log_readers().unwrap();
    start(&plugin, &task).await;
    let line = plugin.wait_for_stderr("log forwarding ends", WAIT).await;
    assert!(line.is_some(), "{}", plugin.stderr_lines().join("\n"));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ends = plugin
        .stderr_lines()
        .iter()
        .filter(|l| l.contains("log forwarding ends"))
        .count();
    assert_eq!(ends, 1, "one line, no retry loop");
    destroy(&plugin, &task, true).await;
}

fn count_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn count_threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

async fn cycle(plugin: &PluginUnderTest, i: usize) {
    let task = TaskBuilder::new(
        &format!("cycle{i}"),
        json!({ "image": BUSYBOX_1, "command": "echo", "args": [format!("line {i}")] }),
    )
    .log_fifos()
    .build()
    .unwrap();
    let (stdout, _stderr) = task.log_readers().unwrap();
    start(plugin, &task).await;
    assert_eq!(exit_code(plugin, &task).await, 0);
    assert!(
        stdout.wait_for(&format!("line {i}\n"), WAIT).await,
        "cycle {i}: {:?}",
        stdout.text()
    );
    destroy(plugin, &task, true).await;
}

#[tokio::test]
async fn a_hundred_tasks_leave_no_fds_threads_or_processes_behind() {
    let plugin = plugin(json!({})).await;
    let pid = plugin.pid().expect("a running plugin");
    // Warm up (connection pools, runtime threads), then measure.
    for i in 0..3 {
        cycle(&plugin, i).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (fds, threads) = (count_fds(pid), count_threads(pid));
    for i in 3..103 {
        cycle(&plugin, i).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        count_fds(pid) <= fds + 2,
        "fds grew from {fds} to {}",
        count_fds(pid)
    );
    assert!(
        count_threads(pid) <= threads + 2,
        "threads grew from {threads} to {}",
        count_threads(pid)
    );
    let children =
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
    assert_eq!(children.trim(), "", "no helper processes");
}
