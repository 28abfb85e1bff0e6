//! `nomad-driver-wasmdock`: launched by a Nomad agent from its `plugin_dir`,
//! or by hand with `dev …`. Everything lives in the library.

fn main() -> std::process::ExitCode {
    wasmdock_host::cli::main(std::env::args().skip(1).collect())
}
