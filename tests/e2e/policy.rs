//! Policy hooks in the running plugin, with real containers and the example
//! guests: admission denies and patches, the GPU runtime a guest chooses,
//! the stats tagger's fields in the TaskStats stream, looping guests cut
//! off at their deadline on every hook, and the counters in InspectTask.
//! (The reconciler-match hook is in the reconciler test binary.)

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_stream::StreamExt as _;
use tonic::Streaming;
use wasmdock_e2e::calls::{destroy, first_fingerprint, plugin, start, start_err, task};
use wasmdock_e2e::docker::{self, docker};
use wasmdock_e2e::guests::{copy_guest, guest};
use wasmdock_e2e::images::{self, BUSYBOX_1};
use wasmdock_e2e::task::{NAMESPACE, duration};
use wasmdock_e2e::{Alloc, PluginUnderTest, Task, TaskBuilder, run_id};
use wasmdock_host::rpc::proto::drivers::{
    self as pb, TaskEventsRequest, TaskStatsRequest, TaskStatsResponse,
};
use wasmdock_host::rpc::status::recoverable_flag;
use wasmdock_host::telemetry::LOG_LEVEL_ENV;

/// The GPU device variable Nomad's NVIDIA device plugin sets.
const GPU_ENV: &str = "NVIDIA_VISIBLE_DEVICES";
/// Deadline of the looping guests.
const LOOP_DEADLINE_MS: u64 = 50;
/// The interval the tests' TaskStats streams ask for.
const STATS_INTERVAL: Duration = Duration::from_millis(500);

fn module(name: &str, guest_name: &str, hook: &str, extra: Value) -> Value {
    let mut module = json!({
        "name": name,
        "path": guest(guest_name).to_string_lossy(),
        "hooks": [hook],
    });
    if let (Some(module), Some(extra)) = (module.as_object_mut(), extra.as_object()) {
        module.extend(extra.clone());
    }
    module
}

/// A plugin with these policy modules, loaded (the first Fingerprint).
async fn policy_plugin(modules: Vec<Value>, extra: Value) -> PluginUnderTest {
    let mut config = json!({ "policy": { "module": modules } });
    if let (Some(config), Some(extra)) = (config.as_object_mut(), extra.as_object()) {
        config.extend(extra.clone());
    }
    let plugin = plugin(config).await;
    first_fingerprint(&plugin).await;
    plugin
}

/// [`policy_plugin`] logging at `trace`, where stats-transform decisions
/// are logged (one line per sample per task).
async fn tracing_policy_plugin(modules: Vec<Value>) -> PluginUnderTest {
    images::busybox();
    let config = json!({ "policy": { "module": modules } });
    // The harness sets `debug` first; extra environment comes after it.
    let plugin = PluginUnderTest::start_with_env(config, "wasmdock", &[(LOG_LEVEL_ENV, "trace")])
        .await
        .expect("plugin starts");
    first_fingerprint(&plugin).await;
    plugin
}

/// The plugin's first `policy decision` log line (hclog JSON) for `hook`
/// by `module` whose fields include every `(key, value)` of `about`; its
/// hook, module, latency and outcome checked. Waits up to 20 s.
async fn decision_line(
    plugin: &PluginUnderTest,
    hook: &str,
    module: &str,
    about: &[(&str, &str)],
) -> Value {
    let matches = |line: &Value| {
        line["@message"] == "policy decision"
            && line["hook"] == hook
            && line["module"] == module
            && about.iter().all(|(key, value)| line[*key] == *value)
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let line = loop {
        let found = plugin
            .stderr_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| matches(l));
        if let Some(line) = found {
            break line;
        }
        assert!(
            Instant::now() < deadline,
            "no policy decision line for {hook} by {module} about {about:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        line["latency_us"].is_u64(),
        "latency_us is a number of microseconds: {line}"
    );
    assert!(
        line["outcome"].as_str().is_some_and(|o| !o.is_empty()),
        "the outcome is logged: {line}"
    );
    line
}

async fn events(plugin: &PluginUnderTest) -> Streaming<pb::DriverTaskEvent> {
    plugin
        .driver()
        .task_events(TaskEventsRequest {})
        .await
        .expect("TaskEvents")
        .into_inner()
}

/// The first event about `task` whose message contains `needle`.
async fn event_about(
    events: &mut Streaming<pb::DriverTaskEvent>,
    task: &Task,
    needle: &str,
) -> pb::DriverTaskEvent {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(event) = events.next().await {
            let event = event.expect("an event");
            if event.task_id == task.id() && event.message.contains(needle) {
                return Some(event);
            }
            seen.push(event.message);
        }
        None
    })
    .await
    .ok()
    .flatten();
    found.unwrap_or_else(|| panic!("no event containing {needle:?}; saw {seen:?}"))
}

fn runtime_of(task: &Task) -> String {
    let inspect = docker::container_inspect(&task.container_name())
        .expect("docker inspect")
        .expect("the container exists");
    inspect["HostConfig"]["Runtime"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn require_nvidia_runtime() {
    let runtimes = docker(&["info", "--format", "{{json .Runtimes}}"]).expect("docker info");
    assert!(
        runtimes.contains("\"nvidia\""),
        "the Docker engine has no runtime named `nvidia` ({runtimes}); these tests need one \
         (it may be plain runc): start dockerd with `--add-runtime nvidia=$(command -v runc)`, \
         as scripts/lib.sh's ensure_docker does"
    );
}

#[tokio::test]
async fn policy_counters_appear_in_inspect_task_attributes() {
    let plugin = policy_plugin(
        vec![module(
            "allow",
            "image-allowlist",
            "task-admission",
            json!({ "config": { "allowed": "*" } }),
        )],
        json!({}),
    )
    .await;
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
    assert_eq!(
        attributes["policy.allow.task-admission.calls"], "1",
        "the start was admitted by one call"
    );
    assert!(attributes.contains_key("container_id"));
    destroy(&plugin, &task, true).await;
}

#[tokio::test]
async fn modules_load_on_the_first_fingerprint_and_reload_when_their_file_changes() {
    let dir = tempfile::tempdir().unwrap();
    // The hostile guest without a behaviour allows every task.
    let path = copy_guest("hostile", dir.path(), "admission.wasm");
    let plugin = plugin(json!({ "policy": { "module": [{
        "name": "swap",
        "path": path.to_string_lossy(),
        "hooks": ["task-admission"],
    }]}}))
    .await;
    let loaded = |plugin: &PluginUnderTest| {
        plugin
            .stderr_lines()
            .iter()
            .filter(|l| l.contains("policy module loaded"))
            .count()
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        loaded(&plugin),
        0,
        "SetConfig alone (all a validation launch does) loads nothing"
    );
    first_fingerprint(&plugin).await;
    assert!(
        plugin
            .wait_for_stderr("policy module loaded", Duration::from_secs(30))
            .await
            .is_some()
    );
    let allowed = task(
        "swap-allowed",
        json!({ "image": BUSYBOX_1, "command": "true" }),
    );
    start(&plugin, &allowed).await;
    destroy(&plugin, &allowed, true).await;

    // Swap in the allow-list guest (no `allowed` config: it denies all),
    // the way a deploy would: write beside, rename over.
    let next = copy_guest("image-allowlist", dir.path(), "next.wasm");
    std::fs::rename(&next, &path).unwrap();
    assert!(
        plugin
            .wait_for_stderr("policy module replaced", Duration::from_secs(30))
            .await
            .is_some(),
        "the changed file is reloaded"
    );
    let denied = task(
        "swap-denied",
        json!({ "image": BUSYBOX_1, "command": "true" }),
    );
    let status = start_err(&plugin, &denied).await;
    assert!(
        status
            .message()
            .contains("admission policy swap denied the task"),
        "{status:?}"
    );
    assert_eq!(loaded(&plugin), 2, "loaded once, then once more on change");
}

#[tokio::test]
async fn an_image_outside_the_allow_list_is_denied_with_the_guests_reason() {
    let plugin = policy_plugin(
        vec![module(
            "allowlist",
            "image-allowlist",
            "task-admission",
            json!({ "config": {
                "allowed": "registry.local/*",
                "label": "policy.example/checked=true",
            }}),
        )],
        json!({}),
    )
    .await;
    let mut stream = events(&plugin).await;
    let denied = task(
        "denied",
        json!({ "image": BUSYBOX_1, "command": "sleep", "args": ["1000"] }),
    );
    let status = start_err(&plugin, &denied).await;
    assert_eq!(
        recoverable_flag(&status),
        Some(false),
        "a denial is final: {status:?}"
    );
    let message = status.message();
    assert!(
        message.contains("admission policy allowlist denied the task")
            && message.contains(BUSYBOX_1)
            && message.contains("is not allowed"),
        "the error carries the module and the guest's reason: {message}"
    );
    let event = event_about(&mut stream, &denied, "task-admission").await;
    assert!(
        event
            .message
            .starts_with("Policy allowlist (task-admission): deny: "),
        "{}",
        event.message
    );
    assert_eq!(event.annotations["policy"], "allowlist");
    assert_eq!(event.annotations["hook"], "task-admission");
    assert!(event.annotations["outcome"].starts_with("deny: "));
    let logged = decision_line(
        &plugin,
        "task-admission",
        "allowlist",
        &[("task_id", denied.id())],
    )
    .await;
    assert_eq!(logged["@level"], "info", "{logged}");
    assert_eq!(
        logged["outcome"], event.annotations["outcome"],
        "the log line and the task event carry the same outcome"
    );
    assert!(
        docker::container_inspect(&denied.container_name())
            .unwrap()
            .is_none(),
        "no container was created"
    );
}

#[tokio::test]
async fn an_allowed_task_is_patched_within_the_plugin_config() {
    let plugin = policy_plugin(
        vec![module(
            "allowlist",
            "image-allowlist",
            "task-admission",
            json!({ "config": {
                "allowed": "wasmdock-test/*",
                "label": "policy.example/checked=true",
            }}),
        )],
        json!({}),
    )
    .await;
    let mut stream = events(&plugin).await;
    let task = task(
        "patched",
        json!({ "image": BUSYBOX_1, "command": "sleep", "args": ["1000"] }),
    );
    start(&plugin, &task).await;
    let decision = event_about(&mut stream, &task, "(task-admission): patch").await;
    assert_eq!(decision.annotations["policy"], "allowlist");
    let applied = event_about(&mut stream, &task, "patch applied").await;
    assert!(
        applied.message.contains("label policy.example/checked"),
        "{}",
        applied.message
    );
    let inspect = docker::container_inspect(&task.container_name())
        .unwrap()
        .expect("the container exists");
    let labels = &inspect["Config"]["Labels"];
    assert_eq!(labels["policy.example/checked"], "true", "{labels}");
    assert_eq!(
        labels["com.hashicorp.nomad.alloc_id"],
        task.alloc_id(),
        "Nomad's own label is untouched"
    );
    destroy(&plugin, &task, true).await;
}

#[tokio::test]
async fn a_gpu_task_gets_the_runtime_the_guest_chooses_and_others_do_not() {
    require_nvidia_runtime();
    // The native rule would pick `runc` (the plugin's nvidia_runtime here);
    // the guest picks `nvidia`, so the runtime shows who decided.
    let plugin = policy_plugin(
        vec![module(
            "gpu",
            "gpu-runtime",
            "gpu-runtime",
            json!({ "config": { "mode": "runtime", "runtime": "nvidia" } }),
        )],
        json!({ "nvidia_runtime": "runc", "allow_runtimes": ["runc", "nvidia"] }),
    )
    .await;
    let mut stream = events(&plugin).await;
    let sleeper = json!({ "image": BUSYBOX_1, "command": "sleep", "args": ["1000"] });
    let gpu_task = TaskBuilder::new("gpu", sleeper.clone())
        .device_env(GPU_ENV, "GPU-0a1b2c3d")
        .build()
        .unwrap();
    start(&plugin, &gpu_task).await;
    assert_eq!(runtime_of(&gpu_task), "nvidia");
    let event = event_about(&mut stream, &gpu_task, "(gpu-runtime)").await;
    assert_eq!(
        event.message, "Policy gpu (gpu-runtime): runtime nvidia, 0 device request(s)",
        "the decision and the module are in a task event"
    );
    let logged = decision_line(&plugin, "gpu-runtime", "gpu", &[("task_id", gpu_task.id())]).await;
    assert_eq!(logged["@level"], "info", "{logged}");
    assert_eq!(logged["outcome"], "runtime nvidia, 0 device request(s)");

    let plain = task("no-gpu", sleeper);
    start(&plugin, &plain).await;
    assert_eq!(
        runtime_of(&plain),
        "runc",
        "a task without GPU env keeps the engine default"
    );
    destroy(&plugin, &gpu_task, true).await;
    destroy(&plugin, &plain, true).await;
}

#[tokio::test]
async fn a_guests_runtime_is_still_checked_against_allow_runtimes() {
    require_nvidia_runtime();
    // The overreaching guest picks `nvidia` whatever allow_runtimes says.
    let plugin = policy_plugin(
        vec![module(
            "greedy",
            "hostile",
            "gpu-runtime",
            json!({ "config": { "behaviour": "overreach" } }),
        )],
        json!({ "allow_runtimes": ["runc"] }),
    )
    .await;
    let gpu_task = TaskBuilder::new("gpu-refused", json!({ "image": BUSYBOX_1 }))
        .device_env(GPU_ENV, "GPU-0a1b2c3d")
        .build()
        .unwrap();
    let status = start_err(&plugin, &gpu_task).await;
    assert!(
        status.message().contains(
            r#"requested runtime "nvidia" is not allowed (chosen by GPU runtime policy greedy)"#
        ),
        "{status:?}"
    );
    assert!(
        docker::container_inspect(&gpu_task.container_name())
            .unwrap()
            .is_none(),
        "no container was created"
    );
}

#[tokio::test]
async fn a_patch_cannot_grant_what_the_plugin_config_forbids() {
    for (field, expected) in [
        (
            "cap-add",
            "driver does not allow the following capabilities: sys_admin",
        ),
        (
            "label",
            r#"label "com.hashicorp.nomad.alloc_id" is Nomad's own"#,
        ),
        (
            "env",
            r#"environment variable "NOMAD_ALLOC_ID" is Nomad's own"#,
        ),
        ("memory", "memory-max-mb 1048576 is outside"),
    ] {
        let plugin = policy_plugin(
            vec![module(
                "greedy",
                "hostile",
                "task-admission",
                json!({ "config": { "behaviour": "overreach", "field": field } }),
            )],
            json!({}),
        )
        .await;
        let mut stream = events(&plugin).await;
        let task = task(&format!("overreach-{field}"), json!({ "image": BUSYBOX_1 }));
        let status = start_err(&plugin, &task).await;
        assert_eq!(
            recoverable_flag(&status),
            Some(false),
            "{field}: {status:?}"
        );
        assert!(
            status.message().contains(
                "admission policy greedy patched the task beyond what the plugin config permits"
            ) && status.message().contains(expected),
            "{field}: {status:?}"
        );
        let event = event_about(&mut stream, &task, "patch refused").await;
        assert!(event.message.contains(expected), "{}", event.message);
        assert!(
            docker::container_inspect(&task.container_name())
                .unwrap()
                .is_none(),
            "{field}: no container was created"
        );
    }
}

async fn stats_stream(plugin: &PluginUnderTest, task: &Task) -> Streaming<TaskStatsResponse> {
    plugin
        .driver()
        .task_stats(TaskStatsRequest {
            task_id: task.id().to_owned(),
            collection_interval: Some(duration(STATS_INTERVAL)),
        })
        .await
        .expect("TaskStats")
        .into_inner()
}

async fn next_sample(stream: &mut Streaming<TaskStatsResponse>) -> pb::TaskStats {
    tokio::time::timeout(Duration::from_secs(20), stream.message())
        .await
        .expect("a sample in time")
        .expect("no stream error")
        .expect("the stream is open")
        .stats
        .expect("stats set")
}

/// A task that uses a little CPU all the time (a few percent of a core:
/// enough to be measured, little enough not to slow other tests' burners).
fn ticker(name: &str, alloc: &Alloc) -> Task {
    alloc.task(name, ticking()).build().unwrap()
}

fn ticking() -> Value {
    json!({
        "image": BUSYBOX_1,
        "command": "sh",
        "args": ["-c", "while :; do i=0; while [ $i -lt 300 ]; do i=$((i+1)); done; sleep 0.1; done"],
    })
}

fn cpu_of(sample: &pb::TaskStats) -> &pb::CpuUsage {
    sample
        .agg_resource_usage
        .as_ref()
        .and_then(|u| u.cpu.as_ref())
        .expect("cpu")
}

#[tokio::test]
async fn the_stats_taggers_fields_reach_the_task_stats_stream() {
    let tagged_job = format!("tagged-{}", run_id());
    let plain_job = format!("plain-{}", run_id());
    let quiet_job = format!("quiet-{}", run_id());
    let plugin = tracing_policy_plugin(vec![module(
        "tagger",
        "stats-tagger",
        "stats-transform",
        json!({ "config": {
            "cpu_scale": "0",
            "jobs": "tagged-*",
            "drop_jobs": "quiet-*",
        }}),
    )])
    .await;
    let tagged = ticker("tagged", &Alloc::for_job(&tagged_job, "web").unwrap());
    let plain = ticker("plain", &Alloc::for_job(&plain_job, "web").unwrap());
    let quiet = ticker("quiet", &Alloc::for_job(&quiet_job, "web").unwrap());
    for task in [&tagged, &plain, &quiet] {
        start(&plugin, task).await;
    }

    // Tagged and rescaled (by 0: the guest's sample is the one sent).
    let mut stream = stats_stream(&plugin, &tagged).await;
    let tag = format!("tag:{NAMESPACE}/{tagged_job}/web/{}", tagged.name());
    for _ in 0..3 {
        let sample = next_sample(&mut stream).await;
        let cpu = cpu_of(&sample);
        assert_eq!((cpu.percent, cpu.total_ticks), (0.0, 0.0), "{cpu:?}");
        let entry = sample
            .resource_usage_by_pid
            .get(&tag)
            .unwrap_or_else(|| panic!("the tag {tag} in {:?}", sample.resource_usage_by_pid));
        assert!(entry.memory.as_ref().is_some_and(|m| m.rss > 0));
    }
    // A job the module does not select: measured as it is, no tag.
    let mut plain_stream = stats_stream(&plugin, &plain).await;
    let mut measured = Vec::new();
    for _ in 0..3 {
        let sample = next_sample(&mut plain_stream).await;
        assert!(sample.resource_usage_by_pid.is_empty());
        measured.push(cpu_of(&sample).percent);
    }
    assert!(
        measured.iter().any(|p| *p > 0.0),
        "an unselected job's CPU is left alone: {measured:?}"
    );
    // A dropped job: nothing at all, while the others go on.
    let mut quiet_stream = stats_stream(&plugin, &quiet).await;
    let got = tokio::time::timeout(Duration::from_secs(3), quiet_stream.message()).await;
    assert!(
        got.is_err(),
        "every sample of a dropped job is dropped: {got:?}"
    );
    next_sample(&mut stream).await;
    // Every sample's decision is logged (at trace) with what it was about.
    for (task, outcome) in [(&tagged, "keep"), (&quiet, "drop")] {
        let logged = decision_line(
            &plugin,
            "stats-transform",
            "tagger",
            &[("alloc_id", task.alloc_id()), ("task", task.name())],
        )
        .await;
        assert_eq!(logged["@level"], "trace", "{logged}");
        assert_eq!(logged["outcome"], outcome, "{logged}");
    }
    for task in [&tagged, &plain, &quiet] {
        destroy(&plugin, task, true).await;
    }
}

fn looping(name: &str, hook: &str, failure_policy: &str) -> Value {
    module(
        name,
        "hostile",
        hook,
        json!({
            "failure_policy": failure_policy,
            "deadline": format!("{LOOP_DEADLINE_MS}ms"),
            "config": { "behaviour": "loop" },
        }),
    )
}

/// A looping guest's step: cut off at (not before, not long after) its
/// deadline, and what its failure policy made of it.
fn assert_cut_off(event: &pb::DriverTaskEvent, consequence: &str) {
    assert!(
        event
            .message
            .contains(&format!("ran past its deadline of {LOOP_DEADLINE_MS}ms")),
        "{}",
        event.message
    );
    assert!(event.message.ends_with(consequence), "{}", event.message);
    assert_eq!(event.annotations["outcome"], "error: timeout");
    let latency_us: u64 = event.annotations["latency_us"].parse().unwrap();
    assert!(
        (LOOP_DEADLINE_MS * 1000..LOOP_DEADLINE_MS * 1000 * 10).contains(&latency_us),
        "stopped at its deadline: {latency_us} µs"
    );
}

#[tokio::test]
async fn looping_guests_are_cut_off_and_tasks_proceed_per_failure_policy() {
    require_nvidia_runtime();
    let plugin = policy_plugin(
        vec![
            looping("loop-admit", "task-admission", "ignore"),
            looping("loop-gpu", "gpu-runtime", "native"),
            looping("loop-stats", "stats-transform", "native"),
        ],
        json!({}),
    )
    .await;
    let mut stream = events(&plugin).await;
    let task = TaskBuilder::new("loops", ticking())
        .device_env(GPU_ENV, "GPU-0a1b2c3d")
        .build()
        .unwrap();
    start(&plugin, &task).await;
    // Admission: skipped (ignore); GPU: the native rule picks nvidia.
    let admission = event_about(&mut stream, &task, "(task-admission) failed").await;
    assert_cut_off(&admission, "the module is skipped");
    let gpu = event_about(&mut stream, &task, "(gpu-runtime) failed").await;
    assert_cut_off(&gpu, "the native rule decides");
    assert_eq!(runtime_of(&task), "nvidia");
    // Stats: the original sample is sent, one after another.
    let mut samples = stats_stream(&plugin, &task).await;
    let mut measured = Vec::new();
    for _ in 0..3 {
        let sample = next_sample(&mut samples).await;
        measured.push(cpu_of(&sample).percent);
    }
    assert!(
        measured.iter().any(|p| *p > 0.0),
        "the unchanged samples keep coming: {measured:?}"
    );
    // And they keep their pace: each sample costs the guest its deadline,
    // not the stream its interval.
    let window = Duration::from_secs(6);
    let began = Instant::now();
    let mut count = 0_u32;
    while let Some(left) = window.checked_sub(began.elapsed()) {
        match tokio::time::timeout(left, samples.message()).await {
            Ok(Ok(Some(_))) => count += 1,
            Ok(other) => panic!("the stats stream ended: {other:?}"),
            Err(_) => break,
        }
    }
    wasmdock_e2e::figure!(
        "stats stream through a looping guest ({LOOP_DEADLINE_MS} ms deadline, failure_policy native): \
         {count} samples in {window:?} at a {STATS_INTERVAL:?} interval"
    );
    let ideal = (window.as_millis() / STATS_INTERVAL.as_millis()) as u32;
    assert!(
        count >= ideal / 2,
        "the stream stalls: {count} samples in {window:?}, {ideal} expected at a {STATS_INTERVAL:?} interval"
    );
    assert!(
        plugin
            .wait_for_stderr("ran past its deadline", Duration::from_secs(5))
            .await
            .is_some()
    );
    let attributes = plugin
        .driver()
        .inspect_task(task.inspect_request())
        .await
        .unwrap()
        .into_inner()
        .driver
        .unwrap()
        .attributes;
    let timeouts: u64 = attributes["policy.loop-stats.stats-transform.timeouts"]
        .parse()
        .unwrap();
    assert!(timeouts >= 3, "{attributes:?}");
    destroy(&plugin, &task, true).await;
}

#[tokio::test]
async fn a_looping_admission_guest_that_fails_closed_denies_the_task() {
    let plugin = policy_plugin(
        vec![looping("loop-admit", "task-admission", "fail")],
        json!({}),
    )
    .await;
    let mut stream = events(&plugin).await;
    let task = task("loop-denied", json!({ "image": BUSYBOX_1 }));
    let status = start_err(&plugin, &task).await;
    assert_eq!(recoverable_flag(&status), Some(false));
    assert!(
        status.message().contains("admission policy loop-admit")
            && status.message().contains("ran past its deadline"),
        "{status:?}"
    );
    let event = event_about(&mut stream, &task, "(task-admission) failed").await;
    assert_cut_off(&event, "the task is denied");
}

/// A plugin whose policy host cannot start: its compiled-module cache path
/// (`<run_dir>/<driver>/policy-cache`) is a regular file. No Fingerprint is
/// sent, so the first StartTask is what loads the modules.
async fn plugin_with_broken_policy_host(
    failure_policy: &str,
) -> (PluginUnderTest, tempfile::TempDir) {
    let run_dir = tempfile::tempdir().expect("a temp dir");
    std::fs::create_dir_all(run_dir.path().join("wasmdock")).unwrap();
    std::fs::write(
        run_dir.path().join("wasmdock/policy-cache"),
        "not a directory",
    )
    .unwrap();
    let modules = vec![module(
        "allowlist",
        "image-allowlist",
        "task-admission",
        json!({ "config": { "allowed": "*" }, "failure_policy": failure_policy }),
    )];
    let plugin = plugin(json!({
        "policy": { "module": modules },
        "run_dir": run_dir.path().to_string_lossy(),
    }))
    .await;
    (plugin, run_dir)
}

#[tokio::test]
async fn a_policy_host_that_cannot_start_fails_closed_where_a_module_says_so() {
    let sleeper = json!({ "image": BUSYBOX_1, "command": "sleep", "args": ["1000"] });

    let (closed, _dir) = plugin_with_broken_policy_host("fail").await;
    let mut stream = events(&closed).await;
    let denied = task("broken-host-fail", sleeper.clone());
    let status = start_err(&closed, &denied).await;
    assert!(
        status
            .message()
            .contains("admission policy allowlist cannot run")
            && status.message().contains("policy-cache")
            && status.message().contains("fails closed"),
        "the error names the module, the cause and the consequence: {}",
        status.message()
    );
    assert_eq!(recoverable_flag(&status), Some(false));
    assert!(
        docker::containers_named(&denied.container_name())
            .unwrap()
            .is_empty(),
        "no container was made"
    );
    let event = event_about(&mut stream, &denied, "cannot run").await;
    assert_eq!(event.annotations["policy"], "allowlist");

    let (open, _dir) = plugin_with_broken_policy_host("ignore").await;
    let allowed = task("broken-host-ignore", sleeper);
    start(&open, &allowed).await;
    destroy(&open, &allowed, true).await;
}

#[tokio::test]
async fn a_start_task_before_the_first_fingerprint_is_still_judged() {
    // No Fingerprint: policies load on the StartTask that needs them.
    let plugin = plugin(json!({ "policy": { "module": [module(
        "allowlist",
        "image-allowlist",
        "task-admission",
        json!({ "config": { "allowed": "registry.example.com/*" } }),
    )] } }))
    .await;
    let task = task(
        "early-start",
        json!({ "image": BUSYBOX_1, "command": "sleep", "args": ["1000"] }),
    );
    let status = start_err(&plugin, &task).await;
    assert!(
        status
            .message()
            .contains("admission policy allowlist denied the task"),
        "{}",
        status.message()
    );
}
