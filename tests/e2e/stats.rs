//! TaskStats against real containers: a CPU burner shows CPU, memory is
//! measured, the cgroup and Docker-API sources agree, streams share one
//! sampler, and cancellation and task exit end the stream.

use std::time::{Duration, Instant};

use serde_json::json;
use tonic::Streaming;
use wasmdock_e2e::calls::{destroy, plugin, start, task};
use wasmdock_e2e::images::BUSYBOX_1;
use wasmdock_e2e::plugin::{NODE_COMPUTE_MHZ, NODE_CORES};
use wasmdock_e2e::task::duration;
use wasmdock_e2e::{PluginUnderTest, Task};
use wasmdock_host::rpc::proto::drivers::{
    self as pb, TaskStatsRequest, TaskStatsResponse, cpu_usage, memory_usage,
};
use wasmdock_host::rpc::status::recoverable_flag;

const WAIT: Duration = Duration::from_secs(20);

fn burner(name: &str) -> Task {
    task(
        name,
        json!({ "image": BUSYBOX_1, "command": "sh", "args": ["-c", "while :; do :; done"] }),
    )
}

async fn open(
    plugin: &PluginUnderTest,
    task: &Task,
    interval: Duration,
) -> Streaming<TaskStatsResponse> {
    plugin
        .driver()
        .task_stats(TaskStatsRequest {
            task_id: task.id().to_owned(),
            collection_interval: Some(duration(interval)),
        })
        .await
        .unwrap_or_else(|status| panic!("TaskStats: {status:?}"))
        .into_inner()
}

async fn next(stream: &mut Streaming<TaskStatsResponse>) -> pb::TaskStats {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("a sample in time")
        .expect("no stream error")
        .expect("the stream is open")
        .stats
        .expect("stats set")
}

fn usage(stats: &pb::TaskStats) -> (&pb::CpuUsage, &pb::MemoryUsage) {
    let agg = stats
        .agg_resource_usage
        .as_ref()
        .expect("agg_resource_usage set");
    (
        agg.cpu.as_ref().expect("cpu set"),
        agg.memory.as_ref().expect("memory set"),
    )
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::test]
async fn a_cpu_burner_shows_cpu_ticks_and_memory() {
    let plugin = plugin(json!({})).await;
    let task = burner("burn");
    start(&plugin, &task).await;
    let opened = Instant::now();
    let mut stream = open(&plugin, &task, Duration::from_secs(1)).await;
    let first = next(&mut stream).await;
    assert!(
        opened.elapsed() < Duration::from_secs(2),
        "the first sample comes promptly"
    );
    let mut samples = vec![first];
    for _ in 0..3 {
        samples.push(next(&mut stream).await);
    }
    let mut previous_time = None;
    for stats in &samples {
        let timestamp = stats
            .timestamp
            .map(|t| (t.seconds, t.nanos))
            .expect("timestamp set");
        if let Some(previous) = previous_time {
            assert!(timestamp > previous, "timestamps advance");
        }
        previous_time = Some(timestamp);
        let (cpu, memory) = usage(stats);
        assert!(cpu.percent > 30.0, "a busy loop uses CPU: {cpu:?}");
        let expected_ticks = cpu.percent / 100.0 * NODE_COMPUTE_MHZ as f64 / f64::from(NODE_CORES);
        assert!((cpu.total_ticks - expected_ticks).abs() < 1e-6, "{cpu:?}");
        assert!(cpu.user_mode + cpu.system_mode > 0.0, "{cpu:?}");
        assert!(memory.rss > 0 && memory.usage > 0, "{memory:?}");
        assert!(
            cpu.measured_fields
                .contains(&(cpu_usage::Fields::Percent as i32))
        );
        assert!(
            cpu.measured_fields
                .contains(&(cpu_usage::Fields::TotalTicks as i32))
        );
        assert!(
            memory
                .measured_fields
                .contains(&(memory_usage::Fields::Rss as i32))
        );
        assert!(stats.resource_usage_by_pid.is_empty());
    }
    let ticks: Vec<f64> = samples.iter().map(|s| usage(s).0.total_ticks).collect();
    assert!(
        ticks.windows(2).any(|w| w[0] != w[1]),
        "ticks are measured afresh each time: {ticks:?}"
    );
    destroy(&plugin, &task, true).await;
}

#[tokio::test]
async fn cgroup_and_docker_api_sources_agree() {
    // Two plugins watch the same container: one reads its cgroup, the
    // other asks Docker's stats API (it adopts the task with RecoverTask).
    let cgroup = plugin(json!({ "stats_source": "cgroup" })).await;
    let api = plugin(json!({ "stats_source": "docker" })).await;
    let task = burner("agree");
    let handle = start(&cgroup, &task).await.handle.unwrap();
    api.driver()
        .recover_task(task.recover_request(handle))
        .await
        .expect("the second plugin adopts the task");
    let mut from_cgroup = open(&cgroup, &task, Duration::from_secs(1)).await;
    let mut from_api = open(&api, &task, Duration::from_secs(1)).await;
    let (mut cpu_a, mut cpu_b, mut mem_a, mut mem_b) = (vec![], vec![], vec![], vec![]);
    for _ in 0..5 {
        let (a, b) = tokio::join!(next(&mut from_cgroup), next(&mut from_api));
        cpu_a.push(usage(&a).0.percent);
        cpu_b.push(usage(&b).0.percent);
        mem_a.push(usage(&a).1.usage as f64);
        mem_b.push(usage(&b).1.usage as f64);
    }
    let (cpu_a, cpu_b) = (median(cpu_a), median(cpu_b));
    let (mem_a, mem_b) = (median(mem_a), median(mem_b));
    // Stated tolerance: CPU percent within 15 points (the two sample over
    // different instants of a busy loop), memory usage within 10 % or 1 MiB.
    assert!(
        (cpu_a - cpu_b).abs() <= 15.0,
        "cpu: cgroup {cpu_a:.1} vs api {cpu_b:.1}"
    );
    assert!(
        (mem_a - mem_b).abs() <= (mem_b * 0.10).max(1_048_576.0),
        "memory usage: cgroup {mem_a} vs api {mem_b}"
    );
    assert!(
        cgroup
            .wait_for_stderr("\"source\":\"cgroup\"", WAIT)
            .await
            .is_some(),
        "the source shows in the log"
    );
    assert!(
        api.wait_for_stderr("\"source\":\"docker-api\"", WAIT)
            .await
            .is_some()
    );
    destroy(&cgroup, &task, true).await;
}

#[tokio::test]
async fn streams_of_a_task_share_one_sampler_and_cancelling_stops_it() {
    let plugin = plugin(json!({})).await;
    let task = burner("shared");
    start(&plugin, &task).await;
    let mut first = open(&plugin, &task, Duration::from_secs(1)).await;
    let mut second = open(&plugin, &task, Duration::from_secs(1)).await;
    next(&mut first).await;
    next(&mut second).await;
    let started = plugin
        .stderr_lines()
        .iter()
        .filter(|l| l.contains("stats sampler started"))
        .count();
    assert_eq!(started, 1, "one sampler for both streams");
    drop(first);
    drop(second);
    assert!(
        plugin
            .wait_for_stderr("stats sampler stopped: no stream left", WAIT)
            .await
            .is_some(),
        "cancelling every stream stops the sampler"
    );
    destroy(&plugin, &task, true).await;
}

#[tokio::test]
async fn the_stream_ends_when_the_task_exits_and_a_stopped_task_is_refused() {
    let plugin = plugin(json!({})).await;
    let task = task(
        "brief",
        json!({ "image": BUSYBOX_1, "command": "sleep", "args": ["3"] }),
    );
    start(&plugin, &task).await;
    let mut stream = open(&plugin, &task, Duration::from_secs(1)).await;
    next(&mut stream).await;
    let end = tokio::time::timeout(WAIT, async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => {}
                Ok(None) => return Ok(()),
                Err(status) => return Err(status),
            }
        }
    })
    .await
    .expect("the stream ends after the exit");
    assert!(end.is_ok(), "it ends cleanly: {end:?}");
    let status = plugin
        .driver()
        .task_stats(TaskStatsRequest {
            task_id: task.id().to_owned(),
            collection_interval: Some(duration(Duration::from_secs(1))),
        })
        .await
        .expect_err("no stats for a stopped container");
    assert!(status.message().contains("container stopped"), "{status:?}");
    assert_eq!(recoverable_flag(&status), Some(true), "{status:?}");
    destroy(&plugin, &task, true).await;
}

#[tokio::test]
async fn a_recovered_task_is_sampled_from_its_cgroup_again() {
    let mut plugin = plugin(json!({})).await;
    let task = burner("again");
    let handle = start(&plugin, &task).await.handle.unwrap();
    next(&mut open(&plugin, &task, Duration::from_secs(1)).await).await;
    plugin.restart().await.unwrap();
    plugin
        .driver()
        .recover_task(task.recover_request(handle))
        .await
        .expect("RecoverTask");
    let mut stream = open(&plugin, &task, Duration::from_secs(1)).await;
    let (cpu, memory) = {
        let stats = next(&mut stream).await;
        let (cpu, memory) = usage(&stats);
        (cpu.clone(), memory.clone())
    };
    assert!(cpu.percent > 30.0 && memory.rss > 0, "{cpu:?} {memory:?}");
    let started: Vec<String> = plugin
        .stderr_lines()
        .into_iter()
        .filter(|l| l.contains("stats sampler started"))
        .collect();
    assert_eq!(
        started.len(),
        2,
        "located before and after the restart: {started:?}"
    );
    assert!(
        started.iter().all(|l| l.contains("\"source\":\"cgroup\"")),
        "{started:?}"
    );
    destroy(&plugin, &task, true).await;
}
