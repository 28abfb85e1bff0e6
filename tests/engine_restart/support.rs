//! What the engine-restart tests share: numbered-output tasks, streams
//! read with a deadline (a stream that does not answer in time fails the
//! test naming itself), and the checks of numbered log lines.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::task::JoinHandle;
use tonic::{Status, Streaming};
use wasmdock_e2e::images::BUSYBOX_1;
use wasmdock_e2e::private_engine::PrivateEngine;
use wasmdock_e2e::task::duration;
use wasmdock_e2e::{PluginUnderTest, Task, TaskBuilder};
use wasmdock_host::reconciler::TEST_TIMING_ENV;
use wasmdock_host::rpc::proto::drivers::{
    self as pb, FingerprintRequest, TaskEventsRequest, TaskStatsRequest,
    fingerprint_response::HealthState,
};

/// Reconciler passes every second; containers older than two seconds are
/// fair game.
pub(crate) const TIMING: &str = "period=1s,creation_grace=2s";
/// The label the reconciler's native rule looks for.
pub(crate) const ALLOC_LABEL: &str = "com.hashicorp.nomad.alloc_id";
/// What an unreachable engine's fingerprint says.
pub(crate) const NO_ENGINE: &str = "Failed to connect to docker daemon";

/// A plugin driving `engine`, with the reconciler on when `reconcile`.
pub(crate) async fn plugin_for(engine: &PrivateEngine, reconcile: bool) -> PluginUnderTest {
    let config = json!({
        "endpoint": engine.endpoint(),
        "gc": { "dangling_containers": { "enabled": reconcile } },
    });
    PluginUnderTest::start_with_env(config, "wasmdock", &[(TEST_TIMING_ENV, TIMING)])
        .await
        .expect("the plugin starts")
}

/// A task printing `<tag> <n>` to stdout and `<tag>-err <n>` to stderr,
/// n = 1, 2, … every 100 ms, with log FIFOs. With `on_term`, SIGTERM makes
/// it exit with that code; without, it ignores SIGTERM (it is PID 1) and
/// only SIGKILL ends it. No network: the private engine has no bridge.
pub(crate) fn numbered_task(name: &str, tag: &str, on_term: Option<i32>) -> Task {
    let trap = on_term.map_or_else(String::new, |code| format!("trap 'exit {code}' TERM; "));
    let script = format!(
        "{trap}i=0; while :; do i=$((i+1)); echo \"{tag} $i\"; echo \"{tag}-err $i\" >&2; \
         sleep 0.1; done"
    );
    TaskBuilder::new(
        name,
        json!({
            "image": BUSYBOX_1,
            "command": "sh",
            "args": ["-c", script],
            "network_mode": "none",
        }),
    )
    .log_fifos()
    .build()
    .expect("task dir")
}

/// The numbers of `text`'s lines `<tag> <n>`, checked to run 1, 2, 3, …
/// with no gap and no repeat; the last number (0 for no line).
pub(crate) fn check_numbered(text: &str, tag: &str, what: &str) -> u64 {
    let mut expected = 1u64;
    for line in text.lines() {
        let number = line
            .strip_prefix(tag)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("{what}: unexpected line {line:?}"));
        assert_eq!(
            number, expected,
            "{what}: line {number} where {expected} was due (a gap or a repeat)"
        );
        expected += 1;
    }
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{what}: the last line is cut: {:?}",
        text.lines().last()
    );
    expected - 1
}

/// A Fingerprint stream read with deadlines.
#[derive(Debug)]
pub(crate) struct FingerprintWatch {
    stream: Streaming<pb::FingerprintResponse>,
}

impl FingerprintWatch {
    /// Opens the stream; its first answer comes at once.
    pub(crate) async fn open(plugin: &PluginUnderTest) -> Self {
        let stream = plugin
            .driver()
            .fingerprint(FingerprintRequest {})
            .await
            .expect("Fingerprint")
            .into_inner();
        Self { stream }
    }

    /// Reads fingerprints until one has health `want`; fails when none
    /// does within `within` (the stream wedged or kept the old state) or
    /// the stream ends.
    pub(crate) async fn until(
        &mut self,
        want: HealthState,
        within: Duration,
    ) -> pb::FingerprintResponse {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.stream.message()).await {
                Err(_) => {
                    panic!("the Fingerprint stream sent no {want:?} fingerprint within {within:?}")
                }
                Ok(Err(status)) => panic!("the Fingerprint stream failed: {status:?}"),
                Ok(Ok(None)) => panic!("the Fingerprint stream ended"),
                Ok(Ok(Some(fingerprint))) if fingerprint.health() == want => return fingerprint,
                Ok(Ok(Some(_))) => {}
            }
        }
    }
}

/// Health and description of a fresh Fingerprint stream's first answer.
pub(crate) async fn health_now(plugin: &PluginUnderTest) -> (HealthState, String) {
    let first = wasmdock_e2e::calls::first_fingerprint(plugin).await;
    (first.health(), first.health_description)
}

/// What the next read of a TaskStats stream gave.
#[derive(Debug)]
pub(crate) enum Next {
    /// A sample.
    Sample(Box<pb::TaskStatsResponse>),
    /// The stream ended cleanly.
    Ended,
    /// The stream failed.
    Failed(Status),
    /// Nothing within the time given.
    Silent,
}

/// A TaskStats stream of one task.
#[derive(Debug)]
pub(crate) struct StatsWatch {
    name: String,
    stream: Streaming<pb::TaskStatsResponse>,
}

impl StatsWatch {
    /// Opens a stream of `task`'s samples every second.
    pub(crate) async fn open(plugin: &PluginUnderTest, task: &Task, name: &str) -> Self {
        let stream = plugin
            .driver()
            .task_stats(TaskStatsRequest {
                task_id: task.id().to_owned(),
                collection_interval: Some(duration(Duration::from_secs(1))),
            })
            .await
            .unwrap_or_else(|status| panic!("TaskStats of {name}: {status:?}"))
            .into_inner();
        Self {
            name: name.to_owned(),
            stream,
        }
    }

    /// The next item within `within`.
    pub(crate) async fn next(&mut self, within: Duration) -> Next {
        match tokio::time::timeout(within, self.stream.message()).await {
            Err(_) => Next::Silent,
            Ok(Ok(Some(sample))) => Next::Sample(Box::new(sample)),
            Ok(Ok(None)) => Next::Ended,
            Ok(Err(status)) => Next::Failed(status),
        }
    }

    /// A sample within `within`, or a failure naming the stream.
    pub(crate) async fn sample(&mut self, within: Duration) -> pb::TaskStatsResponse {
        match self.next(within).await {
            Next::Sample(sample) => *sample,
            other => panic!(
                "TaskStats stream {}: no sample within {within:?} ({other:?})",
                self.name
            ),
        }
    }

    /// Reads until the stream ends, within `within`; fails naming the
    /// stream when it stays open (wedged) or fails.
    pub(crate) async fn ends(&mut self, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Next::Ended => return,
                Next::Sample(_) => {}
                Next::Silent => panic!(
                    "TaskStats stream {} wedged: still open {within:?} after its task ended",
                    self.name
                ),
                Next::Failed(status) => {
                    panic!(
                        "TaskStats stream {} failed instead of ending: {status:?}",
                        self.name
                    )
                }
            }
        }
    }
}

/// A TaskEvents stream kept open through the test.
#[derive(Debug)]
pub(crate) struct EventsWatch {
    stream: Streaming<pb::DriverTaskEvent>,
}

impl EventsWatch {
    /// Opens the stream.
    pub(crate) async fn open(plugin: &PluginUnderTest) -> Self {
        let stream = plugin
            .driver()
            .task_events(TaskEventsRequest {})
            .await
            .expect("TaskEvents")
            .into_inner();
        Self { stream }
    }

    /// Fails unless the stream is still open and healthy (events that
    /// arrived meanwhile are fine).
    pub(crate) async fn still_open(&mut self) {
        loop {
            match tokio::time::timeout(Duration::from_millis(200), self.stream.message()).await {
                Err(_) => return,
                Ok(Ok(Some(_))) => {}
                Ok(Ok(None)) => panic!("the TaskEvents stream ended"),
                Ok(Err(status)) => panic!("the TaskEvents stream failed: {status:?}"),
            }
        }
    }
}

/// WaitTask running in the background: its answer and when it came.
pub(crate) type Waiter = JoinHandle<(Result<pb::WaitTaskResponse, Status>, Instant)>;

/// Starts WaitTask for `task` in the background.
pub(crate) fn spawn_wait(plugin: &PluginUnderTest, task: &Task) -> Waiter {
    let mut driver = plugin.driver();
    let request = task.wait_request();
    tokio::spawn(async move {
        let answer = driver
            .wait_task(request)
            .await
            .map(tonic::Response::into_inner);
        (answer, Instant::now())
    })
}

/// The result of a background WaitTask within `within` and when it came,
/// or a failure naming the task.
pub(crate) async fn waited(
    waiter: &mut Waiter,
    name: &str,
    within: Duration,
) -> (pb::WaitTaskResponse, Instant) {
    match tokio::time::timeout(within, waiter).await {
        Err(_) => panic!("WaitTask of {name} wedged: no result within {within:?}"),
        Ok(Err(err)) => panic!("WaitTask of {name} panicked: {err}"),
        Ok(Ok((Err(status), _))) => panic!("WaitTask of {name} failed: {status:?}"),
        Ok(Ok((Ok(response), at))) => (response, at),
    }
}

/// Ids the reconciler logged as removed.
pub(crate) fn removed_by_reconciler(plugin: &PluginUnderTest) -> Vec<String> {
    plugin
        .stderr_lines()
        .iter()
        .filter(|line| line.contains("removed dangling container"))
        .map(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v["container_id"].as_str().map(str::to_owned))
                .unwrap_or_else(|| panic!("a removal line without container_id: {line}"))
        })
        .collect()
}

/// Runs an untracked container labelled as Nomad's in `engine`: the
/// reconciler must remove it. Returns its id.
pub(crate) fn stray(engine: &PrivateEngine, name: &str) -> String {
    let label = format!("{ALLOC_LABEL}={}", wasmdock_e2e::ids::uuid_v4());
    let name = format!("{name}-{}", wasmdock_e2e::run_id());
    engine
        .docker(&[
            "run",
            "-d",
            "--network",
            "none",
            "--name",
            &name,
            "--label",
            &label,
            BUSYBOX_1,
            "sleep",
            "1000",
        ])
        .expect("docker run the stray")
}

/// Waits up to `within` for `container` to be gone from `engine`.
pub(crate) async fn gone_within(engine: &PrivateEngine, container: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if engine.inspect(container).expect("docker inspect").is_none() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

/// Waits until `reader` has at least `lines` complete lines.
pub(crate) async fn lines_at_least(
    reader: &wasmdock_e2e::task::FifoReader,
    lines: usize,
    within: Duration,
) -> bool {
    let deadline = Instant::now() + within;
    while reader.text().lines().count() < lines {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

/// `State` of `container` in `engine` (it must exist).
pub(crate) fn state(engine: &PrivateEngine, container: &str) -> serde_json::Value {
    engine
        .inspect(container)
        .expect("docker inspect")
        .unwrap_or_else(|| panic!("container {container} is gone"))["State"]
        .clone()
}

/// Seconds since `since`, for the record.
pub(crate) fn secs(since: Instant) -> f64 {
    since.elapsed().as_secs_f64()
}
