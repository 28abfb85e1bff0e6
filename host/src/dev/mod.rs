//! Developer tools (`nomad-driver-wasmdock dev …`): a minimal Nomad client
//! that launches the plugin exactly as an agent does and talks to it over
//! the real socket and protocol.

pub mod alloc;
pub mod client;
pub mod launcher;
pub mod probe;
pub mod run;
pub mod schema;
pub mod taskfile;
pub mod tour;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};

const HELP: &str = "\
usage: nomad-driver-wasmdock dev <command>

commands:
  probe [--config FILE] [--name NAME]
        Launch the plugin like a Nomad agent (magic cookie, handshake, unix
        socket), then walk through health, PluginInfo, ConfigSchema, SetConfig
        (twice, as Nomad's validation launch does) with FILE (HCL or JSON body
        of the plugin's config block; empty when omitted), Capabilities, and a
        graceful GRPCController.Shutdown. Exits non-zero if any step fails.
  run [--config FILE] [--name NAME] [--stop-after DURATION] [--verbose] TASK_FILE
        Act as a minimal Nomad client for one task: launch the plugin, send
        SetConfig with FILE (HCL or JSON plugin config body), fingerprint,
        make an alloc dir and log FIFOs like Nomad's, start the task of
        TASK_FILE (a `task \"name\" { config {…} env {…} resources {…} }`
        block in jobspec syntax, or JSON of that shape), stream its stdout
        and stderr, stats and task events (policy decisions included), and
        on exit, Ctrl-C or --stop-after stop and destroy it, remove the alloc
        dir and shut the plugin down. Exits with the task's exit code.
        --verbose also prints every plugin log line (warnings always).
  tour [--image IMAGE] [--guests DIR] [--verbose]
        The demo's scripted tour (scripts/demo.sh): a logging, CPU-burning
        task; a GPU task whose runtime a guest chooses; an image refused by
        the allow-list guest; a dangling container removed by the
        reconciler. IMAGE (default wasmdock-demo:1) needs busybox on its
        PATH; DIR holds the example guests (default: the build's
        target/wasm32-wasip2/guest). Needs a Docker engine with a runtime
        named `nvidia` (an alias of runc will do).
  help  Show this text.";

/// Entry point of `dev`; `args` follow `dev`.
pub fn main(args: &[String]) -> ExitCode {
    match args.first().map(String::as_str) {
        Some("probe") => exit(probe::main(&args[1..]).map(|()| ExitCode::SUCCESS)),
        Some("run") => exit(run::main(&args[1..])),
        Some("tour") => exit(tour_main(&args[1..])),
        Some("help" | "--help" | "-h") => {
            eprintln!("{HELP}");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("{HELP}");
            ExitCode::FAILURE
        }
    }
}

fn exit(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn tour_main(args: &[String]) -> anyhow::Result<ExitCode> {
    let binary = std::env::current_exe().context("cannot find our own binary")?;
    let mut options = tour::TourOptions {
        guests: default_guests_dir(&binary),
        binary,
        image: "wasmdock-demo:1".to_owned(),
        console: client::Console::default(),
    };
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--image" => options.image = iter.next().context("--image needs a value")?.clone(),
            "--guests" => options.guests = iter.next().context("--guests needs a dir")?.into(),
            "--verbose" | "-v" => options.console.verbose = true,
            other => bail!("unexpected argument {other:?} (see `dev help`)"),
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(tour::run(options))?;
    Ok(ExitCode::SUCCESS)
}

/// `<target>/wasm32-wasip2/guest` beside the `<target>/<profile>/` the
/// binary was built into, else the same under `./target`.
fn default_guests_dir(binary: &Path) -> PathBuf {
    binary
        .parent()
        .and_then(Path::parent)
        .map(|target| target.join("wasm32-wasip2/guest"))
        .filter(|dir| dir.is_dir())
        .unwrap_or_else(|| PathBuf::from("target/wasm32-wasip2/guest"))
}
