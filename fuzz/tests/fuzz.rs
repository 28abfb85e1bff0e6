//! Proves that no decoder of untrusted input panics, hangs or allocates
//! without bound: every committed corpus input replays cleanly, the seed
//! generator's inputs are what they claim to be, and each target survives a
//! bounded fuzzing run (20 s each unless `WASMDOCK_FUZZ_SECONDS` says
//! otherwise; `WASMDOCK_FUZZ_SEED` fixes the seed). A failure names the
//! input (in hex and as a file under `target/fuzz-crashes/`) and the seed
//! and iteration that produced it. The figures of each run are printed and
//! written to `target/fuzz-reports/<target>.txt`.

use std::time::Duration;

use wasmdock_fuzz::engine::{self, Settings};
use wasmdock_fuzz::seeds;
use wasmdock_fuzz::targets::{self, TARGETS};

fn seconds() -> u64 {
    match std::env::var("WASMDOCK_FUZZ_SECONDS") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("WASMDOCK_FUZZ_SECONDS is not a number: {text:?}")),
        Err(_) => 20,
    }
}

fn seed() -> u64 {
    match std::env::var("WASMDOCK_FUZZ_SEED") {
        Ok(text) => {
            let parsed = match text.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => text.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("WASMDOCK_FUZZ_SEED is not a number: {text:?}"))
        }
        Err(_) => engine::clock_seed(),
    }
}

fn fuzz(name: &str) {
    let target = targets::by_name(name).expect("a target of that name");
    let settings = Settings::new(Duration::from_secs(seconds()), seed());
    eprintln!(
        "fuzzing {name} for {} s with seed {:#x} (WASMDOCK_FUZZ_SEED={:#x} reproduces the run)",
        settings.duration.as_secs(),
        settings.seed,
        settings.seed
    );
    let report = engine::run(&target, &settings);
    let summary = report.summary();
    eprintln!("{summary}");
    let reports = engine::target_dir().join("fuzz-reports");
    if std::fs::create_dir_all(&reports).is_ok() {
        let _ = std::fs::write(reports.join(format!("{name}.txt")), format!("{summary}\n"));
    }
    assert!(report.execs > 0, "{name} ran nothing");
    assert!(
        report.findings.is_empty(),
        "{name}: {} finding(s)\n{}",
        report.findings.len(),
        report.details()
    );
}

#[test]
fn fuzz_cty() {
    fuzz("cty");
}

#[test]
fn fuzz_plugin_config() {
    fuzz("plugin_config");
}

#[test]
fn fuzz_task_config() {
    fuzz("task_config");
}

#[test]
fn fuzz_driver_state() {
    fuzz("driver_state");
}

#[test]
fn fuzz_guest_output() {
    fuzz("guest_output");
}

#[test]
fn every_committed_corpus_input_replays_without_a_finding() {
    let settings = Settings::new(Duration::ZERO, 0);
    let mut problems = Vec::new();
    for target in TARGETS {
        let files = engine::corpus_files(&settings.corpus_dir, target.name);
        assert!(!files.is_empty(), "{} has no committed corpus", target.name);
        for file in files {
            let input = std::fs::read(&file).expect("readable corpus file");
            let mut execution = engine::execute(&target, &input);
            if execution.time > settings.hang_after {
                // Slow twice, or a stall of a loaded machine.
                execution = engine::execute(&target, &input);
            }
            if let Some((kind, message)) = engine::judge(&execution, &settings) {
                problems.push(format!(
                    "{}: {kind:?}: {message}\n  input: {}",
                    file.display(),
                    engine::hex(&input, 512)
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn generated_seeds_are_committed_and_are_what_they_claim() {
    let dir = engine::corpus_dir();
    for seed in seeds::seeds() {
        let path = dir.join(seed.target).join(&seed.name);
        assert!(
            path.is_file(),
            "{} is not committed (run `cargo run -p wasmdock-fuzz -- seeds`)",
            path.display()
        );
        let target = targets::by_name(seed.target).expect("a target of that name");
        let execution = engine::execute(&target, &seed.bytes);
        let class = execution
            .verdict
            .unwrap_or_else(|(kind, message)| panic!("{}: {kind:?}: {message}", seed.name));
        // The first part of a class is the target's own decoder's verdict.
        let accepted = match seed.target {
            "guest_output" => class.contains(" ok "),
            _ => class.starts_with("ok"),
        };
        assert_eq!(
            accepted, seed.valid,
            "{}/{}: the target says {class:?}",
            seed.target, seed.name
        );
    }
}
