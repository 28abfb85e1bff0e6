//! Command line: plugin mode (how Nomad runs us), the `dev` tools and the
//! `policy` tools for policy authors.
//!
//! Plugin mode takes the arguments of the agent's `plugin` block, e.g.
//! `args = ["--name=docker"]` to stand in for Nomad's built-in docker driver.

pub mod policy;

use std::process::ExitCode;

use crate::driver::DEFAULT_NAME;
use crate::plugin::{self, ServeOptions, handshake};
use crate::{dev, telemetry};

/// Usage of plugin mode.
const USAGE: &str = "usage: nomad-driver-wasmdock [--name <driver-name>]\n       nomad-driver-wasmdock dev <command> (run `nomad-driver-wasmdock dev help`)\n       nomad-driver-wasmdock policy <command> (run `nomad-driver-wasmdock policy help`)";

/// Entry point; `args` excludes the program name.
pub fn main(args: Vec<String>) -> ExitCode {
    match args.first().map(String::as_str) {
        Some("dev") => return dev::main(&args[1..]),
        Some("policy") => return policy::main(&args[1..]),
        // Started by the plugin itself (see `logs::holder`), never by Nomad.
        Some("log-holder") => return crate::logs::holder::server::main(&args[1..]),
        _ => {}
    }
    if !handshake::launched_by_nomad() {
        // Plain text: a person is reading this, not the agent.
        eprintln!("{}", handshake::NOT_LAUNCHED_BY_NOMAD);
        return ExitCode::FAILURE;
    }
    telemetry::init();
    let options = match parse_plugin_args(&args) {
        Ok(options) => options,
        Err(message) => {
            tracing::error!("invalid plugin arguments: {message}; {USAGE}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(plugin::serve(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("plugin failed: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Parses plugin-mode arguments (`--name X`, `--name=X`, `-name=X`).
pub fn parse_plugin_args(args: &[String]) -> Result<ServeOptions, String> {
    let mut name = DEFAULT_NAME.to_owned();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let flag = arg.trim_start_matches('-');
        if arg.starts_with('-') && (flag == "name") {
            name = iter.next().ok_or("--name needs a value")?.clone();
        } else if let Some(value) = flag.strip_prefix("name=").filter(|_| arg.starts_with('-')) {
            name = value.to_owned();
        } else {
            return Err(format!("unexpected argument {arg:?}"));
        }
    }
    validate_name(&name)?;
    Ok(ServeOptions { name })
}

/// Driver names become node attribute keys (`driver.<name>.version`), so
/// they are kept to letters, digits, `_` and `-`.
fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "driver name {name:?} must be letters, digits, '_' or '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<String, String> {
        parse_plugin_args(&args.iter().map(|a| (*a).to_owned()).collect::<Vec<_>>()).map(|o| o.name)
    }

    #[test]
    fn name_defaults_and_can_be_set_in_go_or_gnu_style() {
        assert_eq!(parse(&[]), Ok("wasmdock".to_owned()));
        assert_eq!(parse(&["--name", "docker"]), Ok("docker".to_owned()));
        assert_eq!(parse(&["--name=docker"]), Ok("docker".to_owned()));
        assert_eq!(parse(&["-name=docker"]), Ok("docker".to_owned()));
    }

    #[test]
    fn bad_arguments_are_named() {
        assert_eq!(
            parse(&["docker"]),
            Err("unexpected argument \"docker\"".to_owned())
        );
        assert_eq!(parse(&["--name"]), Err("--name needs a value".to_owned()));
        assert!(parse(&["--name=dock.er"]).unwrap_err().contains("dock.er"));
        assert!(parse(&["--name="]).is_err());
    }
}
