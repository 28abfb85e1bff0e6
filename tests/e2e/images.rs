//! Images over the real socket against a real engine: `load`, pulls
//! (forced, by digest, shared by concurrent starts), registry credentials,
//! and the removal of unused images (`gc.image`, `gc.image_delay`).
//!
//! Every test makes its own images (unique tags, unique registries) and
//! registers them with a [`Cleanup`] guard, so tests run in parallel and
//! image removal never touches an image another test uses.

use base64::Engine as _;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio_stream::StreamExt as _;
use tonic::{Code, Status};
use wasmdock_e2e::calls::{destroy, exit_code, plugin, start, start_err, task};
use wasmdock_e2e::docker::{self, docker, image_id};
use wasmdock_e2e::ids::random_hex;
use wasmdock_e2e::images::{self, BUSYBOX_1, BUSYBOX_2, Recipe, TEST_REPOSITORY, TestImage};
use wasmdock_e2e::registry::{BlackHoleRegistry, Registry};
use wasmdock_e2e::{Cleanup, PluginUnderTest, Task, run_id};
use wasmdock_host::rpc::proto::drivers::TaskEventsRequest;
use wasmdock_host::rpc::status::recoverable_flag;

/// The user and password of the registries that require credentials.
const USER: &str = "wasmdock";
const PASSWORD: &str = "s3cret-Pa55";
const WRONG_PASSWORD: &str = "not-the-Pa55word";

/// Plugin config that never removes images: for tests whose tasks run
/// images other tests share.
fn no_image_gc() -> serde_json::Value {
    json!({ "gc": { "image": false } })
}

/// The id of the image the task's container runs.
fn container_image(task: &Task) -> String {
    let inspect = docker::container_inspect(&task.container_name())
        .expect("docker inspect")
        .unwrap_or_else(|| panic!("no container {}", task.container_name()));
    inspect["Image"].as_str().expect("Image").to_owned()
}

/// A busybox image with an ID of its own (a unique label on top of
/// [`BUSYBOX_1`]), so removing it by ID touches no image another test uses.
/// Its tag is removed by `cleanup`.
fn unique_image(cleanup: &Cleanup) -> TestImage {
    let token = random_hex(12);
    let reference = format!("{TEST_REPOSITORY}:gc-{}-{token}", run_id());
    let image = images::build_derived_image(
        &reference,
        images::busybox(),
        &[format!("LABEL org.wasmdock.test.unique={token}")],
    )
    .expect("build a unique image");
    cleanup.image(&reference);
    assert_ne!(image.id, images::busybox().id);
    image
}

fn present(id: &str) -> bool {
    image_id(id).expect("docker image inspect").is_some()
}

/// Polls until image `id` is gone; how long that took, `None` on timeout.
async fn removed_within(id: &str, timeout: Duration) -> Option<Duration> {
    let begun = Instant::now();
    loop {
        if !present(id) {
            return Some(begun.elapsed());
        }
        if begun.elapsed() > timeout {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many times the registry was asked for manifest `name:tag` (HEAD or
/// GET, from its access log): every pull asks once.
fn manifest_requests(registry: &Registry, name: &str, tag: &str) -> usize {
    let path = format!(" /v2/{name}/manifests/{tag} HTTP/");
    registry
        .log()
        .lines()
        .filter(|line| {
            line.contains(&format!("\"GET{path}")) || line.contains(&format!("\"HEAD{path}"))
        })
        .count()
}

/// Pushes an image that exists nowhere else as `<registry>/<name_tag>`,
/// removes every local reference to it, and returns its manifest digest
/// (from `docker push`).
fn push_unique_with_digest(registry: &Registry, name_tag: &str) -> String {
    let token = random_hex(16);
    let local = format!("{TEST_REPOSITORY}:unique-{token}");
    images::build_busybox_image(
        &local,
        &Recipe {
            changes: Vec::new(),
            files: vec![("unique".to_owned(), format!("{token}\n").into_bytes())],
        },
    )
    .expect("build");
    let remote = registry.reference(name_tag);
    images::tag_image(&local, &remote).expect("tag");
    let pushed = registry.docker(&["push", &remote]);
    docker::remove_image(&remote).expect("untag remote");
    docker::remove_image(&local).expect("untag local");
    let output = pushed.expect("docker push");
    output
        .split_whitespace()
        .find(|word| word.starts_with("sha256:"))
        .unwrap_or_else(|| panic!("no digest in the push output: {output}"))
        .to_owned()
}

/// Writes a docker `config.json` whose `auths` has `host` as `user:password`.
fn write_docker_config(path: &Path, host: &str, user: &str, password: &str) {
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let config = json!({ "auths": { host: { "auth": auth } } });
    std::fs::write(path, config.to_string()).expect("write config.json");
}

#[tokio::test]
async fn load_brings_the_image_back_from_the_task_dir() {
    let cleanup = Cleanup::new();
    let plugin = plugin(no_image_gc()).await;
    let reference = cleanup.unique_tag(BUSYBOX_1).expect("tag");
    let task = task(
        "load",
        json!({ "image": reference, "load": "image.tar", "command": "sh",
                "args": ["-c", "echo loaded > $NOMAD_TASK_DIR/output.txt"] }),
    );
    cleanup.alloc(task.alloc_id());
    images::save_image(&reference, &task.local_dir().join("image.tar")).expect("docker save");
    docker::remove_image(&reference).expect("untag");
    assert_eq!(image_id(&reference).unwrap(), None, "the tag is gone");

    start(&plugin, &task).await;
    assert_eq!(exit_code(&plugin, &task).await, 0);
    assert_eq!(
        image_id(&reference).unwrap().as_deref(),
        Some(images::busybox().id.as_str()),
        "the load brought the tag back"
    );
    assert_eq!(container_image(&task), images::busybox().id);
    let written = std::fs::read_to_string(task.local_dir().join("output.txt")).unwrap();
    assert_eq!(written, "loaded\n");
    destroy(&plugin, &task, false).await;
}

#[tokio::test]
async fn load_failures_are_start_errors() {
    let cleanup = Cleanup::new();
    let plugin = plugin(no_image_gc()).await;
    images::busybox_variant();

    // No such archive.
    let absent = format!("{TEST_REPOSITORY}:absent-{}-{}", run_id(), random_hex(8));
    cleanup.image(&absent);
    let missing = task(
        "noarchive",
        json!({ "image": absent, "load": "missing.tar", "command": "true" }),
    );
    let status = start_err(&plugin, &missing).await;
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("failed to load image"),
        "{status:?}"
    );

    // An archive that holds another image.
    let other = task(
        "otherarchive",
        json!({ "image": absent, "load": "other.tar", "command": "true" }),
    );
    images::save_image(BUSYBOX_2, &other.local_dir().join("other.tar")).expect("docker save");
    let status = start_err(&plugin, &other).await;
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("is not in the loaded archive"),
        "{status:?}"
    );
    assert_eq!(recoverable_flag(&status), Some(false), "{status:?}");
    assert_eq!(image_id(&absent).unwrap(), None);
}

#[tokio::test]
async fn force_pull_fetches_the_new_image_and_a_present_tag_is_not_pulled() {
    let cleanup = Cleanup::new();
    let plugin = plugin(no_image_gc()).await;
    let variant = images::busybox_variant();
    let registry = Registry::start().await.expect("registry");
    let remote = registry.push_unique("app:1").expect("push");

    let first = task("first", json!({ "image": remote, "command": "true" }));
    cleanup.alloc(first.alloc_id());
    start(&plugin, &first).await;
    assert_eq!(exit_code(&plugin, &first).await, 0);
    let old_id = image_id(&remote).unwrap().expect("pulled");
    cleanup.image(&old_id);
    assert_eq!(container_image(&first), old_id);

    // The registry gets a new image under the same tag; the engine keeps
    // the old one under that tag, as on a node that pulled it before.
    registry.push(BUSYBOX_2, "app:1").expect("push the variant");
    images::tag_image(&old_id, &remote).expect("retag the old image");
    let before = manifest_requests(&registry, "app", "1");

    let cached = task("cached", json!({ "image": remote, "command": "true" }));
    cleanup.alloc(cached.alloc_id());
    start(&plugin, &cached).await;
    assert_eq!(exit_code(&plugin, &cached).await, 0);
    assert_eq!(
        container_image(&cached),
        old_id,
        "a present tag other than latest is used as it is"
    );
    assert_eq!(
        manifest_requests(&registry, "app", "1"),
        before,
        "no pull without force_pull:\n{}",
        registry.log()
    );

    let forced = task(
        "forced",
        json!({ "image": remote, "force_pull": true, "command": "sh",
                "args": ["-c", "cat /variant > $NOMAD_ALLOC_DIR/variant.txt"] }),
    );
    cleanup.alloc(forced.alloc_id());
    start(&plugin, &forced).await;
    assert_eq!(exit_code(&plugin, &forced).await, 0);
    assert_eq!(container_image(&forced), variant.id, "the new image runs");
    let seen = std::fs::read_to_string(forced.alloc().shared_dir().join("variant.txt")).unwrap();
    assert_eq!(seen, "2\n");
    assert!(
        manifest_requests(&registry, "app", "1") > before,
        "force_pull asked the registry"
    );
    assert_eq!(
        image_id(&remote).unwrap().as_deref(),
        Some(variant.id.as_str())
    );

    for task in [&first, &cached, &forced] {
        destroy(&plugin, task, false).await;
    }
}

#[tokio::test]
async fn a_digest_reference_is_pulled_and_force_pulled() {
    let cleanup = Cleanup::new();
    let plugin = plugin(no_image_gc()).await;
    let registry = Registry::start().await.expect("registry");
    let digest = push_unique_with_digest(&registry, "pinned:1");
    let pinned = format!("{}@{digest}", registry.reference("pinned"));
    cleanup.image(&pinned);
    assert_eq!(image_id(&pinned).unwrap(), None, "not present before");

    let first = task("digest", json!({ "image": pinned, "command": "true" }));
    cleanup.alloc(first.alloc_id());
    start(&plugin, &first).await;
    assert_eq!(exit_code(&plugin, &first).await, 0);
    let id = image_id(&pinned).unwrap().expect("pulled by digest");
    assert_eq!(container_image(&first), id);

    let forced = task(
        "digestforced",
        json!({ "image": pinned, "force_pull": true, "command": "true" }),
    );
    cleanup.alloc(forced.alloc_id());
    start(&plugin, &forced).await;
    assert_eq!(exit_code(&plugin, &forced).await, 0);
    assert_eq!(container_image(&forced), id);

    // A leading `https://` is dropped (Start_Image_HTTPS); by tag this time.
    let https = task(
        "https",
        json!({ "image": format!("https://{}", registry.reference("pinned:1")),
                "command": "true" }),
    );
    cleanup.alloc(https.alloc_id());
    start(&plugin, &https).await;
    assert_eq!(exit_code(&plugin, &https).await, 0);
    assert_eq!(container_image(&https), id);
    for task in [&first, &forced, &https] {
        destroy(&plugin, task, false).await;
    }
}

#[tokio::test]
async fn concurrent_starts_share_one_pull() {
    let cleanup = Cleanup::new();
    let plugin = plugin(no_image_gc()).await;
    let registry = Registry::start().await.expect("registry");
    let remote = registry.push_unique("shared:1").expect("push");
    let before = manifest_requests(&registry, "shared", "1");
    let mut events = plugin
        .driver()
        .task_events(TaskEventsRequest {})
        .await
        .unwrap()
        .into_inner();

    let tasks: Vec<Task> = (0..3)
        .map(|i| {
            task(
                &format!("share{i}"),
                json!({ "image": remote, "command": "true" }),
            )
        })
        .collect();
    for task in &tasks {
        cleanup.alloc(task.alloc_id());
    }
    for (task, result) in tasks.iter().zip(start_all(&plugin, &tasks).await) {
        if let Err(status) = result {
            panic!("StartTask of {} failed: {status:?}", task.name());
        }
    }
    for task in &tasks {
        assert_eq!(exit_code(&plugin, task).await, 0);
    }
    let id = image_id(&remote).unwrap().expect("pulled");
    for task in &tasks {
        assert_eq!(container_image(task), id);
    }

    assert_eq!(
        manifest_requests(&registry, "shared", "1") - before,
        1,
        "one pull for three starts:\n{}",
        registry.log()
    );
    // As in Nomad, every start that reaches the pull reports the download,
    // also those that wait for another start's pull; a start that finds the
    // image already present reports nothing.
    let ids: Vec<&str> = tasks.iter().map(Task::id).collect();
    let mut downloads = Vec::new();
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(500), events.next()).await
    {
        let event = event.expect("event");
        if event.message == "Downloading image" && ids.contains(&event.task_id.as_str()) {
            assert_eq!(event.annotations["image"], remote);
            downloads.push(event.task_id);
        }
    }
    let distinct: std::collections::BTreeSet<&String> = downloads.iter().collect();
    assert!(
        !downloads.is_empty() && distinct.len() == downloads.len(),
        "one event per waiting start at most: {downloads:?}"
    );
    for task in &tasks {
        destroy(&plugin, task, false).await;
    }
}

/// Starts `tasks` at once; the results in the same order.
async fn start_all(plugin: &PluginUnderTest, tasks: &[Task]) -> Vec<Result<(), Status>> {
    let starts: Vec<_> = tasks
        .iter()
        .map(|task| {
            let mut driver = plugin.driver();
            let request = task.start_request();
            tokio::spawn(async move { driver.start_task(request).await.map(|_| ()) })
        })
        .collect();
    let mut results = Vec::new();
    for started in starts {
        results.push(started.await.expect("the start task"));
    }
    results
}

#[tokio::test]
async fn concurrent_starts_of_a_latest_tag_share_one_pull() {
    // `latest` is pulled on every start, but starts that overlap wait for
    // the pull in flight instead of pulling again (Nomad's coordinator keeps
    // one pull future per image).
    let cleanup = Cleanup::new();
    let plugin = plugin(no_image_gc()).await;
    let registry = Registry::start().await.expect("registry");
    let remote = registry.push_unique("newest:latest").expect("push");
    let before = manifest_requests(&registry, "newest", "latest");
    let tasks: Vec<Task> = (0..3)
        .map(|i| {
            task(
                &format!("latest{i}"),
                json!({ "image": remote, "command": "true" }),
            )
        })
        .collect();
    for task in &tasks {
        cleanup.alloc(task.alloc_id());
    }
    for (task, result) in tasks.iter().zip(start_all(&plugin, &tasks).await) {
        if let Err(status) = result {
            panic!("StartTask of {} failed: {status:?}", task.name());
        }
    }
    assert_eq!(
        manifest_requests(&registry, "newest", "latest") - before,
        1,
        "three overlapping starts of a latest tag pulled more than once"
    );
    for task in &tasks {
        destroy(&plugin, task, true).await;
    }
}

#[tokio::test]
async fn concurrent_starts_share_the_result_of_a_hung_pull() {
    // The starts waiting for a pull in flight get its result; they do not
    // each try again after it failed, one pull timeout after another.
    let hole = BlackHoleRegistry::start().expect("black hole");
    let plugin = plugin(no_image_gc()).await;
    let image = hole.reference("stuck:1");
    let tasks: Vec<Task> = (0..3)
        .map(|i| {
            task(
                &format!("stuck{i}"),
                json!({ "image": image, "image_pull_timeout": "2s" }),
            )
        })
        .collect();
    let begun = Instant::now();
    let results = start_all(&plugin, &tasks).await;
    let took = begun.elapsed();
    for (task, result) in tasks.iter().zip(results) {
        let status = result.expect_err("the pull cannot succeed");
        assert_eq!(
            status.code(),
            Code::FailedPrecondition,
            "{}: {status:?}",
            task.name()
        );
        assert!(status.message().contains("Failed to pull"), "{status:?}");
    }
    assert!(
        took < Duration::from_millis(3500),
        "three starts of one image with a 2 s pull timeout took {took:?} \
         ({} connections to the registry)",
        hole.connections()
    );
}

#[tokio::test]
async fn a_missing_image_is_recoverable_whatever_its_name() {
    // Nomad marks pull errors recoverable unless they match
    // `Error: image .+ not found`; Docker's "manifest … not found" does not,
    // whether or not the repository's name contains "image".
    let registry = Registry::start().await.expect("registry");
    let plugin = plugin(no_image_gc()).await;
    let mut flags = Vec::new();
    for name_tag in ["app:missing", "myimage:missing"] {
        let reference = registry.reference(name_tag);
        let task = task("missing", json!({ "image": reference, "command": "true" }));
        let status = start_err(&plugin, &task).await;
        assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
        assert!(status.message().contains("Failed to pull"), "{status:?}");
        assert!(status.message().contains("not found"), "{status:?}");
        flags.push((
            name_tag,
            recoverable_flag(&status),
            status.message().to_owned(),
        ));
    }
    for (name_tag, flag, message) in &flags {
        assert_eq!(
            *flag,
            Some(true),
            "{name_tag}: a missing manifest is recoverable in Nomad: {message}"
        );
    }
}

#[tokio::test]
async fn a_private_registry_takes_credentials_from_the_task_or_the_plugin_config() {
    let cleanup = Cleanup::new();
    let registry = Registry::start_with_auth(USER, PASSWORD)
        .await
        .expect("registry");
    let remote = registry.push_unique("private:1").expect("push");
    cleanup.image(&remote);
    let config_dir = tempfile::tempdir().unwrap();
    let config_path = config_dir.path().join("config.json");
    write_docker_config(&config_path, "other.example:5000", USER, PASSWORD);
    let plugin = plugin(json!({ "gc": { "image": false },
                                "auth": { "config": config_path.to_str().unwrap() } }))
    .await;
    let run = |name: &str, extra: serde_json::Value| {
        let mut config = json!({ "image": remote, "command": "true" });
        config
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let task = task(name, config);
        cleanup.alloc(task.alloc_id());
        task
    };

    // No credentials anywhere (the config file has none for this registry).
    let anonymous = run("anonymous", json!({}));
    let status = start_err(&plugin, &anonymous).await;
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("Failed to pull"), "{status:?}");
    assert_eq!(recoverable_flag(&status), Some(true), "{status:?}");
    assert_eq!(image_id(&remote).unwrap(), None);

    // The task's own auth block.
    let with_auth = run(
        "taskauth",
        json!({ "auth": { "username": USER, "password": PASSWORD } }),
    );
    start(&plugin, &with_auth).await;
    assert_eq!(exit_code(&plugin, &with_auth).await, 0);
    assert!(image_id(&remote).unwrap().is_some(), "pulled");

    // From here on every task forces a pull, so the registry is asked.
    write_docker_config(&config_path, &registry.address(), USER, PASSWORD);
    let from_file = run("fileauth", json!({ "force_pull": true }));
    start(&plugin, &from_file).await;
    assert_eq!(exit_code(&plugin, &from_file).await, 0);

    // The task's auth block wins over the file.
    let wrong_task_auth = run(
        "wrongtaskauth",
        json!({ "force_pull": true, "auth": { "username": USER, "password": WRONG_PASSWORD } }),
    );
    let status = start_err(&plugin, &wrong_task_auth).await;
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("Failed to pull"), "{status:?}");
    assert!(
        !status.message().contains(WRONG_PASSWORD),
        "the password stays secret: {status:?}"
    );

    write_docker_config(&config_path, &registry.address(), USER, WRONG_PASSWORD);
    let wrong_file = run("wrongfileauth", json!({ "force_pull": true }));
    let status = start_err(&plugin, &wrong_file).await;
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("Failed to pull"), "{status:?}");

    for task in [&with_auth, &from_file] {
        destroy(&plugin, task, false).await;
    }
}

#[tokio::test]
async fn credential_helpers_supply_registry_credentials() {
    let cleanup = Cleanup::new();
    let registry = Registry::start_with_auth(USER, PASSWORD)
        .await
        .expect("registry");
    let remote = registry.push_unique("helped:1").expect("push");
    cleanup.image(&remote);
    // `docker-credential-wasmdocke2e get`: the registry host on stdin, the
    // credentials as JSON on stdout; any other host is refused.
    let dir = tempfile::tempdir().unwrap();
    let helper = dir.path().join("docker-credential-wasmdocke2e");
    std::fs::write(
        &helper,
        format!(
            "#!/bin/sh\nread host\n[ \"$1\" = get ] || exit 3\n\
             [ \"$host\" = '{}' ] || {{ echo \"unknown host $host\"; exit 1; }}\n\
             printf '{{\"ServerURL\":\"%s\",\"Username\":\"{USER}\",\"Secret\":\"{PASSWORD}\"}}' \"$host\"\n",
            registry.address()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&helper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        dir.path().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let config_path = dir.path().join("config.json");
    let host = registry.address();
    std::fs::write(
        &config_path,
        json!({ "credHelpers": { host: "wasmdocke2e" } }).to_string(),
    )
    .unwrap();
    images::busybox();

    for (what, auth) in [
        ("auth.helper", json!({ "helper": "wasmdocke2e" })),
        (
            "credHelpers",
            json!({ "config": config_path.to_str().unwrap() }),
        ),
    ] {
        let plugin = PluginUnderTest::start_with_env(
            json!({ "gc": { "image": false }, "auth": auth }),
            "wasmdock",
            &[("PATH", path.as_str())],
        )
        .await
        .expect("plugin starts");
        let task = task(
            "helped",
            json!({ "image": remote, "force_pull": true, "command": "true" }),
        );
        cleanup.alloc(task.alloc_id());
        if let Err(status) = plugin.driver().start_task(task.start_request()).await {
            panic!("{what}: {status:?}");
        }
        assert_eq!(exit_code(&plugin, &task).await, 0, "{what}");
        destroy(&plugin, &task, false).await;
    }
}

#[tokio::test]
async fn auth_soft_fail_pulls_anonymously_when_the_lookup_fails() {
    let cleanup = Cleanup::new();
    let private = Registry::start_with_auth(USER, PASSWORD)
        .await
        .expect("registry");
    let public = Registry::start().await.expect("registry");
    let secret = private.push_unique("private:1").expect("push");
    let open = public.push_unique("public:1").expect("push");
    let plugin = plugin(json!({ "gc": { "image": false },
                                "auth": { "config": "/nonexistent/wasmdock-e2e/config.json" } }))
    .await;

    let strict = task("strict", json!({ "image": secret, "command": "true" }));
    let status = start_err(&plugin, &strict).await;
    assert!(
        status.message().contains("Failed to find docker auth"),
        "{status:?}"
    );
    assert_ne!(
        recoverable_flag(&status),
        Some(true),
        "a broken auth config is not worth retrying: {status:?}"
    );

    let soft = task(
        "soft",
        json!({ "image": secret, "auth_soft_fail": true, "command": "true" }),
    );
    let status = start_err(&plugin, &soft).await;
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().contains("Failed to pull"),
        "the anonymous pull was tried and refused: {status:?}"
    );
    assert!(
        !status.message().contains("Failed to find docker auth"),
        "{status:?}"
    );

    let anonymous = task(
        "softpublic",
        json!({ "image": open, "auth_soft_fail": true, "command": "true" }),
    );
    cleanup.alloc(anonymous.alloc_id());
    start(&plugin, &anonymous).await;
    assert_eq!(exit_code(&plugin, &anonymous).await, 0);
    destroy(&plugin, &anonymous, false).await;
}

#[tokio::test]
async fn image_gc_removes_an_unused_image_after_the_delay() {
    let cleanup = Cleanup::new();
    let plugin = plugin(json!({ "gc": { "image": true, "image_delay": "2s" } })).await;
    let image = unique_image(&cleanup);
    let task = task("gc", json!({ "image": image.reference, "command": "true" }));
    cleanup.alloc(task.alloc_id());
    start(&plugin, &task).await;
    assert_eq!(exit_code(&plugin, &task).await, 0);
    // An exited task still holds its image until it is destroyed.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(present(&image.id), "kept until DestroyTask");

    destroy(&plugin, &task, false).await;
    assert!(present(&image.id), "kept for the delay");
    let took = removed_within(&image.id, Duration::from_secs(10))
        .await
        .expect("removed after the delay");
    assert!(took >= Duration::from_millis(1500), "too early: {took:?}");
}

#[tokio::test]
async fn image_gc_waits_for_the_last_user_and_is_cancelled_by_a_new_one() {
    let cleanup = Cleanup::new();
    let plugin = plugin(json!({ "gc": { "image": true, "image_delay": "2s" } })).await;
    let image = unique_image(&cleanup);
    let sleeper = |name: &str| {
        let task = task(
            name,
            json!({ "image": image.reference, "command": "sleep", "args": ["1000"] }),
        );
        cleanup.alloc(task.alloc_id());
        task
    };
    let (one, two) = (sleeper("gcone"), sleeper("gctwo"));
    start(&plugin, &one).await;
    start(&plugin, &two).await;

    destroy(&plugin, &one, true).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(present(&image.id), "another task still uses it");

    destroy(&plugin, &two, true).await;
    let released = Instant::now();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let three = sleeper("gcthree");
    start(&plugin, &three).await;
    tokio::time::sleep(Duration::from_secs(4).saturating_sub(released.elapsed())).await;
    assert!(
        present(&image.id),
        "a task took the image within the delay: the removal is cancelled"
    );

    destroy(&plugin, &three, true).await;
    removed_within(&image.id, Duration::from_secs(10))
        .await
        .expect("removed once the last user is gone");
}

#[tokio::test]
async fn image_gc_does_not_remove_the_image_of_a_task_that_is_starting() {
    // Nomad takes the image reference as soon as StartTask finds the image
    // (which cancels a pending removal), before it creates the container. A
    // task that starts just before the delay ends must keep its image. The
    // moment is a race, so the next task starts at several offsets before
    // the removal is due; every task that started must find its image there.
    let cleanup = Cleanup::new();
    let delay = Duration::from_millis(500);
    let plugin = plugin(json!({ "gc": { "image": true, "image_delay": "500ms" } })).await;
    // A registry image: when the removal comes before the lookup, the start
    // pulls it again (and never asks Docker Hub for a local-only tag).
    let registry = Registry::start().await.expect("registry");
    let remote = registry.push_unique("racy:1").expect("push");
    let config = json!({ "image": remote, "command": "sleep", "args": ["1000"] });
    let fresh = || {
        let task = task("race", config.clone());
        cleanup.alloc(task.alloc_id());
        task
    };
    let mut previous = fresh();
    start(&plugin, &previous).await;
    cleanup.image(&image_id(&remote).unwrap().expect("pulled"));

    for offset_ms in (0..=90).step_by(10) {
        destroy(&plugin, &previous, true).await;
        let released = Instant::now();
        tokio::time::sleep(delay.saturating_sub(Duration::from_millis(offset_ms))).await;
        let next = fresh();
        if let Err(status) = plugin.driver().start_task(next.start_request()).await {
            // Not what this test is about (a removal already under way may
            // beat the lookup): carry on with a task that starts normally.
            eprintln!("a start {offset_ms} ms before the removal was due failed: {status:?}");
            previous = fresh();
            start(&plugin, &previous).await;
            continue;
        }
        let started = released.elapsed();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            present(&container_image(&next)),
            "the image of a task whose StartTask was sent {offset_ms} ms before the removal \
             was due (and returned {started:?} after the release) was removed while the \
             task runs"
        );
        previous = next;
    }
    destroy(&plugin, &previous, true).await;
}

#[tokio::test]
async fn image_gc_disabled_keeps_images() {
    let cleanup = Cleanup::new();
    let plugin = plugin(json!({ "gc": { "image": false, "image_delay": "1s" } })).await;
    let image = unique_image(&cleanup);
    let task = task(
        "nogc",
        json!({ "image": image.reference, "command": "true" }),
    );
    cleanup.alloc(task.alloc_id());
    start(&plugin, &task).await;
    assert_eq!(exit_code(&plugin, &task).await, 0);
    destroy(&plugin, &task, false).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(present(&image.id), "gc.image = false never removes images");
}

#[tokio::test]
async fn image_gc_counts_survive_a_plugin_restart() {
    let cleanup = Cleanup::new();
    let mut plugin = plugin(json!({ "gc": { "image": true, "image_delay": "2s" } })).await;
    let image = unique_image(&cleanup);
    let task = task(
        "gcrecover",
        json!({ "image": image.reference, "command": "sleep", "args": ["1000"] }),
    );
    cleanup.alloc(task.alloc_id());
    let handle = start(&plugin, &task).await.handle.expect("a handle");

    plugin.restart().await.expect("relaunch");
    plugin
        .driver()
        .recover_task(task.recover_request(handle))
        .await
        .expect("RecoverTask");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(present(&image.id), "the recovered task still uses it");

    destroy(&plugin, &task, true).await;
    removed_within(&image.id, Duration::from_secs(10))
        .await
        .expect("the recovered task's image is removed after the delay");
}

#[tokio::test]
async fn destroy_after_the_container_was_removed_out_of_band() {
    let cleanup = Cleanup::new();
    let plugin = plugin(json!({ "gc": { "image": true, "image_delay": "1s" } })).await;
    let image = unique_image(&cleanup);
    let task = task(
        "oob",
        json!({ "image": image.reference, "command": "sleep", "args": ["1000"] }),
    );
    cleanup.alloc(task.alloc_id());
    start(&plugin, &task).await;
    docker(&["rm", "-f", &task.container_name()]).expect("docker rm -f");

    destroy(&plugin, &task, false).await;
    let status = plugin
        .driver()
        .wait_task(task.wait_request())
        .await
        .expect_err("untracked");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    removed_within(&image.id, Duration::from_secs(10))
        .await
        .expect("its image is released too");
}

#[tokio::test]
async fn image_gc_ends_with_the_plugin() {
    let cleanup = Cleanup::new();
    let mut plugin = plugin(json!({ "gc": { "image": true, "image_delay": "1s" } })).await;
    let image = unique_image(&cleanup);
    let task = task(
        "gcshutdown",
        json!({ "image": image.reference, "command": "true" }),
    );
    cleanup.alloc(task.alloc_id());
    start(&plugin, &task).await;
    assert_eq!(exit_code(&plugin, &task).await, 0);
    destroy(&plugin, &task, false).await;
    plugin.shutdown().await.expect("Shutdown");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        present(&image.id),
        "no removal after the plugin was shut down"
    );
}
