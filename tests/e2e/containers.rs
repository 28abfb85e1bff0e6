//! Container-level behaviour against a real engine: network pause
//! containers, ports, adoption of a same-name container, OOM kills, and
//! fingerprint health as the engine comes and goes.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;
use tokio_stream::StreamExt as _;
use wasmdock_e2e::calls::{destroy, first_fingerprint, plugin, start};
use wasmdock_e2e::docker::{self, docker};
use wasmdock_e2e::images::{BUSYBOX_1, sleeper_image};
use wasmdock_e2e::{Alloc, PluginUnderTest, TaskBuilder};
use wasmdock_host::rpc::proto::drivers::{
    self as pb, CreateNetworkRequest, DestroyNetworkRequest, fingerprint_response::HealthState,
};

#[tokio::test]
async fn create_network_makes_one_pause_container_per_alloc_that_tasks_join() {
    let plugin = plugin(json!({ "infra_image": sleeper_image() })).await;
    let alloc = Alloc::new().unwrap();
    let request = CreateNetworkRequest {
        alloc_id: alloc.id().to_owned(),
        hostname: "myhost".to_owned(),
    };
    let created = plugin
        .driver()
        .create_network(request.clone())
        .await
        .expect("CreateNetwork")
        .into_inner();
    assert!(created.created);
    let spec = created.isolation_spec.expect("a spec");
    assert_eq!(
        spec.mode(),
        pb::network_isolation_spec::NetworkIsolationMode::Group
    );
    assert!(
        spec.path.starts_with("/var/run/docker/netns/"),
        "{}",
        spec.path
    );
    assert_eq!(spec.labels["docker_sandbox_hostname"], "myhost");
    let pause_id = spec.labels["docker_sandbox_container_id"].clone();

    let pause = docker::container_inspect(&pause_id)
        .unwrap()
        .expect("pause container");
    assert_eq!(pause["Name"], format!("/nomad_init_{}", alloc.id()));
    assert_eq!(pause["Config"]["Hostname"], "myhost");
    // Pause containers carry only the alloc_id label of Nomad's (the test
    // image brings a label of its own).
    let nomad_labels: Vec<_> = pause["Config"]["Labels"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("com.hashicorp.nomad."))
        .collect();
    assert_eq!(
        nomad_labels,
        [(
            &"com.hashicorp.nomad.alloc_id".to_owned(),
            &json!(alloc.id())
        )]
    );
    assert_eq!(pause["HostConfig"]["NetworkMode"], "none");
    assert_eq!(
        pause["HostConfig"]["RestartPolicy"]["Name"],
        "unless-stopped"
    );

    let again = plugin
        .driver()
        .create_network(request)
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created, "the running pause container is reused");
    assert_eq!(
        again.isolation_spec.as_ref().unwrap().labels["docker_sandbox_container_id"],
        pause_id
    );

    // A relaunched plugin finds it again on its first fingerprint, so the
    // reconciler will never mistake it for a stray.
    let mut plugin = plugin;
    plugin.restart().await.unwrap();
    let mut fingerprints = plugin
        .driver()
        .fingerprint(pb::FingerprintRequest {})
        .await
        .unwrap()
        .into_inner();
    fingerprints.next().await.unwrap().unwrap();
    let line = plugin
        .wait_for_stderr(
            "rediscovered network pause container",
            Duration::from_secs(10),
        )
        .await;
    assert!(
        line.is_some_and(|l| l.contains(&pause_id)),
        "{}",
        plugin.stderr_lines().join("\n")
    );

    // A task of the allocation joins the pause container's namespace.
    let mut task = TaskBuilder::new(
        "joined",
        json!({ "image": BUSYBOX_1, "command": "sleep", "args": ["1000"] }),
    )
    .alloc(&alloc)
    .build()
    .unwrap();
    task.config.network_isolation_spec = Some(spec.clone());
    start(&plugin, &task).await;
    let container = docker::container_inspect(&task.container_name())
        .unwrap()
        .unwrap();
    assert_eq!(
        container["HostConfig"]["NetworkMode"],
        format!("container:{pause_id}")
    );
    destroy(&plugin, &task, true).await;

    plugin
        .driver()
        .destroy_network(DestroyNetworkRequest {
            alloc_id: alloc.id().to_owned(),
            isolation_spec: Some(spec),
        })
        .await
        .expect("DestroyNetwork");
    assert_eq!(
        docker::container_inspect(&pause_id).unwrap(),
        None,
        "pause container removed"
    );
}

#[tokio::test]
async fn group_ports_are_published_for_tcp_and_udp() {
    let plugin = plugin(json!({})).await;
    let task = TaskBuilder::new(
        "ports",
        json!({ "image": BUSYBOX_1, "command": "sleep", "args": ["1000"], "ports": ["http"] }),
    )
    .port("http", 28_080, 8080)
    .build()
    .unwrap();
    let started = start(&plugin, &task).await;
    // The network override carries the container's bridge address.
    let network = started.network_override.expect("a network override");
    assert!(
        network.addr.parse::<std::net::Ipv4Addr>().is_ok(),
        "{network:?}"
    );
    assert!(
        !network.auto_advertise,
        "bridge addresses are not advertised by default"
    );
    let container = docker::container_inspect(&task.container_name())
        .unwrap()
        .unwrap();
    let bindings = &container["HostConfig"]["PortBindings"];
    for proto in ["tcp", "udp"] {
        assert_eq!(
            bindings[format!("8080/{proto}")],
            json!([{ "HostIp": "127.0.0.1", "HostPort": "28080" }]),
            "{bindings}"
        );
    }
    destroy(&plugin, &task, true).await;
}

#[tokio::test]
async fn a_running_container_with_the_tasks_name_is_adopted() {
    let plugin = plugin(json!({})).await;
    let task = TaskBuilder::new(
        "adopt",
        json!({ "image": BUSYBOX_1, "command": "sleep", "args": ["1000"] }),
    )
    .build()
    .unwrap();
    let label = format!("com.hashicorp.nomad.alloc_id={}", task.alloc_id());
    let existing = docker(&[
        "run",
        "-d",
        "--name",
        &task.container_name(),
        "--label",
        &label,
        BUSYBOX_1,
        "sleep",
        "1000",
    ])
    .expect("pre-create");
    let started = start(&plugin, &task).await;
    let inspect = plugin
        .driver()
        .inspect_task(task.inspect_request())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        inspect.driver.unwrap().attributes["container_id"],
        existing.trim(),
        "adopted, not recreated"
    );
    assert!(started.handle.is_some());
    destroy(&plugin, &task, true).await;
}

#[tokio::test]
async fn a_stopped_container_with_the_tasks_name_is_replaced() {
    let plugin = plugin(json!({})).await;
    let task = TaskBuilder::new(
        "replace",
        json!({ "image": BUSYBOX_1, "command": "sleep", "args": ["1000"] }),
    )
    .build()
    .unwrap();
    let label = format!("com.hashicorp.nomad.alloc_id={}", task.alloc_id());
    let old = docker(&[
        "create",
        "--name",
        &task.container_name(),
        "--label",
        &label,
        BUSYBOX_1,
        "true",
    ])
    .expect("pre-create");
    start(&plugin, &task).await;
    let inspect = plugin
        .driver()
        .inspect_task(task.inspect_request())
        .await
        .unwrap()
        .into_inner();
    assert_ne!(
        inspect.driver.unwrap().attributes["container_id"],
        old.trim()
    );
    assert_eq!(inspect.task.unwrap().state(), pb::TaskState::Running);
    destroy(&plugin, &task, true).await;
}

#[tokio::test]
async fn an_oom_killed_task_is_reported_as_such() {
    let plugin = plugin(json!({})).await;
    let task = TaskBuilder::new(
        "oom",
        json!({ "image": BUSYBOX_1, "command": "sh", "args": ["-c", "head -c 200m /dev/zero | tail"] }),
    )
    .memory(16, 0)
    .build()
    .unwrap();
    start(&plugin, &task).await;
    let result = plugin
        .driver()
        .wait_task(task.wait_request())
        .await
        .unwrap()
        .into_inner();
    let exit = result.result.unwrap();
    assert!(exit.oom_killed, "{exit:?} {}", result.err);
    assert_eq!(result.err, "OOM Killed");
    destroy(&plugin, &task, true).await;
}

/// A unix-socket proxy to the engine that can be cut and restored.
struct EngineProxy {
    path: PathBuf,
    _dir: tempfile::TempDir,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl EngineProxy {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self {
            path: dir.path().join("docker.sock"),
            _dir: dir,
            tasks: Arc::default(),
        }
    }

    fn endpoint(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    fn up(&self) {
        let _ = std::fs::remove_file(&self.path);
        let listener = UnixListener::bind(&self.path).unwrap();
        let tasks = Arc::clone(&self.tasks);
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut engine) = UnixStream::connect("/var/run/docker.sock").await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
                    }
                });
                tasks.lock().unwrap().push(conn);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    fn down(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn health(plugin: &PluginUnderTest) -> (HealthState, String) {
    // Every new stream answers at once; the driver keeps its history.
    let first = first_fingerprint(plugin).await;
    (first.health(), first.health_description)
}

#[tokio::test]
async fn fingerprint_health_follows_the_engine() {
    let proxy = EngineProxy::new();
    let plugin = plugin(json!({ "endpoint": proxy.endpoint() })).await;
    assert_eq!(
        health(&plugin).await,
        (
            HealthState::Undetected,
            "Failed to connect to docker daemon".to_owned()
        )
    );
    proxy.up();
    assert_eq!(
        health(&plugin).await,
        (HealthState::Healthy, "Healthy".to_owned())
    );
    proxy.down();
    assert_eq!(
        health(&plugin).await,
        (
            HealthState::Unhealthy,
            "Failed to connect to docker daemon".to_owned()
        )
    );
    proxy.up();
    assert_eq!(
        health(&plugin).await,
        (HealthState::Healthy, "Healthy".to_owned())
    );
    proxy.down();
}
