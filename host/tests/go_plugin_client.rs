//! Interoperability with a real go-plugin client: Debian's build of
//! hashicorp/go-plugin launches our binary as Nomad's plugin loader does,
//! parses the handshake, pings health, calls PluginInfo over its own gRPC
//! stack, re-emits our stderr log lines, and kills us gracefully.

use std::path::PathBuf;
use std::process::Command;

use prost::Message as _;
use wasmdock_host::rpc::proto::base::{PluginInfoResponse, PluginType};

const FIX: &str = "install the Go toolchain and go-plugin from Debian: \
apt-get install golang-go golang-github-hashicorp-go-plugin-dev golang-google-grpc-dev \
(scripts/test.sh does this when run as root)";

/// Builds the Go client once per test binary.
fn go_client() -> PathBuf {
    let source = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/go-plugin-client");
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("go-plugin-client");
    let gocache = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("go-build-cache");
    let output = Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(".")
        .current_dir(&source)
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOCACHE", gocache)
        .output()
        .unwrap_or_else(|err| panic!("cannot run `go` ({err}): {FIX}"));
    assert!(
        output.status.success(),
        "building the go-plugin client failed: {FIX}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

#[test]
fn a_real_go_plugin_client_launches_talks_to_and_stops_the_plugin() {
    let output = Command::new(go_client())
        .arg(env!("CARGO_BIN_EXE_nomad-driver-wasmdock"))
        .arg("--name=docker")
        .output()
        .expect("run the go-plugin client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "client failed:\n{stdout}\n{stderr}"
    );

    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "PROTOCOL grpc");
    assert_eq!(lines[1], "PING ok");
    let hex = lines[2]
        .strip_prefix("PLUGININFO ")
        .expect("PluginInfo answered");
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    let info = PluginInfoResponse::decode(bytes.as_slice()).expect("a PluginInfoResponse");
    assert_eq!(info.r#type(), PluginType::Driver);
    assert_eq!(info.name, "docker");
    assert_eq!(info.plugin_api_versions, ["v0.1.0"]);
    assert!(lines[3].starts_with("KILLED exited=true"), "{stdout}");
    assert!(
        !stderr.contains("failed to exit gracefully"),
        "Kill had to force it:\n{stderr}"
    );

    // The client parsed our JSON lines: it re-emits them at their own level
    // with the timestamp it decoded, instead of dumping them at debug.
    let reemitted: Vec<serde_json::Value> = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["@module"]
                .as_str()
                .is_some_and(|m| m.starts_with("wasmdock"))
        })
        .collect();
    let started = reemitted
        .iter()
        .find(|v| v["@message"] == "plugin started")
        .unwrap_or_else(|| panic!("our start line was not parsed by the client:\n{stderr}"));
    assert_eq!(started["@level"], "info");
    assert!(
        started["timestamp"].is_string(),
        "the client decoded our @timestamp: {started}"
    );
    assert!(
        reemitted.iter().any(|v| v["@message"] == "plugin stopped"),
        "{stderr}"
    );
}
