//! `wasmdock-fuzz`: longer fuzzing runs than CI affords, replay of saved
//! inputs, and regeneration of the seed corpus.
//!
//! ```text
//! wasmdock-fuzz <target|all> [--seconds N] [--seed S] [--execs N]
//! wasmdock-fuzz replay <target> <file>...
//! wasmdock-fuzz seeds
//! wasmdock-fuzz list
//! ```

use std::process::ExitCode;
use std::time::Duration;

use wasmdock_fuzz::engine::{self, Settings};
use wasmdock_fuzz::seeds;
use wasmdock_fuzz::targets::{self, TARGETS, Target};

const USAGE: &str = "usage: wasmdock-fuzz <target|all> [--seconds N] [--seed S] [--execs N]
       wasmdock-fuzz replay <target> <file>...
       wasmdock-fuzz seeds
       wasmdock-fuzz list";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("{message}\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn parse_number(text: &str) -> Result<u64, String> {
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| format!("not a number: {text:?}"))
}

fn target(name: &str) -> Result<Target, String> {
    targets::by_name(name).ok_or_else(|| format!("no target named {name:?}"))
}

fn run(args: &[String]) -> Result<ExitCode, String> {
    let Some(first) = args.first() else {
        return Err("no command".to_owned());
    };
    match first.as_str() {
        "list" => {
            for target in TARGETS {
                eprintln!("{:<14} {}", target.name, target.about);
            }
            Ok(ExitCode::SUCCESS)
        }
        "seeds" => {
            let dir = engine::corpus_dir();
            for seed in seeds::seeds() {
                let path = dir.join(seed.target).join(&seed.name);
                std::fs::create_dir_all(path.parent().unwrap_or(&dir))
                    .and_then(|()| std::fs::write(&path, &seed.bytes))
                    .map_err(|err| format!("{}: {err}", path.display()))?;
                eprintln!("{} ({} bytes)", path.display(), seed.bytes.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        "replay" => {
            let target = target(args.get(1).ok_or("replay needs a target")?)?;
            let settings = Settings::new(Duration::ZERO, 0);
            let mut failed = false;
            for file in &args[2..] {
                let input = std::fs::read(file).map_err(|err| format!("{file}: {err}"))?;
                let execution = engine::execute(&target, &input);
                let finding = engine::judge(&execution, &settings);
                eprintln!(
                    "{file}: {:?} in {:.1} ms, {} bytes held at most",
                    finding.as_ref().map_or_else(
                        || execution.verdict.clone().unwrap_or_default(),
                        |(kind, message)| format!("{kind:?}: {message}")
                    ),
                    execution.time.as_secs_f64() * 1e3,
                    execution.peak_alloc
                );
                failed |= finding.is_some();
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        name => {
            let chosen: Vec<Target> = if name == "all" {
                TARGETS.to_vec()
            } else {
                vec![target(name)?]
            };
            let mut seconds = 60u64;
            let mut seed = engine::clock_seed();
            let mut execs = None;
            let mut rest = args[1..].iter();
            while let Some(flag) = rest.next() {
                let value = rest.next().ok_or_else(|| format!("{flag} needs a value"))?;
                match flag.as_str() {
                    "--seconds" => seconds = parse_number(value)?,
                    "--seed" => seed = parse_number(value)?,
                    "--execs" => execs = Some(parse_number(value)?),
                    other => return Err(format!("unknown option {other}")),
                }
            }
            let mut failed = false;
            for target in chosen {
                let mut settings = Settings::new(Duration::from_secs(seconds), seed);
                settings.max_execs = execs;
                eprintln!("fuzzing {} for {seconds} s, seed {seed:#x}", target.name);
                let report = engine::run(&target, &settings);
                eprintln!("{}", report.summary());
                // The slowest and the heaviest inputs, to look into.
                let dir = engine::target_dir().join("fuzz-reports");
                let _ = std::fs::create_dir_all(&dir).and_then(|()| {
                    std::fs::write(
                        dir.join(format!("{}-slowest.bin", target.name)),
                        &report.slowest_input,
                    )?;
                    std::fs::write(
                        dir.join(format!("{}-heaviest.bin", target.name)),
                        &report.heaviest_input,
                    )
                });
                eprint!("{}", report.details());
                failed |= !report.findings.is_empty();
            }
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
