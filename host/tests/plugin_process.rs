//! The plugin as a process, driven the way a Nomad agent drives it: launched
//! with Nomad's environment, reached through the socket named in the
//! handshake line, stopped with GRPCController.Shutdown or SIGTERM.

use std::io::{BufRead as _, BufReader, Read as _};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt as _, BufReader as AsyncBufReader};
use tonic::Code;
use tonic::transport::Channel;
use wasmdock_host::config::cty::encode_json;
use wasmdock_host::dev::launcher::{self, Plugin};
use wasmdock_host::plugin::handshake::{MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE};
use wasmdock_host::rpc::proto::base::{self, base_plugin_client::BasePluginClient};
use wasmdock_host::rpc::proto::drivers::{self, driver_client::DriverClient};
use wasmdock_host::rpc::proto::hclspec::spec::Block;
use wasmdock_host::rpc::proto::plugin::{Empty, grpc_controller_client::GrpcControllerClient};

fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_nomad-driver-wasmdock"))
}

async fn launch(args: &[&str], env: &[(&str, &str)]) -> Plugin {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    launcher::launch(&binary(), &args, env)
        .await
        .expect("plugin launches and hands over its socket")
}

fn set_config(json: serde_json::Value) -> base::SetConfigRequest {
    base::SetConfigRequest {
        msgpack_config: encode_json(&json),
        nomad_config: None,
        plugin_api_version: "v0.1.0".to_owned(),
    }
}

async fn shutdown_and_wait(plugin: &mut Plugin) -> ExitStatus {
    GrpcControllerClient::new(plugin.channel.clone())
        .shutdown(Empty {})
        .await
        .expect("Shutdown is answered before the process exits");
    wait_exit(plugin).await
}

async fn wait_exit(plugin: &mut Plugin) -> ExitStatus {
    tokio::time::timeout(Duration::from_secs(2), plugin.child.wait())
        .await
        .expect("the plugin exits within the 2 s go-plugin grants")
        .expect("wait on the plugin process")
}

/// Collects the plugin's stderr lines in the background.
fn collect_stderr(plugin: &mut Plugin) -> tokio::task::JoinHandle<Vec<String>> {
    let stderr = plugin.stderr.take().expect("stderr is captured");
    tokio::spawn(async move {
        let mut lines = AsyncBufReader::new(stderr).lines();
        let mut out = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            out.push(line);
        }
        out
    })
}

#[test]
fn run_by_hand_it_explains_itself_and_exits_1() {
    let output = Command::new(binary())
        .env_remove(MAGIC_COOKIE_KEY)
        .output()
        .expect("run the binary");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        output.stdout.is_empty(),
        "nothing may reach stdout without a handshake"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("This binary is a plugin. These are not meant to be executed directly."),
        "{stderr}"
    );

    let wrong_cookie = Command::new(binary())
        .env(MAGIC_COOKIE_KEY, "nope")
        .output()
        .expect("run the binary");
    assert_eq!(wrong_cookie.status.code(), Some(1));
}

#[test]
fn handshake_is_the_only_thing_ever_written_to_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(binary())
        .env(MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE)
        .env("PLUGIN_PROTOCOL_VERSIONS", "2")
        .env("PLUGIN_UNIX_SOCKET_DIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();

    let parts: Vec<&str> = line.trim_end_matches('\n').split('|').collect();
    assert_eq!(parts.len(), 6, "{line:?}");
    assert_eq!(
        (parts[0], parts[1], parts[2], parts[4], parts[5]),
        ("1", "2", "unix", "grpc", "")
    );
    let socket = Path::new(parts[3]);
    assert_eq!(
        socket.parent(),
        Some(dir.path()),
        "the socket honours PLUGIN_UNIX_SOCKET_DIR"
    );
    assert!(
        socket
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("plugin")
    );
    assert!(std::fs::metadata(socket).unwrap().file_type().is_socket());

    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM is a graceful exit: {status}");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert_eq!(rest, "", "nothing after the handshake line");
    assert!(!socket.exists(), "the socket is removed on exit");
}

#[tokio::test]
async fn health_and_plugin_info_identify_a_driver() {
    let mut plugin = launch(&[], &[]).await;
    let mut health = tonic_health::pb::health_client::HealthClient::new(plugin.channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "plugin".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );

    let info = BasePluginClient::new(plugin.channel.clone())
        .plugin_info(base::PluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.r#type(), base::PluginType::Driver);
    assert_eq!(info.plugin_api_versions, vec!["v0.1.0".to_owned()]);
    assert_eq!(info.plugin_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(info.name, "wasmdock");
    assert!(shutdown_and_wait(&mut plugin).await.success());
}

#[tokio::test]
async fn a_plugin_block_argument_renames_the_driver() {
    let mut plugin = launch(&["--name=docker"], &[]).await;
    let info = BasePluginClient::new(plugin.channel.clone())
        .plugin_info(base::PluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, "docker");
    assert!(shutdown_and_wait(&mut plugin).await.success());
}

#[test]
fn a_bad_argument_fails_before_the_handshake_with_a_json_log_line() {
    let output = Command::new(binary())
        .arg("--name=no/slashes")
        .env(MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line: serde_json::Value = serde_json::from_str(stderr.lines().next().unwrap()).unwrap();
    assert_eq!(line["@level"], "error");
    assert!(
        line["@message"].as_str().unwrap().contains("no/slashes"),
        "{line}"
    );
}

#[tokio::test]
async fn config_schema_describes_the_docker_and_policy_keys() {
    let mut plugin = launch(&[], &[]).await;
    let spec = BasePluginClient::new(plugin.channel.clone())
        .config_schema(base::ConfigSchemaRequest {})
        .await
        .unwrap()
        .into_inner()
        .spec
        .expect("a schema, not nil");
    let Some(Block::Object(root)) = spec.block else {
        panic!("the root is an object: {spec:?}")
    };
    for key in [
        "endpoint",
        "gc",
        "allow_caps",
        "allowed_modes",
        "disable_log_collection",
        "policy",
    ] {
        assert!(root.attributes.contains_key(key), "schema has {key}");
    }
    assert!(shutdown_and_wait(&mut plugin).await.success());
}

#[tokio::test]
async fn set_config_accepts_valid_config_twice_and_refuses_bad_config_naming_the_key() {
    let mut plugin = launch(&[], &[]).await;
    let mut client = BasePluginClient::new(plugin.channel.clone());
    let valid =
        set_config(serde_json::json!({"gc": {"image_delay": "10m"}, "extra_labels": ["job_name"]}));
    client
        .set_config(valid.clone())
        .await
        .expect("first SetConfig");
    client
        .set_config(valid)
        .await
        .expect("second, identical SetConfig");

    for (json, key) in [
        (
            serde_json::json!({"gc": {"image_delay": "1d"}}),
            "gc.image_delay",
        ),
        (
            serde_json::json!({"allow_privilegd": true}),
            "allow_privilegd",
        ),
        (serde_json::json!({"pids_limit": "lots"}), "pids_limit"),
        (
            serde_json::json!({"gc": {"dangling_containers": {"creation_grace": "30s"}}}),
            "gc.dangling_containers.creation_grace",
        ),
        (
            serde_json::json!({"pull_activity_timeout": "59s"}),
            "pull_activity_timeout",
        ),
        (
            serde_json::json!({"allowed_modes": {"ipc": ["bogus"]}}),
            "allowed_modes.ipc",
        ),
    ] {
        let status = client
            .set_config(set_config(json.clone()))
            .await
            .expect_err("bad config is refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{json}");
        assert!(
            status.message().contains(key),
            "{json}: message {:?} names {key}",
            status.message()
        );
    }

    // A bad policy module: the message names the module (by name, or by
    // index where decoding stopped before the name was known) and the key.
    let valid_module = serde_json::json!({"name": "first", "path": "/opt/first.wasm"});
    for (module, key, names_module) in [
        (
            serde_json::json!({"name": "a", "path": "a.wasm"}),
            "policy.module[1].path",
            "policy module \"a\"",
        ),
        (
            serde_json::json!({"name": "first", "path": "/opt/again.wasm"}),
            "policy.module[1].name",
            "policy module \"first\"",
        ),
        (
            serde_json::json!({"name": "instant", "path": "/opt/i.wasm", "deadline": "0s"}),
            "policy.module[1].deadline",
            "policy module \"instant\"",
        ),
        (
            serde_json::json!({"name": "big", "path": "/opt/b.wasm", "memory_limit_mb": 4097}),
            "policy.module[1].memory_limit_mb",
            "policy module \"big\"",
        ),
        (
            serde_json::json!({"name": "pinned", "path": "/opt/p.wasm", "sha256": "abc"}),
            "policy.module[1].sha256",
            "policy module \"pinned\"",
        ),
        (
            serde_json::json!({"name": "hooked", "path": "/opt/h.wasm", "hooks": ["pre-start"]}),
            "policy.module[1].hooks[0]",
            "unknown variant `pre-start`",
        ),
        (
            serde_json::json!({"name": "f", "path": "/opt/f.wasm", "failure_policy": "retry"}),
            "policy.module[1].failure_policy",
            "unknown variant `retry`",
        ),
    ] {
        let json = serde_json::json!({"policy": {"module": [valid_module.clone(), module]}});
        let status = client
            .set_config(set_config(json.clone()))
            .await
            .expect_err("a bad policy module is refused");
        assert_eq!(status.code(), Code::InvalidArgument, "{json}");
        for needle in [key, names_module] {
            assert!(
                status.message().contains(needle),
                "{json}: message {:?} names {needle}",
                status.message()
            );
        }
    }

    let garbage = base::SetConfigRequest {
        msgpack_config: vec![0xdd, 0xff, 0xff, 0xff, 0xff, 0xc1],
        nomad_config: None,
        plugin_api_version: "v0.1.0".to_owned(),
    };
    let status = client
        .set_config(garbage)
        .await
        .expect_err("malformed msgpack is refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("malformed msgpack"),
        "{}",
        status.message()
    );

    // Still serving after all that.
    client
        .plugin_info(base::PluginInfoRequest {})
        .await
        .expect("still serving");
    assert!(shutdown_and_wait(&mut plugin).await.success());
}

#[tokio::test]
async fn requests_beyond_4_mib_are_received() {
    let mut plugin = launch(&[], &[]).await;
    let big = "x".repeat(5 * 1024 * 1024);
    let request = set_config(serde_json::json!({ "endpoint": big }));
    assert!(request.msgpack_config.len() > 5 * 1024 * 1024);
    BasePluginClient::new(plugin.channel.clone())
        .set_config(request)
        .await
        .expect("a 5 MiB config is decoded");
    assert!(shutdown_and_wait(&mut plugin).await.success());
}

#[tokio::test]
async fn config_survives_the_client_disconnecting_and_reconnecting() {
    let mut plugin = launch(&[], &[]).await;
    BasePluginClient::new(plugin.channel.clone())
        .set_config(set_config(
            serde_json::json!({ "disable_log_collection": true }),
        ))
        .await
        .unwrap();
    // Drop every connection, as a crashing agent would, then reattach.
    let socket = plugin.handshake.address.clone();
    plugin.channel = launcher::connect(&socket).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let reattached: Channel = launcher::connect(&socket)
        .await
        .expect("the plugin outlives its client");
    let mut driver = DriverClient::new(reattached.clone());
    driver
        .init(drivers::InitRequest {})
        .await
        .expect("Init is accepted on reattach");
    let caps = driver
        .capabilities(drivers::CapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    let caps = caps.capabilities.expect("capabilities are set");
    assert!(
        caps.disable_log_collection,
        "the config set before the reconnect is still in force"
    );
    assert!(caps.send_signals && caps.exec && caps.must_create_network);
    plugin.channel = reattached;
    assert!(shutdown_and_wait(&mut plugin).await.success());
}

#[tokio::test]
async fn task_stats_of_an_unknown_task_is_refused_cleanly() {
    let mut plugin = launch(&[], &[]).await;
    let status = DriverClient::new(plugin.channel.clone())
        .task_stats(drivers::TaskStatsRequest {
            task_id: "no-such-task".to_owned(),
            collection_interval: None,
        })
        .await
        .expect_err("unknown task");
    assert!(status.message().contains("task not found"), "{status:?}");
    assert!(shutdown_and_wait(&mut plugin).await.success());
}

#[tokio::test]
async fn malformed_and_unknown_task_requests_are_refused_cleanly() {
    let mut plugin = launch(&[], &[]).await;
    let mut driver = DriverClient::new(plugin.channel.clone());
    let status = driver
        .start_task(drivers::StartTaskRequest { task: None })
        .await
        .expect_err("no task");
    assert_eq!(status.code(), Code::InvalidArgument);
    for status in [
        driver
            .wait_task(drivers::WaitTaskRequest {
                task_id: "nope".to_owned(),
            })
            .await
            .expect_err("unknown"),
        driver
            .inspect_task(drivers::InspectTaskRequest {
                task_id: "nope".to_owned(),
            })
            .await
            .expect_err("unknown"),
        driver
            .destroy_task(drivers::DestroyTaskRequest {
                task_id: "nope".to_owned(),
                force: true,
            })
            .await
            .expect_err("unknown"),
        driver
            .signal_task(drivers::SignalTaskRequest {
                task_id: "nope".to_owned(),
                signal: "SIGHUP".to_owned(),
            })
            .await
            .expect_err("unknown"),
    ] {
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert!(status.message().contains("nope"), "{status:?}");
    }
    let status = driver
        .recover_task(drivers::RecoverTaskRequest {
            task_id: "x".to_owned(),
            handle: None,
        })
        .await
        .expect_err("no handle");
    assert_eq!(status.code(), Code::InvalidArgument);
    let schema = driver
        .task_config_schema(drivers::TaskConfigSchemaRequest {})
        .await
        .expect("task schema")
        .into_inner();
    assert!(schema.spec.is_some());
    assert!(shutdown_and_wait(&mut plugin).await.success());
}

#[tokio::test]
async fn controller_shutdown_exits_0_and_removes_the_socket() {
    let mut plugin = launch(&[], &[]).await;
    let socket = plugin.handshake.address.clone();
    assert!(socket.exists());
    let status = shutdown_and_wait(&mut plugin).await;
    assert_eq!(status.code(), Some(0));
    assert!(!socket.exists(), "socket removed");
}

#[tokio::test]
async fn sigterm_exits_0_and_sigint_is_ignored() {
    let mut plugin = launch(&[], &[]).await;
    let pid = Pid::from_raw(plugin.child.id().unwrap() as i32);
    kill(pid, Signal::SIGINT).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    BasePluginClient::new(plugin.channel.clone())
        .plugin_info(base::PluginInfoRequest {})
        .await
        .expect("SIGINT does not stop the plugin");

    kill(pid, Signal::SIGTERM).unwrap();
    let status = wait_exit(&mut plugin).await;
    assert_eq!(status.code(), Some(0));
    assert!(!plugin.handshake.address.exists(), "socket removed");
}

#[tokio::test]
async fn stderr_lines_are_hclog_json() {
    let mut plugin = launch(&[], &[("WASMDOCK_LOG_LEVEL", "trace")]).await;
    let lines = collect_stderr(&mut plugin);
    let mut client = BasePluginClient::new(plugin.channel.clone());
    let _ = client
        .set_config(set_config(serde_json::json!({ "bogus": 1 })))
        .await;
    assert!(shutdown_and_wait(&mut plugin).await.success());
    let lines = lines.await.unwrap();
    assert!(lines.len() >= 3, "start, warning, shutdown: {lines:?}");
    for line in &lines {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let level = value["@level"].as_str().unwrap();
        assert!(
            ["trace", "debug", "info", "warn", "error"].contains(&level),
            "{line}"
        );
        assert!(value["@message"].is_string(), "{line}");
        assert!(
            value["@module"].as_str().unwrap().starts_with("wasmdock"),
            "{line}"
        );
        let ts = value["@timestamp"].as_str().unwrap();
        // 2026-01-02T15:04:05.123456Z: exactly six fractional digits and Z.
        assert_eq!(ts.len(), 27, "{ts}");
        assert!(ts.ends_with('Z') && ts.as_bytes()[19] == b'.', "{ts}");
        assert!(ts[20..26].bytes().all(|b| b.is_ascii_digit()), "{ts}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"@level\":\"warn\"") && l.contains("bogus")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn a_broken_stderr_pipe_does_not_kill_the_plugin() {
    let mut plugin = launch(&[], &[]).await;
    drop(plugin.stderr.take()); // the agent crashed: nobody reads stderr
    let mut client = BasePluginClient::new(plugin.channel.clone());
    for _ in 0..20 {
        // Each refusal logs a warning into the broken pipe.
        let _ = client
            .set_config(set_config(serde_json::json!({ "bogus": 1 })))
            .await;
    }
    client
        .plugin_info(base::PluginInfoRequest {})
        .await
        .expect("still serving");
    assert!(shutdown_and_wait(&mut plugin).await.success());
}

#[tokio::test]
async fn socket_group_is_applied_with_mode_0660() {
    let dir = tempfile::tempdir().unwrap();
    let gid = nix::unistd::getgid().as_raw().to_string();
    let dir_str = dir.path().to_str().unwrap().to_owned();
    let mut plugin = launch(
        &[],
        &[
            ("PLUGIN_UNIX_SOCKET_DIR", &dir_str),
            ("PLUGIN_UNIX_SOCKET_GROUP", &gid),
        ],
    )
    .await;
    let meta = std::fs::metadata(&plugin.handshake.address).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    assert_eq!(meta.gid().to_string(), gid);
    assert!(shutdown_and_wait(&mut plugin).await.success());
}

#[test]
fn an_unknown_socket_group_is_a_startup_error() {
    let output = Command::new(binary())
        .env(MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE)
        .env("PLUGIN_UNIX_SOCKET_GROUP", "no-such-group-wasmdock")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(
        output.stdout.is_empty(),
        "no handshake for a plugin that cannot serve"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("no-such-group-wasmdock"));
}
