//! The task lifecycle over the real socket against a real engine: start,
//! wait, stop, destroy, inspect, signal, exec, events, recover.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio_stream::StreamExt as _;
use tonic::Code;
use wasmdock_e2e::calls::{destroy, first_fingerprint, plugin, start, task, wait};
use wasmdock_e2e::docker::{self, docker};
use wasmdock_e2e::images::BUSYBOX_1;
use wasmdock_e2e::registry::{BlackHoleRegistry, Registry};
use wasmdock_e2e::{PluginUnderTest, Task};
use wasmdock_host::rpc::proto::drivers::{
    self as pb, ExecTaskRequest, ExecTaskStreamingIoOperation, ExecTaskStreamingRequest,
    TaskEventsRequest,
    exec_task_streaming_request::{Setup, TerminalSize},
};
use wasmdock_host::rpc::status::recoverable_flag;

#[tokio::test]
async fn a_finished_task_reports_success_and_destroy_removes_its_container() {
    let plugin = plugin(json!({})).await;
    let task = task(
        "echo",
        json!({ "image": BUSYBOX_1, "command": "echo", "args": ["hello"] }),
    );
    let started = start(&plugin, &task).await;
    let handle = started.handle.expect("a handle");
    assert_eq!(
        handle.config.as_ref().map(|c| c.id.as_str()),
        Some(task.id()),
        "the handle carries the task config"
    );
    assert!(!handle.driver_state.is_empty());

    let result = wait(&plugin, &task).await;
    assert_eq!(result.result.unwrap().exit_code, 0);
    assert_eq!(result.err, "");

    let inspect = plugin
        .driver()
        .inspect_task(task.inspect_request())
        .await
        .unwrap()
        .into_inner();
    let status = inspect.task.unwrap();
    assert_eq!(status.state(), pb::TaskState::Exited);
    assert!(
        status.started_at.is_some() && status.completed_at.is_some() && status.result.is_some()
    );
    let container_id = inspect.driver.unwrap().attributes["container_id"].clone();

    plugin
        .driver()
        .destroy_task(task.destroy_request(false))
        .await
        .expect("DestroyTask");
    assert_eq!(
        docker::container_inspect(&container_id).unwrap(),
        None,
        "container removed"
    );
    let status = plugin
        .driver()
        .wait_task(task.wait_request())
        .await
        .expect_err("untracked");
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn a_long_running_task_waits_and_stop_with_a_signal_kills_after_the_timeout() {
    let plugin = plugin(json!({})).await;
    let task = task(
        "sleep",
        json!({ "image": BUSYBOX_1, "command": "sleep", "args": ["1000"] }),
    );
    start(&plugin, &task).await;

    // WaitTask does not resolve while the task runs; several waiters share the result.
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let mut driver = plugin.driver();
            let request = task.wait_request();
            tokio::spawn(async move { driver.wait_task(request).await.map(|r| r.into_inner()) })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        waiters.iter().all(|w| !w.is_finished()),
        "WaitTask must block while the task runs"
    );

    // PID 1 ignores SIGUSR1, so the task only ends when the timeout forces it.
    let begun = Instant::now();
    plugin
        .driver()
        .stop_task(task.stop_request(Duration::from_secs(2), "SIGUSR1"))
        .await
        .expect("StopTask");
    let mut codes = Vec::new();
    for waiter in waiters {
        let result = waiter.await.unwrap().expect("WaitTask");
        codes.push(result.result.unwrap().exit_code);
        assert!(!result.err.is_empty(), "a killed task is not successful");
    }
    assert!(
        begun.elapsed() >= Duration::from_secs(2),
        "the kill waited for the timeout: {:?}",
        begun.elapsed()
    );
    assert!(codes.iter().all(|c| *c == codes[0] && *c != 0), "{codes:?}");

    // A second wait after the exit returns at once with the same result.
    let again = wait(&plugin, &task).await;
    assert_eq!(again.result.unwrap().exit_code, codes[0]);
    destroy(&plugin, &task, true).await;
}

#[tokio::test]
async fn destroy_refuses_a_running_task_without_force() {
    let plugin = plugin(json!({})).await;
    let task = task(
        "busy",
        json!({ "image": BUSYBOX_1, "command": "sleep", "args": ["1000"] }),
    );
    start(&plugin, &task).await;
    let status = plugin
        .driver()
        .destroy_task(task.destroy_request(false))
        .await
        .expect_err("running");
    assert!(
        status.message().contains("must call StopTask"),
        "{status:?}"
    );
    plugin
        .driver()
        .destroy_task(task.destroy_request(true))
        .await
        .expect("force works");
    let result = wait_after_destroy(&plugin, &task).await;
    assert_eq!(result, Code::NotFound);
}

async fn wait_after_destroy(plugin: &PluginUnderTest, task: &Task) -> Code {
    plugin
        .driver()
        .wait_task(task.wait_request())
        .await
        .map(|_| Code::Ok)
        .unwrap_or_else(|s| s.code())
}

#[tokio::test]
async fn bad_task_configs_are_refused_naming_the_key() {
    let plugin = plugin(json!({})).await;
    for (config, needle) in [
        (json!({ "image": "" }), "image name required"),
        (json!({ "image": BUSYBOX_1, "imagee": "x" }), "imagee"),
        (
            json!({ "image": BUSYBOX_1, "privileged": true }),
            "privileged mode is disabled",
        ),
        (
            json!({ "image": BUSYBOX_1, "command": " sh" }),
            "command contains extra white space",
        ),
        (
            json!({ "image": "Not A Valid Ref" }),
            "does not match registry specification",
        ),
    ] {
        let task = task("bad", config.clone());
        let status = plugin
            .driver()
            .start_task(task.start_request())
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{config}: {status:?}");
        assert!(
            status.message().contains(needle),
            "{config}: {}",
            status.message()
        );
    }
}

#[tokio::test]
async fn starting_the_same_task_twice_is_an_error() {
    let plugin = plugin(json!({})).await;
    let task = task(
        "twice",
        json!({ "image": BUSYBOX_1, "command": "sleep", "args": ["1000"] }),
    );
    start(&plugin, &task).await;
    let status = plugin
        .driver()
        .start_task(task.start_request())
        .await
        .expect_err("second start");
    assert!(status.message().contains("already started"), "{status:?}");
    destroy(&plugin, &task, true).await;
}

#[tokio::test]
async fn labels_include_the_alloc_id_and_the_extra_labels_asked_for() {
    let plugin = plugin(json!({ "extra_labels": ["task*", "job_name"] })).await;
    let task = task(
        "labels",
        json!({ "image": BUSYBOX_1, "command": "sleep", "args": ["1000"],
                "labels": [{ "team": "a", "com.hashicorp.nomad.alloc_id": "forged" }] }),
    );
    start(&plugin, &task).await;
    let inspect = docker::container_inspect(&task.container_name())
        .unwrap()
        .expect("container exists");
    let labels = inspect["Config"]["Labels"].as_object().unwrap();
    assert_eq!(labels["team"], "a");
    assert_eq!(
        labels["com.hashicorp.nomad.alloc_id"],
        task.alloc_id(),
        "user labels cannot forge the alloc id"
    );
    let nomad: Vec<&String> = labels
        .keys()
        .filter(|k| k.starts_with("com.hashicorp.nomad."))
        .collect();
    assert_eq!(nomad.len(), 4, "{nomad:?}");
    assert_eq!(labels["com.hashicorp.nomad.task_name"], task.name());
    destroy(&plugin, &task, true).await;
}

#[tokio::test]
async fn the_task_sees_the_shared_alloc_dir() {
    let plugin = plugin(json!({})).await;
    let task = task(
        "writer",
        json!({ "image": BUSYBOX_1, "command": "sh", "args": ["-c", "echo written > $NOMAD_ALLOC_DIR/output.txt"] }),
    );
    start(&plugin, &task).await;
    assert_eq!(wait(&plugin, &task).await.result.unwrap().exit_code, 0);
    let written = std::fs::read_to_string(task.alloc().shared_dir().join("output.txt")).unwrap();
    assert_eq!(written, "written\n");
    destroy(&plugin, &task, true).await;
}

#[tokio::test]
async fn a_non_zero_exit_is_reported_with_its_code() {
    let plugin = plugin(json!({})).await;
    let task = task(
        "fails",
        json!({ "image": BUSYBOX_1, "command": "sh", "args": ["-c", "exit 3"] }),
    );
    start(&plugin, &task).await;
    let result = wait(&plugin, &task).await;
    assert_eq!(result.result.unwrap().exit_code, 3);
    assert_eq!(
        result.err,
        "Docker container exited with non-zero exit code: 3"
    );
    destroy(&plugin, &task, true).await;
}

#[tokio::test]
async fn signal_task_delivers_the_signal() {
    let plugin = plugin(json!({})).await;
    let script = "trap 'echo got > /alloc/signal.txt; exit 7' HUP; while true; do sleep 0.1; done";
    let task = task(
        "trap",
        json!({ "image": BUSYBOX_1, "command": "sh", "args": ["-c", script] }),
    );
    start(&plugin, &task).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = plugin
        .driver()
        .signal_task(task.signal_request("SIGBOGUS"))
        .await
        .expect_err("bad name");
    assert!(
        status.message().contains("failed to parse signal"),
        "{status:?}"
    );
    plugin
        .driver()
        .signal_task(task.signal_request("SIGHUP"))
        .await
        .expect("SignalTask");
    assert_eq!(wait(&plugin, &task).await.result.unwrap().exit_code, 7);
    destroy(&plugin, &task, true).await;
}

#[tokio::test]
async fn exec_task_returns_output_tails_and_the_exit_code() {
    let plugin = plugin(json!({})).await;
    let task = task(
        "exec",
        json!({ "image": BUSYBOX_1, "command": "sleep", "args": ["1000"] }),
    );
    start(&plugin, &task).await;
    let response = plugin
        .driver()
        .exec_task(ExecTaskRequest {
            task_id: task.id().to_owned(),
            command: vec![
                "sh".into(),
                "-c".into(),
                "echo out; echo err >&2; exit 3".into(),
            ],
            timeout: None,
        })
        .await
        .expect("ExecTask")
        .into_inner();
    assert_eq!(response.stdout, b"out\n");
    assert_eq!(response.stderr, b"err\n");
    assert_eq!(response.result.unwrap().exit_code, 3);

    // Only the last 4 KiB are kept.
    let big = plugin
        .driver()
        .exec_task(ExecTaskRequest {
            task_id: task.id().to_owned(),
            command: vec!["sh".into(), "-c".into(), "seq 1 5000".into()],
            timeout: None,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(big.stdout.len(), 4096);
    assert!(String::from_utf8_lossy(&big.stdout).ends_with("4999\n5000\n"));
    destroy(&plugin, &task, true).await;
}

/// Runs one streaming exec: sends the messages, collects stdout, stderr
/// and the exit code.
async fn exec_stream(
    plugin: &PluginUnderTest,
    messages: Vec<ExecTaskStreamingRequest>,
) -> (Vec<u8>, Vec<u8>, i32) {
    let (sender, receiver) = tokio::sync::mpsc::channel(16);
    for message in messages {
        sender.send(message).await.unwrap();
    }
    let outbound = tokio_stream::wrappers::ReceiverStream::new(receiver);
    let mut inbound = plugin
        .driver()
        .exec_task_streaming(outbound)
        .await
        .expect("exec starts")
        .into_inner();
    let (mut stdout, mut stderr, mut code) = (Vec::new(), Vec::new(), None);
    while let Some(message) = tokio::time::timeout(Duration::from_secs(20), inbound.next())
        .await
        .expect("exec ends")
    {
        let message = message.expect("exec frame");
        if let Some(io) = message.stdout {
            stdout.extend(io.data);
        }
        if let Some(io) = message.stderr {
            stderr.extend(io.data);
        }
        if message.exited {
            code = message.result.map(|r| r.exit_code);
        }
    }
    drop(sender);
    (stdout, stderr, code.expect("an exit result"))
}

fn setup(task: &Task, command: &str, tty: bool) -> ExecTaskStreamingRequest {
    ExecTaskStreamingRequest {
        setup: Some(Setup {
            task_id: task.id().to_owned(),
            command: vec!["/bin/sh".into(), "-c".into(), command.into()],
            tty,
        }),
        ..Default::default()
    }
}

fn stdin(data: &[u8], close: bool) -> ExecTaskStreamingRequest {
    ExecTaskStreamingRequest {
        stdin: Some(ExecTaskStreamingIoOperation {
            data: data.to_vec(),
            close,
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn streaming_exec_passes_the_conformance_cases() {
    let plugin = plugin(json!({})).await;
    let task = task(
        "stream",
        json!({ "image": BUSYBOX_1, "command": "sleep", "args": ["1000"] }),
    );
    start(&plugin, &task).await;

    let (out, err, code) = exec_stream(
        &plugin,
        vec![setup(&task, "echo hello; echo oops >&2; exit 43", false)],
    )
    .await;
    assert_eq!(
        (out.as_slice(), err.as_slice(), code),
        (&b"hello\n"[..], &b"oops\n"[..], 43)
    );

    let (out, _, code) = exec_stream(&plugin, vec![setup(&task, "stty size", false)]).await;
    assert_ne!(code, 0, "no tty: {}", String::from_utf8_lossy(&out));

    let (out, _, code) = exec_stream(
        &plugin,
        vec![
            setup(&task, "cat", false),
            stdin(b"hello from stdin\n", false),
            stdin(b"", true),
        ],
    )
    .await;
    assert_eq!((out.as_slice(), code), (&b"hello from stdin\n"[..], 0));

    let (out, err, code) =
        exec_stream(&plugin, vec![setup(&task, "echo a; echo b >&2", true)]).await;
    assert_eq!(code, 0);
    assert_eq!(
        String::from_utf8_lossy(&out),
        "a\r\nb\r\n",
        "a tty merges stderr into stdout"
    );
    assert!(err.is_empty());

    let resize = |height, width| ExecTaskStreamingRequest {
        tty_size: Some(TerminalSize { height, width }),
        ..Default::default()
    };
    let (out, _, _) = exec_stream(
        &plugin,
        vec![
            setup(&task, "sleep 1; stty size", true),
            resize(50, 40),
            resize(100, 100),
        ],
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&out).trim(), "100 100");

    // A TTY echoes what is typed.
    let (out, _, code) = exec_stream(
        &plugin,
        vec![
            setup(&task, "read line; echo \"got $line\"", true),
            stdin(b"typed\n", false),
        ],
    )
    .await;
    let out = String::from_utf8_lossy(&out);
    assert_eq!(code, 0);
    assert!(
        out.contains("typed\r\n") && out.contains("got typed\r\n"),
        "{out:?}"
    );

    // With a TTY only the lead process is awaited, not what it left behind.
    let begun = std::time::Instant::now();
    let (_, _, code) = exec_stream(
        &plugin,
        vec![setup(&task, "sleep 1000 & echo started", true)],
    )
    .await;
    assert_eq!(code, 0);
    assert!(
        begun.elapsed() < Duration::from_secs(10),
        "{:?}",
        begun.elapsed()
    );
    destroy(&plugin, &task, true).await;
}

#[tokio::test]
async fn an_image_from_a_registry_is_pulled_with_an_event() {
    let registry = Registry::start().await.expect("registry");
    let image = registry.push_unique("pulled:1").expect("push");
    let plugin = plugin(json!({})).await;
    let mut events = plugin
        .driver()
        .task_events(TaskEventsRequest {})
        .await
        .unwrap()
        .into_inner();
    let task = task("pull", json!({ "image": image, "command": "true" }));
    start(&plugin, &task).await;
    assert_eq!(wait(&plugin, &task).await.result.unwrap().exit_code, 0);
    let event = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("an event")
        .unwrap()
        .unwrap();
    assert_eq!(event.message, "Downloading image");
    assert_eq!(event.annotations["image"], image);
    assert_eq!(event.alloc_id, task.alloc_id());
    assert!(event.timestamp.is_some());
    destroy(&plugin, &task, true).await;
    let _ = docker(&["rmi", "-f", &image]);
}

#[tokio::test]
async fn an_unreachable_registry_is_a_recoverable_error() {
    let hole = BlackHoleRegistry::start().expect("black hole");
    let plugin = plugin(json!({})).await;
    let image = hole.reference("foo:1");
    let task = task(
        "hole",
        json!({ "image": image, "image_pull_timeout": "2s" }),
    );
    let status = plugin
        .driver()
        .start_task(task.start_request())
        .await
        .expect_err("pull fails");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(recoverable_flag(&status), Some(true), "{status:?}");
    assert!(status.message().contains("Failed to pull"), "{status:?}");
}

#[tokio::test]
async fn tasks_are_recovered_after_the_plugin_is_killed() {
    let mut plugin = plugin(json!({})).await;
    let long = task(
        "long",
        json!({ "image": BUSYBOX_1, "command": "sleep", "args": ["1000"] }),
    );
    let short = task(
        "short",
        json!({ "image": BUSYBOX_1, "command": "sh", "args": ["-c", "sleep 2; exit 5"] }),
    );
    let long_handle = start(&plugin, &long).await.handle.unwrap();
    let short_handle = start(&plugin, &short).await.handle.unwrap();

    plugin.restart().await.expect("relaunch");
    // The short task exits while nobody watches.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (task, handle) in [(&long, long_handle), (&short, short_handle)] {
        plugin
            .driver()
            .recover_task(task.recover_request(handle.clone()))
            .await
            .expect("RecoverTask");
        plugin
            .driver()
            .recover_task(task.recover_request(handle))
            .await
            .expect("RecoverTask again is fine");
    }
    assert_eq!(
        wait(&plugin, &short).await.result.unwrap().exit_code,
        5,
        "the real exit code"
    );
    let inspect = plugin
        .driver()
        .inspect_task(long.inspect_request())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(inspect.task.unwrap().state(), pb::TaskState::Running);
    plugin
        .driver()
        .stop_task(long.stop_request(Duration::from_secs(1), ""))
        .await
        .unwrap();
    assert_ne!(wait(&plugin, &long).await.result.unwrap().exit_code, 0);
    for task in [&long, &short] {
        destroy(&plugin, task, true).await;
    }
}

#[tokio::test]
async fn fingerprint_reports_a_healthy_engine_with_its_attributes() {
    let plugin = plugin(json!({
        "allow_privileged": true,
        "volumes": { "enabled": true },
        "pids_limit": 100
    }))
    .await;
    let first = first_fingerprint(&plugin).await;
    assert_eq!(
        first.health(),
        pb::fingerprint_response::HealthState::Healthy
    );
    assert_eq!(first.health_description, "Healthy");
    let attr = |key: &str| first.attributes.get(key).and_then(|a| a.value.clone());
    use wasmdock_host::rpc::proto::structs::attribute::Value;
    assert_eq!(attr("driver.wasmdock"), Some(Value::BoolVal(true)));
    assert!(matches!(attr("driver.wasmdock.version"), Some(Value::StringVal(v)) if !v.is_empty()));
    assert_eq!(
        attr("driver.wasmdock.privileged.enabled"),
        Some(Value::BoolVal(true))
    );
    assert_eq!(
        attr("driver.wasmdock.os_type"),
        Some(Value::StringVal("linux".into()))
    );
    let Some(Value::StringVal(runtimes)) = attr("driver.wasmdock.runtimes") else {
        panic!("runtimes")
    };
    let mut sorted: Vec<&str> = runtimes.split(',').collect();
    sorted.sort_unstable();
    assert_eq!(runtimes.split(',').collect::<Vec<_>>(), sorted, "sorted");
    assert!(runtimes.split(',').any(|r| r == "runc"), "{runtimes}");
    assert_eq!(
        attr("driver.wasmdock.volumes.enabled"),
        Some(Value::BoolVal(true))
    );
    assert_eq!(attr("driver.wasmdock.pids.limit"), Some(Value::IntVal(100)));
    // `bridge_ip` is the default bridge's IPAM gateway, when the engine
    // reports one (engines that leave it implicit get no attribute, as with
    // Nomad's driver).
    let gateway = docker(&[
        "network",
        "inspect",
        "bridge",
        "--format",
        "{{range .IPAM.Config}}{{.Gateway}}{{end}}",
    ])
    .unwrap()
    .trim()
    .to_owned();
    let expected = (!gateway.is_empty()).then_some(Value::StringVal(gateway));
    assert_eq!(attr("driver.wasmdock.bridge_ip"), expected);
}
