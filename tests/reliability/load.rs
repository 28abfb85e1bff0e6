//! Load: 200 StartTask calls at once, then 300 running tasks, each with a
//! TaskStats stream and a log forwarder into logmon-like FIFO readers.
//! Proves: no call wedges (every one is bounded and a timeout names it),
//! every task's stream yields samples and every log carries its lines, and
//! the plugin's memory stays bounded and returns once the tasks are gone.
//! The latency and memory figures are printed for the record.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use serde_json::json;
use tokio_stream::StreamExt as _;
use wasmdock_e2e::bench::vm_rss_kib;
use wasmdock_e2e::calls::plugin;
use wasmdock_e2e::docker::docker;
use wasmdock_e2e::images::BUSYBOX_1;
use wasmdock_e2e::task::{FifoReader, duration};
use wasmdock_e2e::{Cleanup, PluginUnderTest, Task, TaskBuilder, require_docker, run_id};
use wasmdock_host::rpc::proto::drivers::TaskStatsRequest;

use super::{ALONE, percentiles};

const FIRST: usize = 200;
const TOTAL: usize = 300;
/// Forced DestroyTask calls in flight at once when the tasks are taken down.
const DESTROYS_IN_FLIGHT: usize = 50;
/// Every call and wait of this test is bounded by this.
const BOUND: Duration = Duration::from_secs(180);
/// The plugin's resident memory may not exceed this with 300 tasks.
const RSS_CEILING_MIB: u64 = 512;

/// A task printing a numbered line a second, in the network namespace of
/// container `network` (see [`network_holder`]).
fn ticker(i: usize, network: &str) -> Task {
    TaskBuilder::new(
        &format!("load{i}"),
        json!({
            "image": BUSYBOX_1,
            "network_mode": format!("container:{network}"),
            "command": "sh",
            "args": ["-c", "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 1; done"],
        }),
    )
    .memory(16, 0)
    .cpu_shares(10)
    .log_fifos()
    .build()
    .unwrap()
}

/// One container whose network namespace every task joins, as a Nomad
/// group's tasks join their alloc's pause container. Docker 20.10's network
/// code (libnetwork) deadlocks when many containers with endpoints of their
/// own exit at once: this test wedged the engine for good that way, with
/// goroutines stuck in `sandbox.Delete` and `endpoint.Delete` waiting on each
/// other's locks. A task sharing another container's namespace has no
/// endpoint, so the teardown never enters that code; the plugin's network
/// handling is tested in `tests/e2e/containers.rs`.
fn network_holder(cleanup: &Cleanup) -> String {
    let name = format!("load-network-{}", run_id());
    docker(&["run", "-d", "--name", &name, BUSYBOX_1, "sleep", "100000"]).unwrap();
    cleanup.container(&name);
    name
}

async fn bounded<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(BOUND, future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {BOUND:?}: a wedge"))
}

/// Starts `tasks` all at once; returns their readers and StartTask latencies.
async fn start_at_once(
    plugin: &PluginUnderTest,
    tasks: &[Task],
) -> (Vec<(FifoReader, FifoReader)>, Vec<Duration>) {
    let readers = tasks.iter().map(|t| t.log_readers().unwrap()).collect();
    let calls = tasks.iter().map(|task| {
        let mut driver = plugin.driver();
        async move {
            let began = Instant::now();
            bounded(
                &format!("StartTask {}", task.name()),
                driver.start_task(task.start_request()),
            )
            .await
            .unwrap_or_else(|e| panic!("StartTask {}: {e}", task.name()));
            began.elapsed()
        }
    });
    (readers, join_all(calls).await)
}

fn mib(pid: u32) -> f64 {
    vm_rss_kib(pid) as f64 / 1024.0
}

#[tokio::test]
async fn three_hundred_tasks_with_stats_and_logs() {
    require_docker();
    let _alone = ALONE.lock().await;
    let plugin = plugin(json!({})).await;
    let pid = plugin.pid().unwrap();
    let idle = mib(pid);
    let cleanup = Cleanup::new();
    let network = network_holder(&cleanup);
    let tasks: Vec<Task> = (0..TOTAL).map(|i| ticker(i, &network)).collect();

    let began = Instant::now();
    let (mut readers, latencies) = start_at_once(&plugin, &tasks[..FIRST]).await;
    wasmdock_e2e::figure!(
        "{FIRST} StartTask calls at once: {} wall, {}",
        humanize(began.elapsed()),
        percentiles(latencies)
    );
    let began = Instant::now();
    let (more, latencies) = start_at_once(&plugin, &tasks[FIRST..]).await;
    readers.extend(more);
    wasmdock_e2e::figure!(
        "{} more with {FIRST} running: {} wall, {}",
        TOTAL - FIRST,
        humanize(began.elapsed()),
        percentiles(latencies)
    );

    // One TaskStats stream per task, each read until it has shown two
    // samples; the logs must show lines meanwhile.
    let streams = tasks.iter().map(|task| {
        let mut driver = plugin.driver();
        async move {
            let opened = Instant::now();
            let mut stream = bounded(
                &format!("TaskStats {}", task.name()),
                driver.task_stats(TaskStatsRequest {
                    task_id: task.id().to_owned(),
                    collection_interval: Some(duration(Duration::from_secs(1))),
                }),
            )
            .await
            .unwrap_or_else(|e| panic!("TaskStats {}: {e}", task.name()))
            .into_inner();
            let mut first = None;
            for _ in 0..2 {
                bounded(&format!("a sample of {}", task.name()), stream.next())
                    .await
                    .unwrap_or_else(|| panic!("the stream of {} ended", task.name()))
                    .unwrap_or_else(|e| panic!("TaskStats {}: {e}", task.name()));
                first.get_or_insert(opened.elapsed());
            }
            (stream, first.unwrap_or_default())
        }
    });
    let (streams, first_samples): (Vec<_>, Vec<_>) = join_all(streams).await.into_iter().unzip();
    wasmdock_e2e::figure!(
        "{TOTAL} TaskStats streams at 1 s: first sample after {}",
        percentiles(first_samples)
    );
    for ((stdout, _), task) in readers.iter().zip(&tasks) {
        assert!(
            bounded("a log line", stdout.wait_for("tick-3\n", BOUND)).await,
            "{} forwards its log: {:?}",
            task.name(),
            stdout.text()
        );
    }
    let loaded = mib(pid);
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count());
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    wasmdock_e2e::figure!(
        "plugin with {TOTAL} tasks, streams and forwarders: RSS {loaded:.1} MiB (idle {idle:.1} MiB, {:.0} KiB per task), {threads} threads, {fds} fds",
        (loaded - idle) * 1024.0 / TOTAL as f64
    );
    assert!(
        loaded < RSS_CEILING_MIB as f64,
        "the plugin's memory is bounded: {loaded:.1} MiB with {TOTAL} tasks"
    );
    drop(streams);

    // Taken down like a drain with a parallelism limit: at most
    // DESTROYS_IN_FLIGHT forced DestroyTask calls at a time (all 300 at once
    // make containerd miss its own 10 s exit deadlines on two cores).
    let in_flight = tokio::sync::Semaphore::new(DESTROYS_IN_FLIGHT);
    let began = Instant::now();
    let destroys = tasks.iter().map(|task| {
        let mut driver = plugin.driver();
        let in_flight = &in_flight;
        async move {
            let _permit = in_flight.acquire().await.expect("never closed");
            bounded(
                &format!("DestroyTask {}", task.name()),
                driver.destroy_task(task.destroy_request(true)),
            )
            .await
            .unwrap_or_else(|e| panic!("DestroyTask {}: {e}", task.name()));
        }
    });
    join_all(destroys).await;
    wasmdock_e2e::figure!(
        "{TOTAL} DestroyTask(force), {DESTROYS_IN_FLIGHT} at a time: {} wall",
        humanize(began.elapsed())
    );
    let left = docker(&[
        "ps",
        "-a",
        "--format",
        "{{.Names}}",
        "--filter",
        &format!("name={}", run_id()),
    ])
    .unwrap();
    let left: Vec<&str> = left.lines().filter(|name| *name != network).collect();
    assert_eq!(left, Vec::<&str>::new(), "containers left behind");
    for ((stdout, stderr), task) in readers.iter().zip(&tasks) {
        assert!(
            stdout.wait_ended(BOUND).await && stderr.wait_ended(BOUND).await,
            "{}: forwarding ends with the task",
            task.name()
        );
    }
    // For the record: what is left once the tasks are gone (the allocator
    // keeps some of it; the ceiling above is the bound).
    tokio::time::sleep(Duration::from_secs(2)).await;
    wasmdock_e2e::figure!("plugin after the tasks are gone: RSS {:.1} MiB", mib(pid));
}

fn humanize(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}
