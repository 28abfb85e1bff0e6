//! Log forwarding into the FIFOs a logmon-like reader drains: content and
//! stream separation, TTY output, the FIFO symlink attack, the knobs that
//! turn forwarding off, terminal errors, no leaks over many tasks, and a
//! plugin SIGKILL in the middle of a task's output: no line lost, none
//! repeated, the FIFO never closed.

use std::time::Duration;

use serde_json::json;
use tonic::Code;
use wasmdock_e2e::calls::{destroy, exit_code, plugin, start, start_err};
use wasmdock_e2e::docker;
use wasmdock_e2e::images::BUSYBOX_1;
use wasmdock_e2e::task::FifoReader;
use wasmdock_e2e::{PluginUnderTest, Task, TaskBuilder};
use wasmdock_host::crashpoint;
use wasmdock_host::rpc::proto::drivers::TaskHandle;
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
    assert!(
        plugin.log_holder().status().await.is_err(),
        "no log holder was started"
    );
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
    let helpers: Vec<u32> = children(pid)
        .into_iter()
        .filter(|child| !cmdline(*child).contains("log-holder"))
        .collect();
    assert_eq!(
        helpers,
        Vec::<u32>::new(),
        "no helper process besides the node's log holder"
    );
    assert!(
        holder_exits(&plugin).await,
        "the log holder exits once no task needs it"
    );
}

/// Child processes of `pid`, whichever of its threads started them.
fn children(pid: u32) -> Vec<u32> {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    threads
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

fn cmdline(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// The process group of `pid` (field 5 of /proc/<pid>/stat).
fn process_group(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    after_name.split(' ').nth(2)?.parse().ok()
}

/// Waits for the plugin's log holder to go away (it lingers 5 s).
async fn holder_exits(plugin: &PluginUnderTest) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while std::time::Instant::now() < deadline {
        if plugin.log_holder().status().await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

/// `<prefix>-0\n<prefix>-1\n…` up to `n - 1`.
fn sequence(prefix: &str, n: usize) -> String {
    (0..n).map(|i| format!("{prefix}-{i}\n")).collect()
}

/// The driver config of a task printing `out-<i>` and `err-<i>` for i
/// below `n`, `pause_us` apart.
fn counting_config(n: usize, pause_us: u32) -> serde_json::Value {
    let script = format!(
        "i=0; while [ $i -lt {n} ]; do echo out-$i; echo err-$i >&2; i=$((i+1)); usleep {pause_us}; done"
    );
    json!({ "image": BUSYBOX_1, "command": "sh", "args": ["-c", script] })
}

/// A counting task (see [`counting_config`]) with log FIFOs.
fn counting_task(name: &str, n: usize, pause_us: u32) -> Task {
    TaskBuilder::new(name, counting_config(n, pause_us))
        .log_fifos()
        .build()
        .unwrap()
}

/// SIGKILLs the plugin and leaves it down for `down`.
async fn crash(plugin: &mut PluginUnderTest, down: Duration) {
    plugin.kill().await.unwrap();
    tokio::time::sleep(down).await;
}

/// Relaunches the plugin and recovers `task` from its StartTask handle.
async fn relaunch_and_recover(plugin: &mut PluginUnderTest, task: &Task, handle: TaskHandle) {
    plugin.relaunch().await.unwrap();
    plugin
        .driver()
        .recover_task(task.recover_request(handle))
        .await
        .expect("RecoverTask");
}

/// After the task exited: both FIFOs carry `out-0…` and `err-0…` up to
/// `n - 1`, each line exactly once.
async fn assert_counted(
    plugin: &PluginUnderTest,
    task: &Task,
    (stdout, stderr): (&FifoReader, &FifoReader),
    n: usize,
) {
    assert_eq!(exit_code(plugin, task).await, 0);
    let last = format!("err-{}\n", n - 1);
    assert!(stderr.wait_for(&last, WAIT).await, "{:?}", stderr.text());
    assert_eq!(stdout.text(), sequence("out", n));
    assert_eq!(stderr.text(), sequence("err", n));
}

/// Starts a counting task with logmon-like readers and waits until its
/// stdout shows `seen`.
async fn start_counting(
    plugin: &PluginUnderTest,
    task: &Task,
    seen: &str,
) -> ((FifoReader, FifoReader), TaskHandle) {
    let readers = task.log_readers().unwrap();
    let handle = start(plugin, task).await.handle.unwrap();
    assert!(
        readers.0.wait_for(seen, WAIT).await,
        "{:?}",
        readers.0.text()
    );
    (readers, handle)
}

#[tokio::test]
async fn a_plugin_sigkill_loses_and_repeats_no_line() {
    let mut plugin = plugin(json!({})).await;
    let task = counting_task("seq", 300, 10_000);
    let ((stdout, stderr), handle) = start_counting(&plugin, &task, "out-40\n").await;

    // The container keeps writing while no plugin runs.
    crash(&mut plugin, Duration::from_secs(1)).await;
    assert!(
        !stdout.ended() && !stderr.ended(),
        "the holder kept the FIFOs open, so logmon keeps reading"
    );
    assert_eq!(plugin.log_holder().status().await.unwrap().tasks, 1);
    relaunch_and_recover(&mut plugin, &task, handle).await;
    assert_counted(&plugin, &task, (&stdout, &stderr), 300).await;
    assert!(
        plugin
            .wait_for_stderr("task recovered", WAIT)
            .await
            .is_some(),
        "recovered"
    );
    destroy(&plugin, &task, true).await;
    assert!(
        stdout.wait_ended(WAIT).await,
        "the FIFO is closed at the end"
    );
}

#[tokio::test]
async fn a_crash_between_a_write_and_its_record_repeats_nothing() {
    // The plugin aborts right after its 31st log write, before recording
    // it: the one window where a relaunched plugin could send bytes twice.
    wasmdock_e2e::images::busybox();
    let mut plugin = PluginUnderTest::start_with_env(
        json!({}),
        "wasmdock",
        &[(crashpoint::ENV, "log-written:31")],
    )
    .await
    .unwrap();
    let task = counting_task("window", 120, 20_000);
    let readers = task.log_readers().unwrap();
    let handle = start(&plugin, &task).await.handle.unwrap();
    let status = plugin.wait_exit(WAIT).await.expect("the plugin aborts");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(6),
        "SIGABRT at the crash point"
    );
    assert!(
        plugin
            .stderr_lines()
            .iter()
            .any(|l| l.contains("crash point reached")),
        "it crashed where it was told"
    );
    let (stdout, stderr) = readers;
    // The unrecorded write did reach the FIFO through the holder.
    let delivered = stdout.text().len() + stderr.text().len();
    assert!(delivered > 0, "lines went out before the crash");
    plugin.remove_env(crashpoint::ENV);
    relaunch_and_recover(&mut plugin, &task, handle).await;
    assert_counted(&plugin, &task, (&stdout, &stderr), 120).await;
    destroy(&plugin, &task, true).await;
}

#[tokio::test]
async fn lines_written_while_no_plugin_ran_arrive_once_after_recovery() {
    let mut plugin = plugin(json!({})).await;
    let task = counting_task("gone", 80, 20_000);
    let ((stdout, stderr), handle) = start_counting(&plugin, &task, "out-10\n").await;
    // The container finishes while no plugin runs.
    crash(&mut plugin, Duration::from_secs(3)).await;
    assert!(
        !stdout.text().contains("out-79\n"),
        "nothing forwarded while down"
    );
    relaunch_and_recover(&mut plugin, &task, handle).await;
    assert_eq!(exit_code(&plugin, &task).await, 0);
    // The exit is reported after the last lines were forwarded.
    assert_eq!(stdout.text(), sequence("out", 80));
    assert_eq!(stderr.text(), sequence("err", 80));
    assert!(
        stdout.wait_ended(WAIT).await,
        "forwarding ended with the container"
    );
    destroy(&plugin, &task, true).await;
}

#[tokio::test]
async fn one_log_holder_per_node_in_its_own_process_group_and_gone_when_idle() {
    let plugin = plugin(json!({})).await;
    let tasks: Vec<_> = (0..3)
        .map(|i| {
            TaskBuilder::new(
                &format!("held{i}"),
                json!({ "image": BUSYBOX_1, "command": "sleep", "args": ["1000"] }),
            )
            .log_fifos()
            .build()
            .unwrap()
        })
        .collect();
    let mut readers = Vec::new();
    for task in &tasks {
        readers.push(task.log_readers().unwrap());
        start(&plugin, task).await;
    }
    let status = plugin.log_holder().status().await.expect("a holder runs");
    assert_eq!(status.tasks, 3, "one holder for every task");
    let plugin_pid = plugin.pid().unwrap();
    let holders: Vec<u32> = children(plugin_pid)
        .into_iter()
        .filter(|c| cmdline(*c).contains("log-holder"))
        .collect();
    assert_eq!(holders, vec![status.pid], "exactly one helper process");
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/exe", status.pid)).unwrap(),
        std::fs::read_link(format!("/proc/{plugin_pid}/exe")).unwrap(),
        "the holder is our own binary"
    );
    assert_ne!(
        process_group(status.pid),
        process_group(plugin_pid),
        "signals to the plugin's group do not reach the holder"
    );
    for task in &tasks {
        destroy(&plugin, task, true).await;
    }
    for (stdout, stderr) in &readers {
        assert!(stdout.wait_ended(WAIT).await && stderr.wait_ended(WAIT).await);
    }
    assert!(holder_exits(&plugin).await, "the holder exits when idle");
}

#[tokio::test]
async fn a_fast_writer_loses_nothing_to_log_rotation() {
    // Nomad's default container log options rotate every 2 MB and keep two
    // files; a follower of the logs API loses most of this output.
    let plugin = plugin(json!({})).await;
    let written: usize = 20_000_000;
    let task = TaskBuilder::new(
        "flood",
        json!({
            "image": BUSYBOX_1,
            "command": "sh",
            "args": ["-c", format!("yes 0123456789012345678901234567890123456789012345678901234567890123456789 | head -c {written}")],
        }),
    )
    .log_fifos()
    .build()
    .unwrap();
    let (stdout, _stderr) = task.log_readers().unwrap();
    start(&plugin, &task).await;
    assert_eq!(exit_code(&plugin, &task).await, 0);
    assert!(
        plugin
            .wait_for_stderr("forwarding from the json-file log", WAIT)
            .await
            .is_some(),
        "the json-file log was read directly"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while stdout.bytes().len() < written && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let bytes = stdout.bytes();
    assert_eq!(bytes.len(), written, "every byte arrived, none twice");
    assert!(
        bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .all(|l| l.starts_with(b"0123456789")),
        "lines arrive whole and in order"
    );
    destroy(&plugin, &task, true).await;
}

#[tokio::test]
async fn other_log_drivers_go_through_the_logs_api_and_resume_exactly() {
    let mut plugin = plugin(json!({})).await;
    let mut config = counting_config(150, 10_000);
    config["logging"] = json!({ "type": "local" });
    let task = TaskBuilder::new("localdriver", config)
        .log_fifos()
        .build()
        .unwrap();
    let ((stdout, stderr), handle) = start_counting(&plugin, &task, "out-30\n").await;
    assert!(
        !plugin
            .stderr_lines()
            .iter()
            .any(|l| l.contains("forwarding from the json-file log")),
        "the local driver is read through the API"
    );
    crash(&mut plugin, Duration::from_millis(700)).await;
    relaunch_and_recover(&mut plugin, &task, handle).await;
    assert_counted(&plugin, &task, (&stdout, &stderr), 150).await;
    destroy(&plugin, &task, true).await;
}
