//! Developer tools (`nomad-driver-wasmdock dev …`): a minimal Nomad client
//! that launches the plugin exactly as an agent does and talks to it over
//! the real socket and protocol.

pub mod launcher;
pub mod probe;
pub mod schema;

use std::process::ExitCode;

const HELP: &str = "\
usage: nomad-driver-wasmdock dev <command>

commands:
  probe [--config FILE] [--name NAME]
        Launch the plugin like a Nomad agent (magic cookie, handshake, unix
        socket), then walk through health, PluginInfo, ConfigSchema, SetConfig
        (twice, as Nomad's validation launch does) with FILE (HCL or JSON body
        of the plugin's config block; empty when omitted), Capabilities, and a
        graceful GRPCController.Shutdown. Exits non-zero if any step fails.
  help  Show this text.";

/// Entry point of `dev`; `args` follow `dev`.
pub fn main(args: &[String]) -> ExitCode {
    match args.first().map(String::as_str) {
        Some("probe") => run(probe::main(&args[1..])),
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

fn run(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
