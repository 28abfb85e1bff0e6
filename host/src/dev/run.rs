//! `dev run`: one task through the plugin, as a Nomad client would run it,
//! with its logs, stats and events on the terminal.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::signal::unix::{SignalKind, signal};

use super::client::{Console, Session, SessionOptions};
use super::{schema, taskfile};

struct Options {
    config: Option<PathBuf>,
    name: Option<String>,
    stop_after: Option<Duration>,
    stats_interval: Duration,
    console: Console,
    task_file: PathBuf,
}

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut config = None;
    let mut name = None;
    let mut stop_after = None;
    let mut stats_interval = Duration::from_secs(1);
    let mut console = Console::default();
    let mut task_file = None;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--config" => config = Some(iter.next().context("--config needs a file")?.into()),
            "--name" => name = Some(iter.next().context("--name needs a value")?.clone()),
            "--stop-after" => {
                let text = iter.next().context("--stop-after needs a duration")?;
                stop_after = Some(
                    humantime::parse_duration(text)
                        .with_context(|| format!("--stop-after {text:?} is not a duration"))?,
                );
            }
            "--stats-interval" => {
                let text = iter.next().context("--stats-interval needs a duration")?;
                stats_interval = humantime::parse_duration(text)
                    .ok()
                    .filter(|d| *d >= Duration::from_millis(100))
                    .with_context(|| {
                        format!("--stats-interval {text:?} is not a duration of at least 100ms")
                    })?;
            }
            "--verbose" | "-v" => console.verbose = true,
            other if other.starts_with('-') => {
                bail!("unexpected option {other:?} (see `dev help`)")
            }
            other => {
                if task_file.replace(PathBuf::from(other)).is_some() {
                    bail!("one task file only (see `dev help`)");
                }
            }
        }
    }
    Ok(Options {
        config,
        name,
        stop_after,
        stats_interval,
        console,
        task_file: task_file.context("a task file is required (see `dev help`)")?,
    })
}

/// Runs `dev run`; the exit code is the task's.
pub fn main(args: &[String]) -> anyhow::Result<ExitCode> {
    let options = parse(args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(options))
}

async fn run(options: Options) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(&options.task_file)
        .with_context(|| format!("cannot read {}", options.task_file.display()))?;
    let task =
        taskfile::parse(&text).with_context(|| format!("in {}", options.task_file.display()))?;
    let (config, config_label) = match &options.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            let mut body = schema::parse_config_text(&text)
                .with_context(|| format!("in {}", path.display()))?;
            absolute_module_paths(&mut body)?;
            (body, path.display().to_string())
        }
        None => (serde_json::json!({}), "an empty plugin config".to_owned()),
    };
    let session = Session::start(SessionOptions {
        binary: std::env::current_exe().context("cannot find our own binary")?,
        args: options
            .name
            .iter()
            .map(|name| format!("--name={name}"))
            .collect(),
        env: Vec::new(),
        config,
        config_label,
        console: options.console,
        stats_interval: options.stats_interval,
    })
    .await?;
    let outcome = match session.start_task(&task).await? {
        Err(_failure) => {
            session.shutdown().await?;
            return Ok(ExitCode::FAILURE);
        }
        Ok(running) => {
            let stop_after = options.stop_after;
            let stop = async move {
                let Ok(mut terminate) = signal(SignalKind::terminate()) else {
                    return "cannot watch SIGTERM".to_owned();
                };
                let deadline = async {
                    match stop_after {
                        Some(after) => tokio::time::sleep(after).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => "interrupted".to_owned(),
                    _ = terminate.recv() => "terminated".to_owned(),
                    () = deadline => format!(
                        "--stop-after {} reached",
                        humantime::format_duration(stop_after.unwrap_or_default())
                    ),
                }
            };
            session.finish(running, stop).await
        }
    };
    session.shutdown().await?;
    let outcome = outcome?;
    let code = if outcome.signal != 0 {
        128 + outcome.signal
    } else {
        outcome.exit_code
    };
    Ok(ExitCode::from(
        u8::try_from(code.clamp(0, 255)).unwrap_or(1),
    ))
}

/// Makes `policy.module[*].path` absolute against the current directory:
/// the plugin takes absolute paths only (a Nomad agent's working directory
/// is not the operator's), but a dev run starts from a checkout.
fn absolute_module_paths(config: &mut serde_json::Value) -> anyhow::Result<()> {
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let Some(modules) = config.pointer_mut("/policy/module") else {
        return Ok(());
    };
    let modules: Vec<&mut serde_json::Value> = match modules {
        serde_json::Value::Array(items) => items.iter_mut().collect(),
        other => vec![other],
    };
    for module in modules {
        if let Some(serde_json::Value::String(path)) = module.get_mut("path")
            && !path.is_empty()
            && !std::path::Path::new(path.as_str()).is_absolute()
        {
            *path = cwd.join(&*path).to_string_lossy().into_owned();
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn options_read_as_documented() {
        let options = parse(&args(&[
            "--config",
            "p.hcl",
            "--stop-after",
            "10s",
            "-v",
            "task.hcl",
        ]))
        .unwrap();
        assert_eq!(options.config, Some(PathBuf::from("p.hcl")));
        assert_eq!(options.stop_after, Some(Duration::from_secs(10)));
        assert!(options.console.verbose);
        assert_eq!(options.stats_interval, Duration::from_secs(1));
        assert_eq!(options.task_file, PathBuf::from("task.hcl"));
        for (bad, needle) in [
            (&["--config"][..], "needs a file"),
            (&["--stop-after", "soon", "t"][..], "not a duration"),
            (&["a", "b"][..], "one task file"),
            (&["--bogus"][..], "unexpected option"),
            (&["--stats-interval", "1ms", "t"][..], "at least 100ms"),
            (&[][..], "task file is required"),
        ] {
            let err = match parse(&args(bad)) {
                Ok(_) => panic!("{bad:?} accepted"),
                Err(err) => err.to_string(),
            };
            assert!(err.contains(needle), "{bad:?}: {err}");
        }
    }

    #[test]
    fn relative_module_paths_become_absolute() {
        let mut config = serde_json::json!({"policy": {"module": [
            {"name": "a", "path": "target/a.wasm"},
            {"name": "b", "path": "/opt/b.wasm"}
        ]}});
        absolute_module_paths(&mut config).unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            config["policy"]["module"][0]["path"],
            cwd.join("target/a.wasm").to_string_lossy().as_ref()
        );
        assert_eq!(config["policy"]["module"][1]["path"], "/opt/b.wasm");
        let mut single = serde_json::json!({"policy": {"module": {"path": "x.wasm"}}});
        absolute_module_paths(&mut single).unwrap();
        assert!(
            single["policy"]["module"]["path"]
                .as_str()
                .unwrap()
                .starts_with('/')
        );
    }
}
