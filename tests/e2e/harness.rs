//! The harness itself works: images, registries, the plugin process, the
//! task builder and cleanup. Nothing here needs a driver RPC beyond
//! PluginInfo, Capabilities, SetConfig and Init.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::os::unix::fs::FileTypeExt as _;
use std::time::{Duration, Instant};

use serde_json::json;
use wasmdock_e2e::cleanup::ALLOC_ID_LABEL;
use wasmdock_e2e::docker::{self, docker};
use wasmdock_e2e::images::{self, BUSYBOX_1, BUSYBOX_2};
use wasmdock_e2e::plugin::NODE_COMPUTE_MHZ;
use wasmdock_e2e::registry::{BlackHoleRegistry, Registry};
use wasmdock_e2e::{Alloc, Cleanup, PluginUnderTest, TaskBuilder, run_id};
use wasmdock_host::rpc::proto::base::{PluginInfoRequest, PluginType};
use wasmdock_host::rpc::proto::drivers::CapabilitiesRequest;

fn run(image: &str, command: &[&str]) -> String {
    let mut args = vec!["run", "--rm", image];
    args.extend(command);
    docker(&args).unwrap_or_else(|err| panic!("{err:#}"))
}

#[test]
fn test_images_build_and_run() {
    let image = images::busybox();
    assert_eq!(image.reference, BUSYBOX_1);
    assert_eq!(run(BUSYBOX_1, &["echo", "hi"]), "hi");
    assert_eq!(run(BUSYBOX_1, &["cat", "/variant"]), "1");
    // The default command is a shell, and PATH finds the applets.
    assert_eq!(run(BUSYBOX_1, &["sh", "-c", "seq 3 | wc -l"]), "3");
    let inspect = docker::image_inspect(BUSYBOX_1).unwrap().unwrap();
    assert_eq!(inspect["Config"]["Cmd"], json!(["/bin/sh"]));
    assert!(
        inspect["Config"]["Env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().starts_with("PATH=")),
        "{inspect}"
    );
}

#[test]
fn the_two_variants_differ_and_rebuilding_is_idempotent() {
    let one = images::busybox();
    let two = images::busybox_variant();
    assert_eq!(two.reference, BUSYBOX_2);
    assert_ne!(one.id, two.id);
    assert_eq!(
        docker::image_id(BUSYBOX_2).unwrap().as_deref(),
        Some(two.id.as_str())
    );
    assert_eq!(run(BUSYBOX_2, &["cat", "/variant"]), "2");
    let again = images::build_busybox_image(BUSYBOX_1, &images::variant_recipe("1")).unwrap();
    assert_eq!(
        &again, one,
        "an existing image of the same recipe is reused"
    );
}

#[test]
fn the_stop_signal_image_reports_its_stop_signal() {
    let image = images::stop_signal_image("SIGUSR1").unwrap();
    assert_eq!(image.reference, "wasmdock-test/busybox:stopsignal-sigusr1");
    let inspect = docker::image_inspect(&image.reference).unwrap().unwrap();
    assert_eq!(inspect["Config"]["StopSignal"], "SIGUSR1");
    assert_ne!(image.id, images::busybox().id);
}

#[test]
fn a_saved_image_is_a_docker_save_tarball() {
    images::busybox();
    let dir = tempfile::tempdir().unwrap();
    let tarball = dir.path().join("busybox.tar");
    images::save_image(BUSYBOX_1, &tarball).unwrap();
    let listing = std::process::Command::new("tar")
        .arg("-tf")
        .arg(&tarball)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.lines().any(|l| l == "manifest.json"), "{listing}");
    let loaded = docker(&["load", "-i", tarball.to_str().unwrap()]).unwrap();
    assert!(loaded.contains(BUSYBOX_1), "{loaded}");
}

#[tokio::test]
async fn the_registry_serves_v2_and_a_pushed_image_pulls_back() {
    let started = Instant::now();
    let registry = Registry::start().await.unwrap();
    eprintln!("registry started in {:?}", started.elapsed());
    let response = registry.get("/v2/", None).unwrap();
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.header("Docker-Distribution-Api-Version"),
        Some("registry/2.0")
    );

    // A copy of the test image: the pull finds its layer locally.
    images::busybox();
    let copy = registry.push(BUSYBOX_1, "e2e/busybox:1").unwrap();
    assert_eq!(docker::image_id(&copy).unwrap(), None, "local tag removed");
    registry.docker(&["pull", &copy]).unwrap();
    assert_eq!(
        docker::image_id(&copy).unwrap().as_deref(),
        Some(images::busybox().id.as_str())
    );

    // An image that exists nowhere else: the pull downloads it.
    let started = Instant::now();
    let unique = registry.push_unique("e2e/unique:1").unwrap();
    eprintln!("unique image built and pushed in {:?}", started.elapsed());
    assert_eq!(docker::image_id(&unique).unwrap(), None);
    let pulled = registry.docker(&["pull", &unique]).unwrap();
    assert!(pulled.contains("Downloaded newer image"), "{pulled}");
    assert_eq!(run(&unique, &["sh", "-c", "cat /unique | wc -c"]), "17");

    let prefix = format!("{}/", registry.address());
    drop(registry);
    assert_eq!(
        docker::image_references(&prefix).unwrap(),
        Vec::<String>::new(),
        "dropping the registry removes its local references"
    );
}

#[tokio::test]
async fn the_registry_with_auth_takes_only_the_right_password() {
    let password = format!("pw-{}", run_id());
    let registry = Registry::start_with_auth("e2e", &password).await.unwrap();
    let anonymous = registry.get("/v2/", None).unwrap();
    assert_eq!(anonymous.status, 401);
    assert!(
        anonymous
            .header("WWW-Authenticate")
            .is_some_and(|h| h.starts_with("Basic")),
        "{anonymous:?}"
    );
    assert_eq!(
        registry
            .get("/v2/", Some(("e2e", &password)))
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        registry.get("/v2/", Some(("e2e", "wrong"))).unwrap().status,
        401
    );
    let refused = registry.login_as("e2e", "wrong").unwrap();
    assert!(!refused.status.success(), "wrong password refused");

    // Logged in (private DOCKER_CONFIG) at start: push and pull work.
    images::busybox();
    let remote = registry.push(BUSYBOX_1, "e2e/private:1").unwrap();
    registry.docker(&["pull", &remote]).unwrap();
    docker::remove_image(&remote).unwrap();

    // Without credentials the pull is refused.
    let empty_config = tempfile::tempdir().unwrap();
    let output = docker::docker_raw(
        &["pull", &remote],
        &[("DOCKER_CONFIG", empty_config.path().as_os_str())],
        None,
    )
    .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
    assert!(
        stderr.contains("no basic auth credentials") || stderr.contains("unauthorized"),
        "{stderr}"
    );
}

#[test]
fn the_black_hole_registry_accepts_and_never_answers() {
    let hole = BlackHoleRegistry::start().unwrap();
    let mut stream = TcpStream::connect(hole.address()).unwrap();
    stream
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 16];
    let err = stream
        .read(&mut buf)
        .expect_err("no answer and no close, just silence");
    assert!(
        matches!(
            err.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
        "{err}"
    );
    assert_eq!(hole.connections(), 1);
    assert!(hole.reference("x/y:1").starts_with("127.0.0.1:"));
}

#[tokio::test]
async fn the_plugin_starts_answers_restarts_and_shuts_down_with_0() {
    let started = Instant::now();
    let mut plugin = PluginUnderTest::start(json!({}), "docker")
        .await
        .expect("plugin starts and takes SetConfig and Init");
    eprintln!(
        "plugin (build, launch, configure) in {:?}",
        started.elapsed()
    );
    let info = plugin
        .base()
        .plugin_info(PluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, "docker");
    assert_eq!(info.r#type(), PluginType::Driver);
    let caps = plugin
        .driver()
        .capabilities(CapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner()
        .capabilities
        .expect("capabilities are set");
    assert!(caps.send_signals && caps.exec);

    let first_pid = plugin.pid().unwrap();
    let first_socket = plugin.socket().to_owned();
    let started = Instant::now();
    plugin.restart().await.expect("a fresh process takes over");
    eprintln!("plugin restarted in {:?}", started.elapsed());
    assert_ne!(plugin.pid().unwrap(), first_pid);
    assert_ne!(plugin.socket(), first_socket);
    let info = plugin
        .base()
        .plugin_info(PluginInfoRequest {})
        .await
        .expect("the new process answers")
        .into_inner();
    assert_eq!(info.name, "docker");

    let socket = plugin.socket().to_owned();
    let status = plugin.shutdown().await.unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(!socket.exists(), "socket removed");
    let lines = plugin.stderr_lines();
    assert!(!lines.is_empty());
    for line in &lines {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|err| panic!("stderr is hclog JSON: {err}: {line}"));
    }
}

#[tokio::test]
async fn a_plugin_config_the_plugin_refuses_fails_start_with_its_message() {
    let err = PluginUnderTest::start(json!({"gc": {"image_delay": "1d"}}), "docker")
        .await
        .expect_err("SetConfig refuses it");
    let message = format!("{err:#}");
    assert!(message.contains("gc.image_delay"), "{message}");
}

#[test]
fn the_task_builder_lays_out_the_alloc_dir_like_nomad() {
    let task = TaskBuilder::new("web", json!({"image": BUSYBOX_1, "args": ["echo", "hi"]}))
        .memory(128, 256)
        .env("EXTRA", "1")
        .build()
        .unwrap();
    let alloc_dir = task.alloc().dir().to_owned();
    for sub in ["alloc/data", "alloc/logs", "alloc/tmp"] {
        assert!(alloc_dir.join(sub).is_dir(), "{sub}");
    }
    for sub in ["local", "secrets", "tmp"] {
        assert!(task.task_dir().join(sub).is_dir(), "{sub}");
    }
    let config = &task.config;
    assert_eq!(task.name(), format!("web-{}", run_id()));
    let parts: Vec<&str> = config.id.split('/').collect();
    assert_eq!(parts.len(), 3, "{}", config.id);
    assert_eq!((parts[0], parts[1]), (task.alloc_id(), task.name()));
    assert_eq!(parts[2].len(), 8);
    assert_eq!(task.alloc_id().len(), 36);
    assert_eq!(config.alloc_id, task.alloc_id());
    assert_eq!(config.alloc_dir, alloc_dir.to_str().unwrap());
    assert_eq!(config.stdout_path, "/dev/null");
    assert_eq!(config.stderr_path, "/dev/null");
    assert_eq!(
        task.container_name(),
        format!("{}-{}", task.name(), task.alloc_id())
    );
    for (key, value) in [
        ("NOMAD_ALLOC_DIR", "/alloc"),
        ("NOMAD_TASK_DIR", "/local"),
        ("NOMAD_SECRETS_DIR", "/secrets"),
        ("NOMAD_ALLOC_ID", task.alloc_id()),
        ("NOMAD_TASK_NAME", task.name()),
        ("NOMAD_JOB_NAME", config.job_name.as_str()),
        ("NOMAD_GROUP_NAME", config.task_group_name.as_str()),
        ("NOMAD_NAMESPACE", "default"),
        ("EXTRA", "1"),
    ] {
        assert_eq!(
            config.env.get(key).map(String::as_str),
            Some(value),
            "{key}"
        );
    }
    let resources = config.resources.as_ref().unwrap();
    let memory = resources
        .allocated_resources
        .as_ref()
        .unwrap()
        .memory
        .unwrap();
    assert_eq!((memory.memory_mb, memory.memory_max_mb), (128, 256));
    let linux = resources.linux_resources.as_ref().unwrap();
    assert_eq!(linux.memory_limit_bytes, 256 * 1024 * 1024);
    assert_eq!(linux.cpu_shares, 100);
    assert!((linux.percent_ticks - 100.0 / NODE_COMPUTE_MHZ as f64).abs() < 1e-9);
    assert!(!config.msgpack_driver_config.is_empty());
    assert!(!config.node_id.is_empty() && !config.node_name.is_empty());

    let mut retried = task.clone();
    let old_id = task.id().to_owned();
    retried.new_attempt();
    assert_ne!(retried.id(), old_id);
    assert!(
        retried
            .id()
            .starts_with(&format!("{}/{}/", task.alloc_id(), task.name()))
    );
}

#[tokio::test]
async fn log_fifos_are_created_and_read_like_logmon() {
    let alloc = Alloc::new().unwrap();
    let task = alloc
        .task("logs", json!({"image": BUSYBOX_1}))
        .log_fifos()
        .build()
        .unwrap();
    let other = alloc.task("other", json!({})).build().unwrap();
    assert_eq!(other.alloc_id(), task.alloc_id());
    assert_ne!(other.task_dir(), task.task_dir());

    let stdout = task.stdout_path().to_owned();
    assert_eq!(
        stdout,
        alloc
            .dir()
            .join(format!("alloc/logs/.{}.stdout.fifo", task.name()))
    );
    for path in [task.stdout_path(), task.stderr_path()] {
        assert!(
            std::fs::metadata(path).unwrap().file_type().is_fifo(),
            "{}",
            path.display()
        );
    }
    let (out, _err) = task.log_readers().unwrap();
    // One writer for both lines: like logmon, the reader stops for good at
    // the first end-of-file, so a second writer opened after the first one
    // closed would wait for a reader forever.
    let mut writer = std::fs::OpenOptions::new()
        .write(true)
        .open(&stdout)
        .unwrap();
    for text in ["hello\n", "again\n"] {
        writer.write_all(text.as_bytes()).unwrap();
    }
    assert!(
        out.wait_for("hello\nagain\n", Duration::from_secs(5)).await,
        "{:?}",
        out.text()
    );
    assert!(!out.ended(), "the reader stays while a writer has the FIFO");
    drop(writer);
    assert!(
        out.wait_ended(Duration::from_secs(5)).await,
        "the reader stops when the last writer closes"
    );
    assert!(other.log_readers().is_err(), "no FIFOs without log_fifos");
}

#[test]
fn dropping_an_alloc_and_cleanup_remove_what_a_test_made() {
    images::busybox();
    let alloc = Alloc::new().unwrap();
    let task = alloc.task("clean", json!({})).build().unwrap();
    let label = format!("{ALLOC_ID_LABEL}={}", task.alloc_id());
    let name = task.container_name();
    docker(&[
        "create", "--label", &label, "--name", &name, BUSYBOX_1, "sleep", "60",
    ])
    .unwrap();
    assert_eq!(
        docker::containers_with_label(ALLOC_ID_LABEL, task.alloc_id())
            .unwrap()
            .len(),
        1
    );
    let alloc_id = task.alloc_id().to_owned();
    let alloc_dir = alloc.dir().to_owned();
    drop(task);
    assert!(alloc_dir.exists(), "alive while a clone is");
    drop(alloc);
    assert!(
        docker::containers_with_label(ALLOC_ID_LABEL, &alloc_id)
            .unwrap()
            .is_empty()
    );
    assert!(!alloc_dir.exists());

    let cleanup = Cleanup::new();
    let tag = cleanup.unique_tag(BUSYBOX_1).unwrap();
    assert!(tag.contains(run_id()));
    let stray = format!("stray-{}", run_id());
    docker(&[
        "create",
        "--label",
        &format!("{ALLOC_ID_LABEL}=stray-{}", run_id()),
        "--name",
        &stray,
        &tag,
    ])
    .unwrap();
    cleanup.alloc(&format!("stray-{}", run_id()));
    cleanup.run().unwrap();
    assert_eq!(docker::image_id(&tag).unwrap(), None);
    assert!(docker::container_inspect(&stray).unwrap().is_none());
    assert!(
        docker::image_id(BUSYBOX_1).unwrap().is_some(),
        "only the tag went"
    );
}
