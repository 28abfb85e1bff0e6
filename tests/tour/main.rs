//! The demo's tour (`nomad-driver-wasmdock dev tour`, run by
//! scripts/demo.sh) against a real engine, with real guests built from
//! source; what it shows is asserted here, not read off its printing.
//!
//! Its own binary: the tour turns the dangling-container reconciler on,
//! which looks at every container of the engine, so it must not run beside
//! other tests' tasks (cargo runs test binaries one after another).

use std::time::Duration;

use wasmdock_e2e::guests::guest;
use wasmdock_e2e::images::{self, BUSYBOX_1};
use wasmdock_e2e::plugin::plugin_binary;
use wasmdock_host::dev::client::Console;
use wasmdock_host::dev::tour::{self, DENIED_IMAGE, LOG_LINES, TourOptions};

#[tokio::test]
async fn the_demo_tour_shows_logs_stats_policies_and_the_reconciler_at_work() {
    images::busybox();
    let guests = guest("image-allowlist")
        .parent()
        .expect("the guests' dir")
        .to_owned();
    let report = tour::run(TourOptions {
        binary: plugin_binary().to_owned(),
        image: BUSYBOX_1.to_owned(),
        guests,
        console: Console::default(),
    })
    .await
    .unwrap_or_else(|err| panic!("the tour failed: {err:#}"));

    // 1. Logs and stats streamed from a real container through the FIFOs.
    let stdout = String::from_utf8_lossy(&report.logging.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), LOG_LINES, "{stdout:?}");
    for (n, line) in lines.iter().enumerate() {
        assert_eq!(
            *line,
            format!("line {} of 4 from the logger task", n + 1),
            "in order, each once"
        );
    }
    assert_eq!(
        String::from_utf8_lossy(&report.logging.stderr),
        "and one line on stderr\n"
    );
    assert_eq!(report.logging.exit_code, 0);
    assert!(!report.logging.stopped, "it ended on its own");
    assert!(
        report.logging.samples.len() >= 2,
        "a sample a second for ~4 s: {:?}",
        report.logging.samples
    );
    assert!(
        report.logging.samples.iter().any(|s| s.cpu_percent > 5.0),
        "the busy loop shows: {:?}",
        report.logging.samples
    );
    assert!(report.logging.samples.iter().all(|s| s.memory_usage > 0));
    assert!(
        report
            .logging
            .events
            .iter()
            .any(|e| e.message == "Policy allowlist (task-admission): allow"),
        "{:?}",
        report.logging.events
    );

    // 2. The guest chose the GPU task's runtime; the plain task kept runc.
    assert_eq!(report.gpu_runtime, "nvidia");
    assert_eq!(report.plain_runtime, "runc");
    assert_eq!(
        report.gpu_event.message,
        "Policy gpu (gpu-runtime): runtime nvidia, 0 device request(s)"
    );
    assert_eq!(report.gpu_event.annotations["policy"], "gpu");
    assert!(String::from_utf8_lossy(&report.gpu.stdout).starts_with("my GPUs: GPU-"));

    // 3. The allow-list refused the image, for good, with its reason.
    assert_eq!(report.denied.recoverable, Some(false));
    assert!(
        report
            .denied
            .message
            .starts_with("admission policy allowlist denied the task: "),
        "{}",
        report.denied.message
    );
    assert!(report.denied.message.contains(DENIED_IMAGE));
    assert!(
        report.denied.events.iter().any(|e| e
            .message
            .starts_with("Policy allowlist (task-admission): deny: ")),
        "{:?}",
        report.denied.events
    );

    // 4. The reconciler removed the dangling container, by its label.
    assert!(report.dangling_removed_after < Duration::from_secs(30));
    let line: serde_json::Value = serde_json::from_str(&report.dangling_log).unwrap();
    assert_eq!(line["rule"], "label com.hashicorp.nomad.alloc_id");

    // Nothing of the tour is left on the engine.
    let dangling = line["name"].as_str().expect("the container's name");
    for name in [
        report.logging.container_name.as_str(),
        report.gpu.container_name.as_str(),
        dangling,
    ] {
        assert!(
            wasmdock_e2e::docker::container_inspect(name)
                .unwrap()
                .is_none(),
            "{name} is still there"
        );
    }
}
