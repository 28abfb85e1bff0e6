//! The plugin is SIGKILLed under 50 running tasks, some of which exit while
//! it is down (they wait for a marker file the test writes into their task
//! dir after the kill, so they certainly run at the kill and exit after
//! it); it is relaunched and every task recovered with RecoverTask from its
//! StartTask handle, as a Nomad client does after a plugin crash.
//! Proves: every task is tracked again; the ones that exited report their
//! own exit codes and WaitTask resolves for all; logs carry on with no gap
//! and no repeat (`assert_no_gap`); nothing is orphaned
//! (containers, the old plugin process, the log holder once the tasks are
//! gone).

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::json;
use wasmdock_e2e::calls::plugin;
use wasmdock_e2e::docker::docker;
use wasmdock_e2e::images::BUSYBOX_1;
use wasmdock_e2e::task::FifoReader;
use wasmdock_e2e::{PluginUnderTest, Task, TaskBuilder, require_docker, run_id};
use wasmdock_host::rpc::proto::drivers::{TaskHandle, TaskState};

use super::{ALONE, assert_no_gap, percentiles, processes_with};

const LONG: usize = 35;
const SHORT: usize = 15;
/// Lines the short tasks print before exiting, 100 ms apart.
const SHORT_LINES: usize = 20;
/// Of those, the lines they print before waiting for [`MARKER`]; the rest
/// come while the plugin is down.
const SHORT_LINES_BEFORE_MARKER: usize = 10;
/// The file, in a short task's `local` dir, that lets it go on to its
/// exit. The test writes it after the SIGKILL.
const MARKER: &str = "plugin-killed";
const WAIT: Duration = Duration::from_secs(60);

/// A task printing `out-<i>` and `err-<i>` every 100 ms, forever or for
/// `lines` lines and then exiting with `code`; one that exits waits for
/// [`MARKER`] after [`SHORT_LINES_BEFORE_MARKER`] lines.
fn counting(name: &str, lines: Option<(usize, i32)>) -> Task {
    let script = match lines {
        None => "i=0; while true; do echo out-$i; echo err-$i >&2; i=$((i+1)); usleep 100000; done"
            .to_owned(),
        Some((n, code)) => format!(
            "i=0; while [ $i -lt {n} ]; do \
               if [ $i -eq {SHORT_LINES_BEFORE_MARKER} ]; then \
                 while [ ! -e /local/{MARKER} ]; do usleep 50000; done; \
               fi; \
               echo out-$i; echo err-$i >&2; i=$((i+1)); usleep 100000; \
             done; exit {code}"
        ),
    };
    TaskBuilder::new(
        name,
        json!({ "image": BUSYBOX_1, "command": "sh", "args": ["-c", script] }),
    )
    .log_fifos()
    .build()
    .unwrap()
}

struct Running {
    task: Task,
    readers: (FifoReader, FifoReader),
    handle: TaskHandle,
    /// The exit code, for the tasks that exit on their own.
    exits_with: Option<i32>,
}

async fn start_all(plugin: &PluginUnderTest, tasks: Vec<(Task, Option<i32>)>) -> Vec<Running> {
    let driver = plugin.driver();
    let started = tasks.into_iter().map(|(task, exits_with)| {
        let mut driver = driver.clone();
        async move {
            let readers = task.log_readers().unwrap();
            let began = Instant::now();
            let response = driver
                .start_task(task.start_request())
                .await
                .unwrap_or_else(|e| panic!("StartTask {}: {e}", task.name()))
                .into_inner();
            (
                Running {
                    task,
                    readers,
                    handle: response.handle.expect("a handle"),
                    exits_with,
                },
                began.elapsed(),
            )
        }
    });
    let (running, latencies): (Vec<_>, Vec<_>) = join_all(started).await.into_iter().unzip();
    wasmdock_e2e::figure!(
        "StartTask of {} tasks at once: {}",
        running.len(),
        percentiles(latencies)
    );
    running
}

#[tokio::test]
async fn fifty_tasks_survive_a_plugin_sigkill() {
    require_docker();
    let _alone = ALONE.lock().await;
    let mut plugin = plugin(json!({})).await;

    let long: Vec<_> = (0..LONG)
        .map(|i| (counting(&format!("long{i}"), None), None))
        .collect();
    let long = start_all(&plugin, long).await;
    for running in &long {
        assert!(
            running.readers.0.wait_for("out-5\n", WAIT).await,
            "{} prints",
            running.task.name()
        );
    }
    // The short ones print half their lines, wait for the marker the test
    // writes once the plugin is dead, then print the rest and exit with
    // their own code: that half, and the exit, happen while no plugin runs.
    let short: Vec<_> = (0..SHORT)
        .map(|i| {
            let code = 10 + i as i32;
            (
                counting(&format!("short{i}"), Some((SHORT_LINES, code))),
                Some(code),
            )
        })
        .collect();
    let short = start_all(&plugin, short).await;
    let old_pid = plugin.pid().expect("a running plugin");
    // Each task joins the node's log holder as its forwarding starts.
    let deadline = Instant::now() + WAIT;
    let holder = loop {
        let status = plugin.log_holder().status().await.expect("a log holder");
        if status.tasks == LONG + SHORT || Instant::now() > deadline {
            break status;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        holder.tasks,
        LONG + SHORT,
        "the log holder holds every task's FIFOs"
    );
    // The short ones are waiting for the marker: running, their first
    // half printed.
    let waiting = format!("out-{}\n", SHORT_LINES_BEFORE_MARKER - 1);
    for running in &short {
        assert!(
            running.readers.0.wait_for(&waiting, WAIT).await,
            "{} prints",
            running.task.name()
        );
    }
    for (running, state) in short.iter().zip(states(&short)) {
        assert!(
            state.starts_with("running "),
            "{} runs at the kill: {state}",
            running.task.name()
        );
    }

    plugin.kill().await.unwrap();
    let killed = Instant::now();
    let before: Vec<usize> = long
        .iter()
        .map(|r| super::numbers(&r.readers.0.text(), "out").len())
        .collect();
    for running in &short {
        std::fs::write(running.task.local_dir().join(MARKER), "").unwrap();
    }
    // They finish and exit while no plugin runs.
    let expected: Vec<String> = short
        .iter()
        .map(|r| format!("exited {}", r.exits_with.unwrap()))
        .collect();
    let deadline = Instant::now() + WAIT;
    let mut now = states(&short);
    while now != expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        now = states(&short);
    }
    for ((running, state), expected) in short.iter().zip(&now).zip(&expected) {
        assert_eq!(
            state,
            expected,
            "{} exited with its own code while the plugin was down",
            running.task.name()
        );
    }
    assert!(
        !std::path::Path::new(&format!("/proc/{old_pid}")).exists(),
        "the killed plugin is gone"
    );
    assert!(
        processes_with("log-holder").contains(&holder.pid),
        "the log holder outlived the plugin"
    );

    plugin.relaunch().await.unwrap();
    let relaunched = Instant::now();
    let all: Vec<&Running> = long.iter().chain(short.iter()).collect();
    let driver = plugin.driver();
    let recoveries = all.iter().map(|running| {
        let mut driver = driver.clone();
        async move {
            let began = Instant::now();
            driver
                .recover_task(running.task.recover_request(running.handle.clone()))
                .await
                .unwrap_or_else(|e| panic!("RecoverTask {}: {e}", running.task.name()));
            began.elapsed()
        }
    });
    let latencies = join_all(recoveries).await;
    wasmdock_e2e::figure!(
        "RecoverTask of {} tasks at once after a SIGKILL: {}; all recovered {:.1} s after the relaunch, {:.1} s after the kill",
        all.len(),
        percentiles(latencies),
        relaunched.elapsed().as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );

    // Every task is tracked again, in the state Docker knows.
    for running in &all {
        let status = plugin
            .driver()
            .inspect_task(running.task.inspect_request())
            .await
            .unwrap_or_else(|e| panic!("InspectTask {}: {e}", running.task.name()))
            .into_inner()
            .task
            .expect("a status");
        let expected = if running.exits_with.is_some() {
            TaskState::Exited
        } else {
            TaskState::Running
        };
        assert_eq!(status.state(), expected, "{}", running.task.name());
    }
    let mut streams = 0;
    // The ones that exited while nobody watched: their own codes, and
    // every one of their lines.
    for running in &short {
        let result = wait_result(&plugin, &running.task).await;
        assert_eq!(
            Some(result.exit_code),
            running.exits_with,
            "{}",
            running.task.name()
        );
        for (reader, prefix) in [(&running.readers.0, "out"), (&running.readers.1, "err")] {
            let last = format!("{prefix}-{}\n", SHORT_LINES - 1);
            assert!(
                reader.wait_for(&last, WAIT).await,
                "{}",
                running.task.name()
            );
            let lines = assert_no_gap(&reader.text(), prefix, running.task.name());
            assert_eq!(lines, SHORT_LINES, "{}", running.task.name());
            streams += 1;
        }
    }
    // The long ones carry on where they were.
    for (running, before) in long.iter().zip(&before) {
        let next = format!("out-{}\n", before + 20);
        assert!(
            running.readers.0.wait_for(&next, WAIT).await,
            "{} goes on after the relaunch",
            running.task.name()
        );
    }
    let stops = long.iter().map(|running| {
        let mut driver = plugin.driver();
        async move {
            driver
                .stop_task(running.task.stop_request(Duration::from_secs(2), ""))
                .await
                .unwrap_or_else(|e| panic!("StopTask {}: {e}", running.task.name()));
        }
    });
    join_all(stops).await;
    for (running, before) in long.iter().zip(&before) {
        let result = wait_result(&plugin, &running.task).await;
        assert_ne!(result.exit_code, 0, "{} was stopped", running.task.name());
        for (reader, prefix) in [(&running.readers.0, "out"), (&running.readers.1, "err")] {
            assert!(
                reader.wait_ended(WAIT).await,
                "{} {prefix}: forwarding ends with the container",
                running.task.name()
            );
            let lines = assert_no_gap(&reader.text(), prefix, running.task.name());
            assert!(lines > *before + 20, "{}", running.task.name());
            streams += 1;
        }
    }
    let destroys = all.iter().map(|running| {
        let mut driver = plugin.driver();
        async move {
            driver
                .destroy_task(running.task.destroy_request(true))
                .await
                .unwrap_or_else(|e| panic!("DestroyTask {}: {e}", running.task.name()));
        }
    });
    join_all(destroys).await;
    wasmdock_e2e::figure!(
        "logs across the SIGKILL: {streams} streams, none with a gap or a repeat"
    );

    // Nothing orphaned: no container of this run, no holder once idle.
    let left = docker(&[
        "ps",
        "-a",
        "--filter",
        &format!("name={}", run_id()),
        "--format",
        "{{.Names}}",
    ])
    .unwrap();
    assert_eq!(left.trim(), "", "containers left behind");
    let deadline = Instant::now() + WAIT;
    while plugin.log_holder().status().await.is_ok() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        plugin.log_holder().status().await.is_err(),
        "the log holder exits once its tasks are gone"
    );
    // It exits; its parent, the killed plugin, is gone, so whoever adopted
    // it reaps it (a zombie until then holds no resources).
    let state = std::fs::read_to_string(format!("/proc/{}/stat", holder.pid))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next())
        });
    assert!(
        matches!(state, None | Some('Z')),
        "the holder process has exited (state {state:?})"
    );
    plugin.shutdown().await.unwrap();
}

/// `<status> <exit code>` of each task's container, as Docker has it.
fn states(tasks: &[Running]) -> Vec<String> {
    let mut args = vec![
        "inspect".to_owned(),
        "--format".to_owned(),
        "{{.State.Status}} {{.State.ExitCode}}".to_owned(),
    ];
    args.extend(tasks.iter().map(|r| r.task.container_name()));
    let out = docker(&args).unwrap();
    let states: Vec<String> = out.lines().map(str::to_owned).collect();
    assert_eq!(states.len(), tasks.len(), "{out}");
    states
}

async fn wait_result(
    plugin: &PluginUnderTest,
    task: &Task,
) -> wasmdock_host::rpc::proto::drivers::ExitResult {
    tokio::time::timeout(WAIT, plugin.driver().wait_task(task.wait_request()))
        .await
        .unwrap_or_else(|_| panic!("WaitTask {} did not resolve", task.name()))
        .unwrap_or_else(|e| panic!("WaitTask {}: {e}", task.name()))
        .into_inner()
        .result
        .expect("a result")
}
