//! Engine restarts under the plugin.
//!
//! Each test runs a private `dockerd` of its own (see
//! `wasmdock_e2e::private_engine`) — the node's shared engine is never
//! stopped — points the plugin at it with `endpoint`, and stops and starts
//! it under running tasks with open streams:
//!
//! * live-restore off: the Fingerprint stream turns unhealthy within its
//!   period and healthy again after the restart; every task's WaitTask
//!   resolves with the exit Docker records (a SIGTERM trap's code, 137 for
//!   a task that ignored SIGTERM); TaskStats streams end; log FIFOs reach
//!   end-of-file holding exactly what `docker logs` holds; StartTask while
//!   the engine is down fails recoverably, and after the restart works;
//!   DestroyTask works; the reconciler removed only a stray.
//! * live-restore on: the containers outlive the engine; the tasks stay
//!   tracked (InspectTask running, WaitTask pending until StopTask, then
//!   the code Docker records); logs continue with no gap and no repeat;
//!   stats flow before, during and after; the reconciler, proven active by
//!   a stray it removes, removes none of the tracked containers.
//! * the plugin SIGKILLed and relaunched while the engine is down:
//!   RecoverTask fails cleanly and recoverably, and succeeds once the
//!   engine is back, with logs resuming exactly.
//!
//! Every wait is bounded and a stream that does not answer in time fails
//! the test naming itself. Timings are printed for the record.

mod support;

use std::time::{Duration, Instant};

use wasmdock_e2e::calls::{destroy, start, wait};
use wasmdock_e2e::images;
use wasmdock_e2e::private_engine::PrivateEngine;
use wasmdock_e2e::task::FifoReader;
use wasmdock_host::driver::fingerprint::FINGERPRINT_PERIOD;
use wasmdock_host::rpc::proto::drivers::{TaskState, fingerprint_response::HealthState};
use wasmdock_host::rpc::status::recoverable_flag;

/// Waits for both FIFOs to reach end-of-file and checks they hold exactly
/// the numbered lines Docker logged (no gap, no repeat); returns how many.
async fn logs_are_what_docker_logged(
    engine: &PrivateEngine,
    id: &str,
    tag: &str,
    (stdout, stderr): (&FifoReader, &FifoReader),
) -> u64 {
    for (reader, which) in [(stdout, "stdout"), (stderr, "stderr")] {
        assert!(
            reader.wait_ended(Duration::from_secs(20)).await,
            "{tag} {which}: the FIFO reached end-of-file"
        );
    }
    let (docker_out, docker_err) = engine.logs(id).expect("docker logs");
    let last = check_numbered(&stdout.text(), tag, &format!("{tag} stdout"));
    check_numbered(
        &stderr.text(),
        &format!("{tag}-err"),
        &format!("{tag} stderr"),
    );
    assert_eq!(
        stdout.text(),
        docker_out,
        "{tag}: stdout is what Docker logged"
    );
    assert_eq!(
        stderr.text(),
        docker_err,
        "{tag}: stderr is what Docker logged"
    );
    last
}

use support::{
    EventsWatch, FingerprintWatch, NO_ENGINE, StatsWatch, check_numbered, gone_within, health_now,
    lines_at_least, numbered_task, plugin_for, removed_by_reconciler, secs, spawn_wait, state,
    stray, waited,
};

/// How long a fingerprint transition may take to show on an open stream.
fn stream_bound() -> Duration {
    FINGERPRINT_PERIOD + Duration::from_secs(15)
}

/// A private engine with the test image loaded.
async fn engine(label: &str, live_restore: bool) -> PrivateEngine {
    let image = images::busybox();
    let engine = PrivateEngine::start(label, live_restore)
        .await
        .unwrap_or_else(|err| panic!("the private engine {label} must start: {err:#}"));
    engine
        .load_image_from_node(&image.reference)
        .unwrap_or_else(|err| panic!("load the test image into {label}: {err:#}"));
    engine
}

#[tokio::test]
async fn live_restore_off_tasks_end_as_docker_says_and_the_driver_comes_back() {
    let t0 = Instant::now();
    let mut engine = engine("lr-off", false).await;
    let plugin = plugin_for(&engine, true).await;
    let mut fingerprints = FingerprintWatch::open(&plugin).await;
    fingerprints
        .until(HealthState::Healthy, Duration::from_secs(20))
        .await;
    assert!(
        plugin
            .wait_for_stderr(
                "dangling-container reconciler started",
                Duration::from_secs(10)
            )
            .await
            .is_some(),
        "the reconciler runs"
    );
    let mut events = EventsWatch::open(&plugin).await;

    // A task that exits 3 on SIGTERM, one that only SIGKILL ends.
    let polite = numbered_task("polite", "p", Some(3));
    let stubborn = numbered_task("stubborn", "s", None);
    let tasks = [(&polite, "p"), (&stubborn, "s")];
    let mut readers = Vec::new();
    let mut waiters = Vec::new();
    let mut stats = Vec::new();
    let mut containers = Vec::new();
    for (task, tag) in tasks {
        start(&plugin, task).await;
        readers.push(task.log_readers().expect("log readers"));
        waiters.push(spawn_wait(&plugin, task));
        let mut watch = StatsWatch::open(&plugin, task, task.name()).await;
        watch.sample(Duration::from_secs(20)).await;
        stats.push(watch);
        let id = state_id(&engine, &task.container_name());
        containers.push(id);
        wasmdock_e2e::figure!("task {tag}: container {}", containers.last().unwrap());
    }
    for (stdout, _) in &readers {
        assert!(lines_at_least(stdout, 5, Duration::from_secs(20)).await);
    }
    wasmdock_e2e::figure!("set up in {:.1}s", secs(t0));

    // Stop the engine: it stops the containers (SIGTERM, SIGKILL after 10 s).
    let stopped_at = Instant::now();
    let took = engine.stop().await.expect("dockerd stops");
    wasmdock_e2e::figure!(
        "dockerd (live-restore off) stopped in {:.1}s",
        took.as_secs_f64()
    );
    let unhealthy = fingerprints
        .until(HealthState::Unhealthy, stream_bound())
        .await;
    assert_eq!(unhealthy.health_description, NO_ENGINE);
    wasmdock_e2e::figure!(
        "the open Fingerprint stream reported Unhealthy {:.1}s after the stop began",
        secs(stopped_at)
    );
    assert_eq!(
        health_now(&plugin).await,
        (HealthState::Unhealthy, NO_ENGINE.to_owned()),
        "a new Fingerprint stream says so at once"
    );

    // StartTask with no engine fails cleanly, and recoverably.
    let early = numbered_task("early", "e", Some(0));
    let began = Instant::now();
    let status = tokio::time::timeout(
        Duration::from_secs(30),
        plugin.driver().start_task(early.start_request()),
    )
    .await
    .expect("StartTask with the engine down answers")
    .expect_err("StartTask with the engine down fails");
    wasmdock_e2e::figure!(
        "StartTask with the engine down failed in {:.2}s: {status:?}",
        secs(began)
    );
    assert!(status.message().contains("Docker"), "{status:?}");
    assert_eq!(
        recoverable_flag(&status),
        Some(true),
        "an engine that is down may come back: {status:?}"
    );

    // Start it again.
    let restarted_at = Instant::now();
    let took = engine.start_again().await.expect("dockerd starts again");
    wasmdock_e2e::figure!("dockerd started again in {:.1}s", took.as_secs_f64());
    fingerprints
        .until(HealthState::Healthy, stream_bound())
        .await;
    wasmdock_e2e::figure!(
        "the open Fingerprint stream reported Healthy {:.1}s after the restart began",
        secs(restarted_at)
    );

    // Every WaitTask resolves with what Docker recorded.
    for (((task, tag), waiter), id) in tasks.iter().zip(&mut waiters).zip(&containers) {
        let (result, at) = waited(waiter, task.name(), Duration::from_secs(60)).await;
        wasmdock_e2e::figure!(
            "WaitTask of {tag} resolved {:.1}s after the stop began: {result:?}",
            at.duration_since(stopped_at).as_secs_f64()
        );
        let docker_state = state(&engine, id);
        let exit = result.result.expect("an exit result");
        assert_eq!(
            i64::from(exit.exit_code),
            docker_state["ExitCode"].as_i64().unwrap(),
            "{tag}: the exit code Docker recorded ({docker_state})"
        );
        assert_eq!(
            exit.oom_killed,
            docker_state["OOMKilled"].as_bool().unwrap(),
            "{tag}: OOMKilled as Docker recorded"
        );
        let expected = if *tag == "p" { 3 } else { 137 };
        assert_eq!(exit.exit_code, expected, "{tag}: {docker_state}");
        assert_eq!(
            result.err,
            format!("Docker container exited with non-zero exit code: {expected}")
        );
        let inspect = plugin
            .driver()
            .inspect_task(task.inspect_request())
            .await
            .expect("InspectTask")
            .into_inner();
        let status = inspect.task.expect("a status");
        assert_eq!(status.state(), TaskState::Exited);
        assert_eq!(status.result.map(|r| r.exit_code), Some(expected));
    }

    // The stats streams end, the logs reach end-of-file with exactly what
    // Docker logged.
    for watch in &mut stats {
        watch.ends(Duration::from_secs(30)).await;
    }
    for (((task, tag), (stdout, stderr)), id) in tasks.iter().zip(&readers).zip(&containers) {
        let last = logs_are_what_docker_logged(&engine, id, tag, (stdout, stderr)).await;
        wasmdock_e2e::figure!("{} forwarded {last} numbered lines per stream", task.name());
    }

    // The driver works again: a new task starts and ends; the old ones go.
    let after = numbered_task("after", "a", Some(4));
    start(&plugin, &after).await;
    let (after_out, _after_err) = after.log_readers().unwrap();
    assert!(lines_at_least(&after_out, 3, Duration::from_secs(20)).await);
    plugin
        .driver()
        .stop_task(after.stop_request(Duration::from_secs(5), ""))
        .await
        .expect("StopTask");
    assert_eq!(wait(&plugin, &after).await.result.unwrap().exit_code, 4);
    for ((task, _), id) in tasks.iter().zip(&containers) {
        plugin
            .driver()
            .destroy_task(task.destroy_request(false))
            .await
            .expect("DestroyTask of an exited task");
        assert!(
            engine.inspect(id).unwrap().is_none(),
            "its container is gone"
        );
    }
    destroy(&plugin, &after, false).await;

    // The reconciler runs after the restart (it removes a stray) and never
    // removed anything else.
    let stray_id = stray(&engine, "stray-off");
    assert!(
        gone_within(&engine, &stray_id, Duration::from_secs(30)).await,
        "the reconciler removes a stray after the restart"
    );
    // The removal is logged just after the container goes.
    assert!(
        plugin
            .wait_for_stderr("removed dangling container", Duration::from_secs(10))
            .await
            .is_some(),
        "the reconciler logs the removal"
    );
    assert_eq!(removed_by_reconciler(&plugin), vec![stray_id]);
    events.still_open().await;
    wasmdock_e2e::figure!("live-restore off: {:.1}s in all", secs(t0));
}

#[tokio::test]
async fn live_restore_on_tasks_stay_tracked_and_nothing_tracked_is_removed() {
    let t0 = Instant::now();
    let mut engine = engine("lr-on", true).await;
    let plugin = plugin_for(&engine, true).await;
    let mut fingerprints = FingerprintWatch::open(&plugin).await;
    fingerprints
        .until(HealthState::Healthy, Duration::from_secs(20))
        .await;
    assert!(
        plugin
            .wait_for_stderr(
                "dangling-container reconciler started",
                Duration::from_secs(10)
            )
            .await
            .is_some(),
        "the reconciler runs"
    );
    let mut events = EventsWatch::open(&plugin).await;

    let first = numbered_task("first", "f", Some(3));
    let second = numbered_task("second", "g", Some(7));
    let tasks = [(&first, "f", 3), (&second, "g", 7)];
    let mut readers = Vec::new();
    let mut waiters = Vec::new();
    let mut stats = Vec::new();
    let mut containers = Vec::new();
    let mut pids = Vec::new();
    for (task, _, _) in tasks {
        start(&plugin, task).await;
        readers.push(task.log_readers().expect("log readers"));
        waiters.push(spawn_wait(&plugin, task));
        let mut watch = StatsWatch::open(&plugin, task, task.name()).await;
        watch.sample(Duration::from_secs(20)).await;
        stats.push(watch);
        let id = state_id(&engine, &task.container_name());
        pids.push(state(&engine, &id)["Pid"].as_i64().unwrap());
        containers.push(id);
    }
    // A task stopped as soon as the engine is back.
    let prompt = numbered_task("prompt", "q", Some(9));
    start(&plugin, &prompt).await;
    let prompt_readers = prompt.log_readers().expect("log readers");
    let mut prompt_waiter = spawn_wait(&plugin, &prompt);
    let prompt_id = state_id(&engine, &prompt.container_name());
    for (stdout, _) in readers.iter().chain(std::iter::once(&prompt_readers)) {
        assert!(lines_at_least(stdout, 5, Duration::from_secs(20)).await);
    }
    wasmdock_e2e::figure!("set up in {:.1}s", secs(t0));

    let stopped_at = Instant::now();
    let took = engine.stop().await.expect("dockerd stops");
    wasmdock_e2e::figure!(
        "dockerd (live-restore on) stopped in {:.1}s",
        took.as_secs_f64()
    );
    for pid in &pids {
        assert!(
            std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "the container's process {pid} outlives the engine"
        );
    }
    // Samples keep coming from the cgroup while the engine is away.
    for watch in &mut stats {
        watch.sample(Duration::from_secs(10)).await;
    }
    let began = Instant::now();
    let inspect = tokio::time::timeout(
        Duration::from_secs(30),
        plugin.driver().inspect_task(first.inspect_request()),
    )
    .await
    .expect("InspectTask with the engine down answers");
    wasmdock_e2e::figure!(
        "InspectTask with the engine down answered in {:.2}s: {:?}",
        secs(began),
        inspect
            .as_ref()
            .map(|r| r.get_ref().task.as_ref().map(|t| t.state()))
    );
    let unhealthy = fingerprints
        .until(HealthState::Unhealthy, stream_bound())
        .await;
    assert_eq!(unhealthy.health_description, NO_ENGINE);
    wasmdock_e2e::figure!(
        "the open Fingerprint stream reported Unhealthy {:.1}s after the stop began",
        secs(stopped_at)
    );
    assert!(
        waiters
            .iter()
            .chain([&prompt_waiter])
            .all(|w| !w.is_finished()),
        "no WaitTask resolves while the containers run"
    );

    let restarted_at = Instant::now();
    let took = engine.start_again().await.expect("dockerd starts again");
    wasmdock_e2e::figure!("dockerd started again in {:.1}s", took.as_secs_f64());
    // Stopped as soon as the engine answers: the exit reaches WaitTask
    // although the task's watcher lost the engine a while ago.
    let stop_at = Instant::now();
    plugin
        .driver()
        .stop_task(prompt.stop_request(Duration::from_secs(5), ""))
        .await
        .expect("StopTask right after the restart");
    let (result, at) = waited(&mut prompt_waiter, prompt.name(), Duration::from_secs(60)).await;
    wasmdock_e2e::figure!(
        "WaitTask of the task stopped right after the restart resolved {:.2}s after StopTask",
        at.duration_since(stop_at).as_secs_f64()
    );
    let exit = result.result.expect("an exit result");
    assert_eq!(exit.exit_code, 9);
    assert_eq!(
        state(&engine, &prompt_id)["ExitCode"].as_i64(),
        Some(9),
        "the code Docker recorded"
    );
    let lines_at_restart: Vec<usize> = readers
        .iter()
        .map(|(stdout, _)| stdout.text().lines().count())
        .collect();
    fingerprints
        .until(HealthState::Healthy, stream_bound())
        .await;
    wasmdock_e2e::figure!(
        "the open Fingerprint stream reported Healthy {:.1}s after the restart began",
        secs(restarted_at)
    );

    // Still the same running containers, still tracked.
    for ((id, pid), (task, tag, _)) in containers.iter().zip(&pids).zip(tasks) {
        let docker_state = state(&engine, id);
        assert_eq!(docker_state["Running"], true, "{tag}: {docker_state}");
        assert_eq!(
            docker_state["Pid"].as_i64(),
            Some(*pid),
            "{tag}: the same process"
        );
        let inspect = plugin
            .driver()
            .inspect_task(task.inspect_request())
            .await
            .expect("InspectTask")
            .into_inner();
        assert_eq!(inspect.task.unwrap().state(), TaskState::Running, "{tag}");
    }
    // Logs continue.
    for ((stdout, _), before) in readers.iter().zip(&lines_at_restart) {
        assert!(
            lines_at_least(stdout, before + 10, Duration::from_secs(20)).await,
            "logs continue after the restart"
        );
    }
    // Stats: the old streams go on, a new one yields.
    for watch in &mut stats {
        watch.sample(Duration::from_secs(20)).await;
    }
    let mut fresh = StatsWatch::open(&plugin, &first, "opened after the restart").await;
    fresh.sample(Duration::from_secs(20)).await;

    // The reconciler is active (it removes a stray) and, over several
    // passes, removes none of the tracked containers.
    let stray_id = stray(&engine, "stray-on");
    let began = Instant::now();
    assert!(
        gone_within(&engine, &stray_id, Duration::from_secs(30)).await,
        "the reconciler removes a stray after the restart"
    );
    wasmdock_e2e::figure!("the stray went after {:.1}s", secs(began));
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (id, (_, tag, _)) in containers.iter().zip(tasks) {
        assert_eq!(state(&engine, id)["Running"], true, "{tag} is kept");
    }
    assert_eq!(
        removed_by_reconciler(&plugin),
        vec![stray_id],
        "the reconciler removed the stray and nothing else"
    );
    assert!(
        waiters.iter().all(|w| !w.is_finished()),
        "no WaitTask resolved before StopTask"
    );

    // StopTask: WaitTask resolves with the code Docker records.
    for (((task, tag, code), waiter), id) in tasks.iter().zip(&mut waiters).zip(&containers) {
        let stop_at = Instant::now();
        plugin
            .driver()
            .stop_task(task.stop_request(Duration::from_secs(5), ""))
            .await
            .expect("StopTask");
        let (result, at) = waited(waiter, task.name(), Duration::from_secs(60)).await;
        wasmdock_e2e::figure!(
            "WaitTask of {tag} resolved {:.2}s after StopTask: {result:?}",
            at.duration_since(stop_at).as_secs_f64()
        );
        let docker_state = state(&engine, id);
        let exit = result.result.expect("an exit result");
        assert_eq!(exit.exit_code, *code, "{tag}");
        assert_eq!(
            i64::from(exit.exit_code),
            docker_state["ExitCode"].as_i64().unwrap(),
            "{tag}: {docker_state}"
        );
        assert_eq!(
            exit.oom_killed,
            docker_state["OOMKilled"].as_bool().unwrap()
        );
    }
    for watch in stats.iter_mut().chain([&mut fresh]) {
        watch.ends(Duration::from_secs(30)).await;
    }
    // No gap and no repeat across the restart: the FIFOs hold exactly
    // what Docker logged.
    for (((task, tag, _), (stdout, stderr)), id) in tasks.iter().zip(&readers).zip(&containers) {
        let last = logs_are_what_docker_logged(&engine, id, tag, (stdout, stderr)).await;
        wasmdock_e2e::figure!("{} forwarded {last} numbered lines per stream", task.name());
        destroy(&plugin, task, false).await;
        assert!(
            engine.inspect(id).unwrap().is_none(),
            "its container is gone"
        );
    }
    let (prompt_out, prompt_err) = &prompt_readers;
    for reader in [prompt_out, prompt_err] {
        assert!(
            reader.wait_ended(Duration::from_secs(20)).await,
            "q: end-of-file"
        );
    }
    let (docker_out, docker_err) = engine.logs(&prompt_id).expect("docker logs");
    check_numbered(&prompt_out.text(), "q", "q stdout");
    check_numbered(&prompt_err.text(), "q-err", "q stderr");
    assert_eq!(
        prompt_out.text(),
        docker_out,
        "q: stdout is what Docker logged"
    );
    assert_eq!(
        prompt_err.text(),
        docker_err,
        "q: stderr is what Docker logged"
    );
    destroy(&plugin, &prompt, false).await;
    events.still_open().await;
    wasmdock_e2e::figure!("live-restore on: {:.1}s in all", secs(t0));
}

#[tokio::test]
async fn a_plugin_relaunched_while_the_engine_is_down_recovers_once_it_is_back() {
    let t0 = Instant::now();
    let mut engine = engine("relaunch", true).await;
    let mut plugin = plugin_for(&engine, false).await;
    assert_eq!(health_now(&plugin).await.0, HealthState::Healthy);
    let task = numbered_task("survivor", "r", Some(5));
    let handle = start(&plugin, &task).await.handle.expect("a handle");
    let (stdout, stderr) = task.log_readers().expect("log readers");
    assert!(lines_at_least(&stdout, 5, Duration::from_secs(20)).await);
    let id = state_id(&engine, &task.container_name());

    plugin.kill().await.expect("SIGKILL the plugin");
    engine.stop().await.expect("dockerd stops");
    plugin.relaunch().await.expect("the plugin relaunches");
    assert_eq!(
        health_now(&plugin).await,
        (HealthState::Undetected, NO_ENGINE.to_owned()),
        "a new process that never reached the engine"
    );
    let began = Instant::now();
    let status = tokio::time::timeout(
        Duration::from_secs(30),
        plugin
            .driver()
            .recover_task(task.recover_request(handle.clone())),
    )
    .await
    .expect("RecoverTask with the engine down answers")
    .expect_err("RecoverTask cannot inspect the container with the engine down");
    wasmdock_e2e::figure!(
        "RecoverTask with the engine down failed in {:.2}s: {status:?}",
        secs(began)
    );
    assert!(status.message().contains("Docker"), "{status:?}");
    assert_eq!(recoverable_flag(&status), Some(true), "{status:?}");
    let not_tracked = plugin
        .driver()
        .inspect_task(task.inspect_request())
        .await
        .expect_err("a task that failed to recover is not tracked");
    assert_eq!(not_tracked.code(), tonic::Code::NotFound);
    assert!(
        !stdout.ended(),
        "the log holder keeps the FIFOs open meanwhile"
    );

    engine.start_again().await.expect("dockerd starts again");
    assert_eq!(health_now(&plugin).await.0, HealthState::Healthy);
    plugin
        .driver()
        .recover_task(task.recover_request(handle))
        .await
        .expect("RecoverTask once the engine is back");
    let inspect = plugin
        .driver()
        .inspect_task(task.inspect_request())
        .await
        .expect("InspectTask")
        .into_inner();
    assert_eq!(inspect.task.unwrap().state(), TaskState::Running);
    let before = stdout.text().lines().count();
    assert!(
        lines_at_least(&stdout, before + 10, Duration::from_secs(20)).await,
        "logs resume"
    );
    plugin
        .driver()
        .stop_task(task.stop_request(Duration::from_secs(5), ""))
        .await
        .expect("StopTask");
    let result = tokio::time::timeout(Duration::from_secs(60), wait(&plugin, &task))
        .await
        .expect("WaitTask resolves");
    assert_eq!(result.result.unwrap().exit_code, 5);
    for (reader, which) in [(&stdout, "stdout"), (&stderr, "stderr")] {
        assert!(
            reader.wait_ended(Duration::from_secs(20)).await,
            "{which}: the FIFO reached end-of-file"
        );
    }
    let (docker_out, docker_err) = engine.logs(&id).expect("docker logs");
    let last = check_numbered(&stdout.text(), "r", "stdout");
    check_numbered(&stderr.text(), "r-err", "stderr");
    assert_eq!(stdout.text(), docker_out, "stdout is what Docker logged");
    assert_eq!(stderr.text(), docker_err, "stderr is what Docker logged");
    destroy(&plugin, &task, false).await;
    wasmdock_e2e::figure!(
        "relaunch while the engine was down: {last} lines forwarded, {:.1}s in all",
        secs(t0)
    );
}

/// The full id of `container` in `engine`.
fn state_id(engine: &PrivateEngine, container: &str) -> String {
    engine
        .inspect(container)
        .expect("docker inspect")
        .unwrap_or_else(|| panic!("no container {container}"))["Id"]
        .as_str()
        .expect("an id")
        .to_owned()
}
