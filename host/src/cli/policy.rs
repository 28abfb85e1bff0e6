//! `nomad-driver-wasmdock policy …`: tools for policy authors, using the
//! same policy host, limits and contract as the plugin.
//!
//! - `check` compiles a module and shows its hooks, imports and limits;
//! - `eval` runs one hook on a JSON input and prints the decision as JSON;
//! - `bench` measures a hook's per-call latency, instantiation included.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;

use crate::config::duration::{GoDuration, parse as parse_duration};
use crate::config::policy::{Hook, MAX_DEADLINE, MAX_MEMORY_LIMIT_MB, PolicyConfig, PolicyModule};
use crate::policy::engine::EngineSettings;
use crate::policy::hooks::Input;
use crate::policy::metrics::percentile;
use crate::policy::{HostSettings, Origin, PolicyHost, WIT_VERSION};

const HELP: &str = "\
usage: nomad-driver-wasmdock policy <command> <module.wasm> [options]

commands:
  check <module>                 Compile the module and list its hooks,
                                 imports, exports and the limits it runs under.
  eval <module> --hook <hook> --input <file.json|->
                                 Run one hook on the input (the hook's WIT
                                 input record as kebab-case JSON; for
                                 stats-transform {\"task\": …, \"sample\": …})
                                 and print the decision as JSON. Exit code 2
                                 when the module fails (trap, deadline, limit,
                                 invalid answer).
  bench <module> --hook <hook> [--input <file.json>] [--iterations N]
                                 Call the hook N times (default 10000, after a
                                 warm-up) and print latency p50/p99 and calls/s.
  help                           Show this text.

options (as in the plugin config's policy module block):
  --config KEY=VALUE             A value the module reads (repeatable).
  --hooks a,b                    Hooks to enable (default: all it exports).
  --deadline DURATION            Per-call deadline (default 100ms).
  --memory-limit-mb N            Linear-memory limit (default 64).
  --sha256 HEX                   Refuse the file unless it has this digest.
  --cache-dir DIR                Keep compiled modules in DIR (0700).
  --no-pooling                   Allocate instances on demand (bench).
  --json                         Machine-readable output (check, bench).

hooks: reconciler-match, gpu-runtime, stats-transform, task-admission";

/// Entry point of `policy`; `args` follow `policy`.
pub fn main(args: &[String]) -> ExitCode {
    let command = args.first().map(String::as_str);
    if matches!(command, None | Some("help" | "--help" | "-h")) {
        eprintln!("{HELP}");
        return if command.is_none() {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        };
    }
    crate::telemetry::init();
    let result = Options::parse(&args[1..]).and_then(|options| match command {
        Some("check") => check(&options),
        Some("eval") => eval(&options),
        Some("bench") => bench(&options),
        Some(other) => {
            bail!("unknown policy command {other:?}; run `nomad-driver-wasmdock policy help`")
        }
        None => unreachable!("handled above"),
    });
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Debug, Default)]
struct Options {
    module: PathBuf,
    hook: Option<Hook>,
    hooks: Vec<Hook>,
    input: Option<String>,
    config: BTreeMap<String, String>,
    deadline: Option<Duration>,
    memory_limit_mb: Option<u64>,
    sha256: Option<String>,
    cache_dir: Option<PathBuf>,
    iterations: Option<usize>,
    pooling: bool,
    json: bool,
}

fn parse_hook(name: &str) -> anyhow::Result<Hook> {
    Hook::ALL
        .into_iter()
        .find(|hook| hook.as_str() == name)
        .with_context(|| format!("unknown hook {name:?}; hooks are reconciler-match, gpu-runtime, stats-transform, task-admission"))
}

impl Options {
    fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut options = Self {
            pooling: true,
            ..Self::default()
        };
        let mut module = None;
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if arg.starts_with("--") => (flag, Some(value.to_owned())),
                _ => (arg.as_str(), None),
            };
            let mut value = || -> anyhow::Result<String> {
                match &inline {
                    Some(value) => Ok(value.clone()),
                    None => iter
                        .next()
                        .cloned()
                        .with_context(|| format!("{flag} needs a value")),
                }
            };
            match flag {
                "--hook" => options.hook = Some(parse_hook(&value()?)?),
                "--hooks" => {
                    options.hooks = value()?
                        .split(',')
                        .filter(|h| !h.is_empty())
                        .map(parse_hook)
                        .collect::<anyhow::Result<_>>()?;
                }
                "--input" => options.input = Some(value()?),
                "--config" => {
                    let pair = value()?;
                    let (key, value) = pair
                        .split_once('=')
                        .with_context(|| format!("--config takes KEY=VALUE, got {pair:?}"))?;
                    options.config.insert(key.to_owned(), value.to_owned());
                }
                "--deadline" => {
                    let text = value()?;
                    let deadline = parse_duration(&text)
                        .map_err(|e| anyhow::anyhow!("--deadline {text:?}: {e}"))?;
                    if deadline.is_zero() || deadline > MAX_DEADLINE {
                        bail!(
                            "--deadline must be greater than 0 and at most {}",
                            GoDuration::new(MAX_DEADLINE)
                        );
                    }
                    options.deadline = Some(deadline);
                }
                "--memory-limit-mb" => {
                    let text = value()?;
                    let mb: u64 = text
                        .parse()
                        .with_context(|| format!("--memory-limit-mb {text:?} is not a number"))?;
                    if mb == 0 || mb > MAX_MEMORY_LIMIT_MB {
                        bail!("--memory-limit-mb must be between 1 and {MAX_MEMORY_LIMIT_MB}");
                    }
                    options.memory_limit_mb = Some(mb);
                }
                "--sha256" => options.sha256 = Some(value()?),
                "--cache-dir" => options.cache_dir = Some(PathBuf::from(value()?)),
                "--iterations" => {
                    let text = value()?;
                    let n: usize = text
                        .parse()
                        .with_context(|| format!("--iterations {text:?} is not a number"))?;
                    if n == 0 {
                        bail!("--iterations must be at least 1");
                    }
                    options.iterations = Some(n);
                }
                "--no-pooling" => options.pooling = false,
                "--json" => options.json = true,
                other if other.starts_with('-') && other != "-" => {
                    bail!("unknown option {other:?}")
                }
                _ if module.is_none() => module = Some(PathBuf::from(arg)),
                _ => bail!("unexpected argument {arg:?}"),
            }
        }
        options.module = module.context("name the module file (a .wasm component)")?;
        Ok(options)
    }

    fn spec(&self) -> anyhow::Result<PolicyModule> {
        let path = std::path::absolute(&self.module)
            .with_context(|| format!("cannot resolve {}", self.module.display()))?;
        let name: String = self
            .module
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("module")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut spec = PolicyModule {
            name,
            path: path.to_string_lossy().into_owned(),
            sha256: self.sha256.clone(),
            hooks: self.hooks.clone(),
            config: self.config.clone(),
            ..PolicyModule::default()
        };
        if let Some(deadline) = self.deadline {
            spec.deadline = GoDuration::new(deadline);
        }
        if let Some(mb) = self.memory_limit_mb {
            spec.memory_limit_mb = mb;
        }
        Ok(spec)
    }

    fn host(&self) -> anyhow::Result<(PolicyHost, PolicyModule)> {
        let spec = self.spec()?;
        let settings = HostSettings {
            engine: EngineSettings {
                pooling: self.pooling,
                max_concurrent: 4,
                ..EngineSettings::default()
            },
            cache_dir: self.cache_dir.clone(),
            ..HostSettings::default()
        };
        let config = PolicyConfig {
            module: vec![spec.clone()],
        };
        let host = PolicyHost::new(settings, &config)?;
        if let Some((_, error)) = host.load_errors().into_iter().next() {
            bail!("{error}");
        }
        Ok((host, spec))
    }

    fn input(&self, hook: Hook, required: bool) -> anyhow::Result<Input> {
        let text = match self.input.as_deref() {
            Some("-") => {
                let mut text = String::new();
                std::io::stdin()
                    .read_to_string(&mut text)
                    .context("cannot read the input from stdin")?;
                text
            }
            Some(path) => std::fs::read_to_string(Path::new(path))
                .with_context(|| format!("cannot read the input file {path}"))?,
            None if required => bail!("--input <file.json> is required (use - for stdin)"),
            None => "{}".to_owned(),
        };
        Input::from_json(hook, &text)
            .map_err(|error| anyhow::anyhow!("the input is not a valid {hook} input: {error}"))
    }
}

fn out(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.write_all(b"\n")?;
    Ok(())
}

fn check(options: &Options) -> anyhow::Result<ExitCode> {
    let (host, spec) = options.host()?;
    let status = host
        .status()
        .into_iter()
        .next()
        .context("the module is missing")?;
    let loaded = status.loaded.context("the module did not load")?;
    let hooks: Vec<&str> = loaded.serves.iter().map(|h| h.as_str()).collect();
    let exported: Vec<&str> = loaded.exported.iter().map(|h| h.as_str()).collect();
    let origin = match loaded.origin {
        Origin::Compiled => "compiled",
        Origin::Cached => "loaded from cache",
    };
    let report = json!({
        "module": spec.name,
        "path": spec.path,
        "sha256": loaded.sha256(),
        "contract": format!("wasmdock:policy@{WIT_VERSION}"),
        "hooks": hooks,
        "exported_hooks": exported,
        "imports": loaded.imports,
        "exports": loaded.export_names,
        "load": { "origin": origin, "ms": loaded.load_time.as_secs_f64() * 1000.0 },
        "limits": {
            "deadline": GoDuration::new(spec.deadline.get()).to_string(),
            "memory_mb": spec.memory_limit_mb,
            "table_elements": crate::policy::engine::MAX_TABLE_ELEMENTS,
            "output_bytes": crate::policy::DEFAULT_OUTPUT_LIMIT,
            "wasi": "nothing granted: no files, environment, arguments or network",
        },
    });
    if options.json {
        out(&serde_json::to_string_pretty(&report)?)?;
    } else {
        out(&format!(
            "module    {} ({})\nsha256    {}\ncontract  wasmdock:policy@{WIT_VERSION}\nhooks     {}\n{:<9} in {:.1} ms\nimports   {}\nexports   {}\nlimits    deadline {}, memory {} MiB, tables {} elements, answers {} bytes\nwasi      nothing granted: no files, environment, arguments or network",
            spec.name,
            spec.path,
            loaded.sha256(),
            hooks.join(", "),
            origin,
            loaded.load_time.as_secs_f64() * 1000.0,
            loaded.imports.join("\n          "),
            loaded.export_names.join(", "),
            GoDuration::new(spec.deadline.get()),
            spec.memory_limit_mb,
            crate::policy::engine::MAX_TABLE_ELEMENTS,
            crate::policy::DEFAULT_OUTPUT_LIMIT,
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn eval(options: &Options) -> anyhow::Result<ExitCode> {
    let hook = options.hook.context("--hook is required")?;
    let input = options.input(hook, true)?;
    let (host, spec) = options.host()?;
    let started = Instant::now();
    let outcome = host.evaluate(&spec.name, &input)?;
    let latency_us = started.elapsed().as_secs_f64() * 1e6;
    let (report, code) = match outcome {
        Ok(output) => (
            json!({ "module": spec.name, "hook": hook.as_str(), "latency_us": latency_us, "result": output }),
            ExitCode::SUCCESS,
        ),
        Err(error) => (
            json!({ "module": spec.name, "hook": hook.as_str(), "latency_us": latency_us,
                    "error": { "kind": error.kind(), "message": format!("policy module {} {error}", spec.name) } }),
            ExitCode::from(2),
        ),
    };
    out(&serde_json::to_string_pretty(&report)?)?;
    Ok(code)
}

/// Latency of repeated calls of one hook.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct BenchFigures {
    /// Calls measured.
    pub calls: usize,
    /// Calls that failed.
    pub errors: usize,
    /// Median, microseconds.
    pub p50_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
    /// Mean, microseconds.
    pub mean_us: f64,
    /// Calls per second on one thread.
    pub calls_per_sec: f64,
}

/// Calls `module`'s hook `iterations` times after a warm-up of a tenth as
/// many, each call timed on its own (instantiation included).
pub fn measure(
    host: &PolicyHost,
    module: &str,
    input: &Input,
    iterations: usize,
) -> anyhow::Result<BenchFigures> {
    for _ in 0..(iterations / 10).max(10) {
        let _ = host.evaluate(module, input)?;
    }
    let mut samples = Vec::with_capacity(iterations);
    let mut errors = 0;
    let all = Instant::now();
    for _ in 0..iterations {
        let started = Instant::now();
        if host.evaluate(module, input)?.is_err() {
            errors += 1;
        }
        samples.push(started.elapsed());
    }
    let total = all.elapsed();
    samples.sort_unstable();
    Ok(BenchFigures {
        calls: iterations,
        errors,
        p50_us: percentile(&samples, 0.50).as_secs_f64() * 1e6,
        p99_us: percentile(&samples, 0.99).as_secs_f64() * 1e6,
        mean_us: total.as_secs_f64() * 1e6 / iterations as f64,
        calls_per_sec: iterations as f64 / total.as_secs_f64(),
    })
}

fn bench(options: &Options) -> anyhow::Result<ExitCode> {
    let hook = options.hook.context("--hook is required")?;
    let input = options.input(hook, false)?;
    let (host, spec) = options.host()?;
    let figures = measure(
        &host,
        &spec.name,
        &input,
        options.iterations.unwrap_or(10_000),
    )?;
    if options.json {
        out(&serde_json::to_string_pretty(&json!({
            "module": spec.name, "hook": hook.as_str(), "pooling": options.pooling, "figures": figures,
        }))?)?;
    } else {
        out(&format!(
            "{} {} ({} allocator, fresh instance per call)\ncalls     {} ({} failed)\np50       {:.1} µs\np99       {:.1} µs\nmean      {:.1} µs\ncalls/s   {:.0} (one thread)",
            spec.name,
            hook,
            if options.pooling {
                "pooling"
            } else {
                "on-demand"
            },
            figures.calls,
            figures.errors,
            figures.p50_us,
            figures.p99_us,
            figures.mean_us,
            figures.calls_per_sec,
        ))?;
    }
    Ok(if figures.errors > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> anyhow::Result<Options> {
        Options::parse(&args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>())
    }

    #[test]
    fn options_parse_and_bad_ones_are_named() {
        let options = parse(&[
            "m.wasm",
            "--hook",
            "gpu-runtime",
            "--config",
            "mode=cdi",
            "--deadline=50ms",
        ])
        .unwrap();
        assert_eq!(options.hook, Some(Hook::GpuRuntime));
        assert_eq!(options.config.get("mode").map(String::as_str), Some("cdi"));
        assert_eq!(options.deadline, Some(Duration::from_millis(50)));
        assert!(
            parse(&["m.wasm", "--hook", "gpu"])
                .unwrap_err()
                .to_string()
                .contains("unknown hook")
        );
        assert!(
            parse(&["m.wasm", "--config", "novalue"])
                .unwrap_err()
                .to_string()
                .contains("KEY=VALUE")
        );
        assert!(parse(&["m.wasm", "--deadline", "11s"]).is_err());
        assert!(
            parse(&["--json"])
                .unwrap_err()
                .to_string()
                .contains("module file")
        );
        assert!(
            parse(&["m.wasm", "--bogus"])
                .unwrap_err()
                .to_string()
                .contains("--bogus")
        );
    }
}
