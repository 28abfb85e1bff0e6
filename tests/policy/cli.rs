//! `nomad-driver-wasmdock policy check|eval|bench`, run as authors run it.

use std::process::{Command, Output};

use wasmdock_e2e::guests::guest;
use wasmdock_e2e::plugin::{plugin_binary, workspace_root};

use super::MEMORY;

fn policy(args: &[&str]) -> Output {
    Command::new(plugin_binary())
        .arg("policy")
        .args(args)
        .env_remove("NOMAD_PLUGIN_MAGIC_COOKIE")
        .output()
        .expect("run the plugin binary")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn check_lists_hooks_imports_and_limits() {
    let _shared = MEMORY.read();
    let module = guest("image-allowlist");
    let output = policy(&["check", module.to_str().unwrap(), "--json"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(report["hooks"], serde_json::json!(["task-admission"]));
    assert_eq!(report["contract"], "wasmdock:policy@0.1.0");
    let imports = report["imports"].as_array().unwrap();
    assert!(
        imports
            .iter()
            .any(|i| i.as_str().unwrap().starts_with("wasmdock:policy/host@")),
        "{imports:?}"
    );
    assert_eq!(report["limits"]["memory_mb"], 64);
    assert_eq!(report["limits"]["deadline"], "100ms");

    let wrong = policy(&["check", guest("not-a-policy").to_str().unwrap()]);
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("exports no wasmdock:policy@0.1.0 hook")
    );
}

#[test]
fn eval_prints_the_decision_as_json() {
    let _shared = MEMORY.read();
    let module = guest("image-allowlist");
    let input = workspace_root().join("examples/guests/image-allowlist/input.json");
    let output = policy(&[
        "eval",
        module.to_str().unwrap(),
        "--hook",
        "task-admission",
        "--input",
        input.to_str().unwrap(),
        "--config",
        "allowed=nothing.invalid/*",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("only JSON on stdout");
    assert_eq!(report["result"]["decision"], "deny");
    assert!(
        report["result"]["value"]
            .as_str()
            .unwrap()
            .contains("nothing.invalid/*")
    );

    // A failing module: exit code 2 and the typed error, still JSON.
    let hostile = guest("hostile");
    let output = policy(&[
        "eval",
        hostile.to_str().unwrap(),
        "--hook",
        "task-admission",
        "--input",
        input.to_str().unwrap(),
        "--config",
        "behaviour=loop",
        "--deadline",
        "50ms",
    ]);
    assert_eq!(output.status.code(), Some(2));
    let report: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("only JSON on stdout");
    assert_eq!(report["error"]["kind"], "timeout");

    // A guest that writes to stdout cannot corrupt ours.
    let output = policy(&[
        "eval",
        hostile.to_str().unwrap(),
        "--hook",
        "task-admission",
        "--input",
        input.to_str().unwrap(),
        "--config",
        "behaviour=stdio",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = stdout(&output);
    let report: serde_json::Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(report["result"]["decision"], "allow");

    let bad = policy(&[
        "eval",
        module.to_str().unwrap(),
        "--hook",
        "task-admission",
        "--input",
        "/nonexistent.json",
    ]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/nonexistent.json"));
}

#[test]
fn bench_reports_latency_and_throughput() {
    let _shared = MEMORY.read();
    let module = guest("image-allowlist");
    let output = policy(&[
        "bench",
        module.to_str().unwrap(),
        "--hook",
        "task-admission",
        "--config",
        "allowed=*",
        "--iterations",
        "200",
        "--json",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    let figures = &report["figures"];
    assert_eq!(figures["calls"], 200);
    assert_eq!(figures["errors"], 0);
    assert!(figures["p50_us"].as_f64().unwrap() > 0.0);
    assert!(figures["p99_us"].as_f64().unwrap() >= figures["p50_us"].as_f64().unwrap());
    assert!(figures["calls_per_sec"].as_f64().unwrap() > 0.0);
}
