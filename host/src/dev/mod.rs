//! Developer tools (`nomad-driver-wasmdock dev …`).

use std::process::ExitCode;

/// Entry point of `dev`.
pub fn main(_args: &[String]) -> ExitCode {
    ExitCode::FAILURE
}
