//! The dangling-container reconciler against a real engine.
//!
//! A separate test binary: the reconciler looks at every running container
//! of the engine, so these tests must not run beside other tests' tasks
//! (cargo runs test binaries one after another). Before anything, the
//! tests refuse to run when the engine already has running containers
//! labelled as Nomad's that they did not create — the reconciler would
//! remove them, and they may be a real Nomad client's.

use std::time::Duration;

use serde_json::json;
use wasmdock_e2e::calls::{destroy, first_fingerprint, start};
use wasmdock_e2e::docker::{self, docker};
use wasmdock_e2e::guests::guest;
use wasmdock_e2e::ids::{run_id, uuid_v4};
use wasmdock_e2e::images::{self, BUSYBOX_1, sleeper_image};
use wasmdock_e2e::{Alloc, Cleanup, PluginUnderTest, Task, TaskBuilder};
use wasmdock_host::reconciler::TEST_TIMING_ENV;
use wasmdock_host::rpc::proto::drivers::CreateNetworkRequest;

const ALLOC_LABEL: &str = "com.hashicorp.nomad.alloc_id";
/// Passes every second, containers older than two seconds are fair game.
const TIMING: &str = "period=1s,creation_grace=2s";
/// Deadline of the looping matcher.
const LOOP_DEADLINE_MS: u64 = 50;

/// One reconciler at a time: each would remove the other test's strays.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn refuse_foreign_nomad_containers() {
    let label = format!("label={ALLOC_LABEL}");
    let running = docker(&["ps", "-q", "--no-trunc", "--filter", &label]).unwrap_or_default();
    let ids: Vec<&str> = running.lines().filter(|l| !l.is_empty()).collect();
    assert!(
        ids.is_empty(),
        "running containers labelled {ALLOC_LABEL} exist before the test: {ids:?}. \
         The reconciler under test would remove them (they may be a real Nomad client's); \
         stop them or run on a clean engine."
    );
}

async fn reconciling_plugin(dry_run: bool) -> PluginUnderTest {
    reconciling_plugin_with(dry_run, json!({})).await
}

/// A reconciling plugin with `extra` plugin config (policy modules).
async fn reconciling_plugin_with(dry_run: bool, extra: serde_json::Value) -> PluginUnderTest {
    images::busybox();
    refuse_foreign_nomad_containers();
    let mut config = json!({
        "infra_image": sleeper_image(),
        "gc": { "dangling_containers": { "enabled": true, "dry_run": dry_run } },
    });
    if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        config.extend(extra.clone());
    }
    let plugin = PluginUnderTest::start_with_env(config, "wasmdock", &[(TEST_TIMING_ENV, TIMING)])
        .await
        .expect("plugin starts");
    // The reconciler starts on the first Fingerprint, never before, and
    // only once.
    let started = |plugin: &PluginUnderTest| {
        plugin
            .stderr_lines()
            .iter()
            .filter(|l| l.contains("dangling-container reconciler started"))
            .count()
    };
    assert_eq!(started(&plugin), 0, "SetConfig and Init start nothing");
    first_fingerprint(&plugin).await;
    first_fingerprint(&plugin).await;
    assert!(
        plugin
            .wait_for_stderr(
                "dangling-container reconciler started",
                Duration::from_secs(10)
            )
            .await
            .is_some()
    );
    assert_eq!(started(&plugin), 1, "started once");
    plugin
}

/// `docker run -d` of a sleeper named `name` with extra `args`; returns its id.
fn run_container(cleanup: &Cleanup, name: &str, args: &[&str]) -> String {
    let full = format!("wasmdock-e2e-{}-{name}", run_id());
    let mut command = vec![
        "run",
        "-d",
        "--name",
        &full,
        "--label",
        "wasmdock.e2e.run=1",
    ];
    command.extend_from_slice(args);
    command.extend_from_slice(&[BUSYBOX_1, "sleep", "1000"]);
    let id = docker(&command).expect("docker run").trim().to_owned();
    cleanup.container(&id);
    id
}

/// A running task and a network pause container, both tracked by `plugin`;
/// the pause container lives as long as the returned alloc.
async fn tracked_task_and_pause(plugin: &PluginUnderTest, name: &str) -> (Task, Alloc, String) {
    let task = TaskBuilder::new(
        name,
        json!({ "image": BUSYBOX_1, "command": "sleep", "args": ["1000"] }),
    )
    .build()
    .unwrap();
    start(plugin, &task).await;
    let pause_alloc = Alloc::new().unwrap();
    let spec = plugin
        .driver()
        .create_network(CreateNetworkRequest {
            alloc_id: pause_alloc.id().to_owned(),
            hostname: name.to_owned(),
        })
        .await
        .expect("CreateNetwork")
        .into_inner()
        .isolation_spec
        .expect("a spec");
    let pause = spec.labels["docker_sandbox_container_id"].clone();
    (task, pause_alloc, pause)
}

fn exists(id: &str) -> bool {
    docker::container_inspect(id).unwrap().is_some()
}

async fn gone_within(id: &str, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if !exists(id) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

#[tokio::test]
async fn dangling_containers_go_and_everything_else_stays() {
    let _serial = SERIAL.lock().await;
    let plugin = reconciling_plugin(false).await;
    let cleanup = Cleanup::new();
    let alloc = uuid_v4();

    // Removed: an untracked running container with Nomad's label, and a
    // legacy-shaped one (mounts, <task>-<alloc id> name, NOMAD_ALLOC_ID).
    let labelled = run_container(
        &cleanup,
        "labelled",
        &["--label", &format!("{ALLOC_LABEL}={alloc}")],
    );
    let mounts = tempfile::tempdir().unwrap();
    let mount_args: Vec<String> = ["alloc", "local", "secrets"]
        .iter()
        .map(|d| format!("{}:/{d}", mounts.path().display()))
        .collect();
    let legacy_uuid = uuid_v4();
    let legacy_name = format!("wasmdock-e2e-{}-legacy-{legacy_uuid}", run_id());
    let env = format!("NOMAD_ALLOC_ID={legacy_uuid}");
    let mut legacy_args = vec!["run", "-d", "--name", &legacy_name, "-e", &env];
    for arg in &mount_args {
        legacy_args.extend_from_slice(&["-v", arg]);
    }
    legacy_args.extend_from_slice(&[BUSYBOX_1, "sleep", "1000"]);
    let legacy = docker(&legacy_args).expect("docker run").trim().to_owned();
    cleanup.container(&legacy);

    // Kept: the same shape without the environment, an unrelated
    // container, a stopped labelled one, a tracked task and a pause
    // container.
    let lookalike_name = format!("wasmdock-e2e-{}-lookalike-{}", run_id(), uuid_v4());
    let mut lookalike_args = vec!["run", "-d", "--name", &lookalike_name];
    for arg in &mount_args {
        lookalike_args.extend_from_slice(&["-v", arg]);
    }
    lookalike_args.extend_from_slice(&[BUSYBOX_1, "sleep", "1000"]);
    let lookalike = docker(&lookalike_args)
        .expect("docker run")
        .trim()
        .to_owned();
    cleanup.container(&lookalike);
    let unrelated = run_container(&cleanup, "unrelated", &[]);
    let stopped = run_container(
        &cleanup,
        "stopped",
        &["--label", &format!("{ALLOC_LABEL}={}", uuid_v4())],
    );
    docker(&["stop", "-t", "0", &stopped]).expect("docker stop");

    let (task, _pause_alloc, pause) = tracked_task_and_pause(&plugin, "tracked").await;

    assert!(
        gone_within(&labelled, Duration::from_secs(20)).await,
        "the labelled stray is removed"
    );
    assert!(
        gone_within(&legacy, Duration::from_secs(20)).await,
        "the legacy-shaped stray is removed"
    );
    // A few more passes, then nothing else may have gone.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (what, id) in [
        ("the look-alike without NOMAD_ALLOC_ID", &lookalike),
        ("the unrelated container", &unrelated),
        ("the stopped container", &stopped),
        ("the pause container", &pause),
    ] {
        assert!(exists(id), "{what} was kept");
    }
    assert!(
        docker::container_inspect(&task.container_name())
            .unwrap()
            .is_some(),
        "the tracked task's container was kept"
    );
    let removal = plugin
        .stderr_lines()
        .into_iter()
        .find(|l| l.contains("removed dangling container") && l.contains(&labelled))
        .expect("the removal is logged");
    for field in [
        "\"name\"",
        "\"age_secs\"",
        "\"rule\":\"label com.hashicorp.nomad.alloc_id\"",
    ] {
        assert!(removal.contains(field), "{field} in {removal}");
    }
    destroy(&plugin, &task, true).await;
}

#[tokio::test]
async fn dry_run_removes_nothing_and_says_what_it_would_remove() {
    let _serial = SERIAL.lock().await;
    let plugin = reconciling_plugin(true).await;
    let cleanup = Cleanup::new();
    let stray = run_container(
        &cleanup,
        "dry",
        &["--label", &format!("{ALLOC_LABEL}={}", uuid_v4())],
    );
    let line = plugin
        .wait_for_stderr("dry run: not removed", Duration::from_secs(20))
        .await;
    assert!(
        line.is_some_and(|l| l.contains(&stray)),
        "the would-be removal is logged"
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(exists(&stray), "dry run removed nothing");
}

/// `docker run -d` of a sleeper with the three Nomad task mounts and `env`,
/// named `<run>-<name>` (not a `<task>-<alloc id>` name).
fn run_with_nomad_mounts(cleanup: &Cleanup, name: &str, env: &[String]) -> String {
    let mounts = tempfile::tempdir().unwrap();
    let full = format!("wasmdock-e2e-{}-{name}", run_id());
    let mut args: Vec<String> = vec!["run".into(), "-d".into(), "--name".into(), full];
    for dir in ["alloc", "local", "secrets"] {
        args.push("-v".into());
        args.push(format!("{}:/{dir}", mounts.path().display()));
    }
    for pair in env {
        args.push("-e".into());
        args.push(pair.clone());
    }
    args.extend([BUSYBOX_1.to_owned(), "sleep".into(), "1000".into()]);
    let id = docker(&args).expect("docker run").trim().to_owned();
    cleanup.container(&id);
    id
}

/// Log lines of policy decisions about `id`.
fn decisions_about(plugin: &PluginUnderTest, id: &str) -> Vec<String> {
    plugin
        .stderr_lines()
        .into_iter()
        .filter(|l| l.contains("\"hook\":\"reconciler-match\"") && l.contains(id))
        .collect()
}

/// The log line of the removal of `id` (logged once the engine has
/// removed it: waits a little for it).
async fn removal_of(plugin: &PluginUnderTest, id: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let found = plugin
            .stderr_lines()
            .into_iter()
            .find(|l| l.contains("removed dangling container") && l.contains(id));
        match found {
            Some(line) => return line,
            None if std::time::Instant::now() > deadline => {
                panic!("the removal of {id} is not logged")
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test]
async fn the_env_mount_matcher_removes_what_the_native_rule_misses_and_spares_the_rest() {
    let _serial = SERIAL.lock().await;
    let matcher = guest("env-mount-matcher");
    let plugin = reconciling_plugin_with(
        false,
        json!({ "policy": { "module": [{
            "name": "matcher",
            "path": matcher.to_string_lossy(),
            "hooks": ["reconciler-match"],
            "failure_policy": "native",
        }]}}),
    )
    .await;
    let cleanup = Cleanup::new();
    // Nomad's mounts and environment, but renamed: the native rule needs a
    // `<task>-<alloc id>` name and misses it; the guest claims it.
    let renamed = run_with_nomad_mounts(
        &cleanup,
        "renamed",
        &[
            format!("NOMAD_ALLOC_ID={}", uuid_v4()),
            "NOMAD_GROUP_NAME=web".to_owned(),
        ],
    );
    // Nomad's label: the guest abstains and the native rule removes it.
    let labelled = run_container(
        &cleanup,
        "labelled-past-policy",
        &["--label", &format!("{ALLOC_LABEL}={}", uuid_v4())],
    );
    // The mounts without the environment, and an unrelated container.
    let mounts_only = run_with_nomad_mounts(&cleanup, "mounts-only", &[]);
    let unrelated = run_container(&cleanup, "unrelated-to-policy", &[]);
    let (task, _pause_alloc, pause) = tracked_task_and_pause(&plugin, "tracked-by-policy").await;

    assert!(
        gone_within(&renamed, Duration::from_secs(20)).await,
        "the renamed Nomad container is removed by the guest's decision"
    );
    assert!(
        gone_within(&labelled, Duration::from_secs(20)).await,
        "the labelled stray the guest abstains on is removed by the native rule"
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(exists(&mounts_only), "the mounts-only container was kept");
    assert!(exists(&unrelated), "the unrelated container was kept");
    assert!(exists(&pause), "the pause container was kept");
    let tracked = docker::container_inspect(&task.container_name())
        .unwrap()
        .expect("the tracked task's container was kept");
    let tracked_id = tracked["Id"].as_str().unwrap().to_owned();

    let removal = removal_of(&plugin, &renamed).await;
    assert!(
        removal.contains("NOMAD_ALLOC_ID"),
        "the guest's reason is the rule: {removal}"
    );
    let fallback = removal_of(&plugin, &labelled).await;
    assert!(
        fallback.contains("\"rule\":\"label com.hashicorp.nomad.alloc_id\""),
        "the native rule decided: {fallback}"
    );
    let abstained = decisions_about(&plugin, &labelled);
    assert!(
        abstained
            .iter()
            .any(|l| l.contains("\"module\":\"matcher\"") && l.contains("\"outcome\":\"abstain\"")),
        "the guest was asked and abstained: {abstained:?}"
    );
    let decided = decisions_about(&plugin, &renamed);
    assert!(
        decided.iter().any(|l| l.contains("\"module\":\"matcher\"")
            && l.contains("latency_us")
            && l.contains("ours")),
        "the decision is logged with module, latency and outcome: {decided:?}"
    );
    assert!(
        !decisions_about(&plugin, &unrelated).is_empty(),
        "the unrelated container was judged by the guest"
    );
    for (what, id) in [("tracked", &tracked_id), ("pause", &pause)] {
        assert_eq!(
            decisions_about(&plugin, id),
            Vec::<String>::new(),
            "the {what} container never reaches the guest"
        );
    }
    destroy(&plugin, &task, true).await;
}

#[tokio::test]
async fn a_looping_matcher_is_cut_off_and_the_native_rule_decides() {
    let _serial = SERIAL.lock().await;
    let hostile = guest("hostile");
    let plugin = reconciling_plugin_with(
        false,
        json!({ "policy": { "module": [{
            "name": "loop",
            "path": hostile.to_string_lossy(),
            "hooks": ["reconciler-match"],
            "failure_policy": "native",
            "deadline": format!("{LOOP_DEADLINE_MS}ms"),
            "config": { "behaviour": "loop" },
        }]}}),
    )
    .await;
    let cleanup = Cleanup::new();
    let labelled = run_container(
        &cleanup,
        "labelled-loop",
        &["--label", &format!("{ALLOC_LABEL}={}", uuid_v4())],
    );
    let unrelated = run_container(&cleanup, "unrelated-loop", &[]);
    assert!(
        gone_within(&labelled, Duration::from_secs(20)).await,
        "the native rule still removes the labelled stray"
    );
    assert!(exists(&unrelated), "the unrelated container was kept");
    let failure = decisions_about(&plugin, &labelled)
        .into_iter()
        .find(|l| l.contains("policy hook failed"))
        .expect("the cut-off call is logged");
    for field in [
        "\"error_kind\":\"timeout\"",
        "\"failure_policy\":\"native\"",
        "the native rule decides",
    ] {
        assert!(failure.contains(field), "{field} in {failure}");
    }
    // Cut off at its deadline: not before, and not long after.
    let line: serde_json::Value = serde_json::from_str(&failure).expect("a JSON log line");
    let latency_us = line["latency_us"]
        .as_u64()
        .unwrap_or_else(|| panic!("latency_us in {failure}"));
    wasmdock_e2e::figure!(
        "looping reconciler-match guest cut off after {latency_us} µs (deadline {LOOP_DEADLINE_MS} ms)"
    );
    assert!(
        (LOOP_DEADLINE_MS * 1000..=LOOP_DEADLINE_MS * 1000 * 3).contains(&latency_us),
        "stopped at its deadline of {LOOP_DEADLINE_MS} ms: {latency_us} µs"
    );
    let fallback = removal_of(&plugin, &labelled).await;
    assert!(
        fallback.contains("\"rule\":\"label com.hashicorp.nomad.alloc_id\""),
        "the native rule decided: {fallback}"
    );
}
